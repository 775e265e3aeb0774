//! Cost per request: the server's system calls (and, where the CPU exposes
//! counters, instructions) per echoed request.
//!
//! `perf stat -e raw_syscalls:sys_enter -p PID` counts every system call the
//! server's threads enter while a load runs; `strace -c -f -p PID` is the
//! fallback. Whatever cannot be counted here is reported as unavailable,
//! with the reason, never estimated.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde::Serialize;

use crate::loadgen::{self, Load};
use crate::prepare::{Binaries, work_dir};
use crate::servers::{RunningServer, ServerKind};

/// The event perf counts system calls with.
const SYSCALL_EVENT: &str = "raw_syscalls:sys_enter";

/// How the system calls are counted on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    /// `perf`, `strace`, or `unavailable: <why>`.
    pub syscalls: String,
    /// `perf`, or `unavailable: <why>`.
    pub instructions: String,
}

impl Counters {
    /// Tries each tool once with a trivial command.
    pub fn detect() -> Counters {
        let syscalls = if perf_counts(SYSCALL_EVENT).is_ok() {
            "perf".to_string()
        } else if Command::new("strace")
            .args(["-c", "-o", "/dev/null", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            "strace".to_string()
        } else {
            "unavailable: neither perf nor strace could trace a process".to_string()
        };
        let instructions = match perf_counts("instructions") {
            Ok(()) => "perf".to_string(),
            Err(why) => format!("unavailable: {why}"),
        };
        Counters {
            syscalls,
            instructions,
        }
    }
}

/// Whether `perf stat -e EVENT -- true` yields a number.
fn perf_counts(event: &str) -> Result<(), String> {
    let output = Command::new("perf")
        .args(["stat", "-x", ",", "-e", event, "--", "true"])
        .output()
        .map_err(|e| format!("perf: {e}"))?;
    let text = String::from_utf8_lossy(&output.stderr);
    match parse_perf(&text, event) {
        Some(_) => Ok(()),
        None => {
            // perf puts `<not supported>` or `<not counted>` where the number goes.
            let line = text
                .lines()
                .find(|l| l.contains(event))
                .unwrap_or("no output");
            let why = line.split(',').next().unwrap_or(line).trim();
            Err(format!("perf stat -e {event} counts {why}"))
        }
    }
}

/// One server's cost per request.
#[derive(Debug, Serialize)]
pub struct SyscallResult {
    /// The server's name.
    pub server: &'static str,
    /// Requests echoed while counting.
    pub requests: u64,
    /// System calls per request, if counted.
    pub syscalls_per_request: Option<f64>,
    /// Instructions per request, if counted.
    pub instructions_per_request: Option<f64>,
    /// Why the server could not be measured.
    pub error: Option<String>,
}

/// Counts per request for each server under `load`.
pub fn run(
    servers: &[ServerKind],
    binaries: &Binaries,
    counters: &Counters,
    load: Load,
) -> Vec<SyscallResult> {
    servers
        .iter()
        .map(|&kind| {
            eprintln!("syscalls: {}", kind.name());
            let mut result = SyscallResult {
                server: kind.name(),
                requests: 0,
                syscalls_per_request: None,
                instructions_per_request: None,
                error: None,
            };
            if let Err(e) = measure(kind, binaries, counters, load, &mut result) {
                result.error = Some(e);
            }
            result
        })
        .collect()
}

fn measure(
    kind: ServerKind,
    binaries: &Binaries,
    counters: &Counters,
    load: Load,
    result: &mut SyscallResult,
) -> Result<(), String> {
    let evloop = binaries.evloop.as_ref().map_err(Clone::clone)?;
    let server = RunningServer::start(kind, binaries, &work_dir())?;
    let pid = server.pid().to_string();
    let output = work_dir().join(format!("{}.counts", kind.name()));
    let with_instructions = counters.instructions == "perf";
    let (mut tracer, attach_time) = match counters.syscalls.as_str() {
        "perf" => {
            let mut events = SYSCALL_EVENT.to_string();
            if with_instructions {
                events.push_str(",instructions");
            }
            let child = Command::new("perf")
                .args(["stat", "-x", ",", "-e", &events, "-p", &pid, "-o"])
                .arg(&output)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("perf: {e}"))?;
            (child, Duration::from_millis(500))
        }
        "strace" => {
            let child = Command::new("strace")
                .args(["-c", "-f", "-p", &pid, "-o"])
                .arg(&output)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("strace: {e}"))?;
            (child, Duration::from_secs(1))
        }
        why => return Err(why.to_string()),
    };
    // Neither tool says when it has attached; the server is idle until the
    // load starts, so starting late costs nothing but time.
    thread::sleep(attach_time);
    let report = loadgen::run(evloop, server.port, load);
    stop(&mut tracer);
    let report = report?;
    result.requests = report.requests_total;
    let text = fs::read_to_string(&output).map_err(|e| format!("{}: {e}", output.display()))?;
    let per_request = |count: u64| count as f64 / report.requests_total.max(1) as f64;
    if counters.syscalls == "perf" {
        result.syscalls_per_request = parse_perf(&text, SYSCALL_EVENT).map(per_request);
        if with_instructions {
            result.instructions_per_request = parse_perf(&text, "instructions").map(per_request);
        }
    } else {
        result.syscalls_per_request = parse_strace_total(&text).map(per_request);
    }
    if result.syscalls_per_request.is_none() {
        return Err(format!("no count in {}", display_tail(&output)));
    }
    Ok(())
}

/// Stops a tracer the harness started, by its PID, with SIGINT (both tools
/// then write their summary), or kills it if it does not stop.
fn stop(tracer: &mut Child) {
    let _ = kill_process(Pid::from_child(tracer), Signal::INT);
    let started = Instant::now();
    while matches!(tracer.try_wait(), Ok(None)) {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = tracer.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = tracer.wait();
}

/// The count of `event` in `perf stat -x,` output (`VALUE,UNIT,EVENT,...`);
/// `None` for `<not supported>` or `<not counted>`.
fn parse_perf(text: &str, event: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(',').collect();
        // perf may print the event with a `:u` modifier it added.
        let named = fields
            .get(2)
            .is_some_and(|name| *name == event || name.strip_suffix(":u") == Some(event));
        if named {
            fields[0].trim().parse().ok()
        } else {
            None
        }
    })
}

/// The total number of calls in `strace -c` output: the `total` row's
/// fourth column (`% time, seconds, usecs/call, calls, [errors], total`).
fn parse_strace_total(text: &str) -> Option<u64> {
    let total = text
        .lines()
        .find(|line| line.trim_end().ends_with("total"))?;
    total.split_whitespace().nth(3)?.parse().ok()
}

fn display_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    format!(
        "{}: {}",
        path.display(),
        text.trim().lines().last().unwrap_or("empty")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv_is_read() {
        let text = "# started on Sun\n\n123456,,raw_syscalls:sys_enter,2000,100.00,,\n\
                    <not supported>,,instructions,0,100.00,,\n";
        assert_eq!(parse_perf(text, "raw_syscalls:sys_enter"), Some(123_456));
        assert_eq!(parse_perf(text, "instructions"), None);
    }

    #[test]
    fn strace_summary_total_is_read() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                     60.00    0.000600           3       200           read\n\
                    100.00    0.001000           2       500        10 total\n";
        assert_eq!(parse_strace_total(text), Some(500));
        let no_errors = "100.00    0.001000           2       500           total\n";
        assert_eq!(parse_strace_total(no_errors), Some(500));
    }
}
