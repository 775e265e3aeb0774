//! `evloop serve`: runs one of the library's services.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Args;
use evloop::proxy::{ProxyProtocol, ProxyStats};
use evloop::services::{Chargen, Daytime, Discard, Echo, Log};
use evloop::tls::TlsStats;
use evloop::{Address, Balance, CloseReason, Counters, Driver, Server, ServerBuilder, Service};
use evloop_http::{AccessLog, Http};
use tracing::{error, info, warn};

use crate::log::LogQueue;
use crate::metrics::{self, Endpoint};
use crate::supervise::{self, Restarter, Served};
use crate::tls::{TlsArgs, TlsSetup, certificate_names};
use crate::{addr, duration, size};

/// The most loops `--threads` may ask for: more than the CPUs only adds
/// switching, and each loop holds descriptors.
const MAX_THREADS: usize = 1024;

/// Descriptors the process holds besides its loops: standard streams, the
/// control thread's poller, waker and signal pipe, with room to spare.
const FIXED_DESCRIPTORS: u64 = 16;

/// The smallest `--max-buffered`: one connection's read buffer. Less would
/// stop reading almost at once.
const MIN_BUFFERED: usize = 64 * 1024;

/// Options of `evloop serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The service: log (the seed: prints "read N bytes"), echo (RFC 862),
    /// discard (RFC 863), chargen (RFC 864), daytime (RFC 867), http
    /// (HTTP/1.1: static files with --root).
    #[arg(default_value = "log")]
    service: String,
    /// Address to listen on; may repeat. Default: 127.0.0.1:1815 (loopback only;
    /// expose with e.g. 0.0.0.0:1815 or [::]:1815). [::]:P serves IPv6 only
    /// (IPV6_V6ONLY): add 0.0.0.0:P for IPv4 too. A link-local IPv6 address
    /// takes its interface as a name or an index: [fe80::1%eth0]:1815. A Unix
    /// socket: unix:/path/to.sock (a stale file is replaced; the file is
    /// removed at exit) or unix:@name (Linux abstract namespace).
    #[arg(long = "listen", value_name = "ADDR", value_parser = addr::parse)]
    listen: Vec<Address>,
    /// Permission bits of the Unix socket files, in octal, at most 0777
    /// (e.g. 0660: owner and group may connect). Default: from the umask.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    unix_mode: Option<u32>,
    /// Listen backlog, at least 1; the kernel lowers it to its maximum
    /// (net.core.somaxconn on Linux). Default: the OS maximum.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_backlog)]
    backlog: Option<i32>,
    /// Event loops (threads), 1 to 1024; each holds a few descriptors (a
    /// poller, a waker, a listener per address) within `ulimit -n`.
    /// Default: the CPUs available.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_threads)]
    threads: Option<usize>,
    /// How connections reach loops: reuseport (kernel balances; default on
    /// Linux and FreeBSD) or handoff (one acceptor; default elsewhere).
    #[arg(long, value_name = "MODE")]
    balance: Option<String>,
    /// Open connections allowed, at least 1; past it a newcomer waits up to
    /// 250ms for a slot, then is closed. Default: 100000.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_count)]
    max_connections: Option<usize>,
    /// Close connections silent in both directions for this long, at least
    /// 1ms (e.g. 30s). Default: off.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_positive)]
    idle_timeout: Option<Duration>,
    /// How long SIGINT/SIGTERM/SIGQUIT waits for connections to finish; 0 cuts them
    /// at once. Otherwise at least 1ms.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_zero_or_positive)]
    shutdown_timeout: Duration,
    /// The most bytes all connections together may hold in their buffers;
    /// past it, the connections holding the most stop reading until their
    /// output drains. At least 64KiB; KiB, MiB, GiB are powers of 1024,
    /// K, M, G (KB, MB, GB) powers of 1000.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_max_buffered)]
    max_buffered: usize,
    /// How the loops move bytes: auto (io_uring where the kernel has what
    /// it needs, else epoll; the log says which and why), uring, or epoll
    /// (kqueue on BSD and macOS). The environment variable overrides the
    /// default for operators; the option overrides both.
    #[arg(
        long = "io",
        value_name = "DRIVER",
        env = "EVLOOP_IO",
        default_value = "auto"
    )]
    io: Driver,
    /// log service: show each read's bytes as a hex dump.
    #[arg(long)]
    hexdump: bool,
    /// Serve metrics and a readiness probe over HTTP on ADDR, e.g.
    /// 127.0.0.1:9815 (port 0 picks one; the log names it): GET /metrics in
    /// the Prometheus text format, GET /ready 200 while serving and 503
    /// before and during shutdown. Default: off.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    proxy: ProxyArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    http: HttpArgs,
}

/// Options of the PROXY protocol, for every service.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "PROXY protocol")]
pub struct ProxyArgs {
    /// Every connection starts with a PROXY protocol header (v1 or v2, as
    /// HAProxy's send-proxy and send-proxy-v2 write it): the client it
    /// names is the peer the service and the logs see. LOCAL (health
    /// checks) and UNKNOWN are served as the proxy's own connections.
    /// Connections without a valid header are reset with nothing sent,
    /// counted (the exit line) and logged at debug level. Only behind a
    /// proxy you trust: whoever reaches the listener says who the client is.
    #[arg(long)]
    proxy_protocol: bool,
    /// Like --proxy-protocol, on this listener only: one of the --listen
    /// addresses, as given. May repeat. The other listeners serve
    /// connections as they come.
    #[arg(long, value_name = "ADDR", value_parser = addr::parse, conflicts_with = "proxy_protocol")]
    proxy_protocol_on: Vec<Address>,
    /// How long a client has to send its whole PROXY header, from its
    /// accept (bytes trickling in do not extend it), at least 1ms.
    /// Default: 5s.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_positive)]
    proxy_protocol_timeout: Option<Duration>,
}

/// The PROXY protocol as the options ask for it.
struct Proxy {
    timeout: Option<Duration>,
    /// The listeners it is on, as indexes into `--listen`; all if `None`.
    on: Option<Vec<usize>>,
}

impl ProxyArgs {
    /// What the options ask for (`None`: no PROXY protocol), or why they
    /// cannot be.
    fn resolve(&self, listen: &[Address]) -> Result<Option<Proxy>, String> {
        if !self.proxy_protocol && self.proxy_protocol_on.is_empty() {
            if self.proxy_protocol_timeout.is_some() {
                return Err(
                    "--proxy-protocol-timeout needs --proxy-protocol or --proxy-protocol-on"
                        .to_owned(),
                );
            }
            return Ok(None);
        }
        let on = if self.proxy_protocol {
            None
        } else {
            let mut on = Vec::new();
            for addr in &self.proxy_protocol_on {
                let Some(i) = listen.iter().position(|l| l == addr) else {
                    return Err(format!(
                        "--proxy-protocol-on {addr}: not one of the --listen addresses"
                    ));
                };
                on.push(i);
            }
            Some(on)
        };
        Ok(Some(Proxy {
            timeout: self.proxy_protocol_timeout,
            on,
        }))
    }
}

impl Proxy {
    /// The layer around `service`, given the addresses bound.
    fn wrap<S: Service>(&self, service: S, bound: &[Address]) -> ProxyProtocol<S> {
        let mut layer = ProxyProtocol::builder();
        if let Some(timeout) = self.timeout {
            layer = layer.timeout(timeout);
        }
        if let Some(on) = &self.on {
            layer = layer.only_on(on.iter().map(|&i| bound[i].clone()));
        }
        layer.build(service)
    }

    /// Whether the listener at index `i` of the addresses bound has it.
    fn is_on(&self, i: usize) -> bool {
        self.on.as_ref().is_none_or(|on| on.contains(&i))
    }
}

/// Options of the http service.
#[derive(Args, Debug, Default)]
#[command(next_help_heading = "http service")]
pub struct HttpArgs {
    /// Serve the files under DIR. Without it, / is a page saying what is
    /// running and everything else is 404.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// List directories that have no index.html (else 403).
    #[arg(long)]
    list: bool,
    /// Follow symlinks that lead out of the root (refused by default;
    /// symlinks within the root are always followed).
    #[arg(long)]
    follow_symlinks: bool,
    /// Serve names starting with a dot (refused with 403 by default).
    #[arg(long)]
    dotfiles: bool,
    /// Time a client has to send a request's line and headers, counted
    /// from its first byte: slower clients get 408. Default: 10s.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_positive)]
    header_timeout: Option<Duration>,
    /// Close keep-alive connections that send no request for this long.
    /// Default: 75s.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_positive)]
    keepalive_timeout: Option<Duration>,
    /// The largest request body read (and discarded); larger ones get 413.
    /// Default: 1MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_max_body)]
    max_body: Option<usize>,
    /// Write a line per request (Combined Log Format) to FILE, or to
    /// standard output with -. Default: off.
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,
}

impl HttpArgs {
    /// The options given, by name, to refuse them for other services.
    fn given(&self) -> Vec<&'static str> {
        let options = [
            ("--root", self.root.is_some()),
            ("--list", self.list),
            ("--follow-symlinks", self.follow_symlinks),
            ("--dotfiles", self.dotfiles),
            ("--header-timeout", self.header_timeout.is_some()),
            ("--keepalive-timeout", self.keepalive_timeout.is_some()),
            ("--max-body", self.max_body.is_some()),
            ("--access-log", self.access_log.is_some()),
        ];
        options
            .into_iter()
            .filter(|&(_, on)| on)
            .map(|(name, _)| name)
            .collect()
    }

    /// The service these options describe.
    fn service(&self) -> Result<Http, String> {
        let mut http = Http::builder()
            .list(self.list)
            .follow_symlinks(self.follow_symlinks)
            .dotfiles(self.dotfiles)
            .software(format!("evloop {}", env!("CARGO_PKG_VERSION")));
        if let Some(root) = &self.root {
            http = http.root(root);
        }
        if let Some(timeout) = self.header_timeout {
            http = http.header_timeout(timeout);
        }
        if let Some(timeout) = self.keepalive_timeout {
            http = http.keepalive_timeout(timeout);
        }
        if let Some(max) = self.max_body {
            http = http.max_body(max as u64);
        }
        if let Some(path) = &self.access_log {
            let log = if path.as_os_str() == "-" {
                AccessLog::to_stdout()
            } else {
                AccessLog::to_file(path)
            };
            http = http.access_log(log.map_err(|e| format!("access log: {e}"))?);
        }
        http.build().map_err(|e| format!("--root: {e}"))
    }
}

/// The metrics endpoint's address: TCP only (Prometheus scrapes over
/// HTTP), with the scoped IPv6 addresses `--listen` takes.
fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let tcp_only = || "the metrics endpoint listens on TCP: give IP:PORT".to_owned();
    if text.starts_with("unix:") {
        return Err(tcp_only());
    }
    match addr::parse(text) {
        Ok(address) => address.inet().ok_or_else(tcp_only),
        // A scope's own error (no such interface) says more.
        Err(e) if text.contains('%') => Err(e),
        Err(_) => {
            Err("not an address (expected IP:PORT, e.g. 127.0.0.1:9815 or [::1]:9815)".to_owned())
        }
    }
}

/// A count of at least 1.
fn parse_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<i128>() {
        Ok(n) if n < 1 => Err("must be at least 1".to_owned()),
        Ok(n) => usize::try_from(n).map_err(|_| "too large".to_owned()),
        Err(_) => Err("not a whole number".to_owned()),
    }
}

/// Permission bits in octal: `660`, `0660` or `0o660`, at most `0777`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        Ok(_) => Err("at most 0777 (permission bits only)".to_owned()),
        Err(_) => Err("not an octal mode (e.g. 0660)".to_owned()),
    }
}

/// A server-wide buffer budget: at least [`MIN_BUFFERED`].
fn parse_max_buffered(text: &str) -> Result<usize, String> {
    size::parse_at_least(text, MIN_BUFFERED)
}

/// A backlog: at least 1; larger than the kernel takes is its maximum.
fn parse_backlog(text: &str) -> Result<i32, String> {
    // Beyond i32: the largest listen() takes, which the kernel lowers to its maximum.
    parse_count(text).map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

/// A number of loops: 1 to [`MAX_THREADS`].
fn parse_threads(text: &str) -> Result<usize, String> {
    let threads = parse_count(text)?;
    if threads > MAX_THREADS {
        return Err(format!("at most {MAX_THREADS}"));
    }
    Ok(threads)
}

/// Runs the server until a signal has drained it. Exit status: 0 after a
/// clean drain, 1 if the deadline cut connections or it failed, 2 for bad
/// arguments.
pub fn run(args: ServeArgs, log: &LogQueue) -> ExitCode {
    let handed = match supervise::inherited_listeners() {
        Ok(handed) => handed,
        Err(message) => {
            say!("evloop: {message}");
            return ExitCode::from(1);
        }
    };
    let builder = match configure(&args, handed.listeners) {
        Ok(builder) => builder,
        Err(message) => {
            say!("evloop: {message}");
            return ExitCode::from(2);
        }
    };
    let proxy = match args.proxy.resolve(&args.listen) {
        Ok(proxy) => proxy,
        Err(message) => {
            say!("evloop: {message}");
            return ExitCode::from(2);
        }
    };
    let proxy = proxy.as_ref();
    let tls = match args.tls.resolve(&args.listen) {
        Ok(tls) => tls,
        Err(message) => {
            say!("evloop: {message}");
            return ExitCode::from(2);
        }
    };
    let tls = tls.as_ref();
    let http_options = args.http.given();
    if args.service != "http"
        && let Some(option) = http_options.first()
    {
        say!(
            "evloop: {option} is an option of the http service, not of '{}'",
            args.service
        );
        return ExitCode::from(2);
    }
    let metrics = args.metrics.map(|addr| Metrics {
        addr,
        inherited: handed.metrics,
        log: log.clone(),
        sources: Vec::new(),
    });
    match args.service.as_str() {
        "log" => serve(
            builder,
            Log::new(args.hexdump),
            "log",
            (proxy, tls),
            metrics,
            nothing,
        ),
        "echo" => serve(builder, Echo, "echo", (proxy, tls), metrics, nothing),
        "discard" => serve(builder, Discard, "discard", (proxy, tls), metrics, nothing),
        "chargen" => serve(
            builder,
            Chargen::default(),
            "chargen",
            (proxy, tls),
            metrics,
            nothing,
        ),
        "daytime" => serve(builder, Daytime, "daytime", (proxy, tls), metrics, nothing),
        "http" => match args.http.service() {
            Ok(http) => {
                let metrics = metrics.map(|mut metrics| {
                    metrics.sources.push(Box::new(metrics::http(http.clone())));
                    metrics
                });
                serve(
                    builder,
                    http.clone(),
                    "http",
                    (proxy, tls),
                    metrics,
                    |driver, loops| {
                        http.running_on(driver, loops);
                    },
                )
            }
            Err(message) => {
                say!("evloop: {message}");
                ExitCode::from(2)
            }
        },
        other => {
            say!(
                "evloop: unknown service '{other}' (available: log, echo, discard, chargen, daytime, http)"
            );
            ExitCode::from(2)
        }
    }
}

fn configure(args: &ServeArgs, inherited: Vec<OwnedFd>) -> Result<ServerBuilder, String> {
    let mut builder = Server::builder();
    for fd in inherited {
        builder = builder.listen_fd(fd);
    }
    let mut builder = builder
        .handle_signals(true)
        .shutdown_timeout(args.shutdown_timeout)
        .idle_timeout(args.idle_timeout)
        .max_buffered(args.max_buffered)
        .io(args.io);
    for addr in &args.listen {
        builder = builder.listen(addr.clone());
    }
    if let Some(mode) = args.unix_mode {
        builder = builder.unix_mode(mode);
    }
    if let Some(backlog) = args.backlog {
        builder = builder.backlog(backlog);
    }
    if let Some(threads) = args.threads {
        check_descriptors(threads, args.listen.len().max(1))?;
        builder = builder.threads(threads);
    }
    if let Some(mode) = &args.balance {
        builder = builder.balance(match mode.as_str() {
            "reuseport" => Balance::ReusePort,
            "handoff" => Balance::Handoff,
            other => {
                return Err(format!(
                    "unknown balance mode '{other}' (use reuseport or handoff)"
                ));
            }
        });
    }
    if let Some(max) = args.max_connections {
        builder = builder.max_connections(max);
    }
    Ok(builder)
}

/// Refuses a number of loops whose descriptors alone would not fit in the
/// process's limit (`ulimit -n`): the bind would fail with "Too many open
/// files" on whichever address came last, which names the wrong culprit.
fn check_descriptors(threads: usize, addresses: usize) -> Result<(), String> {
    let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current else {
        return Ok(());
    };
    // A poller, a waker and a listener per address in each loop.
    let per_loop = 2 + addresses as u64;
    let needed = threads as u64 * per_loop + FIXED_DESCRIPTORS;
    if needed > limit {
        return Err(format!(
            "--threads {threads} needs about {needed} descriptors but the limit is {limit} (ulimit -n)"
        ));
    }
    Ok(())
}

/// For services that need nothing of the built server.
fn nothing(_driver: String, _loops: usize) {}

/// What `--metrics` asks for: where, and what beyond the standard
/// families (the service's own).
struct Metrics {
    addr: SocketAddr,
    /// The endpoint's socket, handed over by a predecessor (or systemd).
    inherited: Option<OwnedFd>,
    log: LogQueue,
    sources: Vec<metrics::Source>,
}

/// Builds the server, behind TLS and the PROXY protocol if asked, with
/// what its supervisor needs to hear (systemd, restarts), and runs it.
fn serve<S: Service>(
    builder: ServerBuilder,
    service: S,
    name: &str,
    (proxy, tls): (Option<&Proxy>, Option<&TlsSetup>),
    metrics: Option<Metrics>,
    built: impl FnOnce(String, usize),
) -> ExitCode {
    let Some(tls) = tls else {
        let plain = |service, _: &[Address]| service;
        return serve_layers(builder, (service, plain), name, proxy, None, metrics, built);
    };
    let layer = match tls.wrap(service, name) {
        Ok(layer) => layer,
        Err(e) => {
            say!("evloop: TLS: {e}");
            return ExitCode::from(1);
        }
    };
    let stats = layer.stats();
    let certificates = tls.certificates.clone();
    info!(
        "TLS: serving certificates for {}",
        certificate_names(&certificates)
    );
    let builder = builder.on_reload_signal(move |signal| match certificates.reload() {
        Ok(()) => info!(
            "{signal}: TLS certificates reloaded: {}",
            certificate_names(&certificates)
        ),
        Err(e) => warn!("{signal}: TLS certificates not reloaded, the old ones kept: {e}"),
    });
    let metrics = metrics.map(|mut metrics| {
        metrics.sources.push(Box::new(metrics::tls(stats.clone())));
        metrics
    });
    let restrict = |layer, bound: &[Address]| tls.restrict(layer, bound);
    let tls = Some((tls, stats));
    serve_layers(builder, (layer, restrict), name, proxy, tls, metrics, built)
}

/// Builds the server around `service` (behind TLS if `tls` says so, then
/// `restricted` to its listeners once they are bound), behind the PROXY
/// protocol if asked, and runs it.
fn serve_layers<'a, S: Service>(
    builder: ServerBuilder,
    (service, restricted): (S, impl FnOnce(S, &[Address]) -> S),
    name: &'a str,
    proxy: Option<&'a Proxy>,
    tls: Option<(&'a TlsSetup, TlsStats)>,
    metrics: Option<Metrics>,
    built: impl FnOnce(String, usize),
) -> ExitCode {
    let served = Arc::new(OnceLock::new());
    let mut builder = builder;
    let restarter = match Restarter::new() {
        Some((restarter, hook)) => {
            builder = builder.on_restart_signal(hook);
            Some(restarter)
        }
        None => None,
    };
    let spares = restarter.as_ref().map(Restarter::spares);
    let builder = builder.on_state(supervise::on_state(Arc::clone(&served), spares));
    let started = Started {
        name,
        served,
        restarter,
        metrics,
        tls,
    };
    let Some(proxy) = proxy else {
        let server = builder.build_with(|bound| restricted(service, bound));
        return started.run(server, None, built);
    };
    let mut stats = None;
    let server = builder.build_with(|bound| {
        let layer = proxy.wrap(restricted(service, bound), bound);
        stats = Some(layer.stats());
        layer
    });
    started.run(server, stats.map(|stats| (proxy, stats)), built)
}

/// What runs beside a server once it is built.
struct Started<'a> {
    name: &'a str,
    served: Arc<OnceLock<Served>>,
    restarter: Option<Restarter>,
    metrics: Option<Metrics>,
    /// The TLS layer's counters, if it serves behind one.
    tls: Option<(&'a TlsSetup, TlsStats)>,
}

impl Started<'_> {
    /// Runs a server built (or says why it could not be): starts the
    /// metrics endpoint and the restarter, logs its listeners and, at
    /// exit, its counters.
    fn run<S: Service>(
        self,
        server: std::io::Result<Server<S>>,
        proxy: Option<(&Proxy, ProxyStats)>,
        built: impl FnOnce(String, usize),
    ) -> ExitCode {
        let Started {
            name,
            served,
            restarter,
            metrics,
            tls,
        } = self;
        let server = match server {
            Ok(server) => server,
            Err(e) => {
                say!("evloop: {e}");
                return ExitCode::from(1);
            }
        };
        built(server.driver(), server.loops());
        // Bound before anything is logged as listening: a taken address
        // stops the start-up like the server's own.
        let endpoint = match metrics
            .map(|mut m| Endpoint::take_or_bind(m.inherited.take(), m.addr).map(|e| (e, m)))
        {
            None => None,
            Some(Ok(endpoint)) => Some(endpoint),
            Some(Err(message)) => {
                say!("evloop: --metrics {message}");
                return ExitCode::from(1);
            }
        };
        let pid = std::process::id();
        for (i, addr) in server.local_addrs().iter().enumerate() {
            let proxied = proxy.as_ref().is_some_and(|(proxy, _)| proxy.is_on(i));
            let secure = tls.as_ref().is_some_and(|(tls, _)| tls.is_on(i));
            let layers = match (proxied, secure) {
                (true, true) => " (PROXY protocol, TLS)",
                (true, false) => " (PROXY protocol)",
                (false, true) => " (TLS)",
                (false, false) => "",
            };
            if proxied {
                info!(service = name, address = %addr, pid, proxy_protocol = true, tls = secure, "{name}: listening on {addr}{layers}");
            } else {
                info!(service = name, address = %addr, pid, tls = secure, "{name}: listening on {addr}{layers}");
            }
        }
        let addresses: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
        let _ = served.set(Served {
            addresses: addresses.join(" "),
            stats: server.stats(),
        });
        if let Some(restarter) = restarter {
            let metrics = (endpoint.as_ref()).map(|(endpoint, _)| endpoint.for_successor());
            let started = metrics.transpose().and_then(|metrics| {
                let fds = server.listener_fds()?;
                restarter.start(fds, metrics, server.shutdown_handle())
            });
            if let Err(e) = started {
                warn!("restarts unavailable: {e}");
            }
        }
        if let Some((endpoint, metrics)) = endpoint {
            let addr = endpoint.local_addr();
            let mut registry =
                metrics::standard(server.stats(), server.driver(), server.loops(), metrics.log);
            registry.extend(metrics.sources);
            if let Some((_, stats)) = &proxy {
                registry.add(metrics::proxy(stats.clone()));
            }
            if let Err(e) = endpoint.spawn(registry, server.stats()) {
                say!("evloop: --metrics {addr}: starting its thread: {e}");
                return ExitCode::from(1);
            }
            info!(address = %addr, "metrics: listening on {addr}");
        }
        match server.run() {
            Ok(report) => {
                for (i, l) in report.loops.iter().enumerate() {
                    log_counters(&format!("loop {i}"), Some(i), &l.counters);
                }
                log_counters("total", None, &report.total());
                if let Some((_, stats)) = proxy {
                    info!("PROXY protocol: {}", stats.snapshot());
                }
                if let Some((_, stats)) = &tls {
                    info!("TLS: {}", stats.snapshot());
                }
                if report.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    warn!("shutdown cut {} connections", report.cut());
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                error!("{e}");
                ExitCode::from(1)
            }
        }
    }
}

/// Logs what a loop (or all) did, as text and as fields for JSON logs.
fn log_counters(what: &str, loop_index: Option<usize>, counters: &Counters) {
    let closed = |reason| counters.closed(reason);
    info!(
        loop_index,
        accepted = counters.accepted,
        closed = counters.closed_total(),
        closed_peer = closed(CloseReason::Peer),
        closed_reset = closed(CloseReason::Reset),
        closed_idle = closed(CloseReason::Idle),
        closed_limit = closed(CloseReason::Limit),
        closed_shutdown = closed(CloseReason::Shutdown),
        closed_error = closed(CloseReason::Error),
        closed_service = closed(CloseReason::Service),
        bytes_in = counters.bytes_in,
        bytes_out = counters.bytes_out,
        backpressure_pauses = counters.backpressure_pauses,
        budget_pauses = counters.budget_pauses,
        accept_errors = counters.accept_errors,
        accept_backoffs = counters.accept_backoffs,
        "{what}:"
    );
}

/// A request body limit: any size, 0 refusing every body.
fn parse_max_body(text: &str) -> Result<usize, String> {
    size::parse_at_least(text, 0)
}
