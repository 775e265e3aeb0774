//! The layer driven in memory (`evloop::testing`) against a rustls client:
//! the handshake, data both ways, backpressure, files, closing, and each
//! way a handshake fails.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

use super::*;
use crate::services::Echo;
use crate::testing::{Builder as ConnBuilder, Connection, State};
use crate::{Action, CloseReason, Context, Handler, Input};

/// A self-signed certificate for `names`: its PEM, its key's PEM, its DER.
fn self_signed(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().clone(),
    )
}

fn certificates(certs: &[&(String, String, CertificateDer<'static>)]) -> Certificates {
    Certificates::from_pem(certs.iter().map(|(c, k, _)| (c, k))).unwrap()
}

fn client_config(
    trusted: &CertificateDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A rustls client talking to one in-memory connection.
struct Client {
    tls: ClientConnection,
    /// Plaintext received.
    got: Vec<u8>,
    /// The server's `close_notify` came.
    closed: bool,
}

impl Client {
    fn new(config: &Arc<ClientConfig>, name: &str) -> Client {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        Client {
            tls: ClientConnection::new(Arc::clone(config), name).unwrap(),
            got: Vec::new(),
            closed: false,
        }
    }

    /// Sends what the client has to send.
    fn send<H: Handler>(&mut self, conn: &mut Connection<H>) {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        if !out.is_empty() {
            conn.receive(&out);
        }
    }

    /// Takes the server's output and decrypts it; says whether there was
    /// any. Panics on a TLS error.
    fn take<H: Handler>(&mut self, conn: &mut Connection<H>) -> bool {
        let output = conn.take_output();
        let mut rest = &output[..];
        while !rest.is_empty() {
            self.tls.read_tls(&mut rest).unwrap();
            let state = self.tls.process_new_packets().unwrap();
            let mut plain = vec![0; state.plaintext_bytes_to_read()];
            self.tls.reader().read_exact(&mut plain).unwrap();
            self.got.extend_from_slice(&plain);
            self.closed |= state.peer_has_closed();
        }
        !output.is_empty()
    }

    /// Moves bytes both ways until neither side has more.
    fn exchange<H: Handler>(&mut self, conn: &mut Connection<H>) {
        loop {
            let sending = self.tls.wants_write();
            self.send(conn);
            if !self.take(conn) && !sending {
                return;
            }
        }
    }

    fn write(&mut self, plain: &[u8]) {
        self.tls.writer().write_all(plain).unwrap();
    }
}

/// Opens a connection to `tls` and completes the handshake.
fn handshake<S: Service>(
    tls: &Tls<S>,
    config: &Arc<ClientConfig>,
    name: &str,
) -> (Connection<TlsHandler<S>>, Client) {
    let mut conn = Connection::open(tls);
    let mut client = Client::new(config, name);
    client.exchange(&mut conn);
    assert!(!client.tls.is_handshaking(), "handshake incomplete");
    (conn, client)
}

#[test]
fn echo_over_tls_1_3_and_1_2() {
    let cert = self_signed(&["localhost"]);
    let tls = Tls::new(certificates(&[&cert]), Echo).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&cert.2, &[version], &[]);
        let (mut conn, mut client) = handshake(&tls, &config, "localhost");
        assert_eq!(client.tls.protocol_version(), Some(version.version));
        client.write(b"hello over TLS");
        client.exchange(&mut conn);
        assert_eq!(client.got, b"hello over TLS");
        assert_eq!(conn.state(), State::Open);
    }
    assert_eq!(tls.stats().snapshot().full, 2);
}

#[test]
fn the_certificate_is_chosen_by_the_name_asked_for() {
    let a = self_signed(&["a.test", "127.0.0.1"]);
    let b = self_signed(&["b.test", "*.b.test"]);
    let tls = Tls::new(certificates(&[&a, &b]), Echo).unwrap();
    assert_eq!(
        tls.certificates().names(),
        [vec!["a.test"], vec!["b.test", "*.b.test"]]
    );
    for (name, cert) in [("a.test", &a), ("b.test", &b), ("www.b.test", &b)] {
        // Each client trusts only the certificate it should get.
        let (_conn, client) = handshake(&tls, &client_config(&cert.2, BOTH, &[]), name);
        assert_eq!(client.tls.peer_certificates().unwrap()[0], cert.2, "{name}");
    }
    // A client that asks for no name (rustls asks none for an IP
    // address) gets the first, the default.
    let (_conn, client) = handshake(&tls, &client_config(&a.2, BOTH, &[]), "127.0.0.1");
    assert_eq!(client.tls.peer_certificates().unwrap()[0], a.2);
}

#[test]
fn alpn_picks_a_protocol_the_service_speaks_and_refuses_a_client_with_none() {
    let cert = self_signed(&["localhost"]);
    let tls = Tls::builder(certificates(&[&cert]))
        .alpn(["http/1.1"])
        .build(Echo)
        .unwrap();
    let config = client_config(&cert.2, BOTH, &["h2", "http/1.1"]);
    let (_conn, client) = handshake(&tls, &config, "localhost");
    assert_eq!(client.tls.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Without ALPN: served.
    let (_conn, client) = handshake(&tls, &client_config(&cert.2, BOTH, &[]), "localhost");
    assert_eq!(client.tls.alpn_protocol(), None);
    // Only h2: refused, with an alert.
    let mut conn = Connection::open(&tls);
    let mut client = Client::new(&client_config(&cert.2, BOTH, &["h2"]), "localhost");
    client.send(&mut conn);
    assert!(conn.pending_output() > 0, "an alert");
    assert_eq!(conn.state(), State::Closing);
    let stats = tls.stats().snapshot();
    assert_eq!(stats.failed(FailReason::Incompatible), 1);
    assert_eq!(stats.completed(), 2);
}

#[test]
fn a_second_connection_resumes_the_session_with_a_ticket() {
    let cert = self_signed(&["localhost"]);
    let tls = Tls::new(certificates(&[&cert]), Echo).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&cert.2, &[version], &[]);
        let (mut conn, mut client) = handshake(&tls, &config, "localhost");
        // TLS 1.3 tickets come after the handshake.
        client.write(b"x");
        client.exchange(&mut conn);
        let (_conn, client) = handshake(&tls, &config, "localhost");
        assert_eq!(
            client.tls.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
    }
    let stats = tls.stats().snapshot();
    assert_eq!((stats.full, stats.resumed), (2, 2));
}

/// Writes what it reads in capitals until a line says `quit`, then closes;
/// records what it heard.
#[derive(Clone, Default)]
struct Shout {
    heard: Arc<Mutex<Vec<String>>>,
}

impl Handler for Shout {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let bytes = input.bytes().to_ascii_uppercase();
        input.consume_all();
        cx.write(&bytes);
        if bytes.ends_with(b"QUIT\n") {
            Action::Close
        } else {
            Action::Continue
        }
    }

    fn on_read_closed(&mut self, unconsumed: &[u8], _cx: &mut Context<'_>) {
        let heard = format!("read closed with {} left", unconsumed.len());
        self.heard.lock().unwrap().push(heard);
    }

    fn on_close(&mut self, reason: CloseReason) {
        self.heard
            .lock()
            .unwrap()
            .push(format!("closed {}", reason.name()));
    }
}

#[test]
fn a_handler_that_closes_sends_close_notify_after_its_output() {
    let cert = self_signed(&["localhost"]);
    let shout = Shout::default();
    let tls = Tls::new(certificates(&[&cert]), shout.clone()).unwrap();
    let config = client_config(&cert.2, BOTH, &[]);
    let (mut conn, mut client) = handshake(&tls, &config, "localhost");
    client.write(b"bye\nquit\n");
    client.exchange(&mut conn);
    assert_eq!(client.got, b"BYE\nQUIT\n");
    assert!(client.closed, "close_notify");
    assert_eq!(conn.state(), State::Lingering);
}

#[test]
fn the_clients_close_notify_ends_the_handlers_input() {
    let cert = self_signed(&["localhost"]);
    let shout = Shout::default();
    let tls = Tls::new(certificates(&[&cert]), shout.clone()).unwrap();
    let config = client_config(&cert.2, BOTH, &[]);
    let (mut conn, mut client) = handshake(&tls, &config, "localhost");
    client.write(b"last words");
    client.tls.send_close_notify();
    client.exchange(&mut conn);
    assert_eq!(client.got, b"LAST WORDS");
    assert!(client.closed, "close_notify back");
    assert_eq!(shout.heard.lock().unwrap()[0], "read closed with 0 left");
    conn.close_input();
    assert_eq!(conn.state(), State::Closed(CloseReason::Service));
    assert_eq!(shout.heard.lock().unwrap()[1], "closed service");
}

#[test]
fn the_connections_end_without_close_notify_ends_the_handlers_input_too() {
    let cert = self_signed(&["localhost"]);
    let shout = Shout::default();
    let tls = Tls::new(certificates(&[&cert]), shout.clone()).unwrap();
    let config = client_config(&cert.2, BOTH, &[]);
    let (mut conn, mut client) = handshake(&tls, &config, "localhost");
    client.write(b"cut");
    client.send(&mut conn);
    conn.close_input();
    client.take(&mut conn);
    assert_eq!(client.got, b"CUT");
    assert!(client.closed);
    assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
}

#[test]
fn echo_output_past_the_high_watermark_pauses_reading_the_ciphertext() {
    let cert = self_signed(&["localhost"]);
    let tls = Tls::new(certificates(&[&cert]), Echo).unwrap();
    let config = client_config(&cert.2, BOTH, &[]);
    let mut conn = ConnBuilder::new()
        .watermarks(16 * 1024, 64 * 1024)
        .open(&tls);
    let mut client = Client::new(&config, "localhost");
    client.tls.set_buffer_limit(None);
    client.exchange(&mut conn);
    // 4 MiB sent without reading the answers.
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    client.write(&data);
    client.send(&mut conn);
    assert!(conn.is_paused());
    // What the connection holds: the output up to about the watermark and
    // one read of input; the rest waits "in the kernel".
    assert!(conn.pending_output() < 64 * 1024 + 70 * 1024);
    assert!(conn.unread_input() > 3 << 20);
    while client.got.len() < data.len() {
        assert!(client.take(&mut conn), "stalled at {}", client.got.len());
        assert!(conn.pending_output() < 64 * 1024 + 70 * 1024);
    }
    assert!(client.got == data);
}

/// Streams `total` bytes of `*` when asked, 16 KiB per drain notice; or,
/// with a file, sends it.
struct Stream {
    left: usize,
    file: Option<std::fs::File>,
}

impl Clone for Stream {
    fn clone(&self) -> Stream {
        Stream {
            left: self.left,
            file: self.file.as_ref().map(|f| f.try_clone().unwrap()),
        }
    }
}

impl Handler for Stream {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        input.consume_all();
        cx.pause_reading();
        if let Some(file) = self.file.take() {
            let len = file.metadata().unwrap().len();
            cx.write(b"file:");
            cx.send_file(file, 0, len);
            assert!(cx.sending_file());
            return Action::Close;
        }
        self.on_drained(cx)
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        let n = self.left.min(16 * 1024);
        let out = cx.output();
        out.resize(out.len() + n, b'*');
        self.left -= n;
        if self.left == 0 {
            return Action::Close;
        }
        cx.notify_drained();
        Action::Continue
    }
}

#[test]
fn a_stream_to_a_slow_client_holds_no_more_than_the_watermarks() {
    let cert = self_signed(&["localhost"]);
    let total = 3 << 20;
    let tls = Tls::new(
        certificates(&[&cert]),
        Stream {
            left: total,
            file: None,
        },
    )
    .unwrap();
    let config = client_config(&cert.2, BOTH, &[]);
    let mut conn = ConnBuilder::new()
        .watermarks(16 * 1024, 64 * 1024)
        .open(&tls);
    let mut client = Client::new(&config, "localhost");
    client.exchange(&mut conn);
    client.write(b"go");
    client.send(&mut conn);
    while !client.closed {
        assert!(
            conn.pending_output() < 64 * 1024,
            "{}",
            conn.pending_output()
        );
        assert!(client.take(&mut conn), "stalled at {}", client.got.len());
    }
    assert_eq!(client.got.len(), total);
    assert!(client.got.iter().all(|&b| b == b'*'));
}

#[test]
fn a_file_is_encrypted_a_chunk_at_a_time_then_close_notify() {
    let cert = self_signed(&["localhost"]);
    let path = std::env::temp_dir().join(format!("evloop-tls-file-{}", std::process::id()));
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let stream = Stream {
        left: 0,
        file: Some(file),
    };
    let tls = Tls::new(certificates(&[&cert]), stream).unwrap();
    let config = client_config(&cert.2, BOTH, &[]);
    let mut conn = ConnBuilder::new()
        .watermarks(16 * 1024, 64 * 1024)
        .open(&tls);
    let mut client = Client::new(&config, "localhost");
    client.exchange(&mut conn);
    client.write(b"go");
    client.send(&mut conn);
    while !client.closed {
        // A chunk (64 KiB) beyond the low watermark at most.
        assert!(
            conn.pending_output() <= 90 * 1024,
            "{}",
            conn.pending_output()
        );
        assert!(client.take(&mut conn), "stalled at {}", client.got.len());
    }
    assert_eq!(&client.got[..5], b"file:");
    assert!(client.got[5..] == content[..]);
    assert_eq!(conn.state(), State::Lingering);
}

/// Answers one line per call, pausing until the answer has drained: a
/// pipelining client's later lines wait, decrypted, in the layer.
#[derive(Clone)]
struct OneLineAtATime;

impl Handler for OneLineAtATime {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let Some(end) = input.bytes().iter().position(|&b| b == b'\n') else {
            return Action::Continue;
        };
        cx.write(&input.bytes()[..=end].to_ascii_uppercase());
        input.consume(end + 1);
        cx.pause_reading();
        cx.notify_drained();
        Action::Continue
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        cx.resume_reading();
        Action::Continue
    }
}

#[test]
fn a_paused_handler_gets_the_plaintext_it_left_when_it_resumes() {
    let cert = self_signed(&["localhost"]);
    let tls = Tls::new(certificates(&[&cert]), OneLineAtATime).unwrap();
    let config = client_config(&cert.2, BOTH, &[]);
    let mut conn = ConnBuilder::new().watermarks(0, 1024).open(&tls);
    let mut client = Client::new(&config, "localhost");
    client.exchange(&mut conn);
    client.write(b"one\ntwo\nthree\n");
    client.exchange(&mut conn);
    assert_eq!(client.got, b"ONE\nTWO\nTHREE\n");
}

// Refusals, each counted by its reason.

fn refused(tls: &Tls<Echo>, reason: FailReason) -> u64 {
    tls.stats().snapshot().failed(reason)
}

fn echo_tls() -> (Tls<Echo>, (String, String, CertificateDer<'static>)) {
    let cert = self_signed(&["localhost"]);
    (Tls::new(certificates(&[&cert]), Echo).unwrap(), cert)
}

#[test]
fn plain_http_on_the_tls_port_is_reset_as_not_tls() {
    let (tls, _) = echo_tls();
    let mut conn = Connection::open(&tls);
    conn.receive(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(conn.state(), State::Aborted);
    assert_eq!(refused(&tls, FailReason::NotTls), 1);
}

#[test]
fn a_silent_client_is_cut_at_the_handshake_deadline() {
    let (tls, _) = echo_tls();
    let mut conn = Connection::open(&tls);
    assert!(conn.has_deadline());
    // Half a client hello: still cut.
    let mut client = Client::new(&client_config(&self_signed(&["x"]).2, BOTH, &[]), "x");
    let mut hello = Vec::new();
    client.tls.write_tls(&mut hello).unwrap();
    conn.receive(&hello[..hello.len() / 2]);
    assert!(conn.fire_deadline());
    assert_eq!(conn.state(), State::Aborted);
    assert_eq!(refused(&tls, FailReason::Timeout), 1);
}

#[test]
fn the_handshake_deadline_is_lifted_once_it_completes() {
    let (tls, cert) = echo_tls();
    let (conn, _client) = handshake(&tls, &client_config(&cert.2, BOTH, &[]), "localhost");
    assert!(!conn.has_deadline());
}

#[test]
fn a_client_that_leaves_in_the_handshake_is_counted_truncated_or_empty() {
    let (tls, _) = echo_tls();
    let mut client = Client::new(&client_config(&self_signed(&["x"]).2, BOTH, &[]), "x");
    let mut hello = Vec::new();
    client.tls.write_tls(&mut hello).unwrap();
    let mut conn = Connection::open(&tls);
    conn.receive(&hello[..20]);
    conn.close_input();
    assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
    let mut conn = Connection::open(&tls);
    conn.close_input();
    assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
    assert_eq!(refused(&tls, FailReason::Truncated), 1);
    assert_eq!(refused(&tls, FailReason::Empty), 1);
    // A shutdown in the handshake is not the client's failure.
    drop(Connection::open(&tls));
    assert_eq!(tls.stats().snapshot().failed_total(), 2);
}

/// A ClientHello of protocol `version` (0x0300 SSLv3, 0x0301 TLS 1.0) with
/// one cipher suite and no extensions, in a record of that version.
fn old_client_hello(version: u16) -> Vec<u8> {
    let [major, minor] = version.to_be_bytes();
    let mut body = vec![major, minor];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 2, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[1, 0]); // null compression
    let mut handshake = vec![1, 0, 0, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, major, minor, 0, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn sslv3_tls_1_0_and_1_1_clients_are_refused_as_protocol_version() {
    let (tls, _) = echo_tls();
    for version in [0x0300, 0x0301, 0x0302] {
        let mut conn = Connection::open(&tls);
        conn.receive(&old_client_hello(version));
        let alert = conn.take_output();
        // A fatal alert: protocol_version (70) where rustls sees the
        // version first; handshake_failure (40) for SSLv3, whose cipher
        // suites it refuses first.
        assert_eq!((alert[0], alert[5]), (0x15, 2), "{version:#x}");
        assert!([40, 70].contains(&alert[6]), "{version:#x}: {}", alert[6]);
    }
    assert_eq!(refused(&tls, FailReason::ProtocolVersion), 3);
}

#[test]
fn a_client_that_rejects_the_certificate_is_counted_as_its_alert() {
    let (tls, _) = echo_tls();
    // The client trusts another certificate: it sends bad_certificate or
    // unknown_ca once it sees the server's.
    let config = client_config(&self_signed(&["localhost"]).2, BOTH, &[]);
    let mut conn = Connection::open(&tls);
    let mut client = Client::new(&config, "localhost");
    client.send(&mut conn);
    let output = conn.take_output();
    let mut rest = &output[..];
    client.tls.read_tls(&mut rest).unwrap();
    assert!(client.tls.process_new_packets().is_err());
    client.send(&mut conn);
    assert_eq!(refused(&tls, FailReason::Alert), 1);
    assert_eq!(conn.state(), State::Aborted);
}

#[test]
fn garbage_after_a_handshake_header_is_invalid() {
    let (tls, _) = echo_tls();
    let mut conn = Connection::open(&tls);
    conn.receive(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_ne!(conn.state(), State::Open);
    assert_eq!(refused(&tls, FailReason::Invalid), 1);
}

#[test]
fn wrong_certificate_files_say_which_and_why() {
    let cert = self_signed(&["localhost"]);
    let other = self_signed(&["localhost"]);
    let e = Certificates::from_pem([(&cert.0, &other.1)]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("key 1: not the key of the certificate in certificate 1"),
        "{e}"
    );
    let e = Certificates::from_pem([(&cert.1, &cert.1)]).unwrap_err();
    assert!(
        e.to_string().starts_with("certificate 1: no certificate"),
        "{e}"
    );
    let e = Certificates::from_pem([(&cert.0, &cert.0)]).unwrap_err();
    assert!(e.to_string().starts_with("key 1: no private key"), "{e}");
    let none: [(&str, &str); 0] = [];
    assert!(Certificates::from_pem(none).is_err());
    let certs = certificates(&[&cert]);
    assert_eq!(
        certs.reload().unwrap_err().kind(),
        std::io::ErrorKind::Unsupported
    );
}

#[test]
fn reload_serves_the_new_files_and_keeps_the_old_if_they_are_wrong() {
    let dir = std::env::temp_dir().join(format!("evloop-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let old = self_signed(&["old.test"]);
    std::fs::write(&cert_path, &old.0).unwrap();
    std::fs::write(&key_path, &old.1).unwrap();
    let certs = Certificates::load([(&cert_path, &key_path)]).unwrap();
    let tls = Tls::new(certs.clone(), Echo).unwrap();
    let new = self_signed(&["new.test"]);
    std::fs::write(&cert_path, &new.0).unwrap();
    // The key is still the old one: refused, the old served.
    let e = certs.reload().unwrap_err();
    assert!(e.to_string().contains("key.pem: not the key"), "{e}");
    let (_conn, _) = handshake(&tls, &client_config(&old.2, BOTH, &[]), "old.test");
    std::fs::write(&key_path, &new.1).unwrap();
    certs.reload().unwrap();
    assert_eq!(certs.names(), [vec!["new.test"]]);
    let (_conn, _) = handshake(&tls, &client_config(&new.2, BOTH, &[]), "new.test");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Consumes nothing: waits for a line that never ends.
#[derive(Clone)]
struct Hoard;

impl Handler for Hoard {
    fn on_data(&mut self, _input: &mut Input<'_>, _cx: &mut Context<'_>) -> Action {
        Action::Continue
    }
}

#[test]
fn plaintext_left_unconsumed_is_bounded_by_max_input() {
    let cert = self_signed(&["localhost"]);
    let tls = Tls::new(certificates(&[&cert]), Hoard).unwrap();
    let config = client_config(&cert.2, BOTH, &[]);
    let mut conn = ConnBuilder::new().max_input(4096).open(&tls);
    let mut client = Client::new(&config, "localhost");
    client.exchange(&mut conn);
    client.write(&[b'x'; 4096]);
    client.send(&mut conn);
    assert_eq!(conn.state(), State::Open);
    client.write(b"y");
    client.send(&mut conn);
    assert_eq!(conn.state(), State::Aborted);
}
