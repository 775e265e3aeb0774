//! The process's own figures under the names every Prometheus client
//! library uses (`process_*`), read on each scrape from `/proc` and
//! `getrlimit` (Linux). A figure that cannot be read is left out, not
//! written as 0.

use std::fs;

use tracing::debug;

use super::{Exposition, Kind};

/// What `/proc/self/stat` says of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// CPU time in user mode, in clock ticks.
    utime: u64,
    /// CPU time in the kernel, in clock ticks.
    stime: u64,
    /// When the process started, in clock ticks after boot.
    starttime: u64,
    /// Virtual memory size, in bytes.
    vsize: u64,
    /// Resident set size, in pages.
    rss: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)). The command name, field 2, is in
/// parentheses and may itself hold spaces and parentheses: the fields are
/// counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss: field(24)?,
    })
}

/// The boot time, in seconds since the Unix epoch, from `/proc/stat`'s
/// `btime` line.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|seconds| seconds.trim().parse().ok())
}

/// Reads `path`, or says (at debug level) why not.
fn read(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .inspect_err(|e| debug!("metrics: {path}: {e}"))
        .ok()
}

/// Writes the `process_*` families.
pub fn render(out: &mut Exposition) {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    if let Some(stat) = read("/proc/self/stat").as_deref().and_then(parse_stat) {
        out.family(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
        )
        .sample(&[], (stat.utime + stat.stime) as f64 / ticks);
        out.family(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
        )
        .sample(&[], stat.vsize);
        out.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
        )
        .sample(&[], stat.rss * rustix::param::page_size() as u64);
        if let Some(boot) = read("/proc/stat").as_deref().and_then(parse_boot_time) {
            out.family(
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since unix epoch in seconds.",
            )
            .sample(&[], boot as f64 + stat.starttime as f64 / ticks);
        }
    }
    match fs::read_dir("/proc/self/fd") {
        Ok(entries) => {
            out.family(
                "process_open_fds",
                Kind::Gauge,
                "Number of open file descriptors.",
            )
            .sample(&[], entries.count());
        }
        Err(e) => debug!("metrics: /proc/self/fd: {e}"),
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(max) = limit.current {
        out.family(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
        )
        .sample(&[], max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name_whatever_it_holds() {
        // A real line, with a command name that has a space and a ")".
        let line = "4242 (evl) op (x) S 1 4242 4242 0 -1 4194560 1150 0 0 0 \
                    17 9 0 0 20 0 3 0 123456 8675309 250 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 1260 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 17,
                stime: 9,
                starttime: 123456,
                vsize: 8675309,
                rss: 250,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("no name at all"), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn this_process_has_every_family() {
        let mut out = Exposition::new();
        render(&mut out);
        let text = out.into_text();
        for family in [
            "process_cpu_seconds_total",
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(
                text.contains(&format!("\n{family} ")),
                "{family} missing:\n{text}"
            );
        }
    }
}
