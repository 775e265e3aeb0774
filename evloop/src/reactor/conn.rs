//! One connection: its state, and driving it — flush, read, hand input to
//! the handler, write what it produced — until it would block.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::debug;

use super::{Shared, contain_panic};
use crate::config::Config;
use crate::net::{self, Outcome};
use crate::poll::{Interest, Poller, Token};
use crate::service::{Action, CloseReason, Handler, Input};
use crate::stats::Counters;

/// The loop's output scratch buffer is freed when a handler made it larger.
pub(super) const MAX_SCRATCH: usize = 1024 * 1024;
/// A connection's buffer larger than this is freed, not kept, when it
/// drains: idle connections hold at most this much each.
pub(super) const KEEP_BUFFER: usize = 4 * 1024;
/// Past the server's buffer budget, a connection that holds no bytes reads
/// this much at a time: it is served, in small steps, and piles up at most
/// this much.
pub(super) const SMALL_READ: usize = 4 * 1024;

pub(super) struct Conn<H> {
    pub(super) socket: OwnedFd,
    pub(super) handler: H,
    /// Input the handler left unconsumed.
    pub(super) input: Vec<u8>,
    /// Output not yet written, from `written` on.
    pub(super) output: Vec<u8>,
    pub(super) written: usize,
    pub(super) generation: u64,
    pub(super) last_active: Instant,
    pub(super) interest: Interest,
    pub(super) read_ready: bool,
    /// Read until `WouldBlock`, never stop at a short read: an event said the
    /// peer closed its side (the end of stream must be read), the socket has
    /// an error, or urgent data is pending (a read stops at its mark).
    pub(super) read_to_block: bool,
    pub(super) write_ready: bool,
    /// Read returned 0: the handler has been told; close once output is out.
    pub(super) input_ended: bool,
    /// The handler asked to close once output is out.
    pub(super) closing: bool,
    /// Closing: FIN sent, input is discarded until the peer closes or the
    /// linger time (from `last_active`) runs out.
    pub(super) write_shut: bool,
    /// Reading stopped: output passed the high watermark, or the server
    /// is over its buffer budget.
    pub(super) paused: bool,
    /// Paused by the buffer budget, and on the loop's list of those.
    pub(super) budget_paused: bool,
    /// The buffer capacity counted in the server's `buffered`.
    pub(super) accounted: usize,
    /// On the ready list.
    pub(super) queued: bool,
}

impl<H> Conn<H> {
    pub(super) fn pending(&self) -> usize {
        self.output.len() - self.written
    }

    /// The memory the connection's buffers hold.
    pub(super) fn held(&self) -> usize {
        self.input.capacity() + self.output.capacity()
    }

    pub(super) fn wanted_interest(&self) -> Interest {
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
pub(super) enum Next {
    Keep,
    /// It stopped with input still readable (budget spent): serve it again
    /// this turn.
    Requeue,
    Close(CloseReason),
}

/// The loop-wide state a connection is driven with, borrowed apart from the
/// connection table.
pub(super) struct Io<'a> {
    pub(super) read_buf: &'a mut [u8],
    pub(super) scratch: &'a mut Vec<u8>,
    pub(super) config: &'a Config,
    pub(super) counters: &'a mut Counters,
    pub(super) now: Instant,
    /// The server's connections hold more than its buffer budget.
    pub(super) over_budget: bool,
}

pub(super) fn update_interest<H>(
    poller: &Poller,
    conn: &mut Conn<H>,
    key: usize,
) -> io::Result<()> {
    let wanted = conn.wanted_interest();
    if wanted != conn.interest {
        poller.reregister(&conn.socket, Token(key), wanted)?;
        conn.interest = wanted;
    }
    Ok(())
}

/// Flushes, reads and hands input to the handler until the connection would
/// block, spends its read budget, is paused, or is done.
pub(super) fn drive_conn<H: Handler>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Next {
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
        let Some(limit) = read_allowance(conn, io) else {
            conn.paused = true;
            conn.budget_paused = true;
            io.counters.budget_pauses += 1;
            break;
        };
        match net::recv(&conn.socket, &mut io.read_buf[..limit]) {
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
                if n < limit && !conn.read_to_block {
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

/// How much the connection may read now: a full buffer while the server
/// holds less than its buffer budget. Past it, a connection that holds
/// bytes (output the client has not taken, input its handler left) stops
/// reading until its output drains or the server is back under budget, and
/// one that holds none reads a little at a time, so a client whose answers
/// go straight out is still served and each connection adds at most one
/// small read to the overshoot (pitfall 13: per-connection bounds are no
/// server bound).
pub(super) fn read_allowance<H>(conn: &Conn<H>, io: &Io<'_>) -> Option<usize> {
    if !io.over_budget {
        Some(io.read_buf.len())
    } else if conn.pending() == 0 && conn.input.is_empty() {
        Some(SMALL_READ.min(io.read_buf.len()))
    } else {
        None
    }
}

/// Brings the server's count of buffered bytes up to date with what `conn`
/// holds now. When the count falls back after a peak, the memory the
/// allocator kept is given back to the system (off the loop's thread).
pub(super) fn account_buffers<H>(shared: &Shared, conn: &mut Conn<H>) {
    let held = conn.held();
    if held == conn.accounted {
        return;
    }
    let max = shared.config.max_buffered;
    if held > conn.accounted {
        let total = shared
            .buffered
            .fetch_add(held - conn.accounted, Ordering::Relaxed)
            + (held - conn.accounted);
        if total >= max / 4 && !shared.buffered_peaked.load(Ordering::Relaxed) {
            shared.buffered_peaked.store(true, Ordering::Relaxed);
        }
    } else {
        let total = shared
            .buffered
            .fetch_sub(conn.accounted - held, Ordering::Relaxed)
            - (conn.accounted - held);
        if total <= max / 16 && shared.buffered_peaked.swap(false, Ordering::Relaxed) {
            crate::sys::give_back_free_memory();
        }
    }
    conn.accounted = held;
}

/// The handler asked to close and its output is out. Closing now, with
/// input unread in the kernel, would send a reset that can destroy that
/// output before the client reads it (pitfall 8). So: send FIN
/// (`shutdown(SHUT_WR)`), then read and discard until the client closes too,
/// for at most `LINGER` (the reactor's timer enforces it).
pub(super) fn close_by_service<H>(conn: &mut Conn<H>, io: &mut Io<'_>, mut budget: usize) -> Next {
    if conn.input_ended {
        return Next::Close(CloseReason::Service);
    }
    if !conn.write_shut {
        if net::shutdown_write(&conn.socket).is_err() {
            return Next::Close(CloseReason::Service);
        }
        conn.write_shut = true;
        conn.last_active = io.now; // the lingering starts now
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
    Next::Keep
}

/// Hands the `n` bytes just read (in `io.read_buf`) to the handler, then
/// writes what it produced.
pub(super) fn deliver<H: Handler>(
    conn: &mut Conn<H>,
    n: usize,
    io: &mut Io<'_>,
) -> Result<(), CloseReason> {
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
pub(super) fn end_of_input<H: Handler>(
    conn: &mut Conn<H>,
    io: &mut Io<'_>,
) -> Result<(), CloseReason> {
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
pub(super) fn output_target<'a>(
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
pub(super) fn send_output<H>(
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
pub(super) fn flush<H>(conn: &mut Conn<H>, io: &mut Io<'_>) -> Result<(), CloseReason> {
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
pub(super) fn release(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BUFFER {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// Writes as much of `buf` as the socket takes; returns how much.
pub(super) fn write_all(
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
