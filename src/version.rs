//! What `evloop --version` says: the package version, the commit the
//! program was built from (when built from a git checkout; see `build.rs`)
//! and the I/O drivers compiled in, e.g.
//! `evloop 0.1.0 (commit 1a2b3c4d5e6f, drivers: io_uring, epoll)`.

use std::sync::LazyLock;

/// The I/O drivers this build can run on, in order of preference.
#[cfg(target_os = "linux")]
const DRIVERS: &[&str] = &["io_uring", evloop::poll::BACKEND];
#[cfg(not(target_os = "linux"))]
const DRIVERS: &[&str] = &[evloop::poll::BACKEND];

/// The commit the program was built from (12 hex digits, `-dirty` if
/// tracked files differed from it), when built from a git checkout.
pub const COMMIT: Option<&str> = option_env!("EVLOOP_COMMIT");

/// The version line, after the program's name.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    let commit = COMMIT.map(|commit| format!("commit {commit}, "));
    format!(
        "{} ({}drivers: {})",
        env!("CARGO_PKG_VERSION"),
        commit.unwrap_or_default(),
        DRIVERS.join(", ")
    )
});
