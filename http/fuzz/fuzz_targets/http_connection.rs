//! Drives one `HttpConnection` through `evloop::testing` with what the
//! client sends, split and interleaved with its other moves as the input
//! says, against a small document root made once; checks the answers, not
//! only that nothing panics.
//!
//! Input: byte 0 holds the number of moves (low 5 bits) and two options
//! (0x20: output watermarks of 1 and 4 KiB instead of 64 and 256; 0x40:
//! `max_input` of 1 KiB instead of 64); then one byte per move; the rest is
//! the byte stream the client sends. A move byte's low 3 bits say what the
//! client does: 0-2 send the next `1 + 4 * arg²` bytes of the stream (`arg`
//! is the byte's high 5 bits), 3-4 read all the output, 5 let the deadline
//! pass, 6 close its side, 7 send and read at once. After the moves the
//! client sends the rest, reads until nothing comes, closes its side and
//! reads again. A seed of a plain request is `\0` followed by it.
//!
//! Invariants, after every move:
//! * the handler's leftover input is at most `max_input`, and the output
//!   pending at most `MAX_PENDING` (the client reads it all each time);
//! * the output is a sequence of responses: each starts `HTTP/1.1 `, its
//!   head parses (httparse) with a known status, `Server` and `Date`, and
//!   the body is as long as `Content-Length` says (or empty: a HEAD) —
//!   a truncated last body only after the connection was reset or closed
//!   for an error; nothing after a `Connection: close` response;
//! * bodies are what they claim: a file's bytes (the range of them a 206
//!   names), an error page's status text;
//! * no byte of the dotfile or of the file outside the root (each holds a
//!   canary string) ever appears;
//! * the handler hears `on_close` once: no connection stays counted open.

#![no_main]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::OnceLock;

use evloop::testing::{Builder, Connection, State};
use evloop::{CloseReason, Handler};
use evloop_http::Http;
use libfuzzer_sys::fuzz_target;

/// In the file outside the root, reachable only through symlinks.
const OUTSIDE_CANARY: &[u8] = b"OUTSIDE-ROOT-CANARY-9c2e";
/// In a dotfile under the root.
const DOTFILE_CANARY: &[u8] = b"DOTFILE-CANARY-7f3a";
/// The most output a connection may hold whatever the client does: the
/// high watermark, plus what one handler call may add on top (a batch of
/// pipelined answers, 128 KiB, then one answer with a file's first chunk).
const MAX_PENDING: usize = 512 * 1024;
/// The longest response head the server writes.
const MAX_RESPONSE_HEAD: usize = 4096;
/// Moves after the script before the client is taken to be stuck.
const MAX_FINAL_READS: usize = 1000;

/// The document root and the files in it, made once per process.
struct Site {
    http: Http,
    /// Regular files under the root by size (each size unique): what a
    /// 200 or 206 of a file must carry.
    files: Vec<Vec<u8>>,
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("evloop-http-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let mut secret = b"secret: ".to_vec();
        secret.extend_from_slice(OUTSIDE_CANARY);
        fs::write(outside.join("secret.txt"), &secret).unwrap();
        let mut dotfile = b"hidden: ".to_vec();
        dotfile.extend_from_slice(DOTFILE_CANARY);
        fs::write(root.join(".hidden"), &dotfile).unwrap();
        symlink(outside.join("secret.txt"), root.join("escape.txt")).unwrap();
        symlink(&base, root.join("up")).unwrap();
        // Larger than a chunk (64 KiB): streamed, paced by the client.
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let files: Vec<(PathBuf, Vec<u8>)> = vec![
            (root.join("hello.txt"), b"hello, world\n".to_vec()),
            (root.join("empty.txt"), Vec::new()),
            (root.join("big.bin"), big),
            (
                root.join("sub/index.html"),
                b"<!DOCTYPE html>\n<title>sub</title>\n".to_vec(),
            ),
            (
                root.join("sub/notes.md"),
                b"# notes\n\nnothing much\n".to_vec(),
            ),
        ];
        for (path, bytes) in &files {
            fs::write(path, bytes).unwrap();
        }
        let http = Http::builder().root(&root).list(true).build().unwrap();
        Site {
            http,
            files: files.into_iter().map(|(_, bytes)| bytes).collect(),
        }
    })
}

/// What the client does next.
enum Move {
    Send(usize),
    Read,
    Deadline,
    CloseInput,
    SendAndRead(usize),
}

impl Move {
    fn from_byte(b: u8) -> Move {
        let arg = usize::from(b >> 3);
        let len = 1 + 4 * arg * arg;
        match b & 7 {
            0..=2 => Move::Send(len),
            3 | 4 => Move::Read,
            5 => Move::Deadline,
            6 => Move::CloseInput,
            _ => Move::SendAndRead(len),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let moves = usize::from(options & 0x1f).min(rest.len());
    let (script, mut stream) = rest.split_at(moves);
    let site = site();
    let mut builder = Builder::new();
    if options & 0x20 != 0 {
        builder = builder.watermarks(1024, 4096);
    }
    let max_input = if options & 0x40 != 0 { 1024 } else { 64 * 1024 };
    builder = builder.max_input(max_input);
    let mut client = Client {
        conn: builder.open(&site.http),
        check: Responses::default(),
        max_input,
        closed_input: false,
    };
    for &b in script {
        match Move::from_byte(b) {
            Move::Send(n) => stream = client.send(stream, n),
            Move::Read => {
                client.read();
            }
            Move::Deadline => client.deadline(),
            Move::CloseInput => client.close_input(),
            Move::SendAndRead(n) => {
                stream = client.send(stream, n);
                client.read();
            }
        }
    }
    client.send(stream, stream.len());
    client.read_all();
    client.close_input();
    client.read_all();
    // The client has closed and read everything: the connection is over.
    let cut = match client.conn.state() {
        State::Aborted | State::Closed(CloseReason::Error) => true,
        State::Closed(_) => false,
        _ => panic!("the connection outlived its client: {:?}", client.conn),
    };
    client.check.finish(cut, site);
    drop(client);
    assert_eq!(
        site.http.open_connections(),
        0,
        "a handler never heard on_close"
    );
});

/// The client's side: what it does, and the checks after each move.
struct Client<H: Handler> {
    conn: Connection<H>,
    check: Responses,
    max_input: usize,
    closed_input: bool,
}

impl<H: Handler> Client<H> {
    fn send<'a>(&mut self, stream: &'a [u8], n: usize) -> &'a [u8] {
        let (now, later) = stream.split_at(n.min(stream.len()));
        if !self.closed_input && !now.is_empty() {
            self.conn.receive(now);
            self.bounds();
        }
        later
    }

    fn read(&mut self) -> usize {
        let output = self.conn.take_output();
        self.check.feed(&output, site());
        self.bounds();
        output.len()
    }

    fn read_all(&mut self) {
        for _ in 0..MAX_FINAL_READS {
            if self.read() == 0 {
                return;
            }
        }
        panic!("the output never ends: {:?}", self.conn);
    }

    fn deadline(&mut self) {
        self.conn.fire_deadline();
        self.bounds();
    }

    fn close_input(&mut self) {
        self.closed_input = true;
        self.conn.close_input();
        self.bounds();
    }

    fn bounds(&self) {
        assert!(
            self.conn.leftover_input() <= self.max_input,
            "leftover input past the limit: {:?}",
            self.conn
        );
        assert!(
            self.conn.pending_output() <= MAX_PENDING,
            "pending output past its bound: {:?}",
            self.conn
        );
    }
}

/// Where the check of the output stream is.
#[derive(Default)]
enum Expect {
    /// At a response head.
    #[default]
    Head,
    /// In a body of `len` bytes, `at` of them seen: what it must equal,
    /// when known.
    Body {
        content: Option<Vec<u8>>,
        len: usize,
        at: usize,
    },
    /// A `Connection: close` response is complete: nothing may follow.
    End,
}

/// Checks the output stream as it arrives.
#[derive(Default)]
struct Responses {
    expect: Expect,
    /// Bytes received and not checked yet.
    unparsed: Vec<u8>,
    /// The end of the previous output, for canaries split across reads.
    seen_tail: Vec<u8>,
    /// The response being read said `Connection: close`.
    closing: bool,
}

impl Responses {
    fn feed(&mut self, output: &[u8], site: &Site) {
        if output.is_empty() {
            return;
        }
        let mut window = std::mem::take(&mut self.seen_tail);
        window.extend_from_slice(output);
        for canary in [OUTSIDE_CANARY, DOTFILE_CANARY] {
            assert!(
                !window.windows(canary.len()).any(|w| w == canary),
                "a canary from outside the served files was sent"
            );
        }
        let keep = window
            .len()
            .min(OUTSIDE_CANARY.len().max(DOTFILE_CANARY.len()));
        self.seen_tail = window[window.len() - keep..].to_vec();
        self.unparsed.extend_from_slice(output);
        self.advance(site, false);
    }

    /// Checks what can be checked; `at_end` once no more output will come.
    fn advance(&mut self, site: &Site, at_end: bool) {
        let mut used = 0;
        loop {
            let rest = &self.unparsed[used..];
            match &mut self.expect {
                Expect::End => {
                    assert!(rest.is_empty(), "output after a Connection: close response");
                    break;
                }
                Expect::Body { content, len, at } => {
                    // A HEAD answer has no body: the next response, or the
                    // end, follows its head at once.
                    if *at == 0
                        && *len > 0
                        && (rest.starts_with(b"HTTP/1.1 ") || (rest.is_empty() && at_end))
                    {
                        self.expect = self.after_response();
                        continue;
                    }
                    if *at == 0 && *len > 0 && rest.len() < 9 && b"HTTP/1.1 ".starts_with(rest) {
                        break; // maybe the next head: wait for more
                    }
                    let n = (*len - *at).min(rest.len());
                    if let Some(content) = content {
                        assert_eq!(&rest[..n], &content[*at..*at + n], "a body is not its file");
                    }
                    *at += n;
                    used += n;
                    if *at < *len {
                        break;
                    }
                    self.expect = self.after_response();
                }
                Expect::Head => {
                    if rest.is_empty() {
                        break;
                    }
                    let prefix = &rest[..rest.len().min(9)];
                    assert!(
                        b"HTTP/1.1 ".starts_with(prefix),
                        "a response does not start with HTTP/1.1: {:?}",
                        String::from_utf8_lossy(&rest[..rest.len().min(64)])
                    );
                    let Some(head_len) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
                        assert!(
                            rest.len() <= MAX_RESPONSE_HEAD,
                            "a response head never ends"
                        );
                        break;
                    };
                    let head_len = head_len + 4;
                    let (expect, closing) = check_head(&rest[..head_len], site);
                    used += head_len;
                    self.closing = closing;
                    self.expect = expect;
                    if matches!(self.expect, Expect::Head) {
                        // No body (100, 304, or a Content-Length of 0).
                        self.expect = self.after_response();
                    }
                }
            }
        }
        self.unparsed.drain(..used);
    }

    fn after_response(&mut self) -> Expect {
        if std::mem::take(&mut self.closing) {
            Expect::End
        } else {
            Expect::Head
        }
    }

    /// No more output: what is left must be complete, unless the
    /// connection was `cut` (reset, closed for an error, or never
    /// finished).
    fn finish(&mut self, cut: bool, site: &Site) {
        self.advance(site, true);
        if cut {
            return;
        }
        assert!(
            matches!(self.expect, Expect::Head | Expect::End) && self.unparsed.is_empty(),
            "the output ends inside a response"
        );
    }
}

/// Checks a response head; returns what its body must be, and whether the
/// connection closes after it.
fn check_head(head: &[u8], site: &Site) -> (Expect, bool) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let parsed = response.parse(head);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(n)) if n == head.len()),
        "a response head does not parse: {parsed:?} {:?}",
        String::from_utf8_lossy(head)
    );
    assert_eq!(response.version, Some(1));
    let code = response.code.unwrap();
    const KNOWN: [u16; 18] = [
        100, 200, 206, 301, 304, 400, 403, 404, 405, 408, 413, 414, 416, 417, 431, 500, 501, 505,
    ];
    assert!(KNOWN.contains(&code), "unknown status {code}");
    if code == 100 {
        assert!(response.headers.is_empty(), "a 100 with headers");
        return (Expect::Head, false);
    }
    let field = |name: &str| -> Vec<&[u8]> {
        response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    assert_eq!(field("server"), [b"evloop"], "Server");
    assert_eq!(field("date").len(), 1, "Date");
    let closing = field("connection").contains(&&b"close"[..]);
    let lengths = field("content-length");
    if code == 304 {
        assert!(lengths.is_empty(), "a 304 with a Content-Length");
        return (Expect::Head, closing);
    }
    assert_eq!(lengths.len(), 1, "not one Content-Length");
    let len: usize = std::str::from_utf8(lengths[0]).unwrap().parse().unwrap();
    let content_type = field("content-type");
    let content_type = content_type.first().copied().unwrap_or(b"");
    let content = match code {
        200 if content_type != b"text/html; charset=utf-8" => {
            let file = site.files.iter().find(|f| f.len() == len);
            Some(file.expect("a 200 whose length is no file's").clone())
        }
        206 => {
            let range = field("content-range");
            let range = std::str::from_utf8(range[0]).unwrap();
            let (span, total) = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('/'))
                .unwrap();
            let (start, end) = span.split_once('-').unwrap();
            let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
            let total: usize = total.parse().unwrap();
            assert_eq!(
                end - start + 1,
                len,
                "Content-Range and Content-Length differ"
            );
            let file = site.files.iter().find(|f| f.len() == total);
            let file = file.expect("a 206 of no file");
            Some(file[start..=end].to_vec())
        }
        200 => None, // a listing
        _ => {
            assert_eq!(content_type, b"text/plain; charset=utf-8");
            let text =
                String::from_utf8_lossy(&head[9..head.iter().position(|&b| b == b'\r').unwrap()]);
            Some(format!("{text}\n").into_bytes())
        }
    };
    if len == 0 {
        return (Expect::Head, closing);
    }
    (
        Expect::Body {
            content,
            len,
            at: 0,
        },
        closing,
    )
}
