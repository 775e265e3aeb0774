//! The load generator: `evloop bench echo --json`, pinned to its own CPU,
//! on epoll (every comparison) or io_uring (`load-cost`), with the CPU time
//! it used; and [`run_to_end`], which runs any load process that way (wrk
//! too, for `compare http`).

use std::io::Read;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
use serde::Deserialize;

use crate::servers::{LOAD_CPU, cpu_time, pinned};

/// How much longer than its nominal time a load run may take (connecting,
/// starting, a loaded machine) before it is killed.
const OVERRUN: Duration = Duration::from_secs(30);

/// One load run's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Connections.
    pub connections: u32,
    /// Bytes per message.
    pub size: u32,
    /// Time before measuring.
    pub warmup: Duration,
    /// Time measured.
    pub duration: Duration,
}

/// What `evloop bench echo --json` reports (the fields the harness uses).
#[derive(Debug, Clone, Deserialize)]
pub struct LoadReport {
    /// Echoes completed in the measured window.
    pub requests: u64,
    /// Echoes completed in all, warm-up included.
    pub requests_total: u64,
    /// Measured echoes per second.
    pub requests_per_sec: f64,
    /// Latency percentiles in microseconds.
    pub latency_us: Latency,
    /// Connections that failed to connect.
    pub connect_errors: u64,
    /// Connections lost during the run.
    pub io_errors: u64,
    /// Echoes that came back different.
    pub mismatches: u64,
    /// No error of any kind.
    pub passed: bool,
    /// User plus system CPU time the load generator used over its whole
    /// run (connecting and warm-up included), in seconds; `None` if it
    /// could not be read. Not part of its JSON: read from `/proc` as it
    /// exits.
    #[serde(skip)]
    pub cpu_seconds: Option<f64>,
    /// How long the load generator ran, start to exit, in seconds.
    #[serde(skip)]
    pub wall_seconds: f64,
}

/// Latency percentiles in microseconds (the one the harness uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Latency {
    /// 99th percentile.
    pub p99: f64,
}

/// Runs `evloop` (at `evloop`) against `127.0.0.1:port` on epoll and
/// returns its report, or why there is none.
pub fn run(evloop: &Path, port: u16, load: Load) -> Result<LoadReport, String> {
    run_on(evloop, port, load, "epoll")
}

/// Like [`run`], with the load generator's `--io DRIVER` (`epoll` or
/// `uring`).
pub fn run_on(evloop: &Path, port: u16, load: Load, io: &str) -> Result<LoadReport, String> {
    let command_line = [
        evloop.display().to_string(),
        "bench".into(),
        "echo".into(),
        "--target".into(),
        format!("127.0.0.1:{port}"),
        "--connections".into(),
        load.connections.to_string(),
        "--size".into(),
        load.size.to_string(),
        "--warmup".into(),
        format!("{}ms", load.warmup.as_millis()),
        "--duration".into(),
        format!("{}ms", load.duration.as_millis()),
        "--io".into(),
        io.into(),
        "--json".into(),
    ];
    let limit = load.warmup + load.duration + OVERRUN;
    let finished = run_to_end(&command_line, limit)?;
    let stderr = &finished.stderr;
    let mut report: LoadReport = serde_json::from_str(finished.stdout.trim()).map_err(|e| {
        format!(
            "no report from the load generator ({e}): {}",
            stderr.lines().next().unwrap_or("")
        )
    })?;
    report.cpu_seconds = finished.cpu_seconds;
    report.wall_seconds = finished.wall_seconds;
    if report.passed {
        Ok(report)
    } else {
        Err(format!(
            "load generator found errors: connect {}, i/o {}, mismatches {}, requests {}: {}",
            report.connect_errors,
            report.io_errors,
            report.mismatches,
            report.requests,
            stderr.lines().next().unwrap_or("")
        ))
    }
}

/// A load process that ran to its end: what it printed and what it cost.
#[derive(Debug)]
pub struct Finished {
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// How it exited.
    pub status: ExitStatus,
    /// User plus system CPU time over its whole run, in seconds; `None` if
    /// it could not be read.
    pub cpu_seconds: Option<f64>,
    /// Start to exit, in seconds.
    pub wall_seconds: f64,
}

/// Runs `command_line` pinned to [`LOAD_CPU`] until it exits by itself,
/// killing it (and saying so) if it runs longer than `limit`; reads its CPU
/// time as it exits.
pub fn run_to_end(command_line: &[String], limit: Duration) -> Result<Finished, String> {
    let mut child = pinned(LOAD_CPU, command_line)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", command_line[0]))?;
    // Drained while it runs, so that a chatty process never blocks on a
    // full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    // It stops by itself; polling only enforces the bound. It is left a
    // zombie (WNOWAIT) until its CPU time is read: taskset execs it, so the
    // child's PID is the load process's.
    let pid = Pid::from_child(&child);
    loop {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        match waitid(WaitId::Pid(pid), options) {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} ran longer than {limit:?}", command_line[0]));
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {}: {e}", command_line[0])),
        }
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_time(child.id()).ok().map(|d| d.as_secs_f64());
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", command_line[0]))?;
    Ok(Finished {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        status,
        cpu_seconds,
        wall_seconds,
    })
}

/// Reads `pipe` to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}
