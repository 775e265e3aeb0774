//! The load generator: `evloop bench echo --json`, pinned to its own CPU.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::servers::{LOAD_CPU, pinned};

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
}

/// Latency percentiles in microseconds (the one the harness uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Latency {
    /// 99th percentile.
    pub p99: f64,
}

/// Runs `evloop` (at `evloop`) against `127.0.0.1:port` and returns its
/// report, or why there is none.
pub fn run(evloop: &Path, port: u16, load: Load) -> Result<LoadReport, String> {
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
        "--json".into(),
    ];
    let mut child = pinned(LOAD_CPU, &command_line)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the load generator: {e}"))?;
    let limit = load.warmup + load.duration + OVERRUN;
    let started = Instant::now();
    // The load generator stops by itself; polling only enforces the bound.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the load generator ran longer than {limit:?}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for the load generator: {e}")),
        }
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let report: LoadReport = serde_json::from_str(stdout.trim()).map_err(|e| {
        format!(
            "no report from the load generator ({e}): {}",
            stderr.lines().next().unwrap_or("")
        )
    })?;
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
