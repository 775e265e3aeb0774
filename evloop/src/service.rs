//! The service API: bytes in, bytes out.
//!
//! A [`Service`] is shared by every loop and opens one [`Handler`] per
//! connection. The handler sees the connection's unconsumed input, consumes
//! what it used, and appends what it wants sent. It never sees readiness,
//! sockets or the event queue, so the same services run unchanged on a
//! completion-based backend (io_uring) later.

use crate::Address;

/// What a handler wants after handling input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep the connection open.
    Continue,
    /// Stop reading, send all output already produced, then close.
    Close,
}

/// Why a connection was closed. Each reason has its own counter in
/// [`Counters`](crate::Counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer closed its side and all output was delivered.
    Peer,
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`).
    Reset,
    /// No traffic in either direction for the idle timeout.
    Idle,
    /// The server was at `max_connections` when it accepted the connection.
    Limit,
    /// The shutdown deadline passed, or a second signal forced shutdown.
    Shutdown,
    /// A socket error other than a reset, or the input limit was exceeded.
    Error,
    /// The handler returned [`Action::Close`] and its output was delivered.
    Service,
}

impl CloseReason {
    /// Every reason, in the order of [`CloseReason::index`].
    pub const ALL: [CloseReason; 7] = [
        CloseReason::Peer,
        CloseReason::Reset,
        CloseReason::Idle,
        CloseReason::Limit,
        CloseReason::Shutdown,
        CloseReason::Error,
        CloseReason::Service,
    ];

    /// A dense index, for tables of per-reason counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short lowercase name, as used in logs.
    pub const fn name(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::Reset => "reset",
            CloseReason::Idle => "idle",
            CloseReason::Limit => "limit",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error => "error",
            CloseReason::Service => "service",
        }
    }
}

/// A connection's unconsumed input. Bytes not consumed stay for the next
/// call, followed by whatever arrives next.
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a [u8],
    consumed: usize,
}

impl<'a> Input<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes, consumed: 0 }
    }

    /// The bytes not consumed yet.
    pub fn bytes(&self) -> &'a [u8] {
        &self.bytes[self.consumed..]
    }

    /// How many bytes are not consumed yet.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.consumed
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the first `n` unconsumed bytes as used.
    ///
    /// # Panics
    /// If `n` is more than [`Input::len`].
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed {n} of {} bytes", self.len());
        self.consumed += n;
    }

    /// Marks every byte as used.
    pub fn consume_all(&mut self) {
        self.consumed = self.bytes.len();
    }

    pub(crate) fn consumed(&self) -> usize {
        self.consumed
    }
}

/// The per-connection half of a service.
///
/// `output` is the connection's output buffer: append to it; the reactor
/// writes it out, and stops reading from the connection while too much of it
/// is pending (backpressure).
pub trait Handler: 'static {
    /// Input arrived: called once per successful read, with all unconsumed
    /// input (earlier leftovers first).
    fn on_data(&mut self, input: &mut Input<'_>, output: &mut Vec<u8>) -> Action;

    /// The peer will send nothing more. `unconsumed` is the input the handler
    /// left; after this call the output is flushed and the connection closed.
    fn on_read_closed(&mut self, unconsumed: &[u8], output: &mut Vec<u8>) {
        let _ = (unconsumed, output);
    }

    /// The connection is closed (the socket is already gone).
    fn on_close(&mut self, reason: CloseReason) {
        let _ = reason;
    }
}

/// A TCP service: shared by all loops, it opens a [`Handler`] per connection.
pub trait Service: Send + Sync + 'static {
    /// The per-connection state.
    type Handler: Handler;

    /// A connection from `peer` was accepted ([`Address::Unnamed`] for a
    /// Unix client without a name, the usual case).
    fn open(&self, peer: &Address) -> Self::Handler;
}

/// A handler that can be cloned is its own service: each connection gets a
/// clone. A stateless service (echo, discard) is then one type and one
/// `impl Handler`.
impl<H: Handler + Clone + Send + Sync> Service for H {
    type Handler = H;

    fn open(&self, _peer: &Address) -> H {
        self.clone()
    }
}
