//! The io_uring driver's goals, held against a comparison's figures.
//!
//! evloop's completion driver (`evloop serve --io uring`, the server
//! `evloop-uring`) is meant to be as cheap as the C io_uring server and
//! cheaper than the C epoll one. Each goal is one row of the report with
//! the figure measured, the target, and PASS or MISS; a figure the run did
//! not produce (a part skipped, a server that did not start, a counter
//! missing) is shown as not measured, never guessed.
//!
//! | figure | load | goal |
//! |---|---|---|
//! | system calls per request | 50 × 128 B | ≤ c-uring's and ≤ [`MAX_SYSCALLS_PER_REQUEST`] |
//! | server CPU per request | 50 and 500 × 128 B | ≤ [`MAX_CPU_VS_EPOLL`] × c-epoll's, ≤ [`MAX_CPU_VS_URING`] × c-uring's |
//! | requests/s | 500 × 128 B | ≥ [`MIN_RATE_VS_URING`] × c-uring's |
//! | idle memory per connection | every count run | ≤ [`MAX_IDLE_BYTES`] |

use serde::Serialize;

use crate::compare::{Results, SYSCALL_POINT};
use crate::servers::ServerKind;

/// The server the goals are about.
pub const SUBJECT: ServerKind = ServerKind::EvloopUring;
/// System calls per request at [`SYSCALL_POINT`], at most (and at most
/// c-uring's).
pub const MAX_SYSCALLS_PER_REQUEST: f64 = 0.2;
/// Server CPU per request over c-epoll's, at most, at [`CPU_LOADS`].
pub const MAX_CPU_VS_EPOLL: f64 = 0.90;
/// Server CPU per request over c-uring's, at most, at [`CPU_LOADS`].
pub const MAX_CPU_VS_URING: f64 = 1.0;
/// The loads (connections, bytes) the CPU goals hold at.
pub const CPU_LOADS: [(u32, u32); 2] = [(50, 128), (500, 128)];
/// Requests/s over c-uring's, at least, at [`RATE_LOAD`].
pub const MIN_RATE_VS_URING: f64 = 1.0;
/// The load the requests/s goal holds at.
pub const RATE_LOAD: (u32, u32) = (500, 128);
/// Resident memory per idle connection, in bytes, at most.
pub const MAX_IDLE_BYTES: f64 = 64.0;

/// One goal: the figure, what was measured, the target, and whether the
/// run met it (`None`: the figure was not measured).
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is measured, and under which load.
    pub figure: String,
    /// The subject's figure as shown, with the reference it is held
    /// against where there is one; `None` if not measured.
    pub measured: Option<String>,
    /// The target, in words.
    pub target: String,
    /// Met, missed, or not measured.
    pub met: Option<bool>,
}

impl Goal {
    /// `PASS`, `MISS`, or `not measured`.
    pub fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "not measured",
        }
    }
}

/// The heading of the goals' table.
pub fn title() -> String {
    format!("Goals of the io_uring driver ({})", SUBJECT.name())
}

/// Every goal, in the order the report lists them.
pub fn assess(results: &Results) -> Vec<Goal> {
    let mut goals = vec![syscalls(results)];
    for load in CPU_LOADS {
        goals.push(cpu(results, load, ServerKind::BASELINE, MAX_CPU_VS_EPOLL));
        goals.push(cpu(
            results,
            load,
            ServerKind::URING_BASELINE,
            MAX_CPU_VS_URING,
        ));
    }
    goals.push(rate(results));
    goals.extend(memory(results));
    goals
}

fn load_name((connections, size): (u32, u32)) -> String {
    format!("{connections} × {size} B")
}

fn syscalls(results: &Results) -> Goal {
    let per_request = |kind: ServerKind| {
        results
            .syscalls
            .as_ref()?
            .iter()
            .find(|r| r.server == kind.name())?
            .syscalls_per_request
    };
    let reference = ServerKind::URING_BASELINE;
    let subject = per_request(SUBJECT);
    let c_uring = per_request(reference);
    let measured = subject.map(|v| match c_uring {
        Some(c) => format!("{v:.3} ({} {c:.3})", reference.name()),
        None => format!("{v:.3} ({} not measured)", reference.name()),
    });
    Goal {
        figure: format!("system calls per request, {}", load_name(SYSCALL_POINT)),
        measured,
        target: format!("≤ {}'s and ≤ {MAX_SYSCALLS_PER_REQUEST}", reference.name()),
        met: subject
            .zip(c_uring)
            .map(|(v, c)| v <= c && v <= MAX_SYSCALLS_PER_REQUEST),
    }
}

/// The subject's summary at `load`, if that load ran.
fn at_load(
    results: &Results,
    (connections, size): (u32, u32),
) -> Option<&crate::compare::ServerSummary> {
    results
        .throughput
        .iter()
        .find(|p| p.connections == connections && p.size == size)?
        .servers
        .iter()
        .find(|s| s.server == SUBJECT.name())
}

fn cpu(results: &Results, load: (u32, u32), reference: ServerKind, most: f64) -> Goal {
    let ratio = at_load(results, load).and_then(|s| {
        if reference == ServerKind::BASELINE {
            s.cpu_per_request_vs_baseline
        } else {
            s.cpu_per_request_vs_uring_baseline
        }
    });
    Goal {
        figure: format!(
            "server CPU per request vs {}, {}",
            reference.name(),
            load_name(load)
        ),
        measured: ratio.map(|r| format!("{r:.3}×")),
        target: format!("≤ {most:.2}×"),
        met: ratio.map(|r| r <= most),
    }
}

fn rate(results: &Results) -> Goal {
    let reference = ServerKind::URING_BASELINE;
    let ratio = at_load(results, RATE_LOAD).and_then(|s| s.requests_per_sec_vs_uring_baseline);
    Goal {
        figure: format!(
            "requests/s vs {}, {}",
            reference.name(),
            load_name(RATE_LOAD)
        ),
        measured: ratio.map(|r| format!("{r:.3}×")),
        target: format!("≥ {MIN_RATE_VS_URING:.2}×"),
        met: ratio.map(|r| r >= MIN_RATE_VS_URING),
    }
}

/// One goal per idle-connection count the memory runs asked for.
fn memory(results: &Results) -> Vec<Goal> {
    let target = format!("≤ {MAX_IDLE_BYTES:.0} B");
    if results.settings.memory_counts.is_empty() {
        return vec![Goal {
            figure: "idle memory per connection".to_string(),
            measured: None,
            target,
            met: None,
        }];
    }
    let subject = results
        .memory
        .as_ref()
        .and_then(|m| m.iter().find(|r| r.server == SUBJECT.name()));
    results
        .settings
        .memory_counts
        .iter()
        .map(|&count| {
            let step = subject
                .and_then(|r| r.steps.iter().find(|s| s.requested == count))
                .filter(|s| s.reached > 0);
            Goal {
                figure: format!("idle memory per connection, {count} connections"),
                measured: step.map(|s| {
                    if s.reached == count {
                        format!("{:.0} B", s.bytes_per_connection)
                    } else {
                        format!("{:.0} B (reached {})", s.bytes_per_connection, s.reached)
                    }
                }),
                target: target.clone(),
                met: step.map(|s| s.bytes_per_connection <= MAX_IDLE_BYTES),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::compare::{PointResult, RunSettings, ServerSummary, Settings};
    use crate::environment::Environment;
    use crate::memory::{MemoryResult, MemoryStep};
    use crate::syscalls::SyscallResult;

    fn summary(
        server: &'static str,
        cpu_vs: (Option<f64>, Option<f64>),
        rate_vs_uring: Option<f64>,
    ) -> ServerSummary {
        ServerSummary {
            cpu_per_request_vs_baseline: cpu_vs.0,
            requests_per_sec_vs_uring_baseline: rate_vs_uring,
            cpu_per_request_vs_uring_baseline: cpu_vs.1,
            ..ServerSummary::new(server)
        }
    }

    fn syscall_row(server: &'static str, per_request: Option<f64>) -> SyscallResult {
        SyscallResult {
            server,
            requests: 1000,
            syscalls_per_request: per_request,
            instructions_per_request: None,
            error: None,
        }
    }

    fn results() -> Results {
        Results {
            environment: Environment::for_tests(),
            settings: Settings {
                runs: RunSettings {
                    rounds: 1,
                    warmup: Duration::ZERO,
                    duration: Duration::ZERO,
                    quick: true,
                },
                memory_counts: vec![1000],
                syscalls: true,
                instructions: false,
                instructions_duration: Duration::ZERO,
            },
            baseline: "c-epoll",
            uring_baseline: "c-uring",
            throughput: vec![
                PointResult {
                    connections: 50,
                    size: 128,
                    servers: vec![summary("evloop-uring", (Some(0.85), Some(1.02)), Some(1.1))],
                },
                PointResult {
                    connections: 500,
                    size: 128,
                    servers: vec![summary("evloop-uring", (Some(0.9), Some(0.95)), Some(0.97))],
                },
            ],
            memory: Some(vec![MemoryResult {
                server: "evloop-uring",
                baseline_rss_bytes: Some(1 << 20),
                steps: vec![MemoryStep {
                    requested: 1000,
                    reached: 1000,
                    rss_bytes: (1 << 20) + 40_000,
                    bytes_per_connection: 40.0,
                    note: None,
                }],
                error: None,
            }]),
            counters: None,
            syscalls: Some(vec![
                syscall_row("c-uring", Some(0.12)),
                syscall_row("evloop-uring", Some(0.11)),
            ]),
            instructions: None,
            c_uring_setup: None,
            goals: vec![],
        }
    }

    fn verdicts(goals: &[Goal]) -> Vec<(&str, Option<bool>)> {
        goals.iter().map(|g| (g.figure.as_str(), g.met)).collect()
    }

    #[test]
    fn every_goal_is_held_against_its_figure() {
        let goals = assess(&results());
        assert_eq!(
            verdicts(&goals),
            [
                ("system calls per request, 50 × 128 B", Some(true)),
                ("server CPU per request vs c-epoll, 50 × 128 B", Some(true)),
                ("server CPU per request vs c-uring, 50 × 128 B", Some(false)),
                ("server CPU per request vs c-epoll, 500 × 128 B", Some(true)),
                ("server CPU per request vs c-uring, 500 × 128 B", Some(true)),
                ("requests/s vs c-uring, 500 × 128 B", Some(false)),
                ("idle memory per connection, 1000 connections", Some(true)),
            ]
        );
        assert_eq!(goals[0].measured.as_deref(), Some("0.110 (c-uring 0.120)"));
        assert_eq!(goals[2].measured.as_deref(), Some("1.020×"));
        assert_eq!(goals[6].measured.as_deref(), Some("40 B"));
    }

    #[test]
    fn system_calls_must_beat_both_c_uring_and_the_bound() {
        let mut r = results();
        r.syscalls = Some(vec![
            syscall_row("c-uring", Some(0.5)),
            syscall_row("evloop-uring", Some(0.3)),
        ]);
        assert_eq!(syscalls(&r).met, Some(false), "0.3 > 0.2");
        r.syscalls = Some(vec![
            syscall_row("c-uring", Some(0.05)),
            syscall_row("evloop-uring", Some(0.1)),
        ]);
        assert_eq!(syscalls(&r).met, Some(false), "0.1 > c-uring's 0.05");
    }

    #[test]
    fn what_was_not_measured_is_said_not_guessed() {
        let mut r = results();
        r.throughput.clear();
        r.syscalls = None;
        r.memory = None;
        let goals = assess(&r);
        assert!(goals.iter().all(|g| g.met.is_none()), "{goals:?}");
        assert!(goals.iter().all(|g| g.verdict() == "not measured"));
        r.settings.memory_counts.clear();
        assert_eq!(
            assess(&r).last().map(|g| g.figure.as_str()),
            Some("idle memory per connection")
        );
    }
}
