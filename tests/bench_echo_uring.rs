//! `evloop bench echo --io uring`: the load generator on io_uring, against
//! `evloop serve echo --io epoll` over TCP and a Unix socket, and against
//! in-test servers that corrupt the echo or close the connection.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The longest a server start or a bench run may take here.
const LIMIT: Duration = Duration::from_secs(30);

/// `evloop serve echo --io epoll --threads 1 --listen ADDR`, killed on
/// drop.
struct Server {
    child: Child,
    /// The address of its "listening on" line.
    target: String,
}

impl Server {
    #[track_caller]
    fn start(listen: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_evloop"))
            .args(["serve", "echo", "--io", "epoll", "--threads", "1"])
            .args(["--listen", listen])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start evloop serve");
        let (sender, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        // Reads the log to its end, so the server never blocks on it.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut server = Server {
            child,
            target: String::new(),
        };
        let deadline = Instant::now() + LIMIT;
        while server.target.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .expect("the server logs where it listens");
            if let Some((_, rest)) = line.split_once("listening on ") {
                server.target = rest.split_whitespace().next().unwrap().to_string();
            }
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `evloop bench echo --io uring --target TARGET --json` with `args`
/// for 300 ms, killing it if it outlives [`LIMIT`].
#[track_caller]
fn bench_uring(target: &str, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_evloop"))
        .args(["bench", "echo", "--io", "uring", "--target", target])
        .args(["--duration", "300ms", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start evloop bench echo");
    let started = Instant::now();
    while child.try_wait().expect("wait for evloop").is_none() {
        if started.elapsed() > LIMIT {
            child.kill().ok();
            panic!("evloop bench echo --io uring ran longer than {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect evloop's output")
}

/// The value after `"field":` in a one-line JSON report, as text.
#[track_caller]
fn json_field<'a>(json: &'a str, field: &str) -> &'a str {
    let key = format!("\"{field}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {field} in {json}"))
        + key.len();
    let rest = &json[start..];
    &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
}

#[track_caller]
fn json_number(json: &str, field: &str) -> f64 {
    json_field(json, field)
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number in {json}"))
}

/// A passing run: every connection up, requests at a positive rate, no
/// mismatch, no error, and on io_uring.
#[track_caller]
fn assert_passed(output: &Output, connections: f64) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(json_field(&stdout, "io"), "\"uring\"", "{stdout}");
    assert_eq!(json_number(&stdout, "connected"), connections, "{stdout}");
    assert!(json_number(&stdout, "requests_per_sec") > 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "mismatches"), 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "io_errors"), 0.0, "{stdout}");
}

#[test]
fn uring_load_against_the_epoll_server_over_tcp() {
    let server = Server::start("127.0.0.1:0");
    let output = bench_uring(
        &server.target,
        &["--connections", "8", "--size", "1000", "--pipeline", "4"],
    );
    assert_passed(&output, 8.0);
}

#[test]
fn uring_load_over_tcp_with_threads_and_big_messages() {
    let server = Server::start("127.0.0.1:0");
    // 100 KB messages span many receive buffers and short sends.
    let output = bench_uring(
        &server.target,
        &["--connections", "4", "--threads", "2", "--size", "100000"],
    );
    assert_passed(&output, 4.0);
}

#[test]
fn uring_load_against_the_epoll_server_over_a_unix_socket() {
    let dir = temp_dir("unix");
    let server = Server::start(&format!("unix:{}", dir.join("echo.sock").display()));
    let output = bench_uring(
        &server.target,
        &["--connections", "6", "--size", "300", "--pipeline", "3"],
    );
    assert_passed(&output, 6.0);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_corrupted_echo_is_caught_on_uring() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buffer = [0u8; 16 * 1024];
                let mut chunks = 0u64;
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    chunks += 1;
                    if chunks.is_multiple_of(50) {
                        buffer[n / 2] ^= 0x01;
                    }
                    if stream.write_all(&buffer[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let output = bench_uring(&target, &["--connections", "2", "--size", "128"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a corrupted echo must fail the run"
    );
    assert!(json_number(&stdout, "mismatches") > 0.0, "{stdout}");
    assert!(stderr.contains("mismatch: connection"), "{stderr}");
}

/// Echoes `limit` bytes, then ends its output (`shut_write`: a FIN, not
/// the reset a close with unread input would send) and reads what comes
/// until the client closes.
fn echo_then_close<S: Read + Write>(mut stream: S, limit: usize, shut_write: fn(&S)) {
    let mut buffer = [0u8; 4096];
    let mut echoed = 0;
    while echoed < limit {
        let n = match stream.read(&mut buffer[..(limit - echoed).min(4096)]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buffer[..n]).is_err() {
            return;
        }
        echoed += n;
    }
    shut_write(&stream);
    while let Ok(1..) = stream.read(&mut buffer) {}
}

/// The end of input on every connection is seen (as a lost connection),
/// and the run still stops on time: over TCP (a multishot receive) and
/// over a Unix socket (one receive per submission there).
#[test]
fn a_server_that_closes_is_an_error_on_tcp_and_unix() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_target = tcp.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in tcp.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                echo_then_close(stream, 1280, |s| drop(s.shutdown(Shutdown::Write)))
            });
        }
    });
    let dir = temp_dir("closing");
    let path = dir.join("closing.sock");
    let unix = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        for stream in unix.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                echo_then_close(stream, 1280, |s| drop(s.shutdown(Shutdown::Write)))
            });
        }
    });
    for target in [tcp_target, format!("unix:{}", path.display())] {
        let started = Instant::now();
        let output = bench_uring(&target, &["--connections", "3", "--size", "128"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{target}: {stdout}");
        assert_eq!(json_number(&stdout, "io_errors"), 3.0, "{target}: {stdout}");
        assert_eq!(
            json_number(&stdout, "mismatches"),
            0.0,
            "{target}: {stdout}"
        );
        assert!(
            stderr.contains("the server closed the connection"),
            "{target}: {stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{target}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A fresh directory for Unix sockets (short: `sun_path` holds 108 bytes).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("evloop-bu-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
