//! Pipelined requests through `evloop::testing`: every answer to one read
//! is in the output after that read (so the driver sends them together),
//! in order; past the output batch the rest wait in the input, paused.

use evloop::testing::{Builder, Connection};
use evloop_http::{Http, HttpConnection};

fn open() -> Connection<HttpConnection> {
    let http = Http::builder().build().unwrap();
    Builder::new().open(&http)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn every_answer_to_one_read_is_out_after_it_in_order() {
    let mut conn = open();
    let mut batch = Vec::new();
    for i in 0..16 {
        let path = if i % 2 == 0 { "/" } else { "/missing" };
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    conn.receive(&batch);
    assert_eq!(conn.leftover_input(), 0, "every request was used");
    let output = conn.take_output();
    let statuses: Vec<&str> = output
        .windows(12)
        .filter_map(|w| w.strip_prefix(b"HTTP/1.1 "))
        .filter_map(|code| match code {
            b"200" => Some("200"),
            b"404" => Some("404"),
            _ => None, // the page's own text
        })
        .collect();
    let want: Vec<&str> = (0..16)
        .map(|i| if i % 2 == 0 { "200" } else { "404" })
        .collect();
    assert_eq!(statuses, want);
}

#[test]
fn past_the_output_batch_the_rest_wait_paused_and_follow_in_order() {
    let mut conn = open();
    // Each built-in page is under 1 KiB: 400 of them pass 128 KiB.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let batch: Vec<u8> = request
        .iter()
        .copied()
        .cycle()
        .take(request.len() * 400)
        .collect();
    conn.receive(&batch);
    assert!(conn.is_paused(), "reading paused while the answers wait");
    assert!(conn.leftover_input() > 0, "the rest of the requests wait");
    let mut answers = 0;
    for _ in 0..400 {
        answers += count(&conn.take_output(), b"HTTP/1.1 200 OK\r\n");
        if answers == 400 {
            break;
        }
    }
    assert_eq!(answers, 400);
    assert!(!conn.is_paused());
}
