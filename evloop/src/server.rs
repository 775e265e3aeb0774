//! The server: listeners, one loop per thread, signals and graceful shutdown.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};

use crate::Address;
use crate::clock::MAX_SPAN;
use crate::config::Config;
use crate::driver::{self, Chosen, Driver};
use crate::net::{self, Share};
use crate::poll::{Events, Poller, Token, Waker};
use crate::reactor::{Command, LoopHandle, LoopIo, LoopReport, LoopWaker, Reactor, Shared};
#[cfg(target_os = "linux")]
use crate::ring::RingConfig;
use crate::service::Service;
use crate::signals::{SignalHook, SignalPipe};
use crate::stats::{Counters, LiveCounters, LoopStats};

/// How connections are spread over loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// Each loop binds its own listener with `SO_REUSEPORT`
    /// (`SO_REUSEPORT_LB` on FreeBSD) and the kernel spreads connections.
    ReusePort,
    /// One listener, accepted by loop 0, which hands each connection to the
    /// least loaded loop through its mailbox.
    ///
    /// Unix sockets are balanced this way in either mode: `SO_REUSEPORT`
    /// does not apply to them.
    Handoff,
}

impl Balance {
    /// `ReusePort` where the kernel balances (Linux, Android, FreeBSD,
    /// DragonFly), `Handoff` elsewhere (macOS's `SO_REUSEPORT` does not balance).
    pub fn platform_default() -> Balance {
        if cfg!(any(
            target_os = "linux",
            target_os = "android",
            target_os = "freebsd",
            target_os = "dragonfly"
        )) {
            Balance::ReusePort
        } else {
            Balance::Handoff
        }
    }
}

/// Longer timeouts are taken as this long (a century): `Duration::MAX`
/// means "no limit" to a caller, but cannot be added to an `Instant`.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Configures and binds a [`Server`].
pub struct ServerBuilder {
    addrs: Vec<Address>,
    inherited: Vec<OwnedFd>,
    unix_mode: Option<u32>,
    threads: Option<usize>,
    balance: Balance,
    backlog: i32,
    config: Config,
    signals: bool,
    restart: Option<SignalHook>,
    reload: Option<SignalHook>,
    on_state: Option<StateHook>,
    driver: Driver,
    #[cfg(target_os = "linux")]
    ring: RingConfig,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("addrs", &self.addrs)
            .field("inherited", &self.inherited)
            .field("threads", &self.threads)
            .field("balance", &self.balance)
            .field("config", &self.config)
            .field("signals", &self.signals)
            .field("restart", &self.restart.is_some())
            .field("reload", &self.reload.is_some())
            .field("on_state", &self.on_state.is_some())
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// How the loops move bytes: io_uring where it works (the default,
    /// [`Driver::Auto`]), or a driver of your choice. See [`Driver`].
    pub fn io(mut self, driver: Driver) -> Self {
        self.driver = driver;
        self
    }

    /// The sizes of each loop's io_uring (entries, provided receive
    /// buffers), when the completion driver runs. Default:
    /// [`RingConfig::default`] — 1024 entries, 1024 buffers of 4 KiB, which
    /// each loop allocates once (4 MiB of address space; the pages are
    /// touched as receives use them).
    #[cfg(target_os = "linux")]
    pub fn ring(mut self, ring: RingConfig) -> Self {
        self.ring = ring;
        self
    }

    /// Adds an address to listen on (may be called more than once): a
    /// [`SocketAddr`] for TCP (port 0 picks a free port, shared by all
    /// loops), or a Unix socket, [`Address::Unix`] (a file) or
    /// [`Address::Abstract`] (Linux and Android).
    ///
    /// A Unix socket file left by a server that is gone (connecting to it
    /// is refused) is replaced; one a live server listens on is refused as
    /// "address in use". The file is removed when the server finishes or is
    /// dropped, unless the path names another socket by then.
    pub fn listen(mut self, addr: impl Into<Address>) -> Self {
        self.addrs.push(addr.into());
        self
    }

    /// Adds a listening socket bound by someone else: systemd's socket
    /// activation, or the evloop this process takes over from (see
    /// [`activation`](crate::activation)). TCP or Unix, checked by
    /// [`build`](Self::build) to be a listening stream socket.
    ///
    /// An address also given to [`listen`](Self::listen) is served by the
    /// inherited socket instead of being bound again, in that address's
    /// place among [`Server::local_addrs`] (inherited sockets no address
    /// names come after the listed ones); a listed port 0 is satisfied by an
    /// inherited socket on the same IP address, whatever its port (the port
    /// a predecessor's port 0 chose).
    ///
    /// Several descriptors for one address (an `SO_REUSEPORT` group handed
    /// over whole) are spread over the loops. With
    /// [`Balance::ReusePort`], a TCP socket that has `SO_REUSEPORT` set is
    /// joined by sockets the loops bind, until every loop has one; any other
    /// is accepted by loop 0, which hands connections off. A Unix socket's
    /// file is never removed by this server: it belongs to whoever made it.
    pub fn listen_fd(mut self, fd: OwnedFd) -> Self {
        self.inherited.push(fd);
        self
    }

    /// The permission bits (at most `0o777`, e.g. `0o660`) of the Unix
    /// socket files the server creates, set before they listen so that no
    /// client connects under the mode the umask gave them. Connecting needs
    /// write permission. Abstract names have no file, hence no mode.
    /// Default: what the umask leaves of `0o777`.
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.unix_mode = Some(mode);
        self
    }

    /// The number of loops (threads). Default: the CPUs available to the process.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// How connections are spread over loops. Default: [`Balance::platform_default`].
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// The listen backlog. Default: the OS maximum (the kernel lowers larger
    /// values to its `somaxconn`).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Open connections allowed server-wide. A connection counts from its
    /// accept until it is closed (while it drains, lingers after its
    /// handler's close, or travels to another loop too). At the limit, a
    /// newcomer waits in the backlog for up to 250 ms while the loops serve
    /// what they hold and retire connections whose clients have gone (a
    /// client that closes and reconnects at once is not refused); if no slot
    /// frees, it is accepted and closed, so that it learns at once rather
    /// than waiting in the backlog. Default: 100,000.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// Closes a connection with no traffic in either direction for this long
    /// (at most 24 days; longer is taken as 24 days). Default: off.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout.map(|t| t.min(MAX_SPAN));
        self
    }

    /// How long a connection closed by its handler ([`Action::Close`])
    /// waits, after its output and a FIN, for the client to close too,
    /// discarding what it still sends (at most 24 days). Closing at once
    /// with unread input would reset the connection and could destroy the
    /// answer in flight. Default: 5 s.
    ///
    /// [`Action::Close`]: crate::Action::Close
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.linger = linger.min(MAX_SPAN);
        self
    }

    /// How many bytes a loop reads from one connection before it serves the
    /// others (at least 1): fairness against bulk clients. Default: 256 KiB.
    pub fn read_budget(mut self, bytes: usize) -> Self {
        self.config.read_budget = bytes.max(1);
        self
    }

    /// How long shutdown waits for connections to finish. Default: 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout.min(FOREVER);
        self
    }

    /// Output watermarks per connection: reading stops once `high` bytes of
    /// output are pending and resumes when no more than `low` are.
    /// Default: 64 KiB and 256 KiB.
    pub fn watermarks(mut self, low: usize, high: usize) -> Self {
        self.config.low_watermark = low.min(high);
        self.config.high_watermark = high.max(1);
        self
    }

    /// The most bytes all connections together may hold in their buffers
    /// (output their clients have not taken yet, input their handlers left).
    /// Past it, a connection that holds bytes stops reading until its output
    /// drains or the server is back under ¾ of the budget, and one that
    /// holds none reads 4 KiB at a time; so the server's buffers stay within
    /// the budget plus one small read per connection, and clients whose
    /// answers go straight out are still served. Freed memory is given back
    /// to the system after a peak. Default: 64 MiB.
    pub fn max_buffered(mut self, bytes: usize) -> Self {
        self.config.max_buffered = bytes.max(1);
        self
    }

    /// The most input a handler may leave unconsumed; past it the
    /// connection is closed as an error. Default: 64 KiB.
    pub fn max_input(mut self, max: usize) -> Self {
        self.config.max_input = max;
        self
    }

    /// Whether [`Server::run`] handles SIGINT, SIGTERM and SIGQUIT (first:
    /// graceful shutdown; second: cut connections now), SIGHUP and SIGUSR2
    /// (the [restart hook](Self::on_restart_signal), else logged) and SIGUSR1
    /// (the [reload hook](Self::on_reload_signal), else logged): see
    /// [`Server`'s docs](Server#signals). No other signal is touched.
    /// The handlers are installed by [`build`](Self::build), so a signal that
    /// arrives before `run` is acted on when it starts; once no server in
    /// the process handles them (each has returned from `run` or been
    /// dropped), they take their default action again. Default: off, as a
    /// library should not take over a process's signals unasked.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// What SIGHUP and SIGUSR2 do when [`handle_signals`](Self::handle_signals)
    /// is on: `hook` runs on the server's control thread with the signal's
    /// name (`"SIGHUP"`), and must return at once — start the successor on a
    /// thread of its own, then call [`ShutdownHandle::hand_over`] once it
    /// serves. Without a hook, these signals are logged and ignored.
    pub fn on_restart_signal(mut self, hook: impl FnMut(&'static str) + Send + 'static) -> Self {
        self.restart = Some(Box::new(hook));
        self
    }

    /// What SIGUSR1 does when [`handle_signals`](Self::handle_signals) is
    /// on: `hook` runs on the server's control thread with the signal's
    /// name (`"SIGUSR1"`), to reload in place what can be (e.g. the
    /// certificates a TLS layer serves: `tls::Certificates::reload`), and must return
    /// soon: the server goes on serving meanwhile. Without a hook, SIGUSR1
    /// is logged and ignored.
    pub fn on_reload_signal(mut self, hook: impl FnMut(&'static str) + Send + 'static) -> Self {
        self.reload = Some(Box::new(hook));
        self
    }

    /// Runs `hook` on the server's control thread each time the server
    /// enters a [`State`]: [`Serving`](State::Serving) once every loop has
    /// set up its I/O and runs (the moment to tell a service manager or a
    /// predecessor that the server is ready), [`Draining`](State::Draining)
    /// at the first shutdown request, [`Stopped`](State::Stopped) when the
    /// loops have finished. It must return at once.
    pub fn on_state(mut self, hook: impl FnMut(State) + Send + 'static) -> Self {
        self.on_state = Some(Box::new(hook));
        self
    }

    /// Binds every listener now, so that address errors surface before
    /// anything runs ("127.0.0.1:1815: address in use"). With no address,
    /// listens on `127.0.0.1:1815`.
    pub fn build<S: Service>(self, service: S) -> io::Result<Server<S>> {
        self.build_with(|_| service)
    }

    /// Like [`build`](Self::build), for a service that must know the
    /// addresses bound (with the ports chosen for port 0, in the order
    /// given): `make` gets them once every listener is bound, and returns
    /// the service. E.g. the [PROXY protocol](crate::proxy) on some of the
    /// listeners only:
    ///
    /// ```
    /// use evloop::{Server, proxy::ProxyProtocol, services::Echo};
    ///
    /// let server = Server::builder()
    ///     .listen("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()) // behind the proxy
    ///     .listen("[::1]:0".parse::<std::net::SocketAddr>().unwrap())
    ///     .build_with(|bound| {
    ///         ProxyProtocol::builder()
    ///             .only_on([bound[0].clone()])
    ///             .build(Echo)
    ///     });
    /// # let _ = server;
    /// ```
    pub fn build_with<S: Service>(
        self,
        make: impl FnOnce(&[Address]) -> S,
    ) -> io::Result<Server<S>> {
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let addrs = if self.addrs.is_empty() && self.inherited.is_empty() {
            vec![Address::from(SocketAddr::from(([127, 0, 0, 1], 1815)))]
        } else {
            self.addrs
        };
        if let Some(mode) = self.unix_mode.filter(|&mode| mode > 0o777) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unix mode {mode:#o}: only permission bits (at most 0o777)"),
            ));
        }
        let mut listeners: Vec<Vec<(net::Listener, bool)>> =
            (0..threads).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::with_capacity(addrs.len());
        for (i, addr) in addrs.iter().enumerate() {
            if addrs[..i].contains(addr) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{addr}: listed twice"),
                ));
            }
        }
        let mut inherited = inherit(self.inherited)?;
        for addr in addrs {
            // Handed a socket for this address (a restart hands over the
            // port a predecessor's port 0 chose): that one serves it, in
            // the address's place, so that the order of the addresses
            // (`local_addrs`, what `build_with` sees) is the order given.
            if let Some(i) = (inherited.iter()).position(|g| g[0].local_addr().satisfies(&addr)) {
                let group = inherited.remove(i);
                let address = place_inherited(group, &mut listeners, self.balance, self.backlog)?;
                local_addrs.push(address);
                continue;
            }
            // A Unix socket cannot be shared (no SO_REUSEPORT): loop 0
            // accepts its connections and hands them off, in either mode.
            let handoff =
                threads > 1 && (self.balance == Balance::Handoff || addr.inet().is_none());
            let grouped = threads > 1 && !handoff;
            let share = if grouped {
                Share::NewGroup
            } else {
                Share::Exclusive
            };
            let first = net::bind_listener(&addr, self.backlog, share, self.unix_mode)?;
            // Port 0: every loop must bind the port the first one got.
            let bound = first.local_addr().clone();
            listeners[0].push((first, handoff));
            if grouped {
                for loop_listeners in &mut listeners[1..] {
                    let joined = net::bind_listener(&bound, self.backlog, Share::JoinGroup, None)?;
                    loop_listeners.push((joined, false));
                }
            }
            local_addrs.push(bound);
        }
        // Then the inherited sockets no address asked for, in the order given.
        for group in inherited {
            let address = place_inherited(group, &mut listeners, self.balance, self.backlog)?;
            local_addrs.push(address);
        }
        let handoff = listeners[0].iter().any(|&(_, handoff)| handoff);
        let (driver, fallback) = driver::choose(self.driver)?;
        match fallback {
            None => info!("I/O driver: {driver}"),
            Some(why) => info!("I/O driver: {driver} (io_uring unavailable: {why})"),
        }
        let control = Arc::new(Control::new(threads)?);
        // Installed now, not in `run`: a caller may announce the addresses
        // between `build` and `run`, and a signal sent on seeing them must
        // drain the server, not kill the process with the default action.
        let signals = if self.signals {
            Some(SignalPipe::install(&control.poller, SIGNALS)?)
        } else {
            None
        };
        let service = make(&local_addrs);
        Ok(Server {
            restart: self.restart,
            reload: self.reload,
            on_state: self.on_state,
            service: Arc::new(service),
            listeners,
            local_addrs,
            config: self.config,
            handoff,
            signals,
            control,
            driver,
            #[cfg(target_os = "linux")]
            ring: self.ring,
        })
    }
}

/// Takes over the listening sockets another process bound, grouped by
/// address.
fn inherit(fds: Vec<OwnedFd>) -> io::Result<Vec<Vec<net::Listener>>> {
    let mut groups: Vec<Vec<net::Listener>> = Vec::new();
    for fd in fds {
        let raw = fd.as_raw_fd();
        let listener = net::Listener::inherit(fd).map_err(|e| {
            let message = format!("inherited descriptor {raw}: {e}");
            crate::error::described(e, message)
        })?;
        match groups
            .iter_mut()
            .find(|group| group[0].local_addr() == listener.local_addr())
        {
            Some(group) => group.push(listener),
            None => groups.push(vec![listener]),
        }
    }
    Ok(groups)
}

/// Gives the loops an inherited group of listeners for one address (see
/// [`ServerBuilder::listen_fd`]); returns the address.
fn place_inherited(
    group: Vec<net::Listener>,
    listeners: &mut [Vec<(net::Listener, bool)>],
    balance: Balance,
    backlog: i32,
) -> io::Result<Address> {
    let threads = listeners.len();
    let address = group[0].local_addr().clone();
    let shared = threads > 1 && balance == Balance::ReusePort && group[0].reuses_port();
    // The kernel lets a socket join a group only under the user that made
    // it: systemd makes its sockets as root, and a service under another
    // user (DynamicUser=) cannot join them.
    let joined = shared.then(|| {
        (group.len()..threads)
            .map(|_| net::bind_listener(&address, backlog, Share::JoinGroup, None))
            .collect::<io::Result<Vec<_>>>()
    });
    let joined = match joined {
        Some(Ok(joined)) => Some(joined),
        Some(Err(e)) => {
            warn!(
                "{address}: the loops cannot join the inherited SO_REUSEPORT group ({e}); loop 0 accepts and hands connections to the others"
            );
            None
        }
        None => None,
    };
    if let Some(joined) = joined {
        let given = group.len();
        for (i, listener) in group.into_iter().enumerate() {
            listeners[i % threads].push((listener, false));
        }
        for (loop_listeners, joined) in listeners.iter_mut().skip(given).zip(joined) {
            loop_listeners.push((joined, false));
        }
    } else {
        for listener in group {
            listeners[0].push((listener, threads > 1));
        }
    }
    Ok(address)
}

/// A bound server, ready to [`run`](Server::run).
///
/// ```no_run
/// use std::time::Duration;
/// use evloop::{Address, Server, services::Echo};
///
/// let server = Server::builder()
///     .listen("127.0.0.1:7007".parse::<Address>().unwrap())
///     .listen("unix:/run/evloop.sock".parse::<Address>().unwrap())
///     .unix_mode(0o660)
///     .threads(2)
///     .max_connections(10_000)
///     .idle_timeout(Some(Duration::from_secs(60)))
///     .handle_signals(true) // SIGINT/SIGTERM/SIGQUIT: drain, then return
///     .build(Echo)?;
/// for addr in server.local_addrs() {
///     println!("listening on {addr}");
/// }
/// let report = server.run()?;
/// println!("{}", report.total());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Threads
///
/// [`Server::run`] spawns one thread per loop (`evloop-0`, `evloop-1`, …) and
/// uses the calling thread as the control thread: it sleeps on its own poller
/// until a signal, a [`ShutdownHandle`] request or a loop's exit wakes it, and
/// relays shutdown to the loops through their mailboxes.
///
/// # Shutdown
///
/// The first request (SIGINT, SIGTERM, SIGQUIT or
/// [`ShutdownHandle::shutdown`]) makes every loop accept what is already
/// queued, close its listeners (new connections are refused from then on)
/// and serve its connections until they close or `shutdown_timeout` passes,
/// when the rest are cut. A second request cuts them at once.
/// [`Report::is_clean`] tells whether any were cut.
///
/// # Signals
///
/// With [`ServerBuilder::handle_signals`] on, the server takes over the
/// signals an operator commonly sends, following nginx's conventions, and
/// logs one line naming each signal it receives:
///
/// | signal | what the server does |
/// |---|---|
/// | SIGINT, SIGTERM, SIGQUIT | a shutdown request (above) |
/// | SIGHUP | nginx reloads its configuration; runs the [restart hook](ServerBuilder::on_restart_signal) (without one: logs that and keeps serving) |
/// | SIGUSR1 | nginx reopens its log files; runs the [reload hook](ServerBuilder::on_reload_signal), e.g. to read certificates again (without one: logs that and keeps serving) |
/// | SIGUSR2 | nginx upgrades its binary; as SIGHUP |
///
/// The handlers only write a byte to a pipe per signal, which the control
/// thread watches. Once no server in the process handles signals (every
/// such server has returned from [`Server::run`] or been dropped), these
/// signals take their default action again.
pub struct Server<S> {
    restart: Option<SignalHook>,
    reload: Option<SignalHook>,
    on_state: Option<StateHook>,
    service: Arc<S>,
    /// Listeners by loop index, each with whether it hands connections off.
    listeners: Vec<Vec<(net::Listener, bool)>>,
    local_addrs: Vec<Address>,
    config: Config,
    /// Whether loop 0 hands connections off (see `Shared::handoff`).
    handoff: bool,
    signals: Option<SignalPipe>,
    control: Arc<Control>,
    driver: Chosen,
    #[cfg(target_os = "linux")]
    ring: RingConfig,
}

impl<S> fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .field("loops", &self.listeners.len())
            .field("driver", &self.driver)
            .field("restart", &self.restart.is_some())
            .field("reload", &self.reload.is_some())
            .finish_non_exhaustive()
    }
}

impl Server<()> {
    /// A builder with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            addrs: Vec::new(),
            inherited: Vec::new(),
            unix_mode: None,
            threads: None,
            balance: Balance::platform_default(),
            backlog: net::DEFAULT_BACKLOG,
            config: Config::default(),
            signals: false,
            restart: None,
            reload: None,
            on_state: None,
            driver: Driver::Auto,
            #[cfg(target_os = "linux")]
            ring: RingConfig::default(),
        }
    }
}

const CONTROL_WAKER: Token = Token(0);
const SIGNALS: Token = Token(1);

/// The control thread's poller and what wakes it.
#[derive(Debug)]
struct Control {
    poller: Poller,
    waker: Waker,
    /// Shutdown requests made through handles.
    requests: AtomicUsize,
    /// Loops that have returned from `Reactor::run`, counted before they
    /// wake the control thread (a `JoinHandle` is not yet finished then).
    exited: AtomicUsize,
    /// Each loop's counters, by loop index: the loop writes them, a
    /// [`StatsHandle`] reads them.
    counters: Vec<Arc<LiveCounters>>,
    /// The [`State`], as its `u8`.
    state: AtomicU8,
    /// A successor has taken over the listening sockets
    /// ([`ShutdownHandle::hand_over`]).
    hand_over: AtomicBool,
    /// Loops whose I/O is set up, about to run.
    started: AtomicUsize,
    /// What the loops share (their mailboxes), once they run.
    shared: OnceLock<Arc<Shared>>,
}

impl Control {
    fn new(loops: usize) -> io::Result<Control> {
        let poller = Poller::new()?;
        let waker = Waker::new(&poller, CONTROL_WAKER)?;
        Ok(Control {
            poller,
            waker,
            requests: AtomicUsize::new(0),
            exited: AtomicUsize::new(0),
            counters: (0..loops).map(|_| Arc::default()).collect(),
            state: AtomicU8::new(State::Bound as u8),
            hand_over: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            shared: OnceLock::new(),
        })
    }

    fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Release);
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            warn!("waking the control thread failed: {e}");
        }
    }
}

/// Asks a running server to shut down, from any thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    control: Arc<Control>,
}

impl ShutdownHandle {
    /// The first call starts a graceful shutdown; a second cuts the
    /// remaining connections at once, like a second signal.
    pub fn shutdown(&self) {
        self.control.requests.fetch_add(1, Ordering::AcqRel);
        self.control.wake();
    }

    /// A graceful shutdown for a successor process that has the listening
    /// sockets too ([`Server::listener_fds`]) and serves: the loops stop
    /// accepting and drain as after [`shutdown`](Self::shutdown), but leave
    /// the Unix socket files in place, since the successor listens behind
    /// them. Connections waiting in the backlogs stay there for the
    /// successor: the sockets stay open while it holds them.
    pub fn hand_over(&self) {
        self.control.hand_over.store(true, Ordering::Release);
        self.shutdown();
    }
}

/// What [`ServerBuilder::on_state`] runs.
type StateHook = Box<dyn FnMut(State) + Send>;

/// Where a server is in its life, as a [`StatsHandle`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum State {
    /// Built: its listeners are bound (the kernel queues connections), but
    /// [`Server::run`] has not started its loops yet.
    Bound,
    /// Its loops accept and serve.
    Serving,
    /// Shutting down: no longer accepting, serving the connections it has
    /// until they finish or the shutdown deadline cuts them.
    Draining,
    /// Every loop has stopped.
    Stopped,
}

impl State {
    /// Every state, in the order a server passes through them (e.g. for a
    /// metric with one series per state).
    pub const ALL: [State; 4] = [
        State::Bound,
        State::Serving,
        State::Draining,
        State::Stopped,
    ];

    fn from_u8(value: u8) -> State {
        State::ALL
            .into_iter()
            .find(|&state| state as u8 == value)
            .unwrap_or(State::Stopped)
    }

    /// The state's name in lowercase (`serving`), e.g. for a metric label.
    pub fn name(self) -> &'static str {
        match self {
            State::Bound => "bound",
            State::Serving => "serving",
            State::Draining => "draining",
            State::Stopped => "stopped",
        }
    }
}

/// Reads a server's counters from any thread while it runs: each loop's
/// counters stay the loop's own (plain stores, no shared atomic), and a
/// reader loads them when it asks. Cheap enough to call on every metrics
/// scrape: a few dozen loads per loop.
#[derive(Clone, Debug)]
pub struct StatsHandle {
    control: Arc<Control>,
}

impl StatsHandle {
    /// Each loop's counters and gauges now, by loop index.
    pub fn loops(&self) -> Vec<LoopStats> {
        self.control.counters.iter().map(|c| c.stats()).collect()
    }

    /// Where the server is in its life.
    pub fn state(&self) -> State {
        State::from_u8(self.control.state.load(Ordering::Acquire))
    }

    /// Asks every running loop to show that it turns: each counts an
    /// answer in [`LoopStats::answered`] on its next turn, however idle
    /// (the request wakes it). A health check pings, waits, and sees
    /// whether every loop's count moved. Does nothing unless the loops run.
    pub fn ping(&self) {
        if let Some(shared) = self.control.shared.get() {
            broadcast(shared, || Command::Ping);
        }
    }
}

/// What a server did, loop by loop.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One report per loop, by loop index.
    pub loops: Vec<LoopReport>,
}

impl Report {
    /// The counters of all loops summed.
    pub fn total(&self) -> Counters {
        let mut total = Counters::default();
        for report in &self.loops {
            total.add(&report.counters);
        }
        total
    }

    /// Connections cut by the shutdown deadline or a forced shutdown.
    pub fn cut(&self) -> u64 {
        self.loops.iter().map(|l| l.cut).sum()
    }

    /// Whether every connection finished on its own.
    pub fn is_clean(&self) -> bool {
        self.cut() == 0
    }
}

impl<S: Service> Server<S> {
    /// The addresses the server listens on, in the order given (with the
    /// ports chosen for port 0).
    pub fn local_addrs(&self) -> &[Address] {
        &self.local_addrs
    }

    /// The I/O driver the loops run on, as the start-up log names it:
    /// `epoll`, `kqueue`, or `io_uring (…)` with the ring's setup.
    pub fn driver(&self) -> String {
        self.driver.to_string()
    }

    /// The number of loops (threads) the server runs.
    pub fn loops(&self) -> usize {
        self.listeners.len()
    }

    /// A handle to read the server's counters from another thread, before,
    /// while and after it runs.
    pub fn stats(&self) -> StatsHandle {
        StatsHandle {
            control: Arc::clone(&self.control),
        }
    }

    /// Second descriptors (close-on-exec) for every listening socket of
    /// every loop, to hand to a successor process (see
    /// [`activation::spawn_successor`](crate::activation::spawn_successor)):
    /// the sockets stay open as long as either process holds them, so a
    /// connection in a backlog is never refused or reset across a restart.
    pub fn listener_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.listeners
            .iter()
            .flatten()
            .map(|(listener, _)| listener.duplicate())
            .collect()
    }

    /// A handle to shut the server down from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            control: Arc::clone(&self.control),
        }
    }

    /// Runs every loop until shutdown has drained them; returns their
    /// counters. Fails if a loop failed (its poller broke), after stopping
    /// the others.
    pub fn run(self) -> io::Result<Report> {
        let Server {
            mut restart,
            mut reload,
            mut on_state,
            service,
            listeners,
            config,
            handoff,
            signals,
            control,
            driver,
            #[cfg(target_os = "linux")]
            ring,
            ..
        } = self;
        let seed = match driver {
            Chosen::Readiness => Seed::Poller,
            #[cfg(target_os = "linux")]
            Chosen::Uring(_) => Seed::Ring(ring),
        };
        let (shared, joins) = spawn_loops(service, listeners, config, handoff, seed, &control)?;
        let _ = control.shared.set(Arc::clone(&shared));
        let mut enter = |state: State| {
            control.set_state(state);
            if let Some(hook) = on_state.as_mut() {
                hook(state);
            }
        };
        let mut events = Events::with_capacity(8);
        let mut requests_seen = 0;
        let mut stage = Stage::Running;
        loop {
            if let Err(e) = control.poller.wait(&mut events, None) {
                broadcast(&shared, || Command::ForceClose);
                let _ = collect(joins);
                enter(State::Stopped);
                return Err(e);
            }
            if stage == Stage::Running
                && control.state.load(Ordering::Acquire) == State::Bound as u8
                && control.started.load(Ordering::Acquire) == joins.len()
            {
                enter(State::Serving);
            }
            let requests = control.requests.load(Ordering::Acquire);
            let mut new_requests = requests - requests_seen;
            requests_seen = requests;
            if let Some(signals) = &signals {
                new_requests += signals.take_shutdown_requests(restart.as_mut(), reload.as_mut());
            }
            let finished = control.exited.load(Ordering::Acquire);
            if finished == joins.len() {
                break;
            }
            // A loop that stopped on its own failed: stop the others too.
            if finished > 0 && stage == Stage::Running {
                new_requests += 1;
            }
            if new_requests > 0 && control.hand_over.load(Ordering::Acquire) {
                shared.keep_socket_files.store(true, Ordering::Release);
            }
            for _ in 0..new_requests {
                if stage == Stage::Running {
                    enter(State::Draining);
                }
                stage = stage.escalate(&shared);
            }
        }
        drop(signals);
        let report = collect(joins);
        enter(State::Stopped);
        report
    }
}

/// The loops' threads, running; joined by [`collect`].
type Loops = Vec<JoinHandle<io::Result<LoopReport>>>;

/// What each loop's I/O is made from.
#[derive(Clone, Copy)]
enum Seed {
    /// A poller, made before the loops start.
    Poller,
    /// A ring of these sizes, made by the loop's own thread: a ring set up
    /// for a single issuer belongs to the thread that creates it.
    #[cfg(target_os = "linux")]
    Ring(RingConfig),
}

/// A loop's I/O, or the sizes of the ring its thread is to make.
enum LoopSeed {
    Poller(Poller),
    #[cfg(target_os = "linux")]
    Ring(RingConfig),
}

impl LoopSeed {
    fn grow(self) -> io::Result<LoopIo> {
        match self {
            LoopSeed::Poller(poller) => Ok(LoopIo::Readiness(poller)),
            #[cfg(target_os = "linux")]
            LoopSeed::Ring(config) => Ok(LoopIo::Completion(Box::new(
                crate::reactor::Completions::new(crate::ring::Ring::new(config)?),
            ))),
        }
    }
}

/// Starts one thread per loop (`evloop-0`, …). If a thread cannot be
/// started, the ones already running are stopped before the error returns.
fn spawn_loops<S: Service>(
    service: Arc<S>,
    listeners: Vec<Vec<(net::Listener, bool)>>,
    config: Config,
    handoff: bool,
    seed: Seed,
    control: &Arc<Control>,
) -> io::Result<(Arc<Shared>, Loops)> {
    let threads = listeners.len();
    let mut seeds = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    let mut mailboxes = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (loop_seed, waker) = match seed {
            Seed::Poller => {
                let poller = Poller::new()?;
                let waker = LoopWaker::poll(&poller)?;
                (LoopSeed::Poller(poller), waker)
            }
            #[cfg(target_os = "linux")]
            Seed::Ring(config) => (
                LoopSeed::Ring(config),
                LoopWaker::Ring(crate::ring::Waker::new()?),
            ),
        };
        let (handle, mailbox) = LoopHandle::new(waker);
        seeds.push(loop_seed);
        handles.push(handle);
        mailboxes.push(mailbox);
    }
    let shared = Arc::new(Shared {
        config,
        active: AtomicUsize::new(0),
        slot_waiters: AtomicUsize::new(0),
        buffered: AtomicUsize::new(0),
        buffered_peaked: AtomicBool::new(false),
        keep_socket_files: AtomicBool::new(false),
        loops: handles,
        handoff,
    });
    let mut joins: Loops = Vec::with_capacity(threads);
    let parts = seeds.into_iter().zip(mailboxes).zip(listeners);
    for (index, ((seed, mailbox), listeners)) in parts.enumerate() {
        let loop_shared = Arc::clone(&shared);
        let service = Arc::clone(&service);
        let counters = Arc::clone(&control.counters[index]);
        let control = Arc::clone(control);
        let spawned = std::thread::Builder::new()
            .name(format!("evloop-{index}"))
            .spawn(move || {
                // Tells the control thread when the loop ends, however it
                // ends: by returning, failing, or panicking.
                let _exit = ExitNotice(Arc::clone(&control));
                let reactor = seed.grow().and_then(|io| {
                    Reactor::new(
                        index,
                        io,
                        mailbox,
                        loop_shared,
                        service,
                        listeners,
                        counters,
                    )
                })?;
                control.started.fetch_add(1, Ordering::AcqRel);
                control.wake();
                reactor.run()
            });
        match spawned {
            Ok(join) => joins.push(join),
            Err(e) => {
                broadcast(&shared, || Command::ForceClose);
                collect(joins)?;
                return Err(e);
            }
        }
    }
    Ok((shared, joins))
}

/// Where the server is in its shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Running,
    /// Loops serve their connections until they close or the deadline.
    Draining,
    /// Connections are cut.
    Cutting,
}

impl Stage {
    /// Acts on one more shutdown request: the first drains, the second cuts.
    fn escalate(self, shared: &Shared) -> Stage {
        match self {
            Stage::Running => {
                info!("shutting down: draining connections");
                if shared.handoff {
                    // The acceptor relays it after its last hand-off.
                    if !shared.loops[0].send(Command::Shutdown) {
                        // The acceptor is gone: nobody would relay it.
                        broadcast(shared, || Command::Shutdown);
                    }
                } else {
                    broadcast(shared, || Command::Shutdown);
                }
                Stage::Draining
            }
            Stage::Draining => {
                info!("second shutdown request: closing connections now");
                broadcast(shared, || Command::ForceClose);
                Stage::Cutting
            }
            Stage::Cutting => Stage::Cutting,
        }
    }
}

/// Counts a loop thread as exited and wakes the control thread when dropped,
/// which happens during unwinding too.
struct ExitNotice(Arc<Control>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        self.0.exited.fetch_add(1, Ordering::AcqRel);
        self.0.wake();
    }
}

fn broadcast(shared: &Shared, command: fn() -> Command) {
    for handle in &shared.loops {
        handle.send(command());
    }
}

/// Joins every loop; the first error (or panic) wins, after all are joined.
fn collect(joins: Loops) -> io::Result<Report> {
    let mut report = Report::default();
    let mut first_error = None;
    for join in joins {
        match join.join() {
            Ok(Ok(loop_report)) => report.loops.push(loop_report),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert_with(|| io::Error::other("an event loop panicked"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
