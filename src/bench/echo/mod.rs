//! `evloop bench echo`: a load generator for echo servers.
//!
//! Each connection sends a message of `--size` bytes and waits for exactly
//! that many bytes back, keeping `--pipeline` messages in flight. Every
//! echoed byte is compared with what was sent; messages differ per
//! connection and per index (see [`payload`]), so stale, shifted or foreign
//! bytes are caught. A mismatch is printed, counted, and fails the run.
//!
//! Two drivers move the bytes, chosen with `--io`; everything else — the
//! payload, each connection's bookkeeping and checks ([`conn`]), the
//! tallies and the report — is shared:
//!
//! * `epoll` (the default; kqueue on BSD and macOS, see [`epoll`]): one
//!   [`Poller`](evloop::poll::Poller) per thread, non-blocking TCP or Unix
//!   stream sockets registered once for both directions (edge-triggered),
//!   reused read and write buffers, a `read` and a `write` per connection
//!   served, and no allocation per event.
//! * `uring` (Linux, see [`uring`]): one io_uring per thread through
//!   evloop's safe [`Ring`](evloop::ring::Ring), a receive always armed per
//!   connection into the ring's provided buffers and one send in flight
//!   from the connection's own buffer; a whole batch of completions is
//!   answered with one system call.
//! * `auto`: `uring` where a ring can be made here, else `epoll`, with a
//!   line on stderr saying why. The default is `epoll`, not `auto` as for
//!   `evloop serve`, and `EVLOOP_IO` is not read: what one core of load
//!   generator produces must not change unasked.
//!
//! Latency is measured from the moment a message is queued to the moment
//! its last byte is back, into an HDR histogram.
//!
//! # How much load one core produces
//!
//! Measured against the C epoll echo server of `bench/c/epoll_echo.c` on a
//! two-core AMD EPYC virtual machine (Linux 6.18), the server pinned to one
//! core and one load thread to the other, runs of 3 s, on 2026-11-29:
//!
//! | load                          | requests/s        | load core busy | server core busy |
//! |-------------------------------|-------------------|----------------|------------------|
//! | 1 connection × 64 B           | 22,000–28,000     | ~55 %          | ~50 %            |
//! | 50 connections × 128 B        | 84,000–113,000    | 97–99 %        | 83–98 %          |
//! | 500 connections × 128 B       | 60,000–67,000     | 93 %           | 95 %             |
//! | 50 connections × 4 KiB        | 77,000–97,000     | 96 %           | 92–96 %          |
//! | 50 × 128 B, `--pipeline 16`   | 1.1–1.5 million   | 90–98 %        | 89–99 %          |
//!
//! (Ranges: the machine is shared, and repeated runs differ this much.) One
//! connection is latency-bound: each side waits for the other. Beyond that,
//! one core of load generator matches about one core of the simplest server,
//! because on loopback most of the cost on either side is the kernel's TCP
//! path, paid by whoever calls `write`. So at pipeline 1 one load thread can
//! keep one server core busy, not more: where it is the limit, compare
//! servers by CPU time per request (as `evloop-bench compare` does), or give
//! the load generator more threads and cores than the server.
//!
//! `--io uring` lowers that ceiling's cost, not the kernel's TCP path: it
//! makes some 0.35 system calls per request where epoll makes 2.07 (a
//! `read` and a `write` each, plus a share of `epoll_wait`; `perf stat`, 50
//! connections × 128 B against `epoll_echo.c`). `evloop-bench load-cost`
//! runs the load on each driver against the same server, in interleaved
//! rounds; three rounds of 2 s each, medians, same machine, 2026-11-29
//! (shared with other work: rounds of one setting differed by up to 40 %):
//!
//! | server        | load        | load CPU per request, epoll → uring | requests/s, uring / epoll |
//! |---------------|-------------|-------------------------------------|---------------------------|
//! | C epoll       | 50 × 128 B  | 5.52 → 5.12 µs (0.93×)              | 1.07×                     |
//! | C epoll       | 500 × 128 B | 6.75 → 6.22 µs (0.92×)              | 1.03×                     |
//! | C io_uring    | 50 × 128 B  | 5.51 → 5.12 µs (0.93×)              | 0.94×                     |
//! | C io_uring    | 500 × 128 B | 5.70 → 4.70 µs (0.82×)              | 1.19×                     |
//! | evloop, uring | 50 × 128 B  | 5.35 → 4.34 µs (0.81×)              | 1.03×                     |
//! | evloop, uring | 500 × 128 B | 6.30 → 5.17 µs (0.82×)              | 1.18×                     |
//!
//! So one load core goes 7–23 % further on io_uring. The server's CPU per
//! request moves with it (0.82–1.08× here: the batches it gets change
//! shape), so servers are compared under one and the same load generator,
//! as `compare` does (on epoll).

mod conn;
mod epoll;
mod payload;
mod report;
mod tls;
#[cfg(target_os = "linux")]
mod uring;
mod worker;

use std::io::Write as _;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use evloop::{Address, Driver};
use report::Summary;
use tls::{TlsPlan, Trust};
use worker::{Io, Plan, Tally};

/// The largest message: bigger ones measure memory copies, not the server.
const MAX_SIZE: u64 = 16 * 1024 * 1024;

/// Options of `evloop bench echo`.
#[derive(clap::Args, Debug)]
pub struct EchoArgs {
    /// The echo server: HOST:PORT, or a Unix socket as unix:/path/to.sock
    /// or unix:@name (Linux abstract namespace).
    #[arg(long, value_name = "ADDR")]
    target: String,
    /// Connections to open.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=MAX_SIZE))]
    size: u64,
    /// How long to measure, at least 1ms: 500ms, 2s, 1m.
    #[arg(long, value_name = "D", default_value = "5s", value_parser = crate::duration::parse_positive)]
    duration: Duration,
    /// Messages in flight per connection.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pipeline: u32,
    /// How long to run before measuring, to let both sides warm up.
    #[arg(long, value_name = "D", default_value = "0s", value_parser = crate::duration::parse)]
    warmup: Duration,
    /// Load-generating threads, each with its own poller (or ring) and its
    /// share of the connections.
    #[arg(long, value_name = "T", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// How long one connect may take before it counts as a connect error
    /// (at least 1ms).
    #[arg(long, value_name = "D", default_value = "5s", value_parser = crate::duration::parse_positive)]
    connect_timeout: Duration,
    /// How the load threads move bytes: epoll (kqueue on BSD and macOS),
    /// uring (io_uring, Linux 6.0 or later; fails where it cannot work), or
    /// auto (io_uring where it works, else epoll, with a line saying why).
    /// Unlike `evloop serve`, the default is epoll, and EVLOOP_IO is not
    /// read: a load generator's cost must not change unasked.
    #[arg(long = "io", value_name = "DRIVER", default_value_t = Driver::Readiness)]
    io: Driver,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Speak TLS (rustls on ring; TLS 1.3 or 1.2, as the server chooses):
    /// every message is encrypted, and the handshakes are reported. Needs
    /// --ca or --insecure.
    #[arg(long)]
    tls: bool,
    /// With --tls: trust the certificates of this PEM file as roots.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: accept any certificate (the handshake's signatures are
    /// still checked).
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    insecure: bool,
    /// With --tls: the server name sent and checked against the
    /// certificate (default: the target's host; localhost for a Unix
    /// socket).
    #[arg(long, value_name = "NAME", requires = "tls")]
    sni: Option<String>,
    /// With --tls: open a new connection, with a full handshake, for each
    /// request and close it once the echo is back, reporting handshakes/s;
    /// one message per connection (no --pipeline).
    #[arg(long, requires = "tls", conflicts_with = "pipeline")]
    new_connection: bool,
    /// With --tls: resume sessions (TLS 1.3 tickets, 1.2 session IDs or
    /// tickets) across a thread's connections; off by default, so that
    /// --new-connection measures full handshakes.
    #[arg(long, requires = "tls")]
    resume: bool,
}

/// Runs the load, prints the report, and fails if anything went wrong.
pub fn run(args: EchoArgs) -> ExitCode {
    let target = match resolve(&args.target) {
        Ok(target) => target,
        Err(message) => {
            say!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let tls = match tls_plan(&args) {
        Ok(tls) => tls,
        Err(message) => {
            say!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let io = match choose_io(args.io) {
        Ok(io) => io,
        Err(message) => {
            say!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let plan = Plan {
        target,
        io,
        size: usize::try_from(args.size).expect("--size is at most 16 MiB"),
        pipeline: args.pipeline as usize,
        warmup: args.warmup,
        duration: args.duration,
        connect_timeout: args.connect_timeout,
        tls,
    };
    let threads = args.threads.min(args.connections) as usize;
    let tally = match load(&plan, args.connections, threads) {
        Ok(tally) => tally,
        Err(message) => {
            say!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let summary = Summary {
        plan,
        connections: args.connections,
        threads,
        tally,
    };
    let report = if args.json {
        summary.to_json() + "\n"
    } else {
        summary.to_text()
    };
    // `print!` would panic if standard output is closed (`EPIPE`).
    if let Err(e) = std::io::stdout().write_all(report.as_bytes()) {
        say!("error: writing the report: {e}");
        return ExitCode::FAILURE;
    }
    if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The driver `--io` asks for, once io_uring is known to work here (where
/// it is asked for) or not (`auto`).
fn choose_io(wanted: Driver) -> Result<Io, String> {
    match wanted {
        Driver::Readiness => Ok(Io::Readiness),
        #[cfg(target_os = "linux")]
        Driver::Uring => evloop::ring::Ring::probe()
            .map(|_| Io::Uring)
            .map_err(|e| format!("--io uring: {e}")),
        #[cfg(target_os = "linux")]
        Driver::Auto => match evloop::ring::Ring::probe() {
            Ok(_) => Ok(Io::Uring),
            Err(e) => {
                say!(
                    "--io auto: io_uring cannot be used ({e}); using {}",
                    evloop::poll::BACKEND
                );
                Ok(Io::Readiness)
            }
        },
        #[cfg(not(target_os = "linux"))]
        Driver::Auto => Ok(Io::Readiness),
        #[cfg(not(target_os = "linux"))]
        Driver::Uring => Err("--io uring: io_uring exists on Linux only".to_string()),
        other => Err(format!(
            "--io {other}: not a driver this load generator has"
        )),
    }
}

/// The TLS plan of `--tls` and its options, if TLS is asked for.
fn tls_plan(args: &EchoArgs) -> Result<Option<TlsPlan>, String> {
    if !args.tls {
        return Ok(None);
    }
    let trust = match (&args.ca, args.insecure) {
        (Some(file), _) => Trust::Roots(file.clone()),
        (None, true) => Trust::Anything,
        (None, false) => {
            return Err(
                "--tls needs --ca FILE (the roots to check the certificate against) or --insecure"
                    .to_string(),
            );
        }
    };
    let server_name = match &args.sni {
        Some(name) => name.clone(),
        None => target_host(&args.target).to_string(),
    };
    TlsPlan::new(&trust, &server_name, args.new_connection, args.resume).map(Some)
}

/// The host part of `--target`: `HOST` of `HOST:PORT` (`[::1]:443` gives
/// `::1`), `localhost` for a Unix socket.
fn target_host(target: &str) -> &str {
    if target.starts_with("unix:") {
        return "localhost";
    }
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn resolve(target: &str) -> Result<Address, String> {
    if target.starts_with("unix:") {
        return target
            .parse()
            .map_err(|e| format!("--target {target}: {e}"));
    }
    target
        .to_socket_addrs()
        .map_err(|e| format!("--target {target}: {e}"))?
        .next()
        .map(Address::Inet)
        .ok_or_else(|| format!("--target {target}: no address"))
}

/// Spreads the connections over `threads` threads (connection `i` goes to
/// thread `i % threads`), runs them together, and adds up their tallies.
fn load(plan: &Plan, connections: u32, threads: usize) -> Result<Tally, String> {
    let start = Barrier::new(threads);
    let results: Vec<_> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                let ids = (first as u64..u64::from(connections)).step_by(threads);
                let start = &start;
                thread::Builder::new()
                    .name(format!("bench-echo-{first}"))
                    .spawn_scoped(scope, move || worker::run(plan, ids, start))
                    .expect("spawning a load thread")
            })
            .collect();
        workers.into_iter().map(|w| w.join()).collect()
    });
    let mut total: Option<Tally> = None;
    for result in results {
        let tally = result
            .map_err(|_| "a load thread panicked".to_string())?
            .map_err(|e| format!("{}: {e}", plan.io))?;
        match &mut total {
            Some(total) => total.merge(&tally),
            None => total = Some(tally),
        }
    }
    total.ok_or_else(|| "no load thread ran".to_string())
}

#[cfg(test)]
mod tests {
    use super::target_host;

    #[test]
    fn the_server_name_defaults_to_the_target_s_host() {
        assert_eq!(target_host("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(target_host("[::1]:8443"), "::1");
        assert_eq!(target_host("example.test:443"), "example.test");
        assert_eq!(target_host("unix:/run/echo.sock"), "localhost");
    }
}
