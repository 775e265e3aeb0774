//! A server survives its own services and its configuration: a panicking
//! handler costs only its connection, extreme durations mean "no limit",
//! bulk input to a line service is not mistaken for an overlong line, and
//! the process gets its signals back when the server is done — on each I/O
//! driver.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use evloop::services::Echo;
use evloop::{Action, CloseReason, Context, Driver, Handler, Input};
use support::{
    LIMIT, MIB, builder, connect, per_driver, start, variant, write_then_half_close_and_read,
};

per_driver!(
    a_panicking_handler_closes_only_its_connection,
    bulk_lines_are_not_taken_for_an_overlong_line,
    durations_too_long_for_an_instant_mean_no_limit,
    handled_signals_after_the_server_is_done_end_the_process,
);

/// Echoes, but panics on a `!` — a bug a client's bytes can reach.
#[derive(Clone)]
struct Fragile;

impl Handler for Fragile {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let output = cx.output();
        assert!(!input.bytes().contains(&b'!'), "fragile handler met a '!'");
        output.extend_from_slice(input.bytes());
        input.consume_all();
        Action::Continue
    }
}

fn a_panicking_handler_closes_only_its_connection(driver: Driver) {
    let server = start(Fragile, driver, |b| b.threads(1));
    let mut good = connect(server.addr);
    let mut bad = connect(server.addr);
    bad.write_all(b"boom!").unwrap();
    let mut rest = Vec::new();
    // Closed (EOF or reset), with nothing echoed.
    let _ = bad.read_to_end(&mut rest);
    assert!(rest.is_empty());
    good.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    good.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"still here");
    drop(good);
    let total = server.stop().total();
    assert_eq!(total.closed(CloseReason::Error), 1, "{total}");
    assert_eq!(total.closed(CloseReason::Peer), 1, "{total}");
}

/// Answers complete lines; leaves a partial line for later.
#[derive(Clone)]
struct Lines;

impl Handler for Lines {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let output = cx.output();
        let complete = input
            .bytes()
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        output.extend_from_slice(&input.bytes()[..complete]);
        input.consume(complete);
        Action::Continue
    }
}

/// The input limit bounds what a handler leaves unconsumed, not what one
/// read brings on top of a partial line: 1 MiB of short lines in bulk, with
/// the default limit, must all be answered.
fn bulk_lines_are_not_taken_for_an_overlong_line(driver: Driver) {
    let server = start(Lines, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    let line = [b"x".repeat(99), b"\n".to_vec()].concat();
    let data = line.repeat(MIB / line.len());
    let got = write_then_half_close_and_read(&mut stream, &data);
    assert_eq!(got.len(), data.len());
    let total = server.stop().total();
    assert_eq!(total.closed(CloseReason::Error), 0, "{total}");
}

/// `Duration::MAX` is how callers say "no limit"; it must not overflow an
/// `Instant` inside a loop.
fn durations_too_long_for_an_instant_mean_no_limit(driver: Driver) {
    let server = start(Echo, driver, |b| {
        b.threads(1)
            .idle_timeout(Some(Duration::MAX))
            .shutdown_timeout(Duration::MAX)
    });
    let mut stream = connect(server.addr);
    stream.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).unwrap();
    drop(stream);
    let report = server.stop();
    assert!(report.is_clean());
    assert_eq!(report.total().closed(CloseReason::Peer), 1);
}

/// After `run` returns, every signal the server handled must again take its
/// default action (for these six: end the process): signal-hook cannot
/// uninstall its handlers, so the server arms the default actions. Each
/// check runs in a child process (this test binary, re-run).
fn handled_signals_after_the_server_is_done_end_the_process(driver: Driver) {
    use rustix::process::{Resource, Rlimit, Signal};
    const CHILD: &str = "EVLOOP_TEST_SIGNAL_CHILD";
    const SIGNALS: [Signal; 6] = [
        Signal::INT,
        Signal::TERM,
        Signal::QUIT,
        Signal::HUP,
        Signal::USR1,
        Signal::USR2,
    ];
    if let Some(index) = std::env::var_os(CHILD) {
        let signal = SIGNALS[index.to_str().unwrap().parse::<usize>().unwrap()];
        let server = builder(driver)
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .threads(1)
            .handle_signals(true)
            .build(Echo)
            .unwrap();
        let handle = server.shutdown_handle();
        let stopper = std::thread::spawn(move || handle.shutdown());
        server.run().unwrap();
        stopper.join().unwrap();
        // SIGQUIT's default action also dumps core: not here.
        let core = rustix::process::getrlimit(Resource::Core);
        let no_core = Rlimit {
            current: Some(0),
            ..core
        };
        rustix::process::setrlimit(Resource::Core, no_core).unwrap();
        rustix::process::kill_process(rustix::process::getpid(), signal).unwrap();
        std::thread::sleep(LIMIT);
        std::process::exit(0); // the signal was ignored
    }
    use std::os::unix::process::ExitStatusExt;
    // This very test, on the same driver, in the child.
    let test = format!(
        "handled_signals_after_the_server_is_done_end_the_process::{}",
        variant(driver)
    );
    for (index, signal) in SIGNALS.iter().enumerate() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test, "--test-threads", "1"])
            .env(CHILD, index.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(signal.as_raw()),
            "the child should die of {signal:?}: {status}"
        );
    }
}
