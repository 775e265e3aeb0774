//! The kernel event queue behind one small portable API.
//!
//! This is the only module that talks to the kernel queue. Each backend lives in
//! its own file and is chosen here, in one place, by `cfg(target_os)`:
//!
//! | platform                                   | backend           | waker                    |
//! |--------------------------------------------|-------------------|--------------------------|
//! | Linux, Android                             | `epoll` (`epoll.rs`)  | `eventfd`            |
//! | macOS, iOS, FreeBSD, DragonFly             | `kqueue` (`kqueue.rs`)| `EVFILT_USER`        |
//! | NetBSD, OpenBSD                            | `kqueue` (`kqueue.rs`)| a non-blocking pipe  |
//!
//! Any other target fails to compile with a message that says so.
//!
//! # The contract every backend fulfils
//!
//! * **Edge-triggered.** A source is reported when it *becomes* ready (epoll
//!   `EPOLLET`, kqueue `EV_CLEAR`). The owner must therefore consume readiness
//!   until the operation returns `WouldBlock`, or remember that the source is
//!   still ready (the reactor keeps such connections on a ready list). In
//!   exchange a source is registered once and needs no re-arming syscall after
//!   each event, and a connection whose owner pauses reading (backpressure)
//!   does not wake the loop again and again.
//! * **Batched.** [`Poller::wait`] returns as many events as fit in [`Events`]
//!   with one system call.
//! * **Closing is not an event to act on blindly.** [`Event::is_read_closed`]
//!   means the peer will send nothing more, but bytes it sent before may still be
//!   unread (kqueue sets `EV_EOF` while data is pending; epoll reports
//!   `EPOLLRDHUP` together with the last `EPOLLIN`). Read until the socket
//!   returns 0 before closing.
//! * **Spurious events are allowed.** An event is a hint; the owner's
//!   non-blocking operation is the truth.
//! * **One token per source.** On kqueue, reading and writing are separate
//!   filters and may arrive as two events with the same token in one batch.
//! * [`Waker::wake`] from any thread makes a concurrent or later
//!   [`Poller::wait`] return with an event for the waker's token. Many wakes may
//!   coalesce into one event: the receiver must drain all its pending work
//!   per event.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

// The cfgs come from build.rs, which holds the one list of systems per backend.
#[cfg(evloop_epoll)]
#[path = "epoll.rs"]
mod sys;

#[cfg(evloop_kqueue)]
#[path = "kqueue.rs"]
mod sys;

#[cfg(not(any(evloop_epoll, evloop_kqueue)))]
compile_error!(
    "evloop supports Linux (epoll) and macOS/iOS/FreeBSD/DragonFly/NetBSD/OpenBSD (kqueue)"
);

// The eventfd/pipe waker serves epoll and the kqueues without EVFILT_USER.
#[cfg(evloop_fd_waker)]
mod fd_waker;

/// The name of the backend this build uses: `"epoll"` or `"kqueue"`.
pub const BACKEND: &str = sys::NAME;

/// Whether read events say when TCP urgent (out-of-band) data is pending,
/// through [`Event::is_priority`]: epoll does (`EPOLLPRI`, always
/// registered); kqueue's `EVFILT_READ` does not.
///
/// It matters to an owner that treats a read shorter than its buffer as "the
/// socket is empty": a read stops at the urgent mark with data still queued
/// behind it, and no new edge will come for that data. Such an owner must
/// read until `WouldBlock` when an event is a priority event, and always
/// where this is false.
pub const REPORTS_URGENT_DATA: bool = sys::REPORTS_URGENT_DATA;

/// Identifies a registered source in the events it produces. Chosen by the
/// owner, usually an index into its own table of sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

/// The readiness a source is registered for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// Interest in the source becoming readable (or read-closed).
    pub const READABLE: Interest = Interest(1);
    /// Interest in the source becoming writable (or write-closed).
    pub const WRITABLE: Interest = Interest(2);
    /// Interest in nothing: the source stays registered but reports no
    /// readiness. Errors and hang-ups may still be reported.
    pub const NONE: Interest = Interest(0);

    /// Both interests together.
    #[must_use]
    pub const fn add(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    /// This interest without `other`.
    #[must_use]
    pub const fn remove(self, other: Interest) -> Interest {
        Interest(self.0 & !other.0)
    }

    /// Whether readable readiness is included.
    pub const fn is_readable(self) -> bool {
        self.0 & Self::READABLE.0 != 0
    }

    /// Whether writable readiness is included.
    pub const fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE.0 != 0
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, other: Interest) -> Interest {
        self.add(other)
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_readable(), self.is_writable()) {
            (true, true) => f.write_str("READABLE | WRITABLE"),
            (true, false) => f.write_str("READABLE"),
            (false, true) => f.write_str("WRITABLE"),
            (false, false) => f.write_str("NONE"),
        }
    }
}

/// One readiness event, in the same terms on every backend.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Event {
    token: Token,
    flags: u8,
}

impl Event {
    const READABLE: u8 = 1;
    const WRITABLE: u8 = 2;
    const READ_CLOSED: u8 = 4;
    const WRITE_CLOSED: u8 = 8;
    const ERROR: u8 = 16;
    const PRIORITY: u8 = 32;

    /// The token the source was registered with.
    pub fn token(&self) -> Token {
        self.token
    }

    /// The source may be read from without blocking.
    pub fn is_readable(&self) -> bool {
        self.flags & Self::READABLE != 0
    }

    /// The source may be written to without blocking.
    pub fn is_writable(&self) -> bool {
        self.flags & Self::WRITABLE != 0
    }

    /// The peer will send nothing more. Data it sent before may still be
    /// unread: read until end of stream before closing.
    pub fn is_read_closed(&self) -> bool {
        self.flags & Self::READ_CLOSED != 0
    }

    /// The peer accepts nothing more; a write would fail.
    pub fn is_write_closed(&self) -> bool {
        self.flags & Self::WRITE_CLOSED != 0
    }

    /// The source has a pending error (read it with `SO_ERROR`, or let the
    /// next read or write return it).
    pub fn is_error(&self) -> bool {
        self.flags & Self::ERROR != 0
    }

    /// Urgent (out-of-band) data is pending: a read may stop short at the
    /// urgent mark with more data queued. Only reported where
    /// [`REPORTS_URGENT_DATA`] is true.
    pub fn is_priority(&self) -> bool {
        self.flags & Self::PRIORITY != 0
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("token", &self.token)
            .field("readable", &self.is_readable())
            .field("writable", &self.is_writable())
            .field("read_closed", &self.is_read_closed())
            .field("write_closed", &self.is_write_closed())
            .field("error", &self.is_error())
            .field("priority", &self.is_priority())
            .finish()
    }
}

/// Builds an [`Event`] from the backend's view of it.
#[derive(Default)]
struct EventBuilder(u8);

impl EventBuilder {
    fn set(&mut self, flag: u8, on: bool) -> &mut Self {
        if on {
            self.0 |= flag;
        }
        self
    }
    fn readable(&mut self, on: bool) -> &mut Self {
        self.set(Event::READABLE, on)
    }
    fn writable(&mut self, on: bool) -> &mut Self {
        self.set(Event::WRITABLE, on)
    }
    fn read_closed(&mut self, on: bool) -> &mut Self {
        self.set(Event::READ_CLOSED, on)
    }
    fn write_closed(&mut self, on: bool) -> &mut Self {
        self.set(Event::WRITE_CLOSED, on)
    }
    fn error(&mut self, on: bool) -> &mut Self {
        self.set(Event::ERROR, on)
    }
    #[cfg(evloop_epoll)]
    fn priority(&mut self, on: bool) -> &mut Self {
        self.set(Event::PRIORITY, on)
    }
    fn build(&self, token: Token) -> Event {
        Event {
            token,
            flags: self.0,
        }
    }
}

/// A reusable buffer of events filled by [`Poller::wait`]. Allocate it once
/// per loop: waiting does not allocate.
pub struct Events {
    raw: Vec<sys::RawEvent>,
}

impl Events {
    /// A buffer that receives at most `capacity` events per wait.
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            raw: Vec::with_capacity(capacity.max(1)),
        }
    }

    /// How many events one wait can return.
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// The number of events of the last wait.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the last wait returned no event (a timeout, or an interrupted wait).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.raw.iter().map(sys::event_from_raw)
    }

    fn clear(&mut self) {
        self.raw.clear();
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The kernel event queue: an `epoll` instance or a `kqueue`.
///
/// # Portability
///
/// | backend | triggering | read-closed from | errors from |
/// |---------|------------|------------------|-------------|
/// | epoll   | `EPOLLET`  | `EPOLLRDHUP`, `EPOLLHUP` | `EPOLLERR` |
/// | kqueue  | `EV_CLEAR` | `EV_EOF` on `EVFILT_READ` | `EV_ERROR`, `EV_EOF` with `fflags` |
///
/// Registration methods take `&self`, so one thread may register while
/// another waits; the reactor does not need that, but the kernel allows it.
pub struct Poller {
    selector: sys::Selector,
}

impl Poller {
    /// Opens a new kernel queue (close-on-exec).
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            selector: sys::Selector::new()?,
        })
    }

    /// Starts watching `source` for `interest`, reporting it with `token`.
    pub fn register(&self, source: &impl AsFd, token: Token, interest: Interest) -> io::Result<()> {
        self.selector.register(source.as_fd(), token, interest)
    }

    /// Changes the token or interest of a registered source.
    pub fn reregister(
        &self,
        source: &impl AsFd,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.selector.reregister(source.as_fd(), token, interest)
    }

    /// Stops watching `source`. Closing a descriptor removes it as well, so
    /// this is needed only for a source that stays open.
    pub fn deregister(&self, source: &impl AsFd) -> io::Result<()> {
        self.selector.deregister(source.as_fd())
    }

    /// Waits until at least one event is ready or `timeout` passes (`None`:
    /// no limit), and fills `events` with what is ready, up to its capacity.
    /// An interrupted wait (`EINTR`) returns `Ok` with no events.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        match self.selector.wait(&mut events.raw, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                events.clear();
                Ok(())
            }
            other => other,
        }
    }
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("backend", &BACKEND)
            .finish_non_exhaustive()
    }
}

/// Wakes a [`Poller`] from any thread: `eventfd` on Linux, `EVFILT_USER` on
/// macOS and FreeBSD, a pipe on NetBSD and OpenBSD.
///
/// Wakes coalesce; a wake is never lost: a wake that happens before or during
/// a `wait` makes that wait (or the next) return an event for the token.
pub struct Waker {
    inner: sys::Waker,
}

impl Waker {
    /// Creates a waker that reports `token` on `poller`.
    pub fn new(poller: &Poller, token: Token) -> io::Result<Waker> {
        Ok(Waker {
            inner: sys::Waker::new(&poller.selector, token)?,
        })
    }

    /// Makes the poller report an event for the waker's token.
    pub fn wake(&self) -> io::Result<()> {
        self.inner.wake()
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker").finish_non_exhaustive()
    }
}

// The reactor keeps a poller per thread and hands wakers to other threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Poller>();
    assert_send_sync::<Waker>();
};

/// Names the operation and descriptor in an error, keeping its kind:
/// `epoll_ctl add fd 7: Bad file descriptor`.
fn op_error(op: &str, fd: std::os::fd::BorrowedFd<'_>, err: rustix::io::Errno) -> io::Error {
    use std::os::fd::AsRawFd;
    crate::error::context(err, format_args!("{op} fd {}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests;
