//! The metrics endpoint: a thread of its own with a blocking listener that
//! answers one short HTTP/1.1 request per connection, one connection at a
//! time. A scrape is rare (every few seconds) and small, so nothing here
//! needs the event loops; what keeps a hostile client from wedging it is
//! that each connection has [`TIMEOUT`] to send its request and as long
//! again to take the answer, and a request may not exceed
//! [`REQUEST_LIMIT`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use evloop::{State, StatsHandle};
use tracing::{debug, warn};

use super::Registry;
use super::exposition::CONTENT_TYPE;

/// How long a client has to send its request, and then to take the answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The longest request (line and headers) read; longer ones get 431.
pub const REQUEST_LIMIT: usize = 8 * 1024;

/// The most headers a request may have (a scraper sends a handful); more
/// get 431.
const MAX_HEADERS: usize = 32;

/// How long a refused client's leftover request is read and discarded
/// after the answer, so that closing with unread bytes (which resets the
/// connection) does not destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_millis(500);

/// The endpoint's listener, bound and not yet answering.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    /// Set when a successor has taken the socket over: the thread stops
    /// answering (within [`STOP_CHECK`]), so scrapes reach the successor.
    stop: Arc<AtomicBool>,
}

/// How often an idle endpoint looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

impl Endpoint {
    /// Binds `addr`; the error names the address, like the server's own
    /// bind errors (`127.0.0.1:9815: address in use`).
    pub fn bind(addr: SocketAddr) -> Result<Endpoint, String> {
        let describe = |e: io::Error| {
            let why = match e.kind() {
                io::ErrorKind::AddrInUse => "address in use".to_owned(),
                io::ErrorKind::AddrNotAvailable => {
                    "address not available on this machine".to_owned()
                }
                io::ErrorKind::PermissionDenied => {
                    "permission denied (ports below 1024 need privileges)".to_owned()
                }
                _ => e.to_string(),
            };
            format!("{addr}: {why}")
        };
        let listener = TcpListener::bind(addr).map_err(describe)?;
        let addr = listener.local_addr().map_err(describe)?;
        Ok(Endpoint {
            listener,
            addr,
            stop: Arc::default(),
        })
    }

    /// Takes the socket a predecessor handed over if it serves `addr` (the
    /// same address, or the same IP for port 0), else binds `addr`.
    pub fn take_or_bind(inherited: Option<OwnedFd>, addr: SocketAddr) -> Result<Endpoint, String> {
        let Some(fd) = inherited else {
            return Endpoint::bind(addr);
        };
        let listener = TcpListener::from(fd);
        match listener.local_addr() {
            Ok(have) if have == addr || (addr.port() == 0 && have.ip() == addr.ip()) => {
                Ok(Endpoint {
                    listener,
                    addr: have,
                    stop: Arc::default(),
                })
            }
            _ => Endpoint::bind(addr),
        }
    }

    /// A second descriptor for the socket, to hand to a successor, and the
    /// flag that stops this endpoint once the successor serves.
    pub fn for_successor(&self) -> io::Result<(OwnedFd, Arc<AtomicBool>)> {
        Ok((self.listener.try_clone()?.into(), Arc::clone(&self.stop)))
    }

    /// The address bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers scrapes on a thread of its own (`evloop-metrics`) for the
    /// rest of the process's life: `/metrics` from `registry`, `/ready`
    /// from `stats`.
    pub fn spawn(self, registry: Registry, stats: StatsHandle) -> io::Result<()> {
        std::thread::Builder::new()
            .name("evloop-metrics".into())
            .spawn(move || self.answer_forever(&registry, &stats))
            .map(drop)
    }

    fn answer_forever(self, registry: &Registry, stats: &StatsHandle) {
        loop {
            // The listener stays blocking (its mode is shared with a
            // successor's copy): wait for a client while looking at the
            // stop flag. If the successor takes the client first, the
            // accept below waits for the next one, which this endpoint
            // answers before it stops.
            let mut ready = [PollFd::new(&self.listener, PollFlags::IN)];
            let timeout = Timespec::try_from(STOP_CHECK).ok();
            match rustix::event::poll(&mut ready, timeout.as_ref()) {
                _ if self.stop.load(Ordering::Acquire) => return,
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                _ => {}
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if let Err(e) = answer(stream, registry, stats) {
                        debug!("metrics: {peer}: {e}");
                    }
                }
                // Gone before it was accepted: nothing to do.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    warn!("metrics: accept on {}: {e}", self.addr);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// What a client asked for, as far as the endpoint cares.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    /// A GET (`body` true) or HEAD (`body` false) of `path`.
    Read { path: &'a str, body: bool },
    /// Another method.
    Method,
    /// Longer than [`REQUEST_LIMIT`], or more than [`MAX_HEADERS`] headers.
    TooLarge,
    /// Not HTTP/1.x.
    Bad,
}

/// Parses a request's head: `None` while it is incomplete.
fn parse(head: &[u8]) -> Option<Request<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Partial) if head.len() >= REQUEST_LIMIT => Some(Request::TooLarge),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Request::TooLarge),
        Err(_) => Some(Request::Bad),
        Ok(httparse::Status::Complete(_)) => Some(match (request.method, request.path) {
            (Some("GET"), Some(path)) => Request::Read { path, body: true },
            (Some("HEAD"), Some(path)) => Request::Read { path, body: false },
            _ => Request::Method,
        }),
    }
}

/// An answer: status, content type, body, and whether to send the body.
#[derive(Debug)]
struct Answer {
    status: &'static str,
    content_type: &'static str,
    body: String,
    /// For 405: the methods allowed.
    allow: bool,
    /// False for HEAD: the headers only.
    send_body: bool,
}

impl Answer {
    fn text(status: &'static str, body: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
            send_body: true,
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            if self.allow {
                "Allow: GET, HEAD\r\n"
            } else {
                ""
            },
        )
        .into_bytes();
        if self.send_body {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The answer to a complete request.
fn route(request: Request<'_>, registry: &Registry, state: impl FnOnce() -> State) -> Answer {
    let (path, send_body) = match request {
        Request::Read { path, body } => (path, body),
        Request::Method => {
            let mut answer = Answer::text(
                "405 Method Not Allowed",
                "only GET and HEAD are served here\n",
            );
            answer.allow = true;
            return answer;
        }
        Request::TooLarge => {
            return Answer::text(
                "431 Request Header Fields Too Large",
                format!(
                    "requests are limited to {REQUEST_LIMIT} bytes and {MAX_HEADERS} headers\n"
                ),
            );
        }
        Request::Bad => return Answer::text("400 Bad Request", "not an HTTP/1.x request\n"),
    };
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    let mut answer = match path {
        "/metrics" => Answer {
            content_type: CONTENT_TYPE,
            ..Answer::text("200 OK", registry.render())
        },
        "/ready" => match state() {
            State::Serving => Answer::text("200 OK", "ready: serving\n"),
            state => Answer::text(
                "503 Service Unavailable",
                format!("not ready: {}\n", state.name()),
            ),
        },
        _ => Answer::text("404 Not Found", "not found: try /metrics or /ready\n"),
    };
    answer.send_body = send_body;
    answer
}

/// Reads one request from `stream` within [`TIMEOUT`], answers it within
/// [`TIMEOUT`] again, and closes.
fn answer(mut stream: TcpStream, registry: &Registry, stats: &StatsHandle) -> io::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0; 1024];
    let answer = loop {
        if let Some(request) = parse(&head) {
            let refused = matches!(request, Request::Bad | Request::TooLarge);
            break (route(request, registry, || stats.state()), refused);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let want = chunk.len().min(REQUEST_LIMIT - head.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return Ok(()), // gone before asking
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let (answer, refused) = answer;
    write_within(&mut stream, &answer.into_bytes(), Instant::now() + TIMEOUT)?;
    if refused {
        linger(&mut stream)?;
    }
    Ok(())
}

/// Writes all of `bytes` before `deadline`.
fn write_within(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the answer was not taken in time",
            ));
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends the answer (FIN) and discards what the client still sends, for
/// up to [`LINGER`], before the connection is closed.
fn linger(stream: &mut TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + LINGER;
    let mut sink = [0; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_once_complete() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Read {
                path: "/metrics",
                body: true
            })
        );
        assert_eq!(
            parse(b"HEAD /ready HTTP/1.0\r\n\r\n"),
            Some(Request::Read {
                path: "/ready",
                body: false
            })
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Request::Method)
        );
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01\r\n\r\n"),
            Some(Request::Bad)
        );
        assert_eq!(parse(b"GET /metrics SPDY/3\r\n\r\n"), Some(Request::Bad));
    }

    #[test]
    fn requests_past_the_limits_are_too_large() {
        let mut long = b"GET /metrics HTTP/1.1\r\nX-Long: ".to_vec();
        long.resize(REQUEST_LIMIT - 1, b'l');
        assert_eq!(parse(&long), None);
        long.push(b'l');
        assert_eq!(parse(&long), Some(Request::TooLarge));
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Some(Request::TooLarge));
    }

    fn routed(request: Request<'_>, state: State) -> String {
        let registry = Registry::new();
        String::from_utf8(route(request, &registry, || state).into_bytes()).unwrap()
    }

    #[test]
    fn routes_answer_with_their_status() {
        let get = |path| Request::Read { path, body: true };
        let metrics = routed(get("/metrics?x=1"), State::Serving);
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(
            metrics.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{metrics}"
        );
        let ready = routed(get("/ready"), State::Serving);
        assert!(ready.starts_with("HTTP/1.1 200 OK\r\n"), "{ready}");
        assert!(ready.ends_with("\r\n\r\nready: serving\n"), "{ready}");
        for state in [State::Bound, State::Draining, State::Stopped] {
            let ready = routed(get("/ready"), state);
            assert!(ready.starts_with("HTTP/1.1 503 "), "{ready}");
            assert!(ready.ends_with(&format!("not ready: {}\n", state.name())));
        }
        let missing = routed(get("/"), State::Serving);
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = routed(Request::Method, State::Serving);
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        let bad = routed(Request::Bad, State::Serving);
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        assert!(bad.contains("\r\nConnection: close\r\n"), "{bad}");
    }

    #[test]
    fn head_gets_the_headers_alone() {
        let head = routed(
            Request::Read {
                path: "/ready",
                body: false,
            },
            State::Serving,
        );
        assert!(head.contains("\r\nContent-Length: 15\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }
}
