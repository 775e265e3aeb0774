//! The event loop of one thread: wait → dispatch → ready list → timers.
//!
//! A reactor owns its poller, its listeners (in `reuseport` mode, or the
//! acceptor loop in `handoff` mode) and its connections; nothing here is
//! shared with other threads except the server-wide connection count (an
//! atomic) and the mailbox through which other threads send commands.
//!
//! # Invariants
//!
//! * Sources are edge-triggered, so the reactor keeps each connection's
//!   readiness itself (`read_ready`, `write_ready`) and clears it when a
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

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use slab::Slab;
use tracing::{debug, error, info, warn};

use crate::net::{self, Outcome};
use crate::poll::{self, Event, Events, Interest, Poller, Token, Waker};
use crate::service::{Action, CloseReason, Handler, Input, Service};
use crate::stats::Counters;
use crate::timer::{Deadline, Timers};

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
/// Connections accepted per listener per turn before other work is served.
const ACCEPT_BUDGET: usize = 128;
/// Mailbox commands handled per turn.
const MAILBOX_BUDGET: usize = 1024;
/// The loop's output scratch buffer is freed when a handler made it larger.
const MAX_SCRATCH: usize = 1024 * 1024;
/// How long a connection closed by its handler waits for the client to
/// close after our FIN, discarding what it still sends.
const LINGER: Duration = Duration::from_secs(5);
/// A connection's buffer larger than this is freed, not kept, when it
/// drains: idle connections hold at most this much each.
const KEEP_BUFFER: usize = 4 * 1024;
/// The first and the longest pause after `accept` ran out of resources.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Tunables of a loop, set through the server builder.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) high_watermark: usize,
    pub(crate) low_watermark: usize,
    pub(crate) max_input: usize,
    pub(crate) read_budget: usize,
    pub(crate) max_buffered: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            idle_timeout: None,
            max_connections: 100_000,
            shutdown_timeout: Duration::from_secs(30),
            high_watermark: 256 * 1024,
            low_watermark: 64 * 1024,
            max_input: 64 * 1024,
            read_budget: 256 * 1024,
            max_buffered: 64 * 1024 * 1024,
        }
    }
}

/// What other threads may ask of a loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Serve this accepted connection (hand-off mode).
    Adopt(OwnedFd, Option<SocketAddr>),
    /// Stop accepting, let connections finish until the shutdown deadline.
    Shutdown,
    /// Close every connection now.
    ForceClose,
}

/// The sending side of a loop's mailbox, shared with other threads.
#[derive(Debug)]
pub(crate) struct LoopHandle {
    sender: Sender<Command>,
    waker: Waker,
    /// Set by a sender that woke the loop, cleared by the loop before it
    /// drains the mailbox: senders wake only when the loop may be asleep.
    notified: AtomicBool,
    /// Connections this loop serves, for least-loaded hand-off.
    pub(crate) load: AtomicUsize,
}

impl LoopHandle {
    /// A loop's mailbox and the poller it wakes.
    pub(crate) fn new(poller: &Poller) -> io::Result<(Arc<LoopHandle>, Receiver<Command>)> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let handle = LoopHandle {
            sender,
            waker: Waker::new(poller, WAKER)?,
            notified: AtomicBool::new(false),
            load: AtomicUsize::new(0),
        };
        Ok((Arc::new(handle), receiver))
    }

    /// Queues `command` and wakes the loop if nobody has since it last
    /// looked. Returns false if the loop has exited (its mailbox is gone).
    pub(crate) fn send(&self, command: Command) -> bool {
        if self.sender.send(command).is_err() {
            return false;
        }
        if !self.notified.swap(true, Ordering::AcqRel)
            && let Err(e) = self.waker.wake()
        {
            warn!("waking a loop failed: {e}");
        }
        true
    }
}

/// What a loop hands back when it stops.
#[derive(Clone, Debug, Default)]
pub struct LoopReport {
    /// The loop's counters.
    pub counters: Counters,
    /// Connections still open at the shutdown deadline (or a forced
    /// shutdown), and closed by it.
    pub cut: u64,
}

/// State shared by all loops of a server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// Open connections, server-wide, for `max_connections`.
    pub(crate) active: AtomicUsize,
    /// Every loop's mailbox, by loop index (hand-off targets).
    pub(crate) loops: Vec<Arc<LoopHandle>>,
    /// Whether one acceptor hands connections to all loops.
    pub(crate) handoff: bool,
}

struct Conn<H> {
    socket: OwnedFd,
    handler: H,
    /// Input the handler left unconsumed.
    input: Vec<u8>,
    /// Output not yet written, from `written` on.
    output: Vec<u8>,
    written: usize,
    generation: u64,
    last_active: Instant,
    interest: Interest,
    read_ready: bool,
    /// Read until `WouldBlock`, never stop at a short read: an event said the
    /// peer closed its side (the end of stream must be read), the socket has
    /// an error, or urgent data is pending (a read stops at its mark).
    read_to_block: bool,
    write_ready: bool,
    /// Read returned 0: the handler has been told; close once output is out.
    input_ended: bool,
    /// The handler asked to close once output is out.
    closing: bool,
    /// Closing: FIN sent, input is discarded until the peer closes or the
    /// linger time (from `last_active`) runs out.
    write_shut: bool,
    /// Reading stopped: output passed the high watermark.
    paused: bool,
    /// On the ready list.
    queued: bool,
}

impl<H> Conn<H> {
    fn pending(&self) -> usize {
        self.output.len() - self.written
    }

    fn wanted_interest(&self) -> Interest {
        let mut interest = Interest::NONE;
        let reading = !self.closing || self.write_shut; // lingering reads too
        if !self.paused && !self.input_ended && reading {
            interest = interest | Interest::READABLE;
        }
        if self.pending() > 0 {
            interest = interest | Interest::WRITABLE;
        }
        interest
    }
}

/// What became of a connection after it was driven.
enum Next {
    Keep,
    /// It stopped with input still readable (budget spent): serve it again
    /// this turn.
    Requeue,
    /// It started lingering: arm its linger deadline.
    Linger,
    Close(CloseReason),
}

/// The loop-wide state a connection is driven with, borrowed apart from the
/// connection table.
struct Io<'a> {
    read_buf: &'a mut [u8],
    scratch: &'a mut Vec<u8>,
    config: &'a Config,
    counters: &'a mut Counters,
    now: Instant,
}

struct Listener {
    socket: TcpListener,
    ready: bool,
}

/// A pause of accepting after `accept` ran out of resources.
struct AcceptPause {
    until: Instant,
    backoff: Duration,
    since: Instant,
    failures: u64,
}

/// One thread's event loop.
pub(crate) struct Reactor<S: Service> {
    index: usize,
    poller: Poller,
    mailbox: Receiver<Command>,
    mailbox_pending: bool,
    shared: Arc<Shared>,
    service: Arc<S>,
    listeners: Vec<Listener>,
    conns: Slab<Conn<S::Handler>>,
    ready: Vec<usize>,
    ready_batch: Vec<usize>,
    timers: Timers,
    next_generation: u64,
    read_buf: Box<[u8]>,
    scratch: Vec<u8>,
    counters: Counters,
    now: Instant,
    accept_pause: Option<AcceptPause>,
    drain_deadline: Option<Instant>,
    cut: u64,
}

impl<S: Service> Reactor<S> {
    pub(crate) fn new(
        index: usize,
        poller: Poller,
        mailbox: Receiver<Command>,
        shared: Arc<Shared>,
        service: Arc<S>,
        listeners: Vec<TcpListener>,
    ) -> io::Result<Reactor<S>> {
        let listeners: Vec<Listener> = listeners
            .into_iter()
            .map(|socket| Listener {
                socket,
                ready: false,
            })
            .collect();
        for (i, listener) in listeners.iter().enumerate() {
            poller.register(&listener.socket, listener_token(i), Interest::READABLE)?;
        }
        Ok(Reactor {
            index,
            poller,
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
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            scratch: Vec::new(),
            counters: Counters::default(),
            now: Instant::now(),
            accept_pause: None,
            drain_deadline: None,
            cut: 0,
        })
    }

    /// Runs until shutdown has drained every connection.
    pub(crate) fn run(mut self) -> io::Result<LoopReport> {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        while !(self.drain_deadline.is_some() && self.conns.is_empty()) {
            let timeout = self.timeout();
            self.poller.wait(&mut events, timeout)?;
            self.now = Instant::now();
            for event in events.iter() {
                self.dispatch(event);
            }
            self.serve_ready();
            self.fire_timers();
        }
        debug!(loop_index = self.index, "loop stopped");
        Ok(LoopReport {
            counters: self.counters,
            cut: self.cut,
        })
    }

    /// How long the next wait may block: not at all while work is left over
    /// from this turn, else until the earliest deadline.
    fn timeout(&self) -> Option<Duration> {
        let accept_ready = self.accept_pause.is_none() && self.listeners.iter().any(|l| l.ready);
        if !self.ready.is_empty() || accept_ready || self.mailbox_pending {
            return Some(Duration::ZERO);
        }
        let deadlines = [
            self.timers.next(),
            self.accept_pause.as_ref().map(|p| p.until),
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
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    conn.read_ready = true;
                    conn.read_to_block |=
                        event.is_read_closed() || event.is_error() || event.is_priority();
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    conn.write_ready = true;
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
                conn.queued = false;
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
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    self.mailbox_pending = false;
                    return;
                }
            }
        }
    }

    // ---- accepting -------------------------------------------------------

    fn accept(&mut self, i: usize, budget: usize) {
        for _ in 0..budget {
            match net::accept(&self.listeners[i].socket) {
                // While descriptors stay scarce, a close lets one accept
                // through and the next fails: that is still one episode.
                Outcome::Done((fd, peer)) => self.admit(fd, peer),
                Outcome::WouldBlock => {
                    // The backlog is empty: if accepting had been failing,
                    // it has recovered.
                    self.end_accept_pause();
                    self.listeners[i].ready = false;
                    return;
                }
                // The client gave up before we accepted it.
                Outcome::Reset(_) => {}
                Outcome::Failed(e) => {
                    self.counters.accept_errors += 1;
                    self.pause_accepting(&e);
                    return;
                }
            }
        }
    }

    /// Counts a freshly accepted connection against the server-wide limit,
    /// then serves it here or hands it to the least loaded loop.
    fn admit(&mut self, fd: OwnedFd, peer: Option<SocketAddr>) {
        let max = self.shared.config.max_connections;
        if self.shared.active.fetch_add(1, Ordering::AcqRel) >= max {
            self.shared.active.fetch_sub(1, Ordering::AcqRel);
            self.counters.accepted += 1;
            self.counters.closed[CloseReason::Limit.index()] += 1;
            debug!(
                ?peer,
                max, "connection limit reached: closing new connection"
            );
            return; // dropping `fd` closes it
        }
        let target = if self.shared.handoff {
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
            self.counters.accepted += 1;
            self.counters.closed[CloseReason::Shutdown.index()] += 1;
            self.cut += 1;
        }
    }

    /// Starts serving an accepted connection already counted in `active`
    /// and in this loop's load.
    fn adopt(&mut self, socket: OwnedFd, peer: Option<SocketAddr>) {
        self.counters.accepted += 1;
        let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poller
            .register(&socket, Token(key), Interest::READABLE)
        {
            warn!("registering connection from {peer}: {e}");
            self.counters.closed[CloseReason::Error.index()] += 1;
            self.release_slot();
            return;
        }
        let Some(handler) = contain_panic("Service::open", || self.service.open(peer)) else {
            self.counters.closed[CloseReason::Error.index()] += 1;
            self.release_slot();
            return;
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        entry.insert(Conn {
            socket,
            handler,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            generation,
            last_active: self.now,
            interest: Interest::READABLE,
            read_ready: false,
            read_to_block: !poll::REPORTS_URGENT_DATA,
            write_ready: true,
            input_ended: false,
            closing: false,
            write_shut: false,
            paused: false,
            queued: false,
        });
        if let Some(at) = self
            .shared
            .config
            .idle_timeout
            .and_then(|idle| self.now.checked_add(idle))
        {
            self.timers.insert(Deadline {
                at,
                key,
                generation,
            });
        }
    }

    /// Forgets one connection in the server-wide and per-loop counts.
    fn release_slot(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        self.shared.loops[self.index]
            .load
            .fetch_sub(1, Ordering::Relaxed);
    }

    fn pause_accepting(&mut self, error: &io::Error) {
        let pause = self.accept_pause.get_or_insert_with(|| {
            warn!(
                loop_index = self.index,
                "accept failed: {error}; pausing accepts and retrying with backoff"
            );
            AcceptPause {
                until: self.now,
                backoff: ACCEPT_BACKOFF_MIN / 2,
                since: self.now,
                failures: 0,
            }
        });
        if !net::is_resource_exhaustion(error) {
            debug!("accept failed: {error}");
        }
        pause.failures += 1;
        pause.backoff = (pause.backoff * 2).min(ACCEPT_BACKOFF_MAX);
        pause.until = self.now + pause.backoff;
        self.set_listener_interest(Interest::NONE);
    }

    /// Changes every listener's interest: none while accepting is paused,
    /// readable again to resume (re-adding it re-arms the edge if
    /// connections wait).
    fn set_listener_interest(&self, interest: Interest) {
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Err(e) = self
                .poller
                .reregister(&listener.socket, listener_token(i), interest)
            {
                warn!("listener interest {interest:?}: {e}");
            }
        }
    }

    /// Retries accepting after a pause (its timer, or a connection closed).
    /// The pause stays in place while retrying: a retry that fails again
    /// continues the episode (one warning per episode, not per retry); one
    /// that empties the backlog, or spends its budget without a failure,
    /// ends it with one recovery line.
    fn retry_accepting(&mut self) {
        if self.accept_pause.is_none() {
            return;
        }
        self.set_listener_interest(Interest::READABLE);
        for listener in &mut self.listeners {
            listener.ready = true;
        }
        let errors = self.counters.accept_errors;
        for i in 0..self.listeners.len() {
            self.accept(i, ACCEPT_BUDGET);
            // Still failing: `pause_accepting` has extended the episode.
            if self.counters.accept_errors != errors {
                return;
            }
        }
        // Nothing was waiting to be accepted: the episode is over too.
        self.end_accept_pause();
    }

    fn end_accept_pause(&mut self) {
        if let Some(pause) = self.accept_pause.take() {
            info!(
                loop_index = self.index,
                failures = pause.failures,
                "accepting again after {:?} ({} failed accepts)",
                self.now.saturating_duration_since(pause.since),
                pause.failures
            );
        }
    }

    // ---- connections -----------------------------------------------------

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut io = Io {
            read_buf: &mut self.read_buf,
            scratch: &mut self.scratch,
            config: &self.shared.config,
            counters: &mut self.counters,
            now: self.now,
        };
        let next = drive_conn(conn, &mut io);
        let next = match next {
            Next::Close(reason) => Next::Close(reason),
            other => match update_interest(&self.poller, conn, key) {
                Ok(()) => other,
                Err(e) => {
                    debug!("connection {key}: {e}");
                    Next::Close(CloseReason::Error)
                }
            },
        };
        match next {
            Next::Keep => {}
            Next::Linger => {
                let generation = conn.generation;
                self.timers.insert(Deadline {
                    at: self.now + LINGER,
                    key,
                    generation,
                });
            }
            Next::Requeue => {
                if !conn.queued {
                    conn.queued = true;
                    self.ready.push(key);
                }
            }
            Next::Close(reason) => self.close(key, reason),
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let mut conn = self.conns.remove(key);
        contain_panic("Handler::on_close", || conn.handler.on_close(reason));
        self.counters.closed[reason.index()] += 1;
        drop(conn); // closing the descriptor also removes it from the queue
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
                    .is_some_and(|c| c.generation == d.generation)
            });
        }
        self.retry_accepting();
    }

    /// Cuts every connection: at the shutdown deadline, or at once when
    /// forced.
    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        self.cut += keys.len() as u64;
        for key in keys {
            self.close(key, CloseReason::Shutdown);
        }
    }

    /// Shuts down with a deadline of now: this turn's timers cut every
    /// connection, including any the acceptor hands over afterwards.
    fn force_close(&mut self) {
        self.begin_shutdown();
        self.drain_deadline = Some(self.now);
    }

    fn fire_timers(&mut self) {
        if let Some(pause) = &self.accept_pause
            && pause.until <= self.now
        {
            self.retry_accepting();
        }
        if let Some(deadline) = self.drain_deadline
            && deadline <= self.now
            && !self.conns.is_empty()
        {
            info!(
                loop_index = self.index,
                "shutdown deadline passed: closing {} connections",
                self.conns.len()
            );
            self.close_all();
        }
        while let Some(due) = self.timers.pop_due(self.now) {
            let Some(conn) = self.conns.get(due.key) else {
                continue;
            };
            if conn.generation != due.generation {
                continue;
            }
            // Lingering after the handler's close: its time is up, or the
            // idle timer may still close it (as the handler's close).
            let (limit, reason) = if conn.write_shut {
                (Some(LINGER), CloseReason::Service)
            } else {
                (self.shared.config.idle_timeout, CloseReason::Idle)
            };
            // No limit, or one past what an Instant can hold: never due.
            let Some(expires) = limit.and_then(|limit| conn.last_active.checked_add(limit)) else {
                continue;
            };
            if expires <= self.now {
                self.close(due.key, reason);
            } else {
                self.timers.insert(Deadline { at: expires, ..due });
            }
        }
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
        for i in 0..self.listeners.len() {
            self.accept(i, usize::MAX);
        }
        self.accept_pause = None;
        self.listeners.clear();
        if self.shared.handoff && self.index == 0 {
            // The acceptor relays the shutdown: targets hear of it after
            // every connection handed to them (mailboxes are first in, first out).
            for (i, handle) in self.shared.loops.iter().enumerate() {
                if i != self.index {
                    handle.send(Command::Shutdown);
                }
            }
        }
        self.drain_deadline = Some(self.now + self.shared.config.shutdown_timeout);
        debug!(
            loop_index = self.index,
            open = self.conns.len(),
            "draining connections"
        );
    }
}

/// The loop with the fewest connections, preferring `me` on a tie.
fn least_loaded(loops: &[Arc<LoopHandle>], me: usize) -> usize {
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

fn update_interest<H>(poller: &Poller, conn: &mut Conn<H>, key: usize) -> io::Result<()> {
    let wanted = conn.wanted_interest();
    if wanted != conn.interest {
        poller.reregister(&conn.socket, Token(key), wanted)?;
        conn.interest = wanted;
    }
    Ok(())
}

/// Flushes, reads and hands input to the handler until the connection would
/// block, spends its read budget, is paused, or is done.
fn drive_conn<H: Handler>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Next {
    if conn.write_ready && conn.pending() > 0 {
        if let Err(reason) = flush(conn, io) {
            return Next::Close(reason);
        }
    }
    if conn.paused && conn.pending() <= io.config.low_watermark {
        conn.paused = false;
    }
    let mut budget = io.config.read_budget;
    while conn.read_ready && !conn.paused && !conn.input_ended && !conn.closing {
        if budget == 0 {
            return Next::Requeue;
        }
        match net::recv(&conn.socket, io.read_buf) {
            Outcome::Done(0) => {
                conn.read_ready = false;
                conn.input_ended = true;
                let result = end_of_input(conn, io);
                if let Err(reason) = result {
                    return Next::Close(reason);
                }
            }
            Outcome::Done(n) => {
                io.counters.bytes_in += n as u64;
                conn.last_active = io.now;
                budget = budget.saturating_sub(n);
                // A short read drained the socket (see the module doc).
                if n < io.read_buf.len() && !conn.read_to_block {
                    conn.read_ready = false;
                }
                if let Err(reason) = deliver(conn, n, io) {
                    return Next::Close(reason);
                }
            }
            Outcome::WouldBlock => conn.read_ready = false,
            Outcome::Reset(e) => {
                debug!("read: {e}");
                return Next::Close(CloseReason::Reset);
            }
            Outcome::Failed(e) => {
                debug!("read: {e}");
                return Next::Close(CloseReason::Error);
            }
        }
    }
    if conn.pending() == 0 {
        if conn.closing {
            return close_by_service(conn, io, budget);
        }
        if conn.input_ended {
            return Next::Close(CloseReason::Peer);
        }
    }
    Next::Keep
}

/// The handler asked to close and its output is out. Closing now, with
/// input unread in the kernel, would send a reset that can destroy that
/// output before the client reads it (pitfall 8). So: send FIN
/// (`shutdown(SHUT_WR)`), then read and discard until the client closes too,
/// for at most `LINGER` (the reactor's timer enforces it).
fn close_by_service<H>(conn: &mut Conn<H>, io: &mut Io<'_>, mut budget: usize) -> Next {
    if conn.input_ended {
        return Next::Close(CloseReason::Service);
    }
    let mut next = Next::Keep;
    if !conn.write_shut {
        if net::shutdown_write(&conn.socket).is_err() {
            return Next::Close(CloseReason::Service);
        }
        conn.write_shut = true;
        conn.last_active = io.now; // the lingering starts now
        next = Next::Linger;
    }
    while conn.read_ready {
        if budget == 0 {
            return Next::Requeue;
        }
        match net::recv(&conn.socket, io.read_buf) {
            Outcome::Done(0) | Outcome::Reset(_) | Outcome::Failed(_) => {
                return Next::Close(CloseReason::Service);
            }
            // Discarded; not counted as activity, so it cannot prolong the linger.
            Outcome::Done(n) => {
                io.counters.bytes_in += n as u64;
                budget = budget.saturating_sub(n);
            }
            Outcome::WouldBlock => conn.read_ready = false,
        }
    }
    next
}

/// Hands the `n` bytes just read (in `io.read_buf`) to the handler, then
/// writes what it produced.
fn deliver<H: Handler>(conn: &mut Conn<H>, n: usize, io: &mut Io<'_>) -> Result<(), CloseReason> {
    let fresh = &io.read_buf[..n];
    // Leftovers from earlier reads come first; the new bytes join them.
    let direct = conn.input.is_empty();
    if !direct {
        conn.input.extend_from_slice(fresh);
    }
    let (out, into_scratch) = output_target(&mut conn.output, conn.written, io.scratch);
    let mut input = Input::new(if direct { fresh } else { &conn.input });
    let handler = &mut conn.handler;
    let action = contain_panic("Handler::on_data", || handler.on_data(&mut input, out))
        .ok_or(CloseReason::Error)?;
    let consumed = input.consumed();
    if action == Action::Close {
        // Whatever input is left will never be handled.
        conn.closing = true;
        release(&mut conn.input);
        return send_output(conn, into_scratch, io);
    }
    // What the handler left is what the limit bounds: a client that never
    // ends its line (or frame) costs at most `max_input`.
    let left = if direct { n } else { conn.input.len() } - consumed;
    if left > io.config.max_input {
        debug!("input limit of {} bytes exceeded", io.config.max_input);
        return Err(CloseReason::Error);
    }
    if direct {
        conn.input.extend_from_slice(&fresh[consumed..]);
    } else if left == 0 {
        release(&mut conn.input);
    } else {
        conn.input.drain(..consumed);
    }
    send_output(conn, into_scratch, io)
}

/// Read returned 0: lets the handler see its leftovers and say its last
/// words, then flushes.
fn end_of_input<H: Handler>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Result<(), CloseReason> {
    let (out, into_scratch) = output_target(&mut conn.output, conn.written, io.scratch);
    let (handler, unconsumed) = (&mut conn.handler, &conn.input);
    contain_panic("Handler::on_read_closed", || {
        handler.on_read_closed(unconsumed, out)
    })
    .ok_or(CloseReason::Error)?;
    release(&mut conn.input);
    send_output(conn, into_scratch, io)
}

/// Where a handler's new output goes: the loop's scratch buffer when the
/// connection has nothing pending (it is written straight from there), else
/// behind the pending output. Also says whether it is the scratch.
fn output_target<'a>(
    output: &'a mut Vec<u8>,
    written: usize,
    scratch: &'a mut Vec<u8>,
) -> (&'a mut Vec<u8>, bool) {
    if output.len() == written {
        scratch.clear();
        (scratch, true)
    } else {
        (output, false)
    }
}

/// Writes new output: straight from the scratch buffer when nothing else is
/// pending (keeping only what the socket did not take), else by flushing the
/// connection's own buffer. Pauses reading above the high watermark.
fn send_output<H>(
    conn: &mut Conn<H>,
    from_scratch: bool,
    io: &mut Io<'_>,
) -> Result<(), CloseReason> {
    if from_scratch {
        if !io.scratch.is_empty() {
            let sent = write_all(&conn.socket, io.scratch, &mut conn.write_ready, io.counters)?;
            if sent > 0 {
                conn.last_active = io.now;
            }
            conn.output.extend_from_slice(&io.scratch[sent..]);
        }
        // One huge answer must not pin its memory for the loop's lifetime.
        if io.scratch.capacity() > MAX_SCRATCH {
            *io.scratch = Vec::new();
        }
    } else if conn.write_ready {
        flush(conn, io)?;
    }
    if !conn.paused && conn.pending() >= io.config.high_watermark {
        conn.paused = true;
        io.counters.backpressure_pauses += 1;
    }
    Ok(())
}

/// Writes the connection's pending output until done or the socket is full.
fn flush<H>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Result<(), CloseReason> {
    let sent = write_all(
        &conn.socket,
        &conn.output[conn.written..],
        &mut conn.write_ready,
        io.counters,
    )?;
    if sent > 0 {
        conn.last_active = io.now;
    }
    conn.written += sent;
    if conn.written == conn.output.len() {
        conn.written = 0;
        release(&mut conn.output);
    }
    Ok(())
}

/// Empties `buf` and gives its memory back when it is large, so that idle
/// connections stay cheap.
fn release(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BUFFER {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// Writes as much of `buf` as the socket takes; returns how much.
fn write_all(
    socket: &OwnedFd,
    buf: &[u8],
    write_ready: &mut bool,
    counters: &mut Counters,
) -> Result<usize, CloseReason> {
    let mut sent = 0;
    while sent < buf.len() {
        match net::send(socket, &buf[sent..]) {
            Outcome::Done(n) => sent += n,
            Outcome::WouldBlock => {
                *write_ready = false;
                break;
            }
            Outcome::Reset(e) => {
                debug!("write: {e}");
                return Err(CloseReason::Reset);
            }
            Outcome::Failed(e) => {
                debug!("write: {e}");
                return Err(CloseReason::Error);
            }
        }
    }
    counters.bytes_out += sent as u64;
    Ok(sent)
}
