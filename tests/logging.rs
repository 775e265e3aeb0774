//! The log is best effort: a log pipe that is closed, or that nobody reads,
//! neither stops the server nor slows it down nor keeps it from exiting.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Io, LIMIT, ServerProcess, Stderr, connect, per_driver};

/// Clients in the tests where the log is closed.
const CLIENTS: usize = 30;

/// Sends `data`, half-closes, and reads until the server closes: what the
/// log service does for a whole connection. Returns how long it took.
#[track_caller]
fn send_and_wait_for_close(addr: SocketAddr, data: &[u8]) -> Duration {
    let started = Instant::now();
    let mut stream = connect(addr);
    stream.write_all(data).expect("the server reads");
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("the server closes after the client");
    started.elapsed()
}

/// Sends `data` and reads the same bytes back.
#[track_caller]
fn assert_echoes(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).unwrap();
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("the echo");
    assert_eq!(back, data);
}

/// Waits until the server refuses connections: it has closed its listeners
/// on a shutdown signal.
#[track_caller]
fn wait_until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + LIMIT;
    loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            // Accepted before the listeners closed: the server sees it
            // close at once, and the drain ends it. Or caught in the
            // backlog of a listener as it closed: reset.
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect: {e}"),
        }
        assert!(Instant::now() < deadline, "the listeners stay open");
        std::thread::sleep(Duration::from_millis(10));
    }
}

per_driver!(issue_8_a_closed_log_pipe_does_not_stop_the_log_service);
fn issue_8_a_closed_log_pipe_does_not_stop_the_log_service(io: Io) {
    let mut server = ServerProcess::start_with_stderr(io, &["log"], Stderr::CloseAfterListening);
    // Every connection is logged (connect, read, disconnect) into the
    // closed pipe, and each is still served to its end.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || send_and_wait_for_close(addr, format!("{i}\n").as_bytes()))
        })
        .collect();
    for client in clients {
        client.join().expect("a client was served");
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died"
    );
    server.signal("TERM");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
}

per_driver!(issue_8_a_closed_log_pipe_does_not_cut_the_drain);
fn issue_8_a_closed_log_pipe_does_not_cut_the_drain(io: Io) {
    let mut server = ServerProcess::start_with_stderr(io, &["echo"], Stderr::CloseAfterListening);
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(server.addr)).collect();
    for client in &mut clients {
        assert_echoes(client, b"before");
    }
    // The shutdown logs into the closed pipe; the open connections are
    // still served until they close.
    server.signal("TERM");
    wait_until_refused(server.addr);
    for mut client in clients {
        assert_echoes(&mut client, b"during the drain");
    }
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Floods the log service with `--hexdump` (each 64 KiB read logs about
/// 280 KB) while nobody reads the log: far more than the pipe and the
/// server's log queue hold, so the log is full and lines are dropped.
#[track_caller]
fn flood_the_log(addr: SocketAddr) {
    let data = vec![b'x'; 1024 * 1024];
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let data = data.clone();
            std::thread::spawn(move || send_and_wait_for_close(addr, &data))
        })
        .collect();
    for client in clients {
        client.join().expect("a flooding client was served");
    }
}

per_driver!(issue_8_a_log_nobody_reads_slows_neither_serving_nor_exit);
fn issue_8_a_log_nobody_reads_slows_neither_serving_nor_exit(io: Io) {
    let (_resume, paused) = mpsc::channel();
    let mut server = ServerProcess::start_with_stderr(
        io,
        &["log", "--hexdump"],
        Stderr::PauseAfterListening(paused),
    );
    flood_the_log(server.addr);
    // A small exchange is as quick as ever: nothing waits for the log.
    let took = send_and_wait_for_close(server.addr, b"ping");
    assert!(took < Duration::from_secs(2), "an exchange took {took:?}");
    let asked = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "exit took {:?}",
        asked.elapsed()
    );
}

per_driver!(issue_8_lines_dropped_while_the_log_stalled_are_counted_at_exit);
fn issue_8_lines_dropped_while_the_log_stalled_are_counted_at_exit(io: Io) {
    let (resume, paused) = mpsc::channel();
    let mut server = ServerProcess::start_with_stderr(
        io,
        &["log", "--hexdump"],
        Stderr::PauseAfterListening(paused),
    );
    flood_the_log(server.addr);
    resume.send(()).unwrap();
    // Once a connection made now is logged, the log has caught up.
    let mut probe = connect(server.addr);
    let peer = probe.local_addr().unwrap();
    probe.shutdown(Shutdown::Write).unwrap();
    let _ = probe.read_to_end(&mut Vec::new());
    server.wait_for_line(&format!("disconnect {peer}"));
    server.signal("TERM");
    let line = server.wait_for_line("log lines dropped");
    let before = &line[..line.find(" log lines dropped").unwrap()];
    let dropped: u64 = before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!(dropped > 0, "{line}");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Reads `evloop ARGS`'s standard error until a line containing
/// `needle`, then stops the server; returns the lines read.
fn log_lines_until(args: &[&str], env: &[(&str, &str)], needle: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut command = common::evloop();
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn evloop");
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn({
        let needle = needle.to_owned();
        move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let found = line.contains(&needle);
                lines.push(line);
                if found {
                    break;
                }
            }
            lines
        }
    });
    let started = std::time::Instant::now();
    while !reader.is_finished() {
        assert!(
            started.elapsed() < common::LIMIT,
            "no {needle:?} in the log"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap()
}

#[test]
fn json_log_lines_carry_the_events_fields() {
    let lines = log_lines_until(
        &[
            "serve",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--io",
            "epoll",
            "--log-format",
            "json",
        ],
        &[],
        "listening on",
    );
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(event.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let listening: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(listening["service"], "echo");
    let address = listening["address"].as_str().unwrap();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert_eq!(listening["level"], "INFO");
    assert!(listening["pid"].as_u64().is_some(), "{listening}");
}

/// The shutdown report's counters are fields too: a log shipper sums
/// `bytes_in` without parsing the message.
#[test]
fn json_shutdown_counters_are_fields() {
    let log = std::env::temp_dir().join(format!("evloop-json-{}.log", std::process::id()));
    let mut server = common::evloop()
        .args(["--log-format", "json", "serve", "echo", "--threads", "1"])
        .args(["--io", "epoll", "--listen", "127.0.0.1:0"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let events = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let deadline = Instant::now() + LIMIT;
    let address = loop {
        if let Some(event) = events().into_iter().find(|e| e["address"].is_string()) {
            break event["address"]
                .as_str()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "no listening line");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut client = connect(address);
    assert_echoes(&mut client, b"twelve bytes");
    drop(client);
    std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    let events = events();
    std::fs::remove_file(&log).unwrap();
    let total = (events.iter())
        .find(|event| event["message"] == "total:")
        .expect("a total line");
    assert_eq!(total["accepted"], 1);
    assert_eq!(total["closed_peer"], 1);
    assert_eq!(total["bytes_in"], 12);
    assert_eq!(total["bytes_out"], 12);
    let loop_line = (events.iter())
        .find(|event| event["message"] == "loop 0:")
        .expect("a loop line");
    assert_eq!(loop_line["loop_index"], 0);
}

#[test]
fn the_log_level_option_wins_over_rust_log() {
    // RUST_LOG would hide the start-up lines; the option shows them.
    let lines = log_lines_until(
        &[
            "serve",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--io",
            "epoll",
            "--log-level",
            "info",
        ],
        &[("RUST_LOG", "error")],
        "listening on",
    );
    assert!(
        lines.iter().any(|l| l.contains("I/O driver: ")),
        "{lines:?}"
    );
    let (status, stderr, _) = common::run_to_exit(&["serve", "--log-level", "evloop=loud"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("--log-level 'evloop=loud'"), "{stderr}");
}
