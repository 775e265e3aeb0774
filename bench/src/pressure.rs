//! Backpressure: what `evloop serve echo` does with its memory while
//! thousands of clients write to it and never read, and whether a fresh
//! client still gets its echoes meanwhile.
//!
//! The run, in order:
//!
//! 1. start the server (not pinned: its loops use every CPU) and read its
//!    settled resident size as the baseline;
//! 2. open the clients ([`crate::memory::connect_up_to`]), make them
//!    non-blocking, and write to each in rounds until its socket would block,
//!    from one shared 64 KiB buffer, until a whole [`STALL`] passes without
//!    a byte taken or [`PUSH_LIMIT`] runs out; the clients never read;
//! 3. meanwhile, a fresh client sends 64 bytes every [`ECHO_EVERY`] and
//!    times each echo;
//! 4. read the resident size at full pressure, close every client, and
//!    sample the resident size every [`SAMPLE_EVERY`] for [`SETTLE`];
//! 5. read the peak (`VmHWM`, or a higher `VmRSS` reading: the kernel
//!    updates the high-water mark lazily) and stop the server with SIGTERM.
//!
//! The figures are held against issue 8's goals ([`PEAK_GOAL`],
//! [`SETTLE_GOAL`], [`P99_GOAL`]); a missed goal is reported, not treated as
//! a failed run.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use socket2::Socket;

use crate::limits;
use crate::memory::{DESCRIPTOR_MARGIN, connect_up_to, settled_rss};
use crate::prepare::work_dir;
use crate::servers::{RunningServer, START_TIMEOUT, ServerKind, free_port};

/// The longest the clients push, whether or not the server still takes bytes.
const PUSH_LIMIT: Duration = Duration::from_secs(60);
/// Pushing ends once no client's socket has taken a byte for this long.
const STALL: Duration = Duration::from_secs(1);
/// The pause between rounds in which no socket took a byte.
const IDLE_ROUND_PAUSE: Duration = Duration::from_millis(10);
/// The one buffer every client writes from.
const WRITE_CHUNK: usize = 64 * 1024;
/// The fresh client's message size.
const ECHO_SIZE: usize = 64;
/// How often the fresh client sends a message.
const ECHO_EVERY: Duration = Duration::from_millis(10);
/// An echo not back by then ends the probing, recorded at this latency.
const ECHO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the resident size is watched after the clients close.
const SETTLE: Duration = Duration::from_secs(5);
/// How often it is read meanwhile.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long SIGTERM, then SIGINT, may each take to stop the server.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
/// The clients' source addresses: a /16 of loopback after the ones the
/// memory runs use, one per server.
const SOURCE_RANGE: usize = ServerKind::ALL.len();

const MIB: u64 = 1 << 20;
/// Goal: the server's peak resident size.
const PEAK_GOAL: u64 = 128 * MIB;
/// Goal: how far from the baseline the resident size may be [`SETTLE`] after
/// the clients closed.
const SETTLE_GOAL: u64 = 16 * MIB;
/// Goal: the fresh client's 99th-percentile echo latency.
const P99_GOAL: Duration = Duration::from_millis(50);

/// What to run.
#[derive(Debug)]
pub struct Settings {
    /// The `evloop` program.
    pub evloop: PathBuf,
    /// Clients that push and never read.
    pub clients: usize,
    /// Extra arguments for `evloop serve echo`, e.g. `--max-buffered 16MiB`.
    pub serve_args: Vec<String>,
}

/// Everything one pressure run measured.
#[derive(Debug, Serialize)]
pub struct PressureReport {
    /// The server's command line.
    pub server: String,
    /// Clients asked for.
    pub clients_requested: usize,
    /// Clients connected and accepted.
    pub clients: usize,
    /// Clients whose connection failed while pushing (reset or closed).
    pub clients_lost: usize,
    /// Why fewer clients than asked for were connected.
    pub clients_note: Option<String>,
    /// Bytes the clients wrote in all.
    pub bytes_pushed: u64,
    /// How long they pushed, in seconds.
    pub push_seconds: f64,
    /// Whether pushing ended because the server stopped taking bytes
    /// (`true`) or at the time limit (`false`).
    pub push_stalled: bool,
    /// The server's settled resident size once listening, in bytes.
    pub baseline_rss_bytes: u64,
    /// Its most resident at any time, in bytes: `VmHWM`, or a reading of
    /// `VmRSS` above it.
    pub peak_rss_bytes: u64,
    /// Its resident size when pushing ended, in bytes.
    pub pressure_rss_bytes: u64,
    /// Its resident size [`SETTLE`] after the clients closed, in bytes.
    pub after_close_rss_bytes: u64,
    /// That minus the baseline, in bytes.
    pub after_close_delta_bytes: i64,
    /// The resident size every [`SAMPLE_EVERY`] after the clients closed.
    pub after_close_samples_bytes: Vec<u64>,
    /// The fresh client's echoes.
    pub echo: Echoes,
    /// How the server ended after SIGTERM.
    pub server_exit: String,
    /// Issue 8's goals, each met or not.
    pub goals: Goals,
}

/// The fresh client's echo round trips while the others pushed.
#[derive(Debug, Serialize)]
pub struct Echoes {
    /// Round trips timed (a timed-out one included).
    pub round_trips: u64,
    /// Median latency, in microseconds.
    pub p50_us: u64,
    /// 99th-percentile latency, in microseconds.
    pub p99_us: u64,
    /// Slowest, in microseconds.
    pub max_us: u64,
    /// What ended the probing early, if anything did.
    pub error: Option<String>,
}

/// Issue 8's goals for this run.
#[derive(Debug, Serialize)]
pub struct Goals {
    /// The peak resident size: at most [`PEAK_GOAL`].
    pub peak_rss: Goal,
    /// The resident size [`SETTLE`] after the clients closed: within
    /// [`SETTLE_GOAL`] of the baseline.
    pub after_close_rss: Goal,
    /// The fresh client's 99th-percentile echo latency: at most [`P99_GOAL`].
    pub echo_p99: Goal,
}

/// One goal and whether the run met it.
#[derive(Debug, Serialize)]
pub struct Goal {
    /// The bound, as text.
    pub target: String,
    /// Whether the measured figure is within it.
    pub met: bool,
}

impl Goal {
    /// `target | PASS` or `target | MISS`: a table row's last two cells.
    fn cells(&self) -> String {
        format!(
            "{} | {}",
            self.target,
            if self.met { "PASS" } else { "MISS" }
        )
    }
}

/// Runs the server under pressure and measures it. An error means the run
/// itself failed; missed goals are in the report.
pub fn run(settings: &Settings) -> Result<PressureReport, String> {
    let limit = limits::raise_file_limit();
    let cap = limit.soft.saturating_sub(DESCRIPTOR_MARGIN) as usize;
    let work = work_dir();
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
    let command_line: Vec<String> = [
        settings.evloop.display().to_string(),
        "serve".into(),
        "echo".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ]
    .into_iter()
    .chain(settings.serve_args.iter().cloned())
    .collect();
    eprintln!("pressure: {}", command_line.join(" "));
    let mut server = RunningServer::start_command(
        &command_line,
        None,
        port,
        work.join("pressure-evloop.log"),
        START_TIMEOUT,
    )?;
    let proc_error = |e: io::Error, server: &RunningServer| {
        format!(
            "/proc/{}: {e} (server log: {})",
            server.pid(),
            server.log_tail()
        )
    };
    let baseline_fds = server.open_fds().map_err(|e| proc_error(e, &server))?;
    let baseline = settled_rss(&server).map_err(|e| proc_error(e, &server))?;

    let target = settings.clients.min(cap);
    let mut clients_note = (target < settings.clients).then(|| {
        format!(
            "capped at {target} clients: {}",
            limit.capped_by.as_deref().unwrap_or("RLIMIT_NOFILE")
        )
    });
    let mut clients = Vec::with_capacity(target);
    eprintln!("  connecting {target} clients");
    if let Err(e) = connect_up_to(&server, baseline_fds, SOURCE_RANGE, &mut clients, target) {
        clients_note = Some(e);
    }
    if clients.is_empty() {
        return Err(format!(
            "no client connected: {}",
            clients_note.unwrap_or_default()
        ));
    }
    for client in &clients {
        client
            .set_nonblocking(true)
            .map_err(|e| format!("making a client non-blocking: {e}"))?;
    }

    eprintln!("  pushing (at most {PUSH_LIMIT:?})");
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stop_probe = AtomicBool::new(false);
    let (push, echo) = thread::scope(|scope| {
        let prober = scope.spawn(|| probe(address, &stop_probe));
        let push = push(&clients);
        stop_probe.store(true, Ordering::Relaxed);
        let echo = prober.join().expect("the echo prober panicked");
        (push, echo)
    });
    let pressure = server.rss_bytes().map_err(|e| proc_error(e, &server))?;

    eprintln!("  closing the clients, watching for {SETTLE:?}");
    let clients_connected = clients.len();
    drop(clients);
    let closed = Instant::now();
    let mut samples = Vec::new();
    for tick in 1..=SETTLE.as_millis() / SAMPLE_EVERY.as_millis() {
        let due = closed + SAMPLE_EVERY * tick as u32;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        samples.push(server.rss_bytes().map_err(|e| proc_error(e, &server))?);
    }
    let after_close = *samples.last().expect("SETTLE spans samples");
    // The kernel updates VmHWM lazily: a reading of VmRSS may exceed it.
    let high_water = server
        .peak_rss_bytes()
        .map_err(|e| proc_error(e, &server))?;
    let peak = samples
        .iter()
        .fold(high_water.max(pressure), |a, &b| a.max(b));
    let server_exit = match server.terminate(STOP_PATIENCE) {
        Ok(status) => status.to_string(),
        Err(e) => e,
    };

    let delta = after_close as i64 - baseline as i64;
    let goals = Goals {
        peak_rss: Goal {
            target: format!("≤ {}", mib(PEAK_GOAL)),
            met: peak <= PEAK_GOAL,
        },
        after_close_rss: Goal {
            target: format!("within ±{} of baseline", mib(SETTLE_GOAL)),
            met: delta.unsigned_abs() <= SETTLE_GOAL,
        },
        echo_p99: Goal {
            target: format!("≤ {} ms", P99_GOAL.as_millis()),
            met: echo.round_trips > 0 && echo.p99_us <= P99_GOAL.as_micros() as u64,
        },
    };
    Ok(PressureReport {
        server: command_line.join(" "),
        clients_requested: settings.clients,
        clients: clients_connected,
        clients_lost: push.lost,
        clients_note,
        bytes_pushed: push.bytes,
        push_seconds: push.elapsed.as_secs_f64(),
        push_stalled: push.stalled,
        baseline_rss_bytes: baseline,
        peak_rss_bytes: peak,
        pressure_rss_bytes: pressure,
        after_close_rss_bytes: after_close,
        after_close_delta_bytes: delta,
        after_close_samples_bytes: samples,
        echo,
        server_exit,
        goals,
    })
}

/// What the pushing clients did.
struct Push {
    bytes: u64,
    elapsed: Duration,
    stalled: bool,
    lost: usize,
}

/// Writes to every client until its socket would block, round after round,
/// until a whole [`STALL`] passes without a byte taken or [`PUSH_LIMIT`]
/// runs out.
fn push(clients: &[Socket]) -> Push {
    let chunk = vec![b'x'; WRITE_CHUNK];
    let mut open = vec![true; clients.len()];
    let mut bytes = 0u64;
    let started = Instant::now();
    let mut last_progress = started;
    loop {
        let mut round = 0u64;
        for (client, open) in clients.iter().zip(open.iter_mut()) {
            while *open {
                match client.send(&chunk) {
                    Ok(n) => round += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => *open = false,
                }
            }
            if started.elapsed() >= PUSH_LIMIT {
                break;
            }
        }
        bytes += round;
        let now = Instant::now();
        if round > 0 {
            last_progress = now;
        }
        let stalled = now - last_progress >= STALL;
        if stalled || now - started >= PUSH_LIMIT {
            return Push {
                bytes,
                elapsed: now - started,
                stalled,
                lost: open.iter().filter(|o| !**o).count(),
            };
        }
        if round == 0 {
            thread::sleep(IDLE_ROUND_PAUSE);
        }
    }
}

/// Sends [`ECHO_SIZE`] bytes every [`ECHO_EVERY`] on a fresh connection and
/// times each echo until `stop` is set, or until an echo fails or takes
/// longer than [`ECHO_TIMEOUT`] (recorded at that latency).
fn probe(server: SocketAddr, stop: &AtomicBool) -> Echoes {
    let mut latency = Histogram::<u64>::new_with_bounds(1, ECHO_TIMEOUT.as_micros() as u64, 3)
        .expect("valid histogram bounds");
    let error = probe_into(server, stop, &mut latency).err();
    Echoes {
        round_trips: latency.len(),
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        max_us: latency.max(),
        error: error.map(|e| e.to_string()),
    }
}

fn probe_into(
    server: SocketAddr,
    stop: &AtomicBool,
    latency: &mut Histogram<u64>,
) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&server, ECHO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ECHO_TIMEOUT))?;
    stream.set_write_timeout(Some(ECHO_TIMEOUT))?;
    let mut message = [0u8; ECHO_SIZE];
    let mut reply = [0u8; ECHO_SIZE];
    let mut next = Instant::now();
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sequence += 1;
        message[..8].copy_from_slice(&sequence.to_le_bytes());
        let sent = Instant::now();
        let result = stream
            .write_all(&message)
            .and_then(|()| stream.read_exact(&mut reply));
        let took = sent.elapsed().min(ECHO_TIMEOUT);
        latency.saturating_record(took.as_micros().max(1) as u64);
        result?;
        if reply != message {
            return Err(io::Error::other(format!(
                "echo {sequence} came back different"
            )));
        }
        next += ECHO_EVERY;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    Ok(())
}

/// The report as a Markdown table, with PASS or MISS against each goal.
pub fn render(report: &PressureReport) -> String {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let mut out = String::new();
    let _ = writeln!(out, "server: `{}`\n", report.server);
    out.push_str("| figure | measured | goal | |\n|---|---:|---|---|\n");
    let mut row = |figure: &str, measured: String, goal: Option<&Goal>| {
        let goal = goal.map_or_else(|| " | ".to_string(), Goal::cells);
        let _ = writeln!(out, "| {figure} | {measured} | {goal} |");
    };
    row(
        "clients (never reading)",
        format!(
            "{} of {}{}",
            report.clients,
            report.clients_requested,
            if report.clients_lost > 0 {
                format!(", {} lost", report.clients_lost)
            } else {
                String::new()
            }
        ),
        None,
    );
    row(
        "bytes pushed",
        format!(
            "{} in {:.1} s ({})",
            mib(report.bytes_pushed),
            report.push_seconds,
            if report.push_stalled {
                format!("until {} s without progress", STALL.as_secs())
            } else {
                format!("stopped at the {} s limit", PUSH_LIMIT.as_secs())
            }
        ),
        None,
    );
    row("baseline RSS", mib(report.baseline_rss_bytes), None);
    row(
        "peak RSS (VmHWM)",
        mib(report.peak_rss_bytes),
        Some(&report.goals.peak_rss),
    );
    row(
        "RSS under full pressure",
        mib(report.pressure_rss_bytes),
        None,
    );
    row(
        "RSS 5 s after close",
        mib(report.after_close_rss_bytes),
        None,
    );
    row(
        "delta to baseline",
        format!(
            "{}{}",
            if report.after_close_delta_bytes < 0 {
                "−"
            } else {
                "+"
            },
            mib(report.after_close_delta_bytes.unsigned_abs())
        ),
        Some(&report.goals.after_close_rss),
    );
    let echo = &report.echo;
    row("echo p50 (64 B every 10 ms)", ms(echo.p50_us), None);
    row("echo p99", ms(echo.p99_us), Some(&report.goals.echo_p99));
    row(
        "echo max",
        format!("{} ({} round trips)", ms(echo.max_us), echo.round_trips),
        None,
    );
    for (what, note) in [("clients", &report.clients_note), ("echo", &echo.error)] {
        if let Some(note) = note {
            let _ = writeln!(out, "\n{what}: {note}");
        }
    }
    let _ = writeln!(out, "\nserver exit after SIGTERM: {}", report.server_exit);
    out
}

/// `bytes` in MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}
