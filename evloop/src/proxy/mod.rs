//! The PROXY protocol, versions 1 and 2: a layer in front of any service
//! that reads the header a proxy (HAProxy's `send-proxy` or
//! `send-proxy-v2`, a cloud load balancer) sends at the start of each
//! connection, and serves the connection as the client's that it names.
//!
//! [`ProxyProtocol`] wraps a [`Service`] and is one. Its handler collects
//! the header first, under a deadline of its own; only then does it open
//! the wrapped service's handler — [`Service::open`] with the client's
//! address — call its `on_open`, and hand it the bytes that followed the
//! header. From then on every call passes through, and
//! [`Context::peer`] in all of them is the client the header named. So
//! every service, log line and access log sees the client, not the proxy,
//! without knowing a proxy is there.
//!
//! * `LOCAL` (v2: the proxy's own health checks) and `UNKNOWN` (v1; v2
//!   `PROXY` with `AF_UNSPEC`) are taken: the peer is then the real one,
//!   the proxy. v2 TLVs are skipped.
//! * A connection without a valid header is never guessed at: it is
//!   closed at once with a reset, nothing sent, counted by
//!   [`RejectReason`] in [`ProxyStats`] and logged at debug level (target
//!   `evloop::proxy`). That covers a client that sends something else
//!   (plain HTTP), a header that breaks the specification or is too long,
//!   one still unfinished at the timeout ([`Builder::timeout`], 5 s by
//!   default), and a client that goes away in the middle.
//! * Which listeners: all of the server's, or those named with
//!   [`Builder::only_on`]; connections to the others are served as they
//!   come, their bytes untouched.
//!
//! Only put it behind a proxy you trust, on listeners only it can reach:
//! whoever connects says who the client is.
//!
//! ```
//! use std::io::{Read, Write};
//! use evloop::{Server, proxy::ProxyProtocol, services::Echo};
//!
//! let echo = ProxyProtocol::new(Echo);
//! let stats = echo.stats();
//! let server = Server::builder()
//!     .listen("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
//!     .threads(1)
//!     .build(echo)?;
//! let addr = server.local_addrs()[0].inet().unwrap();
//! let shutdown = server.shutdown_handle();
//! let running = std::thread::spawn(move || server.run());
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1815\r\nhello")?;
//! client.shutdown(std::net::Shutdown::Write)?;
//! let mut echo = String::new();
//! client.read_to_string(&mut echo)?;
//! assert_eq!(echo, "hello");
//! assert_eq!(stats.snapshot().proxied, 1);
//!
//! shutdown.shutdown();
//! running.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod header;
mod stats;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::Address;
use crate::context::Context;
use crate::service::{Action, CloseReason, Handler, Input, Service};

pub use header::{
    Header, Invalid, Status, V1_MAX_LEN, V2_FIXED_LEN, V2_MAX_LEN, V2_MIN_LIMIT, V2_SIGNATURE,
    parse,
};
pub use stats::{ProxyCounters, ProxyStats, RejectReason};

/// How long a client has for its whole header, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest v2 header taken, by default: far more than senders put in
/// one (HAProxy's addresses with its TLVs — a unique id, TLS facts — or a
/// cloud load balancer's endpoint id stay well under 1 KiB), and what the
/// connection holds at most while it waits.
pub const DEFAULT_MAX_HEADER: usize = 4096;

/// Sets up a [`ProxyProtocol`] layer.
#[derive(Clone, Debug)]
pub struct Builder {
    timeout: Duration,
    max_header: usize,
    listeners: Option<Vec<Address>>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// Headers on every listener, [`DEFAULT_TIMEOUT`],
    /// [`DEFAULT_MAX_HEADER`].
    pub fn new() -> Builder {
        Builder {
            timeout: DEFAULT_TIMEOUT,
            max_header: DEFAULT_MAX_HEADER,
            listeners: None,
        }
    }

    /// How long a client has to send its whole header, from when the
    /// connection is accepted: then it is closed and counted as
    /// [`RejectReason::Timeout`]. Traffic does not extend it (a header
    /// trickled a byte at a time is still cut). At most 24 days.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest v2 header taken, TLVs included; longer ones are refused
    /// as [`RejectReason::TooLong`] as soon as their length is read. Kept
    /// within [`V2_MIN_LIMIT`] (room for the largest addresses) and
    /// [`V2_MAX_LEN`]; the server's `max_input` must allow it too. v1
    /// headers are 107 bytes at most whatever this says.
    pub fn max_header(mut self, bytes: usize) -> Self {
        self.max_header = bytes.clamp(V2_MIN_LIMIT, V2_MAX_LEN);
        self
    }

    /// Expects headers only on connections to these listeners (as given
    /// to the server, or as [`Server::local_addrs`](crate::Server::local_addrs)
    /// reports them: a listener on port 0 is known by the port it got).
    /// Connections to the others are served as they come. A TCP
    /// listener on an unspecified address (`0.0.0.0:P`, `[::]:P`) covers
    /// the connections of its family to port P.
    ///
    /// Each connection's listener is found by asking the kernel for its
    /// local address (one `getsockname`), which only happens with this
    /// set: without it, every connection must start with a header.
    pub fn only_on<A: Into<Address>>(mut self, listeners: impl IntoIterator<Item = A>) -> Self {
        self.listeners = Some(listeners.into_iter().map(Into::into).collect());
        self
    }

    /// The layer, around `service`.
    pub fn build<S: Service>(self, service: S) -> ProxyProtocol<S> {
        ProxyProtocol {
            shared: Arc::new(Shared {
                service,
                config: self,
                stats: ProxyStats::default(),
            }),
        }
    }
}

/// A service behind the PROXY protocol: see the [module docs](self).
pub struct ProxyProtocol<S> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    service: S,
    config: Builder,
    stats: ProxyStats,
}

impl<S> fmt::Debug for ProxyProtocol<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyProtocol")
            .field("config", &self.shared.config)
            .field("stats", &self.shared.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl ProxyProtocol<()> {
    /// Sets up a layer with other than the defaults (the same as
    /// [`Builder::new`]); its [`build`](Builder::build) takes the service.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<S: Service> ProxyProtocol<S> {
    /// `service` behind the PROXY protocol on every listener, with the
    /// defaults of [`Builder::new`].
    pub fn new(service: S) -> ProxyProtocol<S> {
        Builder::new().build(service)
    }

    /// The handle to this layer's counters: take it before handing the
    /// service to the server.
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats.clone()
    }

    /// The service behind the layer.
    pub fn service(&self) -> &S {
        &self.shared.service
    }
}

impl<S: Service> Service for ProxyProtocol<S> {
    type Handler = ProxyHandler<S>;

    fn open(&self, peer: &Address) -> ProxyHandler<S> {
        ProxyHandler {
            phase: Phase::Header {
                shared: Arc::clone(&self.shared),
                peer: peer.clone(),
                started: false,
            },
        }
    }
}

/// The handler of a [`ProxyProtocol`] connection: the header first, then
/// the wrapped service's handler.
pub struct ProxyHandler<S: Service> {
    phase: Phase<S>,
}

enum Phase<S: Service> {
    /// Waiting for the header. `peer` is the connection's real peer (the
    /// proxy); `started` says whether any byte of a header came.
    Header {
        shared: Arc<Shared<S>>,
        peer: Address,
        started: bool,
    },
    /// Serving: every call goes to `inner`, which sees `client` as its
    /// peer (if none, the real one).
    Serving {
        inner: S::Handler,
        client: Option<Address>,
    },
    /// Refused, or between the two.
    Done,
}

impl<S: Service> fmt::Debug for ProxyHandler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match &self.phase {
            Phase::Header { started: false, .. } => "waiting for a header",
            Phase::Header { started: true, .. } => "reading a header",
            Phase::Serving { .. } => "serving",
            Phase::Done => "refused",
        };
        f.debug_struct("ProxyHandler")
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl<S: Service> ProxyHandler<S> {
    /// Opens the wrapped handler for `client` (the real peer if `None`),
    /// lets it speak first, then hands it what followed the header.
    fn start(&mut self, header: Header, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let Phase::Header { shared, peer, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Action::Abort;
        };
        cx.clear_deadline();
        let client = match header {
            Header::Proxied { source, .. } => {
                shared.stats.count_proxied();
                Some(source)
            }
            Header::Local => {
                shared.stats.count_local();
                None
            }
            Header::Unknown => {
                shared.stats.count_unknown();
                None
            }
        };
        let seen = client.as_ref().unwrap_or(&peer);
        let mut inner = shared.service.open(seen);
        let mut cx = cx.with_peer(Some(seen));
        let mut action = inner.on_open(&mut cx);
        // As the connection core does: no input for a handler that closed
        // or paused in `on_open`. What it does not take stays as the
        // connection's leftovers, offered again when it resumes.
        if action == Action::Continue && !input.is_empty() && !cx.paused_by_handler() {
            action = inner.on_data(input, &mut cx);
        }
        self.phase = Phase::Serving { inner, client };
        action
    }

    /// Refuses the connection: counts and logs why, and resets it.
    fn reject(&mut self, reason: RejectReason, detail: &str) -> Action {
        if let Phase::Header { shared, peer, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        {
            shared.stats.count_rejected(reason);
            debug!(target: "evloop::proxy", %peer, reason = reason.name(), "PROXY protocol header refused: {detail}");
        }
        Action::Abort
    }
}

impl<S: Service> Handler for ProxyHandler<S> {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        let Phase::Header { shared, peer, .. } = &self.phase else {
            return Action::Continue;
        };
        if let Some(listeners) = &shared.config.listeners {
            // A socket whose local address cannot be had is taken to need
            // a header: never serve as a client's what a proxy may send.
            let listener = cx.local().ok();
            if listener.is_some_and(|local| !listeners.iter().any(|l| l.covers(&local))) {
                let mut inner = shared.service.open(peer);
                let action = inner.on_open(cx);
                self.phase = Phase::Serving {
                    inner,
                    client: None,
                };
                return action;
            }
        }
        cx.set_deadline(shared.config.timeout);
        Action::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let parsed = match &mut self.phase {
            Phase::Serving { inner, client } => {
                return inner.on_data(input, &mut cx.with_peer(client.as_ref()));
            }
            Phase::Done => return Action::Abort,
            Phase::Header {
                shared, started, ..
            } => {
                *started = true;
                header::parse(input.bytes(), shared.config.max_header)
            }
        };
        match parsed {
            // Nothing consumed: the connection keeps the bytes and offers
            // them again with the next ones.
            Ok(Status::Partial) => Action::Continue,
            Ok(Status::Complete { header, len }) => {
                input.consume(len);
                self.start(header, input, cx)
            }
            Err(invalid) => self.reject(invalid.reason, invalid.detail),
        }
    }

    fn on_read_closed(&mut self, unconsumed: &[u8], cx: &mut Context<'_>) {
        match &mut self.phase {
            Phase::Serving { inner, client } => {
                inner.on_read_closed(unconsumed, &mut cx.with_peer(client.as_ref()));
            }
            Phase::Done => {}
            Phase::Header { .. } => {
                let reason = if unconsumed.is_empty() {
                    RejectReason::Empty
                } else {
                    RejectReason::Truncated
                };
                // Nothing is sent: the connection closes as it drains.
                let _ = self.reject(reason, "the client ended its input before a whole header");
            }
        }
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        match &mut self.phase {
            Phase::Serving { inner, client } => {
                inner.on_drained(&mut cx.with_peer(client.as_ref()))
            }
            _ => Action::Continue,
        }
    }

    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Action {
        match &mut self.phase {
            Phase::Serving { inner, client } => {
                inner.on_deadline(&mut cx.with_peer(client.as_ref()))
            }
            Phase::Done => Action::Abort,
            Phase::Header { .. } => self.reject(RejectReason::Timeout, "no whole header in time"),
        }
    }

    fn on_close(&mut self, reason: CloseReason) {
        match &mut self.phase {
            Phase::Serving { inner, .. } => inner.on_close(reason),
            Phase::Done => {}
            // Closed by the server while waiting for the header.
            Phase::Header { started, .. } => {
                let reason = match reason {
                    // Not the client's doing: not a refusal.
                    CloseReason::Shutdown | CloseReason::Limit => return,
                    CloseReason::Idle => RejectReason::Timeout,
                    _ if *started => RejectReason::Truncated,
                    _ => RejectReason::Empty,
                };
                let _ = self.reject(reason, "the connection ended before a whole header");
            }
        }
    }
}

#[cfg(test)]
mod tests;
