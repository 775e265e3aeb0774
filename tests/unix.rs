//! `evloop serve` on a Unix socket, met by real clients (`socat`, `nc -U`)
//! and by `evloop bench echo --target unix:PATH`; the socket file's mode and
//! its removal at exit. socat and nc (netcat-openbsd) must be installed:
//! these tests fail, not skip, without them.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::{Io, ServerProcess, per_driver, pipe_through, require, run_to_exit};

/// A socket path unique to this process, test and driver, removed (if still there)
/// when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(test: &str, io: Io) -> SocketPath {
        let name = format!(
            "evloop-cli-{}-{test}-{}.sock",
            std::process::id(),
            io.name()
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        SocketPath(path)
    }

    /// `unix:PATH`, as `--listen` and `--target` take it.
    fn arg(&self) -> String {
        format!("unix:{}", self.0.display())
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bytes that show any loss, duplication or reordering.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

per_driver!(serve_echo_on_a_unix_socket_for_socat_and_nc);
/// The whole life of a Unix socket server with real clients: the listening
/// line, the mode, 1 MiB through socat and 256 KiB through nc byte for
/// byte, then SIGTERM: clean exit, file gone.
fn serve_echo_on_a_unix_socket_for_socat_and_nc(io: Io) {
    require("socat");
    require("nc");
    let path = SocketPath::new("echo", io);
    let mut server = ServerProcess::start(
        io,
        &[
            "echo",
            "--listen",
            &path.arg(),
            "--unix-mode",
            "0660",
            "--threads",
            "2",
        ],
    );
    assert_eq!(server.listening.to_string(), path.arg());
    let mode = std::fs::metadata(&path.0).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o660, "mode {mode:o}");

    let data = payload(1024 * 1024);
    // -t: after our EOF, wait for the rest of the echo (the server closes
    // when it is done, which ends socat at once).
    let echoed = pipe_through(
        Command::new("socat").args([
            "-t",
            "20",
            "-",
            &format!("UNIX-CONNECT:{}", path.0.display()),
        ]),
        &data,
    );
    assert!(
        echoed == data,
        "socat: {} of {} bytes, or different",
        echoed.len(),
        data.len()
    );

    let data = payload(256 * 1024);
    // -N: half-close after the input, so the server finishes its echo and closes.
    let echoed = pipe_through(Command::new("nc").arg("-N").arg("-U").arg(&path.0), &data);
    assert!(
        echoed == data,
        "nc: {} of {} bytes, or different",
        echoed.len(),
        data.len()
    );

    server.signal("TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status}; log:\n{}", server.log_text());
    assert!(!path.0.exists(), "the socket file outlived the server");
}

per_driver!(bench_echo_over_a_unix_socket_passes);
/// `evloop bench echo --target unix:PATH` against `evloop serve echo`.
fn bench_echo_over_a_unix_socket_passes(io: Io) {
    let path = SocketPath::new("bench", io);
    let mut server = ServerProcess::start(io, &["echo", "--listen", &path.arg(), "--threads", "2"]);
    let output = Command::new(env!("CARGO_BIN_EXE_evloop"))
        .args(["bench", "echo", "--target", &path.arg()])
        .args([
            "--duration",
            "300ms",
            "--connections",
            "8",
            "--pipeline",
            "4",
            "--json",
        ])
        .output()
        .expect("run evloop bench echo");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("\"mismatches\":0,"), "{report}");
    assert!(report.contains("\"connected\":8,"), "{report}");
    assert!(
        report.contains(&format!("\"target\":\"{}\"", path.arg())),
        "{report}"
    );
    server.signal("TERM");
    assert!(server.wait_exit().success());
}

per_driver!(a_live_socket_and_bad_modes_are_refused);
/// A second server on a live socket is refused in one line; bad modes are
/// command-line mistakes (exit 2).
fn a_live_socket_and_bad_modes_are_refused(io: Io) {
    let path = SocketPath::new("refused", io);
    let mut server = ServerProcess::start(io, &["echo", "--listen", &path.arg()]);
    let (status, stderr, _) =
        run_to_exit(&["serve", "echo", "--listen", &path.arg(), "--io", io.name()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("evloop: {}: address in use", path.arg())
    );
    // The refused server left the live one's file alone.
    assert!(path.0.exists());
    server.signal("TERM");
    assert!(server.wait_exit().success());

    for (mode, problem) in [
        ("0999", "not an octal mode (e.g. 0660)"),
        ("rw-rw----", "not an octal mode (e.g. 0660)"),
        ("1777", "at most 0777 (permission bits only)"),
    ] {
        let (status, stderr, _) = run_to_exit(&["serve", "--unix-mode", mode]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert_eq!(
            stderr.lines().next(),
            Some(format!("evloop: --unix-mode '{mode}': {problem}").as_str())
        );
    }
}
