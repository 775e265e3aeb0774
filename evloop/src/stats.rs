//! Per-loop counters: written by their loop alone, read by any thread
//! while the server runs ([`StatsHandle`](crate::StatsHandle)), summed
//! across loops in the shutdown report.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::service::CloseReason;

/// What one loop did: a snapshot of its counters, read while it runs or
/// handed over when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted (including those closed at once for the limit).
    pub accepted: u64,
    /// Connections closed, by [`CloseReason::index`].
    pub closed: [u64; CloseReason::ALL.len()],
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Times a connection's reading was paused because its output passed
    /// the high watermark.
    pub backpressure_pauses: u64,
    /// Times a connection stopped reading because the server's connections
    /// together held more than its buffer budget.
    pub budget_pauses: u64,
    /// `accept` calls that failed for lack of resources (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM) or otherwise.
    pub accept_errors: u64,
    /// Episodes of accepting paused after failures, retried with back-off
    /// (one per episode, however many accepts failed in it).
    pub accept_backoffs: u64,
    /// io_uring: times a connection's receive found the loop's provided
    /// buffers all in use (`ENOBUFS`) and was submitted again at the end of
    /// the turn, once they were back.
    pub recv_starved: u64,
    /// io_uring: turns in which the completion queue had overflowed (the
    /// kernel kept the completions that did not fit and delivered them
    /// next: nothing is lost, but the ring is too small for the load).
    pub cq_overflows: u64,
}

impl Counters {
    /// Connections closed for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    /// Connections closed for any reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.accepted += other.accepted;
        for (mine, theirs) in self.closed.iter_mut().zip(other.closed) {
            *mine += theirs;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.backpressure_pauses += other.backpressure_pauses;
        self.budget_pauses += other.budget_pauses;
        self.accept_errors += other.accept_errors;
        self.accept_backoffs += other.accept_backoffs;
        self.recv_starved += other.recv_starved;
        self.cq_overflows += other.cq_overflows;
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted={} closed={}",
            self.accepted,
            self.closed_total()
        )?;
        for reason in CloseReason::ALL {
            write!(f, " closed_{}={}", reason.name(), self.closed(reason))?;
        }
        write!(
            f,
            " bytes_in={} bytes_out={} backpressure_pauses={} budget_pauses={} accept_errors={} accept_backoffs={}",
            self.bytes_in,
            self.bytes_out,
            self.backpressure_pauses,
            self.budget_pauses,
            self.accept_errors,
            self.accept_backoffs
        )?;
        if self.recv_starved > 0 || self.cq_overflows > 0 {
            write!(
                f,
                " recv_starved={} cq_overflows={}",
                self.recv_starved, self.cq_overflows
            )?;
        }
        Ok(())
    }
}

/// A count one loop's thread writes and any thread reads. The writer is
/// alone, so an increment is a relaxed load and store (plain moves on
/// x86-64 and ARM), not a locked read-modify-write: counting costs what a
/// plain integer costs, and a reader sees each value whole.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`; only the owning loop's thread may call it (a second writer
    /// would lose updates).
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed).wrapping_add(n);
        self.0.store(value, Ordering::Relaxed);
    }

    /// Subtracts `n` (for gauges); the same rule as [`add`](Self::add).
    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        self.add(n.wrapping_neg());
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One loop's counters and gauges as it keeps them, on cache lines of their
/// own: a scrape reading them, or another loop's counting, never contends
/// with the loop's writes.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct LiveCounters {
    pub(crate) accepted: Counter,
    pub(crate) closed: [Counter; CloseReason::ALL.len()],
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) backpressure_pauses: Counter,
    pub(crate) budget_pauses: Counter,
    pub(crate) accept_errors: Counter,
    pub(crate) accept_backoffs: Counter,
    pub(crate) recv_starved: Counter,
    pub(crate) cq_overflows: Counter,
    /// Gauge: connections whose reading the loop paused (output past the
    /// high watermark, or the buffer budget) — not those their handler paused.
    pub(crate) paused: Counter,
    /// Gauge: bytes the loop's connections hold in their buffers, as last
    /// published (once per turn).
    pub(crate) buffered: Counter,
    /// Pings answered ([`StatsHandle::ping`](crate::StatsHandle::ping)).
    pub(crate) answered: Counter,
}

impl LiveCounters {
    /// The counters as they are now.
    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            accepted: self.accepted.get(),
            closed: std::array::from_fn(|i| self.closed[i].get()),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            backpressure_pauses: self.backpressure_pauses.get(),
            budget_pauses: self.budget_pauses.get(),
            accept_errors: self.accept_errors.get(),
            accept_backoffs: self.accept_backoffs.get(),
            recv_starved: self.recv_starved.get(),
            cq_overflows: self.cq_overflows.get(),
        }
    }

    /// The counters and gauges as they are now.
    pub(crate) fn stats(&self) -> LoopStats {
        let counters = self.snapshot();
        LoopStats {
            // `closed` is read after `accepted`: a connection that came and
            // went between the reads must not make the count negative.
            open: counters.accepted.saturating_sub(counters.closed_total()),
            counters,
            paused: self.paused.get(),
            buffered: self.buffered.get(),
            answered: self.answered.get(),
        }
    }
}

/// One loop as a [`StatsHandle`](crate::StatsHandle) sees it while the
/// server runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopStats {
    /// What the loop has done since it started.
    pub counters: Counters,
    /// Connections the loop serves now (accepted and not yet closed,
    /// including those draining or lingering).
    pub open: u64,
    /// Connections whose reading the loop has paused now: their output is
    /// past the high watermark, or the server is past its buffer budget.
    pub paused: u64,
    /// Bytes the loop's connections hold in their buffers (capacity).
    pub buffered: u64,
    /// Pings the loop has answered ([`StatsHandle::ping`](crate::StatsHandle::ping)):
    /// a loop that stops answering is stuck (a handler that never
    /// returns, say), whatever its other counters say.
    pub answered: u64,
}
