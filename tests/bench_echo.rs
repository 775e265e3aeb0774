//! `evloop bench echo` against in-test echo servers: a faithful one must pass
//! with no mismatch, a corrupting one must be caught; and against `evloop
//! serve echo` on each I/O driver.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Io, ServerProcess, per_driver};

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

/// Runs `evloop bench echo` against `target` with `args`, killing it if it
/// outlives [`RUN_LIMIT`].
#[track_caller]
fn bench_echo(target: SocketAddr, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_evloop"))
        .args(["bench", "echo", "--target", &target.to_string()])
        .args(["--duration", "300ms", "--connect-timeout", "5s"])
        .args(args)
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
            panic!("evloop bench echo ran longer than {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect evloop's output")
}

/// The number after `"field":` in a one-line JSON report.
#[track_caller]
fn json_number(json: &str, field: &str) -> f64 {
    let key = format!("\"{field}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {field} in {json}"))
        + key.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number in {json}"))
}

#[test]
fn a_faithful_server_passes_with_no_mismatch() {
    let server = echo_server(0);
    let output = bench_echo(
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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(json_number(&stdout, "requests") > 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "mismatches"), 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "connected"), 4.0, "{stdout}");
}

per_driver!(evloop_serve_echo_passes_with_no_mismatch);
/// The program measuring itself: pipelined requests larger than one
/// io_uring receive buffer (4 KiB) from 8 connections, every byte checked.
fn evloop_serve_echo_passes_with_no_mismatch(io: Io) {
    let mut server = ServerProcess::start(io, &["echo", "--threads", "2"]);
    let output = bench_echo(
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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(json_number(&stdout, "requests") > 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "mismatches"), 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "connected"), 8.0, "{stdout}");
    server.signal("TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status}\n{}", server.log_text());
}

#[test]
fn the_text_report_is_a_table() {
    let server = echo_server(0);
    let output = bench_echo(
        server,
        &["--connections", "2", "--size", "64", "--threads", "2"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for row in ["throughput", "latency", "p99.9", "mismatches 0"] {
        assert!(stdout.contains(row), "no {row} in\n{stdout}");
    }
}

#[test]
fn a_corrupting_server_is_caught_and_fails_the_run() {
    let server = echo_server(50);
    let output = bench_echo(server, &["--connections", "2", "--size", "128", "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a corrupted echo must fail the run"
    );
    assert!(json_number(&stdout, "mismatches") > 0.0, "{stdout}");
    assert!(stderr.contains("mismatch: connection"), "{stderr}");
}

#[test]
fn a_refused_connection_is_a_connect_error() {
    // A port that was free a moment ago refuses connections.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = bench_echo(address, &["--connections", "1", "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert_eq!(json_number(&stdout, "connect_errors"), 1.0, "{stdout}");
}

/// A zero duration measured nothing and printed NaN requests/s, which is
/// not JSON: it is refused, as `--connections 0` is.
#[test]
fn issue_8_a_zero_duration_is_refused() {
    let server = echo_server(0);
    for duration in ["0s", "0ms", "100ns"] {
        let output = Command::new(env!("CARGO_BIN_EXE_evloop"))
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
