//! What other threads send a loop: commands through an `mpsc` channel,
//! with a waker so that the loop hears of them while it waits.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};

use tracing::warn;

use super::WAKER;
use crate::Address;
use crate::poll::{Poller, Waker};

/// What other threads may ask of a loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Serve this accepted connection from this peer (hand-off).
    Adopt(OwnedFd, Address),
    /// Stop accepting, let connections finish until the shutdown deadline.
    Shutdown,
    /// Close every connection now.
    ForceClose,
    /// Show that the loop turns: count an answer.
    Ping,
}

/// What wakes a loop from its wait: the poller's waker, or an eventfd its
/// ring reads.
#[derive(Debug)]
pub(crate) enum LoopWaker {
    Poll(Waker),
    #[cfg(target_os = "linux")]
    Ring(crate::ring::Waker),
}

impl LoopWaker {
    /// A waker for a loop on `poller`.
    pub(crate) fn poll(poller: &Poller) -> io::Result<LoopWaker> {
        Ok(LoopWaker::Poll(Waker::new(poller, WAKER)?))
    }

    fn wake(&self) -> io::Result<()> {
        match self {
            LoopWaker::Poll(waker) => waker.wake(),
            #[cfg(target_os = "linux")]
            LoopWaker::Ring(waker) => waker.wake(),
        }
    }
}

/// The sending side of a loop's mailbox, shared with other threads.
#[derive(Debug)]
pub(crate) struct LoopHandle {
    pub(super) sender: Sender<Command>,
    pub(super) waker: LoopWaker,
    /// Set by a sender that woke the loop, cleared by the loop before it
    /// drains the mailbox: senders wake only when the loop may be asleep.
    pub(super) notified: AtomicBool,
    /// Connections this loop serves, for least-loaded hand-off.
    pub(crate) load: AtomicUsize,
    /// The loop waits for a connection slot: a loop that frees one wakes it.
    pub(super) wants_slot: AtomicBool,
}

impl LoopHandle {
    /// A loop's mailbox and what wakes it.
    pub(crate) fn new(waker: LoopWaker) -> (Arc<LoopHandle>, Receiver<Command>) {
        let (sender, receiver) = std::sync::mpsc::channel();
        let handle = LoopHandle {
            sender,
            waker,
            notified: AtomicBool::new(false),
            load: AtomicUsize::new(0),
            wants_slot: AtomicBool::new(false),
        };
        (Arc::new(handle), receiver)
    }

    /// Queues `command` and wakes the loop if nobody has since it last
    /// looked. Returns false if the loop has exited (its mailbox is gone).
    pub(crate) fn send(&self, command: Command) -> bool {
        if self.sender.send(command).is_err() {
            return false;
        }
        self.wake();
        true
    }

    pub(super) fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel)
            && let Err(e) = self.waker.wake()
        {
            warn!("waking a loop failed: {e}");
        }
    }
}
