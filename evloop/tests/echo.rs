//! Echo correctness under concurrency, half-close and resets, on real
//! loopback sockets against an in-process server, on each I/O driver.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use evloop::services::{Discard, Echo};
use evloop::{CloseReason, Driver};
use support::{
    MIB, Rng, builder, connect, echo_in_chunks, per_driver, start, write_then_half_close_and_read,
};

per_driver!(
    two_hundred_clients_each_echo_one_mebibyte_in_random_chunks,
    half_closed_client_gets_all_its_echo_then_eof,
    clients_that_reset_mid_transfer_do_not_disturb_others,
    discard_reads_everything_and_sends_nothing,
    ipv6_loopback_is_served_when_available,
    urgent_data_does_not_stall_the_bytes_behind_it,
);

fn two_hundred_clients_each_echo_one_mebibyte_in_random_chunks(driver: Driver) {
    let server = start(Echo, driver, |b| b.threads(2));
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..200u64)
            .map(|i| {
                let addr = server.addr;
                s.spawn(move || {
                    let data = Rng::new(i).bytes(MIB);
                    let got = echo_in_chunks(addr, &data, i);
                    assert_eq!(got.len(), data.len(), "client {i}: length");
                    assert!(got == data, "client {i}: bytes differ");
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
    });
    let report = server.stop();
    let total = report.total();
    assert_eq!(total.accepted, 200);
    assert_eq!(total.closed(CloseReason::Peer), 200);
    assert_eq!(total.bytes_in, 200 * MIB as u64);
    assert_eq!(total.bytes_out, 200 * MIB as u64);
    assert!(report.is_clean());
}

/// Pitfalls 1, 2 and 8: data sent just before a half-close is echoed in
/// full, then the server closes (EOF), not resets.
fn half_closed_client_gets_all_its_echo_then_eof(driver: Driver) {
    let server = start(Echo, driver, |b| b.threads(1));
    for size in [1, 1000, 200_000, 3 * MIB] {
        let mut stream = connect(server.addr);
        let data = Rng::new(size as u64).bytes(size);
        // The server's output backs up while the client is still writing,
        // and the FIN arrives behind the data.
        let got = write_then_half_close_and_read(&mut stream, &data);
        assert_eq!(got.len(), size);
        assert!(got == data);
    }
}

/// A client that resets mid-transfer loses only its own connection.
fn clients_that_reset_mid_transfer_do_not_disturb_others(driver: Driver) {
    let server = start(Echo, driver, |b| b.threads(1));
    std::thread::scope(|s| {
        let good: Vec<_> = (0..10u64)
            .map(|i| {
                let addr = server.addr;
                s.spawn(move || {
                    let data = Rng::new(100 + i).bytes(MIB);
                    assert!(echo_in_chunks(addr, &data, i) == data, "good client {i}");
                })
            })
            .collect();
        for i in 0..20u64 {
            let mut stream = connect(server.addr);
            stream.write_all(&Rng::new(i).bytes(300_000)).unwrap();
            // SO_LINGER 0: close sends RST, with echo still in flight.
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(stream);
        }
        for client in good {
            client.join().unwrap();
        }
    });
    // Still serving.
    let data = b"still here".to_vec();
    assert_eq!(echo_in_chunks(server.addr, &data, 7), data);
    let report = server.stop();
    let total = report.total();
    assert!(total.closed(CloseReason::Reset) > 0, "{total}");
    assert_eq!(total.closed(CloseReason::Peer), 11);
    assert_eq!(total.accepted, 31);
}

fn discard_reads_everything_and_sends_nothing(driver: Driver) {
    let server = start(Discard, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    stream.write_all(&vec![7u8; 2 * MIB]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert!(got.is_empty());
    let total = server.stop().total();
    assert_eq!(total.bytes_in, 2 * MIB as u64);
    assert_eq!(total.bytes_out, 0);
}

fn ipv6_loopback_is_served_when_available(driver: Driver) {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback on this machine; nothing to test");
        return;
    };
    drop(probe);
    let server = builder(driver)
        .listen("[::1]:0".parse::<SocketAddr>().unwrap())
        .threads(1)
        .build(Echo)
        .unwrap();
    let addr = server.local_addrs()[0].inet().unwrap();
    let handle = server.shutdown_handle();
    let join = std::thread::spawn(move || server.run());
    assert_eq!(echo_in_chunks(addr, b"over six", 1), b"over six");
    handle.shutdown();
    assert!(join.join().unwrap().unwrap().is_clean());
}

/// A read stops at the TCP urgent mark with data still queued behind it; the
/// reactor must not take that short read for a drained socket, or the rest
/// waits for bytes that may never come.
fn urgent_data_does_not_stall_the_bytes_behind_it(driver: Driver) {
    let server = start(Echo, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    for _ in 0..20 {
        stream.write_all(b"abc").unwrap();
        socket2::SockRef::from(&stream)
            .send_out_of_band(b"!")
            .unwrap();
        stream.write_all(b"def\n").unwrap();
        // The urgent byte is out of band: the echo is the in-band bytes.
        let mut echo = [0u8; 7];
        stream
            .read_exact(&mut echo)
            .expect("the bytes behind the urgent mark");
        assert_eq!(&echo, b"abcdef\n");
    }
}
