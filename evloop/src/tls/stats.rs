//! What the TLS layer counts: handshakes completed, full or resumed, and
//! handshakes failed, by reason.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a TLS handshake failed: the connection was closed without reaching
/// the service it wraps. Each reason has its own counter in
/// [`TlsCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailReason {
    /// The first bytes are not a TLS handshake record: garbage, a plain
    /// HTTP request sent to a TLS port, an SSLv2-style hello.
    NotTls,
    /// The client offers only protocol versions the server does not speak
    /// (SSLv3, TLS 1.0, TLS 1.1): answered with a `protocol_version`
    /// alert.
    ProtocolVersion,
    /// A TLS client with nothing else in common with the server: no shared
    /// cipher suite, key exchange group or signature scheme, or none of
    /// the application protocols (ALPN) the server serves.
    Incompatible,
    /// The client refused the handshake with an alert of its own (e.g. it
    /// does not trust the certificate: `unknown_ca`, `bad_certificate`).
    Alert,
    /// A TLS client that broke the protocol: a malformed or unexpected
    /// handshake message, a bad record, a failed check.
    Invalid,
    /// The handshake did not complete within the handshake timeout (or the
    /// server's idle timeout, if shorter): a client that stops in the
    /// middle, or never starts.
    Timeout,
    /// The client ended the connection (closed its side, or reset it) in
    /// the middle of the handshake.
    Truncated,
    /// The client ended the connection before sending a byte: a port probe,
    /// a health check that only connects.
    Empty,
}

impl FailReason {
    /// Every reason, in the order of [`FailReason::index`].
    pub const ALL: [FailReason; 8] = [
        FailReason::NotTls,
        FailReason::ProtocolVersion,
        FailReason::Incompatible,
        FailReason::Alert,
        FailReason::Invalid,
        FailReason::Timeout,
        FailReason::Truncated,
        FailReason::Empty,
    ];

    /// A dense index, for tables of per-reason counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, as used in logs (and fit for a metric's
    /// label).
    pub const fn name(self) -> &'static str {
        match self {
            FailReason::NotTls => "not_tls",
            FailReason::ProtocolVersion => "protocol_version",
            FailReason::Incompatible => "incompatible",
            FailReason::Alert => "alert",
            FailReason::Invalid => "invalid",
            FailReason::Timeout => "timeout",
            FailReason::Truncated => "truncated",
            FailReason::Empty => "empty",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A handle to the counters of one [`Tls`](super::Tls) service, shared by
/// every loop that serves it: clone it, keep it, and read it from any
/// thread, before, while and after the server runs.
///
/// Each connection touches it once, when its handshake completes or fails
/// (a relaxed atomic addition), never per byte. For a metrics endpoint,
/// [`snapshot`](Self::snapshot) maps onto two counters:
///
/// * `evloop_tls_handshakes_total{result="full"|"resumed"}` —
///   [`TlsCounters::full`], [`resumed`](TlsCounters::resumed);
/// * `evloop_tls_handshake_failures_total{reason}` — one series per
///   [`FailReason::ALL`], labelled with [`FailReason::name`], valued
///   [`TlsCounters::failed`].
#[derive(Clone, Debug, Default)]
pub struct TlsStats {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    full: AtomicU64,
    resumed: AtomicU64,
    failed: [AtomicU64; FailReason::ALL.len()],
}

impl TlsStats {
    /// The counts now. Each is exact; taken one after another while
    /// connections come, they need not add up to a single instant.
    pub fn snapshot(&self) -> TlsCounters {
        let c = &*self.counts;
        TlsCounters {
            full: c.full.load(Ordering::Relaxed),
            resumed: c.resumed.load(Ordering::Relaxed),
            failed: c.failed.each_ref().map(|n| n.load(Ordering::Relaxed)),
        }
    }

    pub(super) fn count_completed(&self, resumed: bool) {
        let counter = if resumed {
            &self.counts.resumed
        } else {
            &self.counts.full
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_failed(&self, reason: FailReason) {
        self.counts.failed[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// What a [`TlsStats`] counted, at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsCounters {
    /// Handshakes completed in full: a new session.
    pub full: u64,
    /// Handshakes completed by resuming an earlier session (a session
    /// ticket, or a TLS 1.2 session id).
    pub resumed: u64,
    failed: [u64; FailReason::ALL.len()],
}

impl TlsCounters {
    /// Handshakes failed for `reason`.
    pub fn failed(&self, reason: FailReason) -> u64 {
        self.failed[reason.index()]
    }

    /// Handshakes failed, for any reason.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Handshakes completed: full and resumed.
    pub fn completed(&self) -> u64 {
        self.full + self.resumed
    }
}

impl fmt::Display for TlsCounters {
    /// `5 handshakes (1 resumed), 3 failed (not_tls 2, timeout 1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} handshakes ({} resumed), {} failed",
            self.completed(),
            self.resumed,
            self.failed_total()
        )?;
        let mut reasons = FailReason::ALL
            .into_iter()
            .filter(|&r| self.failed(r) > 0)
            .peekable();
        if reasons.peek().is_some() {
            f.write_str(" (")?;
            for (i, reason) in reasons.enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{reason} {}", self.failed(reason))?;
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
        let stats = TlsStats::default();
        let shared = stats.clone();
        shared.count_completed(false);
        shared.count_completed(true);
        shared.count_failed(FailReason::NotTls);
        shared.count_failed(FailReason::NotTls);
        shared.count_failed(FailReason::Timeout);
        let now = stats.snapshot();
        assert_eq!(now.completed(), 2);
        assert_eq!(now.failed(FailReason::NotTls), 2);
        assert_eq!(now.failed_total(), 3);
        assert_eq!(
            now.to_string(),
            "2 handshakes (1 resumed), 3 failed (not_tls 2, timeout 1)"
        );
        assert_eq!(
            TlsCounters::default().to_string(),
            "0 handshakes (0 resumed), 0 failed"
        );
    }

    #[test]
    fn reasons_are_indexed_densely() {
        for (i, reason) in FailReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
