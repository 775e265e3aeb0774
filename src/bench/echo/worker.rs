//! One load-generating thread: its share of the connections on its own
//! driver (poller or ring), and what it measured.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use evloop::Address;
use hdrhistogram::Histogram;
use socket2::{SockAddr, Socket, Type};

use super::conn::{Completions, Conn, Mismatch};
use super::epoll::Readiness;
use super::payload::Payload;
use super::tls::{Handshake, TlsPlan};

/// Problems printed per thread and kind; the rest are only counted.
const PRINTED_PER_KIND: u64 = 5;
/// The longest latency the histogram holds, in nanoseconds; longer ones are
/// recorded as this.
const MAX_LATENCY_NANOS: u64 = 60_000_000_000;

/// Which kernel interface the load threads move bytes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// The readiness queue: epoll, or kqueue on BSD and macOS.
    Readiness,
    /// io_uring (Linux).
    #[cfg(target_os = "linux")]
    Uring,
}

impl fmt::Display for Io {
    /// The name `--io` takes: `epoll` (`kqueue`) or `uring`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Io::Readiness => evloop::poll::BACKEND,
            #[cfg(target_os = "linux")]
            Io::Uring => "uring",
        })
    }
}

/// What every thread does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The echo server: TCP or a Unix socket.
    pub target: Address,
    /// The driver that moves the bytes.
    pub io: Io,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Time measured.
    pub duration: Duration,
    /// How long one connect may take.
    pub connect_timeout: Duration,
    /// TLS (`--tls`), if spoken.
    pub tls: Option<TlsPlan>,
}

impl Plan {
    /// Whether each request opens a new connection (`--new-connection`).
    pub fn new_connection(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.new_connection)
    }
}

/// What one thread measured.
#[derive(Debug)]
pub struct Tally {
    /// Connections established (with TLS: whose handshake completed).
    pub connected: u64,
    /// Connections that could not be established (with TLS: whose TCP
    /// connect or handshake failed).
    pub connect_errors: u64,
    /// Connections lost to an I/O error or closed by the server.
    pub io_errors: u64,
    /// Messages that came back different from what was sent.
    pub mismatches: u64,
    /// Messages completed in the measured window.
    pub requests: u64,
    /// Messages completed in all, warm-up included.
    pub requests_total: u64,
    /// Latency of the measured messages, in nanoseconds.
    pub latency: Histogram<u64>,
    /// TLS handshakes completed in the measured window.
    pub handshakes: u64,
    /// TLS handshakes completed in all, warm-up included.
    pub handshakes_total: u64,
    /// Of those, the ones that resumed a session.
    pub handshakes_resumed: u64,
    /// Latency of the measured handshakes, in nanoseconds: from the
    /// session's start (its `ClientHello` queued) to its completion.
    pub handshake_latency: Histogram<u64>,
    /// The protocol version and cipher suite of a handshake.
    pub negotiated: Option<(&'static str, &'static str)>,
    measure_from: Instant,
    measure_until: Instant,
}

impl Tally {
    /// An empty tally for messages completed between the two instants.
    pub fn new(measure_from: Instant, measure_until: Instant) -> Tally {
        Tally {
            connected: 0,
            connect_errors: 0,
            io_errors: 0,
            mismatches: 0,
            requests: 0,
            requests_total: 0,
            latency: latency_histogram(),
            handshakes: 0,
            handshakes_total: 0,
            handshakes_resumed: 0,
            handshake_latency: latency_histogram(),
            negotiated: None,
            measure_from,
            measure_until,
        }
    }

    /// Adds another thread's tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.connected += other.connected;
        self.connect_errors += other.connect_errors;
        self.io_errors += other.io_errors;
        self.mismatches += other.mismatches;
        self.requests += other.requests;
        self.requests_total += other.requests_total;
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds add up");
        self.handshakes += other.handshakes;
        self.handshakes_total += other.handshakes_total;
        self.handshakes_resumed += other.handshakes_resumed;
        self.handshake_latency
            .add(&other.handshake_latency)
            .expect("histograms with the same bounds add up");
        self.negotiated = self.negotiated.or(other.negotiated);
    }

    /// Counts a connection lost to `error`: before its TLS handshake
    /// completed (`handshaking`) as one that could not be established,
    /// after it as an I/O error. Prints the first few.
    pub fn lost(&mut self, target: &Address, error: &io::Error, handshaking: bool) {
        if handshaking {
            self.connect_errors += 1;
            if self.connect_errors <= PRINTED_PER_KIND {
                say!("error: TLS handshake with {target}: {error}");
            }
        } else {
            self.io_error(target, error);
        }
    }

    fn in_window(&self, now: Instant) -> bool {
        now >= self.measure_from && now < self.measure_until
    }

    /// Counts a connection lost to `error`, printing the first few.
    pub fn io_error(&mut self, target: &Address, error: &io::Error) {
        self.io_errors += 1;
        if self.io_errors <= PRINTED_PER_KIND {
            say!("error: connection to {target}: {error}");
        }
    }
}

impl Completions for Tally {
    fn complete(&mut self, sent_at: Instant, now: Instant, mismatch: Option<Mismatch>) {
        self.requests_total += 1;
        if self.in_window(now) {
            self.requests += 1;
            let nanos = now.duration_since(sent_at).as_nanos();
            self.latency
                .saturating_record(nanos.try_into().unwrap_or(MAX_LATENCY_NANOS).max(1));
        }
        if let Some(m) = mismatch {
            self.mismatches += 1;
            if self.mismatches <= PRINTED_PER_KIND {
                say!(
                    "mismatch: connection {} message {} byte {}: sent {:#04x}, got back {:#04x}",
                    m.connection,
                    m.message,
                    m.offset,
                    m.expected,
                    m.received
                );
            }
        }
    }

    fn handshake(&mut self, handshake: Handshake, now: Instant) {
        self.connected += 1;
        self.handshakes_total += 1;
        self.handshakes_resumed += u64::from(handshake.resumed);
        self.negotiated.get_or_insert(handshake.negotiated);
        if self.in_window(now) {
            self.handshakes += 1;
            let nanos = now.duration_since(handshake.started).as_nanos();
            self.handshake_latency
                .saturating_record(nanos.try_into().unwrap_or(MAX_LATENCY_NANOS).max(1));
        }
    }
}

/// An empty histogram of latencies in nanoseconds, up to
/// [`MAX_LATENCY_NANOS`].
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3)
        .expect("constant histogram bounds are valid")
}

/// What moves a load thread's bytes: the readiness driver
/// ([`epoll`](super::epoll)) or the completion driver
/// ([`uring`](super::uring)). Everything else — connecting, the payload,
/// the bookkeeping and checks of each connection ([`Conn`]), the tally —
/// is the same for both.
pub trait Driver: Sized {
    /// Sets the driver up for `connections` connections.
    fn open(plan: &Plan, connections: usize) -> io::Result<Self>;

    /// Readies a connected socket, which will be driven as `token`,
    /// before the start.
    fn prepare(&mut self, socket: &Socket, token: usize) -> io::Result<()>;

    /// Drives the connections (each with its first messages queued) until
    /// `until`, reporting to `tally`. A connection's failure is counted
    /// there; an error returned is the driver's own, and ends the thread.
    fn drive(
        self,
        plan: &Plan,
        payload: &Payload,
        conns: Vec<(Socket, Conn)>,
        tally: &mut Tally,
        until: Instant,
    ) -> io::Result<()>;
}

/// Connects the connections numbered `ids` and readies them on the plan's
/// driver, waits at `start` for the other threads, then drives the
/// connections for the warm-up and the measured duration.
pub fn run(plan: &Plan, ids: impl Iterator<Item = u64>, start: &Barrier) -> io::Result<Tally> {
    match plan.io {
        Io::Readiness => run_on::<Readiness>(plan, ids, start),
        #[cfg(target_os = "linux")]
        Io::Uring => run_on::<super::uring::Completion>(plan, ids, start),
    }
}

fn run_on<D: Driver>(
    plan: &Plan,
    ids: impl Iterator<Item = u64>,
    start: &Barrier,
) -> io::Result<Tally> {
    let setup = connect_all::<D>(plan, ids);
    let payload = Payload::new(plan.size);
    // Every thread reaches the barrier, even one whose setup failed, or the
    // others would wait for it forever.
    start.wait();
    let (driver, sockets, connect_errors) = setup?;
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let measure_until = measure_from + plan.duration;
    let mut tally = Tally::new(measure_from, measure_until);
    // With TLS, a connection counts as established once its handshake
    // completes (see `Tally::handshake`).
    if plan.tls.is_none() {
        tally.connected = sockets.len() as u64;
    }
    tally.connect_errors = connect_errors;
    let conns = sockets
        .into_iter()
        .map(|(socket, id)| {
            let mut conn = Conn::new(id, plan.pipeline, started);
            conn.top_up(started);
            (socket, conn)
        })
        .collect();
    driver.drive(plan, &payload, conns, &mut tally, measure_until)?;
    Ok(tally)
}

/// A thread's driver, its connected sockets with their numbers, and how
/// many connections failed.
type Setup<D> = (D, Vec<(Socket, u64)>, u64);

/// Opens the driver and the connections numbered `ids`, each readied on
/// it. A connection that fails to connect is counted, not fatal.
fn connect_all<D: Driver>(plan: &Plan, ids: impl Iterator<Item = u64>) -> io::Result<Setup<D>> {
    let ids: Vec<u64> = ids.collect();
    let mut driver = D::open(plan, ids.len())?;
    let mut connect_errors = 0;
    let mut sockets = Vec::with_capacity(ids.len());
    for id in ids {
        match connect(&plan.target, plan.connect_timeout) {
            Ok(socket) => {
                driver.prepare(&socket, sockets.len())?;
                sockets.push((socket, id));
            }
            Err(e) => {
                connect_errors += 1;
                if connect_errors <= PRINTED_PER_KIND {
                    say!("error: connect {}: {e}", plan.target);
                }
            }
        }
    }
    Ok((driver, sockets, connect_errors))
}

/// A non-blocking TCP socket whose connect to `target` is under way (or
/// done): its completion is the first writable event. Over TCP with
/// Nagle's algorithm off. A Unix socket target is connected at once
/// (within `timeout`).
pub fn connect_nonblocking(target: &Address, timeout: Duration) -> io::Result<Socket> {
    let Address::Inet(address) = target else {
        let socket = connect(target, timeout)?;
        socket.set_nonblocking(true)?;
        return Ok(socket);
    };
    let address = SockAddr::from(*address);
    let socket = Socket::new(address.domain(), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&address) {
        Ok(()) => Ok(socket),
        Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::INPROGRESS) => {
            Ok(socket)
        }
        Err(e) => Err(e),
    }
}

/// A connected stream socket, in blocking mode (the driver's `prepare`
/// changes that if it must); over TCP with Nagle's algorithm off (small
/// messages must go out at once).
pub fn connect(target: &Address, timeout: Duration) -> io::Result<Socket> {
    let address = match target {
        Address::Inet(addr) => SockAddr::from(*addr),
        Address::Unix(path) => SockAddr::unix(path)?,
        Address::Abstract(name) => {
            if !cfg!(any(target_os = "linux", target_os = "android")) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract socket names exist on Linux and Android only",
                ));
            }
            // socket2 takes a leading NUL for the abstract namespace.
            SockAddr::unix(OsStr::from_bytes(&[&[0], name.as_slice()].concat()))?
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to connect to",
            ));
        }
    };
    let stream = Socket::new(address.domain(), Type::STREAM, None)?;
    stream.connect_timeout(&address, timeout)?;
    if target.inet().is_some() {
        stream.set_tcp_nodelay(true)?;
    }
    Ok(stream)
}
