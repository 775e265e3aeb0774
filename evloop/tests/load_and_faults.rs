//! Load and faults against an in-process server, read back through the
//! per-loop counters of its [`Report`](evloop::Report): backpressure, idle
//! deadlines, the connection limit, and counters that add up — on each I/O
//! driver.

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evloop::services::Echo;
use evloop::{Balance, CloseReason, Driver};
use support::{
    Ending, KIB, LIMIT, MIB, assert_echo_works, connect, pattern, per_balance_and_driver,
    per_driver, quiet_machine, round_trip, shared_machine, start, try_round_trip, wait_for_close,
    wait_until,
};

mod backpressure {
    use super::*;

    per_driver!(client_that_stops_reading_is_paused_then_gets_every_byte);

    /// Pitfall 6: a client that writes without reading makes the server
    /// pause its reading (counted in `backpressure_pauses`) instead of
    /// buffering without bound; other clients are served meanwhile; and
    /// once the client reads, every byte comes back in order.
    fn client_that_stops_reading_is_paused_then_gets_every_byte(driver: Driver) {
        let _machine = shared_machine();
        let server = start(Echo, driver, |b| b.threads(1));
        // More than the kernel can buffer on loopback here, so the writer
        // must block unless the server buffers without bound.
        const TOTAL: u64 = 64 * MIB as u64;
        const CHUNK: usize = 64 * KIB - 15; // within one pattern period
        let stream = connect(server.addr);
        let sent = Arc::new(AtomicU64::new(0));
        let writer = {
            let (mut stream, sent) = (stream.try_clone().unwrap(), Arc::clone(&sent));
            std::thread::spawn(move || {
                let mut offset = 0u64;
                while offset < TOTAL {
                    let n = CHUNK.min((TOTAL - offset) as usize);
                    stream.write_all(pattern(7, offset, n)).expect("write");
                    offset += n as u64;
                    sent.store(offset, Ordering::Relaxed);
                }
                stream.shutdown(Shutdown::Write).unwrap();
            })
        };

        // The writer stalls: the server stopped reading from this client.
        let (mut last, mut since) = (0, Instant::now());
        wait_until("the writer to stall", LIMIT, || {
            let now = sent.load(Ordering::Relaxed);
            if now != last {
                (last, since) = (now, Instant::now());
            }
            now > 0 && since.elapsed() >= Duration::from_millis(500)
        });
        let stalled_at = last;
        assert!(
            stalled_at < TOTAL,
            "wrote all {TOTAL} bytes without reading any echo"
        );
        assert_echo_works(server.addr);

        // Now read: everything comes back, byte for byte.
        let mut reader = stream;
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0u64;
        loop {
            let n = reader.read(&mut buf).expect("read echo");
            if n == 0 {
                break;
            }
            assert!(
                buf[..n] == *pattern(7, offset, n),
                "wrong bytes at {offset}"
            );
            offset += n as u64;
        }
        writer.join().unwrap();
        assert_eq!(offset, TOTAL);

        let report = server.stop();
        let total = report.total();
        eprintln!("writer stalled after {stalled_at} bytes; {total}");
        assert!(
            total.backpressure_pauses >= 1,
            "never paused reading: {total}"
        );
        assert_eq!(total.bytes_out, TOTAL + 14);
        assert!(report.is_clean());
    }
}

/// Pitfall 13: per-connection bounds are no server bound.
mod budget {
    use super::*;
    use std::net::TcpStream;

    per_driver!(buffered_bytes_stay_within_the_server_budget);

    /// Writes to every client until none takes a byte for `quiet` (their
    /// echo is not read, so the server must stop reading them); returns what
    /// each sent.
    fn push_until_stalled(clients: &mut [TcpStream], quiet: Duration) -> Vec<u64> {
        let chunk = vec![b'p'; 64 * KIB];
        let mut sent = vec![0u64; clients.len()];
        let mut last_progress = Instant::now();
        while last_progress.elapsed() < quiet {
            assert!(last_progress.elapsed() < LIMIT, "never stalled");
            for (client, sent) in clients.iter_mut().zip(&mut sent) {
                match client.write(&chunk) {
                    Ok(n) => {
                        *sent += n as u64;
                        last_progress = Instant::now();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("push: {e}"),
                }
            }
        }
        sent
    }

    /// A hundred echo clients push without reading against a 2 MiB budget.
    /// Half of them then read their echo back: every byte comes (the paused
    /// connections resume). The other half leave with their echo unread, so
    /// what the server held for them is `bytes_in - bytes_out`: within the
    /// budget and its bounded overshoot, not the 256 KiB watermark per
    /// connection (~12.5 MiB) that bounded it before.
    ///
    /// On io_uring the bound is wider by each loop's receive buffers: the
    /// kernel's multishot receive moves bytes into the loop's provided
    /// buffer ring before the loop sees them, and a receive cancelled when
    /// the budget is reached still delivers what it had taken. Those bytes
    /// are read (counted in `bytes_in`) past the budget, so the overshoot
    /// there is at most `buffers × buffer_size` per loop on top of the
    /// readiness driver's. A ring smaller than the default (128 buffers of
    /// 4 KiB: 512 KiB a loop) keeps that allowance small beside the budget.
    fn buffered_bytes_stay_within_the_server_budget(driver: Driver) {
        // Alone: the stalled clients fill the loopback's socket buffers,
        // which peaked at ~225,000 pages (0.9 GiB) of the kernel's TCP
        // memory. Both drivers' variants at once reached ~484,000 pages,
        // past `tcp_mem`'s pressure mark (383,867 on the development
        // machine), and the kernel then stalled an echo past the clients'
        // 20 s read timeout, on either driver.
        let _machine = quiet_machine();
        const BUDGET: usize = 2 * MIB;
        const LOOPS: usize = 2;
        #[cfg(target_os = "linux")]
        let ring = evloop::ring::RingConfig {
            buffers: 128,
            ..Default::default()
        };
        let ring_allowance = match driver {
            #[cfg(target_os = "linux")]
            Driver::Uring => LOOPS as u64 * u64::from(ring.buffers) * u64::from(ring.buffer_size),
            _ => 0,
        };
        let server = start(Echo, driver, |b| {
            let b = b.threads(LOOPS).max_buffered(BUDGET);
            #[cfg(target_os = "linux")]
            let b = b.ring(ring);
            b
        });
        let mut clients: Vec<TcpStream> = (0..100).map(|_| connect(server.addr)).collect();
        for client in &clients {
            client.set_nonblocking(true).unwrap();
        }
        let sent = push_until_stalled(&mut clients, Duration::from_millis(300));
        // A fresh client is still served, in full.
        assert_echo_works(server.addr);

        let leavers = clients.split_off(50);
        for (client, &sent) in clients.iter_mut().zip(&sent) {
            client.set_nonblocking(false).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut echoed = 0u64;
            let mut buf = vec![0u8; 64 * KIB];
            loop {
                match client.read(&mut buf).expect("read the echo") {
                    0 => break,
                    n => echoed += n as u64,
                }
            }
            assert_eq!(echoed, sent, "echoed {echoed} of {sent}");
        }
        drop(leavers); // their unread echo resets them
        let report = server.stop();
        let total = report.total();
        let held = total.bytes_in - total.bytes_out;
        let bound = 2 * BUDGET as u64 + ring_allowance;
        eprintln!(
            "{driver:?}: held {:.1} MiB for the leavers (bound {:.1} MiB); {} budget pauses; {total}",
            held as f64 / MIB as f64,
            bound as f64 / MIB as f64,
            total.budget_pauses
        );
        assert!(
            held <= bound,
            "held {held} bytes of at most {bound}: {total}"
        );
        assert!(total.budget_pauses > 0, "{total}");
    }
}

mod idle {
    use super::*;

    per_driver!(silent_connection_is_closed_as_idle_and_talker_is_kept);

    /// Pitfall 7: a silent connection is closed once the idle timeout
    /// passes (counted as `closed_idle`), while one that talks more often
    /// than that is kept.
    fn silent_connection_is_closed_as_idle_and_talker_is_kept(driver: Driver) {
        let _machine = shared_machine();
        let idle = Duration::from_millis(500);
        let server = start(Echo, driver, |b| b.threads(1).idle_timeout(Some(idle)));
        let silent_started = Instant::now();
        let mut silent = connect(server.addr);
        let mut talker = connect(server.addr);
        let talker_thread = std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < idle * 3 {
                round_trip(&mut talker, b"x");
                std::thread::sleep(idle / 5);
            }
            talker
        });
        let (ending, _) = wait_for_close(&mut silent, LIMIT);
        let closed_after = silent_started.elapsed();
        assert_eq!(ending, Ending::Eof);
        assert!(
            closed_after >= idle * 9 / 10 && closed_after < idle * 10,
            "closed after {closed_after:?} with an idle timeout of {idle:?}"
        );
        let mut talker = talker_thread.join().unwrap();
        round_trip(&mut talker, b"still here");
        drop(talker);

        let report = server.stop();
        let total = report.total();
        eprintln!("silent connection closed after {closed_after:?}; {total}");
        assert_eq!(total.closed(CloseReason::Idle), 1, "{total}");
        assert_eq!(total.closed(CloseReason::Peer), 1, "{total}");
        assert!(report.is_clean());
    }
}

mod limit {
    use super::*;

    per_balance_and_driver!(connection_limit_is_server_wide_across_two_loops);

    /// With `max_connections(3)` over two loops, the fourth connection is
    /// closed after its grace in the backlog and counted as `closed_limit`, the first three keep
    /// working, and a slot freed by a leaving client is used again.
    fn connection_limit_is_server_wide_across_two_loops(balance: Balance, driver: Driver) {
        let _machine = shared_machine();
        let server = start(Echo, driver, |b| {
            b.threads(2).balance(balance).max_connections(3)
        });
        let mut admitted: Vec<_> = (0..3).map(|_| connect(server.addr)).collect();
        for stream in &mut admitted {
            round_trip(stream, b"hello");
        }
        let mut fourth = connect(server.addr);
        let (_, closed_after) = wait_for_close(&mut fourth, Duration::from_secs(5));
        for stream in &mut admitted {
            round_trip(stream, b"still served");
        }
        // A client leaves; its slot is reused (the server notices the
        // close asynchronously, so a newcomer may be refused meanwhile).
        drop(admitted.pop());
        let mut refused = 0;
        wait_until("a freed slot to be reused", LIMIT, || {
            let mut stream = connect(server.addr);
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            match try_round_trip(&mut stream, b"newcomer") {
                Ok(back) if back == b"newcomer" => {
                    admitted.push(stream);
                    true
                }
                _ => {
                    refused += 1;
                    false
                }
            }
        });
        drop(admitted);

        let report = server.stop();
        let total = report.total();
        eprintln!("{balance:?} {driver:?}: fourth closed after {closed_after:?}; {total}");
        assert!(closed_after < Duration::from_secs(1), "{closed_after:?}");
        assert_eq!(total.closed(CloseReason::Limit), 1 + refused, "{total}");
        assert_eq!(total.accepted, 5 + refused, "{total}");
        assert_eq!(total.closed_total(), total.accepted, "{total}");
        assert!(report.is_clean());
    }
}

mod counters {
    use super::*;

    per_driver!(counters_add_up_after_known_traffic);

    /// After known traffic (three echoes of known sizes, one reset, one idle
    /// client) the summed counters say exactly that.
    fn counters_add_up_after_known_traffic(driver: Driver) {
        let _machine = shared_machine();
        let idle = Duration::from_secs(1);
        let server = start(Echo, driver, |b| b.threads(2).idle_timeout(Some(idle)));
        let sizes = [1usize, 100_000, 3 * MIB + 7];

        let mut silent = connect(server.addr);
        for (seed, &size) in sizes.iter().enumerate() {
            let mut stream = connect(server.addr);
            let mut offset = 0;
            let mut back = Vec::with_capacity(size);
            while offset < size {
                let n = (size - offset).min(60_000);
                stream
                    .write_all(pattern(seed as u64, offset as u64, n))
                    .unwrap();
                offset += n;
                let mut chunk = vec![0; n];
                stream.read_exact(&mut chunk).unwrap();
                back.extend_from_slice(&chunk);
            }
            stream.shutdown(Shutdown::Write).unwrap();
            assert_eq!(wait_for_close(&mut stream, LIMIT).0, Ending::Eof);
            assert_eq!(back.len(), size);
        }
        let mut reset = connect(server.addr);
        round_trip(&mut reset, b"0123456789");
        socket2::SockRef::from(&reset)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(reset); // with a zero linger: RST
        assert_eq!(wait_for_close(&mut silent, LIMIT).0, Ending::Eof);

        let report = server.stop();
        let total = report.total();
        eprintln!("{total}");
        let bytes = sizes.iter().sum::<usize>() as u64 + 10;
        assert_eq!(total.accepted, 5);
        assert_eq!(total.closed(CloseReason::Peer), 3);
        assert_eq!(total.closed(CloseReason::Reset), 1);
        assert_eq!(total.closed(CloseReason::Idle), 1);
        assert_eq!(total.closed_total(), 5);
        assert_eq!(total.bytes_in, bytes);
        assert_eq!(total.bytes_out, bytes);
        assert_eq!(total.accept_errors, 0);
        assert!(report.is_clean());
        // The per-loop counters sum to the total.
        let summed: u64 = report.loops.iter().map(|l| l.counters.accepted).sum();
        assert_eq!(summed, total.accepted);
    }
}
