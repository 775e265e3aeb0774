//! A connection the service has decided to close says nothing more: found
//! by the fuzz target (http/fuzz), pinned here through `evloop::testing`.

use evloop::CloseReason;
use evloop::testing::{Builder, Connection, State};
use evloop_http::{Http, HttpConnection};

fn open() -> Connection<HttpConnection> {
    let http = Http::builder().build().unwrap();
    Builder::new().open(&http)
}

/// The responses in `output`, by status line.
fn status_lines(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .split("\r\n")
        .filter(|line| line.starts_with("HTTP/1.1 "))
        .map(str::to_owned)
        .collect()
}

/// Fuzz crash 731d9ca3: a request head begun ("\r"), then refused (400),
/// left its header timer running; when it fired before the client had read
/// the 400, a 408 followed the `Connection: close` response.
#[test]
fn a_refused_request_gets_no_408_after_its_400() {
    let mut conn = open();
    conn.receive(b"\r");
    conn.receive(b" x");
    assert_eq!(conn.state(), State::Closing);
    assert!(!conn.has_deadline(), "a header timer outlived the 400");
    conn.fire_deadline();
    assert_eq!(
        status_lines(&conn.take_output()),
        ["HTTP/1.1 400 Bad Request"]
    );
    conn.close_input();
    assert_eq!(conn.state(), State::Closed(CloseReason::Service));
}

/// The same for a request that asked to close, answered while its head's
/// timer still ran.
#[test]
fn a_request_that_closes_gets_no_408_after_its_answer() {
    let mut conn = open();
    conn.receive(b"GET / HTTP/1.1\r\n");
    conn.receive(b"Host: x\r\nConnection: close\r\n\r\n");
    assert_eq!(conn.state(), State::Closing);
    assert!(!conn.has_deadline(), "a header timer outlived the answer");
    assert_eq!(status_lines(&conn.take_output()), ["HTTP/1.1 200 OK"]);
}
