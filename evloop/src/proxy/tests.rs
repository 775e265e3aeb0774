//! The layer driven in memory: what the wrapped handler sees, when, and
//! as whose; what happens to connections without a header.

use std::sync::{Arc, Mutex};

use super::*;
use crate::services::Echo;
use crate::testing::{Builder as Conn, Connection, State};

const HEADER: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
const CLIENT: &str = "192.0.2.1:56324";

/// Answers each whole line in capitals, leaving a partial line unconsumed;
/// notes whom it was opened for and whom its context shows, in each call.
#[derive(Clone, Default)]
struct Lines {
    heard: Arc<Mutex<Vec<String>>>,
    /// Greets in `on_open`, pauses until the greeting drained.
    greet: bool,
    /// Returns this from `on_open`.
    open_action: Option<Action>,
}

struct LinesHandler {
    service: Lines,
}

impl Lines {
    fn heard(&self) -> Vec<String> {
        self.heard.lock().unwrap().clone()
    }
}

impl LinesHandler {
    fn note(&self, what: String) {
        self.service.heard.lock().unwrap().push(what);
    }
}

impl Service for Lines {
    type Handler = LinesHandler;

    fn open(&self, peer: &Address) -> LinesHandler {
        let handler = LinesHandler {
            service: self.clone(),
        };
        handler.note(format!("opened for {peer}"));
        handler
    }
}

impl Handler for LinesHandler {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        self.note(format!("on_open {}", cx.peer().unwrap()));
        if self.service.greet {
            cx.write(b"hello\n");
            cx.pause_reading();
            cx.notify_drained();
        }
        self.service.open_action.unwrap_or(Action::Continue)
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        self.note(format!("on_data {}", cx.peer().unwrap()));
        while let Some(end) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = input.bytes()[..=end].to_ascii_uppercase();
            input.consume(end + 1);
            cx.write(&line);
        }
        Action::Continue
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        cx.resume_reading();
        Action::Continue
    }

    fn on_read_closed(&mut self, unconsumed: &[u8], cx: &mut Context<'_>) {
        self.note(format!(
            "on_read_closed {} with {} left",
            cx.peer().unwrap(),
            unconsumed.len()
        ));
    }

    fn on_close(&mut self, reason: CloseReason) {
        self.note(format!("closed {}", reason.name()));
    }
}

fn rejected(stats: &ProxyStats, reason: RejectReason) -> u64 {
    stats.snapshot().rejected(reason)
}

#[test]
fn the_service_is_opened_for_the_client_once_the_header_is_in() {
    let lines = Lines::default();
    let proxied = ProxyProtocol::new(lines.clone());
    let stats = proxied.stats();
    let mut conn = Connection::open(&proxied);
    assert!(conn.has_deadline(), "the header's deadline");
    // A byte at a time: nothing reaches the service until the last one.
    for &b in HEADER {
        assert!(lines.heard().is_empty());
        conn.receive(&[b]);
    }
    assert!(!conn.has_deadline(), "cleared once the header is in");
    conn.receive(b"hi\n");
    assert_eq!(conn.take_output(), b"HI\n");
    conn.close_input();
    assert_eq!(
        lines.heard(),
        [
            format!("opened for {CLIENT}"),
            format!("on_open {CLIENT}"),
            format!("on_data {CLIENT}"),
            format!("on_read_closed {CLIENT} with 0 left"),
            "closed peer".to_owned(),
        ]
    );
    assert_eq!(stats.snapshot().proxied, 1);
    assert_eq!(stats.snapshot().rejected_total(), 0);
}

#[test]
fn what_follows_the_header_is_the_services_and_what_it_leaves_stays() {
    let lines = Lines::default();
    let mut conn = Connection::open(&ProxyProtocol::new(lines.clone()));
    conn.receive(&[HEADER, b"one\ntw"].concat());
    assert_eq!(conn.take_output(), b"ONE\n");
    assert_eq!(conn.leftover_input(), 2, "the partial line is kept");
    conn.receive(b"o\nthr");
    assert_eq!(conn.take_output(), b"TWO\n");
    assert_eq!(conn.leftover_input(), 3);
    conn.close_input();
    assert_eq!(
        lines.heard().last().map(String::as_str),
        Some("closed peer")
    );
    assert!(
        lines
            .heard()
            .contains(&format!("on_read_closed {CLIENT} with 3 left"))
    );
}

#[test]
fn a_service_that_pauses_in_on_open_gets_the_rest_when_it_resumes() {
    let lines = Lines {
        greet: true,
        ..Lines::default()
    };
    let mut conn = Conn::new()
        .watermarks(0, 1024)
        .open(&ProxyProtocol::new(lines.clone()));
    conn.receive(&[HEADER, b"abc\n"].concat());
    assert!(conn.is_paused());
    assert_eq!(conn.leftover_input(), 4);
    // The greeting drains: the service resumes and the connection offers
    // it the leftovers without a new read.
    assert_eq!(conn.take_output(), b"hello\n");
    assert_eq!(conn.take_output(), b"ABC\n");
    assert_eq!(conn.leftover_input(), 0);
}

#[test]
fn a_service_that_closes_in_on_open_gets_no_input() {
    let lines = Lines {
        open_action: Some(Action::Close),
        ..Lines::default()
    };
    let mut conn = Connection::open(&ProxyProtocol::new(lines.clone()));
    conn.receive(&[HEADER, b"ignored\n"].concat());
    assert_eq!(conn.take_output(), b"");
    assert_eq!(conn.state(), State::Lingering);
    assert!(!lines.heard().iter().any(|l| l.starts_with("on_data")));
}

#[test]
fn local_and_unknown_leave_the_real_peer() {
    let local = [&V2_SIGNATURE[..], &[0x20, 0x00, 0x00, 0x00]].concat();
    for (header, kind) in [(&local[..], "local"), (b"PROXY UNKNOWN\r\n", "unknown")] {
        let lines = Lines::default();
        let proxied = ProxyProtocol::new(lines.clone());
        let mut conn = Connection::open(&proxied);
        conn.receive(&[header, b"x\n"].concat());
        assert_eq!(conn.take_output(), b"X\n", "{kind}");
        // The in-memory connection's real peer is an unnamed socket.
        assert_eq!(
            lines.heard()[..3],
            [
                "opened for unix:(unnamed)",
                "on_open unix:(unnamed)",
                "on_data unix:(unnamed)"
            ],
            "{kind}"
        );
        let counts = proxied.stats().snapshot();
        assert_eq!(
            (counts.local, counts.unknown),
            if kind == "local" { (1, 0) } else { (0, 1) }
        );
    }
}

#[test]
fn anything_but_a_header_is_refused_without_a_byte_sent() {
    for (input, reason) in [
        (&b"GET / HTTP/1.1\r\n"[..], RejectReason::NotProxy),
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 99999\r\n",
            RejectReason::Malformed,
        ),
        (b"PROXY UDP4 x\r\n", RejectReason::Unsupported),
        (
            &[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat(),
            RejectReason::TooLong,
        ),
    ] {
        let lines = Lines::default();
        let proxied = ProxyProtocol::new(lines.clone());
        let mut conn = Connection::open(&proxied);
        conn.receive(input);
        assert_eq!(conn.state(), State::Aborted, "{reason}");
        assert_eq!(conn.take_output(), b"");
        assert!(lines.heard().is_empty(), "the service never opened");
        assert_eq!(rejected(&proxied.stats(), reason), 1, "{reason}");
        assert_eq!(proxied.stats().snapshot().rejected_total(), 1);
    }
}

#[test]
fn the_header_timeout_refuses_a_slow_client() {
    let proxied = ProxyProtocol::builder()
        .timeout(Duration::from_millis(100))
        .build(Echo);
    let mut conn = Connection::open(&proxied);
    conn.receive(&HEADER[..10]);
    assert!(conn.fire_deadline());
    assert_eq!(conn.state(), State::Aborted);
    assert_eq!(rejected(&proxied.stats(), RejectReason::Timeout), 1);
}

#[test]
fn a_client_gone_before_its_header_is_counted_truncated_or_empty() {
    let proxied = ProxyProtocol::new(Echo);
    let mut conn = Connection::open(&proxied);
    conn.receive(&HEADER[..10]);
    conn.close_input();
    assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
    let mut conn = Connection::open(&proxied);
    conn.close_input();
    assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
    // Closed by the server's shutdown while waiting: not a refusal.
    drop(Connection::open(&proxied));
    let counts = proxied.stats().snapshot();
    assert_eq!(counts.rejected(RejectReason::Truncated), 1);
    assert_eq!(counts.rejected(RejectReason::Empty), 1);
    assert_eq!(counts.rejected_total(), 2);
}

#[test]
fn a_listener_not_chosen_passes_its_bytes_through() {
    let tcp: Address = "127.0.0.1:1815".parse().unwrap();
    let proxied = ProxyProtocol::builder().only_on([tcp]).build(Echo);
    // The in-memory connection arrived on an unnamed socket: not chosen.
    let mut conn = Connection::open(&proxied);
    assert!(!conn.has_deadline());
    conn.receive(HEADER);
    assert_eq!(conn.take_output(), HEADER);
    assert_eq!(proxied.stats().snapshot(), ProxyCounters::default());
    // Chosen: the header is expected.
    let chosen = ProxyProtocol::builder()
        .only_on([Address::Unnamed])
        .build(Echo);
    let mut conn = Connection::open(&chosen);
    conn.receive(&[HEADER, b"x"].concat());
    assert_eq!(conn.take_output(), b"x");
}
