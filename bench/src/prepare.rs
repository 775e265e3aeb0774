//! Building what the comparison runs: the `evloop` binary (by cargo) and the
//! C servers (by `cc -O2`, at run time, from `bench/c/`).

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
    Binaries {
        evloop: if build_evloop {
            build_evloop_cli()
        } else {
            find_evloop()
        },
        c_epoll: compile_c(&source, &work.join("epoll_echo"), &[]),
        c_one_event: compile_c(
            &source,
            &work.join("epoll_echo_one_event"),
            &["-DONE_EVENT_PER_WAIT"],
        ),
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

/// `cc -O2 [defines] -o output source`.
fn compile_c(source: &Path, output: &Path, defines: &[&str]) -> Result<PathBuf, String> {
    let result = Command::new("cc")
        .arg("-O2")
        .args(defines)
        .arg("-o")
        .arg(output)
        .arg(source)
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
