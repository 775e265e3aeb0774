//! The epoll backend (Linux, Android).
//!
//! Every source is registered edge-triggered (`EPOLLET`) with `EPOLLRDHUP`, so
//! a peer's half-close is reported even when no data comes with it, and read
//! interest includes `EPOLLPRI` (urgent data). The
//! waker is an `eventfd`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll;

use crate::error;

use super::fd_waker::FdWaker;
use super::{EventBuilder, Interest, Token, op_error};

pub(super) const NAME: &str = "epoll";
pub(super) const REPORTS_URGENT_DATA: bool = true;

pub(super) type RawEvent = epoll::Event;

pub(super) fn event_from_raw(raw: &RawEvent) -> super::Event {
    // Copy out of the packed struct before looking at the fields.
    let flags = raw.flags;
    let token = Token(raw.data.u64() as usize);
    EventBuilder::default()
        .readable(flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::PRI))
        .writable(flags.contains(epoll::EventFlags::OUT))
        .read_closed(flags.intersects(epoll::EventFlags::RDHUP | epoll::EventFlags::HUP))
        .write_closed(flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR))
        .error(flags.contains(epoll::EventFlags::ERR))
        .priority(flags.contains(epoll::EventFlags::PRI))
        .build(token)
}

fn flags_for(interest: Interest) -> epoll::EventFlags {
    let mut flags = epoll::EventFlags::ET | epoll::EventFlags::RDHUP;
    if interest.is_readable() {
        // PRI: urgent data, so that owners can tell a read that stopped at
        // the urgent mark from a drained socket.
        flags |= epoll::EventFlags::IN | epoll::EventFlags::PRI;
    }
    if interest.is_writable() {
        flags |= epoll::EventFlags::OUT;
    }
    flags
}

fn data_for(token: Token) -> epoll::EventData {
    epoll::EventData::new_u64(token.0 as u64)
}

pub(super) struct Selector {
    epoll: OwnedFd,
}

impl Selector {
    pub(super) fn new() -> io::Result<Selector> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| error::context(e, "epoll_create1"))?;
        Ok(Selector { epoll })
    }

    pub(super) fn register(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        epoll::add(&self.epoll, fd, data_for(token), flags_for(interest))
            .map_err(|e| op_error("epoll_ctl add", fd, e))
    }

    pub(super) fn reregister(
        &self,
        fd: BorrowedFd<'_>,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        epoll::modify(&self.epoll, fd, data_for(token), flags_for(interest))
            .map_err(|e| op_error("epoll_ctl mod", fd, e))
    }

    pub(super) fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(&self.epoll, fd).map_err(|e| op_error("epoll_ctl del", fd, e))
    }

    pub(super) fn wait(
        &self,
        events: &mut Vec<RawEvent>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let timeout = timeout.map(|t| rustix::event::Timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(events),
            timeout.as_ref(),
        )?;
        Ok(())
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

pub(super) struct Waker {
    fd: FdWaker,
}

impl Waker {
    pub(super) fn new(selector: &Selector, token: Token) -> io::Result<Waker> {
        let fd = FdWaker::new()?;
        epoll::add(
            selector.as_fd(),
            fd.readable_fd(),
            data_for(token),
            flags_for(Interest::READABLE),
        )
        .map_err(|e| op_error("epoll_ctl add waker", fd.readable_fd(), e))?;
        Ok(Waker { fd })
    }

    pub(super) fn wake(&self) -> io::Result<()> {
        self.fd.wake()
    }
}
