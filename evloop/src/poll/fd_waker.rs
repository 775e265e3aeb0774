//! A waker made of a descriptor that becomes readable when written: an
//! `eventfd` on Linux, a non-blocking pipe on the kqueue systems that lack
//! `EVFILT_USER` (NetBSD, OpenBSD).
//!
//! The descriptor is registered edge-triggered, so every write is a new edge
//! and nobody needs to read it after a wake. It is only drained when it is
//! full (the eventfd counter at its maximum, the pipe's buffer full): then the
//! waker itself empties it and writes again, so that the write is a fresh edge
//! and the wake is not lost.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;

use crate::error;

pub(super) struct FdWaker {
    read: OwnedFd,
    /// `None` for an eventfd, which is read and written through one descriptor.
    write: Option<OwnedFd>,
}

impl FdWaker {
    #[cfg(evloop_epoll)]
    pub(super) fn new() -> io::Result<FdWaker> {
        use rustix::event::{EventfdFlags, eventfd};
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| error::context(e, "eventfd"))?;
        Ok(FdWaker {
            read: fd,
            write: None,
        })
    }

    #[cfg(not(evloop_epoll))]
    pub(super) fn new() -> io::Result<FdWaker> {
        use rustix::pipe::{PipeFlags, pipe_with};
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| error::context(e, "pipe"))?;
        Ok(FdWaker {
            read,
            write: Some(write),
        })
    }

    pub(super) fn readable_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    fn writable_fd(&self) -> BorrowedFd<'_> {
        self.write.as_ref().unwrap_or(&self.read).as_fd()
    }

    pub(super) fn wake(&self) -> io::Result<()> {
        // An eventfd takes an 8-byte counter increment; a pipe takes any byte.
        let one = 1u64.to_ne_bytes();
        loop {
            match rustix::io::write(self.writable_fd(), &one) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => self.drain()?,
                Err(e) => {
                    return Err(error::context(e, "waker write"));
                }
            }
        }
    }

    fn drain(&self) -> io::Result<()> {
        let mut buf = [0u8; 64];
        loop {
            match rustix::io::read(&self.read, &mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) | Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(()),
                Err(e) => {
                    return Err(error::context(e, "waker read"));
                }
            }
        }
    }
}
