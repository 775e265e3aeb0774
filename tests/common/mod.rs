//! Helpers for tests that run the `evloop` binary: start it on a random
//! loopback port on the I/O driver a test names, read its log, signal it,
//! and always end it.
#![allow(dead_code, unused_macros)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use evloop::Address;

/// The longest any single wait in a test may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// The program, without an `EVLOOP_IO` the tests were run with: the
/// driver is always the one a test names.
pub fn evloop() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evloop"));
    command.env_remove("EVLOOP_IO");
    command
}

/// `evloop` under `prlimit --nofile=N:N`, for [`ServerProcess::start_with`].
pub fn evloop_with_nofile(nofile: u32) -> Command {
    let mut command = Command::new("prlimit");
    command
        .env_remove("EVLOOP_IO")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg(env!("CARGO_BIN_EXE_evloop"));
    command
}

// ---- I/O drivers ---------------------------------------------------------------

/// The I/O driver a test runs the server on, always named with `--io`
/// (never left to `auto`, which would test whichever this machine has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// The readiness queue: epoll (kqueue on BSD and macOS).
    Epoll,
    Uring,
}

impl Io {
    /// The value of `--io`.
    pub fn name(self) -> &'static str {
        match self {
            Io::Epoll => evloop::poll::BACKEND,
            Io::Uring => "uring",
        }
    }

    /// How the server's start-up line names the driver it runs on
    /// (`I/O driver: epoll`, `I/O driver: io_uring (...)`).
    pub fn banner(self) -> String {
        match self {
            Io::Epoll => format!("I/O driver: {}", evloop::poll::BACKEND),
            Io::Uring => "I/O driver: io_uring".to_owned(),
        }
    }

    /// Whether the driver works here. io_uring may not (disabled by
    /// sysctl, forbidden by seccomp, an old kernel, not Linux): then this
    /// prints `skipped: io_uring unavailable here` with the reason.
    pub fn available(self) -> bool {
        static URING: OnceLock<Result<(), String>> = OnceLock::new();
        if self == Io::Epoll {
            return true;
        }
        match URING.get_or_init(probe_uring) {
            Ok(()) => true,
            Err(why) => {
                // CI sets this: there, io_uring must be tested, never skipped.
                assert!(
                    std::env::var_os("EVLOOP_REQUIRE_URING").is_none(),
                    "io_uring unavailable: {why}"
                );
                eprintln!("skipped: io_uring unavailable here ({why})");
                false
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn probe_uring() -> Result<(), String> {
    evloop::ring::Ring::probe()
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(not(target_os = "linux"))]
fn probe_uring() -> Result<(), String> {
    Err("Linux only".to_owned())
}

/// Makes each `fn NAME(io: Io)` named two tests, `NAME::epoll` and
/// `NAME::uring`, which call it with [`Io::Epoll`] and [`Io::Uring`]; the
/// uring one skips (passes, saying so) where io_uring is unavailable. Put
/// `per_driver!(NAME);` just above the function and its doc comment; the
/// function stays an ordinary one (a module and a function may share a
/// name).
macro_rules! per_driver {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn epoll() {
                super::$name($crate::common::Io::Epoll);
            }

            #[test]
            fn uring() {
                if $crate::common::Io::Uring.available() {
                    super::$name($crate::common::Io::Uring);
                }
            }
        }
    )+};
}
#[allow(unused_imports)] // cli_docs starts no server
pub(crate) use per_driver;

/// What the test does with the server's standard error after its
/// "listening on" line.
pub enum Stderr {
    /// Reads every line as it comes.
    Read,
    /// Closes the pipe: the server's later writes to it fail with `EPIPE`.
    CloseAfterListening,
    /// Stops reading until the receiver gets a message (or its sender is
    /// dropped): the pipe fills, and then the server's writes to it block.
    PauseAfterListening(Receiver<()>),
}

/// A running `evloop serve`; killed on drop if still running.
pub struct ServerProcess {
    pub child: Child,
    /// The address in its "listening on" line.
    pub listening: Address,
    /// That address, if TCP (else `0.0.0.0:0`).
    pub addr: SocketAddr,
    /// Lines of standard error, as they come.
    lines: Receiver<String>,
    /// Every line read so far.
    pub log: Vec<String>,
}

/// `ARGS --io DRIVER`, with `--listen 127.0.0.1:0` unless ARGS has a `--listen`.
fn with_io<'a>(io: Io, args: &[&'a str]) -> Vec<&'a str> {
    let mut args = args.to_vec();
    assert!(!args.contains(&"--io"), "the driver is the io argument");
    args.extend(["--io", io.name()]);
    if !args.contains(&"--listen") {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    args
}

impl ServerProcess {
    /// Starts `evloop serve ARGS --io DRIVER --listen 127.0.0.1:0` (no
    /// `--listen` added if ARGS has one), waits for its "listening on"
    /// line, and checks that it runs on the driver asked for.
    #[track_caller]
    pub fn start(io: Io, args: &[&str]) -> ServerProcess {
        Self::start_with(io, evloop(), args)
    }

    /// Like [`start`](Self::start), with a prepared command (e.g. under `prlimit`).
    #[track_caller]
    pub fn start_with(io: Io, command: Command, args: &[&str]) -> ServerProcess {
        Self::start_with_stderr_of(io, command, args, Stderr::Read)
    }

    /// Like [`start`](Self::start), with the server's standard error read
    /// as `stderr` says.
    #[track_caller]
    pub fn start_with_stderr(io: Io, args: &[&str], stderr: Stderr) -> ServerProcess {
        Self::start_with_stderr_of(io, evloop(), args, stderr)
    }

    #[track_caller]
    fn start_with_stderr_of(
        io: Io,
        command: Command,
        args: &[&str],
        stderr: Stderr,
    ) -> ServerProcess {
        let mut server = Self::spawn(command, &with_io(io, args), stderr);
        // Logged before the "listening on" lines, so already read.
        let driver = server.wait_for_line("I/O driver: ");
        let banner = io.banner();
        assert!(
            driver.ends_with(&banner) || driver.contains(&format!("{banner} (")),
            "asked for --io {}, got: {driver}",
            io.name()
        );
        assert!(!driver.contains("unavailable"), "{driver}");
        server
    }

    /// Starts `COMMAND serve ARGS` exactly as given.
    #[track_caller]
    pub fn start_exact(command: Command, args: &[&str]) -> ServerProcess {
        Self::spawn(command, args, Stderr::Read)
    }

    #[track_caller]
    fn spawn(mut command: Command, args: &[&str], stderr: Stderr) -> ServerProcess {
        command.arg("serve").args(args);
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn evloop");
        let pipe = child.stderr.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut pipe = BufReader::new(pipe).lines().map_while(Result::ok);
            // Start-up lines (the I/O driver) come before "listening on".
            for line in pipe.by_ref() {
                let listening = line.contains("listening on");
                if sender.send(line).is_err() {
                    return;
                }
                if listening {
                    break;
                }
            }
            match stderr {
                Stderr::Read => {}
                // Dropping the reader closes the pipe.
                Stderr::CloseAfterListening => return,
                Stderr::PauseAfterListening(resume) => {
                    let _ = resume.recv();
                }
            }
            for line in pipe {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child,
            listening: Address::Unnamed,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            log: Vec::new(),
        };
        let line = server.wait_for_line("listening on");
        let addr = line.rsplit("listening on ").next().unwrap();
        let addr = addr.split_whitespace().next().unwrap();
        server.listening = addr.parse().expect("address in the listening line");
        if let Some(addr) = server.listening.inet() {
            server.addr = addr;
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `needle`; returns it.
    #[track_caller]
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "server exited before logging {needle:?}; log:\n{}",
                        self.log.join("\n")
                    )
                }
            }
        }
    }

    /// Every line logged so far (reads what is pending without waiting).
    pub fn drain_log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    /// Waits until the log so far satisfies `done`; `what` names the wait
    /// in the failure message.
    #[track_caller]
    pub fn wait_for_log(&mut self, what: &str, mut done: impl FnMut(&[String]) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !done(&self.log) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "timed out waiting for {what}; log:\n{}",
                        self.log.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("server exited before {what}; log:\n{}", self.log.join("\n"))
                }
            }
        }
    }

    /// How many lines logged so far contain `needle`.
    pub fn count_log(&mut self, needle: &str) -> usize {
        self.drain_log()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Every line logged so far, as one text (for failure messages).
    pub fn log_text(&mut self) -> String {
        self.drain_log().join("\n")
    }

    /// Sends `signal` (e.g. "TERM", "INT") to the server.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the server to exit; returns its status and the whole log.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The log thread ends with the pipe: collect the rest.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.log.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit; log:\n{}",
                self.log.join("\n")
            );
            self.drain_log();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `evloop ARGS` to completion (bounded), returning status and stderr.
#[track_caller]
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String, Duration) {
    run_command_to_exit(evloop(), args)
}

/// Like [`run_to_exit`], with a prepared command (e.g. with an environment).
#[track_caller]
pub fn run_command_to_exit(mut command: Command, args: &[&str]) -> (ExitStatus, String, Duration) {
    let start = Instant::now();
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evloop");
    let deadline = start + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("evloop {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status, stderr, start.elapsed())
}

// ---- the server's sockets, from /proc ------------------------------------------

/// A TCP socket of a process, as /proc/net/tcp and tcp6 show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    /// The local address, in the kernel's hex (`0100007F:0717`).
    pub local: String,
    /// The state, e.g. [`TcpSocket::LISTEN`].
    pub state: u8,
    /// For a listener: the connections waiting in its backlog to be
    /// accepted; otherwise the bytes received and not yet read.
    pub queued: u64,
}

impl TcpSocket {
    pub const LISTEN: u8 = 0x0A;
}

/// The TCP sockets process `pid` holds (connections waiting in a backlog
/// are no process's yet: they show as their listener's `queued`).
pub fn tcp_sockets(pid: u32) -> Vec<TcpSocket> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new(); // it has exited
    };
    let inodes: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // local_address is field 1, st 3, tx_queue:rx_queue 4, inode 9.
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.iter().any(|i| i == fields[9]) {
                let queued = fields[4].split(':').nth(1).unwrap_or("0");
                found.push(TcpSocket {
                    local: fields[1].to_owned(),
                    state: u8::from_str_radix(fields[3], 16).unwrap_or(0),
                    queued: u64::from_str_radix(queued, 16).unwrap_or(0),
                });
            }
        }
    }
    found
}

// ---- real clients ------------------------------------------------------------

/// Whether the command `tool` is installed (on the `PATH`).
pub fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Fails the test, with what to do, if `tool` is not installed.
#[track_caller]
pub fn require(tool: &str) {
    assert!(
        installed(tool),
        "{tool} is not installed: these tests run it as a real client; \
         install it (its Debian package is in .ci/run's list, which installs them)"
    );
}

/// Runs `command`, feeding it `input` on standard input from another
/// thread; returns its standard output. Killed if it outlives [`LIMIT`].
#[track_caller]
pub fn pipe_through(command: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let output = std::thread::scope(|s| {
        s.spawn(move || stdin.write_all(input).expect("write the client's input"));
        let reading = s.spawn(move || {
            let mut output = Vec::new();
            stdout.read_to_end(&mut output).map(|_| output)
        });
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > LIMIT {
                let _ = child.kill();
                panic!("{command:?} did not finish within {LIMIT:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        reading.join().unwrap().expect("read the client's output")
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "{command:?}: {status}");
    output
}

// ---- small shared helpers --------------------------------------------------------

/// The value after `"field":` in a one-line JSON report (`--json` of
/// `evloop bench`), as text: the first such field.
#[track_caller]
pub fn json_field<'a>(json: &'a str, field: &str) -> &'a str {
    let key = format!("\"{field}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {field} in {json}"))
        + key.len();
    let rest = &json[start..];
    &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
}

/// The number after `"field":` in a one-line JSON report.
#[track_caller]
pub fn json_number(json: &str, field: &str) -> f64 {
    json_field(json, field)
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number in {json}"))
}

/// A TCP connection whose reads and writes give up after [`LIMIT`].
#[track_caller]
pub fn connect(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    stream
}

/// A directory of the test's own (`evloop-NAME-PID` in the temporary
/// directory), emptied first and removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("evloop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process the test did not spawn (a successor started by a restart),
/// known by its pid; killed on drop unless it is gone already.
pub struct OtherProcess(pub u32);

impl OtherProcess {
    fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.0 as i32).unwrap()
    }

    /// Whether it runs (not gone, not a zombie).
    pub fn alive(&self) -> bool {
        rustix::process::test_kill_process(self.pid()).is_ok()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.0))
                .is_ok_and(|stat| stat.contains(") Z "))
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let _ = rustix::process::kill_process(self.pid(), signal);
    }

    /// Waits until it has exited.
    #[track_caller]
    pub fn wait_exit(&self) {
        let deadline = Instant::now() + LIMIT;
        while self.alive() {
            assert!(Instant::now() < deadline, "pid {} did not exit", self.0);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it with SIGTERM and waits until it is gone.
    #[track_caller]
    pub fn stop(self) {
        self.signal(rustix::process::Signal::TERM);
        self.wait_exit();
    }
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        if self.alive() {
            self.signal(rustix::process::Signal::KILL);
        }
    }
}
