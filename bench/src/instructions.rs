//! User-space instructions per request, counted by valgrind's callgrind.
//!
//! Where `perf stat -e instructions` has no counter (virtual machines often
//! hide it), callgrind still counts every instruction the server executes in
//! user space, exactly: the same binary fed the same inputs executes the
//! same count, whatever else the machine does. Kernel instructions (the TCP
//! path behind each `read` and `write`) are not included.
//!
//! Each server runs twice under `valgrind --tool=callgrind`:
//!
//! - a **baseline** run: start, wait until it listens (and a second
//!   more), SIGTERM, with no connection at all: the instructions of
//!   starting and stopping;
//! - a **load** run: the same with `evloop bench echo` (50 connections ×
//!   128 B) in between.
//!
//! The figure is (load total − baseline total) / every request the load
//! generator completed (warm-up included: the server executed all of them),
//! so one-time costs do not pollute it. What remains is the per-request
//! cost plus accepting and closing 50 connections, spread over tens of
//! thousands of requests. valgrind runs the server's threads one at a time
//! and slows it down several times. The count is exact, and the baseline
//! repeats to within a few instructions, but how requests batch into
//! `epoll_wait` wake-ups depends on timing, so the load run's inputs are
//! not the same twice: per-request figures moved by up to 2 % between runs
//! here.
//!
//! callgrind writes its counts when the program ends, also when a signal's
//! default action ends it (the C servers and the mio and tokio peers do not
//! handle SIGTERM; evloop drains and exits). A server that ignores SIGTERM
//! gets SIGINT. Without valgrind every figure is reported as unavailable,
//! never estimated; so is c-uring's, which valgrind cannot stop (see
//! [`ServerKind::callgrind_unsupported`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::loadgen::{self, Load};
use crate::prepare::{Binaries, work_dir};
use crate::servers::{RunningServer, ServerKind};

/// How long a server under valgrind may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server under valgrind may take to exit after each signal
/// (callgrind writes its file on the way out).
const STOP_PATIENCE: Duration = Duration::from_secs(30);
/// How long a server is left alone once it listens, in both runs, before
/// load or SIGTERM: a server may go on starting up after it listens (evloop
/// does), and a signal then would cut its start-up short in one run only.
const SETTLE: Duration = Duration::from_secs(1);

/// What the instruction runs found, as written to JSON.
#[derive(Debug, Serialize)]
pub struct InstructionCounts {
    /// `callgrind (valgrind-3.x)` or `unavailable (<why>)`.
    pub tool: String,
    /// Whether the counts include kernel instructions (callgrind: never).
    pub includes_kernel: bool,
    /// Connections of the load run.
    pub connections: u32,
    /// Bytes per message of the load run.
    pub size: u32,
    /// Load time per server under callgrind, in seconds.
    pub duration_seconds: f64,
    /// One entry per server (empty if the tool is unavailable).
    pub servers: Vec<InstructionResult>,
}

impl InstructionCounts {
    /// Whether callgrind counted anything.
    pub fn available(&self) -> bool {
        !self.tool.starts_with("unavailable")
    }
}

/// One server's instruction counts.
#[derive(Debug, Serialize)]
pub struct InstructionResult {
    /// The server's name.
    pub server: &'static str,
    /// Requests the load generator completed in all (warm-up included).
    pub requests: u64,
    /// Instructions of the load run: start, load, stop.
    pub load_instructions: Option<u64>,
    /// Instructions of the baseline run: start and stop, no connection.
    pub baseline_instructions: Option<u64>,
    /// (load − baseline) / requests.
    pub instructions_per_request: Option<f64>,
    /// Why the server could not be measured.
    pub error: Option<String>,
}

/// `valgrind --version` (e.g. `valgrind-3.19.0`), or why there is none.
pub fn valgrind_version() -> Result<String, String> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        }
        Ok(output) => Err(format!(
            "valgrind --version failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(_) => Err("valgrind not installed".to_string()),
    }
}

/// Counts instructions per request for each server under `load` (its
/// warm-up is ignored: callgrind counts every request anyway).
pub fn run(servers: &[ServerKind], binaries: &Binaries, load: Load) -> InstructionCounts {
    let load = Load {
        warmup: Duration::ZERO,
        ..load
    };
    let mut counts = InstructionCounts {
        tool: String::new(),
        includes_kernel: false,
        connections: load.connections,
        size: load.size,
        duration_seconds: load.duration.as_secs_f64(),
        servers: Vec::new(),
    };
    match valgrind_version() {
        Ok(version) => counts.tool = format!("callgrind ({version})"),
        Err(why) => {
            eprintln!("instructions: unavailable ({why})");
            counts.tool = format!("unavailable ({why})");
            return counts;
        }
    }
    let dir = work_dir().join("callgrind");
    if let Err(e) = fs::create_dir_all(&dir) {
        counts.tool = format!("unavailable ({}: {e})", dir.display());
        return counts;
    }
    counts.servers = servers
        .iter()
        .map(|&kind| {
            let started = Instant::now();
            let mut result = InstructionResult {
                server: kind.name(),
                requests: 0,
                load_instructions: None,
                baseline_instructions: None,
                instructions_per_request: None,
                error: None,
            };
            if let Err(e) = measure(kind, binaries, load, &dir, &mut result) {
                eprintln!("instructions: {}: {e}", kind.name());
                result.error = Some(e);
            } else if let Some(per_request) = result.instructions_per_request {
                eprintln!(
                    "instructions: {:<22} {:>9.0} per request ({} requests, {:.0} s)",
                    kind.name(),
                    per_request,
                    result.requests,
                    started.elapsed().as_secs_f64()
                );
            }
            result
        })
        .collect();
    counts
}

fn measure(
    kind: ServerKind,
    binaries: &Binaries,
    load: Load,
    dir: &Path,
    result: &mut InstructionResult,
) -> Result<(), String> {
    if let Some(why) = kind.callgrind_unsupported() {
        return Err(why.to_string());
    }
    let evloop = binaries.evloop.as_ref().map_err(Clone::clone)?;
    let baseline = count(kind, binaries, dir, "baseline", |_| Ok(()))?;
    result.baseline_instructions = Some(baseline);
    let mut report = None;
    let total = count(kind, binaries, dir, "load", |server| {
        report = Some(loadgen::run(evloop, server.port, load)?);
        Ok(())
    })?;
    result.load_instructions = Some(total);
    let requests = report.map_or(0, |r| r.requests_total);
    result.requests = requests;
    if requests == 0 {
        return Err("the load generator completed no request".to_string());
    }
    // Both runs start and stop the same way, so the difference is the load's.
    result.instructions_per_request = Some(total.saturating_sub(baseline) as f64 / requests as f64);
    Ok(())
}

/// Runs `kind` under callgrind, calls `between` once it listens, stops it,
/// and returns the instructions callgrind counted over its whole life.
fn count(
    kind: ServerKind,
    binaries: &Binaries,
    dir: &Path,
    label: &str,
    between: impl FnOnce(&RunningServer) -> Result<(), String>,
) -> Result<u64, String> {
    let out_file: PathBuf = dir.join(format!("{}.{label}.callgrind", kind.name()));
    // A file left by an earlier run must not pass for this one's.
    let _ = fs::remove_file(&out_file);
    let wrapper = [
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out_file.display()),
    ];
    let mut server = RunningServer::start_under(kind, binaries, dir, &wrapper, START_TIMEOUT)
        .map_err(|e| format!("{label} run: {e}"))?;
    thread::sleep(SETTLE);
    let outcome = between(&server);
    let exited_during_run = !server.is_running();
    let stopped = server.terminate(STOP_PATIENCE);
    outcome.map_err(|e| format!("{label} run: {e}"))?;
    if exited_during_run {
        return Err(format!(
            "{label} run: the server exited during the run: {}",
            server.log_tail()
        ));
    }
    stopped.map_err(|e| format!("{label} run: {e}"))?;
    let text = fs::read_to_string(&out_file).map_err(|e| {
        format!(
            "{label} run: callgrind wrote no {}: {e}; {}",
            out_file.display(),
            server.log_tail()
        )
    })?;
    parse_callgrind_total(&text)
        .ok_or_else(|| format!("{label} run: no totals: line in {}", out_file.display()))
}

/// The total instruction count of a callgrind output file: its `totals:`
/// line (after the data), else its `summary:` line (in the header). With
/// more events than `Ir` the first number is `Ir`, the default event listed
/// first.
pub fn parse_callgrind_total(text: &str) -> Option<u64> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(key)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
    };
    field("totals:").or_else(|| field("summary:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of what valgrind-3.19's callgrind writes, cut short.
    const SAMPLE: &str = "\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 22796
cmd:  target/release/evloop serve echo --listen 127.0.0.1:41002 --threads 1
part: 1


desc: I1 cache: 
desc: D1 cache: 
desc: LL cache: 
desc: Timerange: Basic block 0 - 10233811
desc: Trigger: Program termination

positions: line
events: Ir
summary: 53343759


ob=(1) /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
fl=(1) ???
fn=(1) 0x000000000001fe20
0 3
cob=(2) /usr/lib/x86_64-linux-gnu/libc.so.6
calls=1 0 
0 1230

totals: 53343926
";

    #[test]
    fn totals_line_is_preferred() {
        assert_eq!(parse_callgrind_total(SAMPLE), Some(53_343_926));
    }

    #[test]
    fn summary_line_is_the_fallback() {
        let header_only = SAMPLE.replace("totals: 53343926\n", "");
        assert_eq!(parse_callgrind_total(&header_only), Some(53_343_759));
    }

    #[test]
    fn first_event_is_taken_with_several() {
        let text = "events: Ir Dr Dw\nsummary: 100 40 20\ntotals: 120 50 30\n";
        assert_eq!(parse_callgrind_total(text), Some(120));
    }

    #[test]
    fn no_count_without_the_lines() {
        assert_eq!(parse_callgrind_total(""), None);
        assert_eq!(
            parse_callgrind_total("events: Ir\nfn=(1) main\n0 5\n"),
            None
        );
        assert_eq!(parse_callgrind_total("totals: lots\n"), None);
    }
}
