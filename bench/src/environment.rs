//! The machine and toolchain each result was measured with.

use std::fs;
use std::process::Command;

use serde::Serialize;

use crate::prepare::workspace_root;

/// What a reader needs to judge or reproduce a figure.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// When the run started (UTC, ISO 8601).
    pub date: String,
    /// The exact command that produced the results.
    pub command: String,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs online.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// `rustc -V`.
    pub rustc: String,
    /// The first line of `cc --version`.
    pub cc: String,
    /// The evloop commit measured, `-dirty` if the tree had changes.
    pub commit: String,
    /// How servers and load generator were pinned.
    pub pinning: String,
    /// The open-file limit servers and clients ran with.
    pub nofile_limit: u64,
    /// `/proc/loadavg` when the run started: other work on the machine
    /// shows here, and skews every figure.
    pub load_average: String,
}

impl Environment {
    /// Reads the environment of this run; `command` is how it was started.
    pub fn capture(command: String, pinning: String, nofile_limit: u64) -> Environment {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_string(),
                |(_, model)| model.trim().to_string(),
            );
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |k| k.trim().to_string());
        let commit = match first_line("git", &["rev-parse", "--short=12", "HEAD"]) {
            Some(hash) => {
                let dirty =
                    first_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_some();
                if dirty { format!("{hash}-dirty") } else { hash }
            }
            None => "unknown".to_string(),
        };
        Environment {
            date: first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
            command,
            cpu,
            cpus,
            kernel,
            rustc: first_line("rustc", &["-V"]).unwrap_or_else(|| "unknown".into()),
            cc: first_line("cc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            commit,
            pinning,
            nofile_limit,
            load_average: fs::read_to_string("/proc/loadavg")
                .map_or_else(|_| "unknown".to_string(), |l| l.trim().to_string()),
        }
    }
}

/// The first line a command prints in the workspace, if it ran and printed.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next()?.trim();
    (output.status.success() && !line.is_empty()).then(|| line.to_string())
}

#[cfg(test)]
impl Environment {
    /// An environment with nothing recorded, for tests of the tables.
    pub fn for_tests() -> Environment {
        Environment {
            date: String::new(),
            command: String::new(),
            cpu: String::new(),
            cpus: 2,
            kernel: String::new(),
            rustc: String::new(),
            cc: String::new(),
            commit: String::new(),
            pinning: String::new(),
            nofile_limit: 1024,
            load_average: String::new(),
        }
    }
}
