//! The HTTP service's goals against nginx, held for each evloop driver
//! against the ratios of one run (medians over its rounds).
//!
//! | figure | loads | goal |
//! |---|---|---|
//! | requests/s | 13 B × 50 and × 500 conns | ≥ 1.3 × nginx's |
//! | server CPU per request | 13 B × 50 and × 500 conns | ≤ 0.75 × nginx's |
//! | requests/s | 64 KiB × 50 conns | ≥ 1.0 × nginx's |
//! | requests/s | 13 B × 50 conns, pipelined 16 | ≥ 1.5 × nginx's |
//!
//! The 13-byte goals hold at both connection counts the file runs at, so
//! each is two rows. A figure the run did not produce is "not measured".

use crate::goals::Goal;
use crate::markdown::thousands;

use super::{HttpPoint, HttpServer, LOADS};

/// Which figure a goal is about.
#[derive(Debug, Clone, Copy)]
enum Figure {
    /// Requests/s over nginx's, at least.
    RateAtLeast(f64),
    /// Server CPU per request over nginx's, at most.
    CpuAtMost(f64),
}

/// The goals: the load (an index into [`LOADS`]) and the figure.
const GOALS: [(usize, Figure); 6] = [
    (0, Figure::RateAtLeast(1.3)),
    (1, Figure::RateAtLeast(1.3)),
    (0, Figure::CpuAtMost(0.75)),
    (1, Figure::CpuAtMost(0.75)),
    (2, Figure::RateAtLeast(1.0)),
    (3, Figure::RateAtLeast(1.5)),
];

/// `subject`'s goals, in the order of the module's table.
pub fn assess(points: &[HttpPoint], subject: HttpServer) -> Vec<Goal> {
    let baseline = HttpServer::BASELINE.name();
    GOALS
        .iter()
        .map(|&(load, figure)| {
            let load = &LOADS[load];
            let point = points.iter().find(|p| p.load.label() == load.label());
            let summary = |name: &str| point?.servers.iter().find(|s| s.server == name);
            let (subject, reference) = (summary(subject.name()), summary(baseline));
            match figure {
                Figure::RateAtLeast(least) => {
                    let ratio = subject.and_then(|s| s.requests_per_sec_vs_baseline);
                    let rates = subject
                        .and_then(|s| s.requests_per_sec)
                        .zip(reference.and_then(|s| s.requests_per_sec));
                    Goal {
                        figure: format!("requests/s vs {baseline}, {}", load.label()),
                        measured: ratio.zip(rates).map(|(r, (s, n))| {
                            format!(
                                "{r:.2}× ({} vs {})",
                                thousands(s.round() as u64),
                                thousands(n.round() as u64)
                            )
                        }),
                        target: format!("≥ {least:.2}×"),
                        met: ratio.map(|r| r >= least),
                    }
                }
                Figure::CpuAtMost(most) => {
                    let ratio = subject.and_then(|s| s.cpu_per_request_vs_baseline);
                    let costs = subject
                        .and_then(|s| s.cpu_us_per_request)
                        .zip(reference.and_then(|s| s.cpu_us_per_request));
                    Goal {
                        figure: format!("server CPU per request vs {baseline}, {}", load.label()),
                        measured: ratio
                            .zip(costs)
                            .map(|(r, (s, n))| format!("{r:.2}× ({s:.2} vs {n:.2} µs)")),
                        target: format!("≤ {most:.2}×"),
                        met: ratio.map(|r| r <= most),
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::compare::{ServerSummary, summarize};

    /// nginx as in the reference measurement, and evloop as given, at each
    /// load: (requests/s, CPU µs per request).
    fn points(evloop: [(f64, f64); 4]) -> Vec<HttpPoint> {
        let nginx = [
            (88_000.0, 11.2),
            (82_000.0, 12.0),
            (48_000.0, 20.3),
            (20_000.0, 40.0),
        ];
        LOADS
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
            .collect()
    }

    #[test]
    fn each_goal_is_held_against_its_ratio() {
        let points = points([
            (120_000.0, 8.0), // 1.36× the rate, 0.71× the CPU: both met
            (100_000.0, 9.5), // 1.22× the rate, 0.79× the CPU: both missed
            (48_000.0, 18.0), // 1.00×: met, at the bound
            (29_000.0, 20.0), // 1.45×: missed
        ]);
        let goals = assess(&points, HttpServer::Evloop);
        let verdicts: Vec<(&str, Option<bool>)> =
            goals.iter().map(|g| (g.figure.as_str(), g.met)).collect();
        assert_eq!(
            verdicts,
            [
                ("requests/s vs nginx, 13 B × 50 conns", Some(true)),
                ("requests/s vs nginx, 13 B × 500 conns", Some(false)),
                (
                    "server CPU per request vs nginx, 13 B × 50 conns",
                    Some(true)
                ),
                (
                    "server CPU per request vs nginx, 13 B × 500 conns",
                    Some(false)
                ),
                ("requests/s vs nginx, 64 KiB × 50 conns", Some(true)),
                (
                    "requests/s vs nginx, 13 B × 50 conns, pipelined 16",
                    Some(false)
                ),
            ]
        );
        assert_eq!(
            goals[0].measured.as_deref(),
            Some("1.36× (120,000 vs 88,000)")
        );
        assert_eq!(
            goals[3].measured.as_deref(),
            Some("0.79× (9.50 vs 12.00 µs)")
        );
    }

    #[test]
    fn a_server_that_never_ran_is_not_measured() {
        let points = points([(1.0, 1.0); 4]);
        let goals = assess(&points, HttpServer::EvloopUring);
        assert_eq!(goals.len(), 6);
        assert!(
            goals.iter().all(|g| g.verdict() == "not measured"),
            "{goals:?}"
        );
        assert!(goals.iter().all(|g| g.measured.is_none()));
    }
}
