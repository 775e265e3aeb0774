//! The signals an operator sends to `evloop serve`, sent for real with
//! `kill`: SIGQUIT drains like SIGTERM; SIGUSR1 asks for what evloop has no
//! use for (nginx reopens its logs), so the server logs a line naming the
//! signal and keeps serving; SIGHUP and SIGUSR2 restart it (tests/restart.rs),
//! but not while it drains. Before issue 8 all four killed the server at
//! once, without a word.

mod common;
#[path = "../evloop/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Io, ServerProcess, per_driver};
use support::{
    Amount, KIB, LIMIT, MIB, Streamer, assert_echo_works, connect, round_trip, shared_machine,
    wait_for_close, wait_until,
};

/// Sends SIG`signal` to a server with an open connection, once while it
/// runs and once while it drains after SIGTERM. Each time the server logs a
/// line naming the signal and saying `says`, and the open connection is
/// still served; the signal neither stops the server (a new connection is
/// served after the first) nor counts as a second shutdown request (the
/// drain goes on, and ends with exit 0 once the connection closes).
#[track_caller]
fn logs_and_keeps_serving(io: Io, signal: &str, says: &str) {
    let _machine = shared_machine();
    let mut serve = ServerProcess::start(io, &["echo", "--threads", "2"]);
    let mut open = connect(serve.addr);
    round_trip(&mut open, b"before the signal");
    let line = format!("SIG{signal} received: {says}; still serving");

    serve.signal(signal);
    serve.wait_for_line(&line);
    round_trip(&mut open, b"still served after the signal");
    assert_echo_works(serve.addr);

    serve.signal("TERM");
    serve.wait_for_line("draining connections");
    serve.signal(signal);
    wait_until("the second signal's log line", LIMIT, || {
        serve.count_log(&line) == 2
    });
    round_trip(&mut open, b"still served while draining");
    drop(open);
    let status = serve.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}\n{}", serve.log_text());
    assert_eq!(
        serve.count_log("second shutdown request"),
        0,
        "{}",
        serve.log_text()
    );
}

/// Sends SIG`signal`, a restart request, to a draining server with an open
/// connection: nothing restarts, the log says why, the connection is still
/// served, and the signal is no second shutdown request (exit 0).
#[track_caller]
fn no_restart_while_draining(io: Io, signal: &str) {
    let _machine = shared_machine();
    let mut serve = ServerProcess::start(io, &["echo", "--threads", "2"]);
    let mut open = connect(serve.addr);
    round_trip(&mut open, b"before the drain");
    serve.signal("TERM");
    serve.wait_for_line("draining connections");
    serve.signal(signal);
    serve.wait_for_line(&format!("SIG{signal} received: restart requested"));
    serve.wait_for_line(&format!("SIG{signal}: draining: no restart"));
    round_trip(&mut open, b"still served while draining");
    drop(open);
    let status = serve.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}\n{}", serve.log_text());
    assert_eq!(serve.count_log("started"), 0, "{}", serve.log_text());
    assert_eq!(
        serve.count_log("second shutdown request"),
        0,
        "{}",
        serve.log_text()
    );
}

per_driver!(sighup_while_draining_does_not_restart);
/// SIGHUP restarts a serving server (tests/restart.rs); a draining one
/// finishes its drain.
fn sighup_while_draining_does_not_restart(io: Io) {
    no_restart_while_draining(io, "HUP");
}

per_driver!(sigusr1_logs_nothing_to_reopen_and_keeps_serving);
/// nginx reopens its log files on SIGUSR1; evloop opens none.
fn sigusr1_logs_nothing_to_reopen_and_keeps_serving(io: Io) {
    logs_and_keeps_serving(io, "USR1", "nothing to reopen (evloop opens no log files)");
}

per_driver!(sigusr2_while_draining_does_not_restart);
/// SIGUSR2, like SIGHUP.
fn sigusr2_while_draining_does_not_restart(io: Io) {
    no_restart_while_draining(io, "USR2");
}

per_driver!(sigquit_drains_every_stream);
/// SIGQUIT, nginx's graceful shutdown, while 4 clients stream 1 MiB each:
/// the log names the signal and the drain, every client gets all its bytes
/// back, the server exits 0.
fn sigquit_drains_every_stream(io: Io) {
    let _machine = shared_machine();
    let mut serve = ServerProcess::start(io, &["echo", "--threads", "2"]);
    const BYTES: u64 = MIB as u64;
    const HOLD_AT: u64 = 256 * KIB as u64;
    // The writers pause mid-stream until the drain has begun.
    let release = Arc::new(AtomicBool::new(false));
    let streams: Vec<Streamer> = (0..4)
        .map(|seed| {
            let amount = Amount::Bytes(BYTES);
            Streamer::start_held(serve.addr, seed, amount, 16 * KIB, HOLD_AT, &release)
        })
        .collect();
    wait_until("every stream to be under way", LIMIT, || {
        streams.iter().all(|s| s.received() == HOLD_AT)
    });

    serve.signal("QUIT");
    serve.wait_for_line("SIGQUIT received: shutdown requested");
    serve.wait_for_line("draining connections");
    release.store(true, Ordering::Release);

    let total: u64 = streams.into_iter().map(|s| s.finish().received).sum();
    let status = serve.wait_exit();
    assert_eq!(total, 4 * BYTES);
    assert_eq!(status.code(), Some(0), "{status}\n{}", serve.log_text());
}

per_driver!(sigquit_after_sigterm_cuts_connections_at_once);
/// SIGQUIT after SIGTERM is a second shutdown request: the open connection
/// is cut at once and the server exits 1, without waiting for the shutdown
/// timeout (30 s).
fn sigquit_after_sigterm_cuts_connections_at_once(io: Io) {
    let _machine = shared_machine();
    let mut serve = ServerProcess::start(io, &["echo", "--threads", "2"]);
    let mut open = connect(serve.addr);
    round_trip(&mut open, b"open");
    serve.signal("TERM");
    serve.wait_for_line("draining connections");

    let second = Instant::now();
    serve.signal("QUIT");
    let status = serve.wait_exit();
    let exited_after = second.elapsed();
    let (_, closed_after) = wait_for_close(&mut open, Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{status}\n{}", serve.log_text());
    assert!(exited_after < Duration::from_secs(5), "{exited_after:?}");
    assert!(closed_after < Duration::from_secs(1), "{closed_after:?}");
    serve.wait_for_line("SIGQUIT received: shutdown requested");
    serve.wait_for_line("second shutdown request: closing connections now");
}
