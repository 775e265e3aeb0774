//! `evloop serve http` spoken to over raw sockets: pipelining, keep-alive
//! and its HTTP/1.0 variants, bodies, every refusal and limit, slow and
//! non-reading clients, and a table of attempts to escape the root.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Io, LIMIT, ServerProcess, per_driver};

// ---- a document root and a raw client -------------------------------------------

/// A temporary directory with a document root inside it (`www/`) and, beside
/// the root, a file no request may reach.
struct Site {
    dir: PathBuf,
}

/// The content of the file outside the root.
const CANARY: &[u8] = b"CANARY-outside-the-root-0xdeadbeef";

impl Site {
    fn new(name: &str) -> Site {
        // Unique per call: the drivers' variants of a test run at the same
        // time in this process.
        static SITES: AtomicUsize = AtomicUsize::new(0);
        let n = SITES.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("evloop-http-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("www");
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(dir.join("secret.txt"), CANARY).unwrap();
        fs::write(root.join("hello.txt"), b"Hello, World!").unwrap();
        fs::write(root.join("index.html"), b"<h1>home</h1>\n").unwrap();
        fs::write(root.join("sub/a.txt"), b"file a\n").unwrap();
        fs::write(root.join("sub/deeper/b.txt"), b"file b\n").unwrap();
        fs::write(root.join(".env"), b"PASSWORD=1\n").unwrap();
        fs::write(root.join("empty/<script>&.txt"), b"x").unwrap();
        fs::write(root.join("64k.bin"), pattern(64 * 1024)).unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("out-link")).unwrap();
        std::os::unix::fs::symlink("/", root.join("slash-link")).unwrap();
        std::os::unix::fs::symlink("hello.txt", root.join("in-link")).unwrap();
        Site { dir }
    }

    fn root(&self) -> String {
        self.dir.join("www").to_str().unwrap().to_owned()
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.join("www").join(relative)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Bytes that differ at every offset mod 251, so a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A parsed response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client on one connection that reads responses framed by their
/// `Content-Length` (none for 1xx, 304 and answers to HEAD).
struct Client {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buffered: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one response; `head_only` for an answer to HEAD.
    #[track_caller]
    fn response(&mut self, head_only: bool) -> Response {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = parsed
                .parse(&self.buffered)
                .expect("a well-formed response")
            {
                let status = parsed.code.unwrap();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let length = headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
                let length = if head_only || status == 304 || status < 200 {
                    0
                } else {
                    length
                };
                self.buffered.drain(..n);
                while self.buffered.len() < length {
                    self.fill();
                }
                let body = self.buffered.drain(..length).collect();
                return Response {
                    status,
                    headers,
                    body,
                };
            }
            self.fill();
        }
    }

    #[track_caller]
    fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = read_some(&mut self.stream, &mut chunk).expect("read a response");
        assert!(
            n > 0,
            "the server closed mid-response; had {:?}",
            String::from_utf8_lossy(&self.buffered)
        );
        self.buffered.extend_from_slice(&chunk[..n]);
    }

    /// Waits for the server to close: true for a FIN after everything read,
    /// false for a reset.
    #[track_caller]
    fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match read_some(&mut self.stream, &mut chunk) {
            Ok(0) => self.buffered.is_empty(),
            Ok(n) => panic!(
                "more bytes after the last response: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("waiting for the close: {e}"),
        }
    }

    /// One GET on this connection, answered 200.
    #[track_caller]
    fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response(false)
    }
}

/// One `read`, again if a signal interrupted it: with a read timeout set
/// (`SO_RCVTIMEO`) the kernel never restarts the call by itself, and the
/// test process gets signals (its servers exit).
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sends `request` on a new connection and returns the response.
#[track_caller]
fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut client = Client::connect(addr);
    client.send(request);
    client.response(request.starts_with(b"HEAD"))
}

fn serve(io: Io, site: &Site, extra: &[&str]) -> ServerProcess {
    let root = site.root();
    let mut args = vec!["http", "--threads", "1", "--root", &root];
    args.extend_from_slice(extra);
    ServerProcess::start(io, &args)
}

// ---- keep-alive and pipelining ------------------------------------------------------

per_driver!(pipelined_requests_are_answered_in_order);
/// Sixteen requests in one write, a streamed file among them and a HEAD:
/// every answer, in order, on the same connection.
fn pipelined_requests_are_answered_in_order(io: Io) {
    let site = Site::new("pipeline");
    fs::write(site.path("big.bin"), pattern(1_000_003)).unwrap();
    let server = serve(io, &site, &[]);
    let files = [
        "hello.txt",
        "sub/a.txt",
        "big.bin",
        "sub/deeper/b.txt",
        "64k.bin",
        "hello.txt",
    ];
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..16 {
        let file = files[i % files.len()];
        let method = if i == 7 { "HEAD" } else { "GET" };
        batch.extend_from_slice(
            format!("{method} /{file} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
        );
        expected.push((method == "HEAD", fs::read(site.path(file)).unwrap()));
    }
    let mut client = Client::connect(server.addr);
    client.send(&batch);
    for (i, (head_only, content)) in expected.iter().enumerate() {
        let response = client.response(*head_only);
        assert_eq!(response.status, 200, "response {i}");
        assert_eq!(
            response.header("content-length").unwrap(),
            content.len().to_string()
        );
        if *head_only {
            assert!(response.body.is_empty());
        } else {
            assert!(response.body == *content, "response {i}: wrong body");
        }
    }
    // Still open: one more.
    assert_eq!(client.get("/hello.txt").body, b"Hello, World!");
}

per_driver!(http_1_0_closes_unless_asked_to_keep_alive);
/// HTTP/1.0 closes after the answer by default; with `Connection:
/// keep-alive` it stays open and the answer says so; HTTP/1.1 with
/// `Connection: close` closes.
fn http_1_0_closes_unless_asked_to_keep_alive(io: Io) {
    let site = Site::new("http10");
    let server = serve(io, &site, &[]);
    let mut client = Client::connect(server.addr);
    client.send(b"GET /hello.txt HTTP/1.0\r\n\r\n");
    let response = client.response(false);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.closed(), "closed with a FIN");

    let mut client = Client::connect(server.addr);
    for _ in 0..3 {
        client.send(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = client.response(false);
        assert_eq!(response.header("connection"), Some("keep-alive"));
        assert_eq!(response.body, b"Hello, World!");
    }

    let mut client = Client::connect(server.addr);
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.response(false);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        client.closed(),
        "the request after Connection: close is not answered"
    );
}

per_driver!(request_bodies_are_discarded_and_other_methods_refused);
/// A POST is answered 405 with `Allow`, its body read and discarded so the
/// connection goes on; a chunked body on a GET too; `Expect:
/// 100-continue` gets its interim answer first.
fn request_bodies_are_discarded_and_other_methods_refused(io: Io) {
    let site = Site::new("bodies");
    let server = serve(io, &site, &[]);
    let mut client = Client::connect(server.addr);
    client.send(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello=world");
    let response = client.response(false);
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(client.response(false).body, b"Hello, World!");
    client.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(client.response(false).status, 100);
    assert_eq!(client.response(false).status, 200);
    client.send(b"body");
    assert_eq!(client.get("/sub/a.txt").body, b"file a\n");
    for target in [
        "http://example.com/sub/a.txt",
        "HTTP://example.com:80/sub/a.txt?x=1",
    ] {
        assert_eq!(client.get(target).body, b"file a\n", "{target}");
    }
}

// ---- refusals and limits --------------------------------------------------------------

per_driver!(bad_requests_get_a_status_and_a_close);
/// Every malformed or over-limit request: its status, `Connection: close`,
/// and the close.
fn bad_requests_get_a_status_and_a_close(io: Io) {
    let site = Site::new("refusals");
    let server = serve(io, &site, &["--max-body", "1KiB"]);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-H: 1\r\n".repeat(64)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no Host in 1.1", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "two Hosts",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space in header name",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/2.0",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
            505,
        ),
        (
            "HTTP/1.2",
            b"GET / HTTP/1.2\r\nHost: x\r\n\r\n".to_vec(),
            505,
        ),
        ("target over 8 KiB", long_target.into_bytes(), 414),
        ("head over 8 KiB", long_header.into_bytes(), 431),
        ("65 headers", many_headers.into_bytes(), 431),
        (
            "length and chunked",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "two lengths",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n".to_vec(),
            400,
        ),
        (
            "negative length",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "gzip, chunked",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            501,
        ),
        (
            "chunked in 1.0",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            400,
        ),
        (
            "body over the limit",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n".to_vec(),
            413,
        ),
        (
            "unknown expectation",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n".to_vec(),
            417,
        ),
    ];
    for (what, request, status) in cases {
        let mut client = Client::connect(server.addr);
        client.send(&request);
        let response = client.response(false);
        assert_eq!(response.status, status, "{what}");
        assert_eq!(response.header("connection"), Some("close"), "{what}");
        assert!(client.closed(), "{what}: a FIN after the answer");
    }
}

per_driver!(a_slow_head_gets_408_counted_from_its_first_byte);
/// Slowloris: a byte every 100 ms does not keep a request alive past the
/// header timeout, which runs from the request's first byte.
fn a_slow_head_gets_408_counted_from_its_first_byte(io: Io) {
    let site = Site::new("slowloris");
    let server = serve(io, &site, &["--header-timeout", "1s"]);
    let mut client = Client::connect(server.addr);
    // A whole request first: the timeout is the next request's, not the
    // connection's.
    assert_eq!(client.get("/hello.txt").status, 200);
    client.stream.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for &byte in b"GET /hello.txt HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle() {
        if client.stream.write_all(&[byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut chunk = [0u8; 1024];
        match read_some(&mut client.stream, &mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        assert!(started.elapsed() < LIMIT, "no 408 in {LIMIT:?}");
    }
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "408 after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "408 only after {elapsed:?}: the timeout was reset by the bytes"
    );
}

per_driver!(an_idle_keep_alive_connection_is_closed);
/// A connection that sends no next request is closed after the keep-alive
/// timeout, quietly (no 408: no request had begun).
fn an_idle_keep_alive_connection_is_closed(io: Io) {
    let site = Site::new("keepalive");
    let server = serve(io, &site, &["--keepalive-timeout", "300ms"]);
    let mut client = Client::connect(server.addr);
    assert_eq!(client.get("/hello.txt").status, 200);
    let started = Instant::now();
    assert!(client.closed(), "closed with a FIN");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed after {elapsed:?}"
    );
}

per_driver!(a_pipelining_client_that_never_reads_is_held_by_backpressure);
/// A client that pipelines a thousand requests for a 64 KiB file and reads
/// nothing: the server stops reading (its requests wait in the kernel) and
/// holds a bounded amount; once the client reads, every answer arrives.
fn a_pipelining_client_that_never_reads_is_held_by_backpressure(io: Io) {
    const REQUESTS: usize = 1000;
    let site = Site::new("nonreader");
    let server = serve(io, &site, &[]);
    let before = rss_kib(server.pid());
    let mut client = Client::connect(server.addr);
    client
        .stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let request = b"GET /64k.bin HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut sent = 0;
    while sent < REQUESTS {
        match client.stream.write(request) {
            Ok(n) => assert_eq!(n, request.len(), "whole requests only, for the count"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
        sent += 1;
    }
    // 1,000 answers are 64 MiB: the socket buffers cannot hold that, so
    // the server's reading must have stopped.
    let peak = rss_kib(server.pid());
    assert!(
        peak < before + 32 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    client.stream.set_write_timeout(None).unwrap();
    let rest = REQUESTS - sent;
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..rest {
                stream.write_all(request).unwrap();
            }
        })
    };
    let content = fs::read(site.path("64k.bin")).unwrap();
    for i in 0..REQUESTS {
        let response = client.response(false);
        assert!(
            response.status == 200 && response.body == content,
            "response {i}"
        );
    }
    writer.join().unwrap();
}

per_driver!(slow_readers_of_a_large_file_keep_memory_flat);
/// A hundred clients download a 1 GiB file slowly: each holds at most a
/// chunk or two of it in the server, never the file.
fn slow_readers_of_a_large_file_keep_memory_flat(io: Io) {
    const CLIENTS: usize = 100;
    let site = Site::new("slowreaders");
    // Sparse: a gibibyte of zeros that costs no disk.
    fs::File::create(site.path("huge.bin"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let server = serve(io, &site, &[]);
    let before = rss_kib(server.pid());
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::connect(server.addr)).collect();
    for client in &mut clients {
        client.send(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let mut received = vec![0usize; CLIENTS];
    let mut chunk = vec![0u8; 16 * 1024];
    let mut peak = before;
    for _round in 0..20 {
        for (client, got) in clients.iter_mut().zip(&mut received) {
            let n = read_some(&mut client.stream, &mut chunk).unwrap();
            assert!(n > 0);
            *got += n;
        }
        peak = peak.max(rss_kib(server.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(received.iter().all(|&n| n > 0));
    // A chunk in flight and one being read per client, with room for the
    // allocator: far below what even one file would take.
    assert!(
        peak < before + 64 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
}

/// A process's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---- files -------------------------------------------------------------------------

per_driver!(files_ranges_and_conditional_requests);
/// 200 with validators, 304 for a current copy, 206 and 416 for ranges,
/// HEAD with the same headers and no body.
fn files_ranges_and_conditional_requests(io: Io) {
    let site = Site::new("files");
    let server = serve(io, &site, &[]);
    let mut client = Client::connect(server.addr);
    let full = client.get("/hello.txt");
    assert_eq!(full.status, 200);
    assert_eq!(full.header("content-type"), Some("text/plain"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let etag = full.header("etag").unwrap().to_owned();
    let modified = full.header("last-modified").unwrap().to_owned();
    let conditional = |header: &str, value: &str| {
        format!("GET /hello.txt HTTP/1.1\r\nHost: x\r\n{header}: {value}\r\n\r\n").into_bytes()
    };
    for (header, value, status) in [
        ("If-None-Match", etag.as_str(), 304),
        ("If-None-Match", "\"other\", W/\"x\"", 200),
        ("If-None-Match", "*", 304),
        ("If-Modified-Since", modified.as_str(), 304),
        ("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT", 200),
        ("Range", "bytes=7-11", 206),
        ("Range", "bytes=-6", 206),
        ("Range", "bytes=13-", 416),
        ("Range", "bytes=0-1,3-4", 200),
    ] {
        client.send(&conditional(header, value));
        let response = client.response(false);
        assert_eq!(response.status, status, "{header}: {value}");
        match status {
            304 => {
                assert!(response.body.is_empty());
                assert_eq!(response.header("etag"), Some(etag.as_str()));
            }
            206 => {
                let (want, range): (&[u8], _) = if value == "bytes=7-11" {
                    (b"World", "bytes 7-11/13")
                } else {
                    (b"World!", "bytes 7-12/13")
                };
                assert_eq!(response.body, want);
                assert_eq!(response.header("content-range"), Some(range));
            }
            416 => assert_eq!(response.header("content-range"), Some("bytes */13")),
            _ => assert_eq!(response.body, b"Hello, World!"),
        }
    }
    client.send(b"HEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = client.response(true);
    for name in ["content-length", "etag", "last-modified", "content-type"] {
        assert_eq!(head.header(name), full.header(name), "{name}");
    }
    // The stream after a HEAD is still framed: the next answer parses.
    assert_eq!(client.get("/sub/a.txt").body, b"file a\n");
}

per_driver!(directories_indexes_and_listings);
/// A directory redirects to its slash form, serves its `index.html`, and
/// is listed (escaped) only with `--list`.
fn directories_indexes_and_listings(io: Io) {
    let site = Site::new("dirs");
    let server = serve(io, &site, &[]);
    let mut client = Client::connect(server.addr);
    assert_eq!(client.get("/").body, b"<h1>home</h1>\n");
    let moved = client.get("/sub");
    assert_eq!(moved.status, 301);
    assert_eq!(moved.header("location"), Some("/sub/"));
    assert_eq!(client.get("/sub/").status, 403, "no index, no listing");
    assert_eq!(client.get("/hello.txt/").status, 404);
    drop(server);

    let listing = serve(io, &site, &["--list"]);
    let mut client = Client::connect(listing.addr);
    let page = String::from_utf8(client.get("/empty/").body).unwrap();
    assert!(
        page.contains("<a href=\"%3Cscript%3E%26.txt\">&lt;script&gt;&amp;.txt</a>"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    let page = String::from_utf8(client.get("/").body).unwrap();
    assert!(
        page.contains("<h1>home</h1>"),
        "index.html wins over the listing"
    );
    let page = String::from_utf8(client.get("/sub/").body).unwrap();
    assert!(
        page.contains("href=\"deeper/\"") && page.contains("href=\"a.txt\""),
        "{page}"
    );
    assert!(page.contains("href=\"../\""), "{page}");
}

per_driver!(no_request_reaches_outside_the_root);
/// More than thirty ways to ask for a file outside the root (or a hidden
/// one): each is refused with 400, 403 or 404 and none returns a byte of
/// the file beside the root.
fn no_request_reaches_outside_the_root(io: Io) {
    let site = Site::new("traversal");
    let server = serve(io, &site, &[]);
    let attempts = [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/sub/../../secret.txt",
        "/sub/deeper/../../../secret.txt",
        "/./../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e./secret.txt",
        "/.%2e/secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/sub\\..\\..\\secret.txt",
        "/%5c..%5c..%5csecret.txt",
        "/secret.txt%00.html",
        "/%00",
        "/hello.txt%00",
        "//../secret.txt",
        "/%2f%2e%2e%2fsecret.txt",
        "http://x/../secret.txt",
        "http://x/%2e%2e/secret.txt",
        "http:///../secret.txt",
        "/out-link",
        "/slash-link/etc/passwd",
        "/slash-link/",
        "/.env",
        "/%2eenv",
        "/sub/../.env",
        "/.%2e/.%2e/secret.txt",
        "/..;/secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/..%c0%afsecret.txt",
        "*",
        "secret.txt",
        "../secret.txt",
    ];
    assert!(attempts.len() >= 30);
    for target in attempts {
        // Closed after the answer, whatever it is: read to the end.
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut client = Client::connect(server.addr);
        client.send(request.as_bytes());
        let mut everything = Vec::new();
        let _ = client.stream.read_to_end(&mut everything);
        let text = String::from_utf8_lossy(&everything);
        assert!(
            !contains(&everything, CANARY),
            "{target} leaked the file outside the root:\n{text}"
        );
        assert!(!text.contains("root:"), "{target} leaked /etc/passwd");
        let status = text.get(9..12).unwrap_or("");
        assert!(["400", "403", "404"].contains(&status), "{target}: {text}");
    }
    // The same names the right way still work: symlinks inside the root
    // are followed.
    assert_eq!(
        exchange(server.addr, b"GET /in-link HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"Hello, World!"
    );
    drop(server);

    let trusting = serve(io, &site, &["--follow-symlinks", "--dotfiles"]);
    assert_eq!(
        exchange(trusting.addr, b"GET /out-link HTTP/1.1\r\nHost: x\r\n\r\n").body,
        CANARY
    );
    assert_eq!(
        exchange(trusting.addr, b"GET /.env HTTP/1.1\r\nHost: x\r\n\r\n").body,
        b"PASSWORD=1\n"
    );
    // `..` is still never a way out.
    let escaped = exchange(
        trusting.addr,
        b"GET /../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(escaped.status, 400);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

per_driver!(the_access_log_has_a_combined_line_per_request);
/// `--access-log FILE`: one Combined Log Format line per answer, with what
/// the client sent escaped.
fn the_access_log_has_a_combined_line_per_request(io: Io) {
    let site = Site::new("accesslog");
    let log = site.dir.join("access.log");
    let server = serve(io, &site, &["--access-log", log.to_str().unwrap()]);
    let mut client = Client::connect(server.addr);
    client.send(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nReferer: http://a/\"q\r\nUser-Agent: test/1.0\r\n\r\n");
    assert_eq!(client.response(false).status, 200);
    assert_eq!(client.get("/missing").status, 404);
    drop(client);
    let lines = wait_for_lines(&log, 2);
    let pattern = "127.0.0.1 - - [";
    assert!(lines[0].starts_with(pattern), "{}", lines[0]);
    assert!(
        lines[0].ends_with("] \"GET /hello.txt HTTP/1.1\" 200 13 \"http://a/\\x22q\" \"test/1.0\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with("] \"GET /missing HTTP/1.1\" 404 14 \"-\" \"-\""),
        "{}",
        lines[1]
    );
}

/// Waits for `path` to hold at least `n` lines (the log is written by
/// its own thread, every 100 ms).
fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{} lines in {}: {text}",
            lines.len(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

per_driver!(without_a_root_a_page_says_what_runs);
/// No `--root`: `/` describes the server, everything else is 404.
fn without_a_root_a_page_says_what_runs(io: Io) {
    let server = ServerProcess::start(io, &["http", "--threads", "2"]);
    let page = exchange(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = String::from_utf8(page.body).unwrap();
    let driver = if io == Io::Uring {
        "io_uring"
    } else {
        evloop::poll::BACKEND
    };
    assert!(text.contains(driver), "{text}");
    assert!(text.contains("<th>loops</th><td>2</td>"), "{text}");
    assert!(
        text.contains("<th>open connections</th><td>1</td>"),
        "{text}"
    );
    assert_eq!(
        exchange(server.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").status,
        404
    );
}

#[test]
fn http_options_belong_to_the_http_service() {
    let (status, stderr, _) = common::run_to_exit(&["serve", "echo", "--root", "/tmp"]);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("--root is an option of the http service"),
        "{stderr}"
    );
    let (status, stderr, _) =
        common::run_to_exit(&["serve", "http", "--root", "/nonexistent/evloop"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("/nonexistent/evloop"), "{stderr}");
}

per_driver!(a_stalled_access_log_costs_lines_not_serving);
/// The access log goes to a FIFO nobody reads: once the pipe and the
/// log's buffer are full, lines are dropped (and counted in the server's
/// log), and every request is still answered at once.
fn a_stalled_access_log_costs_lines_not_serving(io: Io) {
    const REQUESTS: usize = 4000;
    let site = Site::new("stalledlog");
    let fifo = site.dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    // Opened for reading first (without waiting for a writer) so that the
    // server's open for writing does not block; then never read.
    let reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nonblock())
        .open(&fifo)
        .unwrap();
    let mut server = serve(io, &site, &["--access-log", fifo.to_str().unwrap()]);
    // Lines of about 1 KiB: 4 MiB of log, past the pipe (64 KiB) and the
    // buffer (1 MiB).
    let agent = "a".repeat(1000);
    let request = format!("GET /hello.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: {agent}\r\n\r\n");
    let mut client = Client::connect(server.addr);
    let started = Instant::now();
    for i in 0..REQUESTS {
        client.send(request.as_bytes());
        let response = client.response(false);
        assert_eq!(response.status, 200, "request {i}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "{REQUESTS} requests took {elapsed:?}"
    );
    // Reading the log again lets its writer go on: it says what it lost.
    let draining = std::thread::spawn(move || {
        let mut reader = reader;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => return total, // the server closed it
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    server.wait_for_log("the dropped lines counted", |log| {
        log.iter()
            .any(|line| line.contains("access log:") && line.contains("lines dropped"))
    });
    drop(client);
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let logged = draining.join().unwrap();
    assert!(
        logged < REQUESTS * agent.len(),
        "every line was written: {logged} bytes"
    );
}

/// `O_NONBLOCK`, for opening a FIFO's read end without a writer.
fn libc_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}
