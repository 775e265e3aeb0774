//! The service API: bytes in, bytes out.
//!
//! A [`Service`] is shared by every loop and opens one [`Handler`] per
//! connection. The handler sees the connection's unconsumed input, consumes
//! what it used, and appends what it wants sent to its [`Context`]'s output.
//! It never sees readiness, sockets or the event queue, so the same
//! services run unchanged on a completion-based backend (io_uring).

use crate::Address;

use crate::context::Context;

/// What a handler wants after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Keep the connection open.
    Continue,
    /// Stop reading, send all output already produced, then close
    /// gracefully: FIN, then discard what the client still sends until it
    /// closes too or the linger time passes.
    Close,
    /// Close at once with a reset (RST): output not yet sent is dropped.
    Abort,
}

/// Why a connection was closed. Each reason has its own counter in
/// [`Counters`](crate::Counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// The handler closed it ([`Action::Close`] once its output was
    /// delivered, or [`Action::Abort`]).
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

/// The per-connection half of a service. Every call gets the connection's
/// [`Context`]: its output, and the requests the handler may make.
///
///  A streaming handler — one whose answer is longer than it should hold in
///  memory — writes a chunk, asks to be told when it has drained, and writes
///  the next chunk then:
///
///  ```
///  use evloop::{Action, Context, Handler, Input};
///
///  /// Answers any request with `total` bytes of `*`, 16 KiB at a time.
///  #[derive(Clone)]
///  struct Stars {
///      total: u64,
///      left: u64,
///  }
///
///  impl Stars {
///      fn next_chunk(&mut self, cx: &mut Context<'_>) -> Action {
///          let n = self.left.min(16 * 1024);
///          let out = cx.output();
///          out.resize(out.len() + n as usize, b'*');
///          self.left -= n;
///          if self.left == 0 {
///              return Action::Close; // after the output is out
///          }
///          cx.notify_drained();
///          Action::Continue
///      }
///  }
///
///  impl Handler for Stars {
///      fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
///          input.consume_all();
///          if self.left != self.total {
///              return Action::Continue; // already streaming
///          }
///          cx.pause_reading();
///          self.next_chunk(cx)
///      }
///
///      fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
///          self.next_chunk(cx)
///      }
///  }
///
///  # use std::io::{Read, Write};
///  let server = evloop::Server::builder()
///      .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
///      .threads(1)
///      .build(Stars { total: 1 << 20, left: 1 << 20 })?;
///  let addr = server.local_addrs()[0].inet().unwrap();
///  let shutdown = server.shutdown_handle();
///  let running = std::thread::spawn(move || server.run());
///  let mut client = std::net::TcpStream::connect(addr)?;
///  client.write_all(b"go\n")?;
///  let mut got = Vec::new();
///  client.read_to_end(&mut got)?;
///  assert_eq!(got.len(), 1 << 20);
///  drop(client); // the server lingers until the client closes too
///  shutdown.shutdown();
///  running.join().unwrap()?;
///  # Ok::<(), std::io::Error>(())
///  ```
pub trait Handler: 'static {
    /// The connection is open, before any input: a protocol where the
    /// server speaks first (a greeting, daytime, chargen) writes here.
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        let _ = cx;
        Action::Continue
    }

    /// Input arrived: called once per successful read, with all unconsumed
    /// input (earlier leftovers first). Also called, with the leftovers
    /// alone, when [`on_drained`](Self::on_drained) or
    /// [`on_deadline`](Self::on_deadline) resumes reading after
    /// [`Context::pause_reading`] while input was left unconsumed: a
    /// pipelining client may send nothing more until it has its answers.
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action;

    /// The peer will send nothing more. `unconsumed` is the input the handler
    /// left; after this call the output is flushed and the connection closed.
    fn on_read_closed(&mut self, unconsumed: &[u8], cx: &mut Context<'_>) {
        let _ = (unconsumed, cx);
    }

    /// The output has drained to the low watermark after
    /// [`Context::notify_drained`]: room for the next chunk of a stream.
    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        let _ = cx;
        Action::Continue
    }

    /// The deadline set with [`Context::set_deadline`] has passed. By
    /// default the connection is closed.
    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Action {
        let _ = cx;
        Action::Close
    }

    /// The connection is closed (the socket is already gone).
    fn on_close(&mut self, reason: CloseReason) {
        let _ = reason;
    }
}

/// A service: shared by all loops, it opens a [`Handler`] per connection.
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
