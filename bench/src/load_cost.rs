//! `load-cost`: what the load generator itself costs per request on each
//! of its drivers, against the same server.
//!
//! On loopback one core of `evloop bench echo` on epoll produces about as
//! many requests as one core of the simplest server answers, so at one
//! message in flight per connection it is as often the limit as the server
//! (see `src/bench/echo/mod.rs`). This runs one server (c-epoll unless
//! told otherwise) pinned to CPU 0 and the load generator pinned to CPU 1,
//! with `--io epoll` and `--io uring` in turn, round after round, a fresh
//! server each run, and reports per load and driver the medians of:
//!
//! - requests/s;
//! - the load generator's CPU time per request (`utime + stime` from
//!   `/proc/PID/stat`, read as it exits, over every request of its run);
//! - how busy the load core was (that CPU time over the run's wall time);
//! - the server's CPU time per request and how busy its core was.
//!
//! A load generator that costs less per request leaves headroom: where it
//! was the limit, the rate rises; where it was not, its core idles more.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::compare::median;
use crate::loadgen::{self, Load};
use crate::prepare::{Binaries, work_dir};
use crate::servers::{RunningServer, ServerKind};

/// The load generator's drivers, in the order each round runs them.
pub const DRIVERS: [&str; 2] = ["epoll", "uring"];

/// How `load-cost` runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server loaded.
    pub server: ServerKind,
    /// The loads: (connections, bytes per message).
    pub loads: Vec<(u32, u32)>,
    /// Rounds over loads and drivers.
    pub rounds: usize,
    /// Warm-up before each measured run.
    pub warmup: Duration,
    /// Measured time per run.
    pub duration: Duration,
}

/// One run: a fresh server, one load, one driver.
#[derive(Debug, Serialize)]
pub struct Run {
    /// Which round.
    pub round: usize,
    /// Measured requests per second.
    pub requests_per_sec: f64,
    /// Requests over the whole run (warm-up included).
    pub requests_total: u64,
    /// The load generator's CPU time over its run, in seconds.
    pub load_cpu_seconds: f64,
    /// The load generator's run, start to exit, in seconds.
    pub load_wall_seconds: f64,
    /// The server's CPU time over the same run, in seconds.
    pub server_cpu_seconds: f64,
}

impl Run {
    fn per_request_us(&self, seconds: f64) -> f64 {
        seconds * 1e6 / self.requests_total.max(1) as f64
    }
}

/// One load on one driver: its runs and their medians.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Connections.
    pub connections: u32,
    /// Bytes per message.
    pub size: u32,
    /// The load generator's `--io`.
    pub io: &'static str,
    /// The successful runs.
    pub runs: Vec<Run>,
    /// What went wrong in the others.
    pub errors: Vec<String>,
    /// Median requests/s.
    pub requests_per_sec: Option<f64>,
    /// Median load-generator CPU microseconds per request.
    pub load_cpu_us_per_request: Option<f64>,
    /// Median share of the load core used (CPU time over wall time).
    pub load_busy: Option<f64>,
    /// Median server CPU microseconds per request.
    pub server_cpu_us_per_request: Option<f64>,
    /// Median share of the server core used.
    pub server_busy: Option<f64>,
}

/// Everything `load-cost` measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The server loaded.
    pub server: &'static str,
    /// Rounds run.
    pub rounds: usize,
    /// Measured seconds per run.
    pub duration_seconds: f64,
    /// Warm-up seconds per run.
    pub warmup_seconds: f64,
    /// One row per load and driver.
    pub rows: Vec<Row>,
}

/// Runs every load on every driver, rounds interleaved.
pub fn run(settings: &Settings, binaries: &Binaries) -> Result<Report, String> {
    let evloop = binaries
        .evloop
        .as_ref()
        .map_err(|e| format!("no load generator: {e}"))?;
    let mut rows: Vec<Row> = settings
        .loads
        .iter()
        .flat_map(|&(connections, size)| {
            DRIVERS.iter().map(move |&io| Row {
                connections,
                size,
                io,
                runs: Vec::new(),
                errors: Vec::new(),
                requests_per_sec: None,
                load_cpu_us_per_request: None,
                load_busy: None,
                server_cpu_us_per_request: None,
                server_busy: None,
            })
        })
        .collect();
    for round in 0..settings.rounds {
        for row in &mut rows {
            let load = Load {
                connections: row.connections,
                size: row.size,
                warmup: settings.warmup,
                duration: settings.duration,
            };
            match measure(settings.server, binaries, evloop, load, row.io, round) {
                Ok(run) => {
                    eprintln!(
                        "round {round} {:>4} × {:>4} B load on {:<5} {:>9.0} req/s  load {:>5.2} µs CPU/req ({:>3.0} % busy)  server {:>5.2} µs CPU/req",
                        row.connections,
                        row.size,
                        row.io,
                        run.requests_per_sec,
                        run.per_request_us(run.load_cpu_seconds),
                        100.0 * run.load_cpu_seconds / run.load_wall_seconds,
                        run.per_request_us(run.server_cpu_seconds),
                    );
                    row.runs.push(run);
                }
                Err(why) => {
                    eprintln!("round {round} load on {}: {why}", row.io);
                    row.errors.push(format!("round {round}: {why}"));
                }
            }
        }
    }
    for row in &mut rows {
        let runs = &row.runs;
        row.requests_per_sec = median(runs.iter().map(|r| r.requests_per_sec));
        row.load_cpu_us_per_request =
            median(runs.iter().map(|r| r.per_request_us(r.load_cpu_seconds)));
        row.load_busy = median(
            runs.iter()
                .map(|r| r.load_cpu_seconds / r.load_wall_seconds),
        );
        row.server_cpu_us_per_request =
            median(runs.iter().map(|r| r.per_request_us(r.server_cpu_seconds)));
        row.server_busy = median(
            runs.iter()
                .map(|r| r.server_cpu_seconds / r.load_wall_seconds),
        );
    }
    Ok(Report {
        server: settings.server.name(),
        rounds: settings.rounds,
        duration_seconds: settings.duration.as_secs_f64(),
        warmup_seconds: settings.warmup.as_secs_f64(),
        rows,
    })
}

fn measure(
    kind: ServerKind,
    binaries: &Binaries,
    evloop: &std::path::Path,
    load: Load,
    io: &str,
    round: usize,
) -> Result<Run, String> {
    let mut server = RunningServer::start(kind, binaries, &work_dir())?;
    let cpu_error = |e: std::io::Error| format!("reading the server's CPU time: {e}");
    let before = server.cpu_time().map_err(cpu_error)?;
    let report = loadgen::run_on(evloop, server.port, load, io);
    let after = server.cpu_time().map_err(cpu_error)?;
    if !server.is_running() {
        return Err(format!(
            "the server exited during the run: {}",
            server.log_tail()
        ));
    }
    let report = report?;
    let load_cpu_seconds = report
        .cpu_seconds
        .ok_or("the load generator's CPU time could not be read")?;
    Ok(Run {
        round,
        requests_per_sec: report.requests_per_sec,
        requests_total: report.requests_total,
        load_cpu_seconds,
        load_wall_seconds: report.wall_seconds.max(1e-9),
        server_cpu_seconds: (after - before).as_secs_f64(),
    })
}

/// The report as a Markdown table: a row per load and driver, and the
/// uring row's ratios to the epoll row of the same load.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Load generator cost against {}: {} round{} of {:.1} s after {:.1} s of warm-up; medians.\n",
        report.server,
        report.rounds,
        if report.rounds == 1 { "" } else { "s" },
        report.duration_seconds,
        report.warmup_seconds,
    );
    out.push_str(
        "| load | load generator on | requests/s | load CPU per request | load core busy | server CPU per request | server core busy |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    let us = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.2} µs"));
    let share = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.0} %", v * 100.0));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    };
    let mut problems = Vec::new();
    for pair in report.rows.chunks(DRIVERS.len()) {
        for row in pair {
            let _ = writeln!(
                out,
                "| {} × {} B | {} | {} | {} | {} | {} | {} |",
                row.connections,
                row.size,
                row.io,
                row.requests_per_sec
                    .map_or("—".into(), |v| format!("{v:.0}")),
                us(row.load_cpu_us_per_request),
                share(row.load_busy),
                us(row.server_cpu_us_per_request),
                share(row.server_busy),
            );
            for error in &row.errors {
                problems.push(format!(
                    "{} × {} B, {}: {error}",
                    row.connections, row.size, row.io
                ));
            }
        }
        if let [epoll, uring] = pair {
            let _ = writeln!(
                out,
                "| {} × {} B | uring / epoll | {} | {} | {} | {} | {} |",
                epoll.connections,
                epoll.size,
                ratio(uring.requests_per_sec, epoll.requests_per_sec),
                ratio(uring.load_cpu_us_per_request, epoll.load_cpu_us_per_request),
                ratio(uring.load_busy, epoll.load_busy),
                ratio(
                    uring.server_cpu_us_per_request,
                    epoll.server_cpu_us_per_request
                ),
                ratio(uring.server_busy, epoll.server_busy),
            );
        }
    }
    if !problems.is_empty() {
        out.push_str("\nRuns that produced no figure:\n\n");
        for problem in problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    out
}

/// `50x128` → (50, 128).
pub fn parse_load(text: &str) -> Result<(u32, u32), String> {
    let (connections, size) = text
        .split_once(['x', '×'])
        .ok_or_else(|| format!("{text:?}: expected CONNECTIONSxBYTES, e.g. 50x128"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{text:?}: {s:?} is not a positive whole number"))
    };
    Ok((number(connections)?, number(size)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(io: &'static str, rate: f64, load_us: f64) -> Row {
        Row {
            connections: 50,
            size: 128,
            io,
            runs: vec![],
            errors: vec![],
            requests_per_sec: Some(rate),
            load_cpu_us_per_request: Some(load_us),
            load_busy: Some(0.98),
            server_cpu_us_per_request: Some(5.0),
            server_busy: Some(0.9),
        }
    }

    #[test]
    fn loads_parse() {
        assert_eq!(parse_load("50x128"), Ok((50, 128)));
        assert_eq!(parse_load("1×64"), Ok((1, 64)));
        assert!(parse_load("50").is_err());
        assert!(parse_load("0x128").is_err());
    }

    #[test]
    fn the_uring_row_is_held_against_the_epoll_row() {
        let report = Report {
            server: "c-epoll",
            rounds: 3,
            duration_seconds: 2.0,
            warmup_seconds: 0.5,
            rows: vec![row("epoll", 100_000.0, 9.0), row("uring", 125_000.0, 6.0)],
        };
        let out = render(&report);
        assert!(
            out.contains("| 50 × 128 B | epoll | 100000 | 9.00 µs | 98 % |"),
            "{out}"
        );
        assert!(
            out.contains("| 50 × 128 B | uring / epoll | 1.25× | 0.67× | 1.00× | 1.00× | 1.00× |"),
            "{out}"
        );
    }
}
