//! wrk, the HTTP load generator: its command line, and what its report
//! says (requests, rate, p99 latency, errors), parsed from its text output.

use std::path::Path;
use std::time::Duration;

use crate::loadgen::{Finished, run_to_end};

/// How much longer than its nominal time a wrk run may take before it is
/// killed.
const OVERRUN: Duration = Duration::from_secs(30);

/// One wrk run's parameters.
#[derive(Debug, Clone)]
pub struct WrkRun<'a> {
    /// The URL every request asks for.
    pub url: String,
    /// Connections, all on one thread (`-t1`).
    pub connections: u32,
    /// Whole seconds (wrk counts no finer).
    pub seconds: u64,
    /// The pipelining script and its depth, if requests are pipelined.
    pub pipeline: Option<(&'a Path, u32)>,
    /// Every request asks for its connection to be closed after the
    /// response (`-H 'Connection: close'`): a new connection, and over
    /// HTTPS a new handshake, per request.
    pub close: bool,
}

impl WrkRun<'_> {
    /// `wrk -t1 -cN -dSs --latency [-H 'Connection: close'] [-s SCRIPT]
    /// URL [-- DEPTH]`.
    pub fn command_line(&self, wrk: &Path) -> Vec<String> {
        let mut line = vec![
            wrk.display().to_string(),
            "-t1".into(),
            format!("-c{}", self.connections),
            format!("-d{}s", self.seconds),
            "--latency".into(),
        ];
        if self.close {
            line.extend(["-H".into(), "Connection: close".into()]);
        }
        if let Some((script, _)) = self.pipeline {
            line.extend(["-s".into(), script.display().to_string()]);
        }
        line.push(self.url.clone());
        if let Some((_, depth)) = self.pipeline {
            line.extend(["--".into(), depth.to_string()]);
        }
        line
    }

    /// Runs wrk (at `wrk`) pinned to the load CPU; its report, and what
    /// the run cost it.
    pub fn run(&self, wrk: &Path) -> Result<(WrkReport, Finished), String> {
        let limit = Duration::from_secs(self.seconds) + OVERRUN;
        let finished = run_to_end(&self.command_line(wrk), limit)?;
        if !finished.status.success() {
            return Err(format!(
                "wrk exited with {}: {}",
                finished.status,
                first_line(&finished.stderr, &finished.stdout)
            ));
        }
        let report = parse(&finished.stdout).map_err(|why| {
            format!(
                "wrk's report: {why}: {}",
                first_line(&finished.stderr, &finished.stdout)
            )
        })?;
        Ok((report, finished))
    }
}

fn first_line<'a>(stderr: &'a str, stdout: &'a str) -> &'a str {
    stderr
        .lines()
        .chain(stdout.lines())
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
}

/// What wrk reported for one run.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Responses completed (with pipelining, each of a batch counts).
    pub requests: u64,
    /// The run's length as wrk measured it, in seconds.
    pub seconds: f64,
    /// `Requests/sec:`.
    pub requests_per_sec: f64,
    /// The 99th percentile latency in microseconds, from `--latency`'s
    /// distribution (with pipelining, of a whole batch); `None` where wrk
    /// printed 0.00us with requests done, i.e. took no latency sample (seen
    /// once in a one-second pipelined run).
    pub p99_us: Option<f64>,
    /// `Socket errors:` connect, read, write, timeout (all 0 when wrk
    /// prints no such line).
    pub socket_errors: [u64; 4],
    /// `Non-2xx or 3xx responses:` (0 when wrk prints no such line).
    pub non_success: u64,
}

impl WrkReport {
    /// What went wrong in the run, if anything: a run with errors is no
    /// figure of a server serving its files.
    pub fn errors(&self) -> Option<String> {
        let [connect, read, write, timeout] = self.socket_errors;
        let mut errors = Vec::new();
        if connect + read + write + timeout > 0 {
            errors.push(format!(
                "socket errors: connect {connect}, read {read}, write {write}, timeout {timeout}"
            ));
        }
        if self.non_success > 0 {
            errors.push(format!("{} non-2xx or 3xx responses", self.non_success));
        }
        (!errors.is_empty()).then(|| {
            format!(
                "wrk reported {} (of {} requests)",
                errors.join("; "),
                self.requests
            )
        })
    }
}

/// Reads wrk's text report (as wrk 4 prints it with `--latency`).
pub fn parse(output: &str) -> Result<WrkReport, String> {
    let mut requests = None;
    let mut requests_per_sec = None;
    let mut p99_us = None;
    let mut socket_errors = [0; 4];
    let mut non_success = 0;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = Some(number(rest.trim(), line)?);
        } else if let Some(rest) = line.strip_prefix("99%") {
            p99_us = Some(duration_us(rest.trim()).ok_or_else(|| format!("bad latency: {line}"))?);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 3, write 0, timeout 0"
            for (slot, name) in socket_errors
                .iter_mut()
                .zip(["connect", "read", "write", "timeout"])
            {
                *slot = rest
                    .split(',')
                    .find_map(|field| field.trim().strip_prefix(name))
                    .ok_or_else(|| format!("no {name} count: {line}"))
                    .and_then(|count| number(count.trim(), line))?;
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_success = number(rest.trim(), line)?;
        } else if let Some((count, rest)) = line.split_once(" requests in ") {
            // "137167 requests in 2.01s, 32.57MB read"
            let elapsed = rest.split(',').next().unwrap_or("");
            let seconds = duration_us(elapsed).ok_or_else(|| format!("bad duration: {line}"))?;
            requests = Some((number(count, line)?, seconds / 1e6));
        }
    }
    let (requests, seconds) = requests.ok_or("no \"N requests in T\" line")?;
    let p99_us = p99_us.ok_or("no 99% latency line (was --latency given?)")?;
    Ok(WrkReport {
        requests,
        seconds,
        requests_per_sec: requests_per_sec.ok_or("no Requests/sec line")?,
        p99_us: (p99_us > 0.0 || requests == 0).then_some(p99_us),
        socket_errors,
        non_success,
    })
}

fn number<T: std::str::FromStr>(text: &str, line: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("not a number: {text:?} in {line:?}"))
}

/// A duration as wrk prints it (`685.00us`, `1.24ms`, `2.00s`, `1.50m`),
/// in microseconds.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.trim().parse().ok()?;
    let scale = match unit.trim() {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `wrk -t1 -c50 -d2s --latency` against nginx 1.22 here.
    const KEEP_ALIVE: &str = "\
Running 2s test @ http://127.0.0.1:18080/hello.txt
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   733.32us  201.39us   5.35ms   92.17%
    Req/Sec    69.10k     5.16k   73.87k    85.00%
  Latency Distribution
     50%  685.00us
     75%  714.00us
     90%    0.88ms
     99%    1.24ms
  137167 requests in 2.01s, 32.57MB read
Requests/sec:  68377.17
Transfer/sec:     16.24MB
";

    /// Captured from the same, for a path nginx does not have (404s).
    const NOT_FOUND: &str = "\
Running 2s test @ http://127.0.0.1:18080/nothere
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   683.70us  384.49us   6.37ms   94.11%
    Req/Sec    75.75k    12.09k   93.49k    60.00%
  Latency Distribution
     50%  612.00us
     75%  674.00us
     90%    0.88ms
     99%    2.39ms
  150329 requests in 2.00s, 44.16MB read
  Non-2xx or 3xx responses: 150329
Requests/sec:  75140.27
Transfer/sec:     22.07MB
";

    #[test]
    fn a_clean_keep_alive_run_is_read() {
        let report = parse(KEEP_ALIVE).unwrap();
        assert_eq!(
            report,
            WrkReport {
                requests: 137_167,
                seconds: 2.01,
                requests_per_sec: 68_377.17,
                p99_us: Some(1240.0),
                socket_errors: [0; 4],
                non_success: 0,
            }
        );
        assert_eq!(report.errors(), None);
    }

    #[test]
    fn error_responses_are_reported_not_hidden() {
        let report = parse(NOT_FOUND).unwrap();
        assert_eq!(report.non_success, 150_329);
        assert_eq!(
            report.errors().as_deref(),
            Some("wrk reported 150329 non-2xx or 3xx responses (of 150329 requests)")
        );
    }

    #[test]
    fn a_latency_never_sampled_is_none_not_zero() {
        let unsampled = KEEP_ALIVE.replace("     99%    1.24ms", "     99%    0.00us");
        assert_eq!(parse(&unsampled).unwrap().p99_us, None);
    }

    #[test]
    fn socket_errors_are_counted_by_kind() {
        let output = KEEP_ALIVE.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 12, write 3, timeout 40\nRequests/sec:",
        );
        let report = parse(&output).unwrap();
        assert_eq!(report.socket_errors, [0, 12, 3, 40]);
        let errors = report.errors().unwrap();
        assert!(
            errors.contains("connect 0, read 12, write 3, timeout 40"),
            "{errors}"
        );
    }

    #[test]
    fn a_report_without_its_figures_is_refused() {
        let no_latency = KEEP_ALIVE.replace("     99%    1.24ms\n", "");
        assert!(parse(&no_latency).unwrap_err().contains("--latency"));
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
        let garbled = KEEP_ALIVE.replace("68377.17", "68,377");
        assert!(parse(&garbled).is_err());
    }

    #[test]
    fn durations_carry_wrk_units() {
        assert_eq!(duration_us("685.00us"), Some(685.0));
        assert_eq!(duration_us("1.24ms"), Some(1240.0));
        assert_eq!(duration_us("2.00s"), Some(2_000_000.0));
        assert_eq!(duration_us("1.50m"), Some(90_000_000.0));
        assert_eq!(duration_us("3.0d"), None);
        assert_eq!(duration_us("ms"), None);
    }

    #[test]
    fn the_command_line_pipelines_through_the_script() {
        let script = Path::new("/repo/bench/scripts/pipeline.lua");
        let run = WrkRun {
            url: "http://127.0.0.1:8080/hello.txt".into(),
            connections: 50,
            seconds: 2,
            pipeline: Some((script, 16)),
            close: false,
        };
        assert_eq!(
            run.command_line(Path::new("/usr/bin/wrk")).join(" "),
            "/usr/bin/wrk -t1 -c50 -d2s --latency -s /repo/bench/scripts/pipeline.lua \
             http://127.0.0.1:8080/hello.txt -- 16"
        );
        let plain = WrkRun {
            pipeline: None,
            ..run
        };
        assert_eq!(
            plain.command_line(Path::new("wrk")).join(" "),
            "wrk -t1 -c50 -d2s --latency http://127.0.0.1:8080/hello.txt"
        );
        let closing = WrkRun {
            url: "https://127.0.0.1:8443/hello.txt".into(),
            close: true,
            ..plain
        };
        assert_eq!(
            closing.command_line(Path::new("wrk")),
            [
                "wrk",
                "-t1",
                "-c50",
                "-d2s",
                "--latency",
                "-H",
                "Connection: close",
                "https://127.0.0.1:8443/hello.txt"
            ]
        );
    }
}
