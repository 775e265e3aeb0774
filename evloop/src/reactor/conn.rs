//! One connection's state machine, whatever moves its bytes.
//!
//! A driver feeds it what happened — these bytes arrived ([`Conn::received`]),
//! the peer closed its side ([`Conn::read_closed`]), output went out
//! ([`Core::sent`]), a deadline passed ([`Conn::deadline_passed`]) — and
//! reads back what the connection wants: to read ([`Core::wants_read`]), to
//! write ([`Core::pending`]), or to end ([`Fate`]). The readiness driver
//! (`readiness.rs`, for epoll and kqueue) is one such driver; a completion
//! driver feeds the same calls. Output produced in a call goes to the
//! buffer the driver passes: the loop's scratch, which the readiness driver
//! writes at once, or the connection's own, which a completion driver hands
//! to the kernel and must not move until the send completes.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::OwnedFd;

use tracing::debug;

use super::contain_panic;
use crate::Address;
use crate::clock::{Clock, Tick};
use crate::config::Config;
use crate::context::{ConnId, Context};
use crate::net;
use crate::poll::Interest;
use crate::service::{Action, CloseReason, Handler, Input};

/// A connection's buffer larger than this is freed, not kept, when it
/// drains.
pub(super) const KEEP_BUFFER: usize = 4 * 1024;

/// How much of a file being sent a driver without `sendfile` reads into
/// the output at a time.
const FILE_CHUNK: usize = 64 * 1024;

/// The largest output buffer the loop's spares keep for reuse: a file's
/// chunk with the head of its answer.
const LARGE_OUTPUT: usize = 2 * FILE_CHUNK;

/// Where a connection is in its life: what it still does, so that no
/// combination of flags can contradict it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading (unless paused) and writing.
    Open,
    /// Nothing more is read (the peer closed its side, or the handler
    /// closed after it did): the connection closes with this reason once
    /// its output is out.
    Draining(CloseReason),
    /// The handler closed it while the peer may still send: once the output
    /// is out, FIN goes out and the connection lingers.
    Closing,
    /// FIN is out: input is discarded until the peer closes too or the
    /// linger time (from `last_active`) passes.
    Lingering,
}

/// Why reading is paused, and what the driver knows of the socket, in two
/// bytes: pause reasons are independent of each other and of the phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags(u16);

impl Flags {
    /// Output passed the high watermark.
    pub(crate) const PAUSED_OUTPUT: u16 = 1;
    /// The server holds more than its buffer budget and the connection
    /// holds bytes. Lifted when its output drains, or when the server is
    /// back under budget.
    pub(crate) const PAUSED_BUDGET: u16 = 1 << 1;
    /// The handler paused its input.
    pub(crate) const PAUSED_HANDLER: u16 = 1 << 2;
    /// The handler wants to hear when its output has drained.
    pub(crate) const DRAIN_NOTICE: u16 = 1 << 3;
    /// Readiness driver: the socket may have input.
    pub(crate) const READ_READY: u16 = 1 << 4;
    /// Readiness driver: read until `WouldBlock`, never stop at a short
    /// read (the peer closed its side, an error, urgent data, or kqueue).
    pub(crate) const READ_TO_BLOCK: u16 = 1 << 5;
    /// Readiness driver: the socket may take output.
    pub(crate) const WRITE_READY: u16 = 1 << 6;
    /// On the loop's ready list.
    pub(crate) const QUEUED: u16 = 1 << 7;
    /// On the loop's list of connections the budget paused.
    pub(crate) const BUDGET_LISTED: u16 = 1 << 8;
    /// Completion driver: a multishot receive is in flight.
    #[cfg(target_os = "linux")]
    pub(crate) const RECV_ARMED: u16 = 1 << 9;
    /// Completion driver: its cancel has been asked for.
    #[cfg(target_os = "linux")]
    pub(crate) const RECV_CANCELING: u16 = 1 << 10;
    /// Completion driver: its receive ended because the provided buffers
    /// ran out; it is submitted again at the end of the turn.
    #[cfg(target_os = "linux")]
    pub(crate) const RECV_STARVED: u16 = 1 << 11;
    /// Completion driver: a send is in flight.
    #[cfg(target_os = "linux")]
    pub(crate) const SENDING: u16 = 1 << 12;
    /// Completion driver: closed, its operations cancelled; the slot is
    /// freed when their last completion arrives.
    pub(crate) const RETIRED: u16 = 1 << 13;
    /// Completion driver: receive one buffer per submission, not multishot
    /// (Unix sockets: a multishot receive there can miss the end of input,
    /// a kernel bug fixed in 2026 that kernels still in use have).
    pub(crate) const RECV_ONESHOT: u16 = 1 << 14;
    /// Completion driver: the receive in flight is multishot.
    #[cfg(target_os = "linux")]
    pub(crate) const RECV_MULTISHOT: u16 = 1 << 15;

    const PAUSED: u16 = Self::PAUSED_OUTPUT | Self::PAUSED_BUDGET | Self::PAUSED_HANDLER;
    /// The pauses the loop imposes (not the handler's): what the loop's
    /// gauge of paused connections counts.
    pub(crate) const PAUSED_BY_LOOP: u16 = Self::PAUSED_OUTPUT | Self::PAUSED_BUDGET;

    #[inline]
    pub(crate) fn has(self, bits: u16) -> bool {
        self.0 & bits != 0
    }

    #[inline]
    pub(crate) fn set(&mut self, bits: u16, on: bool) {
        if on {
            self.0 |= bits;
        } else {
            self.0 &= !bits;
        }
    }
}

/// What a connection holds beyond its idle state: input its handler left
/// and output not yet sent. Behind one pointer, so an idle connection owns
/// no buffer and pays 8 bytes for the possibility.
#[derive(Debug, Default)]
struct Buffers {
    input: Vec<u8>,
    /// Output not yet sent, from `written` on.
    output: Vec<u8>,
    written: usize,
    /// Output handed to the kernel by a send still in flight (completion
    /// driver): pending until its completion says it went out.
    in_flight: usize,
    /// The capacity of the buffer that send holds: what it costs until its
    /// completion gives it back, however much of it is still to go.
    in_flight_held: usize,
    /// The capacity counted in the server's `buffered`.
    accounted: usize,
    /// A file to send after all the output ([`Context::send_file`]).
    file: Option<FileBody>,
}

/// The part of a file still to send.
#[derive(Debug)]
pub(super) struct FileBody {
    pub(super) file: File,
    /// Where its next byte is.
    pub(super) offset: u64,
    pub(super) left: u64,
    /// Whether the file's own position is at `offset` (for reads; `sendfile`
    /// takes the offset and leaves the position alone).
    positioned: bool,
}

/// Emptied connection buffers kept for reuse, so that a connection that
/// needs them for a moment (each request, on the completion driver) does
/// not allocate. Bounded in number and in what each one keeps. Only the
/// completion driver takes buffers from it; for the others (the default)
/// it keeps none, rather than memory nobody will take.
#[derive(Debug, Default)]
pub(super) struct Spare {
    // Boxed: these are the allocations connections hold behind their
    // pointer, handed back and forth without moving the buffers.
    #[allow(clippy::vec_box)]
    boxes: Vec<Box<Buffers>>,
    /// Kept boxes whose output buffer is large (a file's chunk).
    large: usize,
    /// Whether the driver takes buffers from here.
    reused: bool,
}

impl Spare {
    /// Buffers kept at most: enough for every connection of a busy loop to
    /// have a send in flight at once without allocating.
    const MAX: usize = 1024;
    /// Kept boxes that may keep a large output buffer (up to
    /// [`LARGE_OUTPUT`]): connections answering with files take one
    /// each, instead of a fresh chunk of memory per answer, which the
    /// allocator hands back to the system and faults in again page by page
    /// (15 page faults per 64 KiB answer on io_uring before).
    const MAX_LARGE: usize = 64;

    /// A pool the completion driver takes buffers from.
    #[cfg(target_os = "linux")]
    pub(super) fn for_completions() -> Spare {
        Spare {
            reused: true,
            ..Spare::default()
        }
    }

    #[cfg(target_os = "linux")]
    fn take(&mut self) -> Box<Buffers> {
        let Some(b) = self.boxes.pop() else {
            return Box::default();
        };
        if b.output.capacity() > KEEP_BUFFER {
            self.large -= 1;
        }
        b
    }

    fn put(&mut self, mut b: Box<Buffers>) {
        if !self.reused || self.boxes.len() >= Self::MAX {
            return;
        }
        let capacity = b.output.capacity();
        if capacity > KEEP_BUFFER && capacity <= LARGE_OUTPUT && self.large < Self::MAX_LARGE {
            b.output.clear();
            self.large += 1;
        } else {
            release(&mut b.output);
        }
        b.input = Vec::new();
        b.file = None;
        b.written = 0;
        b.in_flight = 0;
        b.in_flight_held = 0;
        b.accounted = 0;
        self.boxes.push(b);
    }
}

/// Everything of a connection but its handler: what a [`Context`] may
/// change, and what the driver and the loop keep.
#[derive(Debug)]
pub(crate) struct Core {
    pub(super) socket: OwnedFd,
    /// Tells this connection from earlier ones in the same slab slot.
    pub(super) generation: u32,
    /// The last time bytes moved, for the idle timeout and the linger.
    pub(super) last_active: Tick,
    /// The handler's deadline.
    deadline: Option<Tick>,
    /// The earliest deadline the loop's timers hold for this connection.
    pub(super) armed: Option<Tick>,
    pub(super) phase: Phase,
    pub(super) flags: Flags,
    /// What the poller was last told (readiness driver).
    pub(super) interest: Interest,
    buffers: Option<Box<Buffers>>,
}

/// What [`Core::pause_if_full`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pause {
    /// Nothing: the output is below the high watermark, or was paused.
    No,
    /// Paused reading: the connection was not paused by the loop before.
    Newly,
    /// Paused reading: the budget had paused it already.
    Again,
}

impl Pause {
    /// Counts the pause in `counters`: an episode, and the gauge if new.
    pub(super) fn count(self, counters: &crate::stats::LiveCounters) {
        if self != Pause::No {
            counters.backpressure_pauses.add(1);
        }
        if self == Pause::Newly {
            counters.paused.add(1);
        }
    }
}

/// A connection: its state and its service's handler.
pub(super) struct Conn<H> {
    pub(super) core: Core,
    pub(super) handler: H,
}

/// How a connection ends, when a call says it must.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fate {
    /// Closed (the descriptor is closed: FIN if nothing is unread).
    Close(CloseReason),
    /// Reset at once at the handler's request ([`Action::Abort`]).
    Abort,
}

/// What a call on a connection needs from its loop.
pub(super) struct Env<'a> {
    pub(super) clock: &'a Clock,
    pub(super) config: &'a Config,
    /// The loop's index, the high half of every [`ConnId`].
    pub(super) loop_index: usize,
    /// The peer's address as `accept` reported it, while the connection is
    /// being opened: `Context::peer` then needs no system call.
    pub(super) accepted_peer: Option<&'a Address>,
}

impl<'a> Env<'a> {
    pub(super) fn new(
        clock: &'a Clock,
        config: &'a Config,
        loop_index: usize,
        accepted_peer: Option<&'a Address>,
    ) -> Env<'a> {
        Env {
            clock,
            config,
            loop_index,
            accepted_peer,
        }
    }
}

impl Core {
    pub(super) fn new(socket: OwnedFd, generation: u32, now: Tick) -> Core {
        Core {
            socket,
            generation,
            last_active: now,
            deadline: None,
            armed: None,
            phase: Phase::Open,
            flags: Flags::default(),
            interest: Interest::READABLE,
            buffers: None,
        }
    }

    /// The connection's socket.
    pub(crate) fn socket(&self) -> &OwnedFd {
        &self.socket
    }

    /// Output produced and not yet sent, a file being sent included.
    #[inline]
    pub(super) fn pending(&self) -> usize {
        self.buffers.as_ref().map_or(0, |b| {
            let file = b
                .file
                .as_ref()
                .map_or(0, |f| usize::try_from(f.left).unwrap_or(usize::MAX));
            (b.output.len() - b.written + b.in_flight).saturating_add(file)
        })
    }

    /// Whether a file is being sent (it follows all the output).
    pub(crate) fn sending_file(&self) -> bool {
        self.buffers.as_ref().is_some_and(|b| b.file.is_some())
    }

    /// Queues `len` bytes of `file` from `offset`, after all the output.
    pub(crate) fn send_file(&mut self, file: File, offset: u64, len: u64) {
        assert!(!self.sending_file(), "a file is already being sent");
        if len > 0 {
            self.buffers().file = Some(FileBody {
                file,
                offset,
                left: len,
                positioned: false,
            });
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    /// The socket and the file being sent, once the output before it is
    /// out: for a driver that hands the file to the kernel (`sendfile`).
    pub(super) fn file_turn(&mut self) -> Option<(&OwnedFd, &mut FileBody)> {
        let b = self.buffers.as_mut()?;
        if b.output.len() > b.written {
            return None;
        }
        Some((&self.socket, b.file.as_mut()?))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    /// `n` bytes of the file went out (by `sendfile`, which advanced the
    /// offset itself): done when none are left.
    pub(super) fn file_sent(&mut self, n: u64, now: Tick) {
        if n > 0 {
            self.last_active = now;
        }
        if let Some(b) = &mut self.buffers
            && let Some(body) = &mut b.file
        {
            body.left -= n.min(body.left);
            if body.left == 0 {
                b.file = None;
            }
        }
    }

    /// For a driver without `sendfile`: reads the file's next chunk into
    /// the output, behind what is there (the head of a response goes out
    /// with the first chunk). The driver calls it when nothing of the
    /// connection's is in flight, so a connection holds one chunk at most. Fails if the file ends
    /// early (it shrank since the handler measured it) or cannot be read:
    /// the length promised cannot be kept.
    pub(super) fn refill_from_file(&mut self) -> io::Result<()> {
        let Some(b) = self.buffers.as_mut() else {
            return Ok(());
        };
        let Some(body) = &mut b.file else {
            return Ok(());
        };
        let n = body.left.min(FILE_CHUNK as u64);
        b.output.reserve(n as usize);
        if !body.positioned {
            (&body.file).seek(io::SeekFrom::Start(body.offset))?;
            body.positioned = true;
        }
        let got = (&body.file).take(n).read_to_end(&mut b.output)?;
        if got as u64 != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "a file being sent ended {} bytes early",
                    body.left - got as u64
                ),
            ));
        }
        body.offset += n;
        body.left -= n;
        if body.left == 0 {
            b.file = None;
        }
        Ok(())
    }

    /// The output not yet sent.
    #[inline]
    pub(super) fn unsent(&self) -> &[u8] {
        self.buffers
            .as_ref()
            .map_or(&[], |b| &b.output[b.written..])
    }

    /// Whether the connection holds bytes: output not sent, or input its
    /// handler left.
    #[inline]
    pub(super) fn holds_bytes(&self) -> bool {
        self.buffers.as_ref().is_some_and(|b| {
            b.output.len() > b.written || b.in_flight > 0 || !b.input.is_empty() || b.file.is_some()
        })
    }

    /// `n` bytes of the pending output went out.
    pub(super) fn sent(&mut self, n: usize, now: Tick) {
        if n == 0 {
            return;
        }
        self.last_active = now;
        if let Some(b) = &mut self.buffers {
            b.written += n;
            if b.written == b.output.len() {
                b.written = 0;
                release(&mut b.output);
            }
        }
    }

    #[cfg(target_os = "linux")]
    /// Completion driver: takes the output produced since the last send, to
    /// hand it to the kernel; it counts as pending until
    /// [`flight_landed`](Self::flight_landed) says it went out.
    pub(super) fn take_for_send(&mut self) -> Option<Vec<u8>> {
        let b = self.buffers.as_mut()?;
        if b.output.is_empty() {
            return None;
        }
        let output = std::mem::take(&mut b.output);
        b.in_flight += output.len();
        b.in_flight_held = output.capacity();
        Some(output)
    }

    #[cfg(target_os = "linux")]
    /// Completion driver: `n` bytes of a send went out; `done` is the
    /// send's buffer when all of it did, kept as the output buffer if that
    /// has none, so that a request answered at once allocates nothing.
    pub(super) fn flight_landed(&mut self, n: usize, done: Option<Vec<u8>>, now: Tick) {
        if n > 0 {
            self.last_active = now;
        }
        let Some(b) = &mut self.buffers else {
            return;
        };
        b.in_flight -= n.min(b.in_flight);
        if let Some(mut done) = done {
            b.in_flight_held = 0;
            // Reused whatever its size while the connection is busy (a
            // stream would otherwise free and grow a buffer per send, and
            // the allocator's heap fragments); an idle connection's buffer
            // is released by `account` as before.
            if b.output.capacity() == 0 {
                done.clear();
                b.output = done;
            }
        }
    }

    #[cfg(target_os = "linux")]
    /// Completion driver: the rest of a short send goes out again from a
    /// buffer of this capacity.
    pub(super) fn flight_continues(&mut self, capacity: usize) {
        if let Some(b) = &mut self.buffers {
            b.in_flight_held = capacity;
        }
    }

    #[cfg(target_os = "linux")]
    /// Completion driver: a send ended without going out (the connection
    /// is being closed): nothing of it is pending any more.
    pub(super) fn flight_lost(&mut self) {
        if let Some(b) = &mut self.buffers {
            b.in_flight = 0;
            b.in_flight_held = 0;
        }
    }

    #[cfg(target_os = "linux")]
    /// Makes sure the connection has its buffers, from `spare` if it can:
    /// a completion driver's handler writes into them.
    pub(super) fn ensure_buffers(&mut self, spare: &mut Spare) {
        if self.buffers.is_none() {
            self.buffers = Some(spare.take());
        }
    }

    /// Takes the output buffer out (unsent bytes from the offset already
    /// sent), for a handler to append to beside a borrow of the rest; give
    /// it back with [`put_output`](Self::put_output).
    pub(super) fn take_output(&mut self) -> Vec<u8> {
        self.buffers
            .as_mut()
            .map(|b| std::mem::take(&mut b.output))
            .unwrap_or_default()
    }

    pub(super) fn put_output(&mut self, output: Vec<u8>) {
        if output.capacity() > 0 {
            self.buffers().output = output;
        }
    }

    /// Queues output the driver could not send yet.
    #[inline]
    pub(super) fn keep_output(&mut self, unsent: &[u8]) {
        if !unsent.is_empty() {
            self.buffers().output.extend_from_slice(unsent);
        }
    }

    /// Whether the driver should read: the connection is open and not
    /// paused, or lingering (its input is discarded).
    #[inline]
    pub(super) fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Open => !self.flags.has(Flags::PAUSED),
            Phase::Lingering => true,
            Phase::Draining(_) | Phase::Closing => false,
        }
    }

    /// The readiness the poller should report.
    #[inline]
    pub(super) fn wanted_interest(&self) -> Interest {
        let mut interest = Interest::NONE;
        if self.wants_read() {
            interest = interest | Interest::READABLE;
        }
        if self.pending() > 0 {
            interest = interest | Interest::WRITABLE;
        }
        interest
    }

    /// The handler's deadline, if it has one.
    #[inline]
    pub(super) fn deadline(&self) -> Option<Tick> {
        self.deadline
    }

    pub(crate) fn set_deadline(&mut self, deadline: Option<Tick>) {
        self.deadline = deadline;
    }

    pub(crate) fn pause_by_handler(&mut self, paused: bool) {
        self.flags.set(Flags::PAUSED_HANDLER, paused);
    }

    pub(crate) fn paused_by_handler(&self) -> bool {
        self.flags.has(Flags::PAUSED_HANDLER)
    }

    pub(crate) fn request_drain_notice(&mut self) {
        self.flags.set(Flags::DRAIN_NOTICE, true);
    }

    #[cfg(feature = "tls")]
    pub(crate) fn drain_notice_requested(&self) -> bool {
        self.flags.has(Flags::DRAIN_NOTICE)
    }

    #[cfg(feature = "tls")]
    pub(crate) fn take_drain_notice(&mut self) -> bool {
        let asked = self.flags.has(Flags::DRAIN_NOTICE);
        self.flags.set(Flags::DRAIN_NOTICE, false);
        asked
    }

    /// Lifts the output and budget pauses once the output has drained to
    /// `low` (the budget is looked at again before the next read); says
    /// whether the connection was paused by the loop and no longer is.
    #[inline]
    pub(super) fn resume_if_drained(&mut self, low: usize) -> bool {
        let lifted = self.pending() <= low && self.flags.has(Flags::PAUSED_BY_LOOP);
        if lifted {
            self.flags.set(Flags::PAUSED_BY_LOOP, false);
        }
        lifted
    }

    /// Pauses reading for the buffer budget; says whether the connection
    /// was not paused by the loop before (the gauge's count grows).
    pub(super) fn pause_for_budget(&mut self) -> bool {
        let newly = !self.flags.has(Flags::PAUSED_BY_LOOP);
        self.flags.set(Flags::PAUSED_BUDGET, true);
        newly
    }

    /// Lifts the budget pause (the server is back under budget); says
    /// whether the connection is no longer paused by the loop at all (the
    /// gauge's count falls).
    pub(super) fn lift_budget_pause(&mut self) -> bool {
        self.flags.set(Flags::PAUSED_BUDGET, false);
        !self.flags.has(Flags::PAUSED_OUTPUT)
    }

    /// Pauses reading once the output passes `high`; says whether it did.
    #[inline]
    pub(super) fn pause_if_full(&mut self, high: usize) -> Pause {
        if self.flags.has(Flags::PAUSED_OUTPUT) || self.pending() < high {
            return Pause::No;
        }
        let newly = !self.flags.has(Flags::PAUSED_BUDGET);
        self.flags.set(Flags::PAUSED_OUTPUT, true);
        if newly { Pause::Newly } else { Pause::Again }
    }

    fn buffers(&mut self) -> &mut Buffers {
        self.buffers.get_or_insert_with(Box::default)
    }

    /// Takes the leftover input out, to hand it to the handler beside a
    /// mutable borrow of the rest.
    #[inline]
    fn take_input(&mut self) -> Vec<u8> {
        self.buffers
            .as_mut()
            .map(|b| std::mem::take(&mut b.input))
            .unwrap_or_default()
    }

    #[inline]
    fn put_input(&mut self, input: Vec<u8>) {
        if input.capacity() > 0 {
            self.buffers().input = input;
        }
    }

    /// Drops leftover input that will never be handled.
    fn drop_input(&mut self) {
        if let Some(b) = &mut self.buffers {
            b.input = Vec::new();
        }
    }

    /// The input the handler left unconsumed, kept for its next call.
    pub(super) fn leftover_input(&self) -> &[u8] {
        self.buffers.as_ref().map_or(&[], |b| &b.input)
    }

    /// What follows once the output is all out: a draining connection
    /// closes; one its handler closed sends FIN and lingers from `now`.
    /// Closing at once, with input unread in the kernel, would send a reset
    /// that can destroy that output before the client reads it (pitfall
    /// 8); so the driver reads and discards until the client closes too,
    /// for at most the linger time (the loop's timers enforce it).
    pub(super) fn end_if_flushed(&mut self, now: Tick) -> Result<(), Fate> {
        match self.phase {
            Phase::Draining(reason) => Err(Fate::Close(reason)),
            Phase::Closing => {
                if net::shutdown_write(&self.socket).is_err() {
                    return Err(Fate::Close(CloseReason::Service));
                }
                self.phase = Phase::Lingering;
                self.last_active = now;
                Ok(())
            }
            Phase::Open | Phase::Lingering => Ok(()),
        }
    }

    /// Counts what the connection's buffers hold now into the loop's
    /// `unpublished` change, and frees the buffers (to `spare`) once they
    /// are empty.
    #[inline]
    pub(super) fn account(&mut self, unpublished: &mut isize, spare: &mut Spare) {
        if self.buffers.is_some() {
            self.account_buffers(unpublished, spare);
        }
    }

    fn account_buffers(&mut self, unpublished: &mut isize, spare: &mut Spare) {
        let Some(b) = &mut self.buffers else {
            return;
        };
        let empty = b.input.is_empty()
            && b.output.len() == b.written
            && b.in_flight == 0
            && b.file.is_none();
        let held = if empty {
            0
        } else {
            b.input.capacity() + b.output.capacity() + b.in_flight_held
        };
        let accounted = std::mem::replace(&mut b.accounted, held);
        if empty && let Some(b) = self.buffers.take() {
            spare.put(b);
        }
        *unpublished += held as isize - accounted as isize;
    }

    /// Forgets the buffers of a connection being closed (accounted first).
    pub(super) fn discard_buffers(&mut self, unpublished: &mut isize, spare: &mut Spare) {
        if let Some(b) = &mut self.buffers {
            b.input.clear();
            b.output.clear();
            b.file = None;
            b.written = 0;
            b.in_flight = 0;
            b.in_flight_held = 0;
        }
        self.account(unpublished, spare);
    }
}

impl<H: Handler> Conn<H> {
    /// Calls the handler with a context whose output is `out`; a panic in
    /// it closes the connection as an error.
    fn call<R>(
        &mut self,
        what: &str,
        out: &mut Vec<u8>,
        env: &Env<'_>,
        f: impl FnOnce(&mut H, &mut Context<'_>) -> R,
    ) -> Result<R, Fate> {
        let id = ConnId(((env.loop_index as u64) << 32) | u64::from(self.core.generation));
        let mut cx = Context {
            output: out,
            core: &mut self.core,
            clock: env.clock,
            id,
            known_peer: env.accepted_peer,
            max_input: env.config.max_input,
            #[cfg(feature = "tls")]
            file_slot: None,
        };
        let handler = &mut self.handler;
        contain_panic(what, || f(handler, &mut cx)).ok_or(Fate::Close(CloseReason::Error))
    }

    /// The connection is open: the handler may speak first, into `out`.
    pub(super) fn opened(&mut self, out: &mut Vec<u8>, env: &Env<'_>) -> Result<(), Fate> {
        let action = self.call("Handler::on_open", out, env, |h, cx| h.on_open(cx))?;
        self.apply(action)
    }

    /// `fresh` bytes arrived: the handler sees them after any leftovers,
    /// and what it writes goes to `out`. What it leaves (at most
    /// `max_input`) is kept for the next call.
    pub(super) fn received(
        &mut self,
        fresh: &[u8],
        out: &mut Vec<u8>,
        env: &Env<'_>,
    ) -> Result<(), Fate> {
        self.core.last_active = env.clock.tick();
        let mut leftovers = self.core.take_input();
        // Leftovers from earlier reads come first; the new bytes join them.
        let direct = leftovers.is_empty();
        if !direct {
            leftovers.extend_from_slice(fresh);
        }
        let bytes = if direct { fresh } else { &leftovers[..] };
        let mut input = Input::new(bytes);
        let action = self.call("Handler::on_data", out, env, |h, cx| {
            h.on_data(&mut input, cx)
        })?;
        let consumed = input.consumed();
        let left = bytes.len() - consumed;
        if action != Action::Continue {
            // Whatever input is left will never be handled.
            self.core.drop_input();
            return self.apply(action);
        }
        // What the handler left is what the limit bounds: a client that
        // never ends its line (or frame) costs at most `max_input`.
        if left > env.config.max_input {
            debug!("input limit of {} bytes exceeded", env.config.max_input);
            return Err(Fate::Close(CloseReason::Error));
        }
        if direct {
            if left > 0 {
                leftovers.extend_from_slice(&fresh[consumed..]);
            }
        } else if left == 0 {
            release(&mut leftovers);
        } else {
            leftovers.drain(..consumed);
        }
        self.core.put_input(leftovers);
        Ok(())
    }

    /// The peer closed its side: the handler sees its leftovers and says
    /// its last words; the connection closes once they are sent.
    pub(super) fn read_closed(&mut self, out: &mut Vec<u8>, env: &Env<'_>) -> Result<(), Fate> {
        if self.core.phase != Phase::Open {
            return Ok(());
        }
        self.core.phase = Phase::Draining(CloseReason::Peer);
        let leftovers = self.core.take_input();
        self.call("Handler::on_read_closed", out, env, |h, cx| {
            h.on_read_closed(&leftovers, cx);
        })
    }

    /// The output has drained to the low watermark and the handler asked
    /// to hear of it: it may write the next chunk to `out`.
    pub(super) fn drained(&mut self, out: &mut Vec<u8>, env: &Env<'_>) -> Result<(), Fate> {
        self.core.flags.set(Flags::DRAIN_NOTICE, false);
        let paused = self.core.flags.has(Flags::PAUSED_HANDLER);
        let action = self.call("Handler::on_drained", out, env, |h, cx| h.on_drained(cx))?;
        self.apply(action)?;
        self.replay_if_resumed(paused, out, env)
    }

    /// The handler's deadline passed.
    pub(super) fn deadline_passed(&mut self, out: &mut Vec<u8>, env: &Env<'_>) -> Result<(), Fate> {
        self.core.deadline = None;
        let paused = self.core.flags.has(Flags::PAUSED_HANDLER);
        let action = self.call("Handler::on_deadline", out, env, |h, cx| h.on_deadline(cx))?;
        self.apply(action)?;
        self.replay_if_resumed(paused, out, env)
    }

    /// A handler that paused its input with some of it unconsumed (a
    /// pipelined request behind a long answer) and has just resumed sees
    /// that input again now: the client may be waiting for its answers
    /// before it sends another byte, so the next read may never come.
    fn replay_if_resumed(
        &mut self,
        was_paused: bool,
        out: &mut Vec<u8>,
        env: &Env<'_>,
    ) -> Result<(), Fate> {
        let resumed = was_paused && !self.core.flags.has(Flags::PAUSED_HANDLER);
        let has_input = !self.core.leftover_input().is_empty();
        if resumed && has_input && self.core.phase == Phase::Open {
            self.received(&[], out, env)
        } else {
            Ok(())
        }
    }

    /// Tells a streaming handler that its output drained, again and again
    /// while it asks to hear it and its output is at or below `low`.
    /// `call` makes one [`drained`](Self::drained) call the driver's way
    /// and says how many bytes it wrote; each call spends that much of
    /// `budget`, at least one (a handler that asks again without writing
    /// must not spin here). Returns true if the budget ran out with the
    /// handler still streaming.
    pub(super) fn stream_while_drained(
        &mut self,
        low: usize,
        budget: &mut usize,
        mut call: impl FnMut(&mut Self) -> Result<usize, Fate>,
    ) -> Result<bool, Fate> {
        while self.wants_drain_notice(low) {
            if *budget == 0 {
                return Ok(true);
            }
            let wrote = call(self)?;
            *budget = budget.saturating_sub(wrote.max(1));
        }
        Ok(false)
    }

    /// Runs `f`, one call into the state machine, with the connection's own
    /// output buffer as its output: for drivers that hand the output over
    /// whole later, not write it at once. Pauses reading above `high`.
    /// Returns how many bytes the call wrote, and whether it paused.
    pub(super) fn call_into_own_output(
        &mut self,
        high: usize,
        f: impl FnOnce(&mut Self, &mut Vec<u8>) -> Result<(), Fate>,
    ) -> Result<(usize, Pause), Fate> {
        let mut own = self.core.take_output();
        let before = own.len();
        let said = f(self, &mut own);
        let wrote = own.len() - before;
        self.core.put_output(own);
        said?;
        Ok((wrote, self.core.pause_if_full(high)))
    }

    /// The connection is closed for `reason`: its buffers are discarded
    /// (and accounted), and its handler hears of it.
    pub(super) fn ended(
        &mut self,
        reason: CloseReason,
        unpublished: &mut isize,
        spare: &mut Spare,
    ) {
        self.core.discard_buffers(unpublished, spare);
        contain_panic("Handler::on_close", || self.handler.on_close(reason));
    }

    /// Whether the handler should hear that its output drained.
    pub(super) fn wants_drain_notice(&self, low: usize) -> bool {
        self.core.flags.has(Flags::DRAIN_NOTICE)
            && matches!(self.core.phase, Phase::Open | Phase::Draining(_))
            && self.core.pending() <= low
            && !self.core.sending_file()
    }

    /// Acts on what a handler call returned.
    fn apply(&mut self, action: Action) -> Result<(), Fate> {
        match action {
            Action::Continue => Ok(()),
            Action::Close => {
                self.core.phase = match self.core.phase {
                    Phase::Open => Phase::Closing,
                    Phase::Draining(_) => Phase::Draining(CloseReason::Service),
                    later => later,
                };
                Ok(())
            }
            Action::Abort => Err(Fate::Abort),
        }
    }
}

/// Empties `buf` and gives its memory back when it is large.
pub(super) fn release(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BUFFER {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{Discard, Echo};

    /// An idle connection of a stateless service costs its slab slot and
    /// nothing else (issue 9: at most 64 bytes of user-space memory).
    #[test]
    fn an_idle_connection_fits_in_a_small_slab_slot() {
        assert!(size_of::<Core>() <= 32, "{}", size_of::<Core>());
        assert_eq!(size_of::<Conn<Echo>>(), size_of::<Core>());
        assert_eq!(size_of::<Conn<Discard>>(), size_of::<Core>());
    }
}
