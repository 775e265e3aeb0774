//! The readiness driver (epoll, kqueue): moves a connection's bytes with
//! non-blocking `recv`/`send` when its socket is ready, and feeds the
//! connection's state machine (`conn.rs`).
//!
//! Input is read into one buffer per loop; a handler sees it there unless
//! it left bytes unconsumed earlier. Output is produced into one scratch
//! buffer per loop and written at once; only what the socket refuses is
//! copied into the connection's own buffer. So a request answered at once
//! allocates nothing and copies its answer once.

use std::io;

use tracing::debug;

use super::conn::{Conn, Env, Fate, Flags, Phase};
use crate::net::{self, Outcome};
use crate::poll::{Poller, Token};
use crate::service::{CloseReason, Handler};
use crate::stats::LiveCounters;

/// The loop's output scratch buffer is freed when a handler made it larger.
const MAX_SCRATCH: usize = 1024 * 1024;
/// Past the server's buffer budget, a connection that holds no bytes reads
/// this much at a time: it is served, in small steps, and piles up at most
/// this much.
const SMALL_READ: usize = 4 * 1024;

/// What became of a connection after it was driven.
pub(super) enum Next {
    Keep,
    /// It stopped with work left (its read or write budget spent): serve it
    /// again this turn.
    Requeue,
    /// It ended.
    End(Fate),
}

/// The loop-wide state a connection is driven with, borrowed apart from the
/// connection table.
pub(super) struct Io<'a> {
    pub(super) read_buf: &'a mut [u8],
    pub(super) scratch: &'a mut Vec<u8>,
    pub(super) env: Env<'a>,
    pub(super) counters: &'a LiveCounters,
    /// The server's connections hold more than its buffer budget.
    pub(super) over_budget: bool,
}

/// Tells the poller what the connection now wants, if that changed.
pub(super) fn update_interest<H>(
    poller: &Poller,
    conn: &mut Conn<H>,
    key: usize,
) -> io::Result<()> {
    let wanted = conn.core.wanted_interest();
    if wanted != conn.core.interest {
        poller.reregister(&conn.core.socket, Token(key), wanted)?;
        conn.core.interest = wanted;
    }
    Ok(())
}

/// Flushes, feeds the handler what it asked for and what arrives, until the
/// connection would block, spends its budget, is paused, or is done.
pub(super) fn drive_conn<H: Handler>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Next {
    match drive_phases(conn, io) {
        Ok(next) => next,
        Err(fate) => Next::End(fate),
    }
}

/// A new connection: its handler may speak first.
pub(super) fn opened<H: Handler>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Next {
    after_call(conn, io, |conn, _, out, env| conn.opened(out, env))
}

/// The handler's deadline passed.
pub(super) fn deadline_passed<H: Handler>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Next {
    after_call(conn, io, |conn, _, out, env| conn.deadline_passed(out, env))
}

/// A handler call outside a drive, then a drive like after any call.
fn after_call<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Io<'_>,
    call: impl FnOnce(&mut Conn<H>, &[u8], &mut Vec<u8>, &Env<'_>) -> Result<(), Fate>,
) -> Next {
    match call_handler(conn, io, 0, call).and_then(|_| drive_phases(conn, io)) {
        Ok(next) => next,
        Err(fate) => Next::End(fate),
    }
}

fn drive_phases<H: Handler>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Result<Next, Fate> {
    if conn.core.flags.has(Flags::WRITE_READY) && conn.core.pending() > 0 {
        flush(conn, io)?;
    }
    if conn.core.resume_if_drained(io.env.config.low_watermark) {
        io.counters.paused.sub(1);
    }
    let mut budget = io.env.config.read_budget;
    if stream_drained(conn, io, &mut budget)? {
        return Ok(Next::Requeue);
    }
    match conn.core.phase {
        Phase::Open => {
            if read_and_deliver(conn, io, &mut budget)? {
                return Ok(Next::Requeue);
            }
            if stream_drained(conn, io, &mut budget)? {
                return Ok(Next::Requeue);
            }
            // A handler that resumed reading from `on_drained` may have
            // input waiting (an edge already seen, an end of input): it is
            // read on the next pass, not when an edge that may never come.
            if conn.core.flags.has(Flags::READ_READY) && conn.core.wants_read() {
                return Ok(Next::Requeue);
            }
        }
        Phase::Lingering => return discard(conn, io, budget),
        Phase::Draining(_) | Phase::Closing => {}
    }
    if conn.core.pending() > 0 {
        return Ok(Next::Keep);
    }
    conn.core.end_if_flushed(io.env.clock.tick())?;
    if conn.core.phase == Phase::Lingering {
        // Lingering from now: what the client still sends is dropped.
        return discard(conn, io, budget);
    }
    Ok(Next::Keep)
}

/// Reads and hands input to the handler while the connection wants it;
/// returns true if the read budget ran out with input left.
fn read_and_deliver<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Io<'_>,
    budget: &mut usize,
) -> Result<bool, Fate> {
    while conn.core.flags.has(Flags::READ_READY) && conn.core.wants_read() {
        if *budget == 0 {
            return Ok(true);
        }
        let Some(limit) = read_allowance(conn, io) else {
            if conn.core.pause_for_budget() {
                io.counters.paused.add(1);
            }
            io.counters.budget_pauses.add(1);
            break;
        };
        match net::recv(&conn.core.socket, &mut io.read_buf[..limit]) {
            Outcome::Done(0) => {
                conn.core.flags.set(Flags::READ_READY, false);
                call_handler(conn, io, 0, |conn, _, out, env| conn.read_closed(out, env))?;
            }
            Outcome::Done(n) => {
                io.counters.bytes_in.add(n as u64);
                *budget = budget.saturating_sub(n);
                // A short read drained the socket: a byte that arrives later
                // raises a new edge, so the WouldBlock read would be a wasted
                // system call per request.
                if n < limit && !conn.core.flags.has(Flags::READ_TO_BLOCK) {
                    conn.core.flags.set(Flags::READ_READY, false);
                }
                call_handler(conn, io, n, |conn, fresh, out, env| {
                    conn.received(fresh, out, env)
                })?;
            }
            Outcome::WouldBlock => conn.core.flags.set(Flags::READ_READY, false),
            Outcome::Reset(e) => return Err(failed("read", &e, CloseReason::Reset)),
            Outcome::Failed(e) => return Err(failed("read", &e, CloseReason::Error)),
        }
    }
    Ok(false)
}

/// Calls the handler back while it streams (it asked to hear when its
/// output drained) and the socket takes what it writes; returns true if
/// the budget ran out with the handler still streaming. Checked twice per
/// drive and rarely due: the check is inline, the loop is not.
#[inline]
fn stream_drained<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Io<'_>,
    budget: &mut usize,
) -> Result<bool, Fate> {
    if !conn.wants_drain_notice(io.env.config.low_watermark) {
        return Ok(false);
    }
    stream_while_drained(conn, io, budget)
}

#[inline(never)]
fn stream_while_drained<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Io<'_>,
    budget: &mut usize,
) -> Result<bool, Fate> {
    let low = io.env.config.low_watermark;
    conn.stream_while_drained(low, budget, |conn| {
        call_handler(conn, io, 0, |conn, _, out, env| conn.drained(out, env))
    })
}

/// How much the connection may read now: a full buffer while the server
/// holds less than its buffer budget. Past it, a connection that holds
/// bytes (output the client has not taken, input its handler left) stops
/// reading until its output drains or the server is back under budget, and
/// one that holds none reads a little at a time, so a client whose answers
/// go straight out is still served and each connection adds at most one
/// small read to the overshoot (pitfall 13: per-connection bounds are no
/// server bound).
fn read_allowance<H>(conn: &Conn<H>, io: &Io<'_>) -> Option<usize> {
    if !io.over_budget {
        Some(io.read_buf.len())
    } else if !conn.core.holds_bytes() {
        Some(SMALL_READ.min(io.read_buf.len()))
    } else {
        None
    }
}

/// Reads and drops what a lingering connection's client still sends.
/// Discarded bytes are not activity: they cannot prolong the linger.
fn discard<H>(conn: &mut Conn<H>, io: &mut Io<'_>, mut budget: usize) -> Result<Next, Fate> {
    while conn.core.flags.has(Flags::READ_READY) {
        if budget == 0 {
            return Ok(Next::Requeue);
        }
        match net::recv(&conn.core.socket, io.read_buf) {
            Outcome::Done(0) | Outcome::Reset(_) | Outcome::Failed(_) => {
                return Err(Fate::Close(CloseReason::Service));
            }
            Outcome::Done(n) => {
                io.counters.bytes_in.add(n as u64);
                budget = budget.saturating_sub(n);
            }
            Outcome::WouldBlock => conn.core.flags.set(Flags::READ_READY, false),
        }
    }
    Ok(Next::Keep)
}

/// Runs `call` — one call into the connection's state machine, given the
/// bytes just read (the first `fresh` of the read buffer), the buffer to
/// write into and the loop's context — and sends what the handler wrote;
/// returns how many bytes that was. With nothing pending, the output goes
/// to the loop's scratch buffer and straight to the socket (only what it
/// does not take is kept); with output pending, the handler appends to the
/// connection's own buffer, behind it — never a copy from one to the other.
/// An abort, a panic or a broken input limit ends the connection with
/// nothing sent. Pauses reading above the high watermark.
fn call_handler<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Io<'_>,
    fresh: usize,
    call: impl FnOnce(&mut Conn<H>, &[u8], &mut Vec<u8>, &Env<'_>) -> Result<(), Fate>,
) -> Result<usize, Fate> {
    let wrote = if conn.core.pending() > 0 {
        let mut own = conn.core.take_output();
        let before = own.len();
        let said = call(conn, &io.read_buf[..fresh], &mut own, &io.env);
        let wrote = own.len() - before;
        conn.core.put_output(own);
        said?;
        let more = wrote > 0 || conn.core.sending_file();
        if more && conn.core.flags.has(Flags::WRITE_READY) {
            flush(conn, io)?;
        }
        wrote
    } else {
        io.scratch.clear();
        call(conn, &io.read_buf[..fresh], io.scratch, &io.env)?;
        if !io.scratch.is_empty() {
            write_from_scratch(conn, io)?;
        }
        if conn.core.sending_file() && conn.core.flags.has(Flags::WRITE_READY) {
            flush(conn, io)?;
        }
        let wrote = io.scratch.len();
        // One huge answer must not pin its memory for the loop's lifetime.
        if io.scratch.capacity() > MAX_SCRATCH {
            *io.scratch = Vec::new();
        }
        wrote
    };
    conn.core
        .pause_if_full(io.env.config.high_watermark)
        .count(io.counters);
    Ok(wrote)
}

fn write_from_scratch<H>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Result<(), Fate> {
    let ready = conn.core.flags.has(Flags::WRITE_READY);
    let (sent, still_ready) = if ready {
        let more = conn.core.sending_file();
        write_all(&conn.core.socket, io.scratch, more, io.counters)?
    } else {
        (0, false)
    };
    conn.core.flags.set(Flags::WRITE_READY, still_ready);
    if sent > 0 {
        conn.core.last_active = io.env.clock.tick();
    }
    conn.core.keep_output(&io.scratch[sent..]);
    Ok(())
}

/// Writes the connection's pending output, then the file being sent if
/// any, until done or the socket is full.
fn flush<H>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Result<(), Fate> {
    loop {
        let more = conn.core.sending_file();
        let unsent = conn.core.unsent();
        let (sent, still_ready) = write_all(&conn.core.socket, unsent, more, io.counters)?;
        conn.core.flags.set(Flags::WRITE_READY, still_ready);
        conn.core.sent(sent, io.env.clock.tick());
        if !still_ready || !conn.core.sending_file() {
            return Ok(());
        }
        let still_ready = send_file(conn, io)?;
        conn.core.flags.set(Flags::WRITE_READY, still_ready);
        if !still_ready {
            return Ok(());
        }
    }
}

/// The file's turn, on Linux: the kernel sends it from the page cache
/// (`sendfile`) until it is out or the socket is full; returns whether the
/// socket may take more.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_file<H>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Result<bool, Fate> {
    let now = io.env.clock.tick();
    while let Some((socket, body)) = conn.core.file_turn() {
        let n = match net::sendfile(socket, &body.file, &mut body.offset, body.left) {
            Outcome::Done(0) => {
                debug!("a file being sent ended {} bytes early", body.left);
                return Err(Fate::Abort);
            }
            Outcome::Done(n) => n,
            Outcome::WouldBlock => return Ok(false),
            Outcome::Reset(e) => return Err(failed("sendfile", &e, CloseReason::Reset)),
            Outcome::Failed(e) => return Err(failed("sendfile", &e, CloseReason::Error)),
        };
        io.counters.bytes_out.add(n as u64);
        conn.core.file_sent(n as u64, now);
    }
    Ok(true)
}

/// The file's turn, elsewhere: its next chunk is read into the output,
/// which the caller writes.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_file<H>(conn: &mut Conn<H>, _io: &mut Io<'_>) -> Result<bool, Fate> {
    conn.core.refill_from_file().map_err(|e| {
        debug!("reading a file being sent: {e}");
        Fate::Abort
    })?;
    Ok(true)
}

/// Writes as much of `buf` as the socket takes, `more` if a file follows
/// it; returns how much, and whether the socket may take more.
fn write_all(
    socket: &impl std::os::fd::AsFd,
    buf: &[u8],
    more: bool,
    counters: &LiveCounters,
) -> Result<(usize, bool), Fate> {
    let mut sent = 0;
    let mut ready = true;
    while sent < buf.len() {
        let outcome = if more {
            net::send_more(socket, &buf[sent..])
        } else {
            net::send(socket, &buf[sent..])
        };
        match outcome {
            Outcome::Done(n) => sent += n,
            Outcome::WouldBlock => {
                ready = false;
                break;
            }
            Outcome::Reset(e) => return Err(failed("write", &e, CloseReason::Reset)),
            Outcome::Failed(e) => return Err(failed("write", &e, CloseReason::Error)),
        }
    }
    counters.bytes_out.add(sent as u64);
    Ok((sent, ready))
}

/// A read or write failed: the connection ends for `reason` (its errors
/// never leave it; they are logged at debug level only).
fn failed(op: &str, e: &io::Error, reason: CloseReason) -> Fate {
    debug!("{op}: {e}");
    Fate::Close(reason)
}
