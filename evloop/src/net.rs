//! Sockets: listeners bound with errors that name the address, and the
//! non-blocking accept/read/write calls the reactor makes, each turning errno
//! into one `Outcome` so the reactor's decisions sit in one place.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
#[cfg(not(target_vendor = "apple"))]
use rustix::net::SocketFlags;
use rustix::net::{RecvFlags, SendFlags, SocketAddrAny};
use socket2::{Domain, Protocol, Socket, Type};

/// The listen backlog used when none is given: the largest the kernel allows.
/// Linux, FreeBSD and macOS clamp `listen`'s argument to their configured
/// maximum (`net.core.somaxconn`, `kern.ipc.soacceptqueue`,
/// `kern.ipc.somaxconn`), so asking for `i32::MAX` means "the OS maximum".
pub const DEFAULT_BACKLOG: i32 = i32::MAX;

/// Whether a listener shares its address with other sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// The address is this socket's alone.
    Exclusive,
    /// The first socket of a `SO_REUSEPORT` group (`SO_REUSEPORT_LB` on
    /// FreeBSD), through which the kernel balances connections over the
    /// loops. Binding fails with "address in use" if any socket already
    /// listens there, even one that would share it: a second server started
    /// by mistake must not silently take part of the traffic.
    NewGroup,
    /// A further socket of the group that [`Share::NewGroup`] started.
    JoinGroup,
}

/// Binds a non-blocking TCP listener on `addr`.
///
/// Accepted sockets inherit `TCP_NODELAY`. IPv6 listeners are IPv6-only, so
/// `0.0.0.0:P` and `[::]:P` can be bound side by side. Errors read like
/// `127.0.0.1:1815: address in use`.
pub fn bind_listener(addr: SocketAddr, backlog: i32, share: Share) -> io::Result<TcpListener> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{addr}: {}", describe(&e)));
    if share == Share::NewGroup && !REUSE_PORT_AFTER_BIND && addr.port() != 0 {
        // Without Linux's late SO_REUSEPORT (below), an exclusive probe bind
        // finds an existing holder. The probe is closed before the group
        // binds: a socket that binds with SO_REUSEPORT in between can still
        // join (ARCHITECTURE.md names this race).
        let probe = new_socket(addr).map_err(named)?;
        probe.bind(&addr.into()).map_err(named)?;
        drop(probe);
    }
    let socket = new_socket(addr).map_err(named)?;
    let late_reuse_port = share == Share::NewGroup && REUSE_PORT_AFTER_BIND;
    if share == Share::JoinGroup || (share == Share::NewGroup && !late_reuse_port) {
        set_reuse_port(&socket).map_err(named)?;
    }
    socket.bind(&addr.into()).map_err(named)?;
    if late_reuse_port {
        // Bound without SO_REUSEPORT, so the bind failed if anything listens
        // here; set now, before `listen` forms the group, it lets our other
        // loops join. Linux checks the option at bind time, on both sides.
        set_reuse_port(&socket).map_err(named)?;
    }
    socket.listen(backlog).map_err(named)?;
    Ok(socket.into())
}

/// Linux decides whether two sockets may share a port when the second
/// binds, by the `SO_REUSEPORT` both have then, and forms the group at
/// `listen`: so the first socket of a group can bind exclusively and enable
/// sharing afterwards, leaving no window for a stranger. Elsewhere (FreeBSD's
/// `SO_REUSEPORT_LB` joins its group at bind) the option must come first.
const REUSE_PORT_AFTER_BIND: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// A non-blocking TCP socket for `addr` with the options every listener has.
fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Small replies go out at once instead of waiting for the peer's ACK
    // (Nagle + delayed ACK can stall a request/response exchange by 40 ms).
    // Set on the listener, it is inherited by every accepted socket on Linux
    // and the BSDs, so it costs no system call per connection.
    socket.set_tcp_nodelay(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(target_os = "freebsd")]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    // SO_REUSEPORT_LB balances connections across the sockets; plain
    // SO_REUSEPORT on FreeBSD only lets them share the address.
    socket.set_reuse_port_lb(true)
}

#[cfg(not(target_os = "freebsd"))]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

/// A short, lowercase description of the errors people meet when binding.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".into(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".into()
        }
        _ => e.to_string(),
    }
}

/// What a non-blocking socket call came to.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    /// It did something.
    Done(T),
    /// Nothing to do now: wait for readiness.
    WouldBlock,
    /// The peer reset or abandoned the connection.
    Reset(io::Error),
    /// Any other error.
    Failed(io::Error),
}

/// The one place errno becomes a decision. Tolerated and retried: `EINTR`
/// (by the callers' loops). Resets: `ECONNRESET`, `EPIPE`, `ECONNABORTED`,
/// `ETIMEDOUT` (keepalive), `ENOTCONN`, `EHOSTUNREACH`, `ENETUNREACH`.
fn classify<T>(result: Result<T, Errno>) -> Option<Outcome<T>> {
    match result {
        Ok(v) => Some(Outcome::Done(v)),
        Err(Errno::INTR) => None,
        Err(Errno::AGAIN) => Some(Outcome::WouldBlock),
        Err(
            e @ (Errno::CONNRESET
            | Errno::PIPE
            | Errno::CONNABORTED
            | Errno::TIMEDOUT
            | Errno::NOTCONN
            | Errno::HOSTUNREACH
            | Errno::NETUNREACH),
        ) => Some(Outcome::Reset(e.into())),
        Err(e) => Some(Outcome::Failed(e.into())),
    }
}

/// Reads into `buf`; `Done(0)` is the end of the stream.
pub(crate) fn recv(socket: &impl AsFd, buf: &mut [u8]) -> Outcome<usize> {
    loop {
        let result = rustix::net::recv(socket, &mut *buf, RecvFlags::empty()).map(|(n, _)| n);
        if let Some(outcome) = classify(result) {
            return outcome;
        }
    }
}

/// Where the system has it, `MSG_NOSIGNAL` keeps a write to a reset socket
/// from raising SIGPIPE; Apple systems use the `SO_NOSIGPIPE` socket option
/// instead, set at accept.
#[cfg(not(target_vendor = "apple"))]
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(target_vendor = "apple")]
const SEND_FLAGS: SendFlags = SendFlags::empty();

/// Writes from `buf`.
pub(crate) fn send(socket: &impl AsFd, buf: &[u8]) -> Outcome<usize> {
    loop {
        if let Some(outcome) = classify(rustix::net::send(socket, buf, SEND_FLAGS)) {
            return outcome;
        }
    }
}

/// Sends FIN: the peer reads end of stream after what was written.
pub(crate) fn shutdown_write(socket: &impl AsFd) -> io::Result<()> {
    Ok(rustix::net::shutdown(socket, rustix::net::Shutdown::Write)?)
}

/// Makes closing `socket` send a reset (RST) instead of FIN, dropping
/// whatever is unsent: `SO_LINGER` with a zero timeout.
pub(crate) fn reset_on_close(socket: &impl AsFd) -> io::Result<()> {
    socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO))
}

/// Accepts a connection, non-blocking and close-on-exec in one call where
/// the system has `accept4`; Apple systems set the flags after `accept`.
pub(crate) fn accept(listener: &impl AsFd) -> Outcome<(OwnedFd, Option<SocketAddr>)> {
    loop {
        let result = accept_nonblocking(listener.as_fd())
            .map(|(fd, addr)| (fd, addr.and_then(|a| SocketAddr::try_from(a).ok())));
        if let Some(outcome) = classify(result) {
            return outcome;
        }
    }
}

#[cfg(not(target_vendor = "apple"))]
fn accept_nonblocking(listener: BorrowedFd<'_>) -> Result<(OwnedFd, Option<SocketAddrAny>), Errno> {
    rustix::net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
}

#[cfg(target_vendor = "apple")]
fn accept_nonblocking(listener: BorrowedFd<'_>) -> Result<(OwnedFd, Option<SocketAddrAny>), Errno> {
    let (fd, addr) = rustix::net::acceptfrom(listener)?;
    rustix::io::ioctl_fionbio(&fd, true)?;
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    // Best effort: the write path treats EPIPE as a reset anyway.
    let _ = socket2::SockRef::from(&fd).set_nosigpipe(true);
    Ok((fd, addr))
}

/// A pipe whose ends are non-blocking and close-on-exec (`pipe2` where the
/// system has it; Apple systems set the flags after `pipe`).
pub(crate) fn nonblocking_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(not(target_vendor = "apple"))]
    {
        use rustix::pipe::{PipeFlags, pipe_with};
        Ok(pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?)
    }
    #[cfg(target_vendor = "apple")]
    {
        let (read, write) = rustix::pipe::pipe()?;
        for fd in [&read, &write] {
            rustix::io::ioctl_fionbio(fd, true)?;
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
        }
        Ok((read, write))
    }
}

/// Whether an accept error means the process or system ran out of a
/// resource (descriptors, buffers, memory): the listener must back off
/// instead of retrying at once (pitfall: the EMFILE accept spin).
pub(crate) fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept_one(listener: &TcpListener) -> OwnedFd {
        loop {
            match accept(listener) {
                Outcome::Done((fd, _)) => return fd,
                Outcome::WouldBlock => std::thread::yield_now(),
                other => panic!("accept: {other:?}"),
            }
        }
    }

    /// The listener's TCP_NODELAY must reach accepted sockets, or replies
    /// may wait for delayed ACKs; this pins the kernel behaviour we rely on.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_are_nonblocking() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 16, Share::Exclusive).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = accept_one(&listener);
        let socket = socket2::SockRef::from(&fd);
        assert!(socket.tcp_nodelay().unwrap());
        // Non-blocking: with nothing sent, a read says WouldBlock at once.
        let mut buf = [0u8; 1];
        assert!(matches!(recv(&fd, &mut buf), Outcome::WouldBlock));
    }

    #[test]
    fn bind_errors_name_the_address() {
        let taken = bind_listener("127.0.0.1:0".parse().unwrap(), 16, Share::Exclusive).unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_listener(addr, 16, Share::Exclusive).unwrap_err();
        assert_eq!(err.to_string(), format!("{addr}: address in use"));
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// Pitfall 12: a group's first socket binds only where nothing listens,
    /// even a socket that set SO_REUSEPORT itself (another server's group).
    #[test]
    fn a_new_group_refuses_an_address_another_group_holds() {
        let any_port = "127.0.0.1:0".parse().unwrap();
        let stranger = bind_listener(any_port, 16, Share::NewGroup).unwrap();
        let addr = stranger.local_addr().unwrap();
        let err = bind_listener(addr, 16, Share::NewGroup).unwrap_err();
        assert_eq!(err.to_string(), format!("{addr}: address in use"));
        let joiner = bind_listener(any_port, 16, Share::JoinGroup).unwrap();
        let addr = joiner.local_addr().unwrap();
        let err = bind_listener(addr, 16, Share::NewGroup).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// The group's own members join it, and the kernel spreads new
    /// connections over them (64 connections all landing on one of two
    /// sockets would happen once in 2^63 runs).
    #[test]
    fn a_group_shares_its_address_with_its_members() {
        let first = bind_listener("127.0.0.1:0".parse().unwrap(), 128, Share::NewGroup).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_listener(addr, 128, Share::JoinGroup).unwrap();
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let accepted = |listener: &TcpListener| {
            let mut n = 0;
            while let Outcome::Done(_) = accept(listener) {
                n += 1;
            }
            n
        };
        let (a, b) = (accepted(&first), accepted(&second));
        assert_eq!(a + b, clients.len(), "{a} + {b}");
        assert!(a > 0 && b > 0, "{a} and {b}");
    }
}
