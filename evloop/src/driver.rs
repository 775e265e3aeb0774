//! Which kernel interface a server's loops move bytes with, and how `Auto`
//! picks one.

use std::fmt;
use std::io;
use std::str::FromStr;

use crate::poll;

/// How the loops move bytes, chosen when the server is built.
///
/// * [`Readiness`](Driver::Readiness): the readiness queue ([`poll`]) —
///   epoll on Linux, kqueue on the BSDs and macOS. The loop waits until a
///   socket is ready and calls `recv`/`send` itself.
/// * [`Uring`](Driver::Uring): io_uring (Linux 6.0 or later). The kernel
///   accepts, receives and sends on the loop's behalf and reports
///   completions; one system call per turn of the loop serves many
///   requests.
/// * [`Auto`](Driver::Auto), the default: io_uring where the kernel has
///   everything the completion driver needs, the readiness queue otherwise
///   (io_uring disabled by `kernel.io_uring_disabled`, forbidden by a
///   seccomp profile, too old a kernel, not enough locked memory).
///
/// The server logs the driver it chose, and on a fallback why;
/// [`Server::driver`](crate::Server::driver) says it too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Driver {
    /// io_uring if it works here, else the readiness queue.
    #[default]
    Auto,
    /// epoll or kqueue.
    Readiness,
    /// io_uring; building the server fails where it cannot work.
    Uring,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Auto => "auto",
            Driver::Readiness => poll::BACKEND,
            Driver::Uring => "uring",
        })
    }
}

/// A driver name that is not one of `auto`, `epoll`/`kqueue` (the one this
/// system has) or `uring`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDriverError(String);

impl fmt::Display for ParseDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown I/O driver {:?}: expected auto, {} or uring",
            self.0,
            poll::BACKEND
        )
    }
}

impl std::error::Error for ParseDriverError {}

impl FromStr for Driver {
    type Err = ParseDriverError;

    fn from_str(s: &str) -> Result<Driver, ParseDriverError> {
        match s {
            "auto" => Ok(Driver::Auto),
            "uring" | "io_uring" => Ok(Driver::Uring),
            backend if backend == poll::BACKEND => Ok(Driver::Readiness),
            other => Err(ParseDriverError(other.to_owned())),
        }
    }
}

/// The driver a server runs on, once chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chosen {
    Readiness,
    #[cfg(target_os = "linux")]
    Uring(crate::ring::Setup),
}

impl fmt::Display for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chosen::Readiness => f.write_str(poll::BACKEND),
            #[cfg(target_os = "linux")]
            Chosen::Uring(setup) => write!(f, "io_uring ({setup})"),
        }
    }
}

/// Chooses the driver for `wanted`: the chosen one and, when `Auto` fell
/// back to the readiness queue, why. `Uring` where it cannot work is an
/// error that says why.
pub(crate) fn choose(wanted: Driver) -> io::Result<(Chosen, Option<String>)> {
    match wanted {
        Driver::Readiness => Ok((Chosen::Readiness, None)),
        #[cfg(target_os = "linux")]
        Driver::Auto | Driver::Uring => match crate::ring::Ring::probe() {
            Ok(setup) => Ok((Chosen::Uring(setup), None)),
            Err(e) if wanted == Driver::Auto => Ok((Chosen::Readiness, Some(why_not_uring(&e)))),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("io_uring: {}", why_not_uring(&e)),
            )),
        },
        #[cfg(not(target_os = "linux"))]
        Driver::Auto => Ok((Chosen::Readiness, None)),
        #[cfg(not(target_os = "linux"))]
        Driver::Uring => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring: there is none on this system (Linux only)",
        )),
    }
}

/// Says in words why io_uring cannot be used, from the error the probe met.
#[cfg(target_os = "linux")]
fn why_not_uring(e: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(0);
    match crate::error::os_code(e) {
        Some(libc::EPERM) if disabled == 2 => {
            "disabled by the kernel (sysctl kernel.io_uring_disabled = 2)".into()
        }
        Some(libc::EPERM) if disabled == 1 => {
            "restricted by the kernel to kernel.io_uring_group (sysctl kernel.io_uring_disabled = 1)"
                .into()
        }
        Some(libc::EPERM) => {
            "not permitted (EPERM): a seccomp profile, as container runtimes install, blocks it"
                .into()
        }
        Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS)".into(),
        Some(libc::EINVAL) => "the kernel is too old for the ring's setup (EINVAL)".into(),
        Some(libc::ENOMEM) => {
            "not enough locked memory for the ring (ENOMEM: raise ulimit -l, RLIMIT_MEMLOCK)".into()
        }
        _ => e
            .to_string()
            .trim_start_matches("io_uring: ")
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for driver in [Driver::Auto, Driver::Readiness, Driver::Uring] {
            assert_eq!(driver.to_string().parse::<Driver>(), Ok(driver));
        }
        assert_eq!("io_uring".parse::<Driver>(), Ok(Driver::Uring));
        let error = "select".parse::<Driver>().unwrap_err().to_string();
        assert!(error.contains("\"select\""), "{error}");
    }
}
