//! chargen (RFC 864) and daytime (RFC 867) as `evloop serve` runs them,
//! met by real clients (socat, nc). They must be installed: these tests
//! fail, not skip, without them.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Io, LIMIT, ServerProcess, per_driver, pipe_through, require};

/// The line chargen sends `n`-th (from 0): 72 printable characters from the
/// `n`-th on, wrapping, then CR LF.
fn chargen_line(n: usize) -> Vec<u8> {
    let printable: Vec<u8> = (b' '..=b'~').collect();
    let mut line: Vec<u8> = printable
        .iter()
        .cycle()
        .skip(n % 95)
        .take(72)
        .copied()
        .collect();
    line.extend_from_slice(b"\r\n");
    line
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The resident memory of `pid` once it has stayed the same for half a
/// second.
fn settled_rss_kib(pid: u32) -> u64 {
    let mut last = vm_rss_kib(pid);
    let started = Instant::now();
    let mut steady = 0;
    while steady < 5 {
        assert!(started.elapsed() < LIMIT, "memory never settled");
        std::thread::sleep(Duration::from_millis(100));
        let now = vm_rss_kib(pid);
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
    last
}

per_driver!(chargen_streams_rotating_lines_to_socat);
/// socat reads the stream as fast as it goes; the first 1,000 lines (and
/// more: every line of 74,000 bytes) are the RFC's rotating pattern.
fn chargen_streams_rotating_lines_to_socat(io: Io) {
    require("socat");
    let mut server = ServerProcess::start(io, &["chargen", "--threads", "1"]);
    let addr = server.addr;
    let script = format!("socat -u TCP:{addr} STDOUT | head -c 740000");
    let got = pipe_through(Command::new("sh").args(["-c", &script]), b"");
    assert_eq!(got.len(), 740_000);
    for (n, line) in got.chunks(74).enumerate() {
        assert_eq!(line, chargen_line(n), "line {n}");
    }
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.log_text());
}

per_driver!(chargen_to_clients_that_never_read_costs_bounded_memory);
/// Twenty clients that never read cost the server no more than its output
/// watermark and one chunk each, not what chargen could generate: it
/// writes only when the output has drained.
fn chargen_to_clients_that_never_read_costs_bounded_memory(io: Io) {
    let mut server = ServerProcess::start(io, &["chargen", "--threads", "1"]);
    // The loop starts after the "listening on" line, and what it sets up
    // (io_uring's 4 MiB of receive buffers) is no client's cost: measure
    // from once it serves (a first client gets its line) and is still.
    let mut probe = TcpStream::connect(server.addr).unwrap();
    probe.set_read_timeout(Some(LIMIT)).unwrap();
    let mut line = vec![0u8; 74];
    probe.read_exact(&mut line).unwrap();
    assert_eq!(line, chargen_line(0));
    drop(probe);
    let before = settled_rss_kib(server.pid());
    let clients: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // The kernel's buffers fill within moments; then nothing moves.
    let last = settled_rss_kib(server.pid());
    let grown_kib = last.saturating_sub(before);
    eprintln!("20 non-reading chargen clients: server RSS grew {grown_kib} KiB");
    // 20 × (256 KiB watermark + 16 KiB chunk) = 5,440 KiB at the very most.
    assert!(grown_kib < 6 * 1024, "grew {grown_kib} KiB");
    // Each client still gets the right stream when it reads.
    let mut first = &clients[0];
    first.read_exact(&mut line).unwrap();
    assert_eq!(line, chargen_line(0));
    drop(clients);
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.log_text());
}

per_driver!(daytime_sends_one_line_then_closes_for_nc_and_socat);
/// nc and socat each get one line, `Weekday, Month Day, Year HH:MM:SS-UTC`,
/// and then the end of the stream.
fn daytime_sends_one_line_then_closes_for_nc_and_socat(io: Io) {
    require("socat");
    require("nc");
    let mut server = ServerProcess::start(io, &["daytime", "--threads", "1"]);
    let (host, port) = (server.addr.ip().to_string(), server.addr.port().to_string());
    let by_nc = pipe_through(Command::new("nc").args(["-N", &host, &port]), b"");
    let by_socat = pipe_through(
        Command::new("socat").args(["-t", "20", "-", &format!("TCP:{}", server.addr)]),
        b"",
    );
    for got in [by_nc, by_socat] {
        let text = String::from_utf8(got).unwrap();
        assert!(text.ends_with("-UTC\r\n"), "{text:?}");
        assert_eq!(text.matches("\r\n").count(), 1, "{text:?}");
        let year = this_year();
        assert!(text.contains(&format!(", {year} ")), "{text:?} in {year}");
    }
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.log_text());
}

/// This year, from `date`, so the test does not reimplement the service.
fn this_year() -> String {
    let out = Command::new("date").args(["-u", "+%Y"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
