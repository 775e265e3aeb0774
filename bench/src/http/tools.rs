//! The programs `compare http` needs from the system, nginx and wrk: found
//! on `PATH` (or in the `sbin` directories, where Debian puts nginx), and
//! installed from the system's packages when they are missing and the
//! harness runs as root.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A program and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The program's name.
    pub program: &'static str,
    /// The package `apt-get install` is asked for.
    pub package: &'static str,
}

/// What `compare http` runs: the reference server and the load generator.
pub const TOOLS: [Tool; 2] = [
    Tool {
        program: "nginx",
        package: "nginx-light",
    },
    Tool {
        program: "wrk",
        package: "wrk",
    },
];

/// Directories searched after `PATH`: nginx lives in `/usr/sbin`, which a
/// non-root `PATH` often lacks.
const SBIN: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Each tool's path, or why it is missing.
#[derive(Debug)]
pub struct Found {
    /// `nginx`.
    pub nginx: Result<PathBuf, String>,
    /// `wrk`.
    pub wrk: Result<PathBuf, String>,
}

/// Finds nginx and wrk; installs the missing ones first (`apt-get update`,
/// then `apt-get install -y` their packages) if it may, and says why not if
/// it may not.
pub fn ensure() -> Found {
    let missing: Vec<Tool> = TOOLS
        .into_iter()
        .filter(|t| find(t.program).is_err())
        .collect();
    let install = if missing.is_empty() {
        Ok(())
    } else {
        install(&missing)
    };
    let found = |program: &str| {
        find(program).map_err(|why| match &install {
            Err(failed) => format!("{why}; {failed}"),
            Ok(()) => why,
        })
    };
    Found {
        nginx: found("nginx"),
        wrk: found("wrk"),
    }
}

/// The path of `program`: the first executable file of that name on `PATH`
/// or in [`SBIN`].
pub fn find(program: &str) -> Result<PathBuf, String> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| format!("{program} is not installed"))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `apt-get update` and `apt-get install -y PACKAGES`, as root only.
fn install(missing: &[Tool]) -> Result<(), String> {
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    let by_hand = format!(
        "install them with: apt-get install -y {}",
        packages.join(" ")
    );
    if !rustix::process::geteuid().is_root() {
        return Err(format!(
            "not installed by the harness (not root): {by_hand}"
        ));
    }
    eprintln!(
        "installing: apt-get update; apt-get install -y {}",
        packages.join(" ")
    );
    let apt = |args: &[&str]| -> Result<(), String> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("running apt-get: {e}; {by_hand}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("apt-get {} failed ({status}); {by_hand}", args[0]))
        }
    };
    apt(&["update"])?;
    apt(&[&["install", "-y"][..], &packages].concat())
}

/// nginx's version as its `-v` says it (`nginx/1.22.1`), or why it was not
/// found.
pub fn nginx_version(found: &Found) -> String {
    found.nginx.as_ref().map_or_else(Clone::clone, |path| {
        let version = version(path, "-v");
        version
            .strip_prefix("nginx version: ")
            .unwrap_or(&version)
            .to_string()
    })
}

/// wrk's version line without its copyright.
pub fn wrk_version(wrk: &std::path::Path) -> String {
    let version = version(wrk, "-v");
    version
        .split(" Copyright")
        .next()
        .unwrap_or(&version)
        .to_string()
}

/// The first line `program` prints when asked for its version with
/// `flag` (nginx prints it on stderr, wrk on stdout and exits non-zero).
pub fn version(program: &std::path::Path, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|output| {
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            stdout
                .lines()
                .chain(stderr.lines())
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_path_and_missing_ones_named() {
        let sh = find("sh").unwrap();
        assert!(sh.ends_with("sh") && sh.is_absolute(), "{}", sh.display());
        assert_eq!(
            find("evloop-bench-no-such-program").unwrap_err(),
            "evloop-bench-no-such-program is not installed"
        );
    }
}
