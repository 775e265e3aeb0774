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

/// Binds a non-blocking TCP listener on `addr`.
///
/// `reuse_port` sets `SO_REUSEPORT` (with `SO_REUSEPORT_LB` on FreeBSD) so
/// that several loops can each bind the same address and let the kernel
/// balance. Accepted sockets inherit `TCP_NODELAY`. IPv6 listeners are IPv6-only, so `0.0.0.0:P` and `[::]:P` can be
/// bound side by side. Errors read like `127.0.0.1:1815: address in use`.
pub fn bind_listener(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<TcpListener> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{addr}: {}", describe(&e)));
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(named)?;
    socket.set_reuse_address(true).map_err(named)?;
    // Small replies go out at once instead of waiting for the peer's ACK
    // (Nagle + delayed ACK can stall a request/response exchange by 40 ms).
    // Set on the listener, it is inherited by every accepted socket on Linux
    // and the BSDs, so it costs no system call per connection.
    socket.set_tcp_nodelay(true).map_err(named)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(named)?;
    }
    if reuse_port {
        set_reuse_port(&socket).map_err(named)?;
    }
    socket.set_nonblocking(true).map_err(named)?;
    socket.bind(&addr.into()).map_err(named)?;
    socket.listen(backlog).map_err(named)?;
    Ok(socket.into())
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
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
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
        let taken = bind_listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_listener(addr, 16, false).unwrap_err();
        assert_eq!(err.to_string(), format!("{addr}: address in use"));
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
