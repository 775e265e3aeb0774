//! Helpers for the library's integration tests: an in-process server on a
//! random loopback port, and clients with bounded waits.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evloop::{Report, Server, ServerBuilder, Service, ShutdownHandle};

/// The longest any single wait in a test may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A server running on its own threads; stopped (gracefully) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: ShutdownHandle,
    join: Option<JoinHandle<io::Result<Report>>>,
}

impl TestServer {
    /// Asks for a graceful shutdown and waits for the report.
    #[track_caller]
    pub fn stop(mut self) -> Report {
        self.handle.shutdown();
        self.join
            .take()
            .unwrap()
            .join()
            .expect("server thread panicked")
            .expect("server failed")
    }

    /// The handle, to shut down from another thread.
    pub fn handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Waits for the server to stop by itself (after `handle().shutdown()`).
    #[track_caller]
    pub fn join(mut self) -> Report {
        self.join
            .take()
            .unwrap()
            .join()
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

/// Starts `service` on 127.0.0.1 with a free port, configured by `configure`.
#[track_caller]
pub fn start<S: Service>(
    service: S,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> TestServer {
    let builder = configure(Server::builder().listen("127.0.0.1:0".parse().unwrap()));
    let server = builder.build(service).expect("server builds");
    let addr = server.local_addrs()[0];
    let handle = server.shutdown_handle();
    let join = std::thread::spawn(move || server.run());
    TestServer {
        addr,
        handle,
        join: Some(join),
    }
}

/// Connects with read/write timeouts, so a broken server fails the test
/// instead of hanging it.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    stream
}

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

/// Sends `data` in random-size chunks on one thread while reading the echo
/// on another; returns what came back before EOF (the client half-closes
/// after sending).
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
            let n = rng.between(1, 64 * 1024).min(data.len() - sent);
            writer.write_all(&data[sent..sent + n]).expect("write");
            sent += n;
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        received.join().unwrap().expect("read echo")
    })
}

/// Polls `condition` until it holds or `LIMIT` passes.
#[track_caller]
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
