//! Every core: with two loops both carry connections and do work, in both
//! balance modes, with echo integrity and graceful shutdown; and the waker
//! that carries cross-thread work survives a million wakes from eight
//! threads. Each on both I/O drivers.

mod support;

use evloop::services::Echo;
use evloop::{Balance, CloseReason, Driver};
use support::{
    Amount, KIB, MIB, Streamer, assert_every_loop_worked, per_balance_and_driver, shared_machine,
    shut_down_mid_stream, start,
};

per_balance_and_driver!(
    two_loops_both_accept_and_echo_a_hundred_clients,
    shutdown_handle_drains_streaming_clients_without_loss,
);

/// Issue 4: with `threads(2)` and 100 echo clients, each loop accepts
/// connections and reads bytes, and every byte comes back.
fn two_loops_both_accept_and_echo_a_hundred_clients(balance: Balance, driver: Driver) {
    let _machine = shared_machine();
    let server = start(Echo, driver, |b| b.threads(2).balance(balance));
    const CLIENTS: u64 = 100;
    const BYTES: u64 = 256 * KIB as u64;
    let streams: Vec<Streamer> = (0..CLIENTS)
        .map(|seed| Streamer::start(server.addr, seed, Amount::Bytes(BYTES), 16 * KIB))
        .collect();
    for stream in streams {
        stream.finish();
    }
    let report = server.stop();
    assert!(
        report.is_clean(),
        "{balance:?} {driver:?}: cut {}",
        report.cut()
    );
    assert_eq!(report.loops.len(), 2);
    assert_every_loop_worked(&report, &format!("{balance:?} {driver:?}"));
    let total = report.total();
    assert_eq!(total.accepted, CLIENTS);
    assert_eq!(total.closed(CloseReason::Peer), CLIENTS);
    assert_eq!(total.bytes_in, CLIENTS * BYTES);
    assert_eq!(total.bytes_out, CLIENTS * BYTES);
}

/// Issue 4: a `ShutdownHandle::shutdown` while clients stream lets every
/// stream finish: all bytes come back and nothing is cut.
fn shutdown_handle_drains_streaming_clients_without_loss(balance: Balance, driver: Driver) {
    let _machine = shared_machine();
    let server = start(Echo, driver, |b| b.threads(2).balance(balance));
    const BYTES: u64 = 4 * MIB as u64;
    let streams: Vec<Streamer> = (0..8)
        .map(|seed| Streamer::start(server.addr, seed, Amount::Bytes(BYTES), 64 * KIB))
        .collect();
    let report = shut_down_mid_stream(server, streams, BYTES);
    assert!(
        report.is_clean(),
        "{balance:?} {driver:?}: cut {}",
        report.cut()
    );
    let total = report.total();
    assert_eq!(total.closed(CloseReason::Peer), 8);
    assert_eq!(total.bytes_out, 8 * BYTES);
}

mod waker {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use evloop::Driver;
    use evloop::poll::{Events, Poller, Token, Waker};

    use super::support::{per_driver, shared_machine};

    per_driver!(million_wakes_from_eight_threads_are_all_consumed_without_busy_looping);

    const TOKEN: u32 = 42;

    /// Wakes a sleeping loop from another thread.
    type Wake = Arc<dyn Fn() + Send + Sync>;

    /// What a loop sleeps on, with what its waker sends it: on the
    /// readiness driver a poller and its waker; on io_uring a ring with a
    /// read of an eventfd in flight (the loop's `LoopWaker` is one or the
    /// other).
    enum Sleeper {
        Poll(Poller, Events),
        #[cfg(target_os = "linux")]
        Ring(
            Box<evloop::ring::Ring>,
            Arc<evloop::ring::Waker>,
            Vec<evloop::ring::Completion>,
        ),
    }

    impl Sleeper {
        fn new(driver: Driver) -> (Sleeper, Wake) {
            match driver {
                #[cfg(target_os = "linux")]
                Driver::Uring => {
                    use std::os::fd::AsFd;
                    // The smallest ring: this one only ever reads an eventfd.
                    let mut ring = evloop::ring::Ring::new(evloop::ring::RingConfig {
                        entries: 8,
                        buffers: 1,
                        buffer_size: 64,
                    })
                    .unwrap();
                    let waker = Arc::new(evloop::ring::Waker::new().unwrap());
                    ring.read_eventfd(waker.as_fd(), TOKEN).unwrap();
                    let wake = {
                        let waker = Arc::clone(&waker);
                        Arc::new(move || waker.wake().unwrap())
                    };
                    (
                        Sleeper::Ring(Box::new(ring), waker, Vec::with_capacity(16)),
                        wake,
                    )
                }
                _ => {
                    let poller = Poller::new().unwrap();
                    let waker = Waker::new(&poller, Token(TOKEN as usize)).unwrap();
                    let wake = Arc::new(move || waker.wake().unwrap());
                    (Sleeper::Poll(poller, Events::with_capacity(16)), wake)
                }
            }
        }

        /// Sleeps until woken or `timeout` passes; returns how many wake-ups
        /// were reported (each of them checked).
        fn wait(&mut self, timeout: Duration) -> usize {
            match self {
                Sleeper::Poll(poller, events) => {
                    poller.wait(events, Some(timeout)).unwrap();
                    for event in events.iter() {
                        assert_eq!(event.token(), Token(TOKEN as usize), "unexpected {event:?}");
                    }
                    events.len()
                }
                #[cfg(target_os = "linux")]
                Sleeper::Ring(ring, waker, completions) => {
                    use std::os::fd::AsFd;
                    ring.submit_and_wait(completions, Some(timeout)).unwrap();
                    for completion in completions.iter() {
                        assert_eq!(
                            (completion.op(), completion.token()),
                            (evloop::ring::Op::Wake, TOKEN),
                            "unexpected {completion:?}"
                        );
                        assert_eq!(completion.result().unwrap(), 8, "{completion:?}");
                        // One read at a time, armed again for the next wake.
                        ring.read_eventfd(waker.as_fd(), TOKEN).unwrap();
                    }
                    completions.len()
                }
            }
        }
    }

    /// Pitfalls 4 and 5: eight threads each push an item and wake one
    /// sleeping loop, a million times in all. The consumer drains everything
    /// per wake-up; it must consume every item, return from its wait no
    /// more often than it was woken (no busy loop), and once all is
    /// drained, stay asleep.
    fn million_wakes_from_eight_threads_are_all_consumed_without_busy_looping(driver: Driver) {
        let _machine = shared_machine();
        const THREADS: usize = 8;
        const PER_THREAD: usize = 125_000;
        const TOTAL: usize = THREADS * PER_THREAD;
        let limit = Duration::from_secs(30);

        let (mut sleeper, wake) = Sleeper::new(driver);
        let queue = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let producers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (wake, queue) = (Arc::clone(&wake), Arc::clone(&queue));
                std::thread::spawn(move || {
                    for _ in 0..PER_THREAD {
                        queue.fetch_add(1, Ordering::Release);
                        wake();
                    }
                })
            })
            .collect();

        let (mut consumed, mut returns, mut empty_returns) = (0usize, 0usize, 0usize);
        while consumed < TOTAL {
            let left = limit.saturating_sub(start.elapsed());
            assert!(
                !left.is_zero(),
                "consumed {consumed} of {TOTAL} items within {limit:?}: a wake-up was lost"
            );
            sleeper.wait(left);
            returns += 1;
            // Drain the whole mailbox per wake-up: many wakes fold into one.
            let drained = queue.swap(0, Ordering::Acquire);
            if drained == 0 {
                empty_returns += 1;
            }
            consumed += drained;
        }
        for producer in producers {
            producer.join().unwrap();
        }
        let took = start.elapsed();
        assert_eq!(consumed, TOTAL);
        assert_eq!(queue.load(Ordering::Acquire), 0);
        eprintln!(
            "{driver:?}: {TOTAL} wakes from {THREADS} threads: {returns} wait returns \
             ({empty_returns} found nothing new) in {took:?}"
        );
        assert!(
            returns <= TOTAL,
            "{returns} wait returns for {TOTAL} wakes: the loop busy-loops"
        );

        // A wake whose item an earlier wake-up already drained may still be
        // pending (the push and the wake are not one atomic step): at most
        // one wake-up, as wakes coalesce. After it, the loop stays asleep.
        let stale = sleeper.wait(Duration::ZERO);
        assert!(stale <= 1, "{stale} stale wakes did not coalesce");
        let woke = sleeper.wait(Duration::from_millis(50));
        assert_eq!(
            woke, 0,
            "woke with nothing to do after the queue was drained"
        );
        assert!(took < limit, "took {took:?}");
    }
}

mod stopping {
    use evloop::services::Echo;
    use evloop::{Balance, Driver};

    use super::support::{assert_echo_works, per_driver, shared_machine, start};

    per_driver!(server_returns_from_run_every_time_it_is_stopped);

    /// The control thread learns that the last loop has stopped even when
    /// it looks before that loop's thread has quite finished: `run` returns
    /// every time, promptly (each `stop` fails after a bounded wait).
    fn server_returns_from_run_every_time_it_is_stopped(driver: Driver) {
        let _machine = shared_machine();
        for round in 0..200 {
            let balance = if round % 2 == 0 {
                Balance::ReusePort
            } else {
                Balance::Handoff
            };
            let server = start(Echo, driver, |b| b.threads(2).balance(balance));
            if round % 10 == 0 {
                assert_echo_works(server.addr);
            }
            let report = server.stop();
            assert!(report.is_clean());
        }
    }
}
