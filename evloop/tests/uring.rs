//! The io_uring driver's own failure modes, forced with rings made small on
//! purpose: receives that find every provided buffer in use (`ENOBUFS`),
//! and a completion queue too small for a turn's completions (overflow).
//! Each must lose nothing and end nothing. (Every other behaviour runs on
//! both drivers in the other suites.)
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use evloop::ring::{Ring, RingConfig};
use evloop::services::Echo;
use evloop::{Counters, Driver, Server};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs an echo server on io_uring with `ring`, has `clients` clients each
/// echo `bytes` pseudo-random bytes at once, checks every byte, and returns
/// the server's counters. `None` where io_uring is unavailable.
fn echo_through(ring: RingConfig, clients: usize, bytes: usize) -> Option<Counters> {
    if let Err(e) = Ring::probe() {
        // CI sets this: there, io_uring must be tested, never skipped.
        assert!(
            std::env::var_os("EVLOOP_REQUIRE_URING").is_none(),
            "io_uring unavailable: {e}"
        );
        eprintln!("skipped: io_uring unavailable here: {e}");
        return None;
    }
    let server = Server::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .threads(1)
        .io(Driver::Uring)
        .ring(ring)
        .build(Echo)
        .expect("build");
    let addr = server.local_addrs()[0].inet().unwrap();
    let shutdown = server.shutdown_handle();
    let running = std::thread::spawn(move || server.run());
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..clients)
            .map(|i| {
                s.spawn(move || {
                    let data: Vec<u8> = (0..bytes)
                        .map(|j| ((j * 31 + i * 7) ^ (j >> 8)) as u8)
                        .collect();
                    let mut stream = TcpStream::connect(addr).expect("connect");
                    stream.set_read_timeout(Some(LIMIT)).unwrap();
                    stream.set_write_timeout(Some(LIMIT)).unwrap();
                    let mut reader = stream.try_clone().unwrap();
                    let expected = data.clone();
                    let echo = std::thread::spawn(move || {
                        let mut echoed = Vec::with_capacity(expected.len());
                        reader.read_to_end(&mut echoed).expect("read the echo");
                        assert!(echoed == expected, "client {i}: the echo differs");
                    });
                    for chunk in data.chunks(16 * 1024) {
                        stream.write_all(chunk).expect("send");
                    }
                    stream.shutdown(Shutdown::Write).unwrap();
                    echo.join().unwrap();
                })
            })
            .collect();
        for client in clients {
            client.join().expect("a client was served in full");
        }
    });
    shutdown.shutdown();
    let report = running.join().unwrap().expect("run");
    assert!(report.is_clean(), "cut {}", report.cut());
    let total = report.total();
    assert_eq!(total.accepted, clients as u64);
    assert_eq!(total.bytes_out, (clients * bytes) as u64, "{total}");
    Some(total)
}

/// Two provided buffers for forty clients: receives keep finding them all
/// in use. Each is submitted again once buffers are back — never in a loop
/// that spins — and every byte arrives.
#[test]
fn receives_that_run_out_of_buffers_resume_and_lose_nothing() {
    let ring = RingConfig {
        buffers: 2,
        buffer_size: 4096,
        ..RingConfig::default()
    };
    let Some(total) = echo_through(ring, 40, 256 * 1024) else {
        return;
    };
    assert!(total.recv_starved > 0, "the buffers never ran out: {total}");
    eprintln!("{total}");
}

/// A ring of 4 entries (16 completions) for a hundred busy clients: the
/// completion queue overflows, the kernel keeps what did not fit, and the
/// loop takes it on its next wait. Multishot operations that the overflow
/// ended are submitted again.
#[test]
fn an_overflowing_completion_queue_loses_nothing() {
    let ring = RingConfig {
        entries: 4,
        ..RingConfig::default()
    };
    let Some(total) = echo_through(ring, 100, 64 * 1024) else {
        return;
    };
    assert!(
        total.cq_overflows > 0,
        "the queue never overflowed: {total}"
    );
    eprintln!("{total}");
}
