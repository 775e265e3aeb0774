//! Issue 12, part 3: systemd. Debian's `systemd-socket-activate` plays
//! systemd (no systemd as PID 1 needed): it binds a TCP and a Unix socket,
//! starts `evloop serve` on the first connection with them passed by the
//! `LISTEN_FDS` protocol, and the test reads what evloop tells the
//! `NOTIFY_SOCKET`: `READY=1` with a `STATUS=`, watchdog pings, `STOPPING=1`
//! on SIGTERM; and, on a restart, the successor's `MAINPID=`.
//!
//! Skipped where `systemd-socket-activate` is missing, unless
//! `EVLOOP_REQUIRE_SYSTEMD=1` (as in `.ci/run`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{LIMIT, OtherProcess, TempDir};

/// Whether the tool is here; panics if it must be and is not.
fn socket_activate_available() -> bool {
    if common::installed("systemd-socket-activate") {
        return true;
    }
    assert!(
        std::env::var_os("EVLOOP_REQUIRE_SYSTEMD").is_none(),
        "systemd-socket-activate is missing (Debian package systemd)"
    );
    eprintln!("skipped: systemd-socket-activate is missing (Debian package systemd)");
    false
}

/// The notifications evloop sends, as systemd would receive them.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every message so far, one string each (`KEY=VALUE` lines).
    messages: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            socket,
            path,
            messages: Vec::new(),
        }
    }

    /// Waits until a message has a line starting with `prefix`; returns
    /// that line.
    #[track_caller]
    fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let found = self
                .messages
                .iter()
                .flat_map(|m| m.lines())
                .find(|line| line.starts_with(prefix));
            if let Some(line) = found {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} notification; got {:?}",
                self.messages
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.messages
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    /// Reads the messages already sent (by a sender that has exited; a
    /// successor's watchdog pings may go on, hence the bound).
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline
            && let Ok(n) = self.socket.recv(&mut buf)
        {
            self.messages
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    /// How many lines so far start with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        (self.messages.iter().flat_map(|m| m.lines()))
            .filter(|line| line.starts_with(prefix))
            .count()
    }
}

/// A free loopback port (bound and released: the tool binds it next).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `systemd-socket-activate` with `evloop serve echo` behind a TCP and a
/// Unix socket; killed on drop if still running.
struct Activated {
    child: Child,
    tcp: SocketAddr,
    unix: PathBuf,
}

impl Activated {
    fn start(dir: &Path, notify: &NotifySocket, extra_env: &[&str]) -> Activated {
        Activated::start_with(dir, notify, extra_env, |_, _| Vec::new())
    }

    /// Like [`start`](Self::start), with more arguments for `evloop serve
    /// echo`, made from the TCP address and the Unix socket's path.
    fn start_with(
        dir: &Path,
        notify: &NotifySocket,
        extra_env: &[&str],
        extra_args: impl FnOnce(SocketAddr, &Path) -> Vec<String>,
    ) -> Activated {
        let tcp = free_port();
        let unix = dir.join("evloop.sock");
        let mut command = Command::new("systemd-socket-activate");
        command
            .arg(format!("--listen={tcp}"))
            .arg(format!("--listen={}", unix.display()))
            .arg("--fdname=web:local")
            .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.path.display()))
            .arg("--setenv=RUST_LOG=info");
        for var in extra_env {
            command.arg(format!("--setenv={var}"));
        }
        let child = command
            .arg(env!("CARGO_BIN_EXE_evloop"))
            .args(["serve", "echo", "--threads", "2", "--io", "epoll"])
            .args(extra_args(tcp, &unix))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start systemd-socket-activate");
        Activated { child, tcp, unix }
    }

    /// Connects once the tool listens: the first connection starts evloop.
    fn connect(&self) -> TcpStream {
        let deadline = Instant::now() + LIMIT;
        loop {
            match TcpStream::connect(self.tcp) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(LIMIT)).unwrap();
                    return stream;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "{}: {e}", self.tcp);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    #[track_caller]
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "evloop did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[track_caller]
fn assert_echoes(stream: &mut (impl Read + Write), message: &[u8]) {
    stream.write_all(message).unwrap();
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, message);
}

/// Both sockets come from systemd and serve (no `--listen`), and evloop
/// tells systemd it is ready, pings the watchdog, and says it stops.
#[test]
fn socket_activation_serves_and_notifies() {
    if !socket_activate_available() {
        return;
    }
    let dir = TempDir::new("activation");
    let mut notify = NotifySocket::bind(&dir.0);
    let mut activated = Activated::start(&dir.0, &notify, &["WATCHDOG_USEC=200000"]);
    let mut first = activated.connect();
    assert_echoes(&mut first, b"activated\n");
    let mut unix = UnixStream::connect(&activated.unix).unwrap();
    unix.set_read_timeout(Some(LIMIT)).unwrap();
    assert_echoes(&mut unix, b"over the unix socket\n");

    notify.wait_for("READY=1");
    let status = notify.wait_for("STATUS=serving on");
    assert!(
        status.contains(&activated.tcp.to_string())
            && status.contains(&format!("unix:{}", activated.unix.display())),
        "{status}"
    );
    // Pinged at half of 200 ms.
    let deadline = Instant::now() + LIMIT;
    while notify.count("WATCHDOG=1") < 3 {
        assert!(Instant::now() < deadline, "{:?}", notify.messages);
        notify.wait_for("WATCHDOG=1");
        let mut buf = [0u8; 4096];
        if let Ok(n) = notify.socket.recv(&mut buf) {
            notify
                .messages
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    drop((first, unix));
    activated.signal(rustix::process::Signal::TERM);
    notify.wait_for("STOPPING=1");
    assert!(activated.wait_exit().success());
    assert!(
        activated.unix.exists(),
        "the socket file is systemd's: evloop leaves it"
    );
}

/// A restart under systemd: the successor takes the activated sockets, and
/// the old process tells systemd the new main pid before it drains.
#[test]
fn a_restart_under_socket_activation_tells_systemd_the_new_main_pid() {
    if !socket_activate_available() {
        return;
    }
    let dir = TempDir::new("activation-restart");
    let mut notify = NotifySocket::bind(&dir.0);
    // The watchdog is another process's (pid 1): the first evloop must not
    // ping it, and its successor, which systemd will know by MAINPID=,
    // must not inherit WATCHDOG_PID, so it pings.
    let watchdog = ["WATCHDOG_USEC=200000", "WATCHDOG_PID=1"];
    let mut activated = Activated::start(&dir.0, &notify, &watchdog);
    let mut client = activated.connect();
    assert_echoes(&mut client, b"before\n");
    notify.wait_for("READY=1");

    activated.signal(rustix::process::Signal::USR2);
    let main_pid = notify.wait_for("MAINPID=");
    let successor: i32 = main_pid["MAINPID=".len()..].parse().unwrap();
    assert_ne!(successor as u32, activated.child.id());
    notify.wait_for("WATCHDOG=1");
    // The old process drains: the connection it holds still echoes.
    assert_echoes(&mut client, b"during the drain\n");
    drop(client);
    assert!(activated.wait_exit().success());
    // The old process said nothing after MAINPID=: systemd would refuse it.
    notify.drain();
    let after_handover = notify
        .messages
        .iter()
        .skip_while(|m| !m.contains("MAINPID="));
    assert!(
        after_handover.skip(1).all(|m| !m.contains("STOPPING=1")),
        "{:?}",
        notify.messages
    );

    let mut after = activated.connect();
    assert_echoes(&mut after, b"served by the successor\n");
    let mut unix = UnixStream::connect(&activated.unix).unwrap();
    unix.set_read_timeout(Some(LIMIT)).unwrap();
    assert_echoes(&mut unix, b"unix, by the successor\n");
    drop((after, unix));
    OtherProcess(successor as u32).stop();
}

/// The listeners keep the order `--listen` gives them, whatever order
/// systemd passes its sockets in: `--proxy-protocol-on` names the TCP one,
/// listed second here though systemd passes it first, and only it expects
/// a header (the Unix one echoes the header's bytes as data).
#[test]
fn the_proxy_protocol_goes_on_the_listener_named_whatever_order_systemd_passes() {
    if !socket_activate_available() {
        return;
    }
    let dir = TempDir::new("activation-order");
    let notify = NotifySocket::bind(&dir.0);
    let activated = Activated::start_with(&dir.0, &notify, &[], |tcp, unix| {
        let unix = format!("unix:{}", unix.display());
        let tcp = tcp.to_string();
        [
            "--listen",
            &unix,
            "--listen",
            &tcp,
            "--proxy-protocol-on",
            &tcp,
        ]
        .map(String::from)
        .to_vec()
    });
    let header = b"PROXY TCP4 203.0.113.7 198.51.100.2 4242 443\r\n";
    let mut tcp = activated.connect();
    tcp.write_all(header).unwrap();
    assert_echoes(&mut tcp, b"behind the proxy\n");
    let mut unix = UnixStream::connect(&activated.unix).unwrap();
    unix.set_read_timeout(Some(LIMIT)).unwrap();
    assert_echoes(&mut unix, header);
}
