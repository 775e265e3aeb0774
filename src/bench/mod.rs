//! `evloop bench`: load generators that measure servers.

mod echo;

use std::process::ExitCode;

/// What to measure.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Load an echo server: fixed-size messages over many connections, every
    /// echoed byte checked; reports requests/s, MiB/s and latency percentiles.
    Echo(echo::EchoArgs),
}

/// Runs a benchmark command and reports its exit status.
pub fn run(cmd: BenchCommand) -> ExitCode {
    match cmd {
        BenchCommand::Echo(args) => echo::run(args),
    }
}
