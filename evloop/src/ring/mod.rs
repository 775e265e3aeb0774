//! io_uring (Linux) behind a small safe API: a completion queue that owns
//! every buffer the kernel may touch while an operation is in flight.
//!
//! The readiness queues of [`poll`](crate::poll) say *when* a socket may be
//! read or written, and the owner then calls `recv` and `send` itself. A
//! [`Ring`] instead takes the operations — accept, receive, send — and
//! reports each one's result later as a [`Completion`]. Two rules of the
//! kernel's make that unsafe to do by hand, and this module keeps them:
//!
//! * **A buffer handed to the kernel must stay put until the completion
//!   arrives.** [`Ring::send`] takes the output `Vec` by value and keeps it
//!   until its completion, where [`Ring::take_sent`] gives it back (moving a
//!   `Vec` never moves its bytes). Receives use buffers the ring itself
//!   provides (a *provided buffer ring*, registered once): a multishot
//!   receive picks one per completion, the owner reads it with
//!   [`Ring::received`] and hands it back with [`Ring::recycle`], which
//!   refuses a buffer the kernel already holds.
//! * **Nothing is freed while the kernel may still write to it.** Dropping
//!   a ring cancels what is in flight and waits (bounded) for the
//!   completions before its buffers are freed; buffers whose operations
//!   never completed are leaked, not freed under the kernel.
//!
//! Operations carry the owner's [`Op`] and a 32-bit token, as a
//! [`Token`](crate::poll::Token) identifies a source on a poller.
//! Completions are fetched in batches by [`Ring::submit_and_wait`], which
//! submits the queued operations and waits with one system call.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::opcode;
use io_uring::types::{BufRingEntry, CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, squeue};
use slab::Slab;

use crate::error;

/// The buffer group of the ring's provided receive buffers.
const BUFFER_GROUP: u16 = 0;
/// The longest a dropped ring waits for its cancelled operations.
const DROP_WAIT: Duration = Duration::from_secs(1);

/// What an operation was, as its completion reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// [`Ring::accept_multi`].
    Accept = 1,
    /// [`Ring::recv_multi`].
    Recv,
    /// [`Ring::send`].
    Send,
    /// [`Ring::read_eventfd`].
    Wake,
    /// [`Ring::cancel_fd`].
    Cancel,
}

impl Op {
    fn from_bits(bits: u8) -> Option<Op> {
        Some(match bits {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Wake,
            5 => Op::Cancel,
            _ => return None,
        })
    }
}

/// How the ring was set up: the cheapest task-running mode the kernel has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (6.1):
    /// completions are run only when the owner waits, on its own thread.
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19): no interrupting the owner to run
    /// completion work.
    CoopTaskrun,
    /// Neither.
    Plain,
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Setup::DeferTaskrun => "single-issuer+defer-taskrun",
            Setup::CoopTaskrun => "coop-taskrun",
            Setup::Plain => "plain",
        })
    }
}

/// The sizes of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Submission queue entries (the completion queue has four times as
    /// many). Rounded up to a power of two by the kernel.
    pub entries: u32,
    /// Provided receive buffers: how many (a power of two, at most 32768).
    pub buffers: u16,
    /// The size of each receive buffer: the most one receive completion
    /// delivers.
    pub buffer_size: u32,
}

impl Default for RingConfig {
    fn default() -> RingConfig {
        RingConfig {
            entries: 1024,
            buffers: 1024,
            buffer_size: 4096,
        }
    }
}

/// One finished operation (or, for a multishot one, one of its results).
/// Not `Clone`: an accept's descriptor is taken from it once.
#[derive(Debug)]
pub struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
}

impl Completion {
    /// The operation, as submitted.
    pub fn op(&self) -> Op {
        Op::from_bits((self.user_data >> 32) as u8).unwrap_or(Op::Cancel)
    }

    /// The token it was submitted with.
    pub fn token(&self) -> u32 {
        self.user_data as u32
    }

    /// The result: bytes moved, a new descriptor (accept), or an error.
    pub fn result(&self) -> io::Result<u32> {
        if self.result < 0 {
            Err(io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as u32)
        }
    }

    /// The connection an accept completion delivered, as an owned
    /// descriptor (close-on-exec, blocking mode as the listener's).
    pub fn accepted(self) -> io::Result<OwnedFd> {
        if self.op() != Op::Accept {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an accept completion",
            ));
        }
        let fd = self.result()?;
        // SAFETY: the kernel installed this descriptor for this accept and
        // nobody else knows of it; taking `self` by value makes this the only
        // owner.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Whether a multishot operation goes on after this completion. When
    /// false it has ended (an error, the end of input, or the kernel's
    /// choice) and must be submitted again to go on.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer a receive completion filled, if any.
    fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    fn send_slot(&self) -> usize {
        (self.user_data >> 40) as usize
    }
}

/// An io_uring with its provided receive buffers and the send buffers in
/// flight.
pub struct Ring {
    uring: IoUring,
    setup: Setup,
    buffers: BufferRing,
    /// The output of each send in flight, by slot, until its completion.
    sends: Slab<(Vec<u8>, usize)>,
    /// The 8 bytes an eventfd read lands in (boxed: the kernel writes there).
    wake_buf: Box<u64>,
    /// Operations whose last completion has not arrived yet.
    in_flight: usize,
    /// What a wait holds out for.
    batch: Option<Batch>,
}

/// A wait that holds out for a batch of completions: see
/// [`Ring::set_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Completions to wait for.
    pub want: usize,
    /// How long to wait for them before one is enough.
    pub min_wait: Duration,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("setup", &self.setup)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring with its receive buffers, set up with the cheapest
    /// task-running mode the kernel accepts. Fails with the kernel's error
    /// where io_uring is disabled, forbidden (seccomp: `EPERM`), too old or
    /// short of locked memory; [`Ring::probe`] says which.
    pub fn new(config: RingConfig) -> io::Result<Ring> {
        let (uring, setup) = setup_ring(config.entries)?;
        let params = uring.params();
        if !params.is_feature_ext_arg() || !params.is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring: the kernel lacks waiting with a timeout (5.11) or a lossless completion queue",
            ));
        }
        let mut probe = Probe::new();
        uring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| error::context(e, "io_uring probe"))?;
        // Multishot receive arrived in 6.0 with zero-copy send: the one
        // marks the other, which has no opcode of its own to probe.
        let needed = [
            ("accept", opcode::AcceptMulti::CODE),
            ("recv", opcode::Recv::CODE),
            ("send", opcode::Send::CODE),
            ("read", opcode::Read::CODE),
            ("async cancel", opcode::AsyncCancel2::CODE),
            ("multishot recv (6.0)", opcode::SendZc::CODE),
        ];
        if let Some((name, _)) = needed.iter().find(|(_, code)| !probe.is_supported(*code)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring: the kernel lacks {name}"),
            ));
        }
        let buffers = BufferRing::new(&uring, config.buffers, config.buffer_size)?;
        Ok(Ring {
            uring,
            setup,
            buffers,
            sends: Slab::new(),
            wake_buf: Box::new(0),
            in_flight: 0,
            batch: None,
        })
    }

    /// Whether a ring can be made here, with the smallest sizes: `Ok` with
    /// its setup, or the error that stops it.
    pub fn probe() -> io::Result<Setup> {
        let ring = Ring::new(RingConfig {
            entries: 2,
            buffers: 1,
            buffer_size: 64,
        })?;
        Ok(ring.setup)
    }

    /// The setup the kernel accepted.
    pub fn setup(&self) -> Setup {
        self.setup
    }

    /// Operations whose last completion has not arrived.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Makes the next waits hold out for a batch: they return once
    /// `batch.want` completions are there, or, after `batch.min_wait`, as
    /// soon as one is (Linux 6.12, `IORING_FEAT_MIN_TIMEOUT`; ignored where
    /// the kernel lacks it). Under load a turn then serves more completions
    /// for its one system call, for at most `min_wait` more latency. `None`:
    /// return as soon as one completion is there.
    pub fn set_batch(&mut self, batch: Option<Batch>) {
        self.batch = batch;
    }

    /// Whether the completion queue has overflowed since the kernel last
    /// flushed it: the completions that did not fit are kept by the kernel
    /// (the ring requires `IORING_FEAT_NODROP`) and come with the next wait.
    pub fn overflowed(&mut self) -> bool {
        self.uring.submission().cq_overflow()
    }

    /// Accepts connections on `listener` until cancelled or an error ends
    /// it; each completion's result is a new descriptor, close-on-exec.
    pub fn accept_multi(&mut self, listener: BorrowedFd<'_>, token: u32) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build();
        self.push(entry, Op::Accept, token, 0)
    }

    /// Receives into the provided buffers until cancelled, the end of
    /// input (a result of 0), an error, or the buffers run out (`ENOBUFS`).
    pub fn recv_multi(&mut self, socket: BorrowedFd<'_>, token: u32) -> io::Result<()> {
        let entry = opcode::RecvMulti::new(Fd(socket.as_raw_fd()), BUFFER_GROUP).build();
        self.push(entry, Op::Recv, token, 0)
    }

    /// Receives once into a provided buffer: like
    /// [`recv_multi`](Self::recv_multi) but ends after one completion.
    /// For sockets where multishot receive is unreliable: on Unix stream
    /// sockets it can miss the end of input (fixed in Linux in 2026, still
    /// present in kernels in use).
    pub fn recv_once(&mut self, socket: BorrowedFd<'_>, token: u32) -> io::Result<()> {
        let entry = opcode::Recv::new(
            Fd(socket.as_raw_fd()),
            std::ptr::null_mut(),
            self.buffers.size,
        )
        .buf_group(BUFFER_GROUP)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
        self.push(entry, Op::Recv, token, 0)
    }

    /// Sends `output[start..]`. The ring keeps `output` until the send's
    /// completion, from which [`take_sent`](Self::take_sent) returns it.
    pub fn send(
        &mut self,
        socket: BorrowedFd<'_>,
        output: Vec<u8>,
        start: usize,
        token: u32,
    ) -> io::Result<()> {
        let rest = &output[start..];
        let (ptr, len) = (rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32);
        let entry = opcode::Send::new(Fd(socket.as_raw_fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        let slot = self.sends.insert((output, start));
        let pushed = self.push(entry, Op::Send, token, slot as u64);
        if pushed.is_err() {
            self.sends.remove(slot);
        }
        pushed
    }

    /// The output a send completion is done with, and where in it the
    /// send started.
    pub fn take_sent(&mut self, completion: &Completion) -> Option<(Vec<u8>, usize)> {
        if completion.op() != Op::Send {
            return None;
        }
        self.sends.try_remove(completion.send_slot())
    }

    /// Reads the 8-byte counter of `eventfd` once (a cross-thread wake).
    pub fn read_eventfd(&mut self, eventfd: BorrowedFd<'_>, token: u32) -> io::Result<()> {
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(Fd(eventfd.as_raw_fd()), buf.cast(), 8).build();
        self.push(entry, Op::Wake, token, 0)
    }

    /// Cancels every operation in flight on `fd`; each ends with
    /// `ECANCELED` (or its own result, if it finished first).
    pub fn cancel_fd(&mut self, fd: BorrowedFd<'_>, token: u32) -> io::Result<()> {
        let builder = CancelBuilder::fd(Fd(fd.as_raw_fd())).all();
        self.push(
            opcode::AsyncCancel2::new(builder).build(),
            Op::Cancel,
            token,
            0,
        )
    }

    /// Cancels the accept or receive submitted with `token` (a send is
    /// cancelled with its descriptor, [`cancel_fd`](Self::cancel_fd)). Unlike
    /// a cancel by descriptor, this one works after the descriptor is
    /// closed: a closed listener's accept goes on until cancelled.
    pub fn cancel(&mut self, op: Op, token: u32) -> io::Result<()> {
        let target = ((op as u64) << 32) | u64::from(token);
        let builder = CancelBuilder::user_data(target);
        self.push(
            opcode::AsyncCancel2::new(builder).build(),
            Op::Cancel,
            token,
            0,
        )
    }

    fn push(&mut self, entry: squeue::Entry, op: Op, token: u32, slot: u64) -> io::Result<()> {
        let entry = entry.user_data((slot << 40) | ((op as u64) << 32) | u64::from(token));
        loop {
            // SAFETY: every buffer an entry points to outlives the
            // operation: sends point into a `Vec` kept in `self.sends`
            // until its completion; the eventfd read into `self.wake_buf`,
            // boxed and freed only in `drop` after the ring's operations
            // ended; receives into the provided buffers, likewise.
            // Descriptors are the caller's and the kernel takes its own
            // reference to the file when the entry is submitted.
            match unsafe { self.uring.submission().push(&entry) } {
                Ok(()) => {
                    self.in_flight += 1;
                    return Ok(());
                }
                // A full submission queue goes to the kernel now.
                Err(_) => {
                    let submitted = self
                        .uring
                        .submit()
                        .map_err(|e| error::context(e, "io_uring submit"))?;
                    if submitted == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "io_uring: the submission queue is full and the kernel took nothing",
                        ));
                    }
                }
            }
        }
    }

    /// Submits what is queued, waits for a completion at most `timeout`
    /// (`None`: until one arrives), and appends the completions to
    /// `completions`, at most its spare capacity.
    pub fn submit_and_wait(
        &mut self,
        completions: &mut Vec<Completion>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        completions.clear();
        if self.uring.completion().is_empty() {
            let (want, min_wait) = match self.batch {
                Some(batch) if self.uring.params().is_feature_min_timeout() => {
                    (batch.want, batch.min_wait.as_micros() as u32)
                }
                _ => (1, 0),
            };
            let args = SubmitArgs::new().min_wait_usec(min_wait);
            let submitter = self.uring.submitter();
            let waited = match timeout {
                None => submitter.submit_with_args(want, &args),
                Some(timeout) => {
                    let ts = Timespec::from(timeout);
                    submitter.submit_with_args(want, &args.timespec(&ts))
                }
            };
            match waited {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(error::context(e, "io_uring wait")),
            }
        } else if !self.uring.submission().is_empty() {
            self.uring
                .submit()
                .map_err(|e| error::context(e, "io_uring submit"))?;
        }
        let room = completions.capacity();
        for cqe in self.uring.completion().take(room) {
            let completion = Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            };
            if !completion.more() {
                self.in_flight -= 1;
            }
            if let Some(id) = completion.buffer_id() {
                self.buffers.taken(id);
            }
            completions.push(completion);
        }
        Ok(())
    }

    /// The bytes a receive completion delivered, with the id of the
    /// buffer that holds them: hand it back with [`recycle`](Self::recycle)
    /// once they are consumed.
    pub fn received(&self, completion: &Completion) -> Option<(u16, &[u8])> {
        let id = completion.buffer_id()?;
        let len = completion.result().ok()? as usize;
        Some((id, self.buffers.get(id, len)))
    }

    /// Gives a receive buffer back to the kernel. A buffer it already holds
    /// is left alone.
    pub fn recycle(&mut self, id: u16) {
        self.buffers.give_back(id);
    }

    /// Gives back the buffer a receive completion filled, if it filled one,
    /// unread: for a receive whose connection is gone.
    pub fn recycle_from(&mut self, completion: &Completion) {
        if let Some(id) = completion.buffer_id() {
            self.buffers.give_back(id);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Nothing the kernel may still write to is freed before its
        // operation ends: cancel everything and wait for the completions.
        let cancel_all = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data((Op::Cancel as u64) << 32);
        // SAFETY: a cancel points to no buffer.
        let pushed = unsafe { self.uring.submission().push(&cancel_all) }.is_ok();
        let deadline = std::time::Instant::now() + DROP_WAIT;
        let mut completions = Vec::with_capacity(256);
        if pushed {
            self.in_flight += 1;
        }
        while pushed && self.in_flight > 0 && std::time::Instant::now() < deadline {
            if self
                .submit_and_wait(&mut completions, Some(Duration::from_millis(10)))
                .is_err()
            {
                break;
            }
            // Accepted descriptors in the queue are closed, not leaked.
            for c in completions.drain(..) {
                drop(c.accepted());
            }
        }
        if self.in_flight > 0 {
            // The kernel may still write to these: leak them rather than
            // free memory under it.
            std::mem::forget(std::mem::take(&mut self.sends));
            self.buffers.leak();
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
        }
    }
}

/// Creates the ring with the best setup flags the kernel accepts.
fn setup_ring(entries: u32) -> io::Result<(IoUring, Setup)> {
    let build = |setup: Setup| {
        let mut builder = IoUring::builder();
        builder
            .setup_cqsize(entries.saturating_mul(4))
            .setup_clamp();
        match setup {
            Setup::DeferTaskrun => {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            Setup::CoopTaskrun => {
                builder.setup_coop_taskrun();
            }
            Setup::Plain => {}
        }
        builder.build(entries)
    };
    let mut last = None;
    for setup in [Setup::DeferTaskrun, Setup::CoopTaskrun, Setup::Plain] {
        match build(setup) {
            Ok(uring) => return Ok((uring, setup)),
            // An unknown flag: try the next mode.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(error::context(e, "io_uring setup")),
        }
    }
    Err(error::context(
        last.expect("a setup was tried"),
        "io_uring setup",
    ))
}

/// The provided receive buffers: a ring of entries the kernel takes buffers
/// from (its head, which it keeps) and the owner gives them back to (the
/// tail, in the first entry's reserved field), and the buffers themselves.
struct BufferRing {
    entries: Mapping,
    memory: Mapping,
    count: u16,
    size: u32,
    tail: u16,
    /// Which buffers the kernel holds (may write to): a bit per buffer.
    in_kernel: Vec<u64>,
}

impl BufferRing {
    fn new(uring: &IoUring, count: u16, size: u32) -> io::Result<BufferRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring: receive buffers must be a power of two in number, at most 32768",
            ));
        }
        // Mapped, not allocated: the pages are zero and untouched until the
        // kernel first fills a buffer, so a loop's buffers cost memory only
        // as far as receives have used them.
        let entries = Mapping::new(usize::from(count) * size_of::<BufRingEntry>())?;
        let memory = Mapping::new(usize::from(count) * size as usize)?;
        let mut ring = BufferRing {
            entries,
            memory,
            count,
            size,
            tail: 0,
            in_kernel: vec![0; usize::from(count).div_ceil(64)],
        };
        // SAFETY: the entries are page-aligned memory for `count` entries
        // that stays mapped until `drop`, which happens after the ring (the
        // owner drops the uring first, or leaks this memory).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                ring.entries.ptr as u64,
                count,
                BUFFER_GROUP,
                0,
            )
        }
        .map_err(|e| error::context(e, "io_uring buffer ring"))?;
        for id in 0..count {
            ring.give_back(id);
        }
        Ok(ring)
    }

    fn is_in_kernel(&self, id: u16) -> bool {
        self.in_kernel[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }

    fn set_in_kernel(&mut self, id: u16, on: bool) {
        let word = &mut self.in_kernel[usize::from(id) / 64];
        if on {
            *word |= 1 << (id % 64);
        } else {
            *word &= !(1 << (id % 64));
        }
    }

    /// The kernel filled buffer `id` and handed it over.
    fn taken(&mut self, id: u16) {
        if id < self.count {
            self.set_in_kernel(id, false);
        }
    }

    fn get(&self, id: u16, len: usize) -> &[u8] {
        if id >= self.count || self.is_in_kernel(id) {
            return &[];
        }
        let len = len.min(self.size as usize);
        // SAFETY: buffer `id` is in the allocation, and the kernel does not
        // hold it (it was taken and not given back), so nothing writes to it
        // while this borrow of `self` lasts: giving it back needs `&mut self`.
        unsafe {
            std::slice::from_raw_parts(
                self.memory.ptr.add(usize::from(id) * self.size as usize),
                len,
            )
        }
    }

    fn give_back(&mut self, id: u16) {
        if id >= self.count || self.is_in_kernel(id) {
            return;
        }
        self.set_in_kernel(id, true);
        let mask = self.count - 1;
        // SAFETY: the slot is within the `count` entries allocated; the
        // kernel reads only slots between its head and the published tail,
        // and this one is past the tail until the store below.
        unsafe {
            let entries = self.entries.ptr.cast::<BufRingEntry>();
            let entry = &mut *entries.add(usize::from(self.tail & mask));
            entry.set_addr(self.memory.ptr.add(usize::from(id) * self.size as usize) as u64);
            entry.set_len(self.size);
            entry.set_bid(id);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the reserved field of the first entry, a
        // properly aligned u16 the kernel reads atomically; the release
        // store publishes the entry written above.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.ptr.cast()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Forgets the memory: the kernel may still write to it.
    fn leak(&mut self) {
        self.entries.leak();
        self.memory.leak();
    }
}

/// Anonymous memory mapped for the kernel to read and write: page-aligned,
/// zeroed, and resident only where touched.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous};
        // SAFETY: a new private anonymous mapping at an address the kernel
        // chooses aliases nothing; `len` is not zero (at least one entry or
        // byte per buffer).
        let ptr = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(|e| error::context(e, "io_uring buffers: mmap"))?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn leak(&mut self) {
        self.ptr = std::ptr::null_mut();
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: mapped in `new` with this length, not unmapped since,
            // and no borrow of it outlives its owner.
            let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Makes a ring's blocked wait return from another thread: an eventfd the
/// ring reads with [`Ring::read_eventfd`].
#[derive(Debug)]
pub struct Waker {
    eventfd: OwnedFd,
}

impl Waker {
    /// A new waker.
    pub fn new() -> io::Result<Waker> {
        use rustix::event::{EventfdFlags, eventfd};
        let eventfd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| error::context(e, "eventfd"))?;
        Ok(Waker { eventfd })
    }

    /// Wakes the ring that reads this waker.
    pub fn wake(&self) -> io::Result<()> {
        // The counter only overflows after 2^64 - 2 wakes nobody read.
        match rustix::io::write(&self.eventfd, &1u64.to_ne_bytes()) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(error::context(e, "waker write")),
        }
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    fn ring() -> Option<Ring> {
        match Ring::new(RingConfig {
            entries: 8,
            buffers: 4,
            buffer_size: 64,
        }) {
            Ok(ring) => Some(ring),
            Err(e) => {
                // CI sets this: there, io_uring must be tested, never skipped.
                assert!(
                    std::env::var_os("EVLOOP_REQUIRE_URING").is_none(),
                    "io_uring unavailable: {e}"
                );
                eprintln!("skipped: io_uring unavailable here: {e}");
                None
            }
        }
    }

    /// Waits until `n` completions have arrived.
    fn wait_for(ring: &mut Ring, n: usize) -> Vec<Completion> {
        let mut all = Vec::new();
        let mut batch = Vec::with_capacity(16);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while all.len() < n {
            assert!(std::time::Instant::now() < deadline, "no completion");
            ring.submit_and_wait(&mut batch, Some(Duration::from_millis(100)))
                .unwrap();
            all.append(&mut batch);
        }
        all
    }

    #[test]
    fn a_send_gives_its_buffer_back_with_its_completion() {
        let Some(mut ring) = ring() else { return };
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ring.send(ours.as_fd(), b"hello ring".to_vec(), 6, 7)
            .unwrap();
        let done = wait_for(&mut ring, 1);
        assert_eq!((done[0].op(), done[0].token()), (Op::Send, 7));
        assert_eq!(done[0].result().unwrap(), 4);
        let (buf, start) = ring.take_sent(&done[0]).unwrap();
        assert_eq!((&buf[..], start), (&b"hello ring"[..], 6));
        assert!(ring.take_sent(&done[0]).is_none(), "given back once");
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ring");
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn receive_buffers_go_back_to_the_kernel_once() {
        let Some(mut ring) = ring() else { return };
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // Two receives, one buffer each: 64 + 6 bytes.
        theirs.write_all(&[b'x'; 70]).unwrap();
        ring.recv_once(ours.as_fd(), 1).unwrap();
        let first = wait_for(&mut ring, 1).remove(0);
        let (id, bytes) = ring.received(&first).unwrap();
        assert_eq!(bytes, &[b'x'; 64][..]);
        ring.recycle(id);
        ring.recycle(id); // a second give-back is refused: the kernel holds it
        assert!(ring.received(&first).unwrap().1.is_empty(), "not ours now");
        ring.recv_once(ours.as_fd(), 1).unwrap();
        let second = wait_for(&mut ring, 1).remove(0);
        assert_eq!(ring.received(&second).unwrap().1, &[b'x'; 6][..]);
    }

    #[test]
    fn dropping_a_ring_cancels_what_is_in_flight() {
        let Some(mut ring) = ring() else { return };
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ring.recv_once(ours.as_fd(), 1).unwrap();
        let mut none = Vec::with_capacity(4);
        ring.submit_and_wait(&mut none, Some(Duration::from_millis(10)))
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(ring.in_flight(), 1);
        drop(ring); // waits for the cancelled receive before freeing buffers
    }
}
