//! The TLS layer on real loopback sockets, on each I/O driver, against a
//! rustls client: echo over TLS 1.3 and 1.2, SNI, ALPN, resumption with a
//! ticket, a big echo to a client that reads slowly (the server's buffers
//! stay bounded), a file sent under TLS, close_notify both ways, and the
//! handshake failures, each closing only its connection, counted.
#![cfg(feature = "tls")]

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use evloop::services::Echo;
use evloop::tls::{Certificates, FailReason, Tls, TlsStats};
use evloop::{Action, Context, Driver, Handler, Input};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};
use support::{KIB, LIMIT, MIB, builder, per_driver, run, start, wait_until};

per_driver!(
    echo_over_tls_1_3_and_1_2,
    sni_picks_the_certificate_and_alpn_the_protocol,
    a_second_connection_resumes_with_a_ticket,
    a_big_echo_to_a_slow_reader_keeps_the_servers_buffers_bounded,
    a_file_goes_out_encrypted_whole,
    close_notify_goes_both_ways,
    failed_handshakes_close_only_their_connection_and_are_counted,
    only_the_listeners_chosen_serve_tls,
);

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

struct Cert {
    pem: String,
    key: String,
    der: CertificateDer<'static>,
}

fn self_signed(names: &[&str]) -> Cert {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    Cert {
        pem: made.cert.pem(),
        key: made.signing_key.serialize_pem(),
        der: made.cert.der().clone(),
    }
}

fn certificates(certs: &[&Cert]) -> Certificates {
    Certificates::from_pem(certs.iter().map(|c| (&c.pem, &c.key))).unwrap()
}

fn client_config(
    trusted: &Cert,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

type Client = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake.
#[track_caller]
fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> Client {
    let tcp = support::connect(addr);
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut client = StreamOwned::new(tls, tcp);
    while client.conn.is_handshaking() {
        client.conn.complete_io(&mut client.sock).unwrap();
    }
    client
}

fn echo_server(driver: Driver, certs: Certificates) -> (support::TestServer, TlsStats) {
    let tls = Tls::new(certs, Echo).unwrap();
    let stats = tls.stats();
    (start(tls, driver, |b| b.threads(1)), stats)
}

fn echo_over_tls_1_3_and_1_2(driver: Driver) {
    let cert = self_signed(&["localhost"]);
    let (server, stats) = echo_server(driver, certificates(&[&cert]));
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut client = connect(
            server.addr,
            &client_config(&cert, &[version], &[]),
            "localhost",
        );
        assert_eq!(client.conn.protocol_version(), Some(version.version));
        client.write_all(b"hello over TLS").unwrap();
        let mut got = [0; 14];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello over TLS");
    }
    assert_eq!(stats.snapshot().full, 2);
    let report = server.stop();
    assert!(report.is_clean());
}

fn sni_picks_the_certificate_and_alpn_the_protocol(driver: Driver) {
    let a = self_signed(&["a.test"]);
    let b = self_signed(&["b.test"]);
    let tls = Tls::builder(certificates(&[&a, &b]))
        .alpn(["http/1.1"])
        .build(Echo)
        .unwrap();
    let server = start(tls, driver, |b| b.threads(1));
    for (name, cert) in [("a.test", &a), ("b.test", &b)] {
        let config = client_config(cert, BOTH, &["h2", "http/1.1"]);
        let client = connect(server.addr, &config, name);
        assert_eq!(client.conn.peer_certificates().unwrap()[0], cert.der);
        assert_eq!(client.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
}

fn a_second_connection_resumes_with_a_ticket(driver: Driver) {
    let cert = self_signed(&["localhost"]);
    let (server, stats) = echo_server(driver, certificates(&[&cert]));
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&cert, &[version], &[]);
        let mut first = connect(server.addr, &config, "localhost");
        // A round trip: the TLS 1.3 tickets come after the handshake.
        first.write_all(b"x").unwrap();
        first.read_exact(&mut [0]).unwrap();
        let second = connect(server.addr, &config, "localhost");
        assert_eq!(
            second.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{version:?}"
        );
    }
    // The server's side of a TLS 1.2 resumption ends with the client's
    // Finished, after the client's.
    wait_until("the server to count both resumptions", LIMIT, || {
        stats.snapshot().resumed == 2
    });
    assert_eq!(stats.snapshot().full, 2);
}

fn a_big_echo_to_a_slow_reader_keeps_the_servers_buffers_bounded(driver: Driver) {
    let cert = self_signed(&["localhost"]);
    let tls = Tls::new(certificates(&[&cert]), Echo).unwrap();
    let server = builder(driver)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .threads(1)
        .build(tls)
        .unwrap();
    let stats = server.stats();
    let server = run(server);
    let mut client = connect(server.addr, &client_config(&cert, BOTH, &[]), "localhost");
    const TOTAL: usize = 8 * MIB;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    // A rustls stream is one object: the writer and the slow reader share it
    // by turns, writing what the server will take without blocking.
    client.sock.set_nonblocking(true).unwrap();
    let (mut sent, mut got) = (0, Vec::with_capacity(TOTAL));
    let mut most_buffered = 0;
    let mut buf = vec![0; 16 * KIB];
    let started = std::time::Instant::now();
    while got.len() < TOTAL {
        assert!(started.elapsed() < LIMIT * 3, "stalled at {}", got.len());
        if sent < TOTAL {
            match client.write(&data[sent..(sent + 64 * KIB).min(TOTAL)]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
            // rustls buffers what it could not send: flush as far as it goes.
            while client.conn.wants_write() {
                match client.conn.write_tls(&mut client.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
        }
        // Slowly: a little at a time, with pauses.
        match client.read(&mut buf) {
            Ok(0) => panic!("closed at {}", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        std::thread::sleep(Duration::from_micros(200));
        let buffered: u64 = stats.loops().iter().map(|l| l.buffered).sum();
        most_buffered = most_buffered.max(buffered);
    }
    assert!(got == data, "the echo differs");
    // The output's high watermark (256 KiB) and a read's worth of input,
    // with room for a record's overhead: nowhere near the 8 MiB in flight.
    assert!(most_buffered < (MIB as u64), "buffered {most_buffered}");
}

/// Sends its file on any input, then closes.
#[derive(Clone)]
struct SendsFile(Arc<std::fs::File>);

impl Handler for SendsFile {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        input.consume_all();
        let file = self.0.try_clone().unwrap();
        let len = file.metadata().unwrap().len();
        cx.write(b"HEAD");
        cx.send_file(file, 0, len);
        Action::Close
    }
}

fn a_file_goes_out_encrypted_whole(driver: Driver) {
    let cert = self_signed(&["localhost"]);
    let path = std::env::temp_dir().join(format!(
        "evloop-tls-{}-{}",
        std::process::id(),
        support::variant(driver)
    ));
    let content: Vec<u8> = (0..3 * MIB + 17).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let tls = Tls::new(certificates(&[&cert]), SendsFile(Arc::new(file))).unwrap();
    let server = start(tls, driver, |b| b.threads(1));
    let mut client = connect(server.addr, &client_config(&cert, BOTH, &[]), "localhost");
    client.write_all(b"go").unwrap();
    let mut got = Vec::new();
    // Ends cleanly: close_notify after the whole file.
    client.read_to_end(&mut got).unwrap();
    assert_eq!(&got[..4], b"HEAD");
    assert!(got[4..] == content[..], "the file differs");
}

/// Answers `bye` by closing.
#[derive(Clone)]
struct Bye;

impl Handler for Bye {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let bye = input.bytes().starts_with(b"bye");
        cx.write(input.bytes());
        input.consume_all();
        if bye { Action::Close } else { Action::Continue }
    }
}

fn close_notify_goes_both_ways(driver: Driver) {
    let cert = self_signed(&["localhost"]);
    let server = start(
        Tls::new(certificates(&[&cert]), Bye).unwrap(),
        driver,
        |b| b.threads(1),
    );
    let config = client_config(&cert, BOTH, &[]);
    // The server closes: its output, then close_notify (a clean end).
    let mut client = connect(server.addr, &config, "localhost");
    client.write_all(b"bye").unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye");
    // The client closes: the server answers with its own close_notify.
    let mut client = connect(server.addr, &config, "localhost");
    client.write_all(b"hi").unwrap();
    client.conn.send_close_notify();
    client.flush().unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hi");
}

/// The first bytes of a real ClientHello.
fn client_hello(cert: &Cert) -> Vec<u8> {
    let config = client_config(cert, BOTH, &[]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    hello
}

/// A TLS 1.0 ClientHello with one cipher suite and no extensions.
fn tls_1_0_hello() -> Vec<u8> {
    let mut body = vec![3, 1];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x00, 0x2f, 1, 0]);
    let mut record = vec![
        0x16,
        3,
        1,
        0,
        body.len() as u8 + 4,
        1,
        0,
        0,
        body.len() as u8,
    ];
    record.extend_from_slice(&body);
    record
}

/// Sends `bytes` (then ends its side if `close`), and waits until the
/// server ends the connection.
fn hostile(addr: SocketAddr, bytes: &[u8], close: bool) {
    let mut tcp = support::connect(addr);
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    // A reset while writing is the server's refusal too.
    let _ = tcp.write_all(bytes);
    if close {
        let _ = tcp.shutdown(Shutdown::Write);
    }
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink);
}

fn failed_handshakes_close_only_their_connection_and_are_counted(driver: Driver) {
    let cert = self_signed(&["localhost"]);
    let tls = Tls::builder(certificates(&[&cert]))
        .handshake_timeout(Duration::from_millis(300))
        .build(Echo)
        .unwrap();
    let stats = tls.stats();
    let server = start(tls, driver, |b| b.threads(2));
    let config = client_config(&cert, BOTH, &[]);
    let mut good = connect(server.addr, &config, "localhost");
    let hello = client_hello(&cert);
    const EACH: u64 = 50;
    for _ in 0..EACH {
        hostile(server.addr, b"\x00\xffgarbage\r\n", false);
        hostile(
            server.addr,
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            false,
        );
        hostile(server.addr, &tls_1_0_hello(), false);
        hostile(server.addr, &hello[..hello.len() / 2], true);
    }
    // Silent clients, all at once: cut at the handshake timeout.
    let silent: Vec<TcpStream> = (0..EACH).map(|_| support::connect(server.addr)).collect();
    wait_until("the silent clients to be cut", LIMIT, || {
        stats.snapshot().failed(FailReason::Timeout) == EACH
    });
    drop(silent);
    let counted = stats.snapshot();
    assert_eq!(counted.failed(FailReason::NotTls), 2 * EACH, "{counted}");
    assert_eq!(
        counted.failed(FailReason::ProtocolVersion),
        EACH,
        "{counted}"
    );
    assert_eq!(counted.failed(FailReason::Truncated), EACH, "{counted}");
    // The good client was served throughout, and a new one is.
    good.write_all(b"still here").unwrap();
    let mut got = [0; 10];
    good.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");
    let mut late = connect(server.addr, &config, "localhost");
    late.write_all(b"!").unwrap();
    late.read_exact(&mut [0]).unwrap();
    assert_eq!(stats.snapshot().completed(), 2);
}

/// `Tls::only_on`: TLS on the first listener, plaintext on the second
/// (as HTTPS on one port and HTTP on another), from one server.
fn only_the_listeners_chosen_serve_tls(driver: Driver) {
    let cert = self_signed(&["localhost"]);
    let certs = certificates(&[&cert]);
    let mut stats = None;
    let server = builder(driver)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .listen(SocketAddr::from(([127, 0, 0, 2], 0)))
        .threads(1)
        .build_with(|bound| {
            let tls = Tls::new(certs, Echo).unwrap().only_on([bound[0].clone()]);
            stats = Some(tls.stats());
            tls
        })
        .unwrap();
    let (secure, plain) = (
        server.local_addrs()[0].inet().unwrap(),
        server.local_addrs()[1].inet().unwrap(),
    );
    let server = run(server);
    let mut client = connect(secure, &client_config(&cert, BOTH, &[]), "localhost");
    client.write_all(b"encrypted").unwrap();
    let mut got = [0; 9];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"encrypted");
    let mut plaintext = support::connect(plain);
    plaintext.write_all(b"in the clear").unwrap();
    let mut got = [0; 12];
    plaintext.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"in the clear");
    drop((client, plaintext));
    let counts = stats.unwrap().snapshot();
    assert_eq!(counts.full, 1, "{counts:?}");
    assert_eq!(counts.failed_total(), 0, "{counts:?}");
    assert!(server.stop().is_clean());
}
