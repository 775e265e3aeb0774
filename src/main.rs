//! The `evloop` program: `evloop serve <service>` runs a TCP service on the
//! evloop reactor; `evloop bench echo` measures an echo server.

mod bench;
mod duration;
mod serve;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Event-driven TCP services on the kernel event queue (epoll, kqueue).
#[derive(Parser, Debug)]
#[command(name = "evloop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a TCP service (log, echo, discard) until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Measure a server with a load generator.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

/// Logs to standard error; `RUST_LOG` overrides the default `info` level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
