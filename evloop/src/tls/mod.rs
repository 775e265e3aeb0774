//! TLS (1.3 and 1.2, by [rustls] with the *ring* provider): a layer in
//! front of any service, enabled by the crate's `tls` feature.
//!
//! [`Tls`] wraps a [`Service`] and is one. Its handler runs the handshake
//! first, under a deadline of its own ([`Builder::handshake_timeout`]);
//! only then does it open the wrapped service's handler — so a client
//! that never finishes a handshake costs the service nothing — and from
//! then on it sits between the connection and that handler, bytes in,
//! bytes out: the handler sees the client's plaintext as its
//! [`Input`](crate::Input), and what it writes to its
//! [`Context`](crate::Context) is encrypted when its call returns.
//!
//! * **Backpressure.** Nothing waits as plaintext: a handler's output is
//!   encrypted into the connection's output as soon as its call returns,
//!   so the server's watermarks and buffer budget bound it as they bound
//!   any output, and a handler that streams ([`Context::notify_drained`](crate::Context::notify_drained))
//!   hears of the ciphertext draining. Input is decrypted only while the
//!   handler reads: one that pauses leaves the rest encrypted, in the
//!   connection's buffer and then in the kernel. What it leaves
//!   unconsumed is bounded by the server's `max_input`, as without TLS.
//! * **Files.** [`Context::send_file`](crate::Context::send_file) works: the
//!   layer reads the file and encrypts it 64 KiB at a time as the client
//!   takes it (the kernel's `sendfile` cannot encrypt).
//! * **Certificates.** [`Certificates`], each serving the DNS names it
//!   carries (SNI), the first also the default; [`Certificates::reload`]
//!   reads their files again while the server runs, keeping the old ones
//!   if a new one is wrong.
//! * **Sessions.** Resumption by session tickets (TLS 1.3 and 1.2, their
//!   keys made at start-up and rotated by rustls) and TLS 1.2 session ids.
//! * **ALPN.** [`Builder::alpn`]: the protocols the service speaks
//!   (`http/1.1`); a client that offers only others is refused.
//! * **Closing.** A handler's [`Action::Close`](crate::Action::Close)
//!   sends `close_notify` after its output, then closes; a client's
//!   `close_notify` (or its end of the connection) is the end of the
//!   handler's input ([`Handler::on_read_closed`](crate::Handler::on_read_closed)).
//! * **Refusals.** A connection whose handshake fails is closed, alone:
//!   counted by [`FailReason`] in [`TlsStats`] and logged at debug level
//!   (target `evloop::tls`). A client that broke the protocol gets the
//!   alert rustls answers with; one that is not speaking TLS, or stopped,
//!   is reset.
//!
//! ```no_run
//! use evloop::{Server, services::Echo, tls::{Certificates, Tls}};
//!
//! let certificates = Certificates::load([("cert.pem", "key.pem")])?;
//! let echo = Tls::new(certificates.clone(), Echo)?;
//! let stats = echo.stats();
//! let server = Server::builder()
//!     .listen("127.0.0.1:8443".parse::<std::net::SocketAddr>().unwrap())
//!     .handle_signals(true)
//!     // SIGUSR1: new certificates without a restart.
//!     .on_reload_signal(move |_| {
//!         if let Err(e) = certificates.reload() {
//!             eprintln!("keeping the old certificates: {e}");
//!         }
//!     })
//!     .build(echo)?;
//! server.run()?;
//! println!("{}", stats.snapshot());
//! # Ok::<(), std::io::Error>(())
//! ```

mod certs;
mod handler;
mod stats;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;

use crate::Address;
use crate::service::Service;

pub use certs::Certificates;
pub use handler::TlsHandler;
pub use stats::{FailReason, TlsCounters, TlsStats};

/// How long a client has for its whole handshake, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets up a [`Tls`] layer.
#[derive(Clone, Debug)]
pub struct Builder {
    certificates: Certificates,
    handshake_timeout: Duration,
    alpn: Vec<Vec<u8>>,
}

impl Builder {
    /// A layer serving `certificates`, [`DEFAULT_HANDSHAKE_TIMEOUT`], no
    /// ALPN.
    pub fn new(certificates: Certificates) -> Builder {
        Builder {
            certificates,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            alpn: Vec::new(),
        }
    }

    /// How long a client has to complete its handshake, from when the
    /// connection is accepted: then it is closed and counted as
    /// [`FailReason::Timeout`]. Traffic does not extend it (a handshake
    /// trickled a byte at a time is still cut). At most 24 days.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The application protocols the service speaks, most preferred
    /// first, for ALPN (e.g. `["http/1.1"]`): a client that offers some
    /// gets the first of these it offers, one that offers only others is
    /// refused ([`FailReason::Incompatible`]); one that offers none is
    /// served. Default: none (ALPN is not answered).
    pub fn alpn<P: AsRef<[u8]>>(mut self, protocols: impl IntoIterator<Item = P>) -> Self {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// The layer, around `service`. Fails only if the provider cannot make
    /// session ticket keys (the system's random source failed).
    pub fn build<S: Service>(self, service: S) -> io::Result<Tls<S>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_cert_resolver(self.certificates.resolver());
        config.alpn_protocols.clone_from(&self.alpn);
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(io::Error::other)?;
        Ok(Tls {
            shared: Arc::new(Shared {
                service,
                config: Arc::new(config),
                settings: self,
                stats: TlsStats::default(),
            }),
            listeners: None,
        })
    }
}

/// A service behind TLS: see the [module docs](self).
pub struct Tls<S> {
    shared: Arc<Shared<S>>,
    /// The listeners that serve TLS; all if `None`.
    listeners: Option<Arc<[Address]>>,
}

struct Shared<S> {
    service: S,
    config: Arc<ServerConfig>,
    settings: Builder,
    stats: TlsStats,
}

impl<S> fmt::Debug for Tls<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.shared.settings)
            .field("stats", &self.shared.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl Tls<()> {
    /// Sets up a layer with other than the defaults (the same as
    /// [`Builder::new`]); its [`build`](Builder::build) takes the service.
    pub fn builder(certificates: Certificates) -> Builder {
        Builder::new(certificates)
    }
}

impl<S: Service> Tls<S> {
    /// `service` behind TLS with `certificates`, and the defaults of
    /// [`Builder::new`].
    pub fn new(certificates: Certificates, service: S) -> io::Result<Tls<S>> {
        Builder::new(certificates).build(service)
    }

    /// The handle to this layer's counters: take it before handing the
    /// service to the server.
    pub fn stats(&self) -> TlsStats {
        self.shared.stats.clone()
    }

    /// The certificates served: a handle to [reload](Certificates::reload)
    /// them.
    pub fn certificates(&self) -> &Certificates {
        &self.shared.settings.certificates
    }

    /// The service behind the layer.
    pub fn service(&self) -> &S {
        &self.shared.service
    }

    /// Serves TLS only on connections to these listeners (addresses as
    /// bound: see [`ServerBuilder::build_with`](crate::ServerBuilder::build_with);
    /// `0.0.0.0:P` and `[::]:P` cover their family); the others are served
    /// in plaintext, straight by the wrapped service, e.g. HTTP on one
    /// port and HTTPS on another. Deciding asks the kernel for each
    /// connection's own address (`getsockname`) once; a connection whose
    /// address cannot be had gets TLS. Default: every listener.
    pub fn only_on<A: Into<Address>>(mut self, listeners: impl IntoIterator<Item = A>) -> Self {
        self.listeners = Some(listeners.into_iter().map(Into::into).collect());
        self
    }
}

impl<S: Service> Service for Tls<S> {
    type Handler = TlsHandler<S>;

    fn open(&self, peer: &Address) -> TlsHandler<S> {
        TlsHandler::new(
            Arc::clone(&self.shared),
            peer.clone(),
            self.listeners.clone(),
        )
    }
}

#[cfg(test)]
mod tests;
