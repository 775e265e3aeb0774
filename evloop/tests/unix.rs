//! Unix domain stream sockets: echo with two loops in both balance modes
//! (loop 0 accepts and hands off), unnamed peers, the socket file's life
//! (a stale one replaced, a live one refused, ours removed at the end, a
//! successor's left alone), its mode, and Linux's abstract names — on
//! each I/O driver.

mod support;

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use evloop::services::Echo;
use evloop::{Address, Balance, CloseReason, Driver, Service};
use support::{Amount, KIB, MIB, Streamer, builder, connect_unix, round_trip, run, variant};
use support::{assert_every_loop_worked, shared_machine, shut_down_mid_stream};
use support::{per_balance_and_driver, per_driver};

per_balance_and_driver!(
    two_loops_share_the_connections_of_a_unix_socket,
    shutdown_drains_unix_clients_beside_tcp_ones,
    clients_in_the_backlog_at_shutdown_are_served,
);

per_driver!(
    a_stale_socket_file_is_replaced,
    a_live_socket_is_address_in_use,
    a_successors_socket_file_is_not_removed,
    a_dropped_server_removes_its_file,
    the_mode_is_applied_to_the_file,
    a_duplicate_unix_address_is_refused,
);
#[cfg(any(target_os = "linux", target_os = "android"))]
per_driver!(an_abstract_name_serves_without_a_file);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
per_driver!(an_abstract_name_is_refused_off_linux);

/// A socket path unique to this process, test and driver (both drivers'
/// variants of a test run at once), removed (if still there) when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(test: &str, driver: Driver) -> SocketPath {
        let name = format!(
            "evloop-unix-{}-{test}-{}.sock",
            std::process::id(),
            variant(driver)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        SocketPath(path)
    }

    fn address(&self) -> Address {
        Address::Unix(self.0.clone())
    }

    fn exists(&self) -> bool {
        self.0.symlink_metadata().is_ok()
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Echo that records the peer of every connection it opens.
#[derive(Clone, Default)]
struct PeerLog(Arc<Mutex<Vec<Address>>>);

impl Service for PeerLog {
    type Handler = Echo;

    fn open(&self, peer: &Address) -> Echo {
        self.0.lock().unwrap().push(peer.clone());
        Echo
    }
}

#[track_caller]
fn assert_echo_works_at(path: &Path) {
    round_trip(&mut connect_unix(path), b"are you there?");
}

/// Unix listeners cannot use SO_REUSEPORT: loop 0 accepts and hands each
/// connection to the least loaded loop, in both balance modes. Clients held
/// open together land on both loops; every byte comes back; the peers have
/// no name.
fn two_loops_share_the_connections_of_a_unix_socket(balance: Balance, driver: Driver) {
    let _machine = shared_machine();
    let path = SocketPath::new(&format!("spread-{balance:?}"), driver);
    let peers = PeerLog::default();
    let server = builder(driver)
        .listen(path.address())
        .threads(2)
        .balance(balance)
        .build(peers.clone())
        .unwrap();
    assert_eq!(server.local_addrs(), [path.address()]);
    let server = run(server);
    const CLIENTS: u64 = 8;
    const BYTES: u64 = 256 * KIB as u64;
    let streams: Vec<Streamer> = (0..CLIENTS)
        .map(|seed| Streamer::start_unix(&path.0, seed, Amount::Bytes(BYTES), 16 * KIB))
        .collect();
    for stream in streams {
        stream.finish();
    }
    let report = server.stop();
    assert!(
        report.is_clean(),
        "{balance:?} {driver:?}: cut {}",
        report.cut()
    );
    assert_every_loop_worked(&report, &format!("{balance:?} {driver:?}"));
    let total = report.total();
    assert_eq!(total.accepted, CLIENTS);
    assert_eq!(total.closed(CloseReason::Peer), CLIENTS);
    assert_eq!(total.bytes_out, CLIENTS * BYTES);
    let peers = peers.0.lock().unwrap();
    assert_eq!(*peers, vec![Address::Unnamed; CLIENTS as usize]);
    assert!(!path.exists(), "the socket file outlived the server");
}

/// Loop 0 hands Unix connections off in `reuseport` mode too, so it must
/// relay Shutdown after its last hand-off there as well: clients streaming
/// over a Unix socket and over TCP all finish, nothing is cut.
fn shutdown_drains_unix_clients_beside_tcp_ones(balance: Balance, driver: Driver) {
    let _machine = shared_machine();
    let path = SocketPath::new(&format!("drain-{balance:?}"), driver);
    let server = builder(driver)
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .listen(path.address())
        .threads(2)
        .balance(balance)
        .build(Echo)
        .unwrap();
    let server = run(server);
    const BYTES: u64 = 4 * MIB as u64;
    let streams: Vec<Streamer> = (0..8)
        .map(|seed| match seed % 2 {
            0 => Streamer::start_unix(&path.0, seed, Amount::Bytes(BYTES), 64 * KIB),
            _ => Streamer::start(server.addr, seed, Amount::Bytes(BYTES), 64 * KIB),
        })
        .collect();
    let report = shut_down_mid_stream(server, streams, BYTES);
    assert!(
        report.is_clean(),
        "{balance:?} {driver:?}: cut {}",
        report.cut()
    );
    assert_eq!(report.total().closed(CloseReason::Peer), 8);
    assert!(!path.exists());
}

/// Clients wait in the backlog when shutdown is requested, before the
/// loops even start: loop 0 accepts them and hands them off, and every loop
/// hears of the shutdown only after the connections sent to it (relayed by
/// loop 0 in both modes), so none is dropped by a loop that has already
/// finished.
fn clients_in_the_backlog_at_shutdown_are_served(balance: Balance, driver: Driver) {
    let path = SocketPath::new(&format!("backlog-{balance:?}"), driver);
    let server = builder(driver)
        .listen(path.address())
        .threads(4)
        .balance(balance)
        .build(Echo)
        .unwrap();
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let mut client = connect_unix(&path.0);
            client.write_all(format!("client {i}").as_bytes()).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
            client
        })
        .collect();
    let handle = server.shutdown_handle();
    handle.shutdown();
    let server = run(server);
    for (i, mut client) in clients.into_iter().enumerate() {
        let mut echo = String::new();
        client.read_to_string(&mut echo).unwrap();
        assert_eq!(echo, format!("client {i}"));
    }
    let report = server.join();
    assert!(
        report.is_clean(),
        "{balance:?} {driver:?}: cut {}",
        report.cut()
    );
    assert_eq!(report.total().closed(CloseReason::Peer), 16);
}

/// A socket file whose server is gone (connecting is refused) is replaced.
fn a_stale_socket_file_is_replaced(driver: Driver) {
    let path = SocketPath::new("stale", driver);
    drop(UnixListener::bind(&path.0).unwrap()); // std leaves the file
    assert!(path.exists());
    let server = run(builder(driver)
        .listen(path.address())
        .threads(1)
        .build(Echo)
        .unwrap());
    assert_echo_works_at(&path.0);
    assert!(server.stop().is_clean());
    assert!(!path.exists());
}

/// A socket a live server listens on is refused, in the one-line style of
/// TCP, and left working.
fn a_live_socket_is_address_in_use(driver: Driver) {
    let path = SocketPath::new("live", driver);
    let live = UnixListener::bind(&path.0).unwrap();
    let err = builder(driver)
        .listen(path.address())
        .build(Echo)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(
        err.to_string(),
        format!("unix:{}: address in use", path.0.display())
    );
    // The refused server removed nothing: the live one still accepts.
    let _client = connect_unix(&path.0);
    live.accept().unwrap();
}

/// If our file was deleted and a successor bound the same path, stopping
/// us leaves the successor's file (told apart by device and inode).
fn a_successors_socket_file_is_not_removed(driver: Driver) {
    let path = SocketPath::new("successor", driver);
    let build = || {
        builder(driver)
            .listen(path.address())
            .threads(1)
            .build(Echo)
            .unwrap()
    };
    let first = run(build());
    std::fs::remove_file(&path.0).unwrap();
    let successor = run(build());
    assert!(first.stop().is_clean());
    assert!(path.exists(), "the successor's file was removed");
    assert_echo_works_at(&path.0);
    assert!(successor.stop().is_clean());
    assert!(!path.exists());
}

/// A server built but never run removes its file when dropped.
fn a_dropped_server_removes_its_file(driver: Driver) {
    let path = SocketPath::new("dropped", driver);
    let server = builder(driver).listen(path.address()).build(Echo).unwrap();
    assert!(path.0.symlink_metadata().unwrap().file_type().is_socket());
    drop(server);
    assert!(!path.exists());
}

/// `unix_mode` sets the file's permission bits (before it listens).
fn the_mode_is_applied_to_the_file(driver: Driver) {
    let path = SocketPath::new("mode", driver);
    let server = builder(driver)
        .listen(path.address())
        .unix_mode(0o640)
        .build(Echo)
        .unwrap();
    let mode = path.0.symlink_metadata().unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o640, "mode {mode:o}");
    drop(server);
    let err = builder(driver)
        .listen(path.address())
        .unix_mode(0o1777)
        .build(Echo)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unix mode 0o1777: only permission bits (at most 0o777)"
    );
    assert!(!path.exists());
}

/// The same socket twice is refused before anything binds, as TCP is.
fn a_duplicate_unix_address_is_refused(driver: Driver) {
    let path = SocketPath::new("twice", driver);
    let err = builder(driver)
        .listen(path.address())
        .listen(path.address())
        .build(Echo)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        format!("unix:{}: listed twice", path.0.display())
    );
    assert!(!path.exists());
}

/// Linux's abstract namespace: no file, echo works, the name is free again
/// once the server is gone.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn an_abstract_name_serves_without_a_file(driver: Driver) {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};

    let name = format!(
        "evloop-unix-{}-abstract-{}",
        std::process::id(),
        variant(driver)
    );
    let address = Address::Abstract(name.clone().into_bytes());
    assert_eq!(address.to_string(), format!("unix:@{name}"));
    let server = run(builder(driver)
        .listen(address.clone())
        .threads(2)
        .build(Echo)
        .unwrap());
    let at = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut client = UnixStream::connect_addr(&at).unwrap();
    client.set_read_timeout(Some(support::LIMIT)).unwrap();
    round_trip(&mut client, b"no file needed");
    drop(client);
    assert!(server.stop().is_clean());
    // Free again: a second server can take the name.
    drop(builder(driver).listen(address).build(Echo).unwrap());
}

/// Elsewhere an abstract name is refused with a clear error.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn an_abstract_name_is_refused_off_linux(driver: Driver) {
    let err = builder(driver)
        .listen(Address::Abstract(b"evloop".to_vec()))
        .build(Echo)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unix:@evloop: abstract socket names exist on Linux and Android only"
    );
}
