//! The result of `evloop bench echo`, as a short table or one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use super::worker::{Plan, Tally};

/// Everything a run measured, with the parameters it ran with.
#[derive(Debug)]
pub struct Summary {
    /// What every thread did.
    pub plan: Plan,
    /// Connections asked for.
    pub connections: u32,
    /// Load-generating threads.
    pub threads: usize,
    /// All threads' counts added up.
    pub tally: Tally,
}

/// Latency percentiles reported, with their JSON names.
const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

impl Summary {
    /// Whether the run found nothing wrong: every connection connected and
    /// lasted, every byte came back as sent, and requests completed.
    pub fn passed(&self) -> bool {
        let t = &self.tally;
        t.connect_errors == 0 && t.io_errors == 0 && t.mismatches == 0 && t.requests > 0
    }

    /// Measured requests per second; 0 if nothing was measured (the
    /// command line refuses a zero duration, and JSON has no NaN).
    pub fn requests_per_sec(&self) -> f64 {
        let seconds = self.plan.duration.as_secs_f64();
        if seconds > 0.0 {
            self.tally.requests as f64 / seconds
        } else {
            0.0
        }
    }

    /// TLS handshakes completed per measured second; 0 as for
    /// [`requests_per_sec`](Self::requests_per_sec).
    pub fn handshakes_per_sec(&self) -> f64 {
        let seconds = self.plan.duration.as_secs_f64();
        if seconds > 0.0 {
            self.tally.handshakes as f64 / seconds
        } else {
            0.0
        }
    }

    /// Measured payload throughput in one direction, in MiB/s.
    pub fn mib_per_sec(&self) -> f64 {
        self.requests_per_sec() * self.plan.size as f64 / (1024.0 * 1024.0)
    }

    fn latency_at(&self, percentile: f64) -> Duration {
        Duration::from_nanos(self.tally.latency.value_at_percentile(percentile))
    }

    fn handshake_latency_at(&self, percentile: f64) -> Duration {
        Duration::from_nanos(self.tally.handshake_latency.value_at_percentile(percentile))
    }

    /// The human-readable table.
    pub fn to_text(&self) -> String {
        let t = &self.tally;
        let plan = &self.plan;
        let mut out = String::new();
        let _ = writeln!(out, "target       {}", plan.target);
        let _ = writeln!(
            out,
            "load         {} connections × {} B, pipeline {}, {} thread{} on {}; {:?} measured after {:?} warm-up",
            self.connections,
            plan.size,
            plan.pipeline,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            plan.io,
            plan.duration,
            plan.warmup,
        );
        let _ = writeln!(
            out,
            "throughput   {:.0} requests/s   {:.2} MiB/s each way   ({} requests)",
            self.requests_per_sec(),
            self.mib_per_sec(),
            t.requests,
        );
        out.push_str("latency     ");
        for (name, percentile) in PERCENTILES {
            let _ = write!(
                out,
                " {name} {}  ",
                human_latency(self.latency_at(percentile))
            );
        }
        let max = Duration::from_nanos(t.latency.max());
        let _ = writeln!(out, " max {}", human_latency(max));
        if let Some(tls) = &plan.tls {
            let (version, suite) = t.negotiated.unwrap_or(("no handshake", "-"));
            let _ = writeln!(
                out,
                "tls          {version} {suite}, {}; {:.0} handshakes/s   ({} measured, {} in all, {} resumed)",
                if tls.new_connection {
                    "a new connection per request"
                } else {
                    "keep-alive"
                },
                self.handshakes_per_sec(),
                t.handshakes,
                t.handshakes_total,
                t.handshakes_resumed,
            );
            out.push_str("handshake   ");
            for (name, percentile) in PERCENTILES {
                let _ = write!(
                    out,
                    " {name} {}  ",
                    human_latency(self.handshake_latency_at(percentile))
                );
            }
            let max = Duration::from_nanos(t.handshake_latency.max());
            let _ = writeln!(out, " max {}", human_latency(max));
        }
        let _ = writeln!(
            out,
            "errors       connect {}   i/o {}   mismatches {}",
            t.connect_errors, t.io_errors, t.mismatches
        );
        if t.requests == 0 {
            out.push_str("FAILED: no request completed\n");
        }
        out
    }

    /// One JSON object on one line; latencies in microseconds.
    pub fn to_json(&self) -> String {
        let t = &self.tally;
        let plan = &self.plan;
        let mut latency = String::new();
        for (name, percentile) in PERCENTILES {
            let _ = write!(
                latency,
                "\"{name}\":{:.3},",
                micros(self.latency_at(percentile))
            );
        }
        let _ = write!(
            latency,
            "\"max\":{:.3},\"mean\":{:.3}",
            micros(Duration::from_nanos(t.latency.max())),
            t.latency.mean() / 1000.0
        );
        let mut tls = String::from("\"tls\":false");
        if let Some(plan_tls) = &plan.tls {
            let mut handshake_latency = String::new();
            for (name, percentile) in PERCENTILES {
                let _ = write!(
                    handshake_latency,
                    "\"{name}\":{:.3},",
                    micros(self.handshake_latency_at(percentile))
                );
            }
            let _ = write!(
                handshake_latency,
                "\"max\":{:.3},\"mean\":{:.3}",
                micros(Duration::from_nanos(t.handshake_latency.max())),
                t.handshake_latency.mean() / 1000.0
            );
            let (version, suite) = t.negotiated.unwrap_or(("", ""));
            tls = format!(
                concat!(
                    "\"tls\":true,\"new_connection\":{new_connection},",
                    "\"tls_version\":\"{version}\",\"cipher_suite\":\"{suite}\",",
                    "\"handshakes\":{handshakes},\"handshakes_total\":{total},",
                    "\"handshakes_resumed\":{resumed},\"handshakes_per_sec\":{rate:.1},",
                    "\"handshake_latency_us\":{{{handshake_latency}}}"
                ),
                new_connection = plan_tls.new_connection,
                handshakes = t.handshakes,
                total = t.handshakes_total,
                resumed = t.handshakes_resumed,
                rate = self.handshakes_per_sec(),
                version = version,
                suite = suite,
                handshake_latency = handshake_latency,
            );
        }
        format!(
            concat!(
                "{{\"target\":\"{target}\",\"connections\":{connections},\"connected\":{connected},",
                "\"size\":{size},\"pipeline\":{pipeline},\"threads\":{threads},\"io\":\"{io}\",",
                "\"warmup_s\":{warmup},\"duration_s\":{duration},",
                "\"requests\":{requests},\"requests_total\":{requests_total},",
                "\"requests_per_sec\":{rps:.1},\"mib_per_sec\":{mibps:.3},",
                "\"latency_us\":{{{latency}}},{tls},",
                "\"connect_errors\":{connect_errors},\"io_errors\":{io_errors},",
                "\"mismatches\":{mismatches},\"passed\":{passed}}}"
            ),
            target = json_escaped(&plan.target.to_string()),
            connections = self.connections,
            connected = t.connected,
            size = plan.size,
            pipeline = plan.pipeline,
            threads = self.threads,
            io = plan.io,
            warmup = plan.warmup.as_secs_f64(),
            duration = plan.duration.as_secs_f64(),
            requests = t.requests,
            requests_total = t.requests_total,
            rps = self.requests_per_sec(),
            mibps = self.mib_per_sec(),
            latency = latency,
            tls = tls,
            connect_errors = t.connect_errors,
            io_errors = t.io_errors,
            mismatches = t.mismatches,
            passed = self.passed(),
        )
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// `71.2µs`, `1.20ms`, `2.50s`: three significant digits.
fn human_latency(duration: Duration) -> String {
    let micros = micros(duration);
    let (value, unit) = if micros < 1000.0 {
        (micros, "µs")
    } else if micros < 1e6 {
        (micros / 1e3, "ms")
    } else {
        (micros / 1e6, "s")
    };
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$}{unit}")
}

/// `text` as the inside of a JSON string: a Unix socket's path may hold
/// quotes, backslashes or control characters.
fn json_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::worker::Io;
    use super::*;

    fn summary(requests: u64, mismatches: u64) -> Summary {
        let now = Instant::now();
        let mut tally = Tally::new(now, now + Duration::from_secs(1));
        tally.connected = 2;
        tally.requests = requests;
        tally.requests_total = requests;
        tally.mismatches = mismatches;
        for micros in 1..=requests {
            tally.latency.record(micros * 1000).unwrap();
        }
        Summary {
            plan: Plan {
                target: "127.0.0.1:1815".parse().unwrap(),
                io: Io::Readiness,
                size: 128,
                pipeline: 1,
                warmup: Duration::ZERO,
                duration: Duration::from_millis(500),
                connect_timeout: Duration::from_secs(1),
                tls: None,
            },
            connections: 2,
            threads: 1,
            tally,
        }
    }

    #[test]
    fn rates_are_per_measured_second() {
        let s = summary(1000, 0);
        assert_eq!(s.requests_per_sec(), 2000.0);
        assert_eq!(s.mib_per_sec(), 2000.0 * 128.0 / 1048576.0);
    }

    #[test]
    fn issue_8_a_zero_duration_gives_zero_rates_never_nan() {
        let mut s = summary(0, 0);
        s.plan.duration = Duration::ZERO;
        assert_eq!(s.requests_per_sec(), 0.0);
        assert_eq!(s.mib_per_sec(), 0.0);
        let json = s.to_json();
        for bad in ["NaN", "inf"] {
            assert!(!json.contains(bad), "{bad} in {json}");
        }
        assert!(!s.to_text().contains("NaN"));
    }

    #[test]
    fn json_has_every_field() {
        let json = summary(100, 0).to_json();
        for field in [
            "\"target\":\"127.0.0.1:1815\"",
            "\"requests\":100,",
            "\"threads\":1,\"io\":\"epoll\",",
            "\"requests_per_sec\":200.0,",
            "\"p99.9\":",
            "\"mismatches\":0,",
            "\"passed\":true}",
        ] {
            assert!(json.contains(field), "{field} missing from {json}");
        }
    }

    #[test]
    fn a_socket_path_is_escaped_in_json() {
        assert_eq!(
            json_escaped("unix:/tmp/a \"b\"\\c\n"),
            "unix:/tmp/a \\\"b\\\"\\\\c\\u000a"
        );
    }

    #[test]
    fn a_mismatch_or_no_request_fails_the_run() {
        assert!(summary(10, 0).passed());
        assert!(!summary(10, 1).passed());
        assert!(!summary(0, 0).passed());
        assert!(summary(0, 0).to_text().contains("FAILED"));
    }

    #[test]
    fn latencies_read_well() {
        assert_eq!(human_latency(Duration::from_nanos(71_234)), "71.2µs");
        assert_eq!(human_latency(Duration::from_micros(1_204)), "1.20ms");
        assert_eq!(human_latency(Duration::from_millis(250)), "250ms");
        assert_eq!(human_latency(Duration::from_millis(2_500)), "2.50s");
    }
}
