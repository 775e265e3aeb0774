//! Backend tests: the same tests run against whichever backend this target
//! compiles (epoll on Linux, kqueue on the BSDs and macOS), on real loopback
//! sockets. Every wait is bounded, and every check tolerates spurious events.

use super::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

const LIMIT: Duration = Duration::from_secs(5);

/// A connected, non-blocking pair of loopback sockets.
#[track_caller]
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    client.set_nonblocking(true).unwrap();
    (server, client)
}

/// Waits until an event for `token` satisfies `pred`, merging the flags of
/// all events for the token seen so far (kqueue reports filters separately).
#[track_caller]
fn wait_for(poller: &Poller, token: Token, pred: impl Fn(&Event) -> bool) -> Event {
    let mut events = Events::with_capacity(16);
    let deadline = Instant::now() + LIMIT;
    let mut merged = EventBuilder::default().build(token);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no matching event for {token:?} within {LIMIT:?}; merged: {merged:?}"
        );
        poller.wait(&mut events, Some(left)).unwrap();
        for event in events.iter().filter(|e| e.token() == token) {
            merged.flags |= event.flags;
        }
        if pred(&merged) {
            return merged;
        }
    }
}

/// Asserts that no event for `token` arrives within a short window.
#[track_caller]
fn assert_quiet(poller: &Poller, token: Token) {
    let mut events = Events::with_capacity(16);
    poller
        .wait(&mut events, Some(Duration::from_millis(50)))
        .unwrap();
    let mine: Vec<_> = events.iter().filter(|e| e.token() == token).collect();
    assert!(mine.is_empty(), "unexpected events: {mine:?}");
}

#[test]
fn reports_readable_with_its_token() {
    let poller = Poller::new().unwrap();
    let (server, mut client) = pair();
    poller
        .register(&server, Token(7), Interest::READABLE)
        .unwrap();
    client.write_all(b"hello").unwrap();
    let event = wait_for(&poller, Token(7), Event::is_readable);
    assert!(!event.is_read_closed());
}

#[test]
fn reports_writable_only_when_asked() {
    let poller = Poller::new().unwrap();
    let (server, _client) = pair();
    poller
        .register(&server, Token(1), Interest::READABLE)
        .unwrap();
    assert_quiet(&poller, Token(1));
    poller
        .reregister(&server, Token(1), Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    wait_for(&poller, Token(1), Event::is_writable);
}

#[test]
fn edge_triggered_reports_once_until_new_data() {
    let poller = Poller::new().unwrap();
    let (server, mut client) = pair();
    poller
        .register(&server, Token(3), Interest::READABLE)
        .unwrap();
    client.write_all(b"x").unwrap();
    wait_for(&poller, Token(3), Event::is_readable);
    // Not consumed, but already reported: no new edge.
    assert_quiet(&poller, Token(3));
    client.write_all(b"y").unwrap();
    wait_for(&poller, Token(3), Event::is_readable);
}

/// Pitfalls 1 and 2: a half-close is reported as read-closed while the data
/// sent before it is still readable.
#[test]
fn read_closed_with_pending_data_keeps_the_data() {
    let poller = Poller::new().unwrap();
    let (mut server, mut client) = pair();
    poller
        .register(&server, Token(5), Interest::READABLE)
        .unwrap();
    client.write_all(b"last words").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    wait_for(&poller, Token(5), |e| e.is_read_closed());
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words");
}

#[test]
fn peer_reset_is_reported() {
    let poller = Poller::new().unwrap();
    let (server, client) = pair();
    poller
        .register(&server, Token(9), Interest::READABLE)
        .unwrap();
    // SO_LINGER 0 makes close send RST.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    wait_for(&poller, Token(9), |e| e.is_read_closed() || e.is_error());
    let mut buf = [0u8; 8];
    let err = (&server).read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

#[test]
fn deregistered_source_is_silent() {
    let poller = Poller::new().unwrap();
    let (server, mut client) = pair();
    poller
        .register(&server, Token(2), Interest::READABLE)
        .unwrap();
    poller.deregister(&server).unwrap();
    client.write_all(b"x").unwrap();
    assert_quiet(&poller, Token(2));
}

#[test]
fn errors_name_the_operation() {
    let poller = Poller::new().unwrap();
    let (server, _client) = pair();
    poller
        .register(&server, Token(2), Interest::READABLE)
        .unwrap();
    let err = poller.register(&server, Token(2), Interest::READABLE);
    // epoll refuses a double add; kqueue's EV_ADD updates the existing filter.
    if let Err(err) = err {
        assert!(err.to_string().contains("fd"), "{err}");
    }
    poller.deregister(&server).unwrap();
    let err = poller.reregister(&server, Token(2), Interest::READABLE);
    if BACKEND == "epoll" {
        let err = err.unwrap_err().to_string();
        assert!(err.starts_with("epoll_ctl mod fd "), "{err}");
    }
}

#[test]
fn wait_times_out_without_events() {
    let poller = Poller::new().unwrap();
    let mut events = Events::with_capacity(4);
    let start = Instant::now();
    poller
        .wait(&mut events, Some(Duration::from_millis(20)))
        .unwrap();
    assert!(events.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(15));
}

#[test]
fn batch_returns_many_events_in_one_wait() {
    let poller = Poller::new().unwrap();
    let pairs: Vec<_> = (0..8).map(|_| pair()).collect();
    for (i, (server, client)) in pairs.iter().enumerate() {
        poller
            .register(server, Token(i), Interest::READABLE)
            .unwrap();
        (&*client).write_all(b"x").unwrap();
    }
    let mut events = Events::with_capacity(64);
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + LIMIT;
    while seen.len() < pairs.len() && Instant::now() < deadline {
        poller.wait(&mut events, Some(LIMIT)).unwrap();
        seen.extend(events.iter().map(|e| e.token()));
    }
    assert_eq!(seen.len(), pairs.len());
}

#[test]
fn waker_wakes_a_blocked_wait() {
    let poller = Poller::new().unwrap();
    // The waker must outlive the wait: closing its descriptor would also
    // withdraw its pending event (epoll and kqueue forget closed sources).
    let waker = Arc::new(Waker::new(&poller, Token(usize::MAX)).unwrap());
    let thread = {
        let waker = Arc::clone(&waker);
        std::thread::spawn(move || waker.wake().unwrap())
    };
    wait_for(&poller, Token(usize::MAX), Event::is_readable);
    thread.join().unwrap();
}

/// Pitfall 4: wakes are neither lost nor repeated. After one wake is seen,
/// the waker stays quiet; a wake after that is seen again.
#[test]
fn waker_does_not_repeat_and_is_not_lost() {
    let poller = Poller::new().unwrap();
    let token = Token(42);
    let waker = Waker::new(&poller, token).unwrap();
    for _ in 0..3 {
        for _ in 0..5 {
            waker.wake().unwrap();
        }
        wait_for(&poller, token, Event::is_readable);
        assert_quiet(&poller, token);
    }
}

/// Many more wakes than an eventfd counter or a pipe buffer hold in one go
/// are still delivered (the waker drains itself when full).
#[test]
fn waker_survives_a_flood() {
    let poller = Poller::new().unwrap();
    let waker = Waker::new(&poller, Token(1)).unwrap();
    for _ in 0..100_000 {
        waker.wake().unwrap();
    }
    wait_for(&poller, Token(1), Event::is_readable);
}

/// Urgent data is reported where the backend says it is: a read stops at
/// the urgent mark, and an owner that trusts short reads must know.
#[test]
fn urgent_data_is_a_priority_event_where_reported() {
    let poller = Poller::new().unwrap();
    let (server, client) = pair();
    poller
        .register(&server, Token(4), Interest::READABLE)
        .unwrap();
    (&client).write_all(b"abc").unwrap();
    socket2::SockRef::from(&client)
        .send_out_of_band(b"!")
        .unwrap();
    (&client).write_all(b"def").unwrap();
    let event = wait_for(&poller, Token(4), |e| {
        e.is_readable() && (e.is_priority() || !REPORTS_URGENT_DATA)
    });
    assert_eq!(event.is_priority(), REPORTS_URGENT_DATA);
}
