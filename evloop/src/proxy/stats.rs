//! What the PROXY protocol layer counts: headers taken, by what they said,
//! and connections refused, by reason.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection that had to start with a PROXY protocol header was
/// closed without being served. Each reason has its own counter in
/// [`ProxyCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The first bytes are not a PROXY protocol signature: plain HTTP, TLS,
    /// garbage — a client that reached the listener without the proxy.
    NotProxy,
    /// A PROXY signature followed by what the specification does not
    /// allow: bad v1 syntax, an address of the wrong family, a port out of
    /// range, a v2 length too short for its addresses, TLVs that do not
    /// fill the header.
    Malformed,
    /// A header of a version, command, address family or transport this
    /// server does not take: a v2 version other than 2, a command other
    /// than `LOCAL` or `PROXY`, a datagram transport, an unknown family, a
    /// v1 protocol other than `TCP4`, `TCP6` or `UNKNOWN`.
    Unsupported,
    /// Longer than allowed: no CRLF in a v1 header's 107 bytes, or a v2
    /// header longer than the limit.
    TooLong,
    /// The whole header did not arrive within the header timeout (or the
    /// server's idle timeout, if shorter).
    Timeout,
    /// The client ended the connection (closed its side, or reset it) in
    /// the middle of a header.
    Truncated,
    /// The client ended the connection before sending a byte: a port
    /// probe, or a health check that sends no header.
    Empty,
}

impl RejectReason {
    /// Every reason, in the order of [`RejectReason::index`].
    pub const ALL: [RejectReason; 7] = [
        RejectReason::NotProxy,
        RejectReason::Malformed,
        RejectReason::Unsupported,
        RejectReason::TooLong,
        RejectReason::Timeout,
        RejectReason::Truncated,
        RejectReason::Empty,
    ];

    /// A dense index, for tables of per-reason counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, as used in logs (and fit for a metric's
    /// label).
    pub const fn name(self) -> &'static str {
        match self {
            RejectReason::NotProxy => "not_proxy",
            RejectReason::Malformed => "malformed",
            RejectReason::Unsupported => "unsupported",
            RejectReason::TooLong => "too_long",
            RejectReason::Timeout => "timeout",
            RejectReason::Truncated => "truncated",
            RejectReason::Empty => "empty",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A handle to the counters of one [`ProxyProtocol`](super::ProxyProtocol)
/// service, shared by every loop that serves it: clone it, keep it, and
/// read it from any thread, before, while and after the server runs.
///
/// Each connection touches it once, when its header is taken or refused
/// (a relaxed atomic addition), never per byte. For a metrics endpoint,
/// [`snapshot`](Self::snapshot) maps onto two counters:
///
/// * `evloop_proxy_headers_total{command="proxy"|"local"|"unknown"}` —
///   [`ProxyCounters::proxied`], [`local`](ProxyCounters::local),
///   [`unknown`](ProxyCounters::unknown);
/// * `evloop_proxy_header_rejected_total{reason}` — one series per
///   [`RejectReason::ALL`], labelled with [`RejectReason::name`], valued
///   [`ProxyCounters::rejected`].
#[derive(Clone, Debug, Default)]
pub struct ProxyStats {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    proxied: AtomicU64,
    local: AtomicU64,
    unknown: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

impl ProxyStats {
    /// The counts now. Each is exact; taken one after another while
    /// connections come, they need not add up to a single instant.
    pub fn snapshot(&self) -> ProxyCounters {
        let c = &*self.counts;
        ProxyCounters {
            proxied: c.proxied.load(Ordering::Relaxed),
            local: c.local.load(Ordering::Relaxed),
            unknown: c.unknown.load(Ordering::Relaxed),
            rejected: c.rejected.each_ref().map(|n| n.load(Ordering::Relaxed)),
        }
    }

    pub(super) fn count_proxied(&self) {
        self.counts.proxied.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_local(&self) {
        self.counts.local.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_unknown(&self) {
        self.counts.unknown.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_rejected(&self, reason: RejectReason) {
        self.counts.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// What a [`ProxyStats`] counted, at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyCounters {
    /// Headers that named the client (v1 `TCP4`/`TCP6`, v2 `PROXY` with
    /// addresses): the connection was served as the client's.
    pub proxied: u64,
    /// v2 `LOCAL` headers (the proxy's health checks): served as the
    /// proxy's own connections.
    pub local: u64,
    /// v1 `UNKNOWN` and v2 `PROXY` with `AF_UNSPEC`: served as the proxy's
    /// connections, the client being unknown.
    pub unknown: u64,
    rejected: [u64; RejectReason::ALL.len()],
}

impl ProxyCounters {
    /// Connections refused for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }

    /// Connections refused, for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Headers taken: proxied, local and unknown.
    pub fn accepted(&self) -> u64 {
        self.proxied + self.local + self.unknown
    }
}

impl fmt::Display for ProxyCounters {
    /// `5 proxied, 1 local, 0 unknown, 3 rejected (not_proxy 2, timeout 1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} proxied, {} local, {} unknown, {} rejected",
            self.proxied,
            self.local,
            self.unknown,
            self.rejected_total()
        )?;
        let mut reasons = RejectReason::ALL
            .into_iter()
            .filter(|&r| self.rejected(r) > 0)
            .peekable();
        if reasons.peek().is_some() {
            f.write_str(" (")?;
            for (i, reason) in reasons.enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{reason} {}", self.rejected(reason))?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_by_reason() {
        let stats = ProxyStats::default();
        let shared = stats.clone();
        shared.count_proxied();
        shared.count_proxied();
        shared.count_local();
        shared.count_rejected(RejectReason::NotProxy);
        shared.count_rejected(RejectReason::NotProxy);
        shared.count_rejected(RejectReason::Timeout);
        let now = stats.snapshot();
        assert_eq!(now.accepted(), 3);
        assert_eq!(now.rejected(RejectReason::NotProxy), 2);
        assert_eq!(now.rejected_total(), 3);
        assert_eq!(
            now.to_string(),
            "2 proxied, 1 local, 0 unknown, 3 rejected (not_proxy 2, timeout 1)"
        );
        assert_eq!(
            ProxyCounters::default().to_string(),
            "0 proxied, 0 local, 0 unknown, 0 rejected"
        );
    }

    #[test]
    fn reasons_are_indexed_densely() {
        for (i, reason) in RejectReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
