//! Idle deadlines: a min-heap of `(deadline, key, generation)` re-armed lazily.
//!
//! Why not a timer wheel: a connection's activity does not touch this
//! structure at all. The reactor stamps the connection with the loop's clock
//! (one store); only when an entry falls due does the reactor look at the
//! stamp and either close the connection or push one new entry for the rest
//! of its idle period. So each connection causes one heap operation per idle
//! period, not per event, and a wheel's O(1) insert would buy nothing while
//! costing a tick granularity and memory per slot. Pure data: no syscalls.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A pending deadline for the connection `key`, valid while the connection in
/// that slot still has `generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline {
    pub(crate) at: Instant,
    pub(crate) key: usize,
    pub(crate) generation: u32,
}

/// Deadlines in order of expiry.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Deadline>>,
}

impl Timers {
    pub(crate) fn insert(&mut self, deadline: Deadline) {
        self.heap.push(Reverse(deadline));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Removes and returns a deadline that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Deadline> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the deadlines `live` rejects (those of closed connections).
    pub(crate) fn retain(&mut self, mut live: impl FnMut(&Deadline) -> bool) {
        self.heap.retain(|Reverse(d)| live(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            timers.insert(Deadline {
                at: t0 + Duration::from_millis(ms),
                key: i,
                generation: 0,
            });
        }
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(5)), None);
        let due: Vec<_> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_millis(25)))
            .map(|d| d.key)
            .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(30)));
        timers.retain(|d| d.key != 0);
        assert_eq!(timers.len(), 0);
    }
}
