//! `evloop serve`: runs one of the library's services.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use evloop::services::{Chargen, Daytime, Discard, Echo, Log};
use evloop::{Address, Balance, Driver, Server, ServerBuilder, Service};
use tracing::{error, info, warn};

use crate::{addr, duration, size};

/// The most loops `--threads` may ask for: more than the CPUs only adds
/// switching, and each loop holds descriptors.
const MAX_THREADS: usize = 1024;

/// Descriptors the process holds besides its loops: standard streams, the
/// control thread's poller, waker and signal pipe, with room to spare.
const FIXED_DESCRIPTORS: u64 = 16;

/// The smallest `--max-buffered`: one connection's read buffer. Less would
/// stop reading almost at once.
const MIN_BUFFERED: usize = 64 * 1024;

/// Options of `evloop serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The service: log (the seed: prints "read N bytes"), echo (RFC 862),
    /// discard (RFC 863), chargen (RFC 864), daytime (RFC 867).
    #[arg(default_value = "log")]
    service: String,
    /// Address to listen on; may repeat. Default: 127.0.0.1:1815 (loopback only;
    /// expose with e.g. 0.0.0.0:1815 or [::]:1815). [::]:P serves IPv6 only
    /// (IPV6_V6ONLY): add 0.0.0.0:P for IPv4 too. A link-local IPv6 address
    /// takes its interface as a name or an index: [fe80::1%eth0]:1815. A Unix
    /// socket: unix:/path/to.sock (a stale file is replaced; the file is
    /// removed at exit) or unix:@name (Linux abstract namespace).
    #[arg(long = "listen", value_name = "ADDR", value_parser = addr::parse)]
    listen: Vec<Address>,
    /// Permission bits of the Unix socket files, in octal, at most 0777
    /// (e.g. 0660: owner and group may connect). Default: from the umask.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    unix_mode: Option<u32>,
    /// Listen backlog, at least 1; the kernel lowers it to its maximum
    /// (net.core.somaxconn on Linux). Default: the OS maximum.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_backlog)]
    backlog: Option<i32>,
    /// Event loops (threads), 1 to 1024; each holds a few descriptors (a
    /// poller, a waker, a listener per address) within `ulimit -n`.
    /// Default: the CPUs available.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_threads)]
    threads: Option<usize>,
    /// How connections reach loops: reuseport (kernel balances; default on
    /// Linux and FreeBSD) or handoff (one acceptor; default elsewhere).
    #[arg(long, value_name = "MODE")]
    balance: Option<String>,
    /// Open connections allowed, at least 1; past it a newcomer waits up to
    /// 250ms for a slot, then is closed. Default: 100000.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    max_connections: Option<usize>,
    /// Close connections silent in both directions for this long, at least
    /// 1ms (e.g. 30s). Default: off.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_positive)]
    idle_timeout: Option<Duration>,
    /// How long SIGINT/SIGTERM/SIGQUIT waits for connections to finish; 0 cuts them
    /// at once. Otherwise at least 1ms.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_zero_or_positive)]
    shutdown_timeout: Duration,
    /// The most bytes all connections together may hold in their buffers;
    /// past it, the connections holding the most stop reading until their
    /// output drains. At least 64KiB; KiB, MiB, GiB are powers of 1024,
    /// K, M, G (KB, MB, GB) powers of 1000.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_max_buffered)]
    max_buffered: usize,
    /// How the loops move bytes: auto (io_uring where the kernel has what
    /// it needs, else epoll; the log says which and why), uring, or epoll
    /// (kqueue on BSD and macOS). The environment variable overrides the
    /// default for operators; the option overrides both.
    #[arg(
        long = "io",
        value_name = "DRIVER",
        env = "EVLOOP_IO",
        default_value = "auto"
    )]
    io: Driver,
    /// log service: show each read's bytes as a hex dump.
    #[arg(long)]
    hexdump: bool,
}

/// A count of at least 1.
fn parse_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<i128>() {
        Ok(n) if n < 1 => Err("must be at least 1".to_owned()),
        Ok(n) => usize::try_from(n).map_err(|_| "too large".to_owned()),
        Err(_) => Err("not a whole number".to_owned()),
    }
}

/// Permission bits in octal: `660`, `0660` or `0o660`, at most `0777`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        Ok(_) => Err("at most 0777 (permission bits only)".to_owned()),
        Err(_) => Err("not an octal mode (e.g. 0660)".to_owned()),
    }
}

/// A server-wide buffer budget: at least [`MIN_BUFFERED`].
fn parse_max_buffered(text: &str) -> Result<usize, String> {
    size::parse_at_least(text, MIN_BUFFERED)
}

/// A backlog: at least 1; larger than the kernel takes is its maximum.
fn parse_backlog(text: &str) -> Result<i32, String> {
    // Beyond i32: the largest listen() takes, which the kernel lowers to its maximum.
    parse_count(text).map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

/// A number of loops: 1 to [`MAX_THREADS`].
fn parse_threads(text: &str) -> Result<usize, String> {
    let threads = parse_count(text)?;
    if threads > MAX_THREADS {
        return Err(format!("at most {MAX_THREADS}"));
    }
    Ok(threads)
}

/// Runs the server until a signal has drained it. Exit status: 0 after a
/// clean drain, 1 if the deadline cut connections or it failed, 2 for bad
/// arguments.
pub fn run(args: ServeArgs) -> ExitCode {
    let builder = match configure(&args) {
        Ok(builder) => builder,
        Err(message) => {
            say!("evloop: {message}");
            return ExitCode::from(2);
        }
    };
    match args.service.as_str() {
        "log" => serve(builder, Log::new(args.hexdump), "log"),
        "echo" => serve(builder, Echo, "echo"),
        "discard" => serve(builder, Discard, "discard"),
        "chargen" => serve(builder, Chargen::default(), "chargen"),
        "daytime" => serve(builder, Daytime, "daytime"),
        other => {
            say!(
                "evloop: unknown service '{other}' (available: log, echo, discard, chargen, daytime)"
            );
            ExitCode::from(2)
        }
    }
}

fn configure(args: &ServeArgs) -> Result<ServerBuilder, String> {
    let mut builder = Server::builder()
        .handle_signals(true)
        .shutdown_timeout(args.shutdown_timeout)
        .idle_timeout(args.idle_timeout)
        .max_buffered(args.max_buffered)
        .io(args.io);
    for addr in &args.listen {
        builder = builder.listen(addr.clone());
    }
    if let Some(mode) = args.unix_mode {
        builder = builder.unix_mode(mode);
    }
    if let Some(backlog) = args.backlog {
        builder = builder.backlog(backlog);
    }
    if let Some(threads) = args.threads {
        check_descriptors(threads, args.listen.len().max(1))?;
        builder = builder.threads(threads);
    }
    if let Some(mode) = &args.balance {
        builder = builder.balance(match mode.as_str() {
            "reuseport" => Balance::ReusePort,
            "handoff" => Balance::Handoff,
            other => {
                return Err(format!(
                    "unknown balance mode '{other}' (use reuseport or handoff)"
                ));
            }
        });
    }
    if let Some(max) = args.max_connections {
        builder = builder.max_connections(max);
    }
    Ok(builder)
}

/// Refuses a number of loops whose descriptors alone would not fit in the
/// process's limit (`ulimit -n`): the bind would fail with "Too many open
/// files" on whichever address came last, which names the wrong culprit.
fn check_descriptors(threads: usize, addresses: usize) -> Result<(), String> {
    let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current else {
        return Ok(());
    };
    // A poller, a waker and a listener per address in each loop.
    let per_loop = 2 + addresses as u64;
    let needed = threads as u64 * per_loop + FIXED_DESCRIPTORS;
    if needed > limit {
        return Err(format!(
            "--threads {threads} needs about {needed} descriptors but the limit is {limit} (ulimit -n)"
        ));
    }
    Ok(())
}

fn serve<S: Service>(builder: ServerBuilder, service: S, name: &str) -> ExitCode {
    let server = match builder.build(service) {
        Ok(server) => server,
        Err(e) => {
            say!("evloop: {e}");
            return ExitCode::from(1);
        }
    };
    for addr in server.local_addrs() {
        info!("{name}: listening on {addr}");
    }
    match server.run() {
        Ok(report) => {
            for (i, l) in report.loops.iter().enumerate() {
                info!("loop {i}: {}", l.counters);
            }
            info!("total: {}", report.total());
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                warn!("shutdown cut {} connections", report.cut());
                ExitCode::from(1)
            }
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}
