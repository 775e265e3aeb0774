//! One load-generating thread: its own poller, its share of the connections.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use evloop::Address;
use evloop::poll::{Events, Interest, Poller, Token};
use hdrhistogram::Histogram;
use socket2::{SockAddr, Socket, Type};

use super::conn::{Completions, Conn, Mismatch};
use super::payload::Payload;

/// How many events one wait may return.
const EVENTS_PER_WAIT: usize = 1024;
/// The size of the read buffer and of the buffer that gathers pipelined
/// messages into one write.
const IO_BUFFER: usize = 64 * 1024;
/// Problems printed per thread and kind; the rest are only counted.
const PRINTED_PER_KIND: u64 = 5;
/// The longest latency the histogram holds, in nanoseconds; longer ones are
/// recorded as this.
const MAX_LATENCY_NANOS: u64 = 60_000_000_000;

/// What every thread does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The echo server: TCP or a Unix socket.
    pub target: Address,
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
}

/// What one thread measured.
#[derive(Debug)]
pub struct Tally {
    /// Connections established.
    pub connected: u64,
    /// Connections that could not be established.
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
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NANOS, 3)
                .expect("constant histogram bounds are valid"),
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
    }

    fn io_error(&mut self, target: &Address, error: &io::Error) {
        self.io_errors += 1;
        if self.io_errors <= PRINTED_PER_KIND {
            say!("error: connection to {target}: {error}");
        }
    }
}

impl Completions for Tally {
    fn complete(&mut self, sent_at: Instant, now: Instant, mismatch: Option<Mismatch>) {
        self.requests_total += 1;
        if now >= self.measure_from && now < self.measure_until {
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
}

/// Connects the connections numbered `ids`, waits at `start` for the other
/// threads, then drives the connections for the warm-up and the measured
/// duration.
pub fn run(plan: &Plan, ids: impl Iterator<Item = u64>, start: &Barrier) -> io::Result<Tally> {
    let setup = connect_all(plan, ids);
    let payload = Payload::new(plan.size);
    // Every thread reaches the barrier, even one whose setup failed, or the
    // others would wait for it forever.
    start.wait();
    let (poller, mut conns, connect_errors) = setup?;
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let measure_until = measure_from + plan.duration;
    let mut tally = Tally::new(measure_from, measure_until);
    tally.connected = conns.len() as u64;
    tally.connect_errors = connect_errors;

    let mut read_buffer = vec![0; IO_BUFFER];
    let mut write_buffer = vec![0; IO_BUFFER];
    for slot in &mut conns {
        let conn = slot
            .as_mut()
            .expect("every connection is open before the start");
        conn.top_up(started);
        if let Err(e) = conn.flush(&payload, &mut write_buffer) {
            tally.io_error(&plan.target, &e);
            *slot = None;
        }
    }

    let mut events = Events::with_capacity(EVENTS_PER_WAIT);
    loop {
        let now = Instant::now();
        if now >= measure_until {
            break;
        }
        poller.wait(&mut events, Some(measure_until - now))?;
        for event in events.iter() {
            let Some(slot) = conns.get_mut(event.token().0) else {
                continue;
            };
            let Some(conn) = slot else {
                continue;
            };
            if event.is_writable() {
                conn.writable();
            }
            let mut result = Ok(());
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                result = conn.read(&payload, &mut read_buffer, &mut tally);
            }
            // Each message completed by the read queued its successor: send.
            result = result.and_then(|()| conn.flush(&payload, &mut write_buffer));
            if let Err(e) = result {
                tally.io_error(&plan.target, &e);
                // Closing the socket also removes it from the poller.
                *slot = None;
            }
        }
    }
    Ok(tally)
}

/// Opens a poller and the connections numbered `ids`, registered once for
/// both directions. A connection that fails to connect is counted, not fatal.
fn connect_all(
    plan: &Plan,
    ids: impl Iterator<Item = u64>,
) -> io::Result<(Poller, Vec<Option<Conn>>, u64)> {
    let poller = Poller::new()?;
    let now = Instant::now();
    let mut connect_errors = 0;
    let mut conns = Vec::new();
    for id in ids {
        match connect(&plan.target, plan.connect_timeout) {
            Ok(stream) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                poller.register(&stream, Token(conns.len()), interest)?;
                conns.push(Some(Conn::new(stream, id, plan.pipeline, now)));
            }
            Err(e) => {
                connect_errors += 1;
                if connect_errors <= PRINTED_PER_KIND {
                    say!("error: connect {}: {e}", plan.target);
                }
            }
        }
    }
    Ok((poller, conns, connect_errors))
}

/// A connected, non-blocking stream socket; over TCP with Nagle's
/// algorithm off (small messages must go out at once).
fn connect(target: &Address, timeout: Duration) -> io::Result<Socket> {
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
    stream.set_nonblocking(true)?;
    Ok(stream)
}
