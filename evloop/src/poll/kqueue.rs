//! The kqueue backend (macOS, iOS, FreeBSD, DragonFly, NetBSD, OpenBSD).
//!
//! A source is two filters, `EVFILT_READ` and `EVFILT_WRITE`, each added with
//! `EV_CLEAR` (edge-triggered) when its interest is wanted and deleted when it
//! is not. Changes are submitted with `EV_RECEIPT`, so the kernel answers every
//! change with an `EV_ERROR` entry whose `data` is 0 or an errno; no change
//! fails silently. `EV_EOF` on the read filter is reported as read-closed, never
//! as "close now": unread data may still be pending.
//!
//! The waker is `EVFILT_USER` with `EV_CLEAR` where the system has it (macOS,
//! FreeBSD, DragonFly): without `EV_CLEAR` a triggered user event would stay
//! triggered and every later wait would return at once. NetBSD and OpenBSD use
//! a pipe (see `fd_waker.rs`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::kqueue::{self, EventFilter, EventFlags};
use rustix::io::Errno;

use crate::error;

use super::{EventBuilder, Interest, Token, op_error};

pub(super) const NAME: &str = "kqueue";
pub(super) const REPORTS_URGENT_DATA: bool = false;

pub(super) type RawEvent = kqueue::Event;

pub(super) fn event_from_raw(raw: &RawEvent) -> super::Event {
    let token = Token(raw.udata() as usize);
    let flags = raw.flags();
    let eof = flags.contains(EventFlags::EOF);
    // A socket error that comes with EV_EOF (in `fflags`) is not looked at
    // here: the owner's next read or write returns it as an errno.
    let error = flags.contains(EventFlags::ERROR);
    let mut event = EventBuilder::default();
    event.error(error);
    match raw.filter() {
        EventFilter::Read(_) => {
            event.readable(true).read_closed(eof);
        }
        EventFilter::Write(_) => {
            event.writable(true).write_closed(eof);
        }
        // Only wakers register anything else.
        _ => {
            event.readable(true);
        }
    }
    event.build(token)
}

fn udata(token: Token) -> *mut std::ffi::c_void {
    std::ptr::without_provenance_mut(token.0)
}

/// Errnos a change may answer with that are not failures:
/// * `ENOENT`: deleting a filter that was never added (interest changes
///   delete the filters not wanted without tracking which exist);
/// * `EPIPE`: macOS refuses to add `EVFILT_WRITE` to a socket whose peer has
///   closed; the next write reports the condition to the owner.
fn is_tolerated(errno: i64) -> bool {
    errno == i64::from(Errno::NOENT.raw_os_error())
        || errno == i64::from(Errno::PIPE.raw_os_error())
}

pub(super) struct Selector {
    kq: OwnedFd,
}

impl Selector {
    pub(super) fn new() -> io::Result<Selector> {
        let kq = kqueue::kqueue().map_err(|e| error::context(e, "kqueue"))?;
        // kqueue descriptors are not inherited across fork, but they are across exec.
        rustix::io::fcntl_setfd(&kq, rustix::io::FdFlags::CLOEXEC)?;
        Ok(Selector { kq })
    }

    /// Submits `changes` (each marked `EV_RECEIPT`) and checks every receipt.
    fn apply(&self, op: &str, fd: BorrowedFd<'_>, changes: &[RawEvent]) -> io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        // At most two changes (read and write filter): receipts fit on the stack.
        let mut receipts = [changes[0]; 2];
        let receipts = &mut receipts[..changes.len()];
        // SAFETY: every change names `fd`, which the caller's `BorrowedFd`
        // keeps open for the duration of this call; the kernel drops its
        // reference to a descriptor when the descriptor is closed.
        let n = unsafe { kqueue::kevent(&self.kq, changes, &mut *receipts, Some(Duration::ZERO)) }
            .map_err(|e| op_error(op, fd, e))?;
        for receipt in &receipts[..n] {
            let errno = receipt.data();
            if receipt.flags().contains(EventFlags::ERROR) && errno != 0 && !is_tolerated(errno) {
                let errno = Errno::from_raw_os_error(errno as i32);
                return Err(op_error(op, fd, errno));
            }
        }
        Ok(())
    }

    fn changes(
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
        delete_unwanted: bool,
    ) -> ([RawEvent; 2], usize) {
        let raw = fd.as_raw_fd();
        let empty = kqueue::Event::new(EventFilter::Read(raw), EventFlags::empty(), udata(token));
        let mut changes = [empty, empty];
        let mut n = 0;
        for (wanted, filter) in [
            (interest.is_readable(), EventFilter::Read(raw)),
            (interest.is_writable(), EventFilter::Write(raw)),
        ] {
            let flags = if wanted {
                EventFlags::ADD | EventFlags::CLEAR | EventFlags::RECEIPT
            } else if delete_unwanted {
                EventFlags::DELETE | EventFlags::RECEIPT
            } else {
                continue;
            };
            changes[n] = kqueue::Event::new(filter, flags, udata(token));
            n += 1;
        }
        (changes, n)
    }

    pub(super) fn register(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        let (changes, n) = Self::changes(fd, token, interest, false);
        self.apply("kevent add", fd, &changes[..n])
    }

    pub(super) fn reregister(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        let (changes, n) = Self::changes(fd, token, interest, true);
        self.apply("kevent modify", fd, &changes[..n])
    }

    pub(super) fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let (changes, n) = Self::changes(fd, Token(0), Interest::NONE, true);
        self.apply("kevent delete", fd, &changes[..n])
    }

    pub(super) fn wait(
        &self,
        events: &mut Vec<RawEvent>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        // SAFETY: the change list is empty, so no descriptor is named.
        unsafe {
            kqueue::kevent(
                &self.kq,
                &[],
                rustix::buffer::spare_capacity(events),
                timeout,
            )
        }?;
        Ok(())
    }
}

#[cfg(evloop_kqueue_user)]
mod user_waker {
    use super::*;
    use rustix::event::kqueue::{UserDefinedFlags, UserFlags};

    /// An `EVFILT_USER` event, identified by the waker's token.
    pub(in crate::poll) struct Waker {
        kq: OwnedFd,
        token: Token,
    }

    impl Waker {
        pub(in crate::poll) fn new(selector: &Selector, token: Token) -> io::Result<Waker> {
            let kq = selector.kq.try_clone()?;
            let waker = Waker { kq, token };
            waker.submit(
                EventFlags::ADD | EventFlags::CLEAR | EventFlags::RECEIPT,
                UserFlags::empty(),
            )?;
            Ok(waker)
        }

        pub(in crate::poll) fn wake(&self) -> io::Result<()> {
            self.submit(EventFlags::RECEIPT, UserFlags::TRIGGER)
        }

        fn submit(&self, flags: EventFlags, user_flags: UserFlags) -> io::Result<()> {
            let change = kqueue::Event::new(
                EventFilter::User {
                    ident: self.token.0 as _,
                    flags: user_flags,
                    user_flags: UserDefinedFlags::new(0),
                },
                flags,
                udata(self.token),
            );
            let mut receipt = [change];
            let n = loop {
                // SAFETY: a user event names no descriptor.
                let result = unsafe {
                    kqueue::kevent(
                        &self.kq,
                        std::slice::from_ref(&change),
                        &mut receipt,
                        Some(Duration::ZERO),
                    )
                };
                match result {
                    // A trigger interrupted before the kernel took it must be
                    // retried, or the wake is lost.
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        return Err(error::context(e, "kevent EVFILT_USER"));
                    }
                    Ok(n) => break n,
                }
            };
            match receipt[..n].first() {
                Some(r) if r.flags().contains(EventFlags::ERROR) && r.data() != 0 => {
                    let e = Errno::from_raw_os_error(r.data() as i32);
                    Err(error::context(e, "kevent EVFILT_USER"))
                }
                _ => Ok(()),
            }
        }
    }
}

#[cfg(evloop_kqueue_user)]
pub(super) use user_waker::Waker;

#[cfg(not(evloop_kqueue_user))]
pub(super) struct Waker {
    fd: super::fd_waker::FdWaker,
}

#[cfg(not(evloop_kqueue_user))]
impl Waker {
    pub(super) fn new(selector: &Selector, token: Token) -> io::Result<Waker> {
        let fd = super::fd_waker::FdWaker::new()?;
        selector.register(fd.readable_fd(), token, Interest::READABLE)?;
        Ok(Waker { fd })
    }

    pub(super) fn wake(&self) -> io::Result<()> {
        self.fd.wake()
    }
}
