//! HTTP/1.1 on the evloop reactor: a static file server (or, without a
//! root, a page saying what is running) as an [`evloop::Service`], so it
//! runs on every I/O driver evloop has.
//!
//! - Requests are parsed with [`httparse`]; keep-alive, HTTP/1.0 with and
//!   without `Connection: keep-alive`, pipelining (answers in order, all of
//!   one read's answers in one send), GET and HEAD, `Expect: 100-continue`,
//!   request bodies read and discarded within a limit.
//! - Files: decoded and normalised paths that never leave the root (on
//!   Linux the kernel enforces it: `openat2` with `RESOLVE_BENEATH`),
//!   dotfiles refused, `index.html`, optional listings, `ETag` and
//!   `Last-Modified` with their conditional requests, single ranges; large
//!   files are sent by the connection core ([`evloop::Context::send_file`]:
//!   `sendfile` on epoll, a chunk at a time elsewhere), paced by the client.
//! - Hostile clients get a status and a close: 400, 414, 431, 505, 408
//!   after a header timeout counted from a request's first byte, idle
//!   keep-alive connections closed after their own timeout.
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! let http = evloop_http::Http::builder().root("/srv/www").list(true).build()?;
//! let server = evloop::Server::builder()
//!     .listen(SocketAddr::from(([127, 0, 0, 1], 8080)))
//!     .build(http.clone())?;
//! http.running_on(server.driver(), server.loops());
//! server.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod access_log;
mod conn;
mod date;
mod files;
mod range;
mod response;
mod target;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use evloop::{Address, Service};

pub use access_log::AccessLog;
pub use conn::HttpConnection;

use files::Root;

/// The longest request line plus headers: past it, 431 (or 414 when the
/// request line alone is longer).
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header fields a request may have: past it, 431.
pub const MAX_HEADERS: usize = 64;

/// The HTTP service: shared by every loop, cheap to clone.
#[derive(Clone, Debug)]
pub struct Http {
    shared: Arc<Shared>,
}

/// What every connection of the service reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) root: Option<Root>,
    pub(crate) list: bool,
    pub(crate) dotfiles: bool,
    pub(crate) header_timeout: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) max_body: u64,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) about: About,
}

/// What the built-in page shows.
#[derive(Debug)]
pub(crate) struct About {
    pub(crate) software: String,
    pub(crate) started: Instant,
    pub(crate) open: AtomicUsize,
    pub(crate) running: OnceLock<(String, usize)>,
}

/// Sets up an [`Http`] service.
#[derive(Debug)]
pub struct HttpBuilder {
    root: Option<PathBuf>,
    list: bool,
    follow_symlinks: bool,
    dotfiles: bool,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    max_body: u64,
    access_log: Option<AccessLog>,
    software: String,
}

impl Http {
    /// A builder with the defaults: no root (the built-in page), header
    /// timeout 10 s, keep-alive timeout 75 s, request bodies up to 1 MiB.
    pub fn builder() -> HttpBuilder {
        HttpBuilder {
            root: None,
            list: false,
            follow_symlinks: false,
            dotfiles: false,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            max_body: 1024 * 1024,
            access_log: None,
            software: format!("evloop-http {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Tells the built-in page which I/O driver and how many loops serve it
    /// (known once the server is built). The first call counts.
    pub fn running_on(&self, driver: impl Into<String>, loops: usize) {
        let _ = self.shared.about.running.set((driver.into(), loops));
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.about.open.load(Ordering::Relaxed)
    }

    /// Access log lines that never reached the log since the service
    /// started ([`AccessLog::dropped`]: the writer fell behind, or a write
    /// failed); `None` without an access log. Only grows: a metrics
    /// exporter can serve it as a counter.
    pub fn access_log_dropped(&self) -> Option<u64> {
        self.shared.access_log.as_ref().map(AccessLog::dropped)
    }
}

impl HttpBuilder {
    /// Serves the files under `dir`. Without it, `/` is a page saying what
    /// is running and everything else is 404.
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = Some(dir.into());
        self
    }

    /// Lists directories without an `index.html` (else 403).
    pub fn list(mut self, on: bool) -> Self {
        self.list = on;
        self
    }

    /// Follows symlinks that lead out of the root (refused by default).
    pub fn follow_symlinks(mut self, on: bool) -> Self {
        self.follow_symlinks = on;
        self
    }

    /// Serves names starting with `.` (refused with 403 by default).
    pub fn dotfiles(mut self, on: bool) -> Self {
        self.dotfiles = on;
        self
    }

    /// How long a client has to send a request's line and headers, from
    /// its first byte (slow senders get 408). Default 10 s.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// How long a keep-alive connection may wait for its next request.
    /// Default 75 s.
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = timeout;
        self
    }

    /// The largest request body read (and discarded); a larger one is
    /// answered 413 and the connection closed. Default 1 MiB.
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// Writes a line per request to `log` (Combined Log Format).
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// The software the built-in page names (default `evloop-http` and its
    /// version).
    pub fn software(mut self, name: impl Into<String>) -> Self {
        self.software = name.into();
        self
    }

    /// The service. Fails if the root cannot be opened as a directory.
    pub fn build(self) -> io::Result<Http> {
        let root = match &self.root {
            Some(dir) => Some(Root::open(dir, self.follow_symlinks)?),
            None => None,
        };
        Ok(Http {
            shared: Arc::new(Shared {
                root,
                list: self.list,
                dotfiles: self.dotfiles,
                header_timeout: self.header_timeout,
                keepalive_timeout: self.keepalive_timeout,
                max_body: self.max_body,
                access_log: self.access_log,
                about: About {
                    software: self.software,
                    started: Instant::now(),
                    open: AtomicUsize::new(0),
                    running: OnceLock::new(),
                },
            }),
        })
    }
}

impl Service for Http {
    type Handler = HttpConnection;

    fn open(&self, peer: &Address) -> HttpConnection {
        self.shared.about.open.fetch_add(1, Ordering::Relaxed);
        HttpConnection::new(Arc::clone(&self.shared), peer)
    }
}
