//! `evloop serve` as a user meets it: defaults, bad input, the seed's log
//! service, and stopping on a signal.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use common::{Io, LIMIT, ServerProcess, per_driver, run_command_to_exit, run_to_exit};

/// Held by the test that serves the default port, 1815: its variants for
/// each driver run in parallel, and only one at a time can have it.
static PORT_1815: Mutex<()> = Mutex::new(());

/// The addresses of the listening TCP sockets of a process, in /proc's hex.
fn listening_sockets(pid: u32) -> Vec<String> {
    common::tcp_sockets(pid)
        .into_iter()
        .filter(|s| s.state == common::TcpSocket::LISTEN)
        .map(|s| s.local)
        .collect()
}

per_driver!(serve_alone_listens_on_loopback_1815_and_nothing_else);
fn serve_alone_listens_on_loopback_1815_and_nothing_else(io: Io) {
    let _port = PORT_1815.lock().unwrap_or_else(|e| e.into_inner());
    if TcpListener::bind("127.0.0.1:1815").is_err() {
        eprintln!("port 1815 is taken on this machine; cannot check the default");
        return;
    }
    // No service, no address: only the driver, which a test always names.
    let mut server = ServerProcess::start_exact(common::evloop(), &["--io", io.name()]);
    server.wait_for_line(&io.banner());
    assert_eq!(server.addr.to_string(), "127.0.0.1:1815");
    // 127.0.0.1 is 0100007F in /proc's little-endian hex; 1815 is 0717.
    // Each loop has its own SO_REUSEPORT socket: one address, maybe several sockets.
    let mut addresses = listening_sockets(server.pid());
    assert!(!addresses.is_empty());
    addresses.dedup();
    assert_eq!(addresses, ["0100007F:0717"]);
    let mut stream = TcpStream::connect("127.0.0.1:1815").unwrap();
    stream.write_all(b"hi").unwrap();
    server.wait_for_line("read 2 bytes");
    // An open connection would be served until it closes (graceful drain).
    drop(stream);
    server.wait_for_line("disconnect");
    server.signal("INT");
    assert!(server.wait_exit().success());
}

per_driver!(address_in_use_is_refused_at_once_with_its_name);
fn address_in_use_is_refused_at_once_with_its_name(io: Io) {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr, took) =
        run_to_exit(&["serve", "echo", "--listen", &addr, "--io", io.name()]);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("{addr}: address in use")),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(5));
}

per_driver!(a_second_instance_is_refused_not_let_into_the_group);
/// Pitfall 12: a second evloop on a port another one serves must not join
/// its SO_REUSEPORT group and take part of the traffic, whatever its
/// threads and balance mode; it is refused like any address in use.
fn a_second_instance_is_refused_not_let_into_the_group(io: Io) {
    for first_balance in ["reuseport", "handoff"] {
        let running =
            ServerProcess::start(io, &["echo", "--threads", "2", "--balance", first_balance]);
        let addr = running.addr.to_string();
        for (threads, balance) in [("2", "reuseport"), ("2", "handoff"), ("1", "reuseport")] {
            let args = [
                "serve",
                "log",
                "--listen",
                &addr,
                "--threads",
                threads,
                "--balance",
                balance,
                "--io",
                io.name(),
            ];
            let (status, stderr, _) = run_to_exit(&args);
            assert_eq!(
                status.code(),
                Some(1),
                "{args:?} beside {first_balance}: {stderr}"
            );
            assert!(
                stderr.contains(&format!("{addr}: address in use")),
                "{args:?}: {stderr}"
            );
        }
    }
}

per_driver!(the_same_address_twice_is_refused_as_such);
fn the_same_address_twice_is_refused_as_such(io: Io) {
    let (status, stderr, _) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--io",
        io.name(),
    ]);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("127.0.0.1:0: listed twice"), "{stderr}");
}

#[test]
fn unparsable_address_is_refused_with_its_text() {
    let (status, stderr, _) = run_to_exit(&["serve", "--listen", "localhost:http"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "the problem and a hint: {stderr}");
    assert!(
        lines[0].starts_with("evloop: --listen 'localhost:http': not an address"),
        "{stderr}"
    );
}

#[test]
fn unknown_service_is_refused_by_name() {
    let (status, stderr, _) = run_to_exit(&["serve", "gopher"]);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("unknown service 'gopher'"), "{stderr}");
}

#[test]
fn bad_duration_is_refused_with_a_reason() {
    let (status, stderr, _) = run_to_exit(&["serve", "echo", "--idle-timeout", "5"]);
    assert!(!status.success());
    assert!(stderr.contains("'5': a duration needs a unit"), "{stderr}");
}

per_driver!(privileged_port_without_rights_is_refused_clearly);
/// A privileged port without the rights to bind it: run as `nobody` when the
/// tests run as root (setpriv drops the rights), else as the user itself.
fn privileged_port_without_rights_is_refused_clearly(io: Io) {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let bin = env!("CARGO_BIN_EXE_evloop");
    let mut command = if is_root {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            bin,
        ]);
        c
    } else {
        std::process::Command::new(bin)
    };
    // Port 1 is privileged unless the machine lowered net.ipv4.ip_unprivileged_port_start.
    let unprivileged_start: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_start <= 1 {
        eprintln!("every port is unprivileged here; nothing to test");
        return;
    }
    let output = command
        .env_remove("EVLOOP_IO")
        .args([
            "serve",
            "echo",
            "--listen",
            "127.0.0.1:1",
            "--io",
            io.name(),
        ])
        .output();
    let Ok(output) = output else {
        eprintln!("setpriv is not available; cannot drop privileges");
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1:1: permission denied"),
        "{stderr}"
    );
}

/// The N of each `read N bytes` line the log service printed for `peer`.
fn reads_of(log: &[String], peer: &str) -> Vec<usize> {
    let prefix = format!("{peer}: read ");
    log.iter()
        .filter_map(|l| l.split_once(&prefix))
        .map(|(_, n)| n.trim_end_matches(" bytes").parse().unwrap())
        .collect()
}

per_driver!(log_service_prints_connect_each_read_and_disconnect);
/// The seed's behaviour: a connect line and a disconnect line naming the
/// peer's ip:port, and one `read N bytes` per read with the true N. Each
/// message is logged before the next is sent. One of up to 4 KiB is one
/// read (loopback delivers it whole); a larger one may take several reads,
/// as with io_uring's 4 KiB receive buffers: their Ns add up to exactly
/// what was sent.
fn log_service_prints_connect_each_read_and_disconnect(io: Io) {
    let mut server = ServerProcess::start(io, &["log"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let peer = stream.local_addr().unwrap().to_string();
    server.wait_for_line(&format!("connect {peer}"));
    let small = [1usize, 17, 1000, 4096];
    for (i, size) in small.iter().enumerate() {
        stream.write_all(&vec![b'a' + i as u8; *size]).unwrap();
        // One message per read: wait until it is logged before sending the next.
        server.wait_for_line(&format!("{peer}: read {size} bytes"));
    }
    let large = 30_000;
    let sent = small.iter().sum::<usize>() + large;
    stream.write_all(&vec![b'z'; large]).unwrap();
    server.wait_for_log("the large message's reads", |log| {
        reads_of(log, &peer).iter().sum::<usize>() >= sent
    });
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "log sends nothing");
    server.wait_for_line(&format!("disconnect {peer}"));
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let reads = reads_of(&server.log, &peer);
    assert_eq!(
        reads[..small.len()],
        small,
        "exactly one line per small message, with its N: {reads:?}"
    );
    let large_reads = &reads[small.len()..];
    assert!(
        !large_reads.contains(&0),
        "a read of 0 bytes logged: {reads:?}"
    );
    assert_eq!(
        large_reads.iter().sum::<usize>(),
        large,
        "the large message's reads add up to what was sent: {reads:?}"
    );
    assert_eq!(
        server
            .log
            .iter()
            .filter(|l| l.contains(&format!("connect {peer}")))
            .count(),
        2
    );
}

per_driver!(hexdump_shows_the_bytes);
fn hexdump_shows_the_bytes(io: Io) {
    let mut server = ServerProcess::start(io, &["log", "--hexdump"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    server.wait_for_line("read 16 bytes");
    server.wait_for_line("47 45 54 20 2f");
    server.wait_for_line("|GET / HTTP/1.0..|");
}

per_driver!(ctrl_c_with_no_clients_exits_zero_promptly);
fn ctrl_c_with_no_clients_exits_zero_promptly(io: Io) {
    let mut server = ServerProcess::start(io, &["echo"]);
    let started = std::time::Instant::now();
    server.signal("INT");
    assert!(server.wait_exit().success());
    assert!(started.elapsed() < Duration::from_secs(5));
}

per_driver!(several_listen_addresses_are_all_served);
fn several_listen_addresses_are_all_served(io: Io) {
    let mut server = ServerProcess::start(
        io,
        &["echo", "--listen", "127.0.0.1:0", "--listen", "127.0.0.2:0"],
    );
    let second = server.wait_for_line("listening on 127.0.0.2:");
    let second = second
        .rsplit("listening on ")
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    for addr in [server.addr.to_string(), second] {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping", "{addr}");
    }
}

#[test]
fn issue_8_a_command_line_mistake_is_one_line_and_a_hint() {
    for (args, problem, hint) in [
        (
            &["serve", "--frobnicate"][..],
            "evloop: unexpected argument '--frobnicate'",
            "(see 'evloop serve --help')",
        ),
        (
            &["serve", "echo", "extra"][..],
            "evloop: unexpected argument 'extra'",
            "(see 'evloop serve --help')",
        ),
        (
            &["bench", "echo", "--target"][..],
            "evloop: a value is required for '--target <ADDR>' but none was supplied",
            "(see 'evloop bench echo --help')",
        ),
    ] {
        let (status, stderr, _) = run_to_exit(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines, [problem, hint], "{args:?}");
    }
}

#[test]
fn help_and_version_print_in_full_and_exit_zero() {
    for args in [
        &["--version"][..],
        &["serve", "--help"],
        &["bench", "echo", "-h"],
    ] {
        let output = common::evloop().args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(output.stderr.is_empty(), "{args:?}");
        assert!(
            stdout.starts_with("evloop ") || stdout.contains("Usage: evloop"),
            "{stdout}"
        );
    }
}

#[test]
fn issue_8_values_that_make_no_sense_are_refused_in_one_line() {
    for (args, problem) in [
        (
            &["--max-connections", "0"][..],
            "--max-connections '0': must be at least 1",
        ),
        (&["--backlog", "-1"], "--backlog '-1': must be at least 1"),
        (&["--backlog=-1"], "--backlog '-1': must be at least 1"),
        (&["--backlog", "0"], "--backlog '0': must be at least 1"),
        (&["--threads", "0"], "--threads '0': must be at least 1"),
        (&["--threads", "100000"], "--threads '100000': at most 1024"),
        (
            &["--idle-timeout", "0.0001ms"],
            "--idle-timeout '0.0001ms': must be at least 1ms",
        ),
        (
            &["--shutdown-timeout", "100ns"],
            "--shutdown-timeout '100ns': must be 0 or at least 1ms",
        ),
        (
            &["--listen", "[fe80::1%no-such-if]:0"],
            "no interface 'no-such-if'",
        ),
        (
            &["--max-buffered", "0"],
            "--max-buffered '0': must be at least 64KiB",
        ),
        (
            &["--max-buffered", "1000"],
            "--max-buffered '1000': must be at least 64KiB",
        ),
        (
            &["--max-buffered", "lots"],
            "--max-buffered 'lots': not a size",
        ),
    ] {
        let mut command = vec!["serve", "echo", "--listen", "127.0.0.1:0"];
        command.extend(args);
        let (status, stderr, _) = run_to_exit(&command);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("evloop: "), "{stderr}");
        assert!(lines[0].contains(problem), "{args:?}: {stderr}");
    }
}

/// Each loop holds a poller, a waker and a listener: 100 loops cannot fit
/// in 64 descriptors, and the refusal says so instead of blaming an address.
#[test]
fn issue_8_more_loops_than_descriptors_allow_are_refused_with_the_reason() {
    let output = common::evloop_with_nofile(64)
        .args([
            "serve",
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "100",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("evloop: --threads 100 needs about ")
            && stderr.contains("descriptors but the limit is 64 (ulimit -n)"),
        "{stderr}"
    );
}

per_driver!(issue_8_an_ipv6_address_with_a_named_scope_is_served);
/// An IPv6 address with its interface named, as link-local addresses need:
/// on ::1 the kernel accepts (and ignores) the scope, so it can be served
/// here; fe80:: addresses depend on the machine's interfaces.
fn issue_8_an_ipv6_address_with_a_named_scope_is_served(io: Io) {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; cannot test");
        return;
    }
    let server = ServerProcess::start(io, &["echo", "--listen", "[::1%lo]:0"]);
    assert!(server.addr.is_ipv6(), "{}", server.addr);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.write_all(b"scoped").unwrap();
    let mut back = [0u8; 6];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"scoped");
}

per_driver!(max_buffered_takes_human_sizes);
fn max_buffered_takes_human_sizes(io: Io) {
    for size in ["64KiB", "65536", "64MiB", "64M", "1GiB"] {
        let mut server = ServerProcess::start(io, &["echo", "--max-buffered", size]);
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.write_all(b"sized").unwrap();
        let mut back = [0u8; 5];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"sized", "{size}");
        drop(stream);
        server.signal("TERM");
        assert!(server.wait_exit().success(), "{size}");
    }
}

/// `--io` takes auto, epoll (kqueue on BSD) or uring; anything else is a command-line
/// mistake whose message lists the choices. `EVLOOP_IO` is honoured, and
/// the option beats it, even an `EVLOOP_IO` that names no driver.
#[test]
fn io_option_lists_its_choices_and_beats_evloop_io() {
    let choices = format!("expected auto, {} or uring", Io::Epoll.name());
    let (status, stderr, _) = run_to_exit(&["serve", "echo", "--io", "nonsense"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let problem = format!("evloop: --io 'nonsense': unknown I/O driver \"nonsense\": {choices}");
    assert_eq!(lines, [&problem, "(see 'evloop serve --help')"], "{stderr}");

    let with_env = |value: &str| {
        let mut command = common::evloop();
        command.env("EVLOOP_IO", value);
        command
    };
    let (status, stderr, _) = run_command_to_exit(with_env("nonsense"), &["serve", "echo"]);
    assert_eq!(status.code(), Some(2), "EVLOOP_IO=nonsense: {stderr}");
    assert!(
        stderr.contains("'nonsense'") && stderr.contains(&choices),
        "{stderr}"
    );

    // EVLOOP_IO, --io, and the driver the server runs on.
    let mut cases = vec![
        (Io::Epoll.name(), None, Io::Epoll),
        ("uring", Some(Io::Epoll), Io::Epoll),
        ("nonsense", Some(Io::Epoll), Io::Epoll),
    ];
    if Io::Uring.available() {
        cases.extend([
            ("uring", None, Io::Uring),
            (Io::Epoll.name(), Some(Io::Uring), Io::Uring),
        ]);
    }
    for (env, option, runs_on) in cases {
        let mut args = vec!["echo", "--listen", "127.0.0.1:0"];
        if let Some(io) = option {
            args.extend(["--io", io.name()]);
        }
        let mut server = ServerProcess::start_exact(with_env(env), &args);
        let driver = server.wait_for_line("I/O driver: ");
        assert!(
            driver.contains(&runs_on.banner()) && !driver.contains("unavailable"),
            "EVLOOP_IO={env} {args:?}: {driver}"
        );
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.write_all(b"driven").unwrap();
        let mut back = [0u8; 6];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"driven");
        drop(stream);
        server.signal("TERM");
        assert!(server.wait_exit().success(), "{}", server.log_text());
    }
}
