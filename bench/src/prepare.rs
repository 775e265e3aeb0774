//! Building what the comparison runs: the `evloop` binary (by cargo) and the
//! C servers (by `cc -O2`, at run time, from `bench/c/`; the io_uring one
//! links liburing, and is skipped, with one line saying why, without it).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs the comparison starts; each is a path or the reason it is
/// missing.
#[derive(Debug)]
pub struct Binaries {
    /// `target/release/evloop`: the server under test and the load generator.
    pub evloop: Result<PathBuf, String>,
    /// The batched C epoll echo server.
    pub c_epoll: Result<PathBuf, String>,
    /// The C server with one event per `epoll_wait`.
    pub c_one_event: Result<PathBuf, String>,
    /// The C io_uring echo server (needs liburing).
    pub c_uring: Result<PathBuf, String>,
    /// This program, which serves the mio and tokio peers.
    pub harness: Result<PathBuf, String>,
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `target/`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Where the harness keeps what it builds and its servers' logs.
pub fn work_dir() -> PathBuf {
    target_dir().join("evloop-bench")
}

/// Builds (or finds) every program; a failure is kept as the reason and
/// reported by each run that needs the program.
pub fn build_all(build_evloop: bool) -> Binaries {
    let work = work_dir();
    if let Err(e) = fs::create_dir_all(&work) {
        eprintln!("warning: {}: {e}", work.display());
    }
    let source = workspace_root().join("bench/c/epoll_echo.c");
    let c_uring = compile_uring_echo(&work);
    if let Err(why) = &c_uring {
        eprintln!("c-uring: skipped: {why}");
    }
    Binaries {
        evloop: if build_evloop {
            build_evloop_cli()
        } else {
            find_evloop()
        },
        c_epoll: compile_c(&source, &work.join("epoll_echo"), &[], &[]),
        c_one_event: compile_c(
            &source,
            &work.join("epoll_echo_one_event"),
            &["-DONE_EVENT_PER_WAIT"],
            &[],
        ),
        c_uring,
        harness: env::current_exe().map_err(|e| format!("locating this program: {e}")),
    }
}

/// `cargo build --release -p evloop-cli`, then the binary's path.
pub fn build_evloop_cli() -> Result<PathBuf, String> {
    eprintln!("building: cargo build --release -p evloop-cli");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "evloop-cli"])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build --release -p evloop-cli failed ({status})"
        ));
    }
    find_evloop()
}

fn find_evloop() -> Result<PathBuf, String> {
    let path = target_dir().join("release/evloop");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} does not exist", path.display()))
    }
}

/// Why a build needing liburing failed where the library is not installed.
pub const LIBURING_MISSING: &str = "liburing is missing: install liburing-dev";

/// `cc -O2 -o DIR/uring_echo bench/c/uring_echo.c -luring`; a missing
/// liburing is told apart from other failures ([`LIBURING_MISSING`]).
pub fn compile_uring_echo(dir: &Path) -> Result<PathBuf, String> {
    let source = workspace_root().join("bench/c/uring_echo.c");
    compile_c(&source, &dir.join("uring_echo"), &[], &["-luring"]).map_err(|why| {
        if why.contains("liburing.h") || why.contains("-luring") {
            LIBURING_MISSING.to_string()
        } else {
            why
        }
    })
}

/// `cc -O2 [defines] -o output source [libraries]`.
fn compile_c(
    source: &Path,
    output: &Path,
    defines: &[&str],
    libraries: &[&str],
) -> Result<PathBuf, String> {
    let result = Command::new("cc")
        .arg("-O2")
        .args(defines)
        .arg("-o")
        .arg(output)
        .arg(source)
        .args(libraries)
        .output()
        .map_err(|e| format!("running cc: {e}"))?;
    if result.status.success() {
        Ok(output.to_path_buf())
    } else {
        Err(format!(
            "cc -O2 {} failed: {}",
            source.display(),
            String::from_utf8_lossy(&result.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::thread;
    use std::time::Duration;

    use crate::servers::{RunningServer, START_TIMEOUT, free_port};

    const CONNECTIONS: usize = 20;
    const BYTES: usize = 1 << 20;

    /// xorshift64: random enough for chunk sizes and contents, seeded.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// One connection: a thread writes 1 MiB in random chunks (1 B to
    /// 64 KiB), then half-closes; this one reads everything back, then the
    /// server's close.
    fn echo_one(port: u16, seed: u64) {
        let mut state = seed;
        let sent: Vec<u8> = (0..BYTES).map(|_| next(&mut state) as u8).collect();
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let to_send = sent.clone();
        let writing = thread::spawn(move || {
            let mut off = 0;
            while off < to_send.len() {
                let chunk = (next(&mut state) % 65_536 + 1) as usize;
                let end = (off + chunk).min(to_send.len());
                writer.write_all(&to_send[off..end]).expect("write");
                off = end;
            }
            writer.shutdown(Shutdown::Write).expect("half-close");
        });
        let mut received = Vec::with_capacity(BYTES);
        (&stream)
            .read_to_end(&mut received)
            .expect("reading the echo until the server closes");
        writing.join().unwrap();
        assert_eq!(received.len(), BYTES, "connection {seed}: echoed length");
        assert!(received == sent, "connection {seed}: the echo differs");
    }

    #[test]
    fn uring_echo_echoes_a_mebibyte_on_twenty_connections() {
        let dir = env::temp_dir().join(format!("evloop-bench-uring-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let binary = compile_uring_echo(&dir).unwrap_or_else(|why| panic!("{why}"));
        let port = free_port().unwrap();
        let command_line = [binary.display().to_string(), port.to_string()];
        let server = RunningServer::start_command(
            &command_line,
            None,
            port,
            dir.join("uring_echo.log"),
            START_TIMEOUT,
        )
        .unwrap_or_else(|why| {
            if why.contains("io_uring is unavailable") {
                panic!("io_uring is unavailable on this machine: {why}");
            }
            panic!("uring_echo did not start: {why}");
        });
        let setup = server.log_head().unwrap_or_default();
        assert!(setup.starts_with("io_uring setup: "), "{setup}");
        let clients: Vec<_> = (1..=CONNECTIONS as u64)
            .map(|seed| thread::spawn(move || echo_one(port, seed)))
            .collect();
        for client in clients {
            client.join().expect("an echo client failed");
        }
        drop(server);
        let _ = fs::remove_dir_all(&dir);
    }
}
