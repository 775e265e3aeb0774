//! The PROXY protocol layer on real loopback sockets, on each I/O driver:
//! the peer every call sees, headers in pieces, the bytes after them,
//! refusals (nothing sent, counted by reason), the header timeout, chosen
//! listeners, and a crowd of hostile clients beside good ones.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use evloop::proxy::{ProxyProtocol, ProxyStats, RejectReason, V2_SIGNATURE};
use evloop::services::Echo;
use evloop::{Action, Address, Context, Driver, Handler, Input, Service};
use support::{LIMIT, MIB, Rng, builder, connect, per_driver, run, start, wait_until};

per_driver!(
    every_kind_of_header_sets_the_peer_every_call_sees,
    a_header_sent_a_byte_at_a_time_is_taken,
    bytes_after_the_header_in_the_same_write_reach_the_service_intact,
    what_is_not_a_header_is_refused_with_nothing_sent_and_counted,
    a_silent_client_is_cut_at_the_header_timeout,
    a_listener_not_chosen_passes_proxy_bytes_as_data,
    a_thousand_hostile_clients_leave_good_ones_served,
    a_unix_listener_takes_headers_too,
);

/// Says, in one line when it opens, whom it was opened for and whom its
/// context shows; then, for each read, whom its context shows and what it
/// read: `[PEER] BYTES`.
#[derive(Clone, Copy)]
struct WhoAmI;

struct WhoAmIHandler {
    opened_for: Address,
}

impl Service for WhoAmI {
    type Handler = WhoAmIHandler;

    fn open(&self, peer: &Address) -> WhoAmIHandler {
        WhoAmIHandler {
            opened_for: peer.clone(),
        }
    }
}

impl Handler for WhoAmIHandler {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        let line = format!("{} {}\n", self.opened_for, cx.peer().unwrap());
        cx.write(line.as_bytes());
        Action::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let head = format!("[{}] ", cx.peer().unwrap());
        cx.write(head.as_bytes());
        cx.write(input.bytes());
        input.consume_all();
        Action::Continue
    }
}

fn v2(command: u8, family: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend([0x20 | command, family]);
    out.extend(u16::try_from(rest.len()).unwrap().to_be_bytes());
    out.extend(rest);
    out
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(u16::try_from(value.len()).unwrap().to_be_bytes());
    out.extend(value);
    out
}

/// v2 `PROXY` for a TCP client `source` connecting to `destination`,
/// with two TLVs (an ALPN and one of a vendor's).
fn v2_proxy(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (family, mut rest) = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            (0x11, [s.ip().octets(), d.ip().octets()].concat())
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            (0x21, [s.ip().octets(), d.ip().octets()].concat())
        }
        _ => panic!("one family"),
    };
    rest.extend(source.port().to_be_bytes());
    rest.extend(destination.port().to_be_bytes());
    rest.extend(tlv(0x01, b"h2"));
    rest.extend(tlv(0xEA, b"vpce-0123456789abcdef"));
    v2(1, family, &rest)
}

fn v1_proxy(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Reads one line (up to and with `\n`).
#[track_caller]
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0];
    while line.last() != Some(&b'\n') {
        stream.read_exact(&mut byte).expect("a line");
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Reads exactly `n` bytes.
#[track_caller]
fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    stream.read_exact(&mut got).expect("the answer");
    got
}

/// Reads until the server ends the connection (a close or a reset);
/// returns what came before. Fails after [`LIMIT`].
#[track_caller]
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed within {LIMIT:?}: {e}"),
        }
    }
}

/// Writes `bytes`, tolerating a server that has already reset the
/// connection (it refuses as soon as it has seen enough).
fn write_tolerating_reset(stream: &mut TcpStream, bytes: &[u8]) {
    match stream.write_all(bytes) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) => {}
        Err(e) => panic!("write: {e}"),
    }
}

#[track_caller]
fn wait_for_rejections(stats: &ProxyStats, reason: RejectReason, n: u64) {
    wait_until(&format!("{n} refused as {reason}"), LIMIT, || {
        stats.snapshot().rejected(reason) >= n
    });
    assert_eq!(stats.snapshot().rejected(reason), n, "{reason}");
}

fn every_kind_of_header_sets_the_peer_every_call_sees(driver: Driver) {
    let proxied = ProxyProtocol::new(WhoAmI);
    let stats = proxied.stats();
    let server = start(proxied, driver, |b| b.threads(2));
    let v4 = (addr("203.0.113.7:4242"), addr("198.51.100.2:443"));
    let v6 = (addr("[2001:db8::7]:4343"), addr("[2001:db8::2]:443"));
    let local = v2(0, 0x00, &[]);
    let cases: [(&str, Vec<u8>, Option<SocketAddr>); 6] = [
        ("v1 TCP4", v1_proxy(v4.0, v4.1), Some(v4.0)),
        ("v1 TCP6", v1_proxy(v6.0, v6.1), Some(v6.0)),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec(), None),
        ("v2 PROXY v4, TLVs", v2_proxy(v4.0, v4.1), Some(v4.0)),
        ("v2 PROXY v6, TLVs", v2_proxy(v6.0, v6.1), Some(v6.0)),
        ("v2 LOCAL", local, None),
    ];
    for (what, header, client) in cases {
        let mut stream = connect(server.addr);
        // LOCAL and UNKNOWN: the peer is the real one, this socket.
        let peer = client.unwrap_or_else(|| stream.local_addr().unwrap());
        stream.write_all(&header).unwrap();
        assert_eq!(read_line(&mut stream), format!("{peer} {peer}\n"), "{what}");
        stream.write_all(b"later").unwrap();
        let answer = format!("[{peer}] later");
        assert_eq!(
            read_n(&mut stream, answer.len()),
            answer.as_bytes(),
            "{what}"
        );
    }
    let counts = stats.snapshot();
    assert_eq!((counts.proxied, counts.local, counts.unknown), (4, 1, 1));
    assert_eq!(counts.rejected_total(), 0);
    assert!(server.stop().is_clean());
}

fn a_header_sent_a_byte_at_a_time_is_taken(driver: Driver) {
    let server = start(ProxyProtocol::new(WhoAmI), driver, |b| b.threads(1));
    let client = addr("192.0.2.1:56324");
    for header in [
        v1_proxy(client, addr("192.0.2.2:80")),
        v2_proxy(client, addr("192.0.2.2:80")),
    ] {
        let mut stream = connect(server.addr);
        for &b in &header {
            stream.write_all(&[b]).unwrap();
            // Most bytes get a read of their own.
            std::thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(read_line(&mut stream), format!("{client} {client}\n"));
        stream.write_all(b"x").unwrap();
        let answer = format!("[{client}] x");
        assert_eq!(read_n(&mut stream, answer.len()), answer.as_bytes());
    }
}

fn bytes_after_the_header_in_the_same_write_reach_the_service_intact(driver: Driver) {
    let server = start(ProxyProtocol::new(Echo), driver, |b| b.threads(1));
    for (i, size) in [1, 1000, 300_000, 2 * MIB].into_iter().enumerate() {
        let data = Rng::new(i as u64).bytes(size);
        let mut first = v2_proxy(addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        first.extend_from_slice(&data);
        let mut stream = connect(server.addr);
        let got = support::write_then_half_close_and_read(&mut stream, &first);
        assert_eq!(got.len(), data.len(), "{size} bytes");
        assert!(got == data, "{size} bytes: the echo differs");
    }
    assert!(server.stop().is_clean());
}

fn what_is_not_a_header_is_refused_with_nothing_sent_and_counted(driver: Driver) {
    let proxied = ProxyProtocol::new(Echo);
    let stats = proxied.stats();
    let server = start(proxied, driver, |b| b.threads(1));
    let header = v1_proxy(addr("192.0.2.1:1"), addr("192.0.2.2:2"));
    let mut bad_version = v2_proxy(addr("192.0.2.1:1"), addr("192.0.2.2:2"));
    bad_version[12] = 0x31;
    let too_long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
    let cases: [(&[u8], bool, RejectReason); 8] = [
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
            false,
            RejectReason::NotProxy,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
            false,
            RejectReason::NotProxy,
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80 +443\r\n",
            false,
            RejectReason::Malformed,
        ),
        (&bad_version, false, RejectReason::Unsupported),
        (&too_long, false, RejectReason::TooLong),
        // A header cut short, then the client's end of input.
        (&header[..20], true, RejectReason::Truncated),
        (&bad_version[..10], true, RejectReason::Truncated),
        (b"", true, RejectReason::Empty),
    ];
    let mut expected = [0u64; RejectReason::ALL.len()];
    for (input, half_close, reason) in cases {
        let mut stream = connect(server.addr);
        write_tolerating_reset(&mut stream, input);
        if half_close {
            stream.shutdown(Shutdown::Write).unwrap();
        }
        let got = read_until_closed(&mut stream);
        assert!(got.is_empty(), "{reason}: the server sent {got:?}");
        expected[reason.index()] += 1;
        wait_for_rejections(&stats, reason, expected[reason.index()]);
    }
    assert_eq!(stats.snapshot().accepted(), 0);
    // And the server still serves.
    let mut stream = connect(server.addr);
    stream
        .write_all(&[&header[..], b"still here"].concat())
        .unwrap();
    assert_eq!(read_n(&mut stream, 10), b"still here");
}

fn a_silent_client_is_cut_at_the_header_timeout(driver: Driver) {
    let timeout = Duration::from_millis(300);
    let proxied = ProxyProtocol::builder().timeout(timeout).build(Echo);
    let stats = proxied.stats();
    let server = start(proxied, driver, |b| b.threads(1));
    let header = v1_proxy(addr("192.0.2.1:1"), addr("192.0.2.2:2"));
    // Silent, and trickling: traffic does not extend the deadline.
    // From before the connections exist: their deadlines start later.
    let started = Instant::now();
    let mut silent = connect(server.addr);
    let mut trickling = connect(server.addr);
    for &b in &header[..header.len() - 2] {
        if started.elapsed() > timeout {
            break;
        }
        write_tolerating_reset(&mut trickling, &[b]);
        std::thread::sleep(Duration::from_millis(20));
    }
    for stream in [&mut silent, &mut trickling] {
        assert!(read_until_closed(stream).is_empty());
    }
    let took = started.elapsed();
    // The loop's clock counts whole milliseconds.
    assert!(
        took >= timeout - Duration::from_millis(5),
        "cut after {took:?}"
    );
    wait_for_rejections(&stats, RejectReason::Timeout, 2);
    // A client that sends its header in time is served past the timeout.
    let mut good = connect(server.addr);
    good.write_all(&header).unwrap();
    std::thread::sleep(timeout + Duration::from_millis(100));
    good.write_all(b"late").unwrap();
    assert_eq!(read_n(&mut good, 4), b"late");
}

fn a_listener_not_chosen_passes_proxy_bytes_as_data(driver: Driver) {
    let behind = SocketAddr::from(([127, 0, 0, 1], 0));
    let direct = SocketAddr::from(([127, 0, 0, 2], 0));
    let mut stats = None;
    let server = builder(driver)
        .listen(behind)
        .listen(direct)
        .threads(2)
        .build_with(|bound| {
            let proxied = ProxyProtocol::builder()
                .only_on([bound[0].clone()])
                .build(WhoAmI);
            stats = Some(proxied.stats());
            proxied
        })
        .expect("server builds");
    let bound: Vec<SocketAddr> = server
        .local_addrs()
        .iter()
        .filter_map(Address::inet)
        .collect();
    let stats = stats.unwrap();
    let server = run(server);
    let header = v1_proxy(addr("203.0.113.7:4242"), addr("198.51.100.2:443"));

    let mut proxied = connect(bound[0]);
    proxied.write_all(&header).unwrap();
    assert_eq!(
        read_line(&mut proxied),
        "203.0.113.7:4242 203.0.113.7:4242\n"
    );

    let mut plain = connect(bound[1]);
    let me = plain.local_addr().unwrap();
    assert_eq!(read_line(&mut plain), format!("{me} {me}\n"));
    plain.write_all(&header).unwrap();
    let answer = [format!("[{me}] ").as_bytes(), &header].concat();
    assert_eq!(read_n(&mut plain, answer.len()), answer);

    assert_eq!(stats.snapshot().proxied, 1);
    assert_eq!(stats.snapshot().rejected_total(), 0);
    drop((proxied, plain));
    assert!(server.stop().is_clean());
}

/// 1,000 clients that send no valid header, in four kinds, from eight
/// threads, while good clients are served between them.
fn a_thousand_hostile_clients_leave_good_ones_served(driver: Driver) {
    const HOSTILE: u64 = 1000;
    const THREADS: u64 = 8;
    let proxied = ProxyProtocol::builder()
        .timeout(Duration::from_secs(2))
        .build(Echo);
    let stats = proxied.stats();
    let server = start(proxied, driver, |b| b.threads(2));
    let addr = server.addr;
    let good = std::thread::scope(|s| {
        let clients: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = Rng::new(t + 1);
                    let mut good = 0;
                    for i in (t..HOSTILE).step_by(THREADS as usize) {
                        let mut stream = connect(addr);
                        match i % 4 {
                            // Random bytes that cannot start a header.
                            0 => {
                                let len = rng.between(1, 300);
                                let mut junk = rng.bytes(len);
                                junk[0] = b'G';
                                write_tolerating_reset(&mut stream, &junk);
                            }
                            // A v1 prefix, then garbage.
                            1 => {
                                let junk = [b"PROXY ".as_slice(), &[0xff; 40]].concat();
                                write_tolerating_reset(&mut stream, &junk);
                            }
                            // Half a header, then gone.
                            2 => {
                                write_tolerating_reset(&mut stream, &V2_SIGNATURE[..7]);
                                stream.shutdown(Shutdown::Write).unwrap();
                            }
                            // Connect, then gone.
                            _ => stream.shutdown(Shutdown::Write).unwrap(),
                        }
                        assert!(read_until_closed(&mut stream).is_empty(), "client {i}");
                        if i % 50 == 0 {
                            let mut ok = connect(addr);
                            let client = SocketAddr::from(([192, 0, 2, 9], 9));
                            let mut first = v2_proxy(client, client);
                            first.extend_from_slice(b"good");
                            ok.write_all(&first).unwrap();
                            assert_eq!(read_n(&mut ok, 4), b"good", "good client after {i}");
                            good += 1;
                        }
                    }
                    good
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum::<u64>()
    });
    wait_until("every refusal counted", LIMIT, || {
        stats.snapshot().rejected_total() >= HOSTILE
    });
    let counts = stats.snapshot();
    assert_eq!(counts.rejected_total(), HOSTILE, "{counts}");
    assert_eq!(
        counts.rejected(RejectReason::NotProxy),
        HOSTILE / 4,
        "{counts}"
    );
    assert_eq!(
        counts.rejected(RejectReason::Malformed),
        HOSTILE / 4,
        "{counts}"
    );
    assert_eq!(
        counts.rejected(RejectReason::Truncated),
        HOSTILE / 4,
        "{counts}"
    );
    assert_eq!(
        counts.rejected(RejectReason::Empty),
        HOSTILE / 4,
        "{counts}"
    );
    assert_eq!(counts.proxied, good);
    let mut last = connect(addr);
    last.write_all(&[&b"PROXY UNKNOWN\r\n"[..], b"last"].concat())
        .unwrap();
    assert_eq!(read_n(&mut last, 4), b"last");
    drop(last);
    let report = server.stop();
    assert_eq!(report.total().accepted, HOSTILE + good + 1);
}

/// A proxy on the same host often reaches its server over a Unix socket:
/// the header names the TCP client, or (v2 `AF_UNIX`) a Unix one.
fn a_unix_listener_takes_headers_too(driver: Driver) {
    let path = std::env::temp_dir().join(format!(
        "evloop-proxy-{}-{}.sock",
        std::process::id(),
        support::variant(driver)
    ));
    let _ = std::fs::remove_file(&path);
    let server = builder(driver)
        .listen(Address::Unix(path.clone()))
        .threads(1)
        .build(ProxyProtocol::new(WhoAmI))
        .expect("server builds");
    let server = run(server);
    let mut unix_rest = vec![0; 216];
    unix_rest[..14].copy_from_slice(b"/run/client.sk");
    for (header, client) in [
        (
            v1_proxy(addr("203.0.113.7:4242"), addr("198.51.100.2:443")),
            "203.0.113.7:4242",
        ),
        (v2(1, 0x31, &unix_rest), "unix:/run/client.sk"),
    ] {
        let mut stream = support::connect_unix(&path);
        stream.write_all(&header).unwrap();
        stream.write_all(b"x").unwrap();
        let answer = format!("{client} {client}\n[{client}] x");
        let mut got = vec![0; answer.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), answer);
    }
    assert!(server.stop().is_clean());
    let _ = std::fs::remove_file(&path);
}
