//! `compare`: every server under the same loads, rounds interleaved, medians
//! and ratios to the C baselines (epoll, and io_uring for the completion
//! drivers); then idle memory and cost per request (system calls, and
//! instructions under callgrind); then the io_uring driver's goals held
//! against those figures ([`goals`]).

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::environment::Environment;
use crate::goals::{self, Goal};
use crate::instructions::{self, InstructionCounts};
use crate::limits::raise_file_limit;
use crate::loadgen::{self, Load};
use crate::memory::{self, MemoryResult};
use crate::prepare::{self, Binaries};
use crate::servers::{RunningServer, ServerKind, taskset_available};
use crate::syscalls::{self, Counters, SyscallResult};
use crate::{chart, markdown};

/// The loads every server runs: (connections, bytes per message).
pub const MATRIX: [(u32, u32); 4] = [(1, 64), (50, 128), (500, 128), (50, 4096)];
/// The load the cost per request is counted under.
pub const SYSCALL_POINT: (u32, u32) = (50, 128);
/// Load time per server under callgrind in a full run: some 60,000
/// requests at the 20,000 requests/s servers manage under valgrind here.
pub const INSTRUCTIONS_DURATION: Duration = Duration::from_secs(3);
/// The same for `--quick`.
pub const INSTRUCTIONS_DURATION_QUICK: Duration = Duration::from_millis(500);

/// How the interleaved rounds run, in every comparison (echo and HTTP).
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    /// Rounds over the whole matrix.
    pub rounds: usize,
    /// Warm-up before each measured run.
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    /// Measured time per run.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// A smoke test: results go under `target/`, not `bench/results/`.
    pub quick: bool,
}

/// How `compare` runs.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Rounds, their timing, and where the results go.
    #[serde(flatten)]
    pub runs: RunSettings,
    /// Idle connection counts for the memory runs (empty: skipped).
    pub memory_counts: Vec<usize>,
    /// Whether the cost per request is counted.
    pub syscalls: bool,
    /// Whether instructions per request are counted under callgrind.
    pub instructions: bool,
    /// Load time per server under callgrind.
    #[serde(serialize_with = "seconds")]
    pub instructions_duration: Duration,
}

/// One server at one load in one round.
#[derive(Debug, Serialize)]
pub struct Run {
    /// Which round.
    pub round: usize,
    /// Measured requests per second.
    pub requests_per_sec: f64,
    /// 99th percentile latency in microseconds, if the load generator
    /// measured one.
    pub p99_us: Option<f64>,
    /// Server CPU time over the span `requests_total` counts, in seconds:
    /// the whole run, warm-up included, for echo; the measured run alone
    /// for HTTP (its warm-up is a separate wrk run).
    pub server_cpu_seconds: f64,
    /// Requests over that span.
    pub requests_total: u64,
    /// The load generator's CPU time over its whole run, in seconds, if
    /// read: where it is the limit, it is as busy as the server.
    pub load_cpu_seconds: Option<f64>,
}

impl Run {
    /// Server CPU microseconds per request.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.server_cpu_seconds * 1e6 / self.requests_total.max(1) as f64
    }
}

/// One server at one load: its runs and their medians.
#[derive(Debug, Serialize)]
pub struct ServerSummary {
    /// The server's name.
    pub server: &'static str,
    /// The successful runs.
    pub runs: Vec<Run>,
    /// What went wrong in the other runs.
    pub errors: Vec<String>,
    /// Median requests per second.
    pub requests_per_sec: Option<f64>,
    /// How far apart the rounds were: (max − min) / median requests/s.
    pub requests_per_sec_spread: Option<f64>,
    /// Median p99 latency, microseconds.
    pub p99_us: Option<f64>,
    /// Median server CPU microseconds per request.
    pub cpu_us_per_request: Option<f64>,
    /// Median requests/s over the baseline's.
    pub requests_per_sec_vs_baseline: Option<f64>,
    /// Median CPU per request over the baseline's.
    pub cpu_per_request_vs_baseline: Option<f64>,
    /// Median requests/s over the io_uring baseline's (c-uring; echo only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_sec_vs_uring_baseline: Option<f64>,
    /// Median CPU per request over the io_uring baseline's (c-uring; echo
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_per_request_vs_uring_baseline: Option<f64>,
}

impl ServerSummary {
    /// For tests: a server with one run of `rate` requests/s at `cpu_us`
    /// of CPU per request.
    #[cfg(test)]
    pub fn one_run(server: &'static str, rate: f64, cpu_us: f64) -> ServerSummary {
        let run = Run {
            round: 0,
            requests_per_sec: rate,
            p99_us: None,
            // A million requests: the CPU seconds are the µs per request.
            server_cpu_seconds: cpu_us,
            requests_total: 1_000_000,
            load_cpu_seconds: None,
        };
        ServerSummary {
            runs: vec![run],
            ..ServerSummary::new(server)
        }
    }

    /// A server with no runs yet.
    pub fn new(server: &'static str) -> ServerSummary {
        ServerSummary {
            server,
            runs: Vec::new(),
            errors: Vec::new(),
            requests_per_sec: None,
            requests_per_sec_spread: None,
            p99_us: None,
            cpu_us_per_request: None,
            requests_per_sec_vs_baseline: None,
            cpu_per_request_vs_baseline: None,
            requests_per_sec_vs_uring_baseline: None,
            cpu_per_request_vs_uring_baseline: None,
        }
    }
}

/// One load of a comparison, with a summary per server in the order the
/// servers run.
pub trait Point {
    /// The load as the progress lines show it.
    fn label(&self) -> String;
    /// One summary per server.
    fn servers(&mut self) -> &mut [ServerSummary];
}

impl Point for PointResult {
    fn label(&self) -> String {
        format!("{:>4} × {:>5} B", self.connections, self.size)
    }

    fn servers(&mut self) -> &mut [ServerSummary] {
        &mut self.servers
    }
}

/// Why a run produced no figure.
#[derive(Debug)]
pub enum Failure {
    /// The server did not start; it is not tried again in later rounds,
    /// which would only wait for the same failure.
    Start(String),
    /// The server started, the run did not produce a figure.
    Run(String),
}

/// All servers at one load.
#[derive(Debug, Serialize)]
pub struct PointResult {
    /// Connections.
    pub connections: u32,
    /// Bytes per message.
    pub size: u32,
    /// One entry per server.
    pub servers: Vec<ServerSummary>,
}

/// Everything `compare` measured, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Machine and toolchain.
    pub environment: Environment,
    /// How it ran.
    pub settings: Settings,
    /// The server ratios are taken against.
    pub baseline: &'static str,
    /// The second reference, for the io_uring servers (ratios beside the
    /// baseline's).
    pub uring_baseline: &'static str,
    /// Throughput, latency and CPU per load.
    pub throughput: Vec<PointResult>,
    /// Idle connection memory, if run.
    pub memory: Option<Vec<MemoryResult>>,
    /// How the cost per request was counted, if run.
    pub counters: Option<Counters>,
    /// Cost per request, if run.
    pub syscalls: Option<Vec<SyscallResult>>,
    /// User-space instructions per request under callgrind, if run.
    pub instructions: Option<InstructionCounts>,
    /// The io_uring setup flags c-uring got from this kernel (as it printed
    /// them at start), if it ran.
    pub c_uring_setup: Option<String>,
    /// The io_uring driver's goals, each met, missed or not measured.
    pub goals: Vec<Goal>,
}

/// Runs the comparison and writes its results; returns where they went.
pub fn run(settings: Settings, command: String) -> Result<PathBuf, String> {
    let file_limit = raise_file_limit();
    let environment = Environment::capture(command, pinning(), file_limit.soft);
    let binaries = prepare::build_all(true);
    let evloop = binaries
        .evloop
        .as_ref()
        .map_err(|e| format!("no load generator: {e}"))?;
    eprintln!("load generator: {}", evloop.display());

    let phase = Instant::now();
    let (throughput, c_uring_setup) = throughput(&settings, &binaries);
    eprintln!(
        "throughput runs took {:.0} s",
        phase.elapsed().as_secs_f64()
    );
    let phase = Instant::now();
    let memory = (!settings.memory_counts.is_empty()).then(|| {
        memory::run(
            &ServerKind::ALL,
            &binaries,
            &settings.memory_counts,
            &file_limit,
        )
    });
    eprintln!("memory runs took {:.0} s", phase.elapsed().as_secs_f64());
    let phase = Instant::now();
    let (counters, syscalls) = if settings.syscalls {
        let counters = Counters::detect();
        let load = Load {
            connections: SYSCALL_POINT.0,
            size: SYSCALL_POINT.1,
            warmup: Duration::ZERO,
            duration: settings.runs.duration,
        };
        let results = syscalls::run(&ServerKind::ALL, &binaries, &counters, load);
        (Some(counters), Some(results))
    } else {
        (None, None)
    };
    eprintln!(
        "system-call runs took {:.0} s",
        phase.elapsed().as_secs_f64()
    );
    let phase = Instant::now();
    let instructions = settings.instructions.then(|| {
        let load = Load {
            connections: SYSCALL_POINT.0,
            size: SYSCALL_POINT.1,
            warmup: Duration::ZERO,
            duration: settings.instructions_duration,
        };
        instructions::run(&ServerKind::ALL, &binaries, load)
    });
    eprintln!(
        "instruction runs took {:.0} s",
        phase.elapsed().as_secs_f64()
    );
    let mut results = Results {
        environment,
        baseline: ServerKind::BASELINE.name(),
        uring_baseline: ServerKind::URING_BASELINE.name(),
        settings,
        throughput,
        memory,
        counters,
        syscalls,
        instructions,
        c_uring_setup,
        goals: Vec::new(),
    };
    results.goals = goals::assess(&results);
    write_results(&results)
}

/// How servers and load generator are pinned, in words.
pub fn pinning() -> String {
    if taskset_available() {
        "servers on CPU 0, load generator on CPU 1 (taskset)".to_string()
    } else {
        "none: taskset is unavailable".to_string()
    }
}

/// Rounds of the whole matrix ([`interleave`]); also returns c-uring's
/// setup flags, read from its log the first time it starts.
fn throughput(settings: &Settings, binaries: &Binaries) -> (Vec<PointResult>, Option<String>) {
    let evloop = binaries.evloop.as_ref().expect("checked by the caller");
    let mut points: Vec<PointResult> = MATRIX
        .iter()
        .map(|&(connections, size)| PointResult {
            connections,
            size,
            servers: ServerKind::ALL
                .iter()
                .map(|kind| ServerSummary::new(kind.name()))
                .collect(),
        })
        .collect();
    let mut c_uring_setup = None;
    let log_dir = prepare::work_dir();
    let runs = &settings.runs;
    interleave(
        runs.rounds,
        &mut points,
        &ServerKind::ALL,
        |round, point, kind| {
            let load = Load {
                connections: point.connections,
                size: point.size,
                warmup: runs.warmup,
                duration: runs.duration,
            };
            let server = RunningServer::start(kind, binaries, &log_dir).map_err(Failure::Start)?;
            if kind == ServerKind::CUring && c_uring_setup.is_none() {
                c_uring_setup = server.log_head().as_deref().and_then(uring_setup);
            }
            measure(server, evloop, load, round).map_err(Failure::Run)
        },
    );
    for point in &mut points {
        summarize(
            &mut point.servers,
            ServerKind::BASELINE.name(),
            Some(ServerKind::URING_BASELINE.name()),
        );
    }
    (points, c_uring_setup)
}

/// Runs `rounds` rounds, each running every point on every server in turn
/// (A B C … A B C …), so that drift in the machine spreads over all
/// servers; `run` measures one server at one point in one round, starting
/// it afresh. Each run lands in its server's summary at that point, as a
/// figure or as the reason there is none. A server that failed to start
/// once is not started again.
pub fn interleave<K: Copy, P: Point>(
    rounds: usize,
    points: &mut [P],
    kinds: &[K],
    mut run: impl FnMut(usize, &P, K) -> Result<Run, Failure>,
) {
    let mut failed_to_start: Vec<Option<String>> = vec![None; kinds.len()];
    for round in 0..rounds {
        for point in points.iter_mut() {
            for (i, &kind) in kinds.iter().enumerate() {
                let outcome = match &failed_to_start[i] {
                    Some(why) => Err(format!("round {round}: not started: {why}")),
                    None => run(round, point, kind).map_err(|failure| match failure {
                        Failure::Start(why) => {
                            failed_to_start[i] = Some(why.clone());
                            format!("round {round}: failed to start: {why}")
                        }
                        Failure::Run(why) => format!("round {round}: {why}"),
                    }),
                };
                let label = point.label();
                let summary = &mut point.servers()[i];
                match outcome {
                    Ok(run) => {
                        eprintln!(
                            "round {round} {label} {:<22} {:>9.0} req/s  p99 {:>8.1} µs  {:>6.2} µs CPU/req",
                            summary.server,
                            run.requests_per_sec,
                            run.p99_us.unwrap_or(f64::NAN),
                            run.cpu_us_per_request()
                        );
                        summary.runs.push(run);
                    }
                    Err(why) => {
                        eprintln!("{label} {}: {why}", summary.server);
                        summary.errors.push(why);
                    }
                }
            }
        }
    }
}

/// The flags in c-uring's first line, `io_uring setup: FLAGS; …`.
fn uring_setup(line: &str) -> Option<String> {
    let rest = line.strip_prefix("io_uring setup: ")?;
    Some(rest.split(';').next()?.trim().to_string())
}

fn measure(
    mut server: RunningServer,
    evloop: &std::path::Path,
    load: Load,
    round: usize,
) -> Result<Run, String> {
    let cpu_error = |e: std::io::Error| format!("reading the server's CPU time: {e}");
    let before = server.cpu_time().map_err(cpu_error)?;
    let report = loadgen::run(evloop, server.port, load);
    let after = server.cpu_time().map_err(cpu_error)?;
    if !server.is_running() {
        return Err(format!(
            "the server exited during the run: {}",
            server.log_tail()
        ));
    }
    let report = report?;
    Ok(Run {
        round,
        requests_per_sec: report.requests_per_sec,
        p99_us: Some(report.latency_us.p99),
        server_cpu_seconds: (after - before).as_secs_f64(),
        requests_total: report.requests_total,
        load_cpu_seconds: report.cpu_seconds,
    })
}

/// Fills in the medians, and the ratios to `baseline` (and to
/// `uring_baseline`, where there is one).
pub fn summarize(servers: &mut [ServerSummary], baseline: &str, uring_baseline: Option<&str>) {
    for summary in servers.iter_mut() {
        let runs = &summary.runs;
        summary.requests_per_sec = median(runs.iter().map(|r| r.requests_per_sec));
        summary.requests_per_sec_spread = summary.requests_per_sec.map(|median| {
            let rates = runs.iter().map(|r| r.requests_per_sec);
            let (min, max) = rates.fold((f64::MAX, 0.0_f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
            (max - min) / median
        });
        summary.p99_us = median(runs.iter().filter_map(|r| r.p99_us));
        summary.cpu_us_per_request = median(runs.iter().map(Run::cpu_us_per_request));
    }
    let medians = |name: Option<&str>| {
        servers
            .iter()
            .find(|s| Some(s.server) == name)
            .map_or((None, None), |s| (s.requests_per_sec, s.cpu_us_per_request))
    };
    let (base_rps, base_cpu) = medians(Some(baseline));
    let (uring_rps, uring_cpu) = medians(uring_baseline);
    for summary in servers.iter_mut() {
        summary.requests_per_sec_vs_baseline = ratio(summary.requests_per_sec, base_rps);
        summary.cpu_per_request_vs_baseline = ratio(summary.cpu_us_per_request, base_cpu);
        summary.requests_per_sec_vs_uring_baseline = ratio(summary.requests_per_sec, uring_rps);
        summary.cpu_per_request_vs_uring_baseline = ratio(summary.cpu_us_per_request, uring_cpu);
    }
}

fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Writes `NAME.json`, `NAME.md` and `NAME.svg`: `bench/results/latest.*`
/// for a full run, `target/evloop-bench/quick.*` for a smoke test.
fn write_results(results: &Results) -> Result<PathBuf, String> {
    let quick = results.settings.runs.quick;
    let name = if quick { "quick" } else { "latest" };
    let json = serde_json::to_string_pretty(results).map_err(|e| format!("JSON: {e}"))?;
    let svg_name = format!("{name}.svg");
    let written = write_files(
        quick,
        name,
        &[
            ("json", json + "\n"),
            ("md", markdown::render(results, &svg_name)),
            ("svg", chart::render(results)?),
        ],
    )?;
    if !quick {
        splice_into_docs(
            "results",
            &markdown::render(results, "../bench/results/latest.svg"),
        )?;
    }
    print!(
        "{}\n{}",
        markdown::render_throughput(results),
        markdown::render_goals(&goals::title(), &results.goals)
    );
    Ok(written)
}

/// Writes `NAME.EXTENSION` for each file given, under `bench/results/` for
/// a full run, under `target/evloop-bench/` for a smoke test; returns the
/// path of the `md` one.
pub fn write_files(quick: bool, name: &str, files: &[(&str, String)]) -> Result<PathBuf, String> {
    let dir = if quick {
        prepare::work_dir()
    } else {
        prepare::workspace_root().join("bench/results")
    };
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (extension, contents) in files {
        let path = dir.join(format!("{name}.{extension}"));
        fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(dir.join(format!("{name}.md")))
}

/// Replaces the generated part of `docs/BENCHMARKS.md` between the markers
/// `<!-- SECTION:begin -->` and `<!-- SECTION:end -->` with `generated`, so
/// the published figures are always the last full run's and never typed by
/// hand.
pub fn splice_into_docs(section: &str, generated: &str) -> Result<(), String> {
    let path = prepare::workspace_root().join("docs/BENCHMARKS.md");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spliced =
        splice(&text, section, generated).map_err(|e| format!("{}: {e}", path.display()))?;
    fs::write(&path, spliced).map_err(|e| format!("{}: {e}", path.display()))
}

/// `text` with what lies between SECTION's markers replaced.
fn splice(text: &str, section: &str, generated: &str) -> Result<String, String> {
    let begin_marker = format!("<!-- {section}:begin -->");
    let end_marker = format!("<!-- {section}:end -->");
    let (Some(begin), Some(end)) = (text.find(&begin_marker), text.find(&end_marker)) else {
        return Err(format!("lacks the {begin_marker} … {end_marker} markers"));
    };
    if end < begin {
        return Err(format!("{end_marker} comes before {begin_marker}"));
    }
    Ok(format!(
        "{}{begin_marker}\n{generated}{}",
        &text[..begin],
        &text[end..]
    ))
}

/// Serializes a duration as seconds.
pub fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn uring_setup_flags_are_read_from_the_first_line() {
        let line = "io_uring setup: SINGLE_ISSUER|DEFER_TASKRUN; 1024 × 4096 B provided \
                    buffers; listening on 127.0.0.1:4000";
        assert_eq!(
            uring_setup(line).as_deref(),
            Some("SINGLE_ISSUER|DEFER_TASKRUN")
        );
        assert_eq!(uring_setup("listening on 127.0.0.1:4000"), None);
    }

    #[test]
    fn a_section_is_spliced_between_its_own_markers() {
        let text = "intro\n<!-- a:begin -->\nold a\n<!-- a:end -->\n\
                    <!-- b:begin -->\nold b\n<!-- b:end -->\n";
        let spliced = splice(text, "b", "new b\n").unwrap();
        assert_eq!(
            spliced,
            "intro\n<!-- a:begin -->\nold a\n<!-- a:end -->\n\
             <!-- b:begin -->\nnew b\n<!-- b:end -->\n"
        );
        assert!(
            splice(text, "c", "")
                .unwrap_err()
                .contains("<!-- c:begin -->")
        );
        let reversed = "<!-- a:end -->\n<!-- a:begin -->\n";
        assert!(splice(reversed, "a", "").is_err());
    }

    #[test]
    fn ratios_need_a_positive_baseline() {
        assert_eq!(ratio(Some(2.0), Some(4.0)), Some(0.5));
        assert_eq!(ratio(Some(2.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
