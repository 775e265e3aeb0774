//! The fallback from io_uring to epoll, shown for real: with io_uring
//! disabled by the kernel (`sysctl kernel.io_uring_disabled=2`), `auto`
//! serves on epoll and says why, and asking for io_uring fails at once in
//! one line that says why.
//!
//! A test binary of its own, with one test: the sysctl is system-wide, and
//! cargo runs test binaries one after another, so no other test of this
//! package runs while it is set. It needs root; elsewhere it skips, saying
//! so. The old value is put back when the test ends, also if it fails.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitStatus;

use common::{Io, LIMIT, ServerProcess, evloop, run_command_to_exit};

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// io_uring disabled by the kernel until dropped, then as it was.
struct Disabled {
    old: String,
}

impl Disabled {
    /// Sets the sysctl to 2, or says why it cannot and returns `None`.
    fn set() -> Option<Disabled> {
        let old = match std::fs::read_to_string(SYSCTL) {
            Ok(old) => old.trim().to_owned(),
            Err(e) => {
                eprintln!("skipped: cannot read {SYSCTL} ({e}): this kernel has no such switch");
                return None;
            }
        };
        if let Err(e) = std::fs::write(SYSCTL, "2") {
            eprintln!("skipped: cannot write {SYSCTL} ({e}): the test needs root");
            return None;
        }
        Some(Disabled { old })
    }
}

impl Drop for Disabled {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(SYSCTL, &self.old) {
            // Not a panic: this may run while a failure unwinds.
            eprintln!(
                "could not restore {SYSCTL} to {}: {e}; run: sysctl kernel.io_uring_disabled={}",
                self.old, self.old
            );
        }
    }
}

/// The server echoes a message: it serves.
#[track_caller]
fn assert_echoes(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.write_all(b"fallback").unwrap();
    let mut back = [0u8; 8];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"fallback");
}

/// Stops the server with SIGTERM; it must exit 0.
#[track_caller]
fn stop(mut server: ServerProcess) {
    server.signal("TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status}\n{}", server.log_text());
}

/// Runs `evloop serve echo` with `EVLOOP_IO` and `args` until it exits.
#[track_caller]
fn serve_to_exit(evloop_io: Option<&str>, args: &[&str]) -> (ExitStatus, String) {
    let mut command = evloop();
    command.env("RUST_LOG", "info");
    if let Some(value) = evloop_io {
        command.env("EVLOOP_IO", value);
    }
    let mut all = vec!["serve", "echo", "--listen", "127.0.0.1:0"];
    all.extend(args);
    let (status, stderr, _) = run_command_to_exit(command, &all);
    (status, stderr)
}

#[test]
fn with_io_uring_disabled_auto_falls_back_and_uring_refuses_in_one_line() {
    // Whether io_uring works before the switch: if not, that it works
    // again afterwards cannot be shown.
    let worked_before = evloop::ring::Ring::probe().is_ok();
    let Some(disabled) = Disabled::set() else {
        return;
    };
    let why = "disabled by the kernel (sysctl kernel.io_uring_disabled = 2)";

    // auto: epoll, and the one start-up line says why.
    let mut server = ServerProcess::start_exact(evloop(), &["echo", "--listen", "127.0.0.1:0"]);
    let driver = server.wait_for_line("I/O driver: ");
    assert!(
        driver.ends_with(&format!("I/O driver: epoll (io_uring unavailable: {why})")),
        "{driver}"
    );
    assert_eq!(server.count_log("I/O driver"), 1, "{}", server.log_text());
    assert_echoes(server.addr);
    stop(server);

    // io_uring asked for, by the environment or the option: exit 1 with
    // one line that says why.
    for (evloop_io, args) in [(Some("uring"), &[][..]), (None, &["--io", "uring"])] {
        let (status, stderr) = serve_to_exit(evloop_io, args);
        let what = format!("EVLOOP_IO={evloop_io:?} {args:?}");
        assert_eq!(status.code(), Some(1), "{what}: {status}\n{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines, [format!("evloop: io_uring: {why}")], "{what}");
    }

    // epoll asked for: served, with no word of a fallback.
    let server = ServerProcess::start(Io::Epoll, &["echo"]);
    assert_echoes(server.addr);
    stop(server);

    drop(disabled);
    if !worked_before {
        eprintln!("skipped: io_uring did not work here before the test; cannot show it back");
        return;
    }
    // Enabled again: --io uring starts (ServerProcess checks the line).
    let server = ServerProcess::start(Io::Uring, &["echo"]);
    assert_echoes(server.addr);
    stop(server);
}
