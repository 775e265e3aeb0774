//! Per-loop counters, summed across loops in the shutdown report.

use std::fmt;

use crate::service::CloseReason;

/// What one loop did. Plain integers owned by the loop's thread: counting
/// costs an add, no atomic. Loops hand their counters over when they stop.
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
            " bytes_in={} bytes_out={} backpressure_pauses={} budget_pauses={} accept_errors={}",
            self.bytes_in,
            self.bytes_out,
            self.backpressure_pauses,
            self.budget_pauses,
            self.accept_errors
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
