//! `evloop-bench`: runs evloop's echo server, on each of its I/O drivers
//! (`evloop` on epoll, `evloop-uring` on io_uring), side by side with its
//! peers and records the figures.
//!
//! ```text
//! cargo run -p evloop-bench --release -- compare [--quick] [--rounds N] [--duration D]
//! ```
//!
//! builds `target/release/evloop` and the C servers of `bench/c/`, then runs
//! every server pinned to CPU 0 with `evloop bench echo` on CPU 1 as the load
//! generator, over a matrix of loads in interleaved rounds; then measures
//! idle-connection memory (`memory`), system calls per request
//! (`syscalls`) and user-space instructions per request under valgrind's
//! callgrind (`instructions`); and holds the io_uring driver's figures
//! against its goals (PASS or MISS per goal, see [`goals`]). Results go to
//! `bench/results/latest.{json,md,svg}`, and the tables replace the results
//! section of `docs/BENCHMARKS.md`, which explains the method.
//!
//! ```text
//! cargo run -p evloop-bench --release -- compare http [--quick] [--rounds N] [--duration D]
//! ```
//!
//! runs evloop's HTTP service (`evloop serve http`, on each driver) against
//! nginx (one worker), both serving the same files, under wrk; installs
//! nginx and wrk from the system's packages where missing (see [`http`]).
//! Results go to `bench/results/http.{json,md}` and the HTTP section of
//! `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo run -p evloop-bench --release -- compare https [--quick] [--rounds N] [--duration D]
//! ```
//!
//! the same over TLS, with one certificate made per run: keep-alive
//! requests, and a new connection (a full handshake) per request, against
//! nginx (see [`http::https`]). Results go to `bench/results/https.{json,md}`
//! and the TLS section of `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo run -p evloop-bench --release -- pressure [--clients N] [--evloop PATH] [--json] [-- SERVE ARGS]
//! ```
//!
//! measures `evloop serve echo` alone under backpressure: thousands of
//! clients that write and never read (see [`pressure`]).
//!
//! ```text
//! cargo run -p evloop-bench --release -- load-cost [--server c-epoll] [--loads 50x128,500x128] [--rounds N] [--json]
//! ```
//!
//! measures the load generator itself: `evloop bench echo --io epoll` and
//! `--io uring` in turn against the same server, its CPU per request and how
//! busy its core is (see [`load_cost`]).
//!
//! The mio and tokio peers are subcommands of this program, so the harness
//! starts itself as those servers.

mod chart;
mod compare;
mod environment;
mod goals;
mod http;
mod instructions;
mod limits;
mod load_cost;
mod loadgen;
mod markdown;
mod memory;
mod peers;
mod prepare;
mod pressure;
mod servers;
mod syscalls;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use compare::{
    INSTRUCTIONS_DURATION, INSTRUCTIONS_DURATION_QUICK, RunSettings, SYSCALL_POINT, Settings,
};
use loadgen::Load;
use servers::ServerKind;

/// Compares evloop's echo server (epoll and io_uring drivers) with C epoll
/// and io_uring baselines, mio and tokio.
#[derive(Parser, Debug)]
#[command(name = "evloop-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `compare` compares.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// evloop's echo server against C, mio and tokio echo servers.
    Echo,
    /// evloop's HTTP service against nginx, under wrk.
    Http,
    /// evloop's HTTP service over TLS against nginx with the same
    /// certificate, under wrk: keep-alive, and a new handshake per request.
    Https,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Everything: throughput matrix, idle memory, cost per request (echo);
    /// or evloop's HTTP service against nginx under wrk (http).
    Compare {
        /// What to compare: echo (every echo server: throughput, memory,
        /// cost per request), http (evloop's HTTP service against nginx,
        /// under wrk; durations rounded up to whole seconds) or https (the
        /// same over TLS, with handshakes/s).
        #[arg(value_enum, default_value_t = Target::Echo)]
        target: Target,
        /// A smoke test: one short round, 1,000 idle connections; results
        /// under target/evloop-bench/ instead of bench/results/.
        #[arg(long)]
        quick: bool,
        /// Rounds over the matrix (at least 3 for a result worth keeping).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
        /// Measured time per run, e.g. 2s or 500ms.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Warm-up before each measured run.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Skip the idle-connection memory runs (echo only).
        #[arg(long)]
        skip_memory: bool,
        /// Skip counting system calls per request (echo only).
        #[arg(long)]
        skip_syscalls: bool,
        /// Skip counting instructions per request under callgrind (echo
        /// only).
        #[arg(long)]
        skip_instructions: bool,
    },
    /// Server memory growth per idle connection.
    Memory {
        /// Connection counts, ascending.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        counts: Vec<usize>,
    },
    /// System calls (and instructions, where counted) per echoed request.
    Syscalls {
        /// Measured time per server.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// User-space instructions per echoed request, counted by valgrind's
    /// callgrind (start-up and shutdown subtracted).
    Instructions {
        /// Load time per server under callgrind (valgrind slows servers
        /// down several times; 3s yields some 60,000 requests here).
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Memory and echo latency while thousands of echo clients write and
    /// never read (issue 8): baseline, peak and after-close resident size of
    /// `evloop serve echo`, a fresh client's echo p50/p99/max, PASS/MISS
    /// against each goal. Exits 0 whether or not the goals are met.
    Pressure {
        /// Clients that push and never read.
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        /// The evloop program to run. Default: build target/release/evloop
        /// (`cargo build --release -p evloop-cli`) and run that.
        #[arg(long, value_name = "PATH")]
        evloop: Option<PathBuf>,
        /// Print the report as JSON on stdout (the table goes to stderr).
        #[arg(long)]
        json: bool,
        /// Extra arguments for `evloop serve echo`, after `--`
        /// (e.g. `-- --max-buffered 16MiB`).
        #[arg(last = true, value_name = "SERVE ARGS")]
        serve_args: Vec<String>,
    },
    /// The load generator's own cost on each of its drivers: `evloop bench
    /// echo --io epoll` and `--io uring` in turn against the same server,
    /// interleaved rounds; requests/s, load CPU per request, load core busy,
    /// server CPU per request.
    LoadCost {
        /// The server loaded: a name from the comparison (c-epoll, evloop,
        /// c-uring, evloop-uring, …).
        #[arg(long, default_value = "c-epoll")]
        server: String,
        /// Loads as CONNECTIONSxBYTES, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "50x128,500x128", value_parser = load_cost::parse_load)]
        loads: Vec<(u32, u32)>,
        /// Rounds over loads and drivers.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
        /// Measured time per run.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Warm-up before each measured run.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Print the report as JSON on stdout (the table goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Serve echo on 127.0.0.1:PORT with mio (used by compare).
    ServeMio {
        /// The loopback port.
        port: u16,
    },
    /// Serve echo on 127.0.0.1:PORT with tokio's current_thread runtime.
    ServeTokioCurrent {
        /// The loopback port.
        port: u16,
    },
    /// Serve echo on 127.0.0.1:PORT with tokio's multi_thread runtime.
    ServeTokioMulti {
        /// The loopback port.
        port: u16,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let result = match cli.command {
        Command::Compare {
            target,
            quick,
            rounds,
            duration,
            warmup,
            skip_memory,
            skip_syscalls,
            skip_instructions,
        } => {
            let command = std::iter::once("cargo run -p evloop-bench --release --".to_string())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" ");
            let runs = if quick {
                RunSettings {
                    rounds: 1,
                    warmup: Duration::from_millis(100),
                    duration: Duration::from_millis(400),
                    quick,
                }
            } else {
                RunSettings {
                    rounds: rounds as usize,
                    warmup,
                    duration,
                    quick,
                }
            };
            if target != Target::Echo {
                if skip_memory || skip_syscalls || skip_instructions {
                    eprintln!(
                        "error: --skip-memory, --skip-syscalls and --skip-instructions are for echo"
                    );
                    return ExitCode::FAILURE;
                }
                let written = if target == Target::Http {
                    http::run(runs, command)
                } else {
                    http::https::run(runs, command)
                };
                return report_written(written);
            }
            let settings = if quick {
                Settings {
                    runs,
                    memory_counts: if skip_memory { vec![] } else { vec![1000] },
                    syscalls: !skip_syscalls,
                    instructions: !skip_instructions,
                    instructions_duration: INSTRUCTIONS_DURATION_QUICK,
                }
            } else {
                Settings {
                    runs,
                    memory_counts: if skip_memory {
                        vec![]
                    } else {
                        vec![10_000, 100_000]
                    },
                    syscalls: !skip_syscalls,
                    instructions: !skip_instructions,
                    instructions_duration: INSTRUCTIONS_DURATION,
                }
            };
            return report_written(compare::run(settings, command));
        }
        Command::Memory { counts } => {
            let limit = limits::raise_file_limit();
            let binaries = prepare::build_all(false);
            let results = memory::run(&ServerKind::ALL, &binaries, &counts, &limit);
            print_json(&results)
        }
        Command::Syscalls { duration } => {
            let binaries = prepare::build_all(false);
            let counters = syscalls::Counters::detect();
            let load = Load {
                connections: SYSCALL_POINT.0,
                size: SYSCALL_POINT.1,
                warmup: Duration::ZERO,
                duration,
            };
            let results = syscalls::run(&ServerKind::ALL, &binaries, &counters, load);
            print_json(&(counters, results))
        }
        Command::Instructions { duration } => {
            let binaries = prepare::build_all(false);
            let load = Load {
                connections: SYSCALL_POINT.0,
                size: SYSCALL_POINT.1,
                warmup: Duration::ZERO,
                duration,
            };
            print_json(&instructions::run(&ServerKind::ALL, &binaries, load))
        }
        Command::LoadCost {
            server,
            loads,
            rounds,
            duration,
            warmup,
            json,
        } => ServerKind::from_name(&server)
            .ok_or_else(|| format!("--server {server}: no such server"))
            .and_then(|server| {
                let settings = load_cost::Settings {
                    server,
                    loads,
                    rounds: rounds as usize,
                    warmup,
                    duration,
                };
                load_cost::run(&settings, &prepare::build_all(true))
            })
            .and_then(|report| {
                let table = load_cost::render(&report);
                if json {
                    eprint!("{table}");
                    print_json(&report)
                } else {
                    print!("{table}");
                    Ok(())
                }
            }),
        Command::Pressure {
            clients,
            evloop,
            json,
            serve_args,
        } => evloop
            .map_or_else(prepare::build_evloop_cli, Ok)
            .and_then(|evloop| {
                pressure::run(&pressure::Settings {
                    evloop,
                    clients,
                    serve_args,
                })
            })
            .and_then(|report| {
                let table = pressure::render(&report);
                if json {
                    eprint!("{table}");
                    print_json(&report)
                } else {
                    print!("{table}");
                    Ok(())
                }
            }),
        Command::ServeMio { port } => peers::serve_mio(loopback(port)).map_err(|e| e.to_string()),
        Command::ServeTokioCurrent { port } => {
            peers::serve_tokio(loopback(port), peers::TokioFlavor::CurrentThread)
                .map_err(|e| e.to_string())
        }
        Command::ServeTokioMulti { port, workers } => {
            peers::serve_tokio(loopback(port), peers::TokioFlavor::MultiThread(workers))
                .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Says where the results went, or why there are none.
fn report_written(written: Result<PathBuf, String>) -> ExitCode {
    match written {
        Ok(path) => {
            eprintln!("results: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let json = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}
