//! The `evloop` program: `evloop serve <service>` runs a TCP service on the
//! evloop reactor; `evloop bench echo` measures an echo server; `evloop
//! completions <shell>` and `evloop man` print its shell completions and
//! manual page.

/// Writes a line to standard error like `eprintln!`, but ignores a failed
/// write instead of panicking: the reader may be gone (`EPIPE`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod addr;
mod bench;
mod docs;
mod duration;
mod log;
mod metrics;
mod serve;
mod size;
mod supervise;
mod tls;
mod usage;
mod version;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::log::LogQueue;

/// Event-driven TCP services on the kernel event queue (epoll, kqueue).
#[derive(Parser, Debug)]
#[command(name = "evloop", version = version::VERSION.as_str(), about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to standard error: text (for people) or
    /// json (one object per line, with each event's fields, for log
    /// shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The least severe events logged (error, warn, info, debug, trace), or
    /// directives as RUST_LOG takes them (e.g. info,evloop=debug). Default:
    /// RUST_LOG if set, else info.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_log_level)]
    log_level: Option<String>,
}

/// The log's line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// A line of text per event.
    Text,
    /// A JSON object per line: timestamp, level, target, and the fields.
    Json,
}

/// A level or filter directives, checked as `RUST_LOG` would be.
fn parse_log_level(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not a level or filter: {e}"))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a service (log, echo, discard, chargen, daytime, http) until SIGINT/SIGTERM/SIGQUIT.
    // Boxed: its options outweigh the other commands' several times over.
    Serve(Box<serve::ServeArgs>),
    /// Measure a server with a load generator.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print the completion script for a shell to standard output.
    Completions(docs::CompletionsArgs),
    /// Print the manual page (roff) to standard output, e.g. for `man -l -`.
    Man,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) => return usage::refuse(&error, &args),
    };
    let log = init_logging(cli.log_format, cli.log_level.as_deref());
    let status = match cli.command {
        Command::Serve(args) => serve::run(*args, &log),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Completions(args) => docs::completions(&args),
        Command::Man => docs::man(),
    };
    log.finish();
    status
}

/// Logs to standard error through a [`LogQueue`], so that a slow or closed
/// log never stops the program, in `format`; `level` (else `RUST_LOG`, else
/// `info`) says what is logged.
fn init_logging(format: LogFormat, level: Option<&str>) -> LogQueue {
    let filter = match level {
        Some(level) => tracing_subscriber::EnvFilter::new(level),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let queue = LogQueue::to_stderr();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(queue.clone())
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal())
        // The queue never fails a write; this keeps the layer from ever
        // writing to standard error behind its back.
        .log_internal_errors(false);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).init(),
    }
    queue
}
