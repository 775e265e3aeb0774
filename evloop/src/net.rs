//! Sockets: listeners (TCP, or Unix stream) bound with errors that name
//! the address, and the non-blocking accept/read/write calls the reactor
//! makes, each turning errno into one `Outcome` so the reactor's decisions
//! sit in one place.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
#[cfg(not(target_vendor = "apple"))]
use rustix::net::SocketFlags;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketAddrUnix};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use crate::Address;
use crate::error;

/// The listen backlog used when none is given: the largest the kernel allows.
/// Linux, FreeBSD and macOS clamp `listen`'s argument to their configured
/// maximum (`net.core.somaxconn`, `kern.ipc.soacceptqueue`,
/// `kern.ipc.somaxconn`), so asking for `i32::MAX` means "the OS maximum".
pub const DEFAULT_BACKLOG: i32 = i32::MAX;

/// Whether a TCP listener shares its address with other sockets. Unix
/// sockets are never shared: `SO_REUSEPORT` does not apply to them.
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

/// A bound, listening, non-blocking socket: TCP, or a Unix domain stream
/// socket. Dropping it closes it, and removes a Unix socket's file if that
/// is still the file this listener created (not one a successor bound at
/// the same path after ours was deleted).
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    address: Address,
    /// A Unix socket's file, to remove on drop.
    file: Option<SocketFile>,
}

impl Drop for Listener {
    /// Removes the file first, so that it never outlives the socket that
    /// listens behind it (a client would find it refused, as a stale one).
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            file.remove_if_ours();
        }
    }
}

impl Listener {
    /// The address it listens on, with the port the system chose for port 0.
    pub fn local_addr(&self) -> &Address {
        &self.address
    }

    /// Takes over a listening stream socket another process bound (systemd,
    /// or the evloop this process succeeds): made non-blocking, with the
    /// options evloop's own TCP listeners have. Its Unix socket file, if
    /// any, belongs to whoever created it and is left in place.
    pub fn inherit(fd: OwnedFd) -> io::Result<Listener> {
        use rustix::net::sockopt;
        if sockopt::socket_type(&fd)? != rustix::net::SocketType::STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a stream socket",
            ));
        }
        if !is_listening(&fd)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a listening socket",
            ));
        }
        let socket = Socket::from(fd);
        socket.set_nonblocking(true)?;
        let address = local_of(&socket)?;
        if address.inet().is_some() {
            // What accepted sockets inherit (see `new_socket`).
            socket.set_tcp_nodelay(true)?;
        }
        Ok(Listener {
            socket,
            address,
            file: None,
        })
    }

    /// Whether more sockets may join this one's `SO_REUSEPORT` group.
    pub fn reuses_port(&self) -> bool {
        self.address.inet().is_some()
            && rustix::net::sockopt::socket_reuseport(&self.socket).unwrap_or(false)
    }

    /// A second descriptor for the same socket (close-on-exec), to hand to
    /// a successor process: the socket stays open while either holds it, so
    /// the connections in its backlog are never reset.
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        Ok(self.socket.try_clone()?.into())
    }

    /// Leaves the Unix socket file in place when the listener is dropped:
    /// a successor listens on the same socket.
    pub fn keep_file(&mut self) {
        self.file = None;
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Binds a non-blocking listener on `addr`.
///
/// TCP: accepted sockets inherit `TCP_NODELAY`; IPv6 listeners are
/// IPv6-only, so `0.0.0.0:P` and `[::]:P` can be bound side by side.
///
/// Unix (`share` does not apply): a socket file left at the path by a
/// server that is gone (a connect to it is refused) is replaced; one a live
/// server listens on is "address in use". `unix_mode`, if given, becomes
/// the file's permission bits before the socket listens, so no client can
/// connect under the mode the umask gave it. An abstract name
/// ([`Address::Abstract`]) exists on Linux and Android only.
///
/// Errors read like `127.0.0.1:1815: address in use` or
/// `unix:/run/x.sock: address in use`; their kind is the OS error's, and
/// the OS error itself (with its `raw_os_error`) is their
/// [`source`](std::error::Error::source).
pub fn bind_listener(
    addr: &Address,
    backlog: i32,
    share: Share,
    unix_mode: Option<u32>,
) -> io::Result<Listener> {
    match addr {
        Address::Inet(inet) => bind_tcp(*inet, backlog, share),
        Address::Unix(path) => bind_unix_file(path, backlog, unix_mode),
        Address::Abstract(name) => bind_abstract(name, backlog),
        Address::Unnamed => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot listen on an unnamed address",
        )),
    }
    .map_err(|error| {
        let message = format!("{addr}: {}", describe(addr, &error));
        error::described(error, message)
    })
}

fn bind_tcp(addr: SocketAddr, backlog: i32, share: Share) -> io::Result<Listener> {
    if share == Share::NewGroup && !REUSE_PORT_AFTER_BIND && addr.port() != 0 {
        // Without Linux's late SO_REUSEPORT (below), an exclusive probe bind
        // finds an existing holder. The probe is closed before the group
        // binds: a socket that binds with SO_REUSEPORT in between can still
        // join (ARCHITECTURE.md names this race).
        let probe = new_socket(addr)?;
        probe.bind(&addr.into())?;
        drop(probe);
    }
    let socket = new_socket(addr)?;
    let late_reuse_port = share == Share::NewGroup && REUSE_PORT_AFTER_BIND;
    if share == Share::JoinGroup || (share == Share::NewGroup && !late_reuse_port) {
        set_reuse_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    if late_reuse_port {
        // Bound without SO_REUSEPORT, so the bind failed if anything listens
        // here; set now, before `listen` forms the group, it lets our other
        // loops join. Linux checks the option at bind time, on both sides.
        set_reuse_port(&socket)?;
    }
    socket.listen(backlog)?;
    let bound = socket.local_addr()?.as_socket().unwrap_or(addr);
    Ok(Listener {
        file: None,
        socket,
        address: Address::Inet(bound),
    })
}

/// Whether a socket listens (`SO_ACCEPTCONN`).
#[cfg(not(target_vendor = "apple"))]
fn is_listening(fd: &OwnedFd) -> io::Result<bool> {
    Ok(rustix::net::sockopt::socket_acceptconn(fd)?)
}

/// Apple's kernels do not answer `SO_ACCEPTCONN`: a socket that does not
/// listen fails at its first `accept` instead.
#[cfg(target_vendor = "apple")]
fn is_listening(_fd: &OwnedFd) -> io::Result<bool> {
    Ok(true)
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

/// A non-blocking Unix stream socket.
fn unix_socket() -> io::Result<Socket> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Listens on a socket file at `path`, with the permission bits `mode`.
fn bind_unix_file(path: &Path, backlog: i32, mode: Option<u32>) -> io::Result<Listener> {
    let socket = unix_socket()?;
    let file = bind_path(&socket, path)?;
    // From here on, a failure drops the listener, which removes the file.
    let listener = Listener {
        file: Some(file),
        socket,
        address: Address::Unix(path.to_owned()),
    };
    // Before `listen`: until then a connect is refused, so no client gets
    // in under the mode the umask gave the file.
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    listener.socket.listen(backlog)?;
    Ok(listener)
}

/// Binds `socket` to the file at `path`, replacing a socket file that a
/// server which is gone left there. Returns the file, to remove later.
fn bind_path(socket: &Socket, path: &Path) -> io::Result<SocketFile> {
    let addr = SocketAddrUnix::new(path)?;
    match rustix::net::bind(socket, &addr) {
        Err(Errno::ADDRINUSE) if is_stale(path, &addr) => {
            debug!("{}: replacing a stale socket file", path.display());
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => rustix::net::bind(socket, &addr)?,
            }
        }
        result => result?,
    }
    let meta = fs::symlink_metadata(path)?;
    Ok(SocketFile {
        path: path.to_owned(),
        device: meta.dev(),
        inode: meta.ino(),
    })
}

/// Whether `path` holds a socket file nobody listens on: a connect to it is
/// refused (or the file has just gone). A file that is not a socket, a
/// socket that accepts or whose backlog is full (the connect does not wait:
/// `EAGAIN`), one we may not connect to: all belong to someone.
fn is_stale(path: &Path, addr: &SocketAddrUnix) -> bool {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => return false,
        Err(e) => return e.kind() == io::ErrorKind::NotFound,
    }
    let Ok(probe) = unix_socket() else {
        return false;
    };
    matches!(
        rustix::net::connect(&probe, addr),
        Err(Errno::CONNREFUSED | Errno::NOENT)
    )
}

/// Listens on a name in the abstract namespace (no file).
fn bind_abstract(name: &[u8], backlog: i32) -> io::Result<Listener> {
    let socket = unix_socket()?;
    rustix::net::bind(&socket, &abstract_address(name)?)?;
    socket.listen(backlog)?;
    Ok(Listener {
        file: None,
        socket,
        address: Address::Abstract(name.to_vec()),
    })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(name)?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddrUnix> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist on Linux and Android only",
    ))
}

/// A socket file a listener created, known by its device and inode as they
/// were after the bind.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl SocketFile {
    /// Removes the file if the path still names it: if ours was deleted and
    /// a successor bound the same path, the successor's file stays.
    fn remove_if_ours(&self) {
        let path = self.path.display();
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.device && meta.ino() == self.inode => {
                if let Err(e) = fs::remove_file(&self.path) {
                    debug!("{path}: removing the socket file: {e}");
                }
            }
            _ => debug!("{path}: no longer our socket file: left in place"),
        }
    }
}

/// A short, lowercase description of the errors people meet when binding.
fn describe(addr: &Address, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".into(),
        io::ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        io::ErrorKind::PermissionDenied if matches!(addr, Address::Inet(_)) => {
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
        Err(e) if is_reset(e) => Some(Outcome::Reset(e.into())),
        Err(e) => Some(Outcome::Failed(e.into())),
    }
}

/// Whether an error means the peer reset or abandoned the connection
/// (the completion driver asks this of the errors its completions carry).
pub(crate) fn is_reset(e: Errno) -> bool {
    matches!(
        e,
        Errno::CONNRESET
            | Errno::PIPE
            | Errno::CONNABORTED
            | Errno::TIMEDOUT
            | Errno::NOTCONN
            | Errno::HOSTUNREACH
            | Errno::NETUNREACH
    )
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
    send_with(socket, buf, SEND_FLAGS)
}

/// Writes from `buf`, more to follow at once (a file, by `sendfile`): on
/// Linux the kernel holds a short tail back to send it with what follows
/// (`MSG_MORE`) rather than as a packet of its own; elsewhere a plain send.
pub(crate) fn send_more(socket: &impl AsFd, buf: &[u8]) -> Outcome<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = SEND_FLAGS | SendFlags::MORE;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = SEND_FLAGS;
    send_with(socket, buf, flags)
}

fn send_with(socket: &impl AsFd, buf: &[u8], flags: SendFlags) -> Outcome<usize> {
    loop {
        if let Some(outcome) = classify(rustix::net::send(socket, buf, flags)) {
            return outcome;
        }
    }
}

/// Sends up to `len` bytes of `file` from `offset` (advanced by what went)
/// without copying them through this process.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn sendfile(
    socket: &impl AsFd,
    file: &impl AsFd,
    offset: &mut u64,
    len: u64,
) -> Outcome<usize> {
    let count = usize::try_from(len).unwrap_or(usize::MAX);
    loop {
        if let Some(outcome) = classify(rustix::fs::sendfile(socket, file, Some(offset), count)) {
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
pub(crate) fn accept(listener: &impl AsFd) -> Outcome<(OwnedFd, Address)> {
    loop {
        let result =
            accept_nonblocking(listener.as_fd()).map(|(fd, addr)| (fd, socket_address(addr)));
        if let Some(outcome) = classify(result) {
            return outcome;
        }
    }
}

/// The address of a connected socket's peer (`getpeername`).
pub(crate) fn peer_of(socket: &impl AsFd) -> io::Result<Address> {
    Ok(socket_address(rustix::net::getpeername(socket)?))
}

/// The address a socket is bound to (`getsockname`).
pub(crate) fn local_of(socket: &impl AsFd) -> io::Result<Address> {
    Ok(socket_address(Some(rustix::net::getsockname(socket)?)))
}

/// Who is at the other end of a Unix socket: the process, user and group
/// that connected (`SO_PEERCRED`, Linux and Android).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_credentials(socket: &impl AsFd) -> io::Result<(u32, u32, u32)> {
    if rustix::net::getsockname(socket)?.address_family() != AddressFamily::UNIX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "peer credentials exist for Unix sockets only",
        ));
    }
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    Ok((
        cred.pid.as_raw_nonzero().get() as u32,
        cred.uid.as_raw(),
        cred.gid.as_raw(),
    ))
}

/// Peer credentials are read on Linux and Android only so far.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn peer_credentials(_socket: &impl AsFd) -> io::Result<(u32, u32, u32)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "peer credentials are read on Linux and Android only",
    ))
}

/// A socket address as the kernel reported it; a Unix socket that did not
/// bind a name is [`Address::Unnamed`].
fn socket_address(addr: Option<SocketAddrAny>) -> Address {
    let Some(addr) = addr else {
        return Address::Unnamed;
    };
    if addr.address_family() != AddressFamily::UNIX {
        return SocketAddr::try_from(addr).map_or(Address::Unnamed, Address::Inet);
    }
    let Ok(unix) = SocketAddrUnix::try_from(addr) else {
        return Address::Unnamed;
    };
    if let Some(path) = unix.path_bytes() {
        return Address::Unix(PathBuf::from(OsStr::from_bytes(path)));
    }
    // An unnamed peer may come back as an empty abstract name.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(name) = unix.abstract_name().filter(|name| !name.is_empty()) {
        return Address::Abstract(name.to_vec());
    }
    Address::Unnamed
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
    use std::error::Error as _;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// Binds a TCP listener on `addr`.
    fn tcp(addr: SocketAddr, backlog: i32, share: Share) -> io::Result<Listener> {
        bind_listener(&Address::Inet(addr), backlog, share, None)
    }

    fn any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// The TCP address a listener got.
    fn inet(listener: &Listener) -> SocketAddr {
        listener.local_addr().inet().expect("a TCP listener")
    }

    fn accept_one(listener: &Listener) -> (OwnedFd, Address) {
        loop {
            match accept(listener) {
                Outcome::Done(accepted) => return accepted,
                Outcome::WouldBlock => std::thread::yield_now(),
                other => panic!("accept: {other:?}"),
            }
        }
    }

    /// A socket path of this test, removed when dropped.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> TempPath {
            let path =
                std::env::temp_dir().join(format!("evloop-net-{}-{name}", std::process::id()));
            let _ = fs::remove_file(&path);
            TempPath(path)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    /// The listener's TCP_NODELAY must reach accepted sockets, or replies
    /// may wait for delayed ACKs; this pins the kernel behaviour we rely on.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_are_nonblocking() {
        let listener = tcp(any_port(), 16, Share::Exclusive).unwrap();
        let client = std::net::TcpStream::connect(inet(&listener)).unwrap();
        let (fd, peer) = accept_one(&listener);
        assert_eq!(peer, Address::Inet(client.local_addr().unwrap()));
        let socket = socket2::SockRef::from(&fd);
        assert!(socket.tcp_nodelay().unwrap());
        // Non-blocking: with nothing sent, a read says WouldBlock at once.
        let mut buf = [0u8; 1];
        assert!(matches!(recv(&fd, &mut buf), Outcome::WouldBlock));
    }

    /// An accepted Unix socket is non-blocking too; its unbound client has
    /// no name, a bound one is named by its path.
    #[test]
    fn unix_peers_are_unnamed_unless_bound() {
        let path = TempPath::new("peers");
        let listener =
            bind_listener(&Address::Unix(path.0.clone()), 16, Share::Exclusive, None).unwrap();
        assert_eq!(listener.local_addr(), &Address::Unix(path.0.clone()));
        let _client = UnixStream::connect(&path.0).unwrap();
        let (fd, peer) = accept_one(&listener);
        assert_eq!(peer, Address::Unnamed);
        let mut buf = [0u8; 1];
        assert!(matches!(recv(&fd, &mut buf), Outcome::WouldBlock));

        let client_path = TempPath::new("peers-client");
        let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        rustix::net::bind(&client, &SocketAddrUnix::new(&client_path.0).unwrap()).unwrap();
        rustix::net::connect(&client, &SocketAddrUnix::new(&path.0).unwrap()).unwrap();
        let (_, peer) = accept_one(&listener);
        assert_eq!(peer, Address::Unix(client_path.0.clone()));
    }

    #[test]
    fn bind_errors_name_the_address_and_keep_the_os_error() {
        let taken = tcp(any_port(), 16, Share::Exclusive).unwrap();
        let addr = inet(&taken);
        let err = tcp(addr, 16, Share::Exclusive).unwrap_err();
        assert_eq!(err.to_string(), format!("{addr}: address in use"));
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let os = err.source().and_then(|e| e.downcast_ref::<io::Error>());
        assert_eq!(
            os.and_then(io::Error::raw_os_error),
            Some(Errno::ADDRINUSE.raw_os_error())
        );
    }

    /// Pitfall 12: a group's first socket binds only where nothing listens,
    /// even a socket that set SO_REUSEPORT itself (another server's group).
    #[test]
    fn a_new_group_refuses_an_address_another_group_holds() {
        let stranger = tcp(any_port(), 16, Share::NewGroup).unwrap();
        let addr = inet(&stranger);
        let err = tcp(addr, 16, Share::NewGroup).unwrap_err();
        assert_eq!(err.to_string(), format!("{addr}: address in use"));
        let joiner = tcp(any_port(), 16, Share::JoinGroup).unwrap();
        let addr = inet(&joiner);
        let err = tcp(addr, 16, Share::NewGroup).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// The group's own members join it, and the kernel spreads new
    /// connections over them (64 connections all landing on one of two
    /// sockets would happen once in 2^63 runs).
    #[test]
    fn a_group_shares_its_address_with_its_members() {
        let first = tcp(any_port(), 128, Share::NewGroup).unwrap();
        let addr = inet(&first);
        let second = tcp(addr, 128, Share::JoinGroup).unwrap();
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let accepted = |listener: &Listener| {
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

    /// A file at the path that is not a socket is never removed.
    #[test]
    fn a_file_that_is_not_a_socket_is_in_use() {
        let path = TempPath::new("regular");
        fs::write(&path.0, b"keep me").unwrap();
        let addr = Address::Unix(path.0.clone());
        let err = bind_listener(&addr, 16, Share::Exclusive, None).unwrap_err();
        assert_eq!(err.to_string(), format!("{addr}: address in use"));
        assert_eq!(fs::read(&path.0).unwrap(), b"keep me");
    }

    #[test]
    fn an_unnamed_address_cannot_listen() {
        let err = bind_listener(&Address::Unnamed, 16, Share::Exclusive, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unix:(unnamed): cannot listen on an unnamed address"
        );
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
