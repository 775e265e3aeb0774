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
mod serve;
mod size;
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
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a service (log, echo, discard, chargen, daytime) until SIGINT/SIGTERM/SIGQUIT.
    Serve(serve::ServeArgs),
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
    let log = init_logging();
    let status = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Completions(args) => docs::completions(&args),
        Command::Man => docs::man(),
    };
    log.finish();
    status
}

/// Logs to standard error through a [`LogQueue`], so that a slow or closed
/// log never stops the program; `RUST_LOG` overrides the default `info` level.
fn init_logging() -> LogQueue {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let queue = LogQueue::to_stderr();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(queue.clone())
        .with_ansi(std::io::stderr().is_terminal())
        // The queue never fails a write; this keeps the layer from ever
        // writing to standard error behind its back.
        .log_internal_errors(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .init();
    queue
}
