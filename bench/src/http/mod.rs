//! `compare http`: evloop's HTTP service against nginx, both serving the
//! same files, under wrk.
//!
//! Each server runs pinned to CPU 0 with one loop (nginx: one process that
//! is its own worker, see [`nginx`]), wrk runs with one thread pinned to
//! CPU 1, keep-alive, over [`LOADS`]: the 13-byte file at 50 and 500
//! connections, the 64 KiB file at 50, and the 13-byte file at 50
//! connections with [`PIPELINE_DEPTH`] requests per write
//! (`bench/scripts/pipeline.lua`). Every run starts a fresh server, warms it
//! up with a wrk run of its own, then measures a second wrk run; the
//! server's CPU time is read from `/proc` around the measured run alone.
//! Rounds interleave servers as the echo comparison does
//! ([`crate::compare::interleave`]); medians and ratios to nginx follow, and
//! each evloop driver is held against the goals of [`goals`].
//!
//! A run in which wrk saw an error (a socket error, a response other than
//! 2xx or 3xx) yields no figure: the tables list it, with wrk's counts.

mod goals;
pub mod https;
mod nginx;
mod report;
pub mod tools;
mod wrk;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::compare::{self, Failure, Run, RunSettings, ServerSummary, interleave, summarize};
use crate::environment::Environment;
use crate::goals::Goal;
use crate::limits::raise_file_limit;
use crate::prepare;
use crate::servers::{RunningServer, SERVER_CPU, START_TIMEOUT, evloop_serve, free_port};
use wrk::WrkRun;

/// Requests per write in the pipelined load.
pub const PIPELINE_DEPTH: u32 = 16;

/// The small file: a greeting, 13 bytes.
pub const SMALL_FILE: (&str, &[u8]) = ("hello.txt", b"Hello, World!");
/// The large file's name; its 65,536 bytes come from [`large_file`].
pub const LARGE_FILE: &str = "64k.bin";
/// The large file's size.
pub const LARGE_FILE_BYTES: u64 = 65_536;

/// One load: which file, over how many connections, how many requests per
/// write.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HttpLoad {
    /// The file every request asks for (its path under the root).
    pub file: &'static str,
    /// Its size.
    pub file_bytes: u64,
    /// wrk's connections.
    pub connections: u32,
    /// Requests per write: 1 is plain keep-alive, more is pipelined.
    pub pipeline: u32,
    /// Each request closes its connection (`Connection: close`).
    pub close: bool,
}

impl HttpLoad {
    /// `13 B × 50 conns`, `64 KiB × 50 conns`, `13 B × 50 conns, pipelined 16`.
    pub fn label(&self) -> String {
        let size = if self.file_bytes >= 1024 {
            format!("{} KiB", self.file_bytes / 1024)
        } else {
            format!("{} B", self.file_bytes)
        };
        let mut label = format!("{size} × {} conns", self.connections);
        if self.pipeline > 1 {
            label.push_str(&format!(", pipelined {}", self.pipeline));
        }
        if self.close {
            label.push_str(", Connection: close");
        }
        label
    }
}

/// Every load, in the order each round runs them and the tables list them.
pub const LOADS: [HttpLoad; 4] = [
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
        connections: 500,
        pipeline: 1,
        close: false,
    },
    HttpLoad {
        file: LARGE_FILE,
        file_bytes: LARGE_FILE_BYTES,
        connections: 50,
        pipeline: 1,
        close: false,
    },
    HttpLoad {
        file: SMALL_FILE.0,
        file_bytes: SMALL_FILE.1.len() as u64,
        connections: 50,
        pipeline: PIPELINE_DEPTH,
        close: false,
    },
];

/// A server in the HTTP comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpServer {
    /// nginx, the reference: one worker, see [`nginx`].
    Nginx,
    /// `evloop serve http --threads 1 --io epoll`.
    Evloop,
    /// `evloop serve http --threads 1 --io uring`.
    EvloopUring,
}

impl HttpServer {
    /// Every server, in the order runs interleave and tables list them.
    pub const ALL: [HttpServer; 3] = [
        HttpServer::Nginx,
        HttpServer::Evloop,
        HttpServer::EvloopUring,
    ];

    /// The server every ratio is taken against.
    pub const BASELINE: HttpServer = HttpServer::Nginx;

    /// The servers held against the goals.
    pub const SUBJECTS: [HttpServer; 2] = [HttpServer::Evloop, HttpServer::EvloopUring];

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            HttpServer::Nginx => "nginx",
            HttpServer::Evloop => "evloop",
            HttpServer::EvloopUring => "evloop-uring",
        }
    }
}

/// All servers at one load.
#[derive(Debug, Serialize)]
pub struct HttpPoint {
    /// The load.
    #[serde(flatten)]
    pub load: HttpLoad,
    /// One entry per server, in [`HttpServer::ALL`]'s order.
    pub servers: Vec<ServerSummary>,
}

impl compare::Point for HttpPoint {
    fn label(&self) -> String {
        format!("{:<32}", self.load.label())
    }

    fn servers(&mut self) -> &mut [ServerSummary] {
        &mut self.servers
    }
}

/// The goals one evloop driver was held against.
#[derive(Debug, Serialize)]
pub struct SubjectGoals {
    /// The server (`evloop`, `evloop-uring`).
    pub server: &'static str,
    /// Its goals, each met, missed or not measured.
    pub goals: Vec<Goal>,
}

/// Everything `compare http` measured, as written to JSON.
#[derive(Debug, Serialize)]
pub struct HttpResults {
    /// Machine and toolchain.
    pub environment: Environment,
    /// How it ran (durations in whole seconds: wrk counts no finer).
    pub settings: RunSettings,
    /// The server ratios are taken against.
    pub baseline: &'static str,
    /// `nginx -v`.
    pub nginx_version: String,
    /// `wrk -v`.
    pub wrk_version: String,
    /// The configuration nginx ran with (its port as in the first run).
    pub nginx_config: Option<String>,
    /// The wrk script of the pipelined load.
    pub pipeline_script: String,
    /// Throughput, latency and CPU per load.
    pub throughput: Vec<HttpPoint>,
    /// Each evloop driver's goals.
    pub goals: Vec<SubjectGoals>,
}

/// `settings` with its warm-up and run rounded up to whole seconds (at
/// least one), the finest wrk measures.
pub fn whole_seconds(settings: RunSettings) -> RunSettings {
    let round_up = |d: Duration| Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64);
    RunSettings {
        warmup: round_up(settings.warmup),
        duration: round_up(settings.duration),
        ..settings
    }
}

/// Where the runs keep their files, under the harness's work directory.
struct Dirs {
    /// The document root both servers serve.
    root: PathBuf,
    /// nginx's prefix: configuration, pid, error log, temporary files.
    nginx: PathBuf,
    /// The servers' stderr.
    logs: PathBuf,
}

/// Runs the comparison and writes its results; returns where they went.
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
    let evloop = prepare::build_evloop_cli();
    let script = prepare::workspace_root().join("bench/scripts/pipeline.lua");
    let dirs = prepare_dirs(&prepare::work_dir().join("http"))?;

    let mut points: Vec<HttpPoint> = LOADS
        .iter()
        .map(|&load| HttpPoint {
            load,
            servers: HttpServer::ALL
                .iter()
                .map(|s| ServerSummary::new(s.name()))
                .collect(),
        })
        .collect();
    let mut nginx_config = None;
    interleave(
        settings.rounds,
        &mut points,
        &HttpServer::ALL,
        |round, point, kind| {
            let mut server = start(kind, &evloop, &found.nginx, &dirs).map_err(Failure::Start)?;
            if kind == HttpServer::Nginx && nginx_config.is_none() {
                nginx_config = fs::read_to_string(nginx::config_path(&dirs.nginx)).ok();
            }
            let pipeline =
                (point.load.pipeline > 1).then_some((script.as_path(), point.load.pipeline));
            let target = Target {
                url: format!("http://127.0.0.1:{}/{}", server.port, point.load.file),
                close: false,
            };
            measure(
                &mut server,
                &wrk,
                &target,
                point.load,
                pipeline,
                &settings,
                round,
            )
            .map_err(Failure::Run)
        },
    );
    for point in &mut points {
        summarize(&mut point.servers, HttpServer::BASELINE.name(), None);
    }
    let mut results = HttpResults {
        environment,
        settings,
        baseline: HttpServer::BASELINE.name(),
        nginx_version: tools::nginx_version(&found),
        wrk_version: tools::wrk_version(&wrk),
        nginx_config,
        pipeline_script: "bench/scripts/pipeline.lua".to_string(),
        throughput: points,
        goals: Vec::new(),
    };
    results.goals = HttpServer::SUBJECTS
        .iter()
        .map(|&subject| SubjectGoals {
            server: subject.name(),
            goals: goals::assess(&results.throughput, subject),
        })
        .collect();
    write_results(&results)
}

/// A fresh document root with the two files, and nginx's prefix.
fn prepare_dirs(base: &Path) -> Result<Dirs, String> {
    let dirs = Dirs {
        root: base.join("root"),
        nginx: base.join("nginx"),
        logs: base.to_path_buf(),
    };
    let _ = fs::remove_dir_all(&dirs.root);
    for dir in [&dirs.root, &dirs.nginx] {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for (name, contents) in [
        (SMALL_FILE.0, SMALL_FILE.1.to_vec()),
        (LARGE_FILE, large_file()),
    ] {
        let path = dirs.root.join(name);
        fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(dirs)
}

/// The large file's contents: [`LARGE_FILE_BYTES`] bytes that do not
/// repeat at any short period (so nothing on the way could shortcut them).
pub fn large_file() -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..LARGE_FILE_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// Starts `kind` on a free port, pinned to the server CPU, serving the
/// document root; waits until it listens.
fn start(
    kind: HttpServer,
    evloop: &Result<PathBuf, String>,
    nginx_binary: &Result<PathBuf, String>,
    dirs: &Dirs,
) -> Result<RunningServer, String> {
    let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
    let command_line = match kind {
        HttpServer::Nginx => {
            nginx::command_line(nginx_binary.as_ref()?, &dirs.nginx, &dirs.root, port, None)?
        }
        HttpServer::Evloop | HttpServer::EvloopUring => evloop_serve(
            evloop.as_ref()?,
            "http",
            &["--root".into(), dirs.root.display().to_string()],
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

/// What wrk asks for: a URL, and whether each request closes its
/// connection.
struct Target {
    url: String,
    close: bool,
}

/// A warm-up wrk run, then the measured one, with the server's CPU time
/// read around the measured one.
fn measure(
    server: &mut RunningServer,
    wrk: &Path,
    target: &Target,
    load: HttpLoad,
    pipeline: Option<(&Path, u32)>,
    settings: &RunSettings,
    round: usize,
) -> Result<Run, String> {
    let run = |seconds: Duration| WrkRun {
        url: target.url.clone(),
        connections: load.connections,
        seconds: seconds.as_secs(),
        pipeline,
        close: target.close,
    };
    let (warm, _) = run(settings.warmup).run(wrk)?;
    if let Some(errors) = warm.errors() {
        return Err(format!("warm-up: {errors}"));
    }
    let cpu_error = |e: std::io::Error| format!("reading the server's CPU time: {e}");
    let before = server.cpu_time().map_err(cpu_error)?;
    let measured = run(settings.duration).run(wrk);
    let after = server.cpu_time().map_err(cpu_error)?;
    if !server.is_running() {
        return Err(format!(
            "the server exited during the run: {}",
            server.log_tail()
        ));
    }
    let (report, finished) = measured?;
    if let Some(errors) = report.errors() {
        return Err(errors);
    }
    Ok(Run {
        round,
        requests_per_sec: report.requests_per_sec,
        p99_us: report.p99_us,
        server_cpu_seconds: (after - before).as_secs_f64(),
        requests_total: report.requests,
        load_cpu_seconds: finished.cpu_seconds,
    })
}

/// Writes `http.json` and `http.md` (`http-quick.*` for a smoke test),
/// splices the tables into `docs/BENCHMARKS.md` after a full run, and
/// prints them.
fn write_results(results: &HttpResults) -> Result<PathBuf, String> {
    let quick = results.settings.quick;
    let json = serde_json::to_string_pretty(results).map_err(|e| format!("JSON: {e}"))?;
    let markdown = report::render(results);
    let written = compare::write_files(
        quick,
        if quick { "http-quick" } else { "http" },
        &[("json", json + "\n"), ("md", markdown.clone())],
    )?;
    if !quick {
        compare::splice_into_docs("http-results", &markdown)?;
    }
    print!("{}", report::render_tables(results));
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_are_the_issue_s_four() {
        let labels: Vec<String> = LOADS.iter().map(HttpLoad::label).collect();
        assert_eq!(
            labels,
            [
                "13 B × 50 conns",
                "13 B × 500 conns",
                "64 KiB × 50 conns",
                "13 B × 50 conns, pipelined 16"
            ]
        );
    }

    #[test]
    fn the_document_root_holds_both_files_at_their_sizes() {
        let base = std::env::temp_dir().join(format!("evloop-bench-root-{}", std::process::id()));
        let dirs = prepare_dirs(&base).unwrap();
        let small = fs::read(dirs.root.join("hello.txt")).unwrap();
        let large = fs::read(dirs.root.join("64k.bin")).unwrap();
        let _ = fs::remove_dir_all(&base);
        assert_eq!(small, b"Hello, World!");
        assert_eq!(small.len(), 13);
        assert_eq!(large.len(), 65_536);
        assert_ne!(large[..256], large[256..512], "the large file repeats");
    }

    #[test]
    fn wrk_durations_are_whole_seconds() {
        let settings = whole_seconds(RunSettings {
            rounds: 3,
            warmup: Duration::from_millis(500),
            duration: Duration::from_millis(2500),
            quick: false,
        });
        assert_eq!(settings.warmup, Duration::from_secs(1));
        assert_eq!(settings.duration, Duration::from_secs(3));
        let zero = whole_seconds(RunSettings {
            warmup: Duration::ZERO,
            ..settings
        });
        assert_eq!(zero.warmup, Duration::from_secs(1));
    }
}
