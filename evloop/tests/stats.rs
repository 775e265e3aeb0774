//! Issue 12: a running server's counters and gauges, read from another
//! thread through `Server::stats` while the loops work — open connections,
//! bytes, connections paused by backpressure, the server's state — on both
//! I/O drivers and balance modes.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use evloop::services::Echo;
use evloop::{Action, Balance, CloseReason, Context, Driver, Handler, Input, LoopStats, State};
use support::{builder, connect, per_balance_and_driver, run, shared_machine, wait_until};

per_balance_and_driver!(
    stats_follow_connections_and_bytes_while_serving,
    stats_count_connections_paused_by_backpressure,
    a_loop_stuck_in_a_handler_does_not_answer_pings,
);

const LIMIT: Duration = Duration::from_secs(20);

/// `service` bound on a free loopback port with `threads` loops, not yet
/// running, and its stats.
fn bound<S: evloop::Service>(
    service: S,
    driver: Driver,
    balance: Balance,
    threads: usize,
) -> (evloop::Server<S>, evloop::StatsHandle) {
    let server = builder(driver)
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .threads(threads)
        .balance(balance)
        .build(service)
        .unwrap();
    let stats = server.stats();
    (server, stats)
}

fn total(loops: &[LoopStats]) -> LoopStats {
    let mut sum = LoopStats::default();
    for l in loops {
        sum.counters.add(&l.counters);
        sum.open += l.open;
        sum.paused += l.paused;
        sum.buffered += l.buffered;
    }
    sum
}

/// Ten clients connect and echo; the stats show them open and their bytes
/// in and out while they stay connected, then closed by their peers; the
/// state goes from bound to serving, draining and stopped.
fn stats_follow_connections_and_bytes_while_serving(balance: Balance, driver: Driver) {
    let _machine = shared_machine();
    let (server, stats) = bound(Echo, driver, balance, 2);
    assert_eq!(stats.state(), State::Bound);
    assert_eq!(stats.loops().len(), 2);
    let server = run(server);
    wait_until("the server to serve", LIMIT, || {
        stats.state() == State::Serving
    });
    let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(server.addr)).collect();
    for client in &mut clients {
        client.write_all(&[7; 100]).unwrap();
        let mut echo = [0; 100];
        client.read_exact(&mut echo).unwrap();
    }
    let now = total(&stats.loops());
    assert_eq!(now.open, 10, "{now:?}");
    assert_eq!(now.counters.accepted, 10);
    assert_eq!(now.counters.bytes_in, 1000);
    // io_uring counts a send when its completion arrives, which may be
    // after the client has the bytes.
    wait_until("the sends to be counted", LIMIT, || {
        total(&stats.loops()).counters.bytes_out == 1000
    });
    drop(clients);
    wait_until("the closes to be counted", LIMIT, || {
        total(&stats.loops()).counters.closed(CloseReason::Peer) == 10
    });
    assert_eq!(total(&stats.loops()).open, 0);
    server.handle().shutdown();
    let report = server.join();
    assert_eq!(stats.state(), State::Stopped);
    // The report is what the live counters said last.
    assert_eq!(report.total(), total(&stats.loops()).counters);
}

/// Echo clients that send and never read are paused by backpressure: the
/// paused gauge counts them, and the buffered gauge shows what they hold;
/// once they go, both fall back to zero.
fn stats_count_connections_paused_by_backpressure(balance: Balance, driver: Driver) {
    let _machine = shared_machine();
    let (server, stats) = bound(Echo, driver, balance, 2);
    let server = run(server);
    let mut clients: Vec<TcpStream> = (0..4).map(|_| connect(server.addr)).collect();
    for client in &clients {
        client.set_nonblocking(true).unwrap();
    }
    let chunk = vec![b'x'; 64 * 1024];
    // Each client writes until its socket takes no more: the server's
    // output to it passes the high watermark and its reading stops.
    wait_until("four connections to be paused", LIMIT, || {
        for client in &mut clients {
            while client.write(&chunk).is_ok() {}
        }
        total(&stats.loops()).paused == 4
    });
    // The buffered gauge is published at the end of the loop's turn, the
    // pause as it happens.
    wait_until("the buffered bytes to show", LIMIT, || {
        total(&stats.loops()).buffered > 0
    });
    let now = total(&stats.loops());
    assert!(now.counters.backpressure_pauses >= 4, "{now:?}");
    drop(clients);
    wait_until("the paused connections to close", LIMIT, || {
        let now = total(&stats.loops());
        now.open == 0 && now.paused == 0 && now.buffered == 0
    });
    server.stop();
}

/// A handler that blocks its loop on its first read until released: a
/// stand-in for a bug that wedges a loop.
#[derive(Clone)]
struct Wedge(Arc<AtomicBool>);

impl Handler for Wedge {
    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_>) -> Action {
        while !self.0.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        input.consume_all();
        Action::Continue
    }
}

/// Idle loops answer pings (a ping wakes them); a loop stuck in a handler
/// does not until the handler returns, which is what a watchdog looks for.
fn a_loop_stuck_in_a_handler_does_not_answer_pings(balance: Balance, driver: Driver) {
    let _machine = shared_machine();
    let release = Arc::new(AtomicBool::new(false));
    let (server, stats) = bound(Wedge(Arc::clone(&release)), driver, balance, 1);
    let server = run(server);
    wait_until("the server to serve", LIMIT, || {
        stats.state() == State::Serving
    });
    let answered = || stats.loops()[0].answered;
    stats.ping();
    wait_until("an idle loop to answer", LIMIT, || answered() == 1);

    let mut client = connect(server.addr);
    client.write_all(b"wedge").unwrap();
    wait_until("the loop to read", LIMIT, || {
        stats.loops()[0].counters.bytes_in == 5
    });
    stats.ping();
    // A negative, so a bounded look: the stuck loop answers nothing.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(answered(), 1, "a wedged loop answered");
    release.store(true, Ordering::Release);
    wait_until("the loop to answer once free", LIMIT, || answered() == 2);
    drop(client);
    server.stop();
}
