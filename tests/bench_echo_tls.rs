//! `evloop bench echo --tls` on each of its I/O drivers, against a TLS echo
//! server that needs nothing of evloop's: socat terminating TLS (OpenSSL)
//! in front of a pipe, with a certificate made here by a CA made here.
//!
//! Skipped, saying why, where socat is missing or built without OpenSSL,
//! unless `EVLOOP_REQUIRE_TLS_TOOLS=1` (as in `.ci/run`): then that fails.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{Io, evloop, json_field, json_number, per_driver};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// The longest a bench run may take here.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A certificate authority and a server certificate it signed, for
/// `localhost` and `127.0.0.1`, as PEM files; and another CA that signed
/// nothing of the server's. Removed when dropped.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn new(name: &str) -> Certificates {
        let dir = std::env::temp_dir().join(format!("evloop-bet-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = certificate_authority("evloop test CA");
        let other = certificate_authority("some other CA");
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        for (file, pem) in [
            ("ca.pem", ca.pem()),
            ("other-ca.pem", other.pem()),
            ("cert.pem", cert.pem()),
            ("key.pem", key.serialize_pem()),
        ] {
            std::fs::write(dir.join(file), pem).unwrap();
        }
        Certificates { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Whether socat can terminate TLS here; if not, prints why the test is
/// skipped, or fails where `EVLOOP_REQUIRE_TLS_TOOLS` is set.
fn tls_tools() -> bool {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let output = Command::new("socat")
            .arg("-V")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("socat: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        if text.contains("#define WITH_OPENSSL 1") {
            Ok(())
        } else {
            Err("socat is built without OpenSSL".to_string())
        }
    });
    match found {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("EVLOOP_REQUIRE_TLS_TOOLS").is_none(),
                "no TLS echo server: {why}"
            );
            eprintln!(
                "skipped: no TLS echo server ({why}; set EVLOOP_REQUIRE_TLS_TOOLS=1 to fail)"
            );
            false
        }
    }
}

/// socat as a TLS echo server on a free loopback port: OpenSSL in front
/// of a pipe (what is written to it is read back), a process per
/// connection. Killed when dropped.
struct Socat {
    child: Child,
    addr: SocketAddr,
}

impl Socat {
    /// Starts socat on a port that was free a moment ago; tries another if
    /// socat exits (the port was taken meanwhile, e.g. as a client's
    /// ephemeral port by a test running alongside).
    fn start(certificates: &Certificates) -> Socat {
        for _ in 0..5 {
            if let Some(socat) = Socat::try_start(certificates) {
                return socat;
            }
        }
        panic!("socat does not listen");
    }

    fn try_start(certificates: &Certificates) -> Option<Socat> {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let listen = format!(
            "OPENSSL-LISTEN:{},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            addr.port(),
            certificates.file("cert.pem"),
            certificates.file("key.pem"),
        );
        let child = Command::new("socat")
            .args([&listen, "PIPE"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        let mut socat = Socat { child, addr };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if socat.child.try_wait().expect("wait for socat").is_some() {
                return None;
            }
            // A connection to itself (same local and peer port) would
            // pass for socat listening.
            if let Ok(probe) = TcpStream::connect(addr)
                && probe.local_addr().ok() != probe.peer_addr().ok()
            {
                return Some(socat);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `evloop bench echo --tls --io LOAD --target TARGET --json` with
/// `args`, killing it if it outlives [`RUN_LIMIT`].
#[track_caller]
fn bench_tls(load: Io, target: SocketAddr, args: &[&str]) -> (Output, String, String) {
    let mut child = evloop()
        .args(["bench", "echo", "--tls", "--json", "--io", load.name()])
        .args(["--target", &target.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start evloop");
    let started = Instant::now();
    while child.try_wait().expect("wait for evloop").is_none() {
        if started.elapsed() > RUN_LIMIT {
            child.kill().ok();
            panic!("evloop bench echo --tls ran longer than {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("collect evloop's output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// A passing run: every byte back as sent, nothing lost, on `load`.
#[track_caller]
fn assert_passed(output: &Output, stdout: &str, stderr: &str, load: Io) {
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(json_field(stdout, "io"), format!("\"{}\"", load.name()));
    assert_eq!(json_field(stdout, "tls"), "true", "{stdout}");
    assert!(json_number(stdout, "requests") > 0.0, "{stdout}");
    assert_eq!(json_number(stdout, "mismatches"), 0.0, "{stdout}");
    assert_eq!(json_number(stdout, "io_errors"), 0.0, "{stdout}");
    assert_eq!(json_number(stdout, "connect_errors"), 0.0, "{stdout}");
}

per_driver!(every_echoed_byte_is_checked_through_tls_with_the_ca);
/// `--ca`: the server's certificate checks out against the CA, the
/// handshake is TLS 1.3, and pipelined messages larger than a TLS record's
/// worth of reads come back whole.
fn every_echoed_byte_is_checked_through_tls_with_the_ca(load: Io) {
    if !tls_tools() {
        return;
    }
    let certificates = Certificates::new(&format!("ca-{}", load.name()));
    let server = Socat::start(&certificates);
    let (output, stdout, stderr) = bench_tls(
        load,
        server.addr,
        &[
            "--ca",
            &certificates.file("ca.pem"),
            "--connections",
            "3",
            "--size",
            "5000",
            "--pipeline",
            "3",
            "--duration",
            "500ms",
        ],
    );
    assert_passed(&output, &stdout, &stderr, load);
    assert_eq!(json_number(&stdout, "connected"), 3.0, "{stdout}");
    assert_eq!(json_number(&stdout, "handshakes_total"), 3.0, "{stdout}");
    assert_eq!(json_field(&stdout, "new_connection"), "false", "{stdout}");
    assert_eq!(
        json_field(&stdout, "tls_version"),
        "\"TLSv1_3\"",
        "{stdout}"
    );
}

per_driver!(insecure_takes_a_certificate_for_another_name);
/// `--insecure` with `--sni` naming a host the certificate is not for.
fn insecure_takes_a_certificate_for_another_name(load: Io) {
    if !tls_tools() {
        return;
    }
    let certificates = Certificates::new(&format!("insecure-{}", load.name()));
    let server = Socat::start(&certificates);
    let (output, stdout, stderr) = bench_tls(
        load,
        server.addr,
        &[
            "--insecure",
            "--sni",
            "not-the-server.test",
            "--connections",
            "2",
            "--duration",
            "300ms",
        ],
    );
    assert_passed(&output, &stdout, &stderr, load);
    assert_eq!(json_number(&stdout, "handshakes_total"), 2.0, "{stdout}");
}

per_driver!(a_certificate_of_another_ca_is_refused_as_connect_errors);
/// `--ca` with a CA that did not sign the server's certificate: every
/// handshake fails, each is a connect error, and the reason is printed.
fn a_certificate_of_another_ca_is_refused_as_connect_errors(load: Io) {
    if !tls_tools() {
        return;
    }
    let certificates = Certificates::new(&format!("wrong-{}", load.name()));
    let server = Socat::start(&certificates);
    let (output, stdout, stderr) = bench_tls(
        load,
        server.addr,
        &[
            "--ca",
            &certificates.file("other-ca.pem"),
            "--connections",
            "2",
            "--duration",
            "300ms",
        ],
    );
    assert!(!output.status.success(), "{stdout}");
    assert_eq!(json_number(&stdout, "connect_errors"), 2.0, "{stdout}");
    assert_eq!(json_number(&stdout, "connected"), 0.0, "{stdout}");
    assert_eq!(json_number(&stdout, "handshakes_total"), 0.0, "{stdout}");
    assert!(
        stderr.contains("TLS handshake with") && stderr.contains("invalid peer certificate"),
        "{stderr}"
    );
}

per_driver!(a_new_connection_per_request_counts_full_handshakes);
/// `--new-connection`: each request has its own connection and handshake,
/// all full ones; with `--resume`, the later ones of a thread resume.
fn a_new_connection_per_request_counts_full_handshakes(load: Io) {
    if !tls_tools() {
        return;
    }
    let certificates = Certificates::new(&format!("new-{}", load.name()));
    let server = Socat::start(&certificates);
    let ca = certificates.file("ca.pem");
    let args = ["--ca", &ca, "--connections", "2", "--duration", "600ms"];
    let (output, stdout, stderr) = bench_tls(
        load,
        server.addr,
        &[&args[..], &["--new-connection"]].concat(),
    );
    assert_passed(&output, &stdout, &stderr, load);
    assert_eq!(json_field(&stdout, "new_connection"), "true", "{stdout}");
    let handshakes = json_number(&stdout, "handshakes_total");
    let requests = json_number(&stdout, "requests_total");
    // One connection per request: a handshake for each, plus those whose
    // request was still under way at the end.
    assert!(
        handshakes >= requests && handshakes <= requests + 2.0 && requests > 2.0,
        "{stdout}"
    );
    assert_eq!(json_number(&stdout, "connected"), handshakes, "{stdout}");
    assert_eq!(json_number(&stdout, "handshakes_resumed"), 0.0, "{stdout}");
    assert!(json_number(&stdout, "handshakes_per_sec") > 0.0, "{stdout}");
    let handshake_latency = &stdout[stdout.find("\"handshake_latency_us\"").unwrap()..];
    assert!(json_number(handshake_latency, "p50") > 0.0, "{stdout}");

    let (output, stdout, stderr) = bench_tls(
        load,
        server.addr,
        &[&args[..], &["--new-connection", "--resume"]].concat(),
    );
    assert_passed(&output, &stdout, &stderr, load);
    assert!(json_number(&stdout, "handshakes_resumed") > 0.0, "{stdout}");
}

/// `--tls` alone says what it lacks; the TLS options need `--tls`.
#[test]
fn tls_needs_a_way_to_trust_the_server() {
    let run = |args: &[&str]| {
        let output = evloop()
            .args(["bench", "echo", "--target", "127.0.0.1:1"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run evloop");
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&["--tls"]);
    assert!(
        stderr.contains("--tls needs --ca FILE") && stderr.contains("--insecure"),
        "{stderr}"
    );
    let stderr = run(&["--insecure"]);
    assert!(stderr.contains("--tls"), "{stderr}");
    let stderr = run(&["--tls", "--insecure", "--new-connection", "--pipeline", "2"]);
    assert!(stderr.contains("--pipeline"), "{stderr}");
    let missing = Path::new("/nonexistent/ca.pem");
    let stderr = run(&["--tls", "--ca", &missing.display().to_string()]);
    assert!(stderr.contains("--ca /nonexistent/ca.pem"), "{stderr}");
}
