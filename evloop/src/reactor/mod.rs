//! The event loop of one thread: wait → dispatch → ready list → timers.
//!
//! A reactor owns its poller, its listeners (in `reuseport` mode, or the
//! acceptor loop in `handoff` mode) and its connections; nothing here is
//! shared with other threads except a few server-wide atomics (open
//! connections, buffered bytes, who waits for a connection slot) and the
//! mailbox through which other threads send commands.
//!
//! # Invariants
//!
//! * Sources are edge-triggered, so the reactor keeps each connection's
//!   readiness itself (`READ_READY`, `WRITE_READY` in its flags; see
//!   `readiness.rs`) and clears it when a
//!   call returns `WouldBlock` — or, for reads, when a read came back shorter
//!   than the buffer: the socket was drained at that moment, and any byte
//!   that arrives later raises a new edge, so the `WouldBlock` read would be
//!   a wasted syscall per request. Not when the event said the peer closed
//!   (no new edge will come; reading goes on until it returns 0), nor when
//!   urgent data is pending (a read stops at the urgent mark), nor on kqueue,
//!   which does not report urgent data. A connection that stopped reading because of
//!   its per-turn budget goes on the ready list and is served again after
//!   the other events of this turn, with a zero wait timeout.
//! * Write interest is registered only while output is pending; read
//!   interest is dropped while the connection is paused by backpressure or
//!   has seen the end of its input. Interest changes cost one syscall per
//!   episode, never one per event.
//! * Input is read into one buffer per loop. A handler sees it there
//!   directly unless it left bytes unconsumed earlier; output is produced into
//!   one scratch buffer per loop and written at once. A connection allocates
//!   its own input or output buffer only for what is left over, and returns
//!   large buffers when they drain: an idle connection owns no buffer.
//! * A connection is closed only when its input has ended (read returned 0)
//!   and its output is flushed, or on an error of its own, its idle
//!   deadline, or the shutdown deadline. Its errors never leave it.

mod accept;
#[cfg(target_os = "linux")]
mod completion;
mod conn;
mod mailbox;
mod readiness;
pub mod testing;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use slab::Slab;
use tracing::{debug, error, info};

use crate::Address;
use crate::clock::{Clock, Tick};
use crate::config::Config;
use crate::net;
use crate::poll::{Event, Events, Interest, Poller, Token};
use crate::service::{CloseReason, Service};
use crate::stats::{Counters, LiveCounters};
use crate::timer::{Deadline, Timers};

use accept::{ACCEPT_BUDGET, AcceptPause, Listener};
#[cfg(target_os = "linux")]
pub(crate) use completion::Completions;
pub(crate) use conn::Core;
use conn::{Conn, Env, Fate, Flags, Phase, Spare};
pub(crate) use mailbox::{Command, LoopHandle, LoopWaker};
use readiness::{Io, Next, drive_conn, update_interest};

/// The waker's token; listeners count down from just below it, connections
/// count up from 0 (slab keys).
const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 1;

/// The token of listener `i`.
const fn listener_token(i: usize) -> Token {
    Token(LISTENER_BASE - i)
}

/// Events fetched per wait.
const EVENT_CAPACITY: usize = 1024;
/// Size of the per-loop read buffer (one read's worth).
const READ_BUFFER: usize = 64 * 1024;
/// Mailbox commands handled per turn.
const MAILBOX_BUDGET: usize = 1024;
/// How often a loop with connections paused by the budget looks whether
/// the server is back under it.
const BUDGET_RECHECK: Duration = Duration::from_millis(100);

/// What a loop hands back when it stops.
#[derive(Clone, Debug, Default)]
pub struct LoopReport {
    /// The loop's counters.
    pub counters: Counters,
    /// Connections still open at the shutdown deadline (or a forced
    /// shutdown), and closed by it.
    pub cut: u64,
}

/// How a loop moves bytes: it waits for readiness and reads and writes
/// itself (epoll, kqueue), or the kernel does and reports completions
/// (io_uring).
pub(crate) enum LoopIo {
    Readiness(Poller),
    #[cfg(target_os = "linux")]
    Completion(Box<Completions>),
}

impl LoopIo {
    /// The poller, on the readiness driver.
    pub(super) fn poller(&self) -> Option<&Poller> {
        match self {
            LoopIo::Readiness(poller) => Some(poller),
            #[cfg(target_os = "linux")]
            LoopIo::Completion(_) => None,
        }
    }
}

/// A step of the readiness driver.
type ReadinessStep<H> = fn(&mut Conn<H>, &mut Io<'_>) -> Next;

/// A step in a connection's life that every driver takes.
#[derive(Clone, Copy)]
pub(super) enum Step<'a> {
    /// Serve what is ready or left over (the ready list, a lifted pause).
    Drive,
    /// The connection was accepted from this peer: its handler may speak
    /// first.
    Opened(&'a Address),
    /// The handler's deadline passed.
    Deadline,
}

/// State shared by all loops of a server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// Open connections, server-wide, for `max_connections`.
    pub(crate) active: AtomicUsize,
    /// Loops waiting for a connection slot (their `wants_slot` is set).
    pub(crate) slot_waiters: AtomicUsize,
    /// Bytes all connections hold in their buffers (capacity), against
    /// `config.max_buffered`.
    pub(crate) buffered: AtomicUsize,
    /// `buffered` reached a quarter of the budget since memory was last
    /// given back to the system.
    pub(crate) buffered_peaked: AtomicBool,
    /// The shutdown is a hand-over to a successor process: listeners leave
    /// their Unix socket files in place.
    pub(crate) keep_socket_files: AtomicBool,
    /// Every loop's mailbox, by loop index (hand-off targets).
    pub(crate) loops: Vec<Arc<LoopHandle>>,
    /// Whether loop 0 hands connections to other loops (from all its
    /// listeners in `handoff` mode, from its Unix ones in either mode): it
    /// then relays `Shutdown` to them after its last hand-off.
    pub(crate) handoff: bool,
}

/// One thread's event loop.
pub(crate) struct Reactor<S: Service> {
    index: usize,
    io: LoopIo,
    mailbox: Receiver<Command>,
    mailbox_pending: bool,
    shared: Arc<Shared>,
    service: Arc<S>,
    listeners: Vec<Listener>,
    conns: Slab<Conn<S::Handler>>,
    ready: Vec<usize>,
    ready_batch: Vec<usize>,
    timers: Timers,
    next_generation: u32,
    /// The readiness driver's read buffer and output scratch.
    read_buf: Box<[u8]>,
    scratch: Vec<u8>,
    /// Emptied connection buffers, for reuse.
    spare: Spare,
    /// How much more (or less) this loop's connections hold than the
    /// server's count says: published once per turn, so that bytes a
    /// request holds for a moment cost no shared atomic.
    unpublished: isize,
    counters: Arc<LiveCounters>,
    clock: Clock,
    accept_pause: Option<AcceptPause>,
    /// Newcomers wait in the backlog for a connection slot until then.
    limit_wait: Option<Instant>,
    /// Connections paused by the buffer budget (key, generation), and when
    /// to look whether the server is back under it.
    budget_paused: Vec<(usize, u32)>,
    budget_recheck: Option<Instant>,
    drain_deadline: Option<Instant>,
    cut: u64,
}

impl<S: Service> Reactor<S> {
    /// A loop with its listeners, each paired with whether its connections
    /// are handed to the least loaded loop.
    pub(crate) fn new(
        index: usize,
        io: LoopIo,
        mailbox: Receiver<Command>,
        shared: Arc<Shared>,
        service: Arc<S>,
        listeners: Vec<(net::Listener, bool)>,
        counters: Arc<LiveCounters>,
    ) -> io::Result<Reactor<S>> {
        let listeners: Vec<Listener> = listeners
            .into_iter()
            .map(|(socket, handoff)| Listener {
                socket,
                handoff,
                ready: false,
                #[cfg(target_os = "linux")]
                armed: false,
            })
            .collect();
        let spare = match &io {
            LoopIo::Readiness(_) => Spare::default(),
            #[cfg(target_os = "linux")]
            LoopIo::Completion(_) => Spare::for_completions(),
        };
        let mut read_buffer = 0;
        if let Some(poller) = io.poller() {
            for (i, listener) in listeners.iter().enumerate() {
                poller.register(&listener.socket, listener_token(i), Interest::READABLE)?;
            }
            read_buffer = READ_BUFFER;
        }
        Ok(Reactor {
            index,
            io,
            mailbox,
            mailbox_pending: false,
            shared,
            service,
            listeners,
            conns: Slab::new(),
            ready: Vec::new(),
            ready_batch: Vec::new(),
            timers: Timers::default(),
            next_generation: 0,
            read_buf: vec![0; read_buffer].into_boxed_slice(),
            scratch: Vec::new(),
            spare,
            unpublished: 0,
            counters,
            clock: Clock::start(),
            accept_pause: None,
            limit_wait: None,
            budget_paused: Vec::new(),
            budget_recheck: None,
            drain_deadline: None,
            cut: 0,
        })
    }

    /// Runs until shutdown has drained every connection.
    pub(crate) fn run(mut self) -> io::Result<LoopReport> {
        match self.io {
            LoopIo::Readiness(_) => self.run_readiness()?,
            #[cfg(target_os = "linux")]
            LoopIo::Completion(_) => self.run_completion()?,
        }
        debug!(loop_index = self.index, "loop stopped");
        Ok(LoopReport {
            counters: self.counters.snapshot(),
            cut: self.cut,
        })
    }

    /// The loop on epoll or kqueue: wait → dispatch → ready list → timers.
    fn run_readiness(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        while !(self.drain_deadline.is_some() && self.conns.is_empty()) {
            let timeout = self.timeout();
            if let Some(poller) = self.io.poller() {
                poller.wait(&mut events, timeout)?;
            }
            self.clock.advance();
            for event in events.iter() {
                self.dispatch(event);
            }
            self.serve_ready();
            self.fire_timers();
            self.publish_buffered();
        }
        Ok(())
    }

    /// Whether the server's connections hold more than its buffer budget,
    /// counting this loop's changes not yet published.
    fn over_budget(&self) -> bool {
        self.buffered() >= self.shared.config.max_buffered as isize
    }

    /// Whether the server holds a quarter of its buffer budget: the
    /// completion driver then receives one buffer at a time.
    #[cfg(target_os = "linux")]
    fn tight_budget(&self) -> bool {
        self.buffered() >= self.shared.config.max_buffered as isize / 4
    }

    /// The bytes the server's connections hold, with this loop's changes
    /// not yet published.
    fn buffered(&self) -> isize {
        self.shared.buffered.load(Ordering::Relaxed) as isize + self.unpublished
    }

    /// Adds this turn's change in buffered bytes to the server's count.
    /// When the count falls back after a peak, the memory the allocator
    /// kept is given back to the system.
    fn publish_buffered(&mut self) {
        let change = std::mem::take(&mut self.unpublished);
        // A negative change wraps to its two's complement: a subtraction.
        self.counters.buffered.add(change as u64);
        let shared = &self.shared;
        let max = shared.config.max_buffered;
        if change > 0 {
            let grown = change as usize;
            let total = shared.buffered.fetch_add(grown, Ordering::Relaxed) + grown;
            if total >= max / 4 && !shared.buffered_peaked.load(Ordering::Relaxed) {
                shared.buffered_peaked.store(true, Ordering::Relaxed);
            }
        } else if change < 0 {
            let shrunk = change.unsigned_abs();
            let total = shared.buffered.fetch_sub(shrunk, Ordering::Relaxed) - shrunk;
            if total <= max / 64 && shared.buffered_peaked.swap(false, Ordering::Relaxed) {
                crate::sys::give_back_free_memory();
            }
        }
    }

    /// Connections a completion driver accepted while no slot was free.
    fn held(&self) -> usize {
        match &self.io {
            LoopIo::Readiness(_) => 0,
            #[cfg(target_os = "linux")]
            LoopIo::Completion(c) => c.held.len(),
        }
    }

    /// How long the next wait may block: not at all while work is left over
    /// from this turn, else until the earliest deadline.
    fn timeout(&self) -> Option<Duration> {
        let accept_ready = self.accept_pause.is_none()
            && (self.listeners.iter().any(|l| l.ready) || self.held() > 0)
            && (self.limit_wait.is_none() || self.slot_free());
        if !self.ready.is_empty() || accept_ready || self.mailbox_pending {
            return Some(Duration::ZERO);
        }
        let deadlines = [
            self.timers.next(),
            self.accept_pause.as_ref().map(|p| p.until),
            self.limit_wait,
            self.budget_recheck,
            self.drain_deadline,
        ];
        deadlines
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn dispatch(&mut self, event: Event) {
        match event.token() {
            WAKER => {
                self.shared.loops[self.index]
                    .notified
                    .store(false, Ordering::Release);
                self.mailbox_pending = true;
            }
            Token(t) if t > LISTENER_BASE - self.listeners.len() && t <= LISTENER_BASE => {
                let i = LISTENER_BASE - t;
                self.listeners[i].ready = true;
            }
            Token(key) => {
                let Some(conn) = self.conns.get_mut(key) else {
                    return; // closed earlier in this batch
                };
                let flags = &mut conn.core.flags;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    flags.set(Flags::READ_READY, true);
                    if event.is_read_closed() || event.is_error() || event.is_priority() {
                        flags.set(Flags::READ_TO_BLOCK, true);
                    }
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    flags.set(Flags::WRITE_READY, true);
                }
                self.drive(key);
            }
        }
    }

    /// Serves what this turn's events left over: the mailbox, queued
    /// accepts, and connections whose read budget ran out.
    fn serve_ready(&mut self) {
        if self.mailbox_pending {
            self.drain_mailbox();
        }
        #[cfg(target_os = "linux")]
        if self.held() > 0 {
            self.admit_held();
        }
        if self.accept_pause.is_none() {
            for i in 0..self.listeners.len() {
                if self.listeners[i].ready {
                    self.accept(i, ACCEPT_BUDGET);
                }
            }
        }
        let mut batch = std::mem::take(&mut self.ready_batch);
        std::mem::swap(&mut batch, &mut self.ready);
        for key in batch.drain(..) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.core.flags.set(Flags::QUEUED, false);
                self.drive(key);
            }
        }
        self.ready_batch = batch;
    }

    fn drain_mailbox(&mut self) {
        for _ in 0..MAILBOX_BUDGET {
            match self.mailbox.try_recv() {
                Ok(Command::Adopt(fd, peer)) => self.adopt(fd, peer),
                Ok(Command::Shutdown) => self.begin_shutdown(),
                Ok(Command::ForceClose) => self.force_close(),
                Ok(Command::Ping) => self.counters.answered.add(1),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    self.mailbox_pending = false;
                    return;
                }
            }
        }
    }
    // ---- connections -----------------------------------------------------

    fn drive(&mut self, key: usize) {
        self.feed(key, Step::Drive);
    }

    /// Runs one step on a connection with the loop's driver, then settles
    /// what the step left.
    fn feed(&mut self, key: usize, step: Step<'_>) {
        #[cfg(target_os = "linux")]
        if let LoopIo::Completion(_) = self.io {
            return self.feed_completion(key, completion::Event::Step(step));
        }
        let over_budget = self.over_budget();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (run, accepted_peer): (ReadinessStep<S::Handler>, _) = match step {
            Step::Drive => (drive_conn, None),
            Step::Opened(peer) => (readiness::opened, Some(peer)),
            Step::Deadline => (readiness::deadline_passed, None),
        };
        let config = &self.shared.config;
        let mut io = Io {
            read_buf: &mut self.read_buf,
            scratch: &mut self.scratch,
            env: Env::new(&self.clock, config, self.index, accepted_peer),
            counters: &self.counters,
            over_budget,
        };
        let next = run(conn, &mut io);
        self.settle(key, next);
    }

    /// After a connection was driven or called: accounts its buffers,
    /// tells the poller what it wants, arms its deadlines, and ends or
    /// requeues it as `next` says.
    fn settle(&mut self, key: usize, next: Next) {
        #[cfg(target_os = "linux")]
        let tight_budget = matches!(self.io, LoopIo::Completion(_)) && self.tight_budget();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.core.account(&mut self.unpublished, &mut self.spare);
        let flags = &mut conn.core.flags;
        if flags.has(Flags::PAUSED_BUDGET) && !flags.has(Flags::BUDGET_LISTED) {
            flags.set(Flags::BUDGET_LISTED, true);
            self.budget_paused.push((key, conn.core.generation));
            self.budget_recheck
                .get_or_insert(self.clock.now + BUDGET_RECHECK);
        }
        let next = match next {
            Next::End(fate) => Next::End(fate),
            other => {
                let told = match &mut self.io {
                    LoopIo::Readiness(poller) => update_interest(poller, conn, key),
                    #[cfg(target_os = "linux")]
                    LoopIo::Completion(c) => completion::sync_ops(c, conn, key, tight_budget),
                };
                match told {
                    Ok(()) => other,
                    Err(e) => {
                        debug!("connection {key}: {e}");
                        Next::End(Fate::Close(CloseReason::Error))
                    }
                }
            }
        };
        match next {
            Next::Keep => arm(
                &mut self.timers,
                &self.clock,
                &self.shared.config,
                key,
                &mut conn.core,
            ),
            Next::Requeue => {
                if !conn.core.flags.has(Flags::QUEUED) {
                    conn.core.flags.set(Flags::QUEUED, true);
                    self.ready.push(key);
                }
                arm(
                    &mut self.timers,
                    &self.clock,
                    &self.shared.config,
                    key,
                    &mut conn.core,
                );
            }
            Next::End(Fate::Close(reason)) => self.close(key, reason),
            Next::End(Fate::Abort) => {
                if let Err(e) = net::reset_on_close(&conn.core.socket) {
                    debug!("connection {key}: abort: {e}");
                }
                self.close(key, CloseReason::Service);
            }
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.core.flags.has(Flags::RETIRED) {
            return; // closed already, waiting for its completions
        }
        conn.ended(reason, &mut self.unpublished, &mut self.spare);
        self.counters.closed[reason.index()].add(1);
        if conn.core.flags.has(Flags::PAUSED_BY_LOOP) {
            self.counters.paused.sub(1);
        }
        let retired = match &mut self.io {
            LoopIo::Readiness(_) => false,
            #[cfg(target_os = "linux")]
            LoopIo::Completion(c) => completion::retire(c, conn, key),
        };
        if !retired {
            // Closing the descriptor also removes it from the queue.
            self.conns.remove(key);
        }
        self.release_slot();
        // A closed connection's deadline stays in the heap until due; with
        // many short connections and a long idle timeout they would pile
        // up. Sweep when they outnumber the open connections (amortised:
        // each sweep at least halves the heap).
        if self.timers.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.timers.retain(|d| {
                conns
                    .get(d.key)
                    .is_some_and(|c| c.core.generation == d.generation)
            });
        }
        self.retry_accepting();
    }

    /// Cuts every connection: at the shutdown deadline, or at once when
    /// forced.
    fn close_all(&mut self) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.core.flags.has(Flags::RETIRED))
            .map(|(key, _)| key)
            .collect();
        self.cut += keys.len() as u64;
        for key in keys {
            self.close(key, CloseReason::Shutdown);
        }
    }

    /// Shuts down with a deadline of now: this turn's timers cut every
    /// connection, including any the acceptor hands over afterwards.
    fn force_close(&mut self) {
        self.begin_shutdown();
        self.drain_deadline = Some(self.clock.now);
    }

    /// Resumes the connections the buffer budget paused once the server
    /// holds less than three quarters of it; until then, looks again later.
    fn recheck_budget(&mut self) {
        let max = self.shared.config.max_buffered;
        if self.shared.buffered.load(Ordering::Relaxed) > max / 4 * 3 {
            self.budget_recheck = Some(self.clock.now + BUDGET_RECHECK);
            return;
        }
        self.budget_recheck = None;
        for (key, generation) in std::mem::take(&mut self.budget_paused) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.core.generation != generation {
                continue;
            }
            conn.core.flags.set(Flags::BUDGET_LISTED, false);
            if conn.core.flags.has(Flags::PAUSED_BUDGET) {
                if conn.core.lift_budget_pause() {
                    self.counters.paused.sub(1);
                }
                self.drive(key);
            }
        }
    }

    fn fire_timers(&mut self) {
        if self.budget_recheck.is_some_and(|at| at <= self.clock.now) {
            self.recheck_budget();
        }
        if let Some(pause) = &self.accept_pause
            && pause.until <= self.clock.now
        {
            self.retry_accepting();
        }
        if let Some(deadline) = self.drain_deadline
            && deadline <= self.clock.now
            && !self.conns.is_empty()
        {
            info!(
                loop_index = self.index,
                "shutdown deadline passed: closing {} connections",
                self.conns.len()
            );
            self.close_all();
        }
        while let Some(due) = self.timers.pop_due(self.clock.now) {
            self.deadline_due(due);
        }
    }

    /// A timer entry fell due: acts on whichever of the connection's
    /// deadlines has passed, or re-arms it for the next.
    fn deadline_due(&mut self, due: Deadline) {
        let Some(conn) = self.conns.get_mut(due.key) else {
            return;
        };
        if conn.core.generation != due.generation {
            return;
        }
        // An entry that is no longer the earliest one armed is stale.
        if conn
            .core
            .armed
            .is_some_and(|armed| !self.clock.reached(armed))
        {
            return;
        }
        conn.core.armed = None;
        let config = &self.shared.config;
        let core = &conn.core;
        let passed = |limit: Option<Duration>| {
            limit.is_some_and(|limit| self.clock.reached(Clock::later(core.last_active, limit)))
        };
        if core.phase == Phase::Lingering {
            if passed(Some(config.linger)) {
                return self.close(due.key, CloseReason::Service);
            }
        } else if passed(config.idle_timeout) {
            return self.close(due.key, CloseReason::Idle);
        } else if core.deadline().is_some_and(|d| self.clock.reached(d)) {
            return self.feed(due.key, Step::Deadline);
        }
        arm(
            &mut self.timers,
            &self.clock,
            config,
            due.key,
            &mut conn.core,
        );
    }

    // ---- shutdown --------------------------------------------------------

    /// Stops accepting: connections whose handshake already completed are
    /// taken from the backlog (their clients may have sent data), then the
    /// listeners are closed, so new connections are refused. The connections
    /// are then served until they close or the deadline passes.
    fn begin_shutdown(&mut self) {
        if self.drain_deadline.is_some() {
            return;
        }
        self.accept_pause = None;
        // Whoever waits for a slot is refused now, not left in the backlog.
        self.limit_wait = Some(self.clock.now);
        #[cfg(target_os = "linux")]
        if let LoopIo::Completion(_) = self.io {
            // The kernel stops accepting; the backlog is taken below.
            self.arm_listeners(false);
            self.admit_held();
        }
        for i in 0..self.listeners.len() {
            self.accept(i, usize::MAX);
        }
        self.end_limit_wait();
        self.accept_pause = None;
        let keep_files = self.shared.keep_socket_files.load(Ordering::Acquire);
        for mut listener in self.listeners.drain(..) {
            if keep_files {
                listener.socket.keep_file();
            }
            // A successor may hold the same socket: closing our descriptor
            // would then leave it in our epoll set, waking this loop for
            // every connection the successor accepts.
            if let Some(poller) = self.io.poller()
                && let Err(e) = poller.deregister(&listener.socket)
            {
                debug!("deregistering a listener: {e}");
            }
        }
        if self.shared.handoff && self.index == 0 {
            // The acceptor relays the shutdown: targets hear of it after
            // every connection handed to them (mailboxes are first in, first out).
            for (i, handle) in self.shared.loops.iter().enumerate() {
                if i != self.index {
                    handle.send(Command::Shutdown);
                }
            }
        }
        self.drain_deadline = Some(self.clock.now + self.shared.config.shutdown_timeout);
        debug!(
            loop_index = self.index,
            open = self.conns.len(),
            "draining connections"
        );
    }
}

/// Runs service code so that a panic in it (a bug that a client's bytes may
/// trigger) ends only the connection it serves, not the loop and every
/// connection on it. The panic hook has already reported the panic.
fn contain_panic<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(_) => {
            error!("{what} panicked: closing its connection");
            None
        }
    }
}

/// When the connection's next deadline is due, if any: its linger while
/// lingering; else the earlier of its handler's deadline and its idle
/// timeout. Most connections of most servers have none.
#[inline]
fn next_deadline(config: &Config, core: &Core) -> Option<Tick> {
    if core.phase == Phase::Lingering {
        return Some(Clock::later(core.last_active, config.linger));
    }
    let idle = config
        .idle_timeout
        .map(|idle| Clock::later(core.last_active, idle));
    match (idle, core.deadline()) {
        (Some(a), Some(b)) => Some(if a.is_before(b) { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Makes sure the timers will look at the connection `key` by its next
/// deadline: a heap entry is added only when that is earlier than the one
/// already armed, so activity costs nothing here. Called after every
/// drive: inline, so that the common "no deadline" answer costs a few
/// comparisons.
#[inline]
fn arm(timers: &mut Timers, clock: &Clock, config: &Config, key: usize, core: &mut Core) {
    let Some(next) = next_deadline(config, core) else {
        return;
    };
    if core.armed.is_some_and(|armed| !next.is_before(armed)) {
        return;
    }
    timers.insert(Deadline {
        at: clock.instant(next),
        key,
        generation: core.generation,
    });
    core.armed = Some(next);
}
