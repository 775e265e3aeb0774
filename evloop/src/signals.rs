//! The signals a server handles (`ServerBuilder::handle_signals`): each
//! delivered as bytes on a pipe of its own that the control thread watches,
//! and given back its default action once no server handles it.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tracing::{info, warn};

use crate::net;
use crate::poll::{Interest, Poller, Token};

/// The handled signals delivered as bytes on pipes that the control poller
/// watches, one pipe per signal so the control thread knows which arrived and
/// how often: the handler only writes a byte (async-signal-safe).
#[derive(Debug)]
pub(crate) struct SignalPipe {
    /// Read ends, in the order of [`HANDLED_SIGNALS`].
    reads: Vec<std::os::fd::OwnedFd>,
    ids: Vec<signal_hook::SigId>,
}

impl SignalPipe {
    /// Installs the handlers and registers the pipes' read ends on `poller`
    /// under `token`.
    pub(crate) fn install(poller: &Poller, token: Token) -> io::Result<SignalPipe> {
        DEFAULT_ACTIONS.call_once(|| {
            for signal in &HANDLED_SIGNALS {
                if let Err(e) = signal_hook::flag::register_conditional_default(
                    signal.number,
                    &SIGNALS_UNHANDLED,
                ) {
                    warn!("cannot arm the default action of {}: {e}", signal.name);
                }
            }
        });
        if SERVERS_HANDLING_SIGNALS.fetch_add(1, Ordering::AcqRel) == 0 {
            SIGNALS_UNHANDLED.store(false, Ordering::Release);
        }
        // Built before anything can fail, so that `Drop` undoes a partial
        // installation.
        let mut pipe = SignalPipe {
            reads: Vec::with_capacity(HANDLED_SIGNALS.len()),
            ids: Vec::with_capacity(HANDLED_SIGNALS.len()),
        };
        for signal in &HANDLED_SIGNALS {
            let (read, write) = net::nonblocking_pipe()?;
            poller.register(&read, token, Interest::READABLE)?;
            pipe.reads.push(read);
            pipe.ids.push(signal_hook::low_level::pipe::register(
                signal.number,
                write,
            )?);
        }
        Ok(pipe)
    }

    /// Logs every signal that arrived since the last call and calls
    /// `restart` (if any) for each restart request, `reload` (if any) for
    /// each reload request; returns how many of them ask for shutdown.
    pub(crate) fn take_shutdown_requests(
        &self,
        mut restart: Option<&mut SignalHook>,
        mut reload: Option<&mut SignalHook>,
    ) -> usize {
        let mut requests = 0;
        for (signal, read) in HANDLED_SIGNALS.iter().zip(&self.reads) {
            let mut buf = [0u8; 16];
            let mut arrived = 0;
            while let Ok(n @ 1..) = rustix::io::read(read, &mut buf) {
                arrived += n;
            }
            for _ in 0..arrived {
                match signal.action {
                    SignalAction::Shutdown => {
                        info!("{} received: shutdown requested", signal.name);
                        requests += 1;
                    }
                    SignalAction::Restart(_) if restart.is_some() => {
                        if let Some(hook) = restart.as_deref_mut() {
                            info!("{} received: restart requested", signal.name);
                            hook(signal.name);
                        }
                    }
                    SignalAction::Reload(_) if reload.is_some() => {
                        if let Some(hook) = reload.as_deref_mut() {
                            info!("{} received: reload requested", signal.name);
                            hook(signal.name);
                        }
                    }
                    SignalAction::Restart(because) | SignalAction::Reload(because) => {
                        warn!("{} received: {because}; still serving", signal.name);
                    }
                }
            }
        }
        requests
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        // Unregistering leaves signal-hook's handler installed, which would
        // ignore the signals from now on; the conditional default action
        // gives them back their usual effect once no server handles them.
        if SERVERS_HANDLING_SIGNALS.fetch_sub(1, Ordering::AcqRel) == 1 {
            SIGNALS_UNHANDLED.store(true, Ordering::Release);
        }
    }
}

/// What a server runs, on its control thread, when a signal asks for a
/// restart (SIGHUP, SIGUSR2) or a reload (SIGUSR1); it is given the
/// signal's name and must not block.
pub(crate) type SignalHook = Box<dyn FnMut(&'static str) + Send>;

/// What the control thread does with a signal.
#[derive(Clone, Copy, Debug)]
enum SignalAction {
    /// A shutdown request: the first drains, the second cuts.
    Shutdown,
    /// A restart request, for the server's restart hook; without one,
    /// logged with this reason why nothing is done, and the server keeps
    /// serving.
    Restart(&'static str),
    /// A request to reload what can be reloaded in place (certificates),
    /// for the server's reload hook; without one, as `Restart`.
    Reload(&'static str),
}

/// A signal a server handles.
#[derive(Debug)]
struct HandledSignal {
    number: i32,
    name: &'static str,
    action: SignalAction,
}

impl HandledSignal {
    const fn new(number: i32, name: &'static str, action: SignalAction) -> HandledSignal {
        HandledSignal {
            number,
            name,
            action,
        }
    }
}

/// The signals a server handles, following nginx's conventions; those that
/// ask for what evloop cannot do yet are logged and otherwise ignored. Every
/// signal an operator commonly sends is here, so none ends the server
/// without a log line.
const HANDLED_SIGNALS: [HandledSignal; 6] = {
    use SignalAction::{Reload, Restart, Shutdown};
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    [
        HandledSignal::new(SIGINT, "SIGINT", Shutdown),
        HandledSignal::new(SIGTERM, "SIGTERM", Shutdown),
        HandledSignal::new(SIGQUIT, "SIGQUIT", Shutdown),
        HandledSignal::new(
            SIGHUP,
            "SIGHUP",
            Restart("nothing to reload (no restart hook)"),
        ),
        HandledSignal::new(
            SIGUSR1,
            "SIGUSR1",
            Reload("nothing to reopen (evloop opens no log files)"),
        ),
        HandledSignal::new(
            SIGUSR2,
            "SIGUSR2",
            Restart("no binary upgrade (no restart hook)"),
        ),
    ]
};
/// Servers in this process with signal handling on.
static SERVERS_HANDLING_SIGNALS: AtomicUsize = AtomicUsize::new(0);
/// True while no server handles signals: then they take their default action.
static SIGNALS_UNHANDLED: AtomicBool = AtomicBool::new(true);
/// Arms the default actions once per process.
static DEFAULT_ACTIONS: std::sync::Once = std::sync::Once::new();
