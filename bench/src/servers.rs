//! The servers under test: how to start each one pinned to its CPU, know when
//! it is ready, read its CPU time and memory, and stop it.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::prepare::Binaries;

/// The CPU the servers run on; the load generator runs on [`LOAD_CPU`].
pub const SERVER_CPU: &str = "0";
/// The CPU the load generator runs on.
pub const LOAD_CPU: &str = "1";
/// How long a server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A server in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// `evloop serve echo --threads 1 --io epoll`: the readiness driver,
    /// named explicitly (the default, `auto`, would pick io_uring where the
    /// kernel has it).
    Evloop,
    /// `evloop serve echo --threads 1 --io uring`: the completion driver.
    EvloopUring,
    /// `bench/c/epoll_echo.c`: batched `epoll_wait`, the baseline.
    CEpoll,
    /// `bench/c/uring_echo.c`: io_uring with multishot accept and receive
    /// into provided buffers.
    CUring,
    /// The same C source as [`ServerKind::CEpoll`] with one event per
    /// `epoll_wait`, as in the seed.
    COneEvent,
    /// The mio echo server of [`crate::peers`].
    Mio,
    /// The tokio echo server on the `current_thread` runtime.
    TokioCurrentThread,
    /// The tokio echo server on the `multi_thread` runtime, two workers.
    TokioMultiThread,
}

impl ServerKind {
    /// Every server, in the order runs interleave and tables list them.
    pub const ALL: [ServerKind; 8] = [
        ServerKind::CEpoll,
        ServerKind::Evloop,
        ServerKind::CUring,
        ServerKind::EvloopUring,
        ServerKind::COneEvent,
        ServerKind::Mio,
        ServerKind::TokioCurrentThread,
        ServerKind::TokioMultiThread,
    ];

    /// The server every ratio is taken against.
    pub const BASELINE: ServerKind = ServerKind::CEpoll;

    /// The second reference, for the completion drivers: tables show every
    /// server's ratios to it beside those to [`ServerKind::BASELINE`].
    pub const URING_BASELINE: ServerKind = ServerKind::CUring;

    /// The name in tables, charts and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Evloop => "evloop",
            ServerKind::EvloopUring => "evloop-uring",
            ServerKind::CEpoll => "c-epoll",
            ServerKind::CUring => "c-uring",
            ServerKind::COneEvent => "c-epoll-1-event",
            ServerKind::Mio => "mio",
            ServerKind::TokioCurrentThread => "tokio-current-thread",
            ServerKind::TokioMultiThread => "tokio-multi-thread-2",
        }
    }

    /// The server called `name` in tables, if there is one.
    pub fn from_name(name: &str) -> Option<ServerKind> {
        ServerKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Why valgrind's callgrind cannot count this server's instructions, if
    /// it cannot.
    pub fn callgrind_unsupported(self) -> Option<&'static str> {
        match self {
            // Seen with valgrind 3.19: signals stay pending while
            // io_uring_enter waits, even across completions, so SIGTERM and
            // SIGINT never end the server and callgrind never writes.
            // The same with evloop's completion driver (valgrind 3.19, Linux
            // 6.18): it serves under callgrind, but neither SIGTERM nor
            // SIGINT reaches it while its loop waits in io_uring_enter.
            ServerKind::CUring | ServerKind::EvloopUring => Some(
                "unavailable (valgrind does not support io_uring: signals stay pending \
                 while io_uring_enter waits, so the server never stops and callgrind \
                 writes no counts)",
            ),
            _ => None,
        }
    }

    /// The program and arguments that run this server on `port`, or why it
    /// cannot run.
    fn command_line(self, binaries: &Binaries, port: u16) -> Result<Vec<String>, String> {
        let port = port.to_string();
        let program = |path: &Result<PathBuf, String>| -> Result<String, String> {
            path.as_ref()
                .map(|p| p.display().to_string())
                .map_err(Clone::clone)
        };
        Ok(match self {
            ServerKind::Evloop | ServerKind::EvloopUring => evloop_serve(
                Path::new(&program(&binaries.evloop)?),
                "echo",
                &[],
                &port,
                if self == ServerKind::Evloop {
                    "epoll"
                } else {
                    "uring"
                },
            ),
            ServerKind::CEpoll => vec![program(&binaries.c_epoll)?, port],
            ServerKind::CUring => vec![program(&binaries.c_uring)?, port],
            ServerKind::COneEvent => vec![program(&binaries.c_one_event)?, port],
            ServerKind::Mio => vec![program(&binaries.harness)?, "serve-mio".into(), port],
            ServerKind::TokioCurrentThread => {
                vec![
                    program(&binaries.harness)?,
                    "serve-tokio-current".into(),
                    port,
                ]
            }
            ServerKind::TokioMultiThread => vec![
                program(&binaries.harness)?,
                "serve-tokio-multi".into(),
                port,
                "--workers".into(),
                "2".into(),
            ],
        })
    }
}

/// `evloop serve SERVICE [SERVICE ARGS] --listen 127.0.0.1:PORT --threads 1
/// --io IO`: one loop, on the driver named (never `auto`, which would pick
/// for itself).
pub fn evloop_serve(
    evloop: &Path,
    service: &str,
    service_args: &[String],
    port: &str,
    io: &str,
) -> Vec<String> {
    [evloop.display().to_string(), "serve".into(), service.into()]
        .into_iter()
        .chain(service_args.iter().cloned())
        .chain([
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--threads".into(),
            "1".into(),
            "--io".into(),
            io.into(),
        ])
        .collect()
}

/// Prefixes a command line with `taskset -c CPU` where taskset exists.
pub fn pinned(cpu: &str, command_line: &[String]) -> Command {
    if taskset_available() {
        let mut command = Command::new("taskset");
        command.args(["-c", cpu]).args(command_line);
        command
    } else {
        unpinned(command_line)
    }
}

/// A command line as it is, on whichever CPUs the scheduler picks.
fn unpinned(command_line: &[String]) -> Command {
    let mut command = Command::new(&command_line[0]);
    command.args(&command_line[1..]);
    command
}

/// Whether `taskset` can pin processes here (asked once per run).
pub fn taskset_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("taskset")
            .args(["-c", "0", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A started server; stopped (killed by its PID) when dropped.
#[derive(Debug)]
pub struct RunningServer {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
    log: PathBuf,
}

impl RunningServer {
    /// Starts `kind` on a free port, pinned to [`SERVER_CPU`], with its
    /// stderr in `log_dir`, and waits until it listens.
    pub fn start(kind: ServerKind, binaries: &Binaries, log_dir: &Path) -> Result<Self, String> {
        Self::start_under(kind, binaries, log_dir, &[], START_TIMEOUT)
    }

    /// Like [`RunningServer::start`], with `wrapper` (e.g. `valgrind
    /// --tool=callgrind …`) before the server's command line, and
    /// `start_timeout` to start listening. The wrapper must exec the server
    /// or run it in its own process (as valgrind does), so that signals sent
    /// to the child's PID reach the server.
    pub fn start_under(
        kind: ServerKind,
        binaries: &Binaries,
        log_dir: &Path,
        wrapper: &[String],
        start_timeout: Duration,
    ) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let command_line: Vec<String> = wrapper
            .iter()
            .cloned()
            .chain(kind.command_line(binaries, port)?)
            .collect();
        let log = log_dir.join(format!("{}.log", kind.name()));
        Self::start_command(&command_line, Some(SERVER_CPU), port, log, start_timeout)
    }

    /// Starts `command_line`, which must listen on 127.0.0.1:`port`, pinned
    /// to `cpu` if one is given, with its stderr in `log`, and waits up to
    /// `start_timeout` until it listens.
    pub fn start_command(
        command_line: &[String],
        cpu: Option<&str>,
        port: u16,
        log: PathBuf,
        start_timeout: Duration,
    ) -> Result<Self, String> {
        let log_file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = match cpu {
            Some(cpu) => pinned(cpu, command_line),
            None => unpinned(command_line),
        };
        // taskset execs the server, so the child's PID is the server's.
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", command_line.join(" ")))?;
        let mut server = RunningServer { child, port, log };
        server.wait_until_listening(start_timeout)?;
        Ok(server)
    }

    /// Stops the server by its PID with SIGTERM, then SIGINT if SIGTERM has
    /// not stopped it within `patience`, and waits for it to exit; kills it
    /// (and says so) if neither signal stops it.
    pub fn terminate(&mut self, patience: Duration) -> Result<ExitStatus, String> {
        for signal in [Signal::TERM, Signal::INT] {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            let _ = kill_process(Pid::from_child(&self.child), signal);
            let sent = Instant::now();
            while sent.elapsed() < patience {
                match self.child.try_wait() {
                    Ok(Some(status)) => return Ok(status),
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                    Err(e) => return Err(format!("waiting for the server: {e}")),
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(format!(
            "neither SIGTERM nor SIGINT stopped it within {patience:?} each; killed: {}",
            self.log_tail()
        ))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the kernel lists a listening socket on the port. Asking the
    /// kernel instead of connecting leaves no probe connection behind to skew
    /// the memory and descriptor counts.
    fn wait_until_listening(&mut self, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "exited with {status} before listening: {}",
                    self.log_tail()
                ));
            }
            if is_listening(self.port) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "not listening on port {} after {timeout:?}: {}",
                    self.port,
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The first line the server wrote to stderr, if any.
    pub fn log_head(&self) -> Option<String> {
        let text = fs::read_to_string(&self.log).ok()?;
        text.lines().next().map(str::to_string)
    }

    /// The last lines the server wrote to stderr.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        if tail.is_empty() {
            "(no output)".to_string()
        } else {
            tail.join(" / ")
        }
    }

    /// User plus system CPU time the server has used so far.
    pub fn cpu_time(&self) -> io::Result<Duration> {
        cpu_time(self.pid())
    }

    /// The server's resident set size in bytes.
    pub fn rss_bytes(&self) -> io::Result<u64> {
        self.status_bytes("VmRSS")
    }

    /// The most the server has had resident since it started (its
    /// high-water mark), in bytes.
    pub fn peak_rss_bytes(&self) -> io::Result<u64> {
        self.status_bytes("VmHWM")
    }

    /// A size field of `/proc/PID/status` (given in kB there), in bytes.
    fn status_bytes(&self, field: &str) -> io::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::other(format!("no {field} in /proc/PID/status")))
    }

    /// How many file descriptors the server has open.
    pub fn open_fds(&self) -> io::Result<usize> {
        Ok(fs::read_dir(format!("/proc/{}/fd", self.pid()))?.count())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Only this process, started by the harness, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU time of process `pid` (all its threads), from
/// fields 14 and 15 of `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state), so utime (14) and stime (15) are 11 and 12.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
    };
    let total = ticks(11)? + ticks(12)?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(total as f64 / per_second as f64))
}

/// A loopback port nothing listens on right now: bound, read, released.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether `/proc/net/tcp` lists a socket listening on 127.0.0.1 or any
/// address at `port`.
fn is_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let loopback = format!("0100007F:{port:04X}");
    let any = format!("00000000:{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && (fields[1] == loopback || fields[1] == any) && fields[3] == LISTEN
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_listener_is_seen_listening() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(is_listening(port));
        drop(listener);
        assert!(!is_listening(port));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let spent = cpu_time(std::process::id()).unwrap();
        assert!(spent < Duration::from_secs(3600));
    }
}
