//! `evloop bench echo` on each of its I/O drivers (`--io epoll`, `--io
//! uring`): against in-test servers that echo faithfully, corrupt the echo,
//! refuse or close the connection, and against `evloop serve echo` over TCP
//! and a Unix socket.
//!
//! Here `NAME::epoll` and `NAME::uring` name the driver of the load
//! generator, not of the server; the uring ones skip where io_uring is
//! unavailable.

mod common;

use std::fmt::Display;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Io, ServerProcess, evloop, json_field, json_number, per_driver};

/// The longest a bench run may take here: 300 ms of load plus connecting
/// and start-up, with a wide margin for a loaded machine.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Starts a thread-per-connection echo server on a free loopback port.
/// `corrupt_every`: flip one byte in every that-many-th chunk (0: never).
/// Its threads end with the test process.
fn echo_server(corrupt_every: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let address = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || echo(stream, corrupt_every));
        }
    });
    address
}

fn echo(mut stream: TcpStream, corrupt_every: u64) {
    let mut buffer = [0u8; 16 * 1024];
    let mut chunks = 0u64;
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        chunks += 1;
        if corrupt_every != 0 && chunks.is_multiple_of(corrupt_every) {
            buffer[n / 2] ^= 0x01;
        }
        if stream.write_all(&buffer[..n]).is_err() {
            return;
        }
    }
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

/// A fresh directory for Unix sockets, removed when dropped (short:
/// `sun_path` holds 104 to 108 bytes).
struct TempDir(PathBuf);

impl TempDir {
    /// Unique to this process, `name` and the load's driver (the two
    /// drivers' tests run at once).
    fn new(name: &str, load: Io) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "evloop-be-{}-{name}-{}",
            std::process::id(),
            load.name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// `unix:DIR/FILE`, as `--listen` and `--target` take it.
    fn socket(&self, file: &str) -> String {
        format!("unix:{}", self.0.join(file).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `evloop bench echo --io LOAD --target TARGET` for 300 ms with
/// `args`, killing it if it outlives [`RUN_LIMIT`].
#[track_caller]
fn bench_echo(load: Io, target: impl Display, args: &[&str]) -> Output {
    let mut child = evloop()
        .args(["bench", "echo", "--io", load.name()])
        .args(["--target", &target.to_string()])
        .args(["--duration", "300ms", "--connect-timeout", "5s"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start evloop");
    let started = Instant::now();
    // The program ends by itself after its duration; waiting in small steps
    // only bounds the test if it does not.
    while child.try_wait().expect("wait for evloop").is_none() {
        if started.elapsed() > RUN_LIMIT {
            child.kill().ok();
            panic!(
                "evloop bench echo --io {} ran longer than {RUN_LIMIT:?}",
                load.name()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect evloop's output")
}

/// The standard output (a `--json` report, checked to name the `load`
/// driver) and standard error of a run.
#[track_caller]
fn report_on(output: &Output, load: Io) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let io = format!("\"{}\"", load.name());
    assert_eq!(json_field(&stdout, "io"), io, "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// A passing `--json` run: on the `load` driver, every connection up,
/// requests at a positive rate, no mismatch, no error.
#[track_caller]
fn assert_passed(output: &Output, load: Io, connections: f64) {
    let (stdout, stderr) = report_on(output, load);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(json_number(&stdout, "connected"), connections, "{stdout}");
    assert!(json_number(&stdout, "requests") > 0.0, "{stdout}");
    assert!(json_number(&stdout, "requests_per_sec") > 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "mismatches"), 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "io_errors"), 0.0, "{stdout}");
}

/// The drivers `evloop serve` can run on here (io_uring skipped, saying
/// so, where unavailable).
fn server_drivers() -> impl Iterator<Item = Io> {
    [Io::Epoll, Io::Uring]
        .into_iter()
        .filter(|io| io.available())
}

per_driver!(a_faithful_server_passes_with_no_mismatch);
fn a_faithful_server_passes_with_no_mismatch(load: Io) {
    let server = echo_server(0);
    let output = bench_echo(
        load,
        server,
        &[
            "--connections",
            "4",
            "--size",
            "1000",
            "--pipeline",
            "3",
            "--json",
        ],
    );
    assert_passed(&output, load, 4.0);
}

per_driver!(evloop_serve_echo_passes_with_no_mismatch);
/// The program measuring itself, over TCP, on each server driver:
/// pipelined requests larger than one io_uring receive buffer (4 KiB) from
/// 8 connections, every byte checked.
fn evloop_serve_echo_passes_with_no_mismatch(load: Io) {
    for server_io in server_drivers() {
        let mut server = ServerProcess::start(server_io, &["echo", "--threads", "2"]);
        let output = bench_echo(
            load,
            server.addr,
            &[
                "--connections",
                "8",
                "--size",
                "10000",
                "--pipeline",
                "4",
                "--json",
            ],
        );
        assert_passed(&output, load, 8.0);
        server.signal("TERM");
        let status = server.wait_exit();
        assert!(
            status.success(),
            "server on {}: {status}\n{}",
            server_io.name(),
            server.log_text()
        );
    }
}

per_driver!(evloop_serve_echo_over_a_unix_socket_passes);
/// `--target unix:PATH` against `evloop serve echo --io epoll`.
fn evloop_serve_echo_over_a_unix_socket_passes(load: Io) {
    let dir = TempDir::new("unix", load);
    let server = ServerProcess::start(
        Io::Epoll,
        &[
            "echo",
            "--threads",
            "1",
            "--listen",
            &dir.socket("echo.sock"),
        ],
    );
    let output = bench_echo(
        load,
        &server.listening,
        &[
            "--connections",
            "6",
            "--size",
            "300",
            "--pipeline",
            "3",
            "--json",
        ],
    );
    assert_passed(&output, load, 6.0);
}

per_driver!(threads_and_big_messages_pass);
/// 100 KB messages span many receive buffers and short sends, from two
/// load threads, against `evloop serve echo --io epoll`.
fn threads_and_big_messages_pass(load: Io) {
    let server = ServerProcess::start(Io::Epoll, &["echo", "--threads", "1"]);
    let output = bench_echo(
        load,
        server.addr,
        &[
            "--connections",
            "4",
            "--threads",
            "2",
            "--size",
            "100000",
            "--json",
        ],
    );
    assert_passed(&output, load, 4.0);
}

#[test]
fn the_text_report_is_a_table() {
    let server = echo_server(0);
    let output = bench_echo(
        Io::Epoll,
        server,
        &["--connections", "2", "--size", "64", "--threads", "2"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for row in ["throughput", "latency", "p99.9", "mismatches 0"] {
        assert!(stdout.contains(row), "no {row} in\n{stdout}");
    }
}

per_driver!(a_corrupting_server_is_caught_and_fails_the_run);
fn a_corrupting_server_is_caught_and_fails_the_run(load: Io) {
    let server = echo_server(50);
    let output = bench_echo(
        load,
        server,
        &["--connections", "2", "--size", "128", "--json"],
    );
    let (stdout, stderr) = report_on(&output, load);
    assert!(
        !output.status.success(),
        "a corrupted echo must fail the run"
    );
    assert!(json_number(&stdout, "mismatches") > 0.0, "{stdout}");
    assert!(stderr.contains("mismatch: connection"), "{stderr}");
}

per_driver!(a_refused_connection_is_a_connect_error);
fn a_refused_connection_is_a_connect_error(load: Io) {
    // A port that was free a moment ago refuses connections.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = bench_echo(load, address, &["--connections", "1", "--json"]);
    let (stdout, _) = report_on(&output, load);
    assert!(!output.status.success());
    assert_eq!(json_number(&stdout, "connect_errors"), 1.0, "{stdout}");
}

per_driver!(a_server_that_closes_is_an_error_on_tcp_and_unix);
/// The end of input on every connection is seen (as a lost connection),
/// and the run still stops on time: over TCP and over a Unix socket (on
/// io_uring: a multishot receive on TCP, one receive per submission on a
/// Unix socket).
fn a_server_that_closes_is_an_error_on_tcp_and_unix(load: Io) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_target = tcp.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in tcp.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                echo_then_close(stream, 1280, |s| drop(s.shutdown(Shutdown::Write)))
            });
        }
    });
    let dir = TempDir::new("closing", load);
    let unix = UnixListener::bind(dir.0.join("closing.sock")).unwrap();
    let unix_target = dir.socket("closing.sock");
    thread::spawn(move || {
        for stream in unix.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                echo_then_close(stream, 1280, |s| drop(s.shutdown(Shutdown::Write)))
            });
        }
    });
    for target in [tcp_target, unix_target] {
        let started = Instant::now();
        let output = bench_echo(
            load,
            &target,
            &["--connections", "3", "--size", "128", "--json"],
        );
        let (stdout, stderr) = report_on(&output, load);
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
}

/// A zero duration measured nothing and printed NaN requests/s, which is
/// not JSON: it is refused, as `--connections 0` is.
#[test]
fn issue_8_a_zero_duration_is_refused() {
    let server = echo_server(0);
    for duration in ["0s", "0ms", "100ns"] {
        let output = evloop()
            .args(["bench", "echo", "--target", &server.to_string()])
            .args(["--duration", duration, "--json"])
            .stdin(Stdio::null())
            .output()
            .expect("run evloop");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.starts_with(&format!(
                "evloop: --duration '{duration}': must be at least 1ms\n"
            )),
            "{stderr}"
        );
    }
}
