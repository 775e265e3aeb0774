//! `evloop serve --tls-cert --tls-key` against real clients — `openssl
//! s_client`, `curl` against `serve http`, `socat OPENSSL:` — with
//! certificates made in the test; SNI among several certificates and their
//! reload on SIGUSR1 (a wrong file keeps the old ones); a thousand hostile
//! clients of each kind, each closing only its connection, counted by
//! reason in the metrics, with the server's memory back where it was.
//!
//! The real clients' tests skip, saying so, where a client is not
//! installed, unless `EVLOOP_REQUIRE_TLS_TOOLS=1` (as CI sets it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Io, LIMIT, ServerProcess, TempDir, connect, per_driver};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

per_driver!(
    openssl_s_client_echoes_over_tls_1_3_and_1_2,
    curl_gets_headers_and_bodies_from_serve_http,
    socat_openssl_echoes,
    sni_picks_among_certificates_and_sigusr1_reloads_them,
    a_thousand_hostile_clients_of_each_kind_leave_the_server_serving,
    the_proxy_header_comes_before_the_handshake,
    tls_on_serves_tls_on_one_listener_and_plaintext_on_the_other,
    every_service_runs_under_tls,
);

/// A certificate made for `names` and its key, written as PEM files.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Cert {
    fn make(dir: &Path, file: &str, names: &[&str]) -> Cert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.join(format!("{file}.crt"));
        let key = dir.join(format!("{file}.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        Cert {
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

/// Whether the real client `tool` can run: if not, the test says so and
/// passes, unless `EVLOOP_REQUIRE_TLS_TOOLS=1`.
fn tool(tool: &str) -> bool {
    if std::env::var_os("EVLOOP_REQUIRE_TLS_TOOLS").is_some_and(|v| v == "1") {
        common::require(tool);
        return true;
    }
    let there = common::installed(tool);
    if !there {
        eprintln!("{tool} is not installed: skipped (EVLOOP_REQUIRE_TLS_TOOLS=1 fails instead)");
    }
    there
}

fn tls_server(io: Io, service: &[&str], cert: &Cert, more: &[&str]) -> ServerProcess {
    let mut args = service.to_vec();
    args.extend([
        "--threads",
        "1",
        "--tls-cert",
        cert.cert(),
        "--tls-key",
        cert.key(),
    ]);
    args.extend(more);
    ServerProcess::start(io, &args)
}

/// Talks to `openssl s_client` on its standard streams: sends `line`,
/// waits for it to come back, then ends the client's input.
fn s_client_echo(addr: SocketAddr, cert: &Cert, version: &str, line: &str) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(["-CAfile", cert.cert(), "-verify_return_error", version])
        .args(["-quiet", "-no_ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut echoed = String::new();
    let reader = std::thread::spawn({
        let stdout = child.stdout.take().unwrap();
        move || {
            let mut stdout = BufReader::new(stdout);
            stdout.read_line(&mut echoed).map(|_| echoed)
        }
    });
    let started = Instant::now();
    while !reader.is_finished() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("openssl s_client {version}: no echo within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        reader.join().unwrap().unwrap(),
        format!("{line}\n"),
        "{version}"
    );
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "openssl s_client {version}: {status}");
}

fn openssl_s_client_echoes_over_tls_1_3_and_1_2(io: Io) {
    if !tool("openssl") {
        return;
    }
    let dir = TempDir::new(&format!("tls-openssl-{}", io.name()));
    let cert = Cert::make(&dir.0, "localhost", &["localhost"]);
    let mut server = tls_server(io, &["echo"], &cert, &[]);
    s_client_echo(server.addr, &cert, "-tls1_3", "hello over TLS 1.3");
    s_client_echo(server.addr, &cert, "-tls1_2", "hello over TLS 1.2");
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let exit_line = server.wait_for_line("TLS: 2 handshakes");
    assert!(
        exit_line.ends_with("TLS: 2 handshakes (0 resumed), 0 failed"),
        "{exit_line}"
    );
}

/// `curl --cacert CERT ARGS https://localhost:PORT/PATH`, writing the
/// headers to `headers` and the body to `body`; returns what `-w` asked.
fn curl(addr: SocketAddr, cert: &Cert, path: &str, headers: &Path, body: &Path) -> String {
    let resolve = format!("localhost:{}:{}", addr.port(), addr.ip());
    let url = format!("https://localhost:{}{path}", addr.port());
    let output = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--cacert",
            cert.cert(),
            "--resolve",
            &resolve,
        ])
        .args([
            "-D",
            headers.to_str().unwrap(),
            "-o",
            body.to_str().unwrap(),
        ])
        .args(["-w", "%{http_version} %{ssl_verify_result}", &url])
        .output()
        .expect("run curl");
    assert!(output.status.success(), "curl {url}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn curl_gets_headers_and_bodies_from_serve_http(io: Io) {
    if !tool("curl") {
        return;
    }
    let dir = TempDir::new(&format!("tls-curl-{}", io.name()));
    let cert = Cert::make(&dir.0, "localhost", &["localhost"]);
    let root = dir.0.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>over TLS</h1>\n").unwrap();
    // Larger than a file chunk and the watermarks: sent as many chunks.
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 3).map(|i| (i % 249) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    let root_arg = root.to_str().unwrap();
    let server = tls_server(io, &["http", "--root", root_arg], &cert, &[]);
    let (headers, body) = (dir.0.join("headers"), dir.0.join("body"));
    // ALPN http/1.1, the certificate verified (0).
    assert_eq!(curl(server.addr, &cert, "/", &headers, &body), "1.1 0");
    let head = std::fs::read_to_string(&headers).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/html\r\n"), "{head}");
    assert!(head.contains("Content-Length: 18\r\n"), "{head}");
    assert_eq!(
        std::fs::read_to_string(&body).unwrap(),
        "<h1>over TLS</h1>\n"
    );
    curl(server.addr, &cert, "/big.bin", &headers, &body);
    let head = std::fs::read_to_string(&headers).unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", big.len())),
        "{head}"
    );
    assert!(std::fs::read(&body).unwrap() == big, "the big file differs");
}

fn socat_openssl_echoes(io: Io) {
    if !tool("socat") {
        return;
    }
    let dir = TempDir::new(&format!("tls-socat-{}", io.name()));
    let cert = Cert::make(&dir.0, "localhost", &["localhost"]);
    let server = tls_server(io, &["echo"], &cert, &[]);
    let target = format!(
        "OPENSSL:{},cafile={},commonname=localhost",
        server.addr,
        cert.cert()
    );
    let input: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let echoed = common::pipe_through(
        Command::new("socat").args(["-t", "5", "-", &target]),
        &input,
    );
    assert!(
        echoed == input,
        "socat got {} of {} bytes",
        echoed.len(),
        input.len()
    );
}

fn client_config(trusted: &[&Cert]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Completes a handshake asking for `name`; returns the certificate
/// served, or the handshake's error.
fn served_certificate(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> Result<CertificateDer<'static>, rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut client = StreamOwned::new(tls, connect(addr));
    while client.conn.is_handshaking() {
        if let Err(e) = client.conn.complete_io(&mut client.sock) {
            let e = e.into_inner().expect("a TLS error");
            return Err(*e.downcast::<rustls::Error>().expect("a TLS error"));
        }
    }
    Ok(client.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned())
}

fn sni_picks_among_certificates_and_sigusr1_reloads_them(io: Io) {
    let dir = TempDir::new(&format!("tls-sni-{}", io.name()));
    let a = Cert::make(&dir.0, "a", &["a.test"]);
    let b = Cert::make(&dir.0, "b", &["b.test", "*.b.test"]);
    let mut server = ServerProcess::start(
        io,
        &["echo", "--tls-cert", a.cert(), "--tls-key", a.key()]
            .into_iter()
            .chain(["--tls-cert", b.cert(), "--tls-key", b.key()])
            .collect::<Vec<_>>(),
    );
    let config = client_config(&[&a, &b]);
    assert_eq!(
        served_certificate(server.addr, &config, "a.test").unwrap(),
        a.der
    );
    assert_eq!(
        served_certificate(server.addr, &config, "b.test").unwrap(),
        b.der
    );
    assert_eq!(
        served_certificate(server.addr, &config, "www.b.test").unwrap(),
        b.der
    );
    // The files of b now hold a certificate for c.test: served after SIGUSR1.
    let new = Cert::make(&dir.0, "new", &["c.test"]);
    std::fs::copy(&new.cert, &b.cert).unwrap();
    std::fs::copy(&new.key, &b.key).unwrap();
    server.signal("USR1");
    let line = server.wait_for_line("TLS certificates reloaded");
    assert!(line.ends_with("reloaded: a.test; c.test"), "{line}");
    let config = client_config(&[&a, &new]);
    assert_eq!(
        served_certificate(server.addr, &config, "c.test").unwrap(),
        new.der
    );
    // A wrong file: refused with a log line, the certificates kept.
    std::fs::write(&b.key, "not a key\n").unwrap();
    server.signal("USR1");
    let line = server.wait_for_line("TLS certificates not reloaded");
    assert!(line.contains("the old ones kept"), "{line}");
    assert!(line.contains(b.key()), "{line}");
    assert_eq!(
        served_certificate(server.addr, &config, "c.test").unwrap(),
        new.der
    );
    server.signal("TERM");
    assert!(server.wait_exit().success());
}

/// A ClientHello of `version` (0x0300 SSLv3, 0x0301 TLS 1.0) with one
/// cipher suite and no extensions.
fn old_hello(version: u16) -> Vec<u8> {
    let [major, minor] = version.to_be_bytes();
    let mut body = vec![major, minor];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x00, 0x2f, 1, 0]);
    let len = body.len() as u8;
    let mut record = vec![0x16, major, minor, 0, len + 4, 1, 0, 0, len];
    record.extend_from_slice(&body);
    record
}

/// Half of a real ClientHello.
fn truncated_hello() -> Vec<u8> {
    let config = client_config(&[]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    hello.truncate(hello.len() / 2);
    hello
}

/// Sends `bytes`, ends its side if `close`, and reads until the server
/// ends the connection (a reset is its refusal too).
fn hostile(addr: SocketAddr, bytes: &[u8], close: bool) {
    let mut tcp = connect(addr);
    let _ = tcp.write_all(bytes);
    if close {
        let _ = tcp.shutdown(Shutdown::Write);
    }
    let _ = tcp.read_to_end(&mut Vec::new());
}

/// `count` clients of each kind, from 4 threads; `silent` ones in batches
/// that wait together to be cut at the handshake timeout.
fn crowd(addr: SocketAddr, count: usize) {
    let kinds: Vec<(Vec<u8>, bool)> = vec![
        (b"\x00\xff\x13garbage\r\n".to_vec(), false),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), false),
        (old_hello(0x0300), false),
        (old_hello(0x0301), false),
        (truncated_hello(), true),
    ];
    std::thread::scope(|s| {
        for part in 0..4 {
            let kinds = &kinds;
            s.spawn(move || {
                for _ in (part..count).step_by(4) {
                    for (bytes, close) in kinds {
                        hostile(addr, bytes, *close);
                    }
                }
            });
        }
    });
    for batch in (0..count).collect::<Vec<_>>().chunks(250) {
        let silent: Vec<TcpStream> = batch.iter().map(|_| connect(addr)).collect();
        for mut tcp in silent {
            // Cut by the server: EOF or a reset, never this read's timeout.
            let read = tcp.read(&mut [0; 16]);
            assert!(
                !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "a silent client was not cut: {read:?}"
            );
        }
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The value of the sample `name{labels}` in the server's metrics.
fn metric(metrics: SocketAddr, sample: &str) -> u64 {
    let mut tcp = connect(metrics);
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn a_thousand_hostile_clients_of_each_kind_leave_the_server_serving(io: Io) {
    let dir = TempDir::new(&format!("tls-hostile-{}", io.name()));
    let cert = Cert::make(&dir.0, "localhost", &["localhost"]);
    let more = [
        "--tls-handshake-timeout",
        "300ms",
        "--metrics",
        "127.0.0.1:0",
    ];
    let mut server = tls_server(io, &["echo"], &cert, &more);
    let line = server.wait_for_line("metrics: listening on ");
    let after = line.split("metrics: listening on ").nth(1).unwrap();
    let metrics: SocketAddr = after.split_whitespace().next().unwrap().parse().unwrap();
    let config = client_config(&[&cert]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut good = StreamOwned::new(
        ClientConnection::new(Arc::clone(&config), name).unwrap(),
        connect(server.addr),
    );
    good.write_all(b"before").unwrap();
    good.read_exact(&mut [0; 6]).unwrap();
    // A first round brings the server to its working size.
    crowd(server.addr, 250);
    let before = vm_rss_kib(server.pid());
    crowd(server.addr, 1000);
    let after = vm_rss_kib(server.pid());
    eprintln!("VmRSS {before} KiB before 1000 hostile clients of each kind, {after} KiB after");
    let failures = |reason: &str| {
        metric(
            metrics,
            &format!("evloop_tls_handshake_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(failures("not_tls"), 2 * 1250);
    assert_eq!(failures("protocol_version"), 2 * 1250);
    assert_eq!(failures("truncated"), 1250);
    assert_eq!(failures("timeout"), 1250);
    assert_eq!(
        metric(metrics, "evloop_tls_handshakes_total{result=\"full\"}"),
        1
    );
    // The good client is still served, and so is a newcomer.
    good.write_all(b"after").unwrap();
    let mut got = [0; 5];
    good.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after");
    assert_eq!(
        served_certificate(server.addr, &config, "localhost").unwrap(),
        cert.der
    );
    assert!(
        after < before + 8 * 1024,
        "VmRSS grew from {before} KiB to {after} KiB over 6000 hostile clients"
    );
    drop(good);
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let exit_line = server.wait_for_line(" handshakes (");
    assert!(
        exit_line.contains("(not_tls 2500, protocol_version 2500, timeout 1250, truncated 1250)"),
        "{exit_line}"
    );
}

fn the_proxy_header_comes_before_the_handshake(io: Io) {
    let dir = TempDir::new(&format!("tls-proxy-{}", io.name()));
    let cert = Cert::make(&dir.0, "localhost", &["localhost"]);
    let server = tls_server(io, &["echo", "--proxy-protocol"], &cert, &[]);
    let mut tcp = connect(server.addr);
    tcp.write_all(b"PROXY TCP4 203.0.113.7 198.51.100.2 4242 443\r\n")
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = ClientConnection::new(client_config(&[&cert]), name).unwrap();
    let mut client = StreamOwned::new(tls, tcp);
    client.write_all(b"proxied and encrypted").unwrap();
    let mut got = [0; 21];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"proxied and encrypted");
}

/// A TLS client of `addr` that trusts `cert`, handshake done.
fn tls_client(addr: SocketAddr, cert: &Cert) -> StreamOwned<ClientConnection, std::net::TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let tls = ClientConnection::new(client_config(&[cert]), name).unwrap();
    let mut client = StreamOwned::new(tls, connect(addr));
    client.flush().unwrap();
    client
}

/// The README's claim: every service runs under TLS. Each is started with
/// a certificate and spoken to over TLS: log logs the bytes, discard takes
/// them and says nothing, chargen streams its lines, daytime tells the
/// time and closes (with close_notify: a clean end), echo and http are
/// covered above.
fn every_service_runs_under_tls(io: Io) {
    let dir = TempDir::new(&format!("tls-services-{}", io.name()));
    let cert = Cert::make(&dir.0, "localhost", &["localhost"]);

    let mut log = tls_server(io, &["log"], &cert, &[]);
    let mut client = tls_client(log.addr, &cert);
    client.write_all(b"seventeen bytes!!").unwrap();
    log.wait_for_line("read 17 bytes");
    drop(client);

    let discard = tls_server(io, &["discard"], &cert, &[]);
    let mut client = tls_client(discard.addr, &cert);
    client.write_all(&[b'x'; 100_000]).unwrap();
    client.conn.send_close_notify();
    client.flush().unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty(), "discard answered {} bytes", rest.len());

    let chargen = tls_server(io, &["chargen"], &cert, &[]);
    let mut client = tls_client(chargen.addr, &cert);
    let mut lines = [0u8; 74 * 10];
    client.read_exact(&mut lines).unwrap();
    for line in lines.chunks(74) {
        assert_eq!(&line[72..], b"\r\n", "{:?}", String::from_utf8_lossy(line));
        assert!(
            line[..72]
                .iter()
                .all(|b| b.is_ascii_graphic() || *b == b' ')
        );
    }
    drop(client);

    let daytime = tls_server(io, &["daytime"], &cert, &[]);
    let mut client = tls_client(daytime.addr, &cert);
    let mut time = String::new();
    client
        .read_to_string(&mut time)
        .expect("a clean end: close_notify");
    assert!(time.ends_with("\r\n") && time.len() > 20, "{time:?}");
}

/// `--tls-on`: HTTPS-style TLS on one listener, plaintext on the other,
/// from one process; the listening lines say which is which.
fn tls_on_serves_tls_on_one_listener_and_plaintext_on_the_other(io: Io) {
    let dir = TempDir::new(&format!("tls-on-{}", io.name()));
    let cert = Cert::make(&dir.0, "localhost", &["localhost"]);
    let more = [
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.2:0",
        "--tls-on",
        "127.0.0.2:0",
    ];
    let mut server = tls_server(io, &["echo"], &cert, &more);
    let address_in = |line: String| -> SocketAddr {
        let rest = line.rsplit("listening on ").next().unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let secure = address_in(server.wait_for_line("listening on 127.0.0.2:"));
    assert!(
        server
            .wait_for_line("listening on 127.0.0.2:")
            .contains("(TLS)")
    );
    assert!(
        !server
            .wait_for_line("listening on 127.0.0.1:")
            .contains("(TLS)")
    );
    let plain = server.addr;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = ClientConnection::new(client_config(&[&cert]), name).unwrap();
    let mut client = StreamOwned::new(tls, connect(secure));
    client.write_all(b"encrypted").unwrap();
    let mut got = [0; 9];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"encrypted");
    let mut clear = connect(plain);
    clear.write_all(b"in the clear").unwrap();
    let mut got = [0; 12];
    clear.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"in the clear");
}

#[test]
fn tls_options_that_cannot_work_are_refused() {
    let dir = TempDir::new("tls-options");
    let cert = Cert::make(&dir.0, "localhost", &["localhost"]);
    let other = Cert::make(&dir.0, "other", &["localhost"]);
    let missing = dir.0.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--tls-on", "127.0.0.1:0"],
            "--tls-on needs --tls-cert and --tls-key",
        ),
        (
            &[
                "--tls-cert",
                cert.cert(),
                "--tls-key",
                cert.key(),
                "--tls-on",
                "127.0.0.9:1",
            ],
            "--tls-on 127.0.0.9:1: not one of the --listen addresses",
        ),
        (
            &["--tls-cert", cert.cert()],
            "1 --tls-cert and 0 --tls-key: each certificate needs its key",
        ),
        (
            &["--tls-handshake-timeout", "1s"],
            "--tls-handshake-timeout needs --tls-cert and --tls-key",
        ),
        (
            &["--tls-cert", missing, "--tls-key", cert.key()],
            "missing.pem: No such file",
        ),
        (
            &["--tls-cert", cert.cert(), "--tls-key", other.key()],
            "other.key: not the key of the certificate in",
        ),
        (
            &["--tls-cert", cert.key(), "--tls-key", cert.key()],
            "localhost.key: no certificate",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["serve", "echo", "--listen", "127.0.0.1:0"];
        all.extend(args);
        let (status, stderr, _) = common::run_to_exit(&all);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
