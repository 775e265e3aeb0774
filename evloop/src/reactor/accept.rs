//! Accepting: the accept loop, the connection limit and its grace,
//! hand-off to the least loaded loop, and back-off when descriptors run out.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::conn::{Conn, Core, Flags};
use super::{Command, LoopHandle, LoopIo, Reactor, Step, contain_panic, listener_token};
use crate::Address;
use crate::net::{self, Outcome};
use crate::poll::{self, Interest, Token};
use crate::service::{CloseReason, Service};

/// Connections accepted per listener per turn before other work is served.
pub(super) const ACCEPT_BUDGET: usize = 128;
/// The first and the longest pause after `accept` ran out of resources.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a newcomer waits in the backlog for a connection slot before it
/// is refused. Slots of connections whose clients have already gone are
/// freed within a turn of their loop; this covers a loop that was not
/// running for a moment, not a server that is really full.
const LIMIT_GRACE: Duration = Duration::from_millis(250);

pub(super) struct Listener {
    pub(super) socket: net::Listener,
    /// Its connections go to the least loaded loop, not only this one.
    pub(super) handoff: bool,
    /// Connections may wait in its backlog: accept until `WouldBlock`.
    pub(super) ready: bool,
    /// Completion driver: its multishot accept is in flight.
    #[cfg(target_os = "linux")]
    pub(super) armed: bool,
}

/// A pause of accepting after `accept` ran out of resources.
pub(super) struct AcceptPause {
    pub(super) until: Instant,
    pub(super) backoff: Duration,
    pub(super) since: Instant,
    pub(super) failures: u64,
}

impl<S: Service> Reactor<S> {
    // ---- accepting -------------------------------------------------------

    pub(super) fn accept(&mut self, i: usize, budget: usize) {
        for _ in 0..budget {
            if !self.may_accept() {
                return; // the listener stays ready: a freed slot resumes it
            }
            match net::accept(&self.listeners[i].socket) {
                // While descriptors stay scarce, a close lets one accept
                // through and the next fails: that is still one episode.
                Outcome::Done((fd, peer)) => self.admit(fd, peer, self.listeners[i].handoff),
                Outcome::WouldBlock => {
                    // The backlog is empty: if accepting had been failing,
                    // it has recovered; nobody waits for a slot.
                    self.end_accept_pause();
                    self.end_limit_wait();
                    self.listeners[i].ready = false;
                    return;
                }
                // The client gave up before we accepted it.
                Outcome::Reset(_) => {}
                Outcome::Failed(e) => {
                    self.counters.accept_errors.add(1);
                    self.pause_accepting(&e);
                    return;
                }
            }
        }
    }

    pub(super) fn slot_free(&self) -> bool {
        self.shared.active.load(Ordering::SeqCst) < self.shared.config.max_connections
    }

    /// Whether to take a connection from the backlog now: a slot is free,
    /// or the newcomers have waited `LIMIT_GRACE` for one and are to be
    /// refused. At the limit, the connections this loop has just accepted
    /// are served first, and those whose clients have gone free their slots:
    /// a client that closes and reconnects at once is not refused because
    /// its last connection was not yet retired.
    pub(super) fn may_accept(&mut self) -> bool {
        if self.slot_free() {
            self.end_limit_wait();
            return true;
        }
        let waited = *self.limit_wait.get_or_insert(self.clock.now + LIMIT_GRACE);
        if waited <= self.clock.now {
            return true; // `admit` refuses it
        }
        // Asks loops that free a slot to wake this one, then looks again:
        // a slot freed before the request was seen would wake nobody.
        let handle = &self.shared.loops[self.index];
        if !handle.wants_slot.swap(true, Ordering::SeqCst) {
            self.shared.slot_waiters.fetch_add(1, Ordering::SeqCst);
        }
        if self.slot_free() {
            self.end_limit_wait();
            return true;
        }
        false
    }

    /// Ends a wait for a slot, if one is on: withdraws the request to be
    /// woken. Costs nothing otherwise (it is called on every accept).
    pub(super) fn end_limit_wait(&mut self) {
        if self.limit_wait.take().is_none() {
            return; // `wants_slot` is set only during a wait
        }
        if self.shared.loops[self.index]
            .wants_slot
            .swap(false, Ordering::SeqCst)
        {
            self.shared.slot_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Counts a freshly accepted connection against the server-wide limit,
    /// then serves it here or, with `handoff`, hands it to the least loaded
    /// loop.
    pub(super) fn admit(&mut self, fd: OwnedFd, peer: Address, handoff: bool) {
        let max = self.shared.config.max_connections;
        if self.shared.active.fetch_add(1, Ordering::AcqRel) >= max {
            self.shared.active.fetch_sub(1, Ordering::AcqRel);
            self.counters.accepted.add(1);
            self.counters.closed[CloseReason::Limit.index()].add(1);
            debug!(
                %peer,
                max, "connection limit reached: closing new connection"
            );
            return; // dropping `fd` closes it
        }
        let target = if handoff {
            least_loaded(&self.shared.loops, self.index)
        } else {
            self.index
        };
        // Counted on the target before it gets there, so that the next
        // choice sees it.
        self.shared.loops[target]
            .load
            .fetch_add(1, Ordering::Relaxed);
        if target == self.index {
            self.adopt(fd, peer);
        } else if !self.shared.loops[target].send(Command::Adopt(fd, peer)) {
            // The target has exited (shutdown was forced, or it failed): the
            // connection is closed with the command; undo its counts.
            self.shared.active.fetch_sub(1, Ordering::AcqRel);
            self.shared.loops[target]
                .load
                .fetch_sub(1, Ordering::Relaxed);
            self.counters.accepted.add(1);
            self.counters.closed[CloseReason::Shutdown.index()].add(1);
            self.cut += 1;
        }
    }

    /// Starts serving an accepted connection already counted in `active`
    /// and in this loop's load.
    pub(super) fn adopt(&mut self, socket: OwnedFd, peer: Address) {
        self.counters.accepted.add(1);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let registered = match &self.io {
            LoopIo::Readiness(poller) => poller.register(&socket, Token(key), Interest::READABLE),
            // The receive is submitted when the connection is settled.
            #[cfg(target_os = "linux")]
            LoopIo::Completion(_) => Ok(()),
        };
        if let Err(e) = registered {
            warn!("registering connection from {peer}: {e}");
            self.counters.closed[CloseReason::Error.index()].add(1);
            self.release_slot();
            return;
        }
        let Some(handler) = contain_panic("Service::open", || self.service.open(&peer)) else {
            self.counters.closed[CloseReason::Error.index()].add(1);
            self.release_slot();
            return;
        };
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let mut core = Core::new(socket, generation, self.clock.tick());
        // A fresh socket takes output; on kqueue, which does not report
        // urgent data, a read must never stop short of `WouldBlock`.
        core.flags.set(Flags::WRITE_READY, true);
        core.flags
            .set(Flags::READ_TO_BLOCK, !poll::REPORTS_URGENT_DATA);
        core.flags.set(Flags::RECV_ONESHOT, peer.inet().is_none());
        entry.insert(Conn { core, handler });
        self.feed(key, Step::Opened(&peer));
    }

    /// Forgets one connection in the server-wide and per-loop counts, and
    /// wakes the loops waiting for its slot.
    pub(super) fn release_slot(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
        self.shared.loops[self.index]
            .load
            .fetch_sub(1, Ordering::Relaxed);
        if self.shared.slot_waiters.load(Ordering::SeqCst) > 0 {
            for (i, handle) in self.shared.loops.iter().enumerate() {
                if i != self.index && handle.wants_slot.swap(false, Ordering::SeqCst) {
                    self.shared.slot_waiters.fetch_sub(1, Ordering::SeqCst);
                    handle.wake();
                }
            }
        }
    }

    pub(super) fn pause_accepting(&mut self, error: &io::Error) {
        let counters = &self.counters;
        let pause = self.accept_pause.get_or_insert_with(|| {
            counters.accept_backoffs.add(1);
            warn!(
                loop_index = self.index,
                "accept failed: {error}; pausing accepts and retrying with backoff"
            );
            AcceptPause {
                until: self.clock.now,
                backoff: ACCEPT_BACKOFF_MIN / 2,
                since: self.clock.now,
                failures: 0,
            }
        });
        if !net::is_resource_exhaustion(error) {
            debug!("accept failed: {error}");
        }
        pause.failures += 1;
        pause.backoff = (pause.backoff * 2).min(ACCEPT_BACKOFF_MAX);
        pause.until = self.clock.now + pause.backoff;
        self.set_listener_interest(Interest::NONE);
    }

    /// Changes every listener's interest: none while accepting is paused,
    /// readable again to resume (re-adding it re-arms the edge if
    /// connections wait). On the completion driver: cancels or submits the
    /// multishot accepts.
    pub(super) fn set_listener_interest(&mut self, interest: Interest) {
        let Some(poller) = self.io.poller() else {
            #[cfg(target_os = "linux")]
            self.arm_listeners(interest != Interest::NONE);
            return;
        };
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Err(e) = poller.reregister(&listener.socket, listener_token(i), interest) {
                warn!("listener interest {interest:?}: {e}");
            }
        }
    }

    /// Retries accepting after a pause (its timer, or a connection closed).
    /// The pause stays in place while retrying: a retry that fails again
    /// continues the episode (one warning per episode, not per retry); one
    /// that empties the backlog, or spends its budget without a failure,
    /// ends it with one recovery line.
    pub(super) fn retry_accepting(&mut self) {
        if self.accept_pause.is_none() {
            return;
        }
        self.set_listener_interest(Interest::READABLE);
        for listener in &mut self.listeners {
            listener.ready = true;
        }
        let errors = self.counters.accept_errors.get();
        for i in 0..self.listeners.len() {
            self.accept(i, ACCEPT_BUDGET);
            // Still failing: `pause_accepting` has extended the episode.
            if self.counters.accept_errors.get() != errors {
                return;
            }
        }
        // Nothing was waiting to be accepted: the episode is over too.
        self.end_accept_pause();
    }

    pub(super) fn end_accept_pause(&mut self) {
        if let Some(pause) = self.accept_pause.take() {
            info!(
                loop_index = self.index,
                failures = pause.failures,
                "accepting again after {:?} ({} failed accepts)",
                self.clock.now.saturating_duration_since(pause.since),
                pause.failures
            );
        }
    }
}

/// The loop with the fewest connections, preferring `me` on a tie.
pub(super) fn least_loaded(loops: &[Arc<LoopHandle>], me: usize) -> usize {
    let mut best = me;
    let mut best_load = loops[me].load.load(Ordering::Relaxed);
    for (i, handle) in loops.iter().enumerate() {
        let load = handle.load.load(Ordering::Relaxed);
        if load < best_load {
            best = i;
            best_load = load;
        }
    }
    best
}
