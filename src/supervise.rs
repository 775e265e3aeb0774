//! How `evloop serve` works with what supervises it: listening sockets from
//! systemd (socket activation), systemd's notifications (`READY=1`,
//! `STOPPING=1`, `STATUS=`, `WATCHDOG=1`, `MAINPID=`), and restarts into a
//! successor process that takes the listening sockets over.
//!
//! A restart (SIGHUP or SIGUSR2) starts the program again, from the path it
//! was started from (a binary replaced there is the one that runs) with the
//! same arguments, and hands it every listening socket by systemd's
//! protocol. Once the successor serves, this process stops accepting and
//! drains; the sockets stay open throughout, so no connection is refused. A
//! successor that fails to start leaves this process serving, with a log
//! line. Under systemd, this process tells it the successor's pid
//! (`MAINPID=`) before draining, so the service stays up.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use evloop::activation::{self, Inherited, Start};
use evloop::{ShutdownHandle, State, StatsHandle};
use sd_notify::NotifyState;
use tracing::{debug, error, info, warn};

/// How long a successor has to serve before it is given up (and killed).
const SUCCESSOR_START_LIMIT: Duration = Duration::from_secs(60);

/// Set once a successor has taken over: systemd knows it as the service's
/// main process from then on (`MAINPID=`), and would refuse this one's
/// notifications.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// The name under which the service's listening sockets are passed to a
/// successor.
const LISTENER_NAME: &str = "evloop";

/// The name of the metrics endpoint's socket, for a successor (or
/// systemd's `FileDescriptorName=`): the endpoint takes it instead of
/// binding `--metrics` again, which the predecessor still holds.
pub const METRICS_NAME: &str = "evloop-metrics";

/// The listening sockets this process was handed (by systemd or a
/// predecessor).
#[derive(Debug, Default)]
pub struct Handed {
    /// The service's.
    pub listeners: Vec<OwnedFd>,
    /// The metrics endpoint's, if one was named [`METRICS_NAME`].
    pub metrics: Option<OwnedFd>,
}

/// Takes the listening sockets this process was handed, logging each.
pub fn inherited_listeners() -> Result<Handed, String> {
    let inherited =
        activation::inherited_listeners().map_err(|e| format!("inherited sockets: {e}"))?;
    let mut handed = Handed::default();
    for Inherited { fd, name } in inherited {
        debug!(name, "listening socket inherited");
        if name == METRICS_NAME && handed.metrics.is_none() {
            handed.metrics = Some(fd);
        } else {
            handed.listeners.push(fd);
        }
    }
    Ok(handed)
}

/// Whether systemd (or anything speaking its protocol) listens for
/// notifications.
fn notifying() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends notifications; a failure is logged, never fatal.
fn notify(states: &[NotifyState<'_>]) {
    if notifying()
        && let Err(e) = sd_notify::notify(states)
    {
        warn!("systemd notification failed: {e}");
    }
}

/// What the supervisor is told of a built server.
#[derive(Debug)]
pub struct Served {
    /// The addresses it listens on, for `STATUS=`.
    pub addresses: String,
    /// Its counters, for the watchdog's status line.
    pub stats: StatsHandle,
}

/// What the server's state changes mean to the supervisor: runs on the
/// server's control thread ([`evloop::ServerBuilder::on_state`]); `served`
/// is filled in once the server is built, before it runs.
pub fn on_state(
    served: Arc<OnceLock<Served>>,
    spares: Option<SpareSockets>,
) -> impl FnMut(State) + Send + 'static {
    move |state| match state {
        State::Serving => {
            match activation::notify_predecessor() {
                // The predecessor tells systemd our pid, and the service is
                // already up: a READY=1 from a process systemd does not yet
                // know as the service's would be refused.
                Ok(true) => info!("restart: serving; the predecessor hands over"),
                Ok(false) => {
                    let addresses = served.get().map_or("", |s| &s.addresses);
                    notify(&[
                        NotifyState::Ready,
                        NotifyState::Status(&format!("serving on {addresses}")),
                    ]);
                }
                Err(e) => error!("restart: telling the predecessor we serve: {e}"),
            }
            if let (Some(period), Some(served)) = (sd_notify::watchdog_enabled(), served.get())
                && let Err(e) = start_watchdog(period, served.stats.clone())
            {
                warn!("systemd watchdog: no thread: {e}");
            }
        }
        State::Draining => {
            if let Some(spares) = &spares {
                drop(lock(spares).take());
            }
            if !HANDED_OVER.load(Ordering::Acquire) {
                notify(&[
                    NotifyState::Stopping,
                    NotifyState::Status("draining connections"),
                ]);
            }
        }
        _ => {}
    }
}

/// Tells systemd's watchdog (`WATCHDOG=1`) at half its period that every
/// loop turns, with a status line of open connections, until the server
/// stops. Each period it pings the loops and looks whether each answered:
/// if one did not (a handler that never returns, say), systemd is not told,
/// and restarts the service once `WatchdogSec=` passes.
fn start_watchdog(period: Duration, stats: StatsHandle) -> std::io::Result<()> {
    let interval = period / 2;
    info!("systemd watchdog: every {interval:?} once every loop answers");
    std::thread::Builder::new()
        .name("evloop-watchdog".into())
        .spawn(move || {
            let answered = |stats: &StatsHandle| -> Vec<u64> {
                stats.loops().iter().map(|l| l.answered).collect()
            };
            let mut before = answered(&stats);
            stats.ping();
            loop {
                std::thread::sleep(interval);
                if stats.state() == State::Stopped {
                    return;
                }
                let now = answered(&stats);
                let stuck: Vec<usize> = (before.iter().zip(&now).enumerate())
                    .filter(|(_, (then, now))| now <= then)
                    .map(|(i, _)| i)
                    .collect();
                if stuck.is_empty() {
                    let open: u64 = stats.loops().iter().map(|l| l.open).sum();
                    let status = format!("{}: {open} connections open", stats.state().name());
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                    before = now;
                    stats.ping();
                } else {
                    warn!(
                        "systemd watchdog: loops {stuck:?} did not answer within {interval:?}; not telling systemd all is well"
                    );
                }
            }
        })
        .map(drop)
}

/// Second descriptors of the listening sockets (and of the metrics
/// endpoint's), kept for a successor.
#[derive(Debug)]
pub struct Spares {
    listeners: Vec<OwnedFd>,
    metrics: Option<OwnedFd>,
}

/// The spares, shared by the restarter and the state hook, which drops
/// them when the server starts to drain, before its loops close their own
/// descriptors: the sockets then close, and new clients are refused, as
/// they would be without restarts. (A successor that took over holds
/// copies of its own.)
pub type SpareSockets = Arc<Mutex<Option<Spares>>>;

impl Spares {
    fn copy(&self) -> std::io::Result<Spares> {
        let listeners = (self.listeners.iter())
            .map(|fd| fd.try_clone())
            .collect::<Result<_, _>>()?;
        let metrics = self.metrics.as_ref().map(OwnedFd::try_clone).transpose()?;
        Ok(Spares { listeners, metrics })
    }
}

/// Locks the spares; a panic elsewhere while they were locked left them
/// whole (they are only taken or copied).
fn lock(spares: &SpareSockets) -> std::sync::MutexGuard<'_, Option<Spares>> {
    spares.lock().unwrap_or_else(|e| e.into_inner())
}

/// Restarts on request: a successor is started with every listening
/// socket, and once it serves, this server hands over and drains.
#[derive(Debug)]
pub struct Restarter {
    program: PathBuf,
    args: Vec<OsString>,
    requests: Receiver<&'static str>,
    spares: SpareSockets,
}

impl Restarter {
    /// A restarter and the hook that asks it to restart
    /// ([`evloop::ServerBuilder::on_restart_signal`]); `None` if this
    /// process cannot name its own program.
    pub fn new() -> Option<(Restarter, impl FnMut(&'static str) + Send + 'static)> {
        let program = match std::env::current_exe() {
            Ok(program) => program,
            Err(e) => {
                warn!("restarts unavailable: cannot find this program's path: {e}");
                return None;
            }
        };
        let args = std::env::args_os().skip(1).collect();
        let (ask, requests): (Sender<&'static str>, _) = std::sync::mpsc::channel();
        let hook = move |signal| {
            if ask.send(signal).is_err() {
                warn!("{signal}: already handed over to a successor");
            }
        };
        Some((
            Restarter {
                program,
                args,
                requests,
                spares: Arc::default(),
            },
            hook,
        ))
    }

    /// Where the descriptors kept for a successor are, for
    /// [`on_state`] to drop them at a drain.
    pub fn spares(&self) -> SpareSockets {
        Arc::clone(&self.spares)
    }

    /// Serves restart requests on a thread of its own, with second
    /// descriptors for the server's listening sockets and the metrics
    /// endpoint's (with what stops the endpoint at the hand-over).
    pub fn start(
        self,
        listeners: Vec<OwnedFd>,
        metrics: Option<(OwnedFd, Arc<AtomicBool>)>,
        server: ShutdownHandle,
    ) -> std::io::Result<()> {
        let (metrics, stop_metrics) = metrics.unzip();
        *lock(&self.spares) = Some(Spares { listeners, metrics });
        std::thread::Builder::new()
            .name("evloop-restart".into())
            .spawn(move || self.run(stop_metrics, &server))
            .map(drop)
    }

    fn run(self, stop_metrics: Option<Arc<AtomicBool>>, server: &ShutdownHandle) {
        while let Ok(signal) = self.requests.recv() {
            if self.restart(signal) {
                // The successor answers scrapes from now on.
                if let Some(stop) = &stop_metrics {
                    stop.store(true, Ordering::Release);
                }
                server.hand_over();
                return;
            }
            // Requests made while this one failed ask for what just failed.
            while !matches!(
                self.requests.try_recv(),
                Err(TryRecvError::Empty | TryRecvError::Disconnected)
            ) {}
        }
    }

    /// Starts a successor and waits for it to serve; says whether it does.
    fn restart(&self, signal: &str) -> bool {
        let program = self.program.display();
        // Copies, so that the state hook never waits for a restart to
        // drop the spares.
        let copies = match lock(&self.spares).as_ref().map(Spares::copy) {
            Some(Ok(copies)) => copies,
            Some(Err(e)) => {
                error!("{signal}: restart failed: {e}; still serving");
                return false;
            }
            None => {
                warn!("{signal}: draining: no restart");
                return false;
            }
        };
        let mut fds: Vec<_> = copies.listeners.iter().map(AsFd::as_fd).collect();
        let mut names = vec![LISTENER_NAME; fds.len()];
        if let Some(metrics) = &copies.metrics {
            fds.push(metrics.as_fd());
            names.push(METRICS_NAME);
        }
        let spawned = activation::spawn_successor(&self.program, &self.args, &fds, &names);
        // The copies close here: only the successor and the spares hold
        // the sockets now.
        let handed = fds.len();
        drop(fds);
        drop(copies);
        let successor = match spawned {
            Ok(successor) => successor,
            Err(e) => {
                error!("{signal}: restart failed: starting {program}: {e}; still serving");
                return false;
            }
        };
        let pid = successor.pid();
        info!(
            pid,
            "{signal}: started {program} (pid {pid}) with {} listening sockets; waiting for it to serve",
            handed
        );
        match successor.wait_ready(SUCCESSOR_START_LIMIT) {
            Ok(Start::Ready) => {
                info!(pid, "restart: pid {pid} serves; handing over and draining");
                notify(&[
                    NotifyState::MainPid(pid),
                    NotifyState::Status(&format!("handed over to pid {pid}")),
                ]);
                HANDED_OVER.store(true, Ordering::Release);
                true
            }
            Ok(Start::Failed(status)) => {
                error!(
                    pid,
                    "restart failed: pid {pid} {status} before serving; still serving"
                );
                false
            }
            Ok(Start::TimedOut) => {
                error!(
                    pid,
                    "restart failed: pid {pid} did not serve within {SUCCESSOR_START_LIMIT:?} and was killed; still serving"
                );
                false
            }
            Ok(other) => {
                error!(pid, "restart failed: pid {pid}: {other:?}; still serving");
                false
            }
            Err(e) => {
                error!(
                    pid,
                    "restart failed: waiting for pid {pid}: {e}; still serving"
                );
                false
            }
        }
    }
}
