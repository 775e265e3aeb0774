//! Issue 12, part 4: zero-downtime restarts. SIGUSR2 (or SIGHUP) starts a
//! successor from the program's path with the same arguments, hands it the
//! listening sockets, and drains once it serves. Under a continuous load of
//! clients connecting, echoing and closing, no connection is refused, reset
//! or corrupted, in both balance modes and on both I/O drivers; a binary
//! replaced at the path is the one that starts (an upgrade); and a
//! successor that fails leaves the old process serving.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Io, LIMIT, OtherProcess, ServerProcess};

/// Client threads of the load.
const CLIENTS: usize = 4;
/// Successful connections the load makes between two steps of a test.
const STEP: u64 = 1_500;

/// The successor the `nth` (from 1) hand-over line of the log names.
#[track_caller]
fn handed_over_to(server: &mut ServerProcess, nth: usize) -> OtherProcess {
    const HANDOVER: &str = "serves; handing over";
    server.wait_for_log("the hand-over", |lines| {
        lines.iter().filter(|l| l.contains(HANDOVER)).count() >= nth
    });
    let line = (server.log.iter())
        .filter(|l| l.contains(HANDOVER))
        .nth(nth - 1)
        .unwrap();
    let pid = line
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    OtherProcess(pid)
}

/// What the load's connections met.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    corrupted: AtomicU64,
    other: AtomicU64,
}

/// Clients connecting, echoing 64 bytes and closing, as fast as they can,
/// until stopped.
struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..CLIENTS as u64)
            .map(|client| {
                let tally = Arc::clone(&tally);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let counter = match one_connection(addr, client, n) {
                            Ok(()) => &tally.ok,
                            Err(Failure::Refused) => &tally.refused,
                            Err(Failure::Reset) => &tally.reset,
                            Err(Failure::Corrupted) => &tally.corrupted,
                            Err(Failure::Other(e)) => {
                                eprintln!("client {client}: {e}");
                                &tally.other
                            }
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            tally,
            stop,
            threads,
            started: Instant::now(),
        }
    }

    fn ok(&self) -> u64 {
        self.tally.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` connections beyond now have succeeded.
    #[track_caller]
    fn run_for(&self, more: u64) {
        let target = self.ok() + more;
        let deadline = Instant::now() + LIMIT;
        while self.ok() < target {
            assert!(
                Instant::now() < deadline,
                "the load stalled at {}",
                self.ok()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients; returns the tally and the connections per second.
    fn finish(self) -> (Arc<Tally>, f64) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let rate =
            self.tally.ok.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64();
        (self.tally, rate)
    }
}

enum Failure {
    Refused,
    Reset,
    Corrupted,
    Other(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        match e.kind() {
            ErrorKind::ConnectionRefused => Failure::Refused,
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => {
                Failure::Reset
            }
            _ => Failure::Other(e),
        }
    }
}

/// Connects, sends 64 bytes that name the client and the connection, reads
/// them back, closes.
fn one_connection(addr: SocketAddr, client: u64, n: u64) -> Result<(), Failure> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(LIMIT))?;
    stream.set_write_timeout(Some(LIMIT))?;
    let mut message = [0u8; 64];
    for (i, byte) in message.iter_mut().enumerate() {
        *byte = (client as u8).wrapping_mul(31) ^ (n as u8).wrapping_add(i as u8);
    }
    stream.write_all(&message)?;
    let mut back = [0u8; 64];
    stream.read_exact(&mut back)?;
    if back != message {
        return Err(Failure::Corrupted);
    }
    Ok(())
}

/// Restarts twice under load (the successor restarts in its turn);
/// asserts no connection failed and prints the figures.
fn restarts_under_load_lose_no_connection(io: Io, balance: &str, signal: &str) {
    let mut server = ServerProcess::start(io, &["echo", "--threads", "2", "--balance", balance]);
    let load = Load::start(server.addr);
    load.run_for(STEP);
    server.signal(signal);
    let first = handed_over_to(&mut server, 1);
    assert!(server.wait_exit().success(), "{}", server.log.join("\n"));
    load.run_for(STEP);
    // Its log comes through the same pipe.
    first.signal(rustix::process::Signal::USR2);
    let second = handed_over_to(&mut server, 2);
    first.wait_exit();
    load.run_for(STEP);
    let (tally, rate) = load.finish();
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "restart on {}, {balance}, {signal} then SIGUSR2: {} connections at {rate:.0}/s; refused {}, reset {}, corrupted {}, other {}",
        io.name(),
        count(&tally.ok),
        count(&tally.refused),
        count(&tally.reset),
        count(&tally.corrupted),
        count(&tally.other),
    );
    assert_eq!(count(&tally.refused), 0, "refused");
    assert_eq!(count(&tally.reset), 0, "reset");
    assert_eq!(count(&tally.corrupted), 0, "corrupted");
    assert_eq!(count(&tally.other), 0, "other failures");
    assert!(rate >= 1_000.0, "the load ran at {rate:.0} connections/s");
    second.stop();
}

mod under_load {
    use super::*;

    #[test]
    fn reuseport_epoll() {
        restarts_under_load_lose_no_connection(Io::Epoll, "reuseport", "USR2");
    }

    #[test]
    fn handoff_epoll() {
        restarts_under_load_lose_no_connection(Io::Epoll, "handoff", "HUP");
    }

    #[test]
    fn reuseport_uring() {
        if Io::Uring.available() {
            restarts_under_load_lose_no_connection(Io::Uring, "reuseport", "HUP");
        }
    }

    #[test]
    fn handoff_uring() {
        if Io::Uring.available() {
            restarts_under_load_lose_no_connection(Io::Uring, "handoff", "USR2");
        }
    }
}

/// Puts `source` at `path` the way a package manager does: written beside
/// it, then renamed over it (a running binary cannot be written in place).
fn install(source: &std::path::Path, path: &std::path::Path) {
    let staged = path.with_extension("new");
    std::fs::copy(source, &staged).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// A program that fails at once, where the binary was: the restart fails,
/// is logged, and the old process goes on serving. Then the real binary is
/// put back (an upgrade): the restart runs it, from the same path.
#[test]
fn a_failed_restart_keeps_serving_and_an_upgrade_runs_the_new_binary() {
    let dir = std::env::temp_dir().join(format!("evloop-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("evloop");
    install(std::path::Path::new(env!("CARGO_BIN_EXE_evloop")), &program);
    let mut command = std::process::Command::new(&program);
    command.env_remove("EVLOOP_IO");
    let mut server = ServerProcess::start_with(Io::Epoll, command, &["echo", "--threads", "2"]);
    let load = Load::start(server.addr);
    load.run_for(STEP);

    let broken = dir.join("broken.sh");
    std::fs::write(&broken, "#!/bin/sh\necho 'broken build' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    install(&broken, &program);
    server.signal("USR2");
    let failed = server.wait_for_line("restart failed");
    assert!(
        failed.contains("exit status: 3") && failed.contains("still serving"),
        "{failed}"
    );
    load.run_for(STEP);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the old process exited"
    );

    install(std::path::Path::new(env!("CARGO_BIN_EXE_evloop")), &program);
    server.signal("USR2");
    let upgraded = handed_over_to(&mut server, 1);
    assert!(server.wait_exit().success());
    let exe = std::fs::read_link(format!("/proc/{}/exe", upgraded.0)).unwrap();
    assert_eq!(
        exe, program,
        "the successor runs the binary now at the path"
    );
    load.run_for(STEP);
    let (tally, _) = load.finish();
    let failures = tally.refused.load(Ordering::Relaxed)
        + tally.reset.load(Ordering::Relaxed)
        + tally.corrupted.load(Ordering::Relaxed)
        + tally.other.load(Ordering::Relaxed);
    assert_eq!(failures, 0);
    upgraded.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The metrics endpoint's socket is handed over too: the successor answers
/// on the same port (which the predecessor still held when it started).
#[test]
fn the_metrics_endpoint_moves_to_the_successor() {
    let mut server = ServerProcess::start(Io::Epoll, &["echo", "--metrics", "127.0.0.1:0"]);
    let line = server.wait_for_line("metrics: listening on");
    let metrics: SocketAddr = line
        .rsplit("listening on ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // Ready once the loops run, a moment after the listening lines.
    let ready = || {
        let deadline = Instant::now() + LIMIT;
        while !get(metrics, "/ready").starts_with("HTTP/1.1 200") {
            assert!(Instant::now() < deadline, "never ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    ready();
    server.signal("USR2");
    let successor = handed_over_to(&mut server, 1);
    assert!(server.wait_exit().success(), "{}", server.log.join("\n"));
    // The successor serves (it said so before the hand-over): ready at once.
    assert!(get(metrics, "/ready").starts_with("HTTP/1.1 200"));
    assert!(get(metrics, "/metrics").contains("evloop_connections_accepted_total"));
    successor.stop();
}

/// One HTTP/1.1 GET of `path`; the whole answer.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: evloop\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}
