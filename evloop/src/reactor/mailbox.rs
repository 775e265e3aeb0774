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
}

/// The sending side of a loop's mailbox, shared with other threads.
#[derive(Debug)]
pub(crate) struct LoopHandle {
    pub(super) sender: Sender<Command>,
    pub(super) waker: Waker,
    /// Set by a sender that woke the loop, cleared by the loop before it
    /// drains the mailbox: senders wake only when the loop may be asleep.
    pub(super) notified: AtomicBool,
    /// Connections this loop serves, for least-loaded hand-off.
    pub(crate) load: AtomicUsize,
    /// The loop waits for a connection slot: a loop that frees one wakes it.
    pub(super) wants_slot: AtomicBool,
}

impl LoopHandle {
    /// A loop's mailbox and the poller it wakes.
    pub(crate) fn new(poller: &Poller) -> io::Result<(Arc<LoopHandle>, Receiver<Command>)> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let handle = LoopHandle {
            sender,
            waker: Waker::new(poller, WAKER)?,
            notified: AtomicBool::new(false),
            load: AtomicUsize::new(0),
            wants_slot: AtomicBool::new(false),
        };
        Ok((Arc::new(handle), receiver))
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
