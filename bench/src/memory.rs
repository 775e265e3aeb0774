//! Idle connections: how much a server's resident memory grows per
//! connection it holds open.
//!
//! The harness itself is the client: plain blocking sockets that connect and
//! then stay silent. Each socket binds a source address in 127.0.0.0/8 before
//! connecting, a different one every [`PER_SOURCE_ADDRESS`] connections and a
//! different range per server, so neither ephemeral ports nor the previous
//! run's `TIME_WAIT` sockets run out.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Socket, Type};

use crate::limits::FileLimit;
use crate::prepare::Binaries;
use crate::servers::{RunningServer, ServerKind};

/// Connections per source address. `bind(addr, 0)` searches for a free port
/// in a way that slows down sharply once a few thousand ports of one address
/// are taken (measured here: 1,000 binds in 0.05 s, the 9,000th ten seconds
/// in), so each address serves only a thousand.
const PER_SOURCE_ADDRESS: usize = 1_000;
/// Descriptors kept free for the server's and the harness's own use.
pub const DESCRIPTOR_MARGIN: u64 = 64;
/// How far the client may run ahead of the server's `accept` calls; the
/// kernel's accept queue holds at most `net.core.somaxconn` (4096 by default).
const MAX_UNACCEPTED: usize = 1000;
/// How long the server may take to accept what is queued.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One server's memory at each connection count.
#[derive(Debug, Serialize)]
pub struct MemoryResult {
    /// The server's name.
    pub server: &'static str,
    /// Resident memory before any connection, in bytes.
    pub baseline_rss_bytes: Option<u64>,
    /// One entry per connection count asked for.
    pub steps: Vec<MemoryStep>,
    /// Why the server could not be measured at all.
    pub error: Option<String>,
}

/// The server's memory with some number of idle connections open.
#[derive(Debug, Serialize)]
pub struct MemoryStep {
    /// Connections asked for.
    pub requested: usize,
    /// Connections the server held when measured.
    pub reached: usize,
    /// Resident memory then, in bytes.
    pub rss_bytes: u64,
    /// Growth over the baseline per connection held, in bytes.
    pub bytes_per_connection: f64,
    /// Why fewer than requested were reached.
    pub note: Option<String>,
}

/// Measures every server in `servers` at each count in `counts` (ascending).
pub fn run(
    servers: &[ServerKind],
    binaries: &Binaries,
    counts: &[usize],
    file_limit: &FileLimit,
) -> Vec<MemoryResult> {
    let cap = file_limit.soft.saturating_sub(DESCRIPTOR_MARGIN) as usize;
    servers
        .iter()
        .enumerate()
        .map(|(index, &kind)| {
            eprintln!("memory: {}", kind.name());
            let mut result = MemoryResult {
                server: kind.name(),
                baseline_rss_bytes: None,
                steps: Vec::new(),
                error: None,
            };
            match RunningServer::start(kind, binaries, &crate::prepare::work_dir()) {
                Ok(server) => {
                    let clients = measure(&server, index, counts, cap, file_limit, &mut result);
                    // The server closes first, so the TIME_WAIT sockets stay
                    // on its side and the clients' source ports free at once.
                    drop(server);
                    drop(clients);
                }
                Err(e) => result.error = Some(e),
            }
            result
        })
        .collect()
}

fn measure(
    server: &RunningServer,
    server_index: usize,
    counts: &[usize],
    cap: usize,
    file_limit: &FileLimit,
    result: &mut MemoryResult,
) -> Vec<Socket> {
    let baseline_fds = match server.open_fds() {
        Ok(n) => n,
        Err(e) => {
            result.error = Some(format!("/proc/{}/fd: {e}", server.pid()));
            return Vec::new();
        }
    };
    let baseline = match settled_rss(server) {
        Ok(rss) => rss,
        Err(e) => {
            result.error = Some(format!("/proc/{}/status: {e}", server.pid()));
            return Vec::new();
        }
    };
    result.baseline_rss_bytes = Some(baseline);
    let mut clients: Vec<Socket> = Vec::new();
    for &requested in counts {
        let target = requested.min(cap);
        let mut note = (target < requested).then(|| {
            format!(
                "capped at {target} connections: {}",
                file_limit.capped_by.as_deref().unwrap_or("RLIMIT_NOFILE")
            )
        });
        let stopped = match connect_up_to(server, baseline_fds, server_index, &mut clients, target)
        {
            Ok(()) => false,
            Err(e) => {
                note = Some(e);
                true
            }
        };
        let reached = server
            .open_fds()
            .map_or(0, |fds| fds.saturating_sub(baseline_fds).min(clients.len()));
        let rss = settled_rss(server).unwrap_or(0);
        let bytes_per_connection = if reached == 0 {
            0.0
        } else {
            (rss as f64 - baseline as f64) / reached as f64
        };
        eprintln!(
            "  {reached} connections: {} KiB resident, {bytes_per_connection:.0} B per connection",
            rss / 1024
        );
        result.steps.push(MemoryStep {
            requested,
            reached,
            rss_bytes: rss,
            bytes_per_connection,
            note,
        });
        if stopped {
            break;
        }
    }
    clients
}

/// Connects to `server` until `clients` holds `target` connections and the
/// server has accepted them all (it held `baseline_fds` descriptors before
/// the first), never running more than [`MAX_UNACCEPTED`] ahead of its
/// `accept` calls. Client `i` binds [`source_address`]`(source_range, i)`.
/// On failure, `clients` keeps the connections made so far.
pub fn connect_up_to(
    server: &RunningServer,
    baseline_fds: usize,
    source_range: usize,
    clients: &mut Vec<Socket>,
    target: usize,
) -> Result<(), String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    while clients.len() < target {
        let i = clients.len();
        if i.is_multiple_of(MAX_UNACCEPTED) {
            wait_for_accepts(server, baseline_fds, i.saturating_sub(MAX_UNACCEPTED))?;
        }
        let socket = connect(address, source_address(source_range, i))
            .map_err(|e| format!("connection {} failed: {e}", i + 1))?;
        clients.push(socket);
    }
    wait_for_accepts(server, baseline_fds, clients.len())
}

/// Client `i` of server `server_index` binds 127.S.H.L: a /16 per server, a
/// new address every [`PER_SOURCE_ADDRESS`] connections.
fn source_address(server_index: usize, i: usize) -> SocketAddr {
    let n = i / PER_SOURCE_ADDRESS + 1;
    let ip = Ipv4Addr::new(127, 10 + server_index as u8, (n >> 8) as u8, n as u8);
    SocketAddr::V4(SocketAddrV4::new(ip, 0))
}

fn connect(server: SocketAddr, source: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // Lets a port whose earlier connection is in TIME_WAIT be bound again.
    socket.set_reuse_address(true)?;
    socket.bind(&source.into())?;
    socket.connect_timeout(&server.into(), CONNECT_TIMEOUT)?;
    Ok(socket)
}

/// Waits until the server holds at least `count` connections beyond its
/// baseline descriptors.
fn wait_for_accepts(
    server: &RunningServer,
    baseline_fds: usize,
    count: usize,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let held = server
            .open_fds()
            .map_err(|e| format!("/proc/{}/fd: {e}", server.pid()))?
            .saturating_sub(baseline_fds);
        if held >= count {
            return Ok(());
        }
        if started.elapsed() > ACCEPT_TIMEOUT {
            return Err(format!(
                "the server held {held} of {count} connections after {ACCEPT_TIMEOUT:?}"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The resident size once two readings 100 ms apart agree (at most 2 s), so
/// that work the server does after accepting is counted.
pub fn settled_rss(server: &RunningServer) -> io::Result<u64> {
    let mut last = server.rss_bytes()?;
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(100));
        let now = server.rss_bytes()?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_spread_over_loopback() {
        assert_eq!(source_address(0, 0).to_string(), "127.10.0.1:0");
        assert_eq!(source_address(0, 999).to_string(), "127.10.0.1:0");
        assert_eq!(source_address(0, 1_000).to_string(), "127.10.0.2:0");
        assert_eq!(source_address(2, 100_000).to_string(), "127.12.0.101:0");
        assert_eq!(source_address(0, 300_000).to_string(), "127.10.1.45:0");
    }
}
