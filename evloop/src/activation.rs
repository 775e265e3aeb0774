//! Listening sockets handed from one process to the next, by systemd's
//! socket-activation protocol (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`; see `sd_listen_fds(3)`): systemd hands them to a
//! service it starts, and an evloop that restarts hands them to its
//! successor the same way, so one code path takes them in.
//!
//! The protocol puts the descriptors at 3, 4, … and names the process they
//! are for: `LISTEN_PID` must be the receiver's own pid, or a grandchild that
//! inherited the variables would take descriptors that are not its own.
//! That pid is known only after `fork`, so [`spawn_successor`] writes it
//! into the child's environment between `fork` and `exec`, as systemd does.
//!
//! A successor also gets the write end of a pipe (its number in
//! `EVLOOP_READY_FD`), on which [`notify_predecessor`] says it serves, so
//! that the predecessor stops accepting only then
//! ([`Successor::wait_ready`]).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The first descriptor the protocol passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The variables a successor gets afresh or not at all: the protocol's,
/// and `WATCHDOG_PID`, which names the process systemd's watchdog watches
/// (the predecessor, until the successor's `MAINPID=`): without it, the
/// successor takes `WATCHDOG_USEC` as its own, as `sd_watchdog_enabled(3)`
/// says, and pings in its turn.
const PROTOCOL_VARIABLES: [&str; 5] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    READY_FD,
    "WATCHDOG_PID",
];

/// Set once the inherited descriptors have been taken: each becomes an
/// [`OwnedFd`] exactly once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The variable naming a successor's end of the readiness pipe.
const READY_FD: &str = "EVLOOP_READY_FD";

/// What a successor tells its predecessor once it serves.
const READY_MESSAGE: &[u8] = b"READY=1\n";

/// A successor's end of the readiness pipe, taken with the listeners.
static READY_PIPE: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// A listening socket this process was given, with the name the giver
/// chose (systemd's `FileDescriptorName=`, by default the socket unit's
/// name; `"unknown"` if none was given).
#[derive(Debug)]
pub struct Inherited {
    /// The socket: pass it to [`ServerBuilder::listen_fd`](crate::ServerBuilder::listen_fd).
    pub fd: OwnedFd,
    /// Its name.
    pub name: String,
}

/// Takes the sockets systemd (or a predecessor evloop) passed to this
/// process, set close-on-exec. Empty if none were passed or they are for
/// another process (`LISTEN_PID`); malformed variables are an error. Only
/// the first call takes them: later calls return an empty list, so no
/// descriptor is owned twice.
///
/// Call it early, before anything in the process could have closed
/// descriptors 3 and up that it did not open.
pub fn inherited_listeners() -> io::Result<Vec<Inherited>> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Ok(Vec::new());
    }
    let given = sd_notify::listen_fds_with_names()?;
    let count = given.len() as RawFd;
    if count > 0
        && let Some(ready) = std::env::var(READY_FD)
            .ok()
            .and_then(|n| n.parse::<RawFd>().ok())
        && ready == FIRST_FD + count
    {
        // SAFETY: a predecessor passed its pipe right after the listeners
        // (`spawn_successor`), for the process LISTEN_PID names, which
        // `listen_fds_with_names` checked is this one. fcntl on a number
        // takes no memory, and tells whether it is open; `TAKEN` makes this
        // the only claim.
        if unsafe { libc::fcntl(ready, libc::F_SETFD, libc::FD_CLOEXEC) } == 0 {
            // SAFETY: as above; the descriptor is open (fcntl succeeded).
            let pipe = unsafe { OwnedFd::from_raw_fd(ready) };
            *READY_PIPE.lock().unwrap_or_else(|e| e.into_inner()) = Some(pipe);
        }
    }
    Ok(given
        .map(|(fd, name)| Inherited {
            // SAFETY: `listen_fds_with_names` returns descriptors only when
            // LISTEN_PID names this process, to which the protocol hands
            // them; it has just set each close-on-exec with `fcntl`, which
            // would have failed on a closed one. `TAKEN` makes this the only
            // place they are claimed, once.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            name,
        })
        .collect())
}

/// In a successor ([`spawn_successor`]): tells the predecessor that this
/// process serves, so that it stops accepting and drains. Returns whether
/// there was a predecessor to tell; only the first call tells it.
pub fn notify_predecessor() -> io::Result<bool> {
    let pipe = READY_PIPE.lock().unwrap_or_else(|e| e.into_inner()).take();
    match pipe {
        Some(pipe) => {
            rustix::io::write(&pipe, READY_MESSAGE)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A process started to take over this one's listening sockets.
#[derive(Debug)]
pub struct Successor {
    child: Child,
    /// The read end of the readiness pipe.
    ready: OwnedFd,
}

/// How a successor's start ended, as [`Successor::wait_ready`] saw it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Start {
    /// It serves: the predecessor may hand over.
    Ready,
    /// It exited (or closed its pipe and was then reaped) without serving.
    Failed(std::process::ExitStatus),
    /// It did not serve in time; it has been killed and reaped.
    TimedOut,
}

impl Successor {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the successor to serve
    /// ([`notify_predecessor`]). One that fails or times out is reaped (a
    /// slow one killed first), so nothing is left behind.
    pub fn wait_ready(mut self, limit: Duration) -> io::Result<Start> {
        let deadline = Instant::now() + limit;
        let mut message = [0u8; 16];
        let mut got = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = self.child.kill();
                self.child.wait()?;
                return Ok(Start::TimedOut);
            }
            let timeout = rustix::event::Timespec::try_from(left).ok();
            let mut fds = [rustix::event::PollFd::new(
                &self.ready,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            match rustix::io::read(&self.ready, &mut message[got..]) {
                Ok(0) => return Ok(Start::Failed(self.child.wait()?)),
                Ok(n) => {
                    got += n;
                    if message[..got].starts_with(READY_MESSAGE) {
                        return Ok(Start::Ready);
                    }
                    if got == message.len() || !READY_MESSAGE.starts_with(&message[..got]) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the successor wrote something other than its readiness",
                        ));
                    }
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Starts `program` with `args`, this process's environment and its
/// standard streams, and passes it `listeners` by the protocol: they become
/// its descriptors 3, 4, … (in this order), named by `names` in
/// `LISTEN_FDNAMES` (one each, without `:`), with `LISTEN_PID` the child's
/// pid; and the readiness pipe after them. Nothing else of this process's
/// descriptors reaches the child: the standard library and evloop open
/// everything close-on-exec.
///
/// `program` is run as given, not looked up in `PATH`: pass the path this
/// process was started from to run a binary that replaced it there.
pub fn spawn_successor(
    program: &Path,
    args: &[OsString],
    listeners: &[BorrowedFd<'_>],
    names: &[&str],
) -> io::Result<Successor> {
    if names.len() != listeners.len() || names.iter().any(|n| n.contains(':')) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "one name (without ':') per listener",
        ));
    }
    // Non-blocking does no harm: a write of a few bytes to an empty pipe
    // never waits, and the read end is polled.
    let (ready, ready_write) = crate::net::nonblocking_pipe()?;
    let ready_at = (FIRST_FD + listeners.len() as RawFd).to_string();
    let env = [(READY_FD, OsStr::new(&ready_at))];
    let mut fds = listeners.to_vec();
    fds.push(ready_write.as_fd());
    let child = spawn_with_fds(program, args, &fds, listeners.len(), names, &env)?;
    // Only the child holds the write end now: its exit reads as the end.
    drop(ready_write);
    Ok(Successor { child, ready })
}

/// Starts `program` with `fds` at 3, 4, …, the first `listeners` of them
/// announced by `LISTEN_FDS`, and `env` set.
fn spawn_with_fds(
    program: &Path,
    args: &[OsString],
    fds: &[BorrowedFd<'_>],
    listeners: usize,
    names: &[&str],
    env: &[(&str, &OsStr)],
) -> io::Result<Child> {
    let mut image = Image::new(program, args, listeners, names, env)?;
    let sources: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut moved = vec![0; sources.len()];
    let mut command = Command::new(program);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes only `fcntl`, `dup2`,
    // `getpid` and `execve` system calls and writes into memory allocated
    // before the fork; it allocates nothing. The descriptors in `sources`
    // are borrowed for this call, so they are open at the fork.
    unsafe { command.pre_exec(move || Err(image.exec(&sources, &mut moved))) };
    command.spawn()
}

/// Everything `execve` needs, prepared before the fork, with room for the
/// child's pid in `LISTEN_PID=`.
struct Image {
    program: CString,
    /// The strings the pointer arrays point into; never touched after the
    /// arrays are built, so the pointers stay valid.
    _strings: Vec<CString>,
    /// `LISTEN_PID=` and room for the digits and the NUL.
    listen_pid: Box<[u8; LISTEN_PID_LEN]>,
    /// `argv` and `envp`, each ending in a null pointer, as addresses (a
    /// raw pointer would make the closure neither `Send` nor `Sync`).
    argv: Vec<usize>,
    envp: Vec<usize>,
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// The prefix, 20 digits (any `u64`), and the NUL.
const LISTEN_PID_LEN: usize = LISTEN_PID_PREFIX.len() + 21;

impl Image {
    fn new(
        program: &Path,
        args: &[OsString],
        listeners: usize,
        names: &[&str],
        env: &[(&str, &OsStr)],
    ) -> io::Result<Image> {
        let c_string = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument")
            })
        };
        let program_c = c_string(program.as_os_str().as_bytes())?;
        let mut arg_strings = vec![program_c.clone()];
        for arg in args {
            arg_strings.push(c_string(arg.as_bytes())?);
        }
        let replaced = |name: &OsStr| {
            PROTOCOL_VARIABLES.iter().any(|v| name == OsStr::new(v))
                || env.iter().any(|(v, _)| name == OsStr::new(v))
        };
        let mut env_strings = Vec::new();
        for (name, value) in std::env::vars_os() {
            if !replaced(&name) {
                env_strings.push(c_string(
                    &[name.as_bytes(), b"=", value.as_bytes()].concat(),
                )?);
            }
        }
        env_strings.push(c_string(format!("LISTEN_FDS={listeners}").as_bytes())?);
        env_strings.push(c_string(
            format!("LISTEN_FDNAMES={}", names.join(":")).as_bytes(),
        )?);
        for (name, value) in env {
            env_strings.push(c_string(
                &[name.as_bytes(), b"=", value.as_bytes()].concat(),
            )?);
        }
        let mut listen_pid = Box::new([0u8; LISTEN_PID_LEN]);
        listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        let address = |s: &CString| s.as_ptr().expose_provenance();
        let argv = arg_strings.iter().map(address).chain([0]).collect();
        let envp = env_strings
            .iter()
            .map(address)
            .chain([listen_pid.as_ptr().expose_provenance(), 0])
            .collect();
        let mut strings = arg_strings;
        strings.append(&mut env_strings);
        Ok(Image {
            program: program_c,
            _strings: strings,
            listen_pid,
            argv,
            envp,
        })
    }

    /// In the child: moves `sources` to 3, 4, … (through `moved`, as long),
    /// writes the pid into `LISTEN_PID=`, and executes the program; returns
    /// only if that failed.
    fn exec(&mut self, sources: &[RawFd], moved: &mut [RawFd]) -> io::Error {
        let first_free = FIRST_FD + sources.len() as RawFd;
        // First out of the way of the targets (a source may sit at a target
        // another source is bound for), close-on-exec so these copies go.
        for (slot, &fd) in moved.iter_mut().zip(sources) {
            // SAFETY: fcntl on a descriptor open in this process; no memory
            // is passed.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, first_free) };
            if copy < 0 {
                return io::Error::last_os_error();
            }
            *slot = copy;
        }
        for (target, &copy) in (FIRST_FD..).zip(moved.iter()) {
            // SAFETY: dup2 between descriptors; the new one is not
            // close-on-exec, so it survives the exec.
            if unsafe { libc::dup2(copy, target) } < 0 {
                return io::Error::last_os_error();
            }
        }
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        write_digits(
            &mut self.listen_pid[LISTEN_PID_PREFIX.len()..],
            u64::from(pid.unsigned_abs()),
        );
        let argv: *const *const libc::c_char = self.argv.as_ptr().cast();
        let envp: *const *const libc::c_char = self.envp.as_ptr().cast();
        // SAFETY: `program` and every string the arrays' addresses name are
        // NUL-terminated and owned by `self`, alive here (`listen_pid`'s box
        // did not move when its digits were written); the arrays end in 0, a
        // null pointer. Only the kernel reads through the addresses.
        unsafe { libc::execve(self.program.as_ptr(), argv, envp) };
        io::Error::last_os_error()
    }
}

/// Writes `n` in decimal followed by a NUL into `out` (at least 21 bytes),
/// without allocating.
fn write_digits(out: &mut [u8], mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, digit) in digits[..len].iter().rev().enumerate() {
        out[i] = *digit;
    }
    out[len] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_written_with_a_nul() {
        let mut out = [0xffu8; 21];
        write_digits(&mut out, 0);
        assert_eq!(&out[..2], b"0\0");
        write_digits(&mut out, 4_194_304);
        assert_eq!(&out[..8], b"4194304\0");
        write_digits(&mut out, u64::MAX);
        assert_eq!(&out[..21], b"18446744073709551615\0");
    }
}
