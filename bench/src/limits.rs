//! The open-file limit, raised for 500 connections and idle-connection runs.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The most descriptors the kernel lets one process have (`fs.nr_open`'s
/// usual default), asked for in case this user may raise its hard limit.
const WANTED: u64 = 1 << 20;

/// The open-file limit this process ended with, and what stopped it going
/// higher. Child processes (servers, load generator) inherit it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// Why it is not higher, if it is below what was wanted.
    pub capped_by: Option<String>,
}

/// Raises the soft `RLIMIT_NOFILE` as far as it goes: first the hard limit
/// too (allowed with `CAP_SYS_RESOURCE`), else the soft limit up to the hard.
pub fn raise_file_limit() -> FileLimit {
    let current = getrlimit(Resource::Nofile);
    let hard = current.maximum.unwrap_or(u64::MAX);
    let wanted = Rlimit {
        current: Some(WANTED),
        maximum: Some(WANTED.max(hard)),
    };
    if setrlimit(Resource::Nofile, wanted).is_ok() {
        return FileLimit {
            soft: WANTED,
            capped_by: None,
        };
    }
    let up_to_hard = Rlimit {
        current: Some(hard),
        maximum: current.maximum,
    };
    let capped_by = format!(
        "RLIMIT_NOFILE hard limit {hard} (raising it was refused: this process lacks CAP_SYS_RESOURCE)"
    );
    match setrlimit(Resource::Nofile, up_to_hard) {
        Ok(()) => FileLimit {
            soft: hard,
            capped_by: Some(capped_by),
        },
        Err(e) => FileLimit {
            soft: current.current.unwrap_or(u64::MAX),
            capped_by: Some(format!("RLIMIT_NOFILE could not be raised: {e}")),
        },
    }
}
