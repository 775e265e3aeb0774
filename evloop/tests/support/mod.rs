//! Helpers for the library's integration tests (echo, load, faults,
//! threading): one test per I/O driver and balance mode, an in-process
//! server, clients that stream a checkable byte pattern or random bytes in
//! random-size chunks, bounded waits, and readings of a process's CPU time
//! and memory from `/proc`.
//!
//! Also compiled into the binary-level tests (`tests/serve_faults.rs`) with
//! `#[path]`, so it depends only on `std` and `evloop`.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evloop::{Driver, Report, Server, ServerBuilder, Service, ShutdownHandle};

/// The longest any single wait in these tests may take: far above what a
/// healthy run needs, so that only a real hang reaches it.
pub const LIMIT: Duration = Duration::from_secs(20);

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

// ---- one test per balance mode ----------------------------------------------

/// Instantiates a test `fn name(balance: Balance)` once per balance mode, as
/// `name::reuseport` and `name::handoff`.
#[allow(unused_macros)] // each test binary uses its own subset
macro_rules! per_balance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn reuseport() {
                super::$name(evloop::Balance::ReusePort)
            }
            #[test]
            fn handoff() {
                super::$name(evloop::Balance::Handoff)
            }
        }
    )*};
}
#[allow(unused_imports)] // each test binary uses its own subset
pub(crate) use per_balance;

// ---- one test per I/O driver ---------------------------------------------------

/// Instantiates a test `fn name(driver: Driver)` once per I/O driver, as
/// `name::epoll` (the readiness driver: epoll here, kqueue on the BSDs and
/// macOS) and `name::uring` (io_uring; skipped, saying why, where it is
/// unavailable). The readiness driver is named explicitly: `Driver::Auto`
/// picks io_uring wherever it works, which would leave epoll untested.
#[allow(unused_macros)] // each test binary uses its own subset
macro_rules! per_driver {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn epoll() {
                super::$name(evloop::Driver::Readiness)
            }
            #[test]
            fn uring() {
                if $crate::support::uring_available() {
                    super::$name(evloop::Driver::Uring)
                }
            }
        }
    )*};
}
#[allow(unused_imports)] // each test binary uses its own subset
pub(crate) use per_driver;

/// Instantiates a test `fn name(balance: Balance, driver: Driver)` once per
/// balance mode and I/O driver, as `name::reuseport_epoll`,
/// `name::reuseport_uring`, `name::handoff_epoll` and `name::handoff_uring`
/// (the drivers as in [`per_driver`]).
#[allow(unused_macros)] // each test binary uses its own subset
macro_rules! per_balance_and_driver {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn reuseport_epoll() {
                super::$name(evloop::Balance::ReusePort, evloop::Driver::Readiness)
            }
            #[test]
            fn reuseport_uring() {
                if $crate::support::uring_available() {
                    super::$name(evloop::Balance::ReusePort, evloop::Driver::Uring)
                }
            }
            #[test]
            fn handoff_epoll() {
                super::$name(evloop::Balance::Handoff, evloop::Driver::Readiness)
            }
            #[test]
            fn handoff_uring() {
                if $crate::support::uring_available() {
                    super::$name(evloop::Balance::Handoff, evloop::Driver::Uring)
                }
            }
        }
    )*};
}
#[allow(unused_imports)] // each test binary uses its own subset
pub(crate) use per_balance_and_driver;

/// Whether io_uring works here. If not, prints the one line that says the
/// test is skipped and why: a machine without it (an old kernel, a seccomp
/// profile, `kernel.io_uring_disabled`) still runs every epoll test. CI
/// sets `EVLOOP_REQUIRE_URING`, which turns the skip into a failure, so
/// nothing hides behind it there.
pub fn uring_available() -> bool {
    match uring_unavailable() {
        None => true,
        Some(why) => {
            assert!(
                std::env::var_os("EVLOOP_REQUIRE_URING").is_none(),
                "io_uring unavailable: {why}"
            );
            println!("skipped: io_uring unavailable here: {why}");
            false
        }
    }
}

/// Why io_uring cannot run here, if it cannot: what the library's own probe
/// (the check `Driver::Auto` makes) met.
#[cfg(target_os = "linux")]
fn uring_unavailable() -> Option<String> {
    evloop::ring::Ring::probe().err().map(|e| e.to_string())
}

#[cfg(not(target_os = "linux"))]
fn uring_unavailable() -> Option<String> {
    Some("io_uring exists on Linux only".into())
}

/// The name `per_driver` gives a driver's test, for a test that re-runs
/// itself in a child process with `--exact`.
pub fn variant(driver: Driver) -> &'static str {
    match driver {
        Driver::Uring => "uring",
        _ => "epoll",
    }
}

// ---- sharing the machine ---------------------------------------------------

static MACHINE: RwLock<()> = RwLock::new(());

/// Taken by tests that load the machine; many may hold it at once.
pub fn shared_machine() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

/// Taken by timing-sensitive tests (latency percentiles): they run while no
/// other test of the same binary loads the machine.
pub fn quiet_machine() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

// ---- waiting ---------------------------------------------------------------

/// Polls `condition` every few milliseconds until it holds; fails the test
/// after `limit`. Returns how long it took.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

// ---- an in-process server ----------------------------------------------------

/// A server running on its own threads. Dropping it (a failed test) cuts
/// its connections so nothing hangs.
pub struct TestServer {
    /// Its first TCP address (`0.0.0.0:0` if it has none).
    pub addr: SocketAddr,
    handle: ShutdownHandle,
    join: Option<JoinHandle<io::Result<Report>>>,
}

/// A server builder whose loops run on `driver`, which must be a concrete
/// one: `Driver::Auto` would pick io_uring wherever it works, so a test
/// meant for the readiness driver would silently run on the other.
#[track_caller]
pub fn builder(driver: Driver) -> ServerBuilder {
    assert!(
        matches!(driver, Driver::Readiness | Driver::Uring),
        "a test names its driver, not {driver:?}"
    );
    Server::builder().io(driver)
}

/// Starts `service` on a free loopback port, on `driver`, configured by
/// `configure`.
#[track_caller]
pub fn start<S: Service>(
    service: S,
    driver: Driver,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> TestServer {
    let builder = configure(builder(driver).listen(SocketAddr::from(([127, 0, 0, 1], 0))));
    run(builder.build(service).expect("server builds"))
}

/// Runs a server built by the test.
pub fn run<S: Service>(server: Server<S>) -> TestServer {
    let addr = (server.local_addrs().iter())
        .find_map(|a| a.inet())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let handle = server.shutdown_handle();
    let join = std::thread::Builder::new()
        .name("test-server".into())
        .spawn(move || server.run())
        .unwrap();
    TestServer {
        addr,
        handle,
        join: Some(join),
    }
}

impl TestServer {
    /// A handle to shut the server down from another thread.
    pub fn handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Asks for a graceful shutdown and waits (bounded) for the report.
    #[track_caller]
    pub fn stop(self) -> Report {
        self.handle.shutdown();
        self.join()
    }

    /// Waits (bounded) for a server already asked to shut down to stop.
    #[track_caller]
    pub fn join(mut self) -> Report {
        let join = self.join.take().unwrap();
        wait_until("the server to stop", LIMIT, || join.is_finished());
        join.join()
            .expect("server thread panicked")
            .expect("server failed")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            self.handle.shutdown();
            self.handle.shutdown(); // cut whatever is left: a failed test must not hang
            let _ = join.join();
        }
    }
}

/// Fails unless every loop of the report accepted and read something: the
/// connections were spread, none of the loops idled.
#[track_caller]
pub fn assert_every_loop_worked(report: &Report, what: &str) {
    for (i, l) in report.loops.iter().enumerate() {
        eprintln!("{what} loop {i}: {}", l.counters);
        assert!(
            l.counters.accepted > 0 && l.counters.bytes_in > 0,
            "{what}: loop {i} did no work: {}",
            l.counters
        );
    }
}

/// Waits until every stream is under way, asks the server to shut down,
/// and checks that each stream still gets all its echo; returns the report.
#[track_caller]
pub fn shut_down_mid_stream(server: TestServer, streams: Vec<Streamer>, bytes: u64) -> Report {
    wait_until("every stream to be under way", LIMIT, || {
        streams.iter().all(|s| s.received() >= 256 * KIB as u64)
    });
    server.handle().shutdown();
    for stream in streams {
        assert_eq!(stream.finish().received, bytes);
    }
    server.join()
}

// ---- clients ---------------------------------------------------------------

/// Connects with read and write timeouts (so a broken server fails the test
/// instead of hanging it) and without Nagle's delay.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Connects to a Unix socket, with read and write timeouts.
#[track_caller]
pub fn connect_unix(path: &Path) -> UnixStream {
    let stream =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    stream
}

/// A connected stream the clients here can drive: TCP or Unix.
pub trait Duplex: Read + Write + Send + Sized + 'static {
    /// A second handle to the same connection.
    fn duplicate(&self) -> io::Result<Self>;
    /// Sends end of stream.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Duplex for TcpStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Duplex for UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Sends `message` and reads back exactly as many bytes; returns them.
pub fn try_round_trip(stream: &mut impl Duplex, message: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(message)?;
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back)?;
    Ok(back)
}

/// Sends `message`, expects it echoed, and returns the round-trip time.
#[track_caller]
pub fn round_trip(stream: &mut impl Duplex, message: &[u8]) -> Duration {
    let start = Instant::now();
    let back = try_round_trip(stream, message).expect("echo round trip");
    let took = start.elapsed();
    assert!(back == message, "echo returned different bytes");
    took
}

/// Connects and checks that a short message comes back.
#[track_caller]
pub fn assert_echo_works(addr: SocketAddr) {
    let mut stream = connect(addr);
    round_trip(&mut stream, b"are you there?");
}

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Read returned 0.
    Eof,
    /// Read failed with a reset (the server closed with data unread).
    Reset,
}

/// Reads (discarding) until the server closes the connection; returns how it
/// ended and how long that took. Fails after `limit`.
#[track_caller]
pub fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> (Ending, Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (Ending::Eof, start.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return (Ending::Reset, start.elapsed());
            }
            Err(e) => panic!(
                "connection not closed within {limit:?} ({e}, after {:?})",
                start.elapsed()
            ),
        }
        assert!(
            start.elapsed() < limit,
            "connection not closed within {limit:?}"
        );
    }
}

// ---- a checkable byte stream -------------------------------------------------

/// The pattern repeats with this period: a prime (2^16 + 1), so it never
/// lines up with chunk or buffer sizes, and a 64 KiB chunk fits in one.
const PERIOD: usize = 65_537;

fn pattern_table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut rng = Rng::new(1);
        let one: Vec<u8> = (0..PERIOD).map(|_| (rng.next() >> 56) as u8).collect();
        // Twice over, so that any window up to PERIOD long is one slice.
        [one.as_slice(), one.as_slice()].concat()
    })
}

/// `len` (at most 65,537) bytes of stream `seed` from `offset` on. Streams
/// of different seeds are shifted copies of one sequence, so bytes delivered
/// to the wrong connection or out of order are caught.
pub fn pattern(seed: u64, offset: u64, len: usize) -> &'static [u8] {
    assert!(len <= PERIOD);
    let start = ((offset + seed.wrapping_mul(7_919)) % PERIOD as u64) as usize;
    &pattern_table()[start..start + len]
}

/// How much a [`Streamer`] sends.
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    /// This many bytes, then a half-close.
    Bytes(u64),
    /// Until [`Streamer::stop`], then a half-close.
    UntilStopped,
}

/// One connection that writes pattern `seed` in `chunk`-sized writes on one
/// thread while another thread reads the echo and checks it byte for byte.
pub struct Streamer {
    pub seed: u64,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writer: JoinHandle<Result<u64, String>>,
    reader: JoinHandle<Result<u64, String>>,
}

/// What a finished [`Streamer`] saw.
#[derive(Debug)]
pub struct Streamed {
    pub sent: u64,
    pub received: u64,
}

impl Streamer {
    #[track_caller]
    pub fn start(addr: SocketAddr, seed: u64, amount: Amount, chunk: usize) -> Streamer {
        Streamer::spawn(connect(addr), seed, amount, chunk, None)
    }

    /// Like [`Streamer::start`], over the Unix socket at `path`.
    #[track_caller]
    pub fn start_unix(path: &Path, seed: u64, amount: Amount, chunk: usize) -> Streamer {
        Streamer::spawn(connect_unix(path), seed, amount, chunk, None)
    }

    /// Like [`Streamer::start`], but the writer stops once it has sent
    /// `hold_at` bytes and goes on only when `release` is set, so a test
    /// can act while every stream is certainly in mid-flight.
    #[track_caller]
    pub fn start_held(
        addr: SocketAddr,
        seed: u64,
        amount: Amount,
        chunk: usize,
        hold_at: u64,
        release: &Arc<AtomicBool>,
    ) -> Streamer {
        let hold = Some((hold_at, Arc::clone(release)));
        Streamer::spawn(connect(addr), seed, amount, chunk, hold)
    }

    fn spawn(
        stream: impl Duplex,
        seed: u64,
        amount: Amount,
        chunk: usize,
        hold: Option<(u64, Arc<AtomicBool>)>,
    ) -> Streamer {
        let chunk = chunk.clamp(1, PERIOD);
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader_stream = stream.duplicate().unwrap();
        let writer = {
            let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut offset = 0u64;
                loop {
                    let left = match amount {
                        Amount::Bytes(total) => total - offset,
                        Amount::UntilStopped if stop.load(Ordering::Relaxed) => 0,
                        Amount::UntilStopped => u64::MAX,
                    };
                    if left == 0 {
                        break;
                    }
                    let mut n = chunk.min(usize::try_from(left).unwrap_or(usize::MAX));
                    if let Some((hold_at, release)) = &hold {
                        if offset == *hold_at {
                            let held = Instant::now();
                            while !release.load(Ordering::Acquire) {
                                if held.elapsed() > LIMIT {
                                    return Err(format!("stream {seed}: never released"));
                                }
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        } else if offset < *hold_at {
                            n = n.min((*hold_at - offset) as usize);
                        }
                    }
                    stream
                        .write_all(pattern(seed, offset, n))
                        .map_err(|e| format!("stream {seed}: write at {offset}: {e}"))?;
                    offset += n as u64;
                    sent.store(offset, Ordering::Relaxed);
                }
                stream
                    .shutdown_write()
                    .map_err(|e| format!("stream {seed}: half-close: {e}"))?;
                Ok(offset)
            })
        };
        let reader = {
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; PERIOD];
                let mut offset = 0u64;
                loop {
                    let n = match reader_stream.read(&mut buf) {
                        Ok(0) => return Ok(offset),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(format!("stream {seed}: read at {offset}: {e}")),
                    };
                    if buf[..n] != *pattern(seed, offset, n) {
                        return Err(format!("stream {seed}: wrong bytes at {offset}..+{n}"));
                    }
                    offset += n as u64;
                    received.store(offset, Ordering::Relaxed);
                }
            })
        };
        Streamer {
            seed,
            sent,
            received,
            stop,
            writer,
            reader,
        }
    }

    /// Bytes written so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Echoed bytes read (and checked) so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Ends an [`Amount::UntilStopped`] stream after the current write.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for both threads; fails on any error or on a short or long echo.
    #[track_caller]
    pub fn finish(self) -> Streamed {
        let seed = self.seed;
        let sent = self.writer.join().expect("writer panicked");
        let received = self.reader.join().expect("reader panicked");
        let (sent, received) = match (sent, received) {
            (Ok(s), Ok(r)) => (s, r),
            (s, r) => panic!("stream {seed}: writer {s:?}, reader {r:?}"),
        };
        assert_eq!(
            received, sent,
            "stream {seed}: echoed {received} of {sent} bytes"
        );
        Streamed { sent, received }
    }
}

// ---- random bytes in random-size chunks ---------------------------------------

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Writes all of `data` from another thread and half-closes, while this
/// thread reads until end of stream (which must be EOF, not a reset); the
/// writer does not wait for the reader, so the server's output can back up.
#[track_caller]
pub fn write_then_half_close_and_read(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let data = data.to_vec();
    let writing = std::thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("EOF, not a reset");
    writing.join().unwrap();
    got
}

/// Sends `data` in random-size chunks (1 byte to 64 KiB, drawn from `seed`)
/// on one thread while reading the echo on another; returns what came back
/// before EOF (the client half-closes after sending).
#[track_caller]
pub fn echo_in_chunks(addr: SocketAddr, data: &[u8], seed: u64) -> Vec<u8> {
    let stream = connect(addr);
    let mut reader = stream.try_clone().unwrap();
    std::thread::scope(|s| {
        let received = s.spawn(move || {
            let mut got = Vec::with_capacity(data.len());
            reader.read_to_end(&mut got).map(|_| got)
        });
        let mut writer = &stream;
        let mut rng = Rng::new(seed);
        let mut sent = 0;
        while sent < data.len() {
            let n = rng.between(1, 64 * KIB).min(data.len() - sent);
            writer.write_all(&data[sent..sent + n]).expect("write");
            sent += n;
        }
        stream.shutdown(Shutdown::Write).unwrap();
        received.join().unwrap().expect("read echo")
    })
}

// ---- processes, from /proc -----------------------------------------------------

/// Clock ticks per second for `/proc/*/stat` times (`getconf CLK_TCK`; 100
/// on every Linux configuration in practice).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime, in clock ticks, from a `stat` file.
fn stat_ticks(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `state` is field 3 of the whole line, fields[0] here; utime is field 14.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time a process has used (all its threads).
#[track_caller]
pub fn process_cpu(pid: u32) -> Duration {
    let ticks = stat_ticks(&format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    ticks_to_duration(ticks)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
}

/// CPU time used by each thread of a process, by thread name.
#[track_caller]
pub fn thread_cpu(pid: u32) -> Vec<(String, Duration)> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task") {
        let dir = entry.unwrap().path();
        let dir = dir.to_string_lossy();
        let Ok(name) = std::fs::read_to_string(format!("{dir}/comm")) else {
            continue; // the thread exited meanwhile
        };
        if let Some(ticks) = stat_ticks(&format!("{dir}/stat")) {
            threads.push((name.trim().to_string(), ticks_to_duration(ticks)));
        }
    }
    threads.sort();
    threads
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
#[track_caller]
pub fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable line: {line}"));
    kib * 1024
}

/// The `q`-quantile (0..=1) of `samples`, which it sorts.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    assert!(!samples.is_empty());
    samples.sort();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}
