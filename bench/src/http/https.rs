//! `compare https`: evloop's HTTP service over TLS against nginx, both
//! serving the same 13-byte file with the same certificate, under wrk
//! (OpenSSL), as `compare http` runs them (one loop or worker pinned to
//! CPU 0, wrk with one thread on CPU 1, interleaved rounds, medians).
//!
//! One certificate is made per run ([`Certificates`]): a CA and a server
//! certificate it signs, ECDSA P-256 (rcgen's default), for `127.0.0.1`
//! and `localhost`. nginx serves TLS 1.3 with session tickets on (see
//! [`nginx::render_config`]); evloop runs `evloop serve http --tls-cert
//! --tls-key`. Two loads ([`LOADS`]):
//!
//! * keep-alive: 50 connections, their handshakes done in the warm-up;
//!   the figures are those of encrypted requests.
//! * a new connection per request: the same with `Connection: close`, so
//!   that every request is a TCP connect and a TLS 1.3 handshake;
//!   requests/s are handshakes/s. wrk resumes its session on each new
//!   connection (a ticket, with a fresh ECDHE key exchange), from either
//!   server: these are resumed handshakes, not full ones.
//!
//! Goals, per evloop driver: server CPU per request ≤ 0.9 × nginx's on
//! keep-alive; handshakes/s ≥ 1.0 × nginx's.
//!
//! Where the evloop binary refuses `--tls-cert` (a build without the TLS
//! server), nginx is still measured and written down, evloop's rows say
//! why they are missing, and the run fails with that reason.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde::Serialize;

use crate::compare::{self, Failure, RunSettings, interleave, summarize};
use crate::environment::Environment;
use crate::goals::Goal;
use crate::limits::raise_file_limit;
use crate::markdown::{render_header, thousands};
use crate::prepare;
use crate::servers::{RunningServer, SERVER_CPU, START_TIMEOUT, evloop_serve, free_port};

use super::{
    Dirs, HttpLoad, HttpPoint, HttpServer, SMALL_FILE, SubjectGoals, Target, measure, nginx,
    prepare_dirs, tools, whole_seconds,
};

/// The loads: the small file over 50 connections kept alive, then the
/// same with a new connection (and handshake) per request.
pub const LOADS: [HttpLoad; 2] = [
    HttpLoad {
        file: SMALL_FILE.0,
        file_bytes: SMALL_FILE.1.len() as u64,
        connections: 50,
        pipeline: 1,
        close: false,
    },
    HttpLoad {
        file: SMALL_FILE.0,
        file_bytes: SMALL_FILE.1.len() as u64,
        connections: 50,
        pipeline: 1,
        close: true,
    },
];

/// The goals' bounds.
const CPU_KEEP_ALIVE_AT_MOST: f64 = 0.9;
const HANDSHAKES_AT_LEAST: f64 = 1.0;

/// The certificate both servers serve, and the CA that signed it.
#[derive(Debug)]
pub struct Certificates {
    /// The server's certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The CA's certificate, PEM (for clients that check).
    pub ca: PathBuf,
}

impl Certificates {
    /// Makes a CA and a certificate for `127.0.0.1` and `localhost` it
    /// signs, and writes them under `dir`.
    pub fn make(dir: &Path) -> Result<Certificates, String> {
        let tls = |e: rcgen::Error| format!("making the certificate: {e}");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "evloop-bench CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(tls)?)
            .map_err(tls)?;
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(tls)?;
        let key = KeyPair::generate().map_err(tls)?;
        let cert = params.signed_by(&key, &ca).map_err(tls)?;
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let certificates = Certificates {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
        };
        for (path, pem) in [
            (&certificates.cert, cert.pem()),
            (&certificates.key, key.serialize_pem()),
            (&certificates.ca, ca.pem()),
        ] {
            fs::write(path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(certificates)
    }
}

/// Everything `compare https` measured, as written to JSON.
#[derive(Debug, Serialize)]
pub struct HttpsResults {
    /// Machine and toolchain.
    pub environment: Environment,
    /// How it ran (whole seconds, as wrk counts).
    pub settings: RunSettings,
    /// The server ratios are taken against.
    pub baseline: &'static str,
    /// `nginx -v`.
    pub nginx_version: String,
    /// `wrk -v`.
    pub wrk_version: String,
    /// Why evloop was not measured, if it was not.
    pub evloop_missing: Option<String>,
    /// The configuration nginx ran with (its port as in the first run).
    pub nginx_config: Option<String>,
    /// Throughput, latency and CPU per load.
    pub throughput: Vec<HttpPoint>,
    /// Each evloop driver's goals.
    pub goals: Vec<SubjectGoals>,
}

/// Runs the comparison and writes its results; returns where they went,
/// or, once nginx's figures are written, why evloop could not be run.
pub fn run(settings: RunSettings, command: String) -> Result<PathBuf, String> {
    let settings = whole_seconds(settings);
    let file_limit = raise_file_limit();
    let environment = Environment::capture(command, compare::pinning(), file_limit.soft);
    let found = tools::ensure();
    let wrk = found
        .wrk
        .clone()
        .map_err(|why| format!("no load generator: {why}"))?;
    if let Err(why) = &found.nginx {
        eprintln!("nginx: skipped: {why}");
    }
    let evloop = prepare::build_evloop_cli().and_then(|path| serves_tls(&path).map(|()| path));
    if let Err(why) = &evloop {
        eprintln!("evloop: skipped: {why}");
    }
    let base = prepare::work_dir().join("https");
    let dirs = prepare_dirs(&base)?;
    let certificates = Certificates::make(&base.join("tls"))?;

    let mut points: Vec<HttpPoint> = LOADS
        .iter()
        .map(|&load| HttpPoint {
            load,
            servers: HttpServer::ALL
                .iter()
                .map(|s| compare::ServerSummary::new(s.name()))
                .collect(),
        })
        .collect();
    let mut nginx_config = None;
    interleave(
        settings.rounds,
        &mut points,
        &HttpServer::ALL,
        |round, point, kind| {
            let mut server =
                start(kind, &evloop, &found.nginx, &dirs, &certificates).map_err(Failure::Start)?;
            if kind == HttpServer::Nginx && nginx_config.is_none() {
                nginx_config = fs::read_to_string(nginx::config_path(&dirs.nginx)).ok();
            }
            let target = Target {
                url: format!("https://127.0.0.1:{}/{}", server.port, point.load.file),
                close: point.load.close,
            };
            measure(
                &mut server,
                &wrk,
                &target,
                point.load,
                None,
                &settings,
                round,
            )
            .map_err(Failure::Run)
        },
    );
    for point in &mut points {
        summarize(&mut point.servers, HttpServer::BASELINE.name(), None);
    }
    let goals = HttpServer::SUBJECTS
        .iter()
        .map(|&subject| SubjectGoals {
            server: subject.name(),
            goals: assess(&points, subject),
        })
        .collect();
    let results = HttpsResults {
        environment,
        settings,
        baseline: HttpServer::BASELINE.name(),
        nginx_version: tools::nginx_version(&found),
        wrk_version: tools::wrk_version(&wrk),
        evloop_missing: evloop.as_ref().err().cloned(),
        nginx_config,
        throughput: points,
        goals,
    };
    let written = write_results(&results)?;
    match evloop {
        Ok(_) => Ok(written),
        Err(why) => Err(format!(
            "{why}; nginx's figures alone are in {}",
            written.display()
        )),
    }
}

/// Whether `evloop serve http` at `evloop` takes `--tls-cert`: a clear
/// reason if not.
fn serves_tls(evloop: &Path) -> Result<(), String> {
    let output = Command::new(evloop)
        .args(["serve", "http", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {} serve http --help: {e}", evloop.display()))?;
    if String::from_utf8_lossy(&output.stdout).contains("--tls-cert") {
        Ok(())
    } else {
        Err(format!(
            "{} serve http has no --tls-cert: this build of evloop serves no TLS",
            evloop.display()
        ))
    }
}

/// Starts `kind` over TLS on a free port, pinned to the server CPU.
fn start(
    kind: HttpServer,
    evloop: &Result<PathBuf, String>,
    nginx_binary: &Result<PathBuf, String>,
    dirs: &Dirs,
    certificates: &Certificates,
) -> Result<RunningServer, String> {
    let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
    let command_line = match kind {
        HttpServer::Nginx => nginx::command_line(
            nginx_binary.as_ref()?,
            &dirs.nginx,
            &dirs.root,
            port,
            Some(nginx::Tls {
                cert: &certificates.cert,
                key: &certificates.key,
            }),
        )?,
        HttpServer::Evloop | HttpServer::EvloopUring => evloop_serve(
            evloop.as_ref()?,
            "http",
            &[
                "--root".into(),
                dirs.root.display().to_string(),
                "--tls-cert".into(),
                certificates.cert.display().to_string(),
                "--tls-key".into(),
                certificates.key.display().to_string(),
            ],
            &port.to_string(),
            if kind == HttpServer::Evloop {
                "epoll"
            } else {
                "uring"
            },
        ),
    };
    let log = dirs.logs.join(format!("{}.log", kind.name()));
    RunningServer::start_command(&command_line, Some(SERVER_CPU), port, log, START_TIMEOUT)
}

/// `subject`'s goals: CPU per request on keep-alive, handshakes/s on a
/// new connection per request.
pub fn assess(points: &[HttpPoint], subject: HttpServer) -> Vec<Goal> {
    let baseline = HttpServer::BASELINE.name();
    let summary = |load: &HttpLoad, name: &str| {
        points
            .iter()
            .find(|p| p.load.label() == load.label())?
            .servers
            .iter()
            .find(|s| s.server == name)
    };
    let keep_alive = &LOADS[0];
    let (s, n) = (
        summary(keep_alive, subject.name()),
        summary(keep_alive, baseline),
    );
    let ratio = s.and_then(|s| s.cpu_per_request_vs_baseline);
    let costs = s
        .and_then(|s| s.cpu_us_per_request)
        .zip(n.and_then(|n| n.cpu_us_per_request));
    let cpu = Goal {
        figure: format!(
            "server CPU per request vs {baseline}, HTTPS {}",
            keep_alive.label()
        ),
        measured: ratio
            .zip(costs)
            .map(|(r, (s, n))| format!("{r:.2}× ({s:.2} vs {n:.2} µs)")),
        target: format!("≤ {CPU_KEEP_ALIVE_AT_MOST:.2}×"),
        met: ratio.map(|r| r <= CPU_KEEP_ALIVE_AT_MOST),
    };
    let closing = &LOADS[1];
    let (s, n) = (summary(closing, subject.name()), summary(closing, baseline));
    let ratio = s.and_then(|s| s.requests_per_sec_vs_baseline);
    let rates = s
        .and_then(|s| s.requests_per_sec)
        .zip(n.and_then(|n| n.requests_per_sec));
    let handshakes = Goal {
        figure: format!("new TLS handshakes/s vs {baseline}, {}", closing.label()),
        measured: ratio.zip(rates).map(|(r, (s, n))| {
            format!(
                "{r:.2}× ({} vs {})",
                thousands(s.round() as u64),
                thousands(n.round() as u64)
            )
        }),
        target: format!("≥ {HANDSHAKES_AT_LEAST:.2}×"),
        met: ratio.map(|r| r >= HANDSHAKES_AT_LEAST),
    };
    vec![cpu, handshakes]
}

/// The report as Markdown.
pub fn render(results: &HttpsResults) -> String {
    let mut out = render_header(&results.environment, &results.settings);
    let _ = writeln!(
        out,
        "nginx: {}; wrk: {}; `wrk -t1 --latency` over HTTPS (TLS 1.3, ECDSA P-256 \
         certificate made for the run); the new-connection load adds \
         `-H 'Connection: close'`.\n",
        results.nginx_version, results.wrk_version,
    );
    if let Some(why) = &results.evloop_missing {
        let _ = writeln!(out, "evloop not measured: {why}.\n");
    }
    out.push_str(&render_tables(results));
    if let Some(config) = &results.nginx_config {
        let root = format!("{}/", prepare::workspace_root().display());
        let _ = writeln!(
            out,
            "\n<details><summary>nginx's configuration (first run)</summary>\n\n```nginx\n{}```\n\n</details>",
            config.replace(&root, "")
        );
    }
    out
}

/// The table of medians with ratios to nginx, then the goals.
pub fn render_tables(results: &HttpsResults) -> String {
    super::report::tables_and_goals(
        &results.throughput,
        results.baseline,
        &results.goals,
        "HTTPS",
    )
}

/// Writes `https.json` and `https.md` (`https-quick.*` for a smoke test),
/// splices the tables into `docs/BENCHMARKS.md` after a full run, and
/// prints them.
fn write_results(results: &HttpsResults) -> Result<PathBuf, String> {
    let quick = results.settings.quick;
    let json = serde_json::to_string_pretty(results).map_err(|e| format!("JSON: {e}"))?;
    let markdown = render(results);
    let written = compare::write_files(
        quick,
        if quick { "https-quick" } else { "https" },
        &[("json", json + "\n"), ("md", markdown.clone())],
    )?;
    if !quick {
        compare::splice_into_docs("https-results", &markdown)?;
    }
    print!("{}", render_tables(results));
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::compare::ServerSummary;

    #[test]
    fn the_loads_are_keep_alive_then_a_connection_per_request() {
        let labels: Vec<String> = LOADS.iter().map(HttpLoad::label).collect();
        assert_eq!(
            labels,
            ["13 B × 50 conns", "13 B × 50 conns, Connection: close"]
        );
    }

    #[test]
    fn goals_hold_cpu_on_keep_alive_and_handshakes_on_new_connections() {
        let evloop = [(60_000.0, 14.0), (2_000.0, 480.0)];
        let nginx = [(50_000.0, 16.0), (2_100.0, 470.0)];
        let points: Vec<HttpPoint> = LOADS
            .iter()
            .zip(nginx.into_iter().zip(evloop))
            .map(|(&load, (n, e))| {
                let mut servers = vec![
                    ServerSummary::one_run("nginx", n.0, n.1),
                    ServerSummary::one_run("evloop", e.0, e.1),
                ];
                summarize(&mut servers, "nginx", None);
                HttpPoint { load, servers }
            })
            .collect();
        let goals = assess(&points, HttpServer::Evloop);
        assert_eq!(goals[0].met, Some(true), "14 / 16 = 0.875 ≤ 0.9");
        assert_eq!(
            goals[0].measured.as_deref(),
            Some("0.88× (14.00 vs 16.00 µs)")
        );
        assert_eq!(goals[1].met, Some(false), "2,000 / 2,100 < 1.0");
        assert_eq!(goals[1].measured.as_deref(), Some("0.95× (2,000 vs 2,100)"));
        let missing = assess(&points, HttpServer::EvloopUring);
        assert!(missing.iter().all(|g| g.met.is_none()));
    }

    #[test]
    fn the_certificate_is_signed_by_the_ca_and_written_as_pem() {
        let dir = std::env::temp_dir().join(format!("evloop-bench-tls-{}", std::process::id()));
        let certificates = Certificates::make(&dir).unwrap();
        for path in [&certificates.cert, &certificates.ca] {
            let pem = fs::read_to_string(path).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
        let key = fs::read_to_string(&certificates.key).unwrap();
        assert!(key.contains("PRIVATE KEY"), "{key}");
        let _ = fs::remove_dir_all(&dir);
    }
}
