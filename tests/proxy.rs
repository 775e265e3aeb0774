//! `evloop serve --proxy-protocol` as a proxy in front of it would use
//! it: the log service and the http access log show the client the header
//! names, `--proxy-protocol-on` picks listeners (port 0 too), refusals are
//! counted in the exit line and explained at debug level, and options that
//! cannot work together are refused.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Io, LIMIT, ServerProcess, connect, per_driver};

per_driver!(
    the_log_service_logs_the_client_the_header_names,
    the_access_log_shows_the_client_the_header_names,
    proxy_protocol_on_picks_listeners_and_the_exit_line_counts,
);

/// What HAProxy's `send-proxy-v2` sends for a client at 203.0.113.7:4242
/// reaching it at 198.51.100.2:443, with an ALPN TLV.
fn v2_header() -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    let mut rest = vec![203, 0, 113, 7, 198, 51, 100, 2];
    rest.extend(4242u16.to_be_bytes());
    rest.extend(443u16.to_be_bytes());
    rest.extend([0x01, 0x00, 0x02, b'h', b'2']);
    out.extend(u16::try_from(rest.len()).unwrap().to_be_bytes());
    out.extend(rest);
    out
}

const V1_HEADER: &[u8] = b"PROXY TCP4 203.0.113.7 198.51.100.2 4242 443\r\n";

/// Sends `bytes`, half-closes, and reads until the server closes (or
/// resets); returns what came back. A server that refuses the connection
/// may reset it before the client is done writing or half-closing: those
/// errors are the refusal, not the test's failure.
#[track_caller]
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

fn the_log_service_logs_the_client_the_header_names(io: Io) {
    let mut server = ServerProcess::start(io, &["log", "--proxy-protocol"]);
    assert!(server.log_text().contains("(PROXY protocol)"));
    for header in [V1_HEADER.to_vec(), v2_header()] {
        server.drain_log();
        server.log.clear();
        assert!(exchange(server.addr, &[&header[..], b"hello"].concat()).is_empty());
        server.wait_for_line("connect 203.0.113.7:4242");
        server.wait_for_line("203.0.113.7:4242: read 5 bytes");
        server.wait_for_line("disconnect 203.0.113.7:4242 (peer)");
        assert_eq!(
            server.count_log("127.0.0.1:"),
            0,
            "the proxy's address is not logged:\n{}",
            server.log_text()
        );
    }
    server.signal("TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    let exit = server.wait_for_line("PROXY protocol: ");
    assert!(
        exit.ends_with("PROXY protocol: 2 proxied, 0 local, 0 unknown, 0 rejected"),
        "{exit}"
    );
}

fn the_access_log_shows_the_client_the_header_names(io: Io) {
    let log = std::env::temp_dir().join(format!(
        "evloop-proxy-access-{}-{}.log",
        std::process::id(),
        io.name()
    ));
    let _ = std::fs::remove_file(&log);
    let log_arg = log.to_str().unwrap();
    let server = ServerProcess::start(io, &["http", "--proxy-protocol", "--access-log", log_arg]);
    let request = b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n";
    let answer = exchange(server.addr, &[&v2_header()[..], request].concat());
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let line = wait_for_file_line(&log, "\"GET / HTTP/1.1\"");
    assert!(line.starts_with("203.0.113.7 - - ["), "{line}");
    drop(server);
    let _ = std::fs::remove_file(&log);
}

/// Waits (bounded) for a line containing `needle` in the file at `path`.
#[track_caller]
fn wait_for_file_line(path: &PathBuf, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            started.elapsed() < LIMIT,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn proxy_protocol_on_picks_listeners_and_the_exit_line_counts(io: Io) {
    let mut server = ServerProcess::start(
        io,
        &[
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.2:0",
            "--proxy-protocol-on",
            "127.0.0.1:0",
            "--proxy-protocol-timeout",
            "200ms",
            "--log-level",
            "info,evloop::proxy=debug",
        ],
    );
    let behind = server.addr;
    let line = server.wait_for_line("listening on 127.0.0.2:");
    assert!(!line.contains("PROXY"), "{line}");
    let direct: SocketAddr = line
        .rsplit("listening on ")
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        server
            .log_text()
            .contains(&format!("listening on {behind} (PROXY protocol)"))
    );

    let header_and_data = [V1_HEADER, b"data"].concat();
    assert_eq!(exchange(behind, &header_and_data), b"data");
    assert_eq!(
        exchange(direct, &header_and_data),
        header_and_data,
        "passed as data"
    );
    // Refused, and said why at debug level.
    assert!(exchange(behind, b"GET / HTTP/1.1\r\n\r\n").is_empty());
    server.wait_for_line("PROXY protocol header refused: no PROXY protocol signature");
    // A silent client, cut at 200ms.
    let mut silent = connect(behind);
    let started = Instant::now();
    let _ = silent.read_to_end(&mut Vec::new());
    assert!(started.elapsed() < LIMIT);
    server.wait_for_line("no whole header in time");

    server.signal("TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    let exit = server.wait_for_line("PROXY protocol: ");
    assert!(
        exit.ends_with("1 proxied, 0 local, 0 unknown, 2 rejected (not_proxy 1, timeout 1)"),
        "{exit}"
    );
}

#[test]
fn options_that_cannot_work_are_refused() {
    for (args, says) in [
        (
            &["serve", "echo", "--proxy-protocol-timeout", "1s"][..],
            "--proxy-protocol-timeout needs --proxy-protocol or --proxy-protocol-on",
        ),
        (
            &[
                "serve",
                "echo",
                "--listen",
                "127.0.0.1:0",
                "--proxy-protocol-on",
                "127.0.0.1:1",
            ],
            "--proxy-protocol-on 127.0.0.1:1: not one of the --listen addresses",
        ),
        (
            &[
                "serve",
                "echo",
                "--proxy-protocol",
                "--proxy-protocol-on",
                "127.0.0.1:1",
            ],
            "cannot be used with",
        ),
        (
            &[
                "serve",
                "echo",
                "--proxy-protocol",
                "--proxy-protocol-timeout",
                "0s",
            ],
            "at least 1ms",
        ),
    ] {
        let (status, stderr, _) = common::run_to_exit(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
