//! `evloop serve --metrics ADDR`: the running server's figures for
//! Prometheus, and a readiness probe.
//!
//! - [`Endpoint`] answers `GET /metrics` (the text exposition format,
//!   written with an [`Exposition`]) and `GET /ready` (200 while the server is
//!   [`State::Serving`], 503 otherwise) on a thread of its own.
//! - A [`Registry`] renders a scrape from its [`Source`]s, in the order
//!   they were added. Nothing is gathered between scrapes: the loops keep
//!   their counters ([`StatsHandle`]), and a scrape reads them.
//!
//! # Adding families
//!
//! Whatever keeps figures (a layer, a service) adds a source: a closure
//! that writes its families into the scrape. Each family name must be
//! written by one source only. A PROXY-protocol layer that counts the
//! headers it rejects, for instance, would add:
//!
//! ```ignore
//! registry.add(move |out: &mut Exposition| {
//!     let mut family = out.family(
//!         "evloop_proxy_header_rejected_total",
//!         Kind::Counter,
//!         "PROXY protocol headers rejected, by reason.",
//!     );
//!     for (reason, count) in proxy_stats.rejected() {
//!         family.sample(&[("reason", reason.name())], count);
//!     }
//! });
//! ```

mod endpoint;
mod exposition;
#[cfg(target_os = "linux")]
mod process;

use evloop::proxy::{ProxyStats, RejectReason};
use evloop::tls::{FailReason, TlsStats};
use evloop::{CloseReason, LoopStats, State, StatsHandle};
use evloop_http::Http;

pub use endpoint::Endpoint;
pub use exposition::{Exposition, Kind};

use crate::log::LogQueue;

/// Writes some families into a scrape; called on every scrape, from the
/// endpoint's thread.
pub type Source = Box<dyn Fn(&mut Exposition) + Send + Sync>;

/// What a scrape is made of: its sources, in order.
#[derive(Default)]
pub struct Registry {
    sources: Vec<Source>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl Registry {
    /// A registry with no sources: its scrape is empty.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds `source`, whose families follow those of the sources before it.
    pub fn add(&mut self, source: impl Fn(&mut Exposition) + Send + Sync + 'static) {
        self.sources.push(Box::new(source));
    }

    /// Adds `sources`, in order, after those already added.
    pub fn extend(&mut self, sources: impl IntoIterator<Item = Source>) {
        self.sources.extend(sources);
    }

    /// The scrape's text.
    pub fn render(&self) -> String {
        let mut out = Exposition::new();
        for source in &self.sources {
            source(&mut out);
        }
        out.into_text()
    }
}

/// The families every `evloop serve` has: the server's (see [`server`]),
/// the log's dropped lines and, on Linux, the process's (`process_*`).
pub fn standard(stats: StatsHandle, driver: String, loops: usize, log: LogQueue) -> Registry {
    let mut registry = Registry::new();
    registry.add(server(stats, driver, loops));
    registry.add(move |out: &mut Exposition| {
        out.family(
            "evloop_log_lines_dropped_total",
            Kind::Counter,
            "Log lines dropped because the log (standard error) was too slow or closed.",
        )
        .sample(&[], log.dropped());
    });
    #[cfg(target_os = "linux")]
    registry.add(process::render);
    registry
}

/// The http service's families: its access log's dropped lines, if it has
/// an access log (none otherwise).
pub fn http(http: Http) -> impl Fn(&mut Exposition) + Send + Sync + 'static {
    move |out: &mut Exposition| {
        if let Some(dropped) = http.access_log_dropped() {
            out.family(
                "evloop_http_access_log_lines_dropped_total",
                Kind::Counter,
                "Access log lines lost because the writer fell behind or a write failed.",
            )
            .sample(&[], dropped);
        }
    }
}

/// The PROXY protocol layer's families: headers taken by command, and
/// connections refused by reason.
pub fn proxy(stats: ProxyStats) -> impl Fn(&mut Exposition) + Send + Sync + 'static {
    move |out: &mut Exposition| {
        let counts = stats.snapshot();
        out.family(
            "evloop_proxy_headers_total",
            Kind::Counter,
            "PROXY protocol headers taken, by command: proxy (the client named), local (the proxy's health checks), unknown.",
        )
        .sample(&[("command", "proxy")], counts.proxied)
        .sample(&[("command", "local")], counts.local)
        .sample(&[("command", "unknown")], counts.unknown);
        let mut rejected = out.family(
            "evloop_proxy_header_rejected_total",
            Kind::Counter,
            "Connections closed for want of a valid PROXY protocol header, by reason.",
        );
        for reason in RejectReason::ALL {
            rejected.sample(&[("reason", reason.name())], counts.rejected(reason));
        }
    }
}

/// The TLS layer's families: handshakes completed, full or resumed, and
/// handshakes failed by reason.
pub fn tls(stats: TlsStats) -> impl Fn(&mut Exposition) + Send + Sync + 'static {
    move |out: &mut Exposition| {
        let counts = stats.snapshot();
        out.family(
            "evloop_tls_handshakes_total",
            Kind::Counter,
            "TLS handshakes completed, by result: full (a new session) or resumed (a session ticket or id).",
        )
        .sample(&[("result", "full")], counts.full)
        .sample(&[("result", "resumed")], counts.resumed);
        let mut failed = out.family(
            "evloop_tls_handshake_failures_total",
            Kind::Counter,
            "TLS handshakes failed, by reason: the connection was closed without reaching the service.",
        );
        for reason in FailReason::ALL {
            failed.sample(&[("reason", reason.name())], counts.failed(reason));
        }
    }
}

/// A family kept by every loop: served in total (`evloop_NAME`) and per
/// loop (`evloop_loop_NAME{loop="N"}`).
struct PerLoop {
    total: &'static str,
    per_loop: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&LoopStats) -> u64,
}

/// The loops' families, but for connections closed (which has a label of
/// its own).
const PER_LOOP: &[PerLoop] = &[
    PerLoop {
        total: "evloop_connections_accepted_total",
        per_loop: "evloop_loop_connections_accepted_total",
        kind: Kind::Counter,
        help: "Connections accepted (including those closed at once for the connection limit).",
        value: |s| s.counters.accepted,
    },
    PerLoop {
        total: "evloop_connections_open",
        per_loop: "evloop_loop_connections_open",
        kind: Kind::Gauge,
        help: "Connections open now (accepted and not yet closed, draining or lingering ones included).",
        value: |s| s.open,
    },
    PerLoop {
        total: "evloop_bytes_received_total",
        per_loop: "evloop_loop_bytes_received_total",
        kind: Kind::Counter,
        help: "Bytes read from clients.",
        value: |s| s.counters.bytes_in,
    },
    PerLoop {
        total: "evloop_bytes_sent_total",
        per_loop: "evloop_loop_bytes_sent_total",
        kind: Kind::Counter,
        help: "Bytes written to clients.",
        value: |s| s.counters.bytes_out,
    },
    PerLoop {
        total: "evloop_buffered_bytes",
        per_loop: "evloop_loop_buffered_bytes",
        kind: Kind::Gauge,
        help: "Bytes the connections hold in their buffers now (capacity).",
        value: |s| s.buffered,
    },
    PerLoop {
        total: "evloop_connections_paused",
        per_loop: "evloop_loop_connections_paused",
        kind: Kind::Gauge,
        help: "Connections whose reading the server has paused now (output past the high watermark, or the buffer budget spent).",
        value: |s| s.paused,
    },
    PerLoop {
        total: "evloop_backpressure_pauses_total",
        per_loop: "evloop_loop_backpressure_pauses_total",
        kind: Kind::Counter,
        help: "Times a connection's reading was paused because its output passed the high watermark.",
        value: |s| s.counters.backpressure_pauses,
    },
    PerLoop {
        total: "evloop_budget_pauses_total",
        per_loop: "evloop_loop_budget_pauses_total",
        kind: Kind::Counter,
        help: "Times a connection stopped reading because the connections together held more than the buffer budget.",
        value: |s| s.counters.budget_pauses,
    },
    PerLoop {
        total: "evloop_accept_errors_total",
        per_loop: "evloop_loop_accept_errors_total",
        kind: Kind::Counter,
        help: "Accept calls that failed (out of descriptors or memory, or otherwise).",
        value: |s| s.counters.accept_errors,
    },
    PerLoop {
        total: "evloop_accept_backoffs_total",
        per_loop: "evloop_loop_accept_backoffs_total",
        kind: Kind::Counter,
        help: "Episodes of accepting paused after failures and retried with back-off.",
        value: |s| s.counters.accept_backoffs,
    },
    PerLoop {
        total: "evloop_uring_recv_starved_total",
        per_loop: "evloop_loop_uring_recv_starved_total",
        kind: Kind::Counter,
        help: "io_uring: receives that found the provided buffers all in use and were submitted again (0 on epoll and kqueue).",
        value: |s| s.counters.recv_starved,
    },
    PerLoop {
        total: "evloop_uring_cq_overflows_total",
        per_loop: "evloop_loop_uring_cq_overflows_total",
        kind: Kind::Counter,
        help: "io_uring: turns in which the completion queue had overflowed; nothing is lost, but the ring is too small for the load (0 on epoll and kqueue).",
        value: |s| s.counters.cq_overflows,
    },
];

/// The server's families: what it is (`evloop_build_info`,
/// `evloop_driver_info`, `evloop_loops`), where it is in its life
/// (`evloop_state`), and what its loops did, in total and per loop.
pub fn server(
    stats: StatsHandle,
    driver: String,
    loops: usize,
) -> impl Fn(&mut Exposition) + Send + Sync + 'static {
    move |out: &mut Exposition| {
        let mut labels = vec![("version", env!("CARGO_PKG_VERSION"))];
        if let Some(commit) = crate::version::COMMIT {
            labels.push(("revision", commit));
        }
        out.family(
            "evloop_build_info",
            Kind::Gauge,
            "Always 1: the version of evloop serving, and the commit it was built from.",
        )
        .sample(&labels, 1_u64);
        out.family(
            "evloop_driver_info",
            Kind::Gauge,
            "Always 1: the I/O driver the loops run on, as the start-up log names it.",
        )
        .sample(&[("driver", &driver)], 1_u64);
        out.family(
            "evloop_loops",
            Kind::Gauge,
            "Event loops (threads) serving.",
        )
        .sample(&[], loops);
        let now = stats.state();
        let mut family = out.family(
            "evloop_state",
            Kind::Gauge,
            "1 for the server's state now (bound, serving, draining, stopped), 0 for the others.",
        );
        for state in State::ALL {
            family.sample(&[("state", state.name())], state == now);
        }
        write_loops(out, &stats.loops());
    }
}

/// The per-loop families and their totals, from one reading of the loops
/// (so that the loops' series sum to the totals).
fn write_loops(out: &mut Exposition, loops: &[LoopStats]) {
    let names: Vec<String> = (0..loops.len()).map(|i| i.to_string()).collect();
    for family in PER_LOOP {
        let total: u64 = loops.iter().map(family.value).sum();
        out.family(family.total, family.kind, family.help)
            .sample(&[], total);
        let mut per_loop = out.family(family.per_loop, family.kind, family.help);
        for (name, stats) in names.iter().zip(loops) {
            per_loop.sample(&[("loop", name)], (family.value)(stats));
        }
    }
    let help =
        "Connections closed, by reason (peer, reset, idle, limit, shutdown, error, service).";
    let mut total = out.family("evloop_connections_closed_total", Kind::Counter, help);
    for reason in CloseReason::ALL {
        let closed: u64 = loops.iter().map(|s| s.counters.closed(reason)).sum();
        total.sample(&[("reason", reason.name())], closed);
    }
    let mut per_loop = out.family("evloop_loop_connections_closed_total", Kind::Counter, help);
    for (name, stats) in names.iter().zip(loops) {
        for reason in CloseReason::ALL {
            per_loop.sample(
                &[("loop", name), ("reason", reason.name())],
                stats.counters.closed(reason),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_served_in_total_and_each_with_its_label() {
        let mut one = LoopStats::default();
        one.counters.accepted = 3;
        one.counters.bytes_in = 10;
        one.counters.closed[CloseReason::Peer.index()] = 2;
        one.open = 1;
        let mut two = LoopStats::default();
        two.counters.accepted = 4;
        two.counters.bytes_in = 5;
        two.counters.closed[CloseReason::Idle.index()] = 4;
        let mut out = Exposition::new();
        write_loops(&mut out, &[one, two]);
        let text = out.into_text();
        for line in [
            "evloop_connections_accepted_total 7",
            "evloop_loop_connections_accepted_total{loop=\"0\"} 3",
            "evloop_loop_connections_accepted_total{loop=\"1\"} 4",
            "evloop_bytes_received_total 15",
            "evloop_connections_open 1",
            "evloop_loop_connections_open{loop=\"1\"} 0",
            "evloop_connections_closed_total{reason=\"peer\"} 2",
            "evloop_connections_closed_total{reason=\"idle\"} 4",
            "evloop_connections_closed_total{reason=\"reset\"} 0",
            "evloop_loop_connections_closed_total{loop=\"1\",reason=\"idle\"} 4",
            "# TYPE evloop_uring_cq_overflows_total counter",
            "# TYPE evloop_loop_buffered_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn sources_render_in_the_order_added() {
        let mut registry = Registry::new();
        assert_eq!(registry.render(), "");
        registry.add(|out: &mut Exposition| {
            out.family("first_total", Kind::Counter, "First.")
                .sample(&[], 1_u64);
        });
        registry.add(|out: &mut Exposition| {
            out.family("second", Kind::Gauge, "Second.")
                .sample(&[], 2_u64);
        });
        let text = registry.render();
        assert!(
            text.find("first_total 1").unwrap() < text.find("second 2").unwrap(),
            "{text}"
        );
    }
}
