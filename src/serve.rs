//! `evloop serve`: runs one of the library's services.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use evloop::services::{Discard, Echo, Log};
use evloop::{Balance, Server, ServerBuilder, Service};
use tracing::{error, info, warn};

use crate::duration;

/// Options of `evloop serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The service: log (the seed: prints "read N bytes"), echo (RFC 862), discard (RFC 863).
    #[arg(default_value = "log")]
    service: String,
    /// Address to listen on; may repeat. Default: 127.0.0.1:1815 (loopback only;
    /// expose with e.g. 0.0.0.0:1815 or [::]:1815).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// Listen backlog. Default: the OS maximum.
    #[arg(long, value_name = "N")]
    backlog: Option<i32>,
    /// Event loops (threads). Default: the CPUs available.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// How connections reach loops: reuseport (kernel balances; default on
    /// Linux and FreeBSD) or handoff (one acceptor; default elsewhere).
    #[arg(long, value_name = "MODE")]
    balance: Option<String>,
    /// Open connections allowed; past it new ones are closed at once.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Close connections silent in both directions for this long (e.g. 30s). Default: off.
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// How long SIGINT/SIGTERM waits for connections to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    shutdown_timeout: String,
    /// log service: show each read's bytes as a hex dump.
    #[arg(long)]
    hexdump: bool,
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
        "log" => serve(
            builder,
            Log {
                hexdump: args.hexdump,
            },
            "log",
        ),
        "echo" => serve(builder, Echo, "echo"),
        "discard" => serve(builder, Discard, "discard"),
        other => {
            say!("evloop: unknown service '{other}' (available: log, echo, discard)");
            ExitCode::from(2)
        }
    }
}

fn configure(args: &ServeArgs) -> Result<ServerBuilder, String> {
    let mut builder = Server::builder()
        .handle_signals(true)
        .shutdown_timeout(duration::parse(&args.shutdown_timeout)?);
    for text in &args.listen {
        let addr: SocketAddr = text.parse().map_err(|_| {
            format!(
                "'{text}': not an address (expected IP:PORT, e.g. 127.0.0.1:1815 or [::1]:1815)"
            )
        })?;
        builder = builder.listen(addr);
    }
    if let Some(backlog) = args.backlog {
        builder = builder.backlog(backlog);
    }
    if let Some(threads) = args.threads {
        if threads == 0 {
            return Err("--threads must be at least 1".into());
        }
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
    if let Some(idle) = &args.idle_timeout {
        builder =
            builder.idle_timeout(Some(duration::parse(idle)?).filter(|d| *d > Duration::ZERO));
    }
    Ok(builder)
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
        info!(
            "{name}: listening on {addr} ({} backend)",
            evloop::poll::BACKEND
        );
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
