//! `evloop serve http` met by real clients: curl (keep-alive across URLs,
//! HEAD, ranges, conditional requests, a large download, the built-in page)
//! and headless Chromium (a page with a stylesheet, an image and a script).
//! curl must be installed: its tests fail, not skip, without it. Chromium's
//! test skips, saying so, where `chromium` is not installed, unless
//! `EVLOOP_REQUIRE_BROWSER` is set (CI sets it): then it fails.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Io, LIMIT, ServerProcess, installed, per_driver, require};

/// The longest Chromium may take to load a page and print its DOM.
const BROWSER_LIMIT: Duration = Duration::from_secs(60);

/// The server's chunk: files longer than this are streamed a chunk at a
/// time, so the tests use some that are.
const CHUNK: usize = 64 * 1024;

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// Unique to this process, `test` and the driver (the two drivers'
    /// tests run at once).
    fn new(test: &str, io: Io) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "evloop-hc-{}-{test}-{}",
            std::process::id(),
            io.name()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to the file `name` (and its directories).
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    /// `self` as an argument.
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `n` bytes that look random (xorshift64*, from `seed`): no compression or
/// pattern can make a wrong byte look right.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(n + 8);
    while bytes.len() < n {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(n);
    bytes
}

/// Starts `evloop serve http --root ROOT ARGS` on `io`.
#[track_caller]
fn serve(io: Io, root: &TempDir, args: &[&str]) -> ServerProcess {
    let mut all = vec!["http", "--root", root.arg()];
    all.extend_from_slice(args);
    ServerProcess::start(io, &all)
}

/// Stops the server with SIGTERM: it must exit cleanly once its clients
/// have gone.
#[track_caller]
fn stop(mut server: ServerProcess) {
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.log_text());
}

// ---- running clients -----------------------------------------------------------

/// Runs `command` in a process group of its own with its output captured,
/// then kills whatever it left running in that group (Chromium's helpers);
/// kills the whole group, and fails, if it outlives `limit`.
#[track_caller]
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::scope(|s| {
        let out = s.spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        let err = s.spawn(move || {
            let mut bytes = Vec::new();
            let _ = stderr.read_to_end(&mut bytes);
            bytes
        });
        let started = Instant::now();
        // Waits without reaping: until it is reaped, the child's id names
        // its group and no other.
        let exited = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        let finished = loop {
            if rustix::process::waitid(WaitId::Pid(pid), exited)
                .expect("waitid")
                .is_some()
            {
                break true;
            }
            if started.elapsed() > limit {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Also closes the pipes of helpers that outlived the command.
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let status = child.wait().unwrap();
        let output = Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        };
        assert!(
            finished,
            "{command:?} did not finish within {limit:?}; its standard error:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    })
}

/// A response head as curl saved it (`--dump-header`).
#[derive(Debug)]
struct Head {
    status: u16,
    fields: Vec<(String, String)>,
}

impl Head {
    /// The last head in `text` (after redirects curl followed).
    #[track_caller]
    fn parse(text: &str) -> Head {
        let last = text
            .rsplit("\r\n\r\n")
            .find(|head| !head.is_empty())
            .unwrap_or_else(|| panic!("no response head in {text:?}"));
        let mut lines = last.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let fields = lines
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("header line {line:?}"));
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Head { status, fields }
    }

    /// The value of the field `name`, if it came once; fails if twice.
    #[track_caller]
    fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        let mut values = self.fields.iter().filter(|(n, _)| *n == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "{name} twice in {self:?}");
        value
    }

    /// The value of the field `name`, which must be there.
    #[track_caller]
    fn field(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }
}

/// What curl got for one request.
#[derive(Debug)]
struct Fetched {
    head: Head,
    /// The body as curl saved it (empty if it saved none), in a scratch
    /// file or where the request's `-o` said.
    body: Vec<u8>,
    /// Body bytes curl received (`%{size_download}`).
    downloaded: u64,
    /// Body bytes curl sent (`%{size_upload}`).
    uploaded: u64,
    /// New connections this request opened (`%{num_connects}`).
    connects: u32,
    /// The client's port (`%{local_port}`): the same for requests that
    /// shared a connection.
    local_port: u16,
}

/// A request for one curl run: its own options (e.g. `-r 2-5`) and a path.
type Request<'a> = (&'a [&'a str], &'a str);

/// Runs ONE curl for every request, in order, with `--next` between them,
/// so that they share its connection cache; returns what each got. Fails
/// the test if curl fails.
#[track_caller]
fn curl(server: &ServerProcess, scratch: &TempDir, requests: &[Request<'_>]) -> Vec<Fetched> {
    let max_time = LIMIT.as_secs().to_string();
    let mut command = Command::new("curl");
    let mut saved = Vec::new();
    for (n, (options, path)) in requests.iter().enumerate() {
        let head = scratch.path(&format!("head{n}"));
        let _ = fs::remove_file(&head);
        if n > 0 {
            // Options after it are the next request's: all of them again.
            command.arg("--next");
        }
        command
            .args(["--silent", "--show-error", "--max-time", &max_time])
            .args(*options);
        // Where the body goes: where the options say, else a scratch file.
        let body = match options.iter().position(|&o| o == "-o" || o == "--output") {
            Some(at) => PathBuf::from(options[at + 1]),
            None => {
                let body = scratch.path(&format!("body{n}"));
                let _ = fs::remove_file(&body);
                command.arg("--output").arg(&body);
                body
            }
        };
        command
            .arg("--dump-header")
            .arg(&head)
            .args([
                "--write-out",
                "%{num_connects} %{local_port} %{size_download} %{size_upload}\\n",
            ])
            .arg(format!("http://{}{path}", server.addr));
        saved.push((head, body));
    }
    let output = run_bounded(&mut command, LIMIT);
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let written = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), requests.len(), "{written:?}");
    lines
        .iter()
        .zip(saved)
        .map(|(line, (head, body))| {
            let numbers: Vec<u64> = line.split(' ').map(|n| n.parse().unwrap()).collect();
            Fetched {
                head: Head::parse(&fs::read_to_string(head).unwrap()),
                body: fs::read(body).unwrap_or_default(),
                downloaded: numbers[2],
                uploaded: numbers[3],
                connects: numbers[0] as u32,
                local_port: numbers[1] as u16,
            }
        })
        .collect()
}

/// [`curl`] with one request.
#[track_caller]
fn fetch(server: &ServerProcess, scratch: &TempDir, options: &[&str], path: &str) -> Fetched {
    curl(server, scratch, &[(options, path)]).pop().unwrap()
}

/// Fails unless `got` is `want` (without printing megabytes).
#[track_caller]
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

// ---- curl ----------------------------------------------------------------------

per_driver!(curl_fetches_several_urls_over_one_connection);
/// One curl fetching five URLs — a small file, a directory by its
/// redirect (followed), a file streamed in several chunks, a missing one,
/// the small one again — does it over one connection (one connect, one
/// local port), and every body is the file's bytes.
fn curl_fetches_several_urls_over_one_connection(io: Io) {
    require("curl");
    let root = TempDir::new("reuse-root", io);
    let scratch = TempDir::new("reuse", io);
    let small = b"hello, curl\n";
    let index = b"<!DOCTYPE html>\n<title>docs</title>\n<p>the docs</p>\n";
    let data = random_bytes(5 * CHUNK + 123, 1);
    root.write("hello.txt", small);
    root.write("docs/index.html", index);
    root.write("data.bin", &data);
    let server = serve(io, &root, &[]);
    let got = curl(
        &server,
        &scratch,
        &[
            (&[], "/hello.txt"),
            (&["--location"], "/docs"),
            (&[], "/data.bin"),
            (&[], "/missing.txt"),
            (&[], "/hello.txt"),
        ],
    );
    let statuses: Vec<u16> = got.iter().map(|f| f.head.status).collect();
    assert_eq!(statuses, [200, 200, 200, 404, 200]);
    let connects: Vec<u32> = got.iter().map(|f| f.connects).collect();
    assert_eq!(connects, [1, 0, 0, 0, 0], "one connection, reused");
    assert!(
        got.iter().all(|f| f.local_port == got[0].local_port),
        "one local port: {got:?}"
    );
    assert_bytes(&got[0].body, small, "/hello.txt");
    assert_bytes(&got[1].body, index, "/docs/ (index.html)");
    assert_bytes(&got[2].body, &data, "/data.bin");
    assert_eq!(
        got[3].head.field("content-type"),
        "text/plain; charset=utf-8"
    );
    assert_bytes(&got[4].body, small, "/hello.txt again");
    stop(server);
}

per_driver!(curl_head_gets_the_headers_of_get_and_no_body);
/// `curl --head` gets what GET gets — status, Content-Length,
/// Content-Type, ETag, Last-Modified, Accept-Ranges — without a body, for
/// a small file and one that GET streams; the requests after each HEAD on
/// the same connection get their own responses intact (a body sent after
/// a HEAD would be read as the next response).
fn curl_head_gets_the_headers_of_get_and_no_body(io: Io) {
    require("curl");
    let root = TempDir::new("head-root", io);
    let scratch = TempDir::new("head", io);
    let css = b"body { color: rgb(10, 20, 30); }\n";
    let big = random_bytes(3 * CHUNK + 5, 2);
    root.write("style.css", css);
    root.write("big.bin", &big);
    let server = serve(io, &root, &[]);
    let got = curl(
        &server,
        &scratch,
        &[
            (&["--head"], "/big.bin"),
            (&[], "/style.css"),
            (&["--head"], "/style.css"),
            (&[], "/big.bin"),
        ],
    );
    let connects: u32 = got.iter().map(|f| f.connects).sum();
    assert_eq!(connects, 1, "one connection: {got:?}");
    let (head_big, get_css, head_css, get_big) = (&got[0], &got[1], &got[2], &got[3]);
    assert_bytes(&get_css.body, css, "GET /style.css");
    assert_bytes(&get_big.body, &big, "GET /big.bin");
    for (head, get, len, kind) in [
        (head_big, get_big, big.len(), "application/octet-stream"),
        (head_css, get_css, css.len(), "text/css"),
    ] {
        assert_eq!(head.downloaded, 0, "HEAD has no body: {head:?}");
        assert_eq!(head.head.status, 200);
        assert_eq!(head.head.field("content-length"), len.to_string());
        assert_eq!(head.head.field("content-type"), kind);
        for name in [
            "content-length",
            "content-type",
            "etag",
            "last-modified",
            "accept-ranges",
        ] {
            assert_eq!(head.head.get(name), get.head.get(name), "{name}");
        }
    }
    stop(server);
}

per_driver!(curl_ranges_get_206_with_exact_bytes_and_416_past_the_end);
/// `curl -r`: a middle range, a suffix, an open end, and a range across
/// the server's chunks in a streamed file get 206 with exactly those bytes
/// and their Content-Range; a range past the end gets 416 with
/// `Content-Range: bytes */LEN`.
fn curl_ranges_get_206_with_exact_bytes_and_416_past_the_end(io: Io) {
    require("curl");
    let root = TempDir::new("range-root", io);
    let scratch = TempDir::new("range", io);
    let text = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let big = random_bytes(4 * CHUNK, 3);
    root.write("digits.txt", text);
    root.write("big.bin", &big);
    let server = serve(io, &root, &[]);
    for (range, start, end) in [("2-5", 2, 5), ("-3", 33, 35), ("30-", 30, 35)] {
        let got = fetch(&server, &scratch, &["--range", range], "/digits.txt");
        assert_eq!(got.head.status, 206, "{range}: {got:?}");
        assert_eq!(
            got.head.field("content-range"),
            format!("bytes {start}-{end}/36"),
            "{range}"
        );
        assert_eq!(
            got.head.field("content-length"),
            (end - start + 1).to_string()
        );
        assert_bytes(&got.body, &text[start..=end], range);
    }
    let (start, end) = (CHUNK - 100, 3 * CHUNK + 100);
    let across = format!("{start}-{end}");
    let got = fetch(&server, &scratch, &["--range", &across], "/big.bin");
    assert_eq!(got.head.status, 206);
    assert_eq!(
        got.head.field("content-range"),
        format!("bytes {across}/{}", big.len())
    );
    assert_bytes(&got.body, &big[start..=end], &across);
    let got = fetch(&server, &scratch, &["--range", "36-40"], "/digits.txt");
    assert_eq!(got.head.status, 416, "{got:?}");
    assert_eq!(got.head.field("content-range"), "bytes */36");
    stop(server);
}

per_driver!(curl_resumes_a_partial_download);
/// `curl -C -` on a partial copy asks for the rest (`Range: bytes=N-`)
/// and gets 206 from there: the copy is then the whole file.
fn curl_resumes_a_partial_download(io: Io) {
    require("curl");
    let root = TempDir::new("resume-root", io);
    let scratch = TempDir::new("resume", io);
    let big = random_bytes(3 * CHUNK + 11, 5);
    root.write("big.bin", &big);
    let have = CHUNK + 7;
    let partial = scratch.write("partial.bin", &big[..have]);
    let server = serve(io, &root, &[]);
    let args = ["-C", "-", "-o", partial.to_str().unwrap()];
    let got = fetch(&server, &scratch, &args, "/big.bin");
    assert_eq!(got.head.status, 206, "{got:?}");
    assert_eq!(
        got.head.field("content-range"),
        format!("bytes {have}-{}/{}", big.len() - 1, big.len())
    );
    assert_eq!(got.downloaded, (big.len() - have) as u64);
    assert_bytes(&got.body, &big, "the resumed copy");
    stop(server);
}

per_driver!(curl_keeps_a_connection_only_while_both_sides_want_it);
/// HTTP/1.0 requests (`curl -0`) get `Connection: close` and a connection
/// each, unless they ask for keep-alive, which the answer then announces
/// and curl uses; HTTP/1.1 requests saying `Connection: close` get it
/// back and a connection each.
fn curl_keeps_a_connection_only_while_both_sides_want_it(io: Io) {
    require("curl");
    let root = TempDir::new("persist-root", io);
    let scratch = TempDir::new("persist", io);
    let text = b"kept or not\n";
    root.write("a.txt", text);
    let server = serve(io, &root, &[]);
    let keep_alive = "Connection: keep-alive";
    let close = "Connection: close";
    for (options, connection, connects) in [
        (&["-0"][..], "close", [1, 1]),
        (&["-0", "-H", keep_alive][..], "keep-alive", [1, 0]),
        (&["-H", close][..], "close", [1, 1]),
    ] {
        let got = curl(
            &server,
            &scratch,
            &[(options, "/a.txt"), (options, "/a.txt")],
        );
        for fetched in &got {
            assert_eq!(fetched.head.status, 200, "{options:?}");
            assert_eq!(
                fetched.head.get("connection"),
                Some(connection),
                "{options:?}"
            );
            assert_bytes(&fetched.body, text, "/a.txt");
        }
        let opened: Vec<u32> = got.iter().map(|f| f.connects).collect();
        assert_eq!(opened, connects, "{options:?}");
    }
    stop(server);
}

per_driver!(curl_post_gets_405_and_an_oversized_one_413_before_its_body);
/// A form POST gets 405 with `Allow: GET, HEAD`; its body is read and
/// discarded, so the GET after it on the same connection is answered. A
/// POST over `--max-body` that waits for `100 Continue` gets 413 at once,
/// before curl sends any of its body, and `Connection: close`.
fn curl_post_gets_405_and_an_oversized_one_413_before_its_body(io: Io) {
    require("curl");
    let root = TempDir::new("post-root", io);
    let scratch = TempDir::new("post", io);
    root.write("a.txt", b"posted to\n");
    let upload = scratch.write("upload.bin", &random_bytes(100_000, 6));
    let server = serve(io, &root, &["--max-body", "65536"]);
    let got = curl(
        &server,
        &scratch,
        &[(&["--data", "name=value"], "/a.txt"), (&[], "/a.txt")],
    );
    assert_eq!(got[0].head.status, 405, "{got:?}");
    assert_eq!(got[0].head.field("allow"), "GET, HEAD");
    assert_eq!(got[0].uploaded, 10);
    assert_eq!((got[1].head.status, got[1].connects), (200, 0), "{got:?}");
    let data = format!("@{}", upload.to_str().unwrap());
    let expect = [
        "--data-binary",
        &data,
        "-H",
        "Expect: 100-continue",
        // Never give up waiting for 100 and send anyway.
        "--expect100-timeout",
        "20",
    ];
    let got = fetch(&server, &scratch, &expect, "/a.txt");
    assert_eq!(got.head.status, 413, "{got:?}");
    assert_eq!(got.uploaded, 0, "no byte of the body sent");
    assert_eq!(got.head.field("connection"), "close");
    stop(server);
}

/// Sets the modification time of `path` to `seconds` after the epoch.
fn set_mtime(path: &Path, seconds: u64) {
    let file = fs::File::options().append(true).open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
        .unwrap();
}

/// The modification time of `path`, in seconds after the epoch.
fn mtime(path: &Path) -> u64 {
    let modified = fs::metadata(path).unwrap().modified().unwrap();
    modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

per_driver!(curl_conditional_requests_get_304_until_the_file_changes);
/// The validators work as curl uses them: `If-None-Match` with the ETag
/// (alone, or weak in a list) gets 304 and no body; `-z COPY` (a copy
/// saved with `--remote-time`, so `If-Modified-Since` its time) gets 304.
/// Once the file changes — same length, a later time — the old ETag and the
/// old copy get 200 with the new body, and a copy refreshed with `-z -R`
/// is current again.
fn curl_conditional_requests_get_304_until_the_file_changes(io: Io) {
    require("curl");
    let root = TempDir::new("cond-root", io);
    let scratch = TempDir::new("cond", io);
    // 2024-01-02T03:04:05Z, then an hour later.
    let (then, later) = (1_704_164_645, 1_704_164_645 + 3600);
    let note = root.write("note.txt", b"version 1 of the note\n");
    set_mtime(&note, then);
    let server = serve(io, &root, &[]);
    let copy = scratch.path("copy.txt");
    let copy_arg = copy.to_str().unwrap();

    let first = fetch(&server, &scratch, &[], "/note.txt");
    assert_eq!(first.head.status, 200);
    let etag = first.head.field("etag").to_owned();
    // `"<mtime hex>-<length hex>"`, as documented.
    assert_eq!(etag, format!("\"{then:x}-{:x}\"", 22));
    assert_eq!(
        first.head.field("last-modified"),
        "Tue, 02 Jan 2024 03:04:05 GMT"
    );
    // --remote-time: the copy gets the Last-Modified time.
    let saved = fetch(
        &server,
        &scratch,
        &["--remote-time", "-o", copy_arg],
        "/note.txt",
    );
    assert_eq!(saved.head.status, 200);
    assert_eq!(mtime(&copy), then);

    let weak_in_list = format!("If-None-Match: \"other\", W/{etag}");
    for header in [format!("If-None-Match: {etag}"), weak_in_list] {
        let got = fetch(&server, &scratch, &["-H", &header], "/note.txt");
        assert_eq!(got.head.status, 304, "{header}: {got:?}");
        assert_eq!(got.downloaded, 0, "{header}: no body");
        assert_eq!(got.head.field("etag"), etag);
        assert_eq!(got.head.get("content-length"), None);
    }
    let got = fetch(&server, &scratch, &["-z", copy_arg], "/note.txt");
    assert_eq!(got.head.status, 304, "-z copy: {got:?}");
    assert_eq!(got.downloaded, 0);
    let older = "Mon, 01 Jan 2024 00:00:00 GMT";
    let got = fetch(&server, &scratch, &["-z", older], "/note.txt");
    assert_eq!(got.head.status, 200, "modified since {older}");

    // The same length: only the time tells the versions apart.
    fs::write(&note, b"version 2 of the note\n").unwrap();
    set_mtime(&note, later);
    let got = fetch(
        &server,
        &scratch,
        &["-H", &format!("If-None-Match: {etag}")],
        "/note.txt",
    );
    assert_eq!(got.head.status, 200, "a changed file: {got:?}");
    assert_bytes(&got.body, b"version 2 of the note\n", "the new version");
    assert_eq!(got.head.field("etag"), format!("\"{later:x}-{:x}\"", 22));
    assert_eq!(
        got.head.field("last-modified"),
        "Tue, 02 Jan 2024 04:04:05 GMT"
    );
    let got = fetch(&server, &scratch, &["-z", copy_arg], "/note.txt");
    assert_eq!(got.head.status, 200, "-z an old copy: {got:?}");
    // Refresh the copy as a mirror would: only if newer, keeping its time.
    let args = ["-z", copy_arg, "--remote-time", "-o", copy_arg];
    assert_eq!(
        fetch(&server, &scratch, &args, "/note.txt").head.status,
        200
    );
    assert_bytes(
        &fs::read(&copy).unwrap(),
        b"version 2 of the note\n",
        "the copy",
    );
    assert_eq!(mtime(&copy), later);
    let got = fetch(&server, &scratch, &["-z", copy_arg], "/note.txt");
    assert_eq!(got.head.status, 304, "-z a current copy: {got:?}");
    stop(server);
}

/// The seconds since the epoch an HTTP date names, as `date` reads it.
#[track_caller]
fn seconds_of(http_date: &str) -> u64 {
    let out = Command::new("date")
        .args(["-u", "-d", http_date, "+%s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "date -d {http_date:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Now, in seconds since the epoch.
fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

per_driver!(issue_last_modified_in_the_future_is_replaced_by_the_date);
/// A file dated in the future (a clock set wrong, an archive unpacked with
/// its times) was shown as last modified then: later than the response's
/// Date, which RFC 9110 (8.8.2.1) forbids, and which caches must second-
/// guess. Its Last-Modified is now the Date; its ETag keeps the file's
/// own time, and revalidating by it still gets 304, while revalidating by
/// that date gets the file (its time is not known to be past).
fn issue_last_modified_in_the_future_is_replaced_by_the_date(io: Io) {
    require("curl");
    let root = TempDir::new("future-root", io);
    let scratch = TempDir::new("future", io);
    let text = b"from the future\n";
    let file = root.write("future.txt", text);
    let future = now_seconds() + 86_400;
    set_mtime(&file, future);
    let server = serve(io, &root, &[]);
    let got = fetch(&server, &scratch, &[], "/future.txt");
    assert_eq!(got.head.status, 200);
    let shown = seconds_of(got.head.field("last-modified"));
    let date = seconds_of(got.head.field("date"));
    assert!(shown <= date, "Last-Modified after the Date: {got:?}");
    assert!(date - shown <= 1, "Last-Modified is the Date: {got:?}");
    let etag = got.head.field("etag");
    assert_eq!(etag, format!("\"{future:x}-{:x}\"", text.len()));
    let by_tag = format!("If-None-Match: {etag}");
    assert_eq!(
        fetch(&server, &scratch, &["-H", &by_tag], "/future.txt")
            .head
            .status,
        304
    );
    let by_date = ["-z", got.head.field("last-modified")];
    assert_eq!(
        fetch(&server, &scratch, &by_date, "/future.txt")
            .head
            .status,
        200
    );
    stop(server);
}

per_driver!(curl_downloads_20_mib_byte_exact);
/// A 20 MiB file of random bytes comes down whole and exact (the server
/// streams it a chunk at a time, paced by curl).
fn curl_downloads_20_mib_byte_exact(io: Io) {
    require("curl");
    let root = TempDir::new("large-root", io);
    let scratch = TempDir::new("large", io);
    let data = random_bytes(20 << 20, 4);
    root.write("large.bin", &data);
    let server = serve(io, &root, &[]);
    let started = Instant::now();
    let got = fetch(&server, &scratch, &[], "/large.bin");
    eprintln!("20 MiB by curl in {:?}", started.elapsed());
    assert_eq!(got.head.status, 200);
    assert_eq!(got.head.field("content-length"), data.len().to_string());
    assert_eq!(got.downloaded, data.len() as u64);
    assert_bytes(&got.body, &data, "/large.bin");
    stop(server);
}

/// How many connections the built-in page says are open.
#[track_caller]
fn open_connections(page: &str) -> usize {
    let (_, rest) = page
        .split_once("<th>open connections</th><td>")
        .unwrap_or_else(|| panic!("no open connections in {page}"));
    rest.split('<').next().unwrap().parse().unwrap()
}

per_driver!(curl_gets_the_built_in_page_naming_driver_and_connections);
/// Without `--root`, / is a page naming the software and its version, the
/// I/O driver the server runs on, and the open connections: curl's own,
/// plus one more while another client holds one, and back once it has
/// gone; any other path is 404.
fn curl_gets_the_built_in_page_naming_driver_and_connections(io: Io) {
    require("curl");
    let scratch = TempDir::new("about", io);
    let server = ServerProcess::start(io, &["http"]);
    let page = |server: &ServerProcess| {
        let got = fetch(server, &scratch, &[], "/");
        assert_eq!(got.head.status, 200);
        assert_eq!(got.head.field("content-type"), "text/html; charset=utf-8");
        String::from_utf8(got.body).unwrap()
    };
    let first = page(&server);
    let driver = io.banner().replace("I/O driver: ", "");
    assert!(
        first.contains(&format!("<th>I/O driver</th><td>{driver}")),
        "{first}"
    );
    assert!(
        first.contains(&format!("evloop {}", env!("CARGO_PKG_VERSION"))),
        "{first}"
    );
    assert!(first.contains("<th>uptime</th>"), "{first}");
    assert_eq!(open_connections(&first), 1, "{first}");

    // Another client, holding its connection once answered.
    let mut held = TcpStream::connect(server.addr).unwrap();
    held.set_read_timeout(Some(LIMIT)).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.ends_with(b"</html>\n") {
        let n = held.read(&mut buffer).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
    }
    assert_eq!(open_connections(&page(&server)), 2);
    drop(held);
    let deadline = Instant::now() + LIMIT;
    while open_connections(&page(&server)) != 1 {
        assert!(
            Instant::now() < deadline,
            "the closed connection is still counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fetch(&server, &scratch, &[], "/else").head.status, 404);
    stop(server);
}

// ---- Chromium ------------------------------------------------------------------

/// A `width`×`height` PNG, every pixel `rgb`: 8-bit truecolour, its image
/// data in one stored (uncompressed) deflate block, so that no image or
/// compression crate is needed.
fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let mut row = vec![0]; // the row's filter: none
    for _ in 0..width {
        row.extend_from_slice(&rgb);
    }
    let pixels = row.repeat(height as usize);
    let len = u16::try_from(pixels.len()).expect("one stored block");
    // zlib: deflate with a 32 KiB window, no dictionary; one final stored
    // block (length, its complement); the Adler-32 of the data.
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend_from_slice(&len.to_le_bytes());
    zlib.extend_from_slice(&(!len).to_le_bytes());
    zlib.extend_from_slice(&pixels);
    zlib.extend_from_slice(&adler32(&pixels).to_be_bytes());
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    // Depth 8, truecolour, deflate, adaptive filtering, not interlaced.
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &header[..]), (b"IDAT", &zlib), (b"IEND", &[])] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    png
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Adler-32, as zlib streams end with it.
fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

/// The page: once everything has loaded, its script writes onto `<body>`
/// what the browser made of the image (size, bottom-right pixel) and of the
/// stylesheet (the body's computed background colour).
const INDEX: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>evloop http</title>
<link rel="stylesheet" href="style.css"></head>
<body><img id="logo" src="logo.png" alt="logo">
<script>
window.onload = function () {
  var img = document.getElementById("logo");
  var result = document.body.dataset;
  if (img.complete && img.naturalWidth > 0) {
    result.image = img.naturalWidth + "x" + img.naturalHeight;
    var canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    var context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    var p = context.getImageData(img.naturalWidth - 1, img.naturalHeight - 1, 1, 1).data;
    result.pixel = p[0] + "," + p[1] + "," + p[2];
  } else {
    result.image = "broken";
  }
  result.background = getComputedStyle(document.body).backgroundColor;
};
</script>
</body></html>
"#;

/// Whether Chromium is here to test with; where it is not, says the test
/// is skipped, or fails if `EVLOOP_REQUIRE_BROWSER` is set (CI sets it).
fn chromium_available() -> bool {
    if installed("chromium") {
        return true;
    }
    assert!(
        std::env::var_os("EVLOOP_REQUIRE_BROWSER").is_none(),
        "chromium is not installed (Debian: apt-get install chromium; .ci/run does)"
    );
    eprintln!("skipped: chromium is not installed (set EVLOOP_REQUIRE_BROWSER to fail instead)");
    false
}

/// Waits until the file at `path` satisfies `done`; returns its text.
#[track_caller]
fn wait_for_file(path: &Path, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {what} in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Loads `url` in headless Chromium with the profile in `profile`;
/// returns the DOM as it is once the page has loaded (and its `onload` has
/// run). Fails if Chromium fails or takes over [`BROWSER_LIMIT`].
#[track_caller]
fn chromium_dom(profile: &TempDir, url: &str) -> String {
    let output = run_bounded(
        Command::new("chromium").args([
            "--headless",
            // Running as root (CI, containers) needs it.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            &format!("--user-data-dir={}", profile.arg()),
            "--dump-dom",
            url,
        ]),
        BROWSER_LIMIT,
    );
    assert!(
        output.status.success(),
        "chromium: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Fails unless the [`INDEX`] page's script found the 3×2 image decoded
/// to its colour and the stylesheet applied.
#[track_caller]
fn assert_rendered(dom: &str, visit: &str) {
    for (what, want) in [
        ("the image, decoded", r#"data-image="3x2""#),
        ("its pixels", r#"data-pixel="200,100,50""#),
        (
            "the stylesheet, applied",
            r#"data-background="rgb(1, 2, 3)""#,
        ),
    ] {
        assert!(
            dom.contains(want),
            "{visit}: {what}: no {want} in the DOM:\n{dom}"
        );
    }
}

per_driver!(headless_chromium_renders_a_page_with_its_stylesheet_and_image);
/// Headless Chromium loads a page that links a stylesheet (longer than a
/// chunk, its rule at the end) and a 3×2 PNG: its DOM, dumped after the
/// load event, shows the image decoded at its size and colour and the
/// stylesheet applied, and the access log shows all three requested with
/// 200 and their full lengths. A second visit with the same profile
/// revalidates all three from its cache (304) and renders the same.
fn headless_chromium_renders_a_page_with_its_stylesheet_and_image(io: Io) {
    if !chromium_available() {
        return;
    }
    let root = TempDir::new("browser-root", io);
    let profile = TempDir::new("browser-profile", io);
    let logs = TempDir::new("browser-log", io);
    let mut style = String::from("/* padding, so that the rule comes in the second chunk */\n");
    while style.len() < CHUNK + 1000 {
        style.push_str("/* ................................................................ */\n");
    }
    style.push_str("body { background-color: rgb(1, 2, 3); }\n");
    let logo = png(3, 2, [200, 100, 50]);
    let tomorrow = now_seconds() + 86_400;
    for (name, bytes) in [
        ("index.html", INDEX.as_bytes()),
        ("style.css", style.as_bytes()),
        ("logo.png", &logo),
    ] {
        set_mtime(&root.write(name, bytes), tomorrow);
    }
    let access_log = logs.path("access.log");
    let server = serve(io, &root, &["--access-log", access_log.to_str().unwrap()]);
    let url = format!("http://{}/", server.addr);
    let requested = |status: u16, lengths: [usize; 3]| {
        [
            ("/", lengths[0]),
            ("/style.css", lengths[1]),
            ("/logo.png", lengths[2]),
        ]
        .map(|(path, len)| format!("\"GET {path} HTTP/1.1\" {status} {len} "))
    };

    assert_rendered(&chromium_dom(&profile, &url), "first visit");
    let fetched = requested(200, [INDEX.len(), style.len(), logo.len()]);
    let log = wait_for_file(&access_log, "the page's three requests", |text| {
        fetched.iter().all(|line| text.contains(line.as_str()))
    });
    assert!(log.contains("HeadlessChrome"), "{log}");

    // Without Cache-Control or Expires, Chromium treats a response as fresh
    // for a tenth of its age by Last-Modified; the files are dated in the
    // future, so that age is nil (their Last-Modified is the Date) and the
    // second visit must ask again, however long the first one took.
    assert_rendered(
        &chromium_dom(&profile, &url),
        "second visit, from the cache",
    );
    let revalidated = requested(304, [0, 0, 0]);
    wait_for_file(&access_log, "the three revalidations", |text| {
        revalidated.iter().all(|line| text.contains(line.as_str()))
    });
    stop(server);
}
