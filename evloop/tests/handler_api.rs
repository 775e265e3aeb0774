//! The handler contract: leftovers stay until consumed, the input limit,
//! closing after flushing, and the last word on end of input — on each I/O
//! driver.

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use evloop::{Action, CloseReason, Context, Driver, Handler, Input};
use support::{LIMIT, connect, per_driver, start, variant};

per_driver!(
    unconsumed_input_waits_for_the_rest_of_the_line,
    end_of_input_hands_the_leftovers_to_the_handler,
    close_action_flushes_the_answer_then_closes,
    lingering_ends_when_the_client_never_closes,
    a_line_longer_than_the_input_limit_closes_only_that_connection,
    close_with_unread_input_still_ends_in_eof_not_reset,
    lingering_ends_after_a_flood_when_the_client_never_closes,
    a_handler_deadline_is_not_moved_by_a_slow_trickle,
    a_handler_pauses_its_input_and_resumes_it,
    connections_have_distinct_ids_and_abort_resets,
    the_context_names_both_ends_and_a_unix_peers_credentials,
    a_file_is_sent_after_the_output_before_it,
    output_written_behind_a_file_being_sent_ends_the_connection,
    the_end_of_input_seen_while_paused_is_read_on_resuming,
);

/// Answers each complete line upper-cased; a line `quit` gets `bye` and a
/// close. Whatever is left when the client half-closes is answered too.
#[derive(Clone)]
struct Lines;

impl Handler for Lines {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let output = cx.output();
        while let Some(end) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = &input.bytes()[..=end];
            if line == b"quit\n" {
                output.extend_from_slice(b"bye\n");
                input.consume(end + 1);
                return Action::Close;
            }
            output.extend(line.iter().map(u8::to_ascii_uppercase));
            input.consume(end + 1);
        }
        Action::Continue
    }

    fn on_read_closed(&mut self, unconsumed: &[u8], cx: &mut Context<'_>) {
        let output = cx.output();
        output.extend(unconsumed.iter().map(u8::to_ascii_uppercase));
    }
}

#[track_caller]
fn read_to_end(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("EOF, not a reset");
    got
}

fn unconsumed_input_waits_for_the_rest_of_the_line(driver: Driver) {
    let server = start(Lines, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    for part in [&b"hel"[..], b"lo\nwor", b"ld\n"] {
        stream.write_all(part).unwrap();
        stream.flush().unwrap();
    }
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut stream), b"HELLO\nWORLD\n");
}

fn end_of_input_hands_the_leftovers_to_the_handler(driver: Driver) {
    let server = start(Lines, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    stream.write_all(b"one\ntwo-without-newline").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut stream), b"ONE\nTWO-WITHOUT-NEWLINE");
    let total = server.stop().total();
    assert_eq!(total.closed(CloseReason::Peer), 1);
}

fn close_action_flushes_the_answer_then_closes(driver: Driver) {
    let server = start(Lines, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    stream.write_all(b"a\nquit\n").unwrap();
    assert_eq!(read_to_end(&mut stream), b"A\nbye\n");
    // The server lingers until the client closes too (or 5 s pass).
    drop(stream);
    let total = server.stop().total();
    assert_eq!(total.closed(CloseReason::Service), 1);
}

/// A client that never closes after the server's FIN is cut after the
/// linger time, not kept forever.
fn lingering_ends_when_the_client_never_closes(driver: Driver) {
    let server = start(Lines, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    stream.write_all(b"quit\n").unwrap();
    assert_eq!(read_to_end(&mut stream), b"bye\n");
    let started = std::time::Instant::now();
    let total = server.stop().total();
    let waited = started.elapsed();
    assert_eq!(total.closed(CloseReason::Service), 1);
    assert!(
        waited >= std::time::Duration::from_secs(4),
        "lingered {waited:?}"
    );
    drop(stream);
}

/// A client that never ends its line costs at most `max_input` of memory:
/// past it, only its connection is closed.
fn a_line_longer_than_the_input_limit_closes_only_that_connection(driver: Driver) {
    let server = start(Lines, driver, |b| b.threads(1).max_input(16 * 1024));
    let mut good = connect(server.addr);
    let mut endless = connect(server.addr);
    // Written from a thread: the server may close before taking it all.
    let writer = std::thread::spawn(move || {
        let chunk = [b'x'; 4096];
        for _ in 0..64 {
            if endless.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut rest = Vec::new();
        // EOF or a reset: either way the connection ended.
        let _ = endless.read_to_end(&mut rest);
        rest
    });
    let rest = writer.join().unwrap();
    assert!(rest.is_empty(), "no answer to a line that never ended");
    good.write_all(b"still served\n").unwrap();
    let mut answer = [0u8; 13];
    good.set_read_timeout(Some(LIMIT)).unwrap();
    good.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"STILL SERVED\n");
    drop(good);
    let total = server.stop().total();
    assert_eq!(total.closed(CloseReason::Error), 1, "{total}");
}

/// Pitfall 8: closing with unread input sends a reset, which can destroy
/// the answer before the client reads it. After its answer the server sends
/// FIN and discards what still comes, so the client reads the answer and a
/// clean end of stream.
fn close_with_unread_input_still_ends_in_eof_not_reset(driver: Driver) {
    let server = start(Lines, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    let mut request = b"a\nquit\n".to_vec();
    request.extend(std::iter::repeat_n(b'z', 256 * 1024));
    stream.write_all(&request).unwrap();
    assert_eq!(read_to_end(&mut stream), b"A\nbye\n");
    drop(stream);
    let total = server.stop().total();
    assert_eq!(total.closed(CloseReason::Service), 1, "{total}");
}

/// Takes everything and closes once it has seen `after` bytes, in the
/// middle of a stream.
#[derive(Clone)]
struct CloseAfter {
    after: usize,
    seen: usize,
}

impl Handler for CloseAfter {
    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_>) -> Action {
        self.seen += input.bytes().len();
        input.consume_all();
        if self.seen >= self.after {
            Action::Close
        } else {
            Action::Continue
        }
    }
}

/// A client that floods through the handler's close, then falls silent
/// without closing, is still cut after the linger time: the deadline is
/// armed when the server sends its FIN, even when discarding the flood
/// spends the connection's read budget for that turn.
fn lingering_ends_after_a_flood_when_the_client_never_closes(driver: Driver) {
    let handler = CloseAfter {
        after: 1024 * 1024,
        seen: 0,
    };
    let server = start(handler, driver, |b| {
        b.threads(1)
            .shutdown_timeout(std::time::Duration::from_secs(12))
    });
    let mut stream = connect(server.addr);
    // Discarded by the server, so the whole flood is taken.
    stream.write_all(&vec![b'z'; 9 * 1024 * 1024]).unwrap();
    assert_eq!(read_to_end(&mut stream), b"");
    let report = server.stop();
    let total = report.total();
    assert_eq!(total.closed(CloseReason::Service), 1, "{total}");
    assert!(report.is_clean(), "cut by the shutdown deadline: {total}");
    drop(stream);
}

/// A protocol deadline: the client has 300 ms from connecting to finish
/// its first line (an HTTP header timeout, a handshake timeout). Bytes do
/// not move it (pitfall 17, slowloris); finishing the line clears it.
#[derive(Clone)]
struct FirstLineWithin;

impl Handler for FirstLineWithin {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        cx.set_deadline(Duration::from_millis(300));
        Action::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        if input.bytes().contains(&b'\n') {
            cx.clear_deadline();
            cx.write(b"ok\n");
            input.consume_all();
        }
        Action::Continue
    }

    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Action {
        cx.write(b"timeout\n");
        Action::Close
    }
}

fn a_handler_deadline_is_not_moved_by_a_slow_trickle(driver: Driver) {
    let server = start(FirstLineWithin, driver, |b| b.threads(1));
    let mut slow = connect(server.addr);
    let started = Instant::now();
    let trickle = std::thread::spawn({
        let mut slow = slow.try_clone().unwrap();
        move || {
            // A byte every 50 ms, never a newline: an idle timeout would
            // never fire; the deadline does.
            for _ in 0..20 {
                if slow.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let after = started.elapsed();
    assert_eq!(answer, b"timeout\n");
    assert!(
        after >= Duration::from_millis(290) && after < Duration::from_secs(5),
        "{after:?}"
    );
    trickle.join().unwrap();
    drop(slow);

    // A client that finishes its line in time keeps its connection.
    let mut quick = connect(server.addr);
    quick.write_all(b"hello\n").unwrap();
    let mut ok = [0u8; 3];
    quick.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok\n");
    std::thread::sleep(Duration::from_millis(500));
    quick.write_all(b"still\n").unwrap();
    quick.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok\n");
    drop(quick);
    let total = server.stop().total();
    assert_eq!(total.closed(CloseReason::Service), 1, "{total}");
}

/// Pauses its input on `pause` for 200 ms (its deadline resumes it); echoes
/// other lines; writes its connection id when opened; `abort` resets.
#[derive(Clone)]
struct Pausing;

impl Handler for Pausing {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        let id = format!("{}\n", cx.id());
        cx.write(id.as_bytes());
        Action::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        while let Some(end) = input.bytes().iter().position(|&b| b == b'\n') {
            let line = input.bytes()[..=end].to_vec();
            input.consume(end + 1);
            match &line[..] {
                b"pause\n" => {
                    cx.pause_reading();
                    cx.set_deadline(Duration::from_millis(200));
                    cx.write(b"paused\n");
                    return Action::Continue;
                }
                b"abort\n" => return Action::Abort,
                _ => cx.write(&line),
            }
        }
        Action::Continue
    }

    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Action {
        cx.resume_reading();
        cx.write(b"resumed\n");
        Action::Continue
    }
}

#[track_caller]
fn read_line(stream: &mut std::net::TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        stream.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn a_handler_pauses_its_input_and_resumes_it(driver: Driver) {
    let server = start(Pausing, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    let _id = read_line(&mut stream);
    stream.write_all(b"pause\n").unwrap();
    assert_eq!(read_line(&mut stream), "paused\n");
    let sent = Instant::now();
    stream.write_all(b"later\n").unwrap();
    // Nothing is read while paused: the echo comes after the resume.
    assert_eq!(read_line(&mut stream), "resumed\n");
    assert_eq!(read_line(&mut stream), "later\n");
    assert!(
        sent.elapsed() >= Duration::from_millis(150),
        "{:?}",
        sent.elapsed()
    );
}

fn connections_have_distinct_ids_and_abort_resets(driver: Driver) {
    let server = start(Pausing, driver, |b| b.threads(2));
    let mut a = connect(server.addr);
    let mut b = connect(server.addr);
    let (id_a, id_b) = (read_line(&mut a), read_line(&mut b));
    assert_ne!(id_a, id_b);
    a.write_all(b"abort\n").unwrap();
    let mut rest = Vec::new();
    let err = a
        .read_to_end(&mut rest)
        .expect_err("a reset, not an end of stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    // The other connection is untouched.
    b.write_all(b"fine\n").unwrap();
    assert_eq!(read_line(&mut b), "fine\n");
    drop(b);
    let total = server.stop().total();
    assert_eq!(total.closed(CloseReason::Service), 1, "{total}");
}

/// Writes what its context says of the connection: peer, local address and
/// peer credentials (or the error), one per line.
#[derive(Clone)]
struct WhoIsThere;

impl Handler for WhoIsThere {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        let text = format!(
            "{}\n{}\n{:?}\n",
            cx.peer().map_or_else(|e| e.to_string(), |a| a.to_string()),
            cx.local().map_or_else(|e| e.to_string(), |a| a.to_string()),
            cx.peer_credentials().map(|c| (c.pid, c.uid, c.gid)),
        );
        cx.write(text.as_bytes());
        Action::Close
    }

    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_>) -> Action {
        input.consume_all();
        Action::Continue
    }
}

fn the_context_names_both_ends_and_a_unix_peers_credentials(driver: Driver) {
    let server = start(WhoIsThere, driver, |b| b.threads(1));
    let mut tcp = connect(server.addr);
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], tcp.local_addr().unwrap().to_string());
    assert_eq!(lines[1], server.addr.to_string());
    assert!(
        lines[2].starts_with("Err("),
        "TCP has no peer credentials: {text}"
    );

    // One path per driver: both variants run at once in this process.
    let name = format!("evloop-who-{}-{}.sock", std::process::id(), variant(driver));
    let path = std::env::temp_dir().join(name);
    let _ = std::fs::remove_file(&path);
    let unix = start(WhoIsThere, driver, |b| {
        b.threads(1).listen(evloop::Address::Unix(path.clone()))
    });
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let mut text = String::new();
    client.read_to_string(&mut text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "unix:(unnamed)");
    assert_eq!(lines[1], format!("unix:{}", path.display()));
    let me = (
        std::process::id(),
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    if cfg!(any(target_os = "linux", target_os = "android")) {
        assert_eq!(lines[2], format!("Ok({me:?})"));
    }
    drop(client);
    drop(unix);
}

/// For each line `NAME OFFSET LEN`: a head line, then that range of the
/// file, sent by the core (`send_file`); the next line is read only once
/// the file is out (a drain notice, then reading resumes and the leftover
/// lines are handed over again). `bad` writes behind a file being sent.
#[derive(Clone)]
struct Files {
    path: std::path::PathBuf,
}

impl Handler for Files {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        if cx.sending_file() {
            return Action::Continue;
        }
        let Some(end) = input.bytes().iter().position(|&b| b == b'\n') else {
            return Action::Continue;
        };
        let line = String::from_utf8(input.bytes()[..end].to_vec()).unwrap();
        input.consume(end + 1);
        let mut words = line.split(' ');
        let (what, offset, len) = (words.next().unwrap(), words.next(), words.next());
        let (offset, len): (u64, u64) = (
            offset.unwrap().parse().unwrap(),
            len.unwrap().parse().unwrap(),
        );
        cx.write(format!("{what} {len}\n").as_bytes());
        cx.send_file(std::fs::File::open(&self.path).unwrap(), offset, len);
        if what == "bad" {
            cx.write(b"behind the file\n"); // panics: the connection ends
        }
        cx.pause_reading();
        cx.notify_drained();
        Action::Continue
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        assert!(!cx.sending_file(), "the notice waits for the file");
        cx.write(b"done\n");
        cx.resume_reading();
        Action::Continue
    }
}

fn file_for(driver: Driver, name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let path = std::env::temp_dir().join(format!(
        "evloop-send-file-{name}-{}-{}",
        support::variant(driver),
        std::process::id()
    ));
    let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    (path, content)
}

fn a_file_is_sent_after_the_output_before_it(driver: Driver) {
    let (path, content) = file_for(driver, "ok", 3 << 20);
    let server = start(Files { path: path.clone() }, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    // Three requests in one write: the second and third wait in the
    // leftovers while the first file is sent.
    stream
        .write_all(b"a 0 3145728\nb 1000 70000\nc 3145000 728\n")
        .unwrap();
    let mut want = Vec::new();
    for (name, offset, len) in [
        ("a", 0, 3 << 20),
        ("b", 1000, 70_000),
        ("c", 3_145_000, 728),
    ] {
        want.extend_from_slice(format!("{name} {len}\n").as_bytes());
        want.extend_from_slice(&content[offset..offset + len]);
        want.extend_from_slice(b"done\n");
    }
    let mut got = vec![0; want.len()];
    stream.read_exact(&mut got).unwrap();
    assert!(got == want, "the bytes differ");
    std::fs::remove_file(path).unwrap();
}

fn output_written_behind_a_file_being_sent_ends_the_connection(driver: Driver) {
    let (path, _) = file_for(driver, "bad", 1000);
    let server = start(Files { path: path.clone() }, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    stream.write_all(b"bad 0 1000\n").unwrap();
    let mut got = Vec::new();
    // Closed (reset or not) without the file's promised bytes.
    let _ = stream.read_to_end(&mut got);
    assert!(got.len() < 1000, "{} bytes", got.len());
    let report = server.stop();
    assert_eq!(report.total().closed(CloseReason::Error), 1);
    std::fs::remove_file(path).unwrap();
}

/// The client sends its request and its end of input at once: the end
/// is seen while the handler has paused, and must be read when it resumes
/// from `on_drained`, not wait for an edge that never comes.
fn the_end_of_input_seen_while_paused_is_read_on_resuming(driver: Driver) {
    let (path, content) = file_for(driver, "eof", 1 << 20);
    let server = start(Files { path: path.clone() }, driver, |b| b.threads(1));
    let mut stream = connect(server.addr);
    stream.write_all(b"a 0 1048576\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let got = read_to_end(&mut stream);
    let mut want = b"a 1048576\n".to_vec();
    want.extend_from_slice(&content);
    want.extend_from_slice(b"done\n");
    assert!(
        got == want,
        "got {} bytes, wanted {}",
        got.len(),
        want.len()
    );
    assert_eq!(server.stop().total().closed(CloseReason::Peer), 1);
    std::fs::remove_file(path).unwrap();
}
