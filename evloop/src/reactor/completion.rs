//! The completion driver (io_uring): the kernel accepts, receives and sends
//! on the loop's behalf, and reports each result as a completion, which
//! this driver feeds to the connection's state machine (`conn.rs`).
//!
//! Per loop: one ring, with a multishot accept on each listener, a multishot
//! receive on each connection that wants input (into the ring's provided
//! buffers: a handler sees its bytes there, and the buffer goes back to
//! the kernel as soon as the call returns), and at most one send per
//! connection in flight. The send owns the connection's output buffer
//! until its completion; what the handler writes meanwhile goes to a second
//! buffer, sent next. Every operation a turn queues is submitted by the
//! turn's one wait, so a busy loop makes one system call for many requests.
//!
//! # Invariants
//!
//! * A connection's slot is freed only after its last completion: a closed
//!   connection with operations in flight is cancelled and `RETIRED`, and
//!   removed when its receive and its send have both reported. So a
//!   completion's token (the slot) always names the connection it was
//!   submitted for, and a send's buffer is never freed under the kernel
//!   (the ring owns it until then anyway).
//! * A multishot operation that ends (no `F_MORE`: an error, the end of
//!   input, a cancel, the kernel's choice) is submitted again when the
//!   connection still wants it; a receive that ran out of buffers
//!   (`ENOBUFS`) only at the end of the turn, when the turn's buffers are
//!   back — never in a loop that would spin.
//! * Backpressure and pauses cancel the receive; the bytes that were
//!   already on their way are delivered (a few buffers at most), and the
//!   socket's own buffer then pushes back on the peer, as on epoll.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::io::Errno;
use tracing::{debug, warn};

use super::conn::{Conn, Env, Fate, Flags, Phase, Spare};
use super::{LoopIo, Next, Reactor, Step, mailbox::LoopWaker};
use crate::Address;
use crate::net;
use crate::ring::{Batch, Completion, Op, Ring};
use crate::service::{CloseReason, Handler, Service};
use crate::stats::LiveCounters;

/// The token of the waker's read (it is told apart by its operation).
const WAKER_TOKEN: u32 = 0;
/// A turn that served this many completions was busy: the next wait holds
/// out for a batch (`BUSY_BATCH`), so that a loaded loop makes fewer,
/// fuller turns — fewer system calls and less work per request — while a
/// quiet one (a single client waiting for each answer) answers at once.
const BUSY_TURN: usize = 8;
const BUSY_BATCH: Batch = Batch {
    want: 16,
    min_wait: std::time::Duration::from_micros(10),
};

/// A loop's completion driver.
pub(crate) struct Completions {
    pub(super) ring: Ring,
    /// Connections whose receive ran out of buffers: submitted again at the
    /// end of the turn.
    starved: Vec<usize>,
    /// The server held a quarter of its buffer budget at the end of the
    /// last turn (receives take one buffer at a time).
    tight: bool,
    /// Connections accepted while no slot was free: they wait here, as
    /// they would in the backlog, while the limit's grace lasts.
    pub(super) held: VecDeque<(OwnedFd, Address, bool)>,
}

impl Completions {
    pub(crate) fn new(ring: Ring) -> Completions {
        Completions {
            ring,
            starved: Vec::new(),
            tight: false,
            held: VecDeque::new(),
        }
    }
}

/// What happened to a connection, as completions tell it.
pub(super) enum Event<'a> {
    /// Any driver's step (a drive, the opening, the handler's deadline).
    Step(Step<'a>),
    /// A receive delivered these bytes.
    Received(&'a [u8]),
    /// The peer closed its side.
    ReadClosed,
    /// A send finished: `n` bytes went out, and all of its buffer, given
    /// back, when `done` holds it.
    Sent(usize, Option<Vec<u8>>),
}

/// The loop-wide state a connection is fed with.
struct Io<'a> {
    spare: &'a mut Spare,
    env: Env<'a>,
    counters: &'a LiveCounters,
    over_budget: bool,
}

impl<S: Service> Reactor<S> {
    fn completions(&mut self) -> &mut Completions {
        match &mut self.io {
            LoopIo::Completion(c) => c,
            LoopIo::Readiness(_) => unreachable!("a completion on the readiness driver"),
        }
    }

    /// The loop on io_uring: submit and wait → completions → ready work →
    /// timers → operations to submit again.
    pub(super) fn run_completion(&mut self) -> std::io::Result<()> {
        self.arm_waker();
        self.set_listener_interest(crate::poll::Interest::READABLE);
        let mut completions = Vec::with_capacity(super::EVENT_CAPACITY);
        while !(self.drain_deadline.is_some() && self.conns.is_empty()) {
            let timeout = self.timeout();
            let ring = &mut self.completions().ring;
            ring.submit_and_wait(&mut completions, timeout)?;
            ring.set_batch((completions.len() >= BUSY_TURN).then_some(BUSY_BATCH));
            if ring.overflowed() {
                self.counters.cq_overflows.add(1);
            }
            self.clock.advance();
            for completion in completions.drain(..) {
                self.complete(completion);
            }
            self.serve_ready();
            self.fire_timers();
            self.end_turn();
            self.publish_buffered();
        }
        Ok(())
    }

    fn complete(&mut self, completion: Completion) {
        match completion.op() {
            Op::Recv => self.recv_done(completion),
            Op::Send => self.send_done(completion),
            Op::Accept => self.accepted(completion),
            Op::Wake => {
                self.shared.loops[self.index]
                    .notified
                    .store(false, Ordering::Release);
                self.mailbox_pending = true;
                match completion.result().map_err(|e| Errno::from_io_error(&e)) {
                    Ok(_) | Err(Some(Errno::INTR | Errno::AGAIN)) => self.arm_waker(),
                    // Submitting it again would fail the same way, at once,
                    // every turn: the loop would spin instead.
                    Err(e) => warn!(loop_index = self.index, "the waker failed: {e:?}"),
                }
            }
            Op::Cancel => {}
        }
    }

    /// Reads the loop's waker once more: the next wake completes it.
    fn arm_waker(&mut self) {
        let LoopWaker::Ring(waker) = &self.shared.loops[self.index].waker else {
            unreachable!("a ring loop has a ring waker");
        };
        let LoopIo::Completion(c) = &mut self.io else {
            unreachable!("a ring loop has a ring");
        };
        if let Err(e) = c.ring.read_eventfd(waker.as_fd(), WAKER_TOKEN) {
            warn!(loop_index = self.index, "arming the waker: {e}");
        }
    }

    fn recv_done(&mut self, completion: Completion) {
        let key = completion.token() as usize;
        let Some(conn) = self.conns.get_mut(key) else {
            // Cannot happen (a slot outlives its completions), but a buffer
            // not given back would be lost to the ring for good.
            return self.completions().ring.recycle_from(&completion);
        };
        if !completion.more() {
            conn.core.flags.set(
                Flags::RECV_ARMED | Flags::RECV_CANCELING | Flags::RECV_MULTISHOT,
                false,
            );
        }
        if conn.core.flags.has(Flags::RETIRED) {
            self.completions().ring.recycle_from(&completion);
            return self.reap(key);
        }
        match completion.result() {
            Ok(0) => self.feed_completion(key, Event::ReadClosed),
            Ok(_) => {
                let over_budget = self.over_budget();
                let Reactor {
                    io,
                    conns,
                    spare,
                    counters,
                    clock,
                    shared,
                    index,
                    ..
                } = self;
                let LoopIo::Completion(c) = io else {
                    unreachable!("a completion on the readiness driver");
                };
                let Some((id, bytes)) = c.ring.received(&completion) else {
                    return;
                };
                let conn = &mut conns[key];
                let mut io = Io {
                    spare,
                    env: Env::new(clock, &shared.config, *index, None),
                    counters,
                    over_budget,
                };
                let next = feed(conn, Event::Received(bytes), &mut io);
                c.ring.recycle(id);
                self.settle(key, next);
            }
            Err(e) => match Errno::from_io_error(&e) {
                Some(Errno::NOBUFS) => {
                    self.counters.recv_starved.add(1);
                    conn.core.flags.set(Flags::RECV_STARVED, true);
                    self.completions().starved.push(key);
                }
                // Cancelled by a pause: submitted again when it lifts.
                Some(Errno::CANCELED) => self.settle(key, Next::Keep),
                // As on epoll, a lingering connection ends quietly.
                _ if conn.core.phase == Phase::Lingering => self.close(key, CloseReason::Service),
                _ => {
                    let reason = failure_reason("read", &e);
                    self.close(key, reason);
                }
            },
        }
    }

    fn send_done(&mut self, completion: Completion) {
        let key = completion.token() as usize;
        let sent = self.completions().ring.take_sent(&completion);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.core.flags.set(Flags::SENDING, false);
        if conn.core.flags.has(Flags::RETIRED) {
            return self.reap(key);
        }
        let (n, Some((buf, start))) = (completion.result(), sent) else {
            return self.close(key, CloseReason::Error);
        };
        match n {
            Ok(n) => {
                let n = n as usize;
                self.counters.bytes_out.add(n as u64);
                if start + n < buf.len() {
                    // A short send: the rest goes before any newer output.
                    // A large buffer with little left is not kept for it: a
                    // client that reads slowly would pin all of it.
                    let (buf, start) = compact(buf, start + n);
                    conn.core.flight_landed(n, None, self.clock.tick());
                    conn.core.flight_continues(buf.capacity());
                    let LoopIo::Completion(c) = &mut self.io else {
                        unreachable!("a completion on the readiness driver");
                    };
                    match c
                        .ring
                        .send(conn.core.socket.as_fd(), buf, start, key as u32)
                    {
                        Ok(()) => conn.core.flags.set(Flags::SENDING, true),
                        Err(e) => {
                            debug!("connection {key}: send: {e}");
                            return self.close(key, CloseReason::Error);
                        }
                    }
                    self.settle(key, Next::Keep);
                } else {
                    self.feed_completion(key, Event::Sent(n, Some(buf)));
                }
            }
            Err(e) => {
                let reason = failure_reason("write", &e);
                self.close(key, reason);
            }
        }
    }

    /// Feeds `event` to connection `key` and settles what it left.
    pub(super) fn feed_completion(&mut self, key: usize, event: Event<'_>) {
        let over_budget = self.over_budget();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.core.flags.has(Flags::RETIRED) {
            return;
        }
        let accepted_peer = match event {
            Event::Step(Step::Opened(peer)) => Some(peer),
            _ => None,
        };
        let config = &self.shared.config;
        let mut io = Io {
            spare: &mut self.spare,
            env: Env::new(&self.clock, config, self.index, accepted_peer),
            counters: &self.counters,
            over_budget,
        };
        let next = feed(conn, event, &mut io);
        self.settle(key, next);
    }

    /// An accept completion: a new connection, or the error that ended the
    /// listener's multishot accept.
    fn accepted(&mut self, completion: Completion) {
        let i = completion.token() as usize;
        if !completion.more()
            && let Some(listener) = self.listeners.get_mut(i)
        {
            listener.armed = false;
        }
        // After shutdown closed the listeners, a connection accepted before
        // the cancel took effect is served here.
        let handoff = self.listeners.get(i).is_some_and(|l| l.handoff);
        match completion.accepted() {
            Ok(fd) => {
                let Ok(peer) = net::peer_of(&fd) else {
                    // The client reset before it could be served: counted as
                    // a connection its peer reset, never opened.
                    self.counters.accepted.add(1);
                    self.counters.closed[CloseReason::Reset.index()].add(1);
                    return;
                };
                self.end_accept_pause();
                if self.completions().held.is_empty() && self.may_accept() {
                    self.admit(fd, peer, handoff);
                } else {
                    // No slot: stop taking more from the backlog, and let
                    // this one wait as if it were still there.
                    self.completions().held.push_back((fd, peer, handoff));
                    self.set_listener_interest(crate::poll::Interest::NONE);
                    if let Some(listener) = self.listeners.get_mut(i) {
                        listener.ready = true;
                    }
                }
            }
            Err(e) => match Errno::from_io_error(&e) {
                Some(Errno::CANCELED) => {}
                // The client gave up before it was accepted.
                Some(Errno::CONNABORTED | Errno::CONNRESET) => {}
                _ => {
                    self.counters.accept_errors.add(1);
                    self.pause_accepting(&e);
                }
            },
        }
    }

    /// Admits connections that waited for a slot, while slots are free or
    /// the grace has passed (then they are refused).
    pub(super) fn admit_held(&mut self) {
        while !self.completions().held.is_empty() && self.may_accept() {
            if let Some((fd, peer, handoff)) = self.completions().held.pop_front() {
                self.admit(fd, peer, handoff);
            }
        }
    }

    /// Starts (`on`) or cancels the listeners' multishot accepts.
    pub(super) fn arm_listeners(&mut self, on: bool) {
        let LoopIo::Completion(c) = &mut self.io else {
            unreachable!("arming accepts on the readiness driver");
        };
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            let fd = listener.socket.as_fd();
            let armed = if on && !listener.armed {
                c.ring.accept_multi(fd, i as u32).map(|()| true)
            } else if !on && listener.armed {
                // By operation, not descriptor: shutdown closes the
                // listener before the cancel is submitted.
                c.ring.cancel(Op::Accept, i as u32).map(|()| true)
            } else {
                continue;
            };
            match armed {
                Ok(armed) => listener.armed = armed,
                Err(e) => warn!(loop_index = self.index, "listener accept: {e}"),
            }
        }
    }

    /// Submits again what ended this turn and is still wanted: receives
    /// that ran out of buffers (the buffers are back now), and accepting,
    /// once nothing holds it back.
    fn end_turn(&mut self) {
        if !self.completions().starved.is_empty() {
            for key in std::mem::take(&mut self.completions().starved) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.core.flags.set(Flags::RECV_STARVED, false);
                    self.settle(key, Next::Keep);
                }
            }
        }
        let tight = self.tight_budget();
        if tight && !self.completions().tight {
            self.cancel_multishot_receives();
        }
        self.completions().tight = tight;
        let accepting = self.accept_pause.is_none()
            && self.limit_wait.is_none()
            && self.completions().held.is_empty()
            && self.listeners.iter().any(|l| !l.armed && !l.ready);
        if accepting {
            self.arm_listeners(true);
        }
    }

    /// The server has just come to hold a quarter of its buffer budget:
    /// every multishot receive is cancelled now, not at its connection's
    /// next completion — until then the kernel would go on reading ahead
    /// on each of them (thousands of connections, tens of KiB each). They
    /// are submitted again one buffer at a time. Once per crossing.
    fn cancel_multishot_receives(&mut self) {
        let LoopIo::Completion(c) = &mut self.io else {
            return;
        };
        for (key, conn) in self.conns.iter_mut() {
            let flags = &mut conn.core.flags;
            if flags.has(Flags::RECV_MULTISHOT) && !flags.has(Flags::RECV_CANCELING) {
                match c.ring.cancel(Op::Recv, key as u32) {
                    Ok(()) => flags.set(Flags::RECV_CANCELING, true),
                    Err(e) => warn!("connection {key}: cancel: {e}"),
                }
            }
        }
    }

    /// Frees a retired connection's slot after its last completion.
    fn reap(&mut self, key: usize) {
        if !self.conns[key]
            .core
            .flags
            .has(Flags::RECV_ARMED | Flags::SENDING)
        {
            self.conns.remove(key);
        }
    }
}

/// Closes a connection's operations: cancels what is in flight, and says
/// whether its slot must wait for their completions.
pub(super) fn retire<H>(c: &mut Completions, conn: &mut Conn<H>, key: usize) -> bool {
    let flags = &mut conn.core.flags;
    if !flags.has(Flags::RECV_ARMED | Flags::SENDING) {
        return false;
    }
    flags.set(Flags::RETIRED, true);
    conn.core.flight_lost();
    if let Err(e) = c.ring.cancel_fd(conn.core.socket.as_fd(), key as u32) {
        warn!("connection {key}: cancel: {e}");
    }
    true
}

/// Submits what a connection now wants: its output, if no send is in
/// flight; a receive, if it wants input and none is armed; the receive's
/// cancel, if it no longer does. Once the server holds a quarter of its
/// buffer budget (`tight_budget`), receives take one buffer at a time, and
/// multishot ones are cancelled to be submitted so: a multishot receive
/// lets the kernel read ahead on every connection at once, and each
/// connection's next send takes all of it — thousands of clients that do
/// not read would each pin tens of KiB beyond the budget; one buffer at a
/// time, each pins one, as epoll's small reads do.
pub(super) fn sync_ops<H>(
    c: &mut Completions,
    conn: &mut Conn<H>,
    key: usize,
    tight_budget: bool,
) -> std::io::Result<()> {
    let core = &mut conn.core;
    let token = key as u32;
    if !core.flags.has(Flags::SENDING) {
        // A file being sent goes a chunk at a time, read once the output
        // before it (and the chunk before) is out: a connection holds one.
        core.refill_from_file()?;
    }
    if !core.flags.has(Flags::SENDING)
        && let Some(output) = core.take_for_send()
    {
        c.ring.send(core.socket.as_fd(), output, 0, token)?;
        core.flags.set(Flags::SENDING, true);
    }
    let wants_read = core.wants_read();
    let flags = &mut core.flags;
    let multishot = !(flags.has(Flags::RECV_ONESHOT) || tight_budget);
    if wants_read && !flags.has(Flags::RECV_ARMED | Flags::RECV_STARVED) {
        if multishot {
            c.ring.recv_multi(core.socket.as_fd(), token)?;
        } else {
            c.ring.recv_once(core.socket.as_fd(), token)?;
        }
        flags.set(Flags::RECV_ARMED, true);
        flags.set(Flags::RECV_MULTISHOT, multishot);
    } else if flags.has(Flags::RECV_ARMED)
        && !flags.has(Flags::RECV_CANCELING)
        && (!wants_read || (!multishot && flags.has(Flags::RECV_MULTISHOT)))
    {
        // Not wanted any more, or multishot where the budget now wants one
        // buffer at a time: submitted again (one-shot) once it has ended.
        c.ring.cancel(Op::Recv, token)?;
        flags.set(Flags::RECV_CANCELING, true);
    }
    Ok(())
}

/// Feeds one event to the connection's state machine, then does what its
/// state asks: drain notices, the close once the output is out, the FIN.
fn feed<H: Handler>(conn: &mut Conn<H>, event: Event<'_>, io: &mut Io<'_>) -> Next {
    let fed = match event {
        Event::Step(Step::Drive) => Ok(()),
        Event::Step(Step::Opened(_)) => {
            call(conn, io, |conn, out, env| conn.opened(out, env)).map(drop)
        }
        Event::Step(Step::Deadline) => {
            call(conn, io, |conn, out, env| conn.deadline_passed(out, env)).map(drop)
        }
        Event::Received(bytes) => received(conn, bytes, io),
        // A lingering connection's client has closed too: done.
        Event::ReadClosed if conn.core.phase == Phase::Lingering => {
            Err(Fate::Close(CloseReason::Service))
        }
        Event::ReadClosed => call(conn, io, |conn, out, env| conn.read_closed(out, env)).map(drop),
        Event::Sent(n, done) => {
            conn.core.flight_landed(n, done, io.env.clock.tick());
            Ok(())
        }
    };
    match fed.and_then(|()| advance(conn, io)) {
        Ok(next) => next,
        Err(fate) => Next::End(fate),
    }
}

/// Bytes arrived: the handler sees them where the kernel put them, unless
/// the connection no longer reads (it closed, or lingers: they are
/// dropped).
fn received<H: Handler>(conn: &mut Conn<H>, bytes: &[u8], io: &mut Io<'_>) -> Result<(), Fate> {
    io.counters.bytes_in.add(bytes.len() as u64);
    if conn.core.phase != Phase::Open {
        return Ok(());
    }
    call(conn, io, |conn, out, env| conn.received(bytes, out, env)).map(drop)
}

/// After any event: lifts the output pauses once drained, tells a
/// streaming handler its output drained, and ends what is done — a
/// draining connection closes and a closing one sends its FIN once the
/// output (in flight too) is out.
fn advance<H: Handler>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Result<Next, Fate> {
    let low = io.env.config.low_watermark;
    if conn.core.resume_if_drained(low) {
        io.counters.paused.sub(1);
    }
    // Past the server's buffer budget, a connection that holds bytes stops
    // reading until its output drains or the server is back under ¾ of it
    // (as on epoll, where this is looked at before each read).
    if io.over_budget
        && conn.core.holds_bytes()
        && conn.core.phase == Phase::Open
        && !conn.core.flags.has(Flags::PAUSED_BUDGET)
    {
        if conn.core.pause_for_budget() {
            io.counters.paused.add(1);
        }
        io.counters.budget_pauses.add(1);
    }
    let mut budget = io.env.config.read_budget;
    let streaming = conn.stream_while_drained(low, &mut budget, |conn| {
        call(conn, io, |conn, out, env| conn.drained(out, env))
    })?;
    if streaming {
        return Ok(Next::Requeue);
    }
    if conn.core.pending() == 0 {
        // As on epoll: FIN once a closing connection's output is out, then
        // discard what the client still sends (the receive stays armed).
        conn.core.end_if_flushed(io.env.clock.tick())?;
    }
    Ok(Next::Keep)
}

/// One handler call, writing into the connection's own output buffer
/// (taken from the spares when it has none): a send hands that buffer to
/// the kernel, which the loop's scratch could not be. Returns how many
/// bytes the handler wrote; pauses reading above the high watermark.
fn call<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Io<'_>,
    f: impl FnOnce(&mut Conn<H>, &mut Vec<u8>, &Env<'_>) -> Result<(), Fate>,
) -> Result<usize, Fate> {
    conn.core.ensure_buffers(io.spare);
    let env = &io.env;
    let (wrote, pause) =
        conn.call_into_own_output(env.config.high_watermark, |conn, out| f(conn, out, env))?;
    pause.count(io.counters);
    Ok(wrote)
}

/// The rest of a short send, from `start`: in the same buffer, or copied
/// into one its size when that buffer is large and mostly sent.
fn compact(buf: Vec<u8>, start: usize) -> (Vec<u8>, usize) {
    let rest = buf.len() - start;
    if buf.capacity() > super::conn::KEEP_BUFFER && rest <= buf.capacity() / 4 {
        (buf[start..].to_vec(), 0)
    } else {
        (buf, start)
    }
}

/// Why a failed receive or send ends its connection.
fn failure_reason(op: &str, e: &std::io::Error) -> CloseReason {
    debug!("{op}: {e}");
    if Errno::from_io_error(e).is_some_and(net::is_reset) {
        CloseReason::Reset
    } else {
        CloseReason::Error
    }
}
