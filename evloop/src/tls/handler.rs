//! One TLS connection: the handshake, then the wrapped handler behind
//! rustls, bytes in, bytes out.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustls::{HandshakeKind, ServerConnection};
use tracing::debug;

use super::{FailReason, Shared};
use crate::Address;
use crate::context::{Context, LayerFile};
use crate::service::{Action, CloseReason, Handler, Input, Service};

/// How much of a file the layer encrypts per drain notice.
const FILE_CHUNK: u64 = 64 * 1024;

/// What is read from a file at a time: a TLS record's worth.
const FILE_READ: usize = 16 * 1024;

/// A plaintext buffer larger than this is freed, not kept, when emptied.
const KEEP_BUFFER: usize = 4 * 1024;

/// The handler of a [`Tls`](super::Tls) connection: the handshake first,
/// then the wrapped service's handler.
pub struct TlsHandler<S: Service> {
    /// Boxed: a connection's slot in its loop stays small, whatever rustls
    /// keeps.
    state: Box<State<S>>,
}

struct State<S: Service> {
    shared: Arc<Shared<S>>,
    /// The listeners that serve TLS, if not all ([`Tls::only_on`](super::Tls::only_on)).
    listeners: Option<Arc<[Address]>>,
    /// The peer the wrapped service is opened for.
    peer: Address,
    /// None if rustls would not make a connection (it was logged).
    tls: Option<ServerConnection>,
    phase: Phase<S::Handler>,
    /// Decrypted input the wrapped handler has not consumed.
    plain_in: Vec<u8>,
    /// The protocol version the client's hello offered (its
    /// `legacy_version`), if its first bytes held it: below TLS 1.2
    /// (0x0303), a client that cannot speak any version this server does,
    /// whatever rustls found wrong first.
    hello_version: Option<u16>,
    /// Whether `plain_in` holds bytes the handler has not seen yet (or
    /// should see again: it resumed reading).
    unseen: bool,
    /// The client will send nothing more: its `close_notify` came, or the
    /// connection's end of input.
    peer_closed: bool,
    /// What the wrapped handler writes in a call, encrypted after it.
    plain_out: Vec<u8>,
    /// A file the wrapped handler sent, encrypted a chunk at a time.
    file: Option<LayerFile>,
    /// The wrapped handler asked to hear that its output drained.
    inner_wants_drain: bool,
    /// The wrapped handler is done (it closed, or its input ended): once
    /// its file is out, `close_notify` and close.
    finishing: bool,
}

enum Phase<H> {
    /// A connection to a listener without TLS: every call goes straight to
    /// the wrapped handler.
    Plain(H),
    /// Waiting for the handshake to complete; whether any byte came.
    Handshake { started: bool },
    /// The handshake is done: calls go to the wrapped handler.
    Serving(H),
    /// The handshake failed (counted and logged).
    Failed,
}

impl<S: Service> fmt::Debug for TlsHandler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match &self.state.phase {
            Phase::Handshake { started: false } => "waiting for a handshake",
            Phase::Handshake { started: true } => "handshaking",
            Phase::Serving(_) if self.state.finishing => "finishing",
            Phase::Serving(_) => "serving",
            Phase::Failed => "failed",
            Phase::Plain(_) => "plaintext (a listener without TLS)",
        };
        f.debug_struct("TlsHandler")
            .field("phase", &phase)
            .field("plaintext_in", &self.state.plain_in.len())
            .finish_non_exhaustive()
    }
}

impl<S: Service> TlsHandler<S> {
    pub(super) fn new(
        shared: Arc<Shared<S>>,
        peer: Address,
        listeners: Option<Arc<[Address]>>,
    ) -> TlsHandler<S> {
        let tls = match ServerConnection::new(Arc::clone(&shared.config)) {
            Ok(tls) => Some(tls),
            Err(e) => {
                debug!(target: "evloop::tls", %peer, "no TLS connection: {e}");
                None
            }
        };
        TlsHandler {
            state: Box::new(State {
                shared,
                listeners,
                peer,
                tls,
                phase: Phase::Handshake { started: false },
                plain_in: Vec::new(),
                hello_version: None,
                unseen: false,
                peer_closed: false,
                plain_out: Vec::new(),
                file: None,
                inner_wants_drain: false,
                finishing: false,
            }),
        }
    }
}

impl<S: Service> State<S> {
    fn serving(&self) -> bool {
        matches!(self.phase, Phase::Serving(_))
    }

    /// Feeds the client's ciphertext to rustls and the plaintext to the
    /// wrapped handler, as long as it reads and ciphertext is left.
    fn pump(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        loop {
            let reading = self.serving() && !self.finishing && !cx.paused_by_handler();
            if reading && self.unseen && !self.plain_in.is_empty() {
                let action = self.deliver(cx);
                if action != Action::Continue {
                    input.consume_all();
                    return action;
                }
                if self.plain_in.len() > cx.max_input {
                    debug!(target: "evloop::tls", peer = %self.peer, "input limit of {} bytes exceeded", cx.max_input);
                    self.finishing = true;
                    return Action::Abort;
                }
                continue;
            }
            if self.peer_closed {
                input.consume_all();
                return self.peer_ended(reading, cx);
            }
            if input.is_empty() || (self.serving() && !reading) {
                return Action::Continue;
            }
            if let Err(action) = self.decrypt(input, cx) {
                // Nothing more of this connection reaches the handler.
                self.finishing = true;
                return action;
            }
            if matches!(self.phase, Phase::Handshake { .. })
                && self.tls.as_ref().is_some_and(|tls| !tls.is_handshaking())
            {
                let action = self.start(cx);
                if action != Action::Continue {
                    input.consume_all();
                    return action;
                }
            }
        }
    }

    /// Reads what rustls takes of `input`, processes it, and keeps the
    /// plaintext; sends what rustls has to send (handshake, tickets,
    /// alerts). Fails the connection on a protocol error.
    fn decrypt(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Result<(), Action> {
        let Some(tls) = &mut self.tls else {
            return Err(Action::Abort);
        };
        let mut bytes = input.bytes();
        match tls.read_tls(&mut bytes) {
            // Only after `close_notify`: nothing more is read.
            Ok(0) => {
                input.consume_all();
                self.peer_closed = true;
                return Ok(());
            }
            Ok(n) => input.consume(n),
            // Rustls holds too much plaintext: never, as it is taken at
            // once below; but input must not spin.
            Err(e) => {
                debug!(target: "evloop::tls", peer = %self.peer, "TLS input refused: {e}");
                return Err(Action::Abort);
            }
        }
        let processed = tls.process_new_packets();
        // The answer to a handshake message, or the alert for an error.
        let alerted = flush(tls, cx) > 0;
        let state = match processed {
            Ok(state) => state,
            Err(e) => return Err(self.protocol_error(&e, alerted)),
        };
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = self.plain_in.len();
            self.plain_in.resize(start + n, 0);
            if tls
                .reader()
                .read_exact(&mut self.plain_in[start..])
                .is_err()
            {
                return Err(Action::Abort);
            }
            self.unseen = true;
        }
        if state.peer_has_closed() {
            self.peer_closed = true;
        }
        Ok(())
    }

    /// The client will send nothing more: during the handshake, a
    /// truncated one; else, once the handler reads, its end of input.
    fn peer_ended(&mut self, reading: bool, cx: &mut Context<'_>) -> Action {
        match self.phase {
            Phase::Handshake { .. } => self.fail(
                FailReason::Truncated,
                "the client ended the connection in the handshake",
                false,
            ),
            Phase::Serving(_) if reading => {
                let leftovers = std::mem::take(&mut self.plain_in);
                self.call_inner(cx, |inner, cx| {
                    inner.on_read_closed(&leftovers, cx);
                    Action::Close
                })
            }
            // Plain connections never get here: their calls go straight to
            // the wrapped handler.
            Phase::Serving(_) | Phase::Failed | Phase::Plain(_) => Action::Continue,
        }
    }

    /// The handshake is done: counts it, opens the wrapped handler and
    /// lets it speak first.
    fn start(&mut self, cx: &mut Context<'_>) -> Action {
        cx.clear_deadline();
        let Some(tls) = &self.tls else {
            return Action::Abort;
        };
        let resumed = tls.handshake_kind() == Some(HandshakeKind::Resumed);
        self.shared.stats.count_completed(resumed);
        let inner = self.shared.service.open(&self.peer);
        self.phase = Phase::Serving(inner);
        self.call_inner(cx, |inner, cx| inner.on_open(cx))
    }

    /// Hands the plaintext to the wrapped handler; keeps what it leaves.
    fn deliver(&mut self, cx: &mut Context<'_>) -> Action {
        self.unseen = false;
        let mut plain = std::mem::take(&mut self.plain_in);
        let mut input = Input::new(&plain);
        let action = self.call_inner(cx, |inner, cx| inner.on_data(&mut input, cx));
        let consumed = input.consumed();
        if consumed == plain.len() {
            release(&mut plain);
        } else {
            plain.drain(..consumed);
        }
        self.plain_in = plain;
        action
    }

    /// Calls the wrapped handler (while serving) with a context whose
    /// output and files the layer encrypts, then encrypts what it wrote,
    /// and acts on what it returned ([`finish`](Self::finish)). Keeps the
    /// handler's drain notice apart from the layer's own (for a file).
    fn call_inner(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut S::Handler, &mut Context<'_>) -> Action,
    ) -> Action {
        let Phase::Serving(inner) = &mut self.phase else {
            return Action::Abort;
        };
        let layer_wanted = cx.take_drain_notice();
        let said = f(inner, &mut cx.layered(&mut self.plain_out, &mut self.file));
        if cx.drain_notice_requested() {
            self.inner_wants_drain = true;
        }
        if layer_wanted || self.file.is_some() {
            cx.notify_drained();
        }
        self.seal(cx);
        self.finish(said, cx)
    }

    /// Encrypts what the wrapped handler wrote into the connection's output.
    fn seal(&mut self, cx: &mut Context<'_>) {
        if self.plain_out.is_empty() {
            return;
        }
        if let Some(tls) = &mut self.tls {
            write_plain(tls, &self.plain_out, cx);
        }
        release(&mut self.plain_out);
    }

    /// Reads and encrypts the next chunk of the file being sent.
    fn send_chunk(&mut self, cx: &mut Context<'_>) -> Result<(), Action> {
        let (Some(file), Some(tls)) = (&mut self.file, &mut self.tls) else {
            return Ok(());
        };
        let mut buf = [0u8; FILE_READ];
        let mut budget = FILE_CHUNK;
        while file.left > 0 && budget > 0 {
            let n = file.left.min(budget).min(FILE_READ as u64) as usize;
            if let Err(e) = file.file.read_exact_at(&mut buf[..n], file.offset) {
                // The client was promised `left` more bytes.
                debug!(target: "evloop::tls", peer = %self.peer, "file being sent: {e}");
                return Err(Action::Abort);
            }
            write_plain(tls, &buf[..n], cx);
            file.offset += n as u64;
            file.left -= n as u64;
            budget -= n as u64;
        }
        if file.left == 0 {
            self.file = None;
        }
        Ok(())
    }

    /// What a wrapped handler's action means behind TLS: a close waits for
    /// its file, then sends `close_notify` after the output.
    fn finish(&mut self, action: Action, cx: &mut Context<'_>) -> Action {
        match action {
            Action::Continue => Action::Continue,
            Action::Abort => Action::Abort,
            Action::Close if self.file.is_some() => {
                self.finishing = true;
                cx.pause_reading();
                cx.notify_drained();
                Action::Continue
            }
            Action::Close => self.close(cx),
        }
    }

    /// Sends `close_notify` after the output, and closes.
    fn close(&mut self, cx: &mut Context<'_>) -> Action {
        self.finishing = true;
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            flush(tls, cx);
        }
        Action::Close
    }

    /// The wrapped handler resumed reading in a call that was not given
    /// input: it sees what it left again, as the connection core does.
    fn replay_if_resumed(&mut self, was_paused: bool, cx: &mut Context<'_>) -> Action {
        let resumed = was_paused && !cx.paused_by_handler();
        if resumed && (!self.plain_in.is_empty() || self.peer_closed) {
            self.unseen = true;
            return self.pump(&mut Input::new(&[]), cx);
        }
        Action::Continue
    }

    /// Ends a connection rustls found wrong: in the handshake, counts why.
    /// Closes after the alert rustls sent, if it `alerted`, else resets.
    fn protocol_error(&mut self, e: &rustls::Error, alerted: bool) -> Action {
        if self.serving() {
            debug!(target: "evloop::tls", peer = %self.peer, "TLS error: {e}");
            return if alerted {
                Action::Close
            } else {
                Action::Abort
            };
        }
        let reason = match self.hello_version {
            Some(version) if version < 0x0303 => FailReason::ProtocolVersion,
            _ => classify(e),
        };
        self.fail(reason, &e.to_string(), alerted)
    }

    /// Ends a handshake that failed: counts and logs why; closes after an
    /// alert if one was sent, else resets.
    fn fail(&mut self, reason: FailReason, detail: &str, alerted: bool) -> Action {
        if matches!(self.phase, Phase::Handshake { .. }) {
            self.phase = Phase::Failed;
            self.shared.stats.count_failed(reason);
            debug!(target: "evloop::tls", peer = %self.peer, reason = reason.name(), "TLS handshake failed: {detail}");
        }
        if alerted {
            Action::Close
        } else {
            Action::Abort
        }
    }
}

impl<S: Service> Handler for TlsHandler<S> {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        let state = &mut *self.state;
        if let Some(listeners) = &state.listeners
            && cx
                .local()
                .is_ok_and(|local| !listeners.iter().any(|l| l.covers(&local)))
        {
            state.tls = None;
            let mut inner = state.shared.service.open(&state.peer);
            let action = inner.on_open(cx);
            state.phase = Phase::Plain(inner);
            return action;
        }
        if state.tls.is_none() {
            return Action::Abort;
        }
        cx.set_deadline(self.state.shared.settings.handshake_timeout);
        Action::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        let state = &mut *self.state;
        match &mut state.phase {
            Phase::Plain(inner) => return inner.on_data(input, cx),
            Phase::Failed => {
                input.consume_all();
                return Action::Abort;
            }
            Phase::Handshake { started } if !*started => {
                *started = true;
                state.hello_version = hello_version(input.bytes());
                if !starts_a_handshake(input.bytes()) {
                    return state.fail(FailReason::NotTls, "not a TLS handshake record", false);
                }
            }
            Phase::Handshake { .. } | Phase::Serving(_) => {}
        }
        state.pump(input, cx)
    }

    fn on_read_closed(&mut self, unconsumed: &[u8], cx: &mut Context<'_>) {
        let state = &mut *self.state;
        if let Phase::Plain(inner) = &mut state.phase {
            return inner.on_read_closed(unconsumed, cx);
        }
        match state.phase {
            Phase::Handshake { started } => {
                let reason = if started || !unconsumed.is_empty() {
                    FailReason::Truncated
                } else {
                    FailReason::Empty
                };
                // Nothing more can come: the connection closes as it drains.
                let _ = state.fail(reason, "the client ended its input in the handshake", false);
            }
            Phase::Serving(_) if !state.finishing => {
                // The end of the connection is the end of the handler's
                // input, after what is still encrypted.
                let mut input = Input::new(unconsumed);
                state.pump(&mut input, cx);
                state.peer_closed = true;
                let _ = state.pump(&mut Input::new(&[]), cx);
            }
            // Plain was handed over above.
            Phase::Serving(_) | Phase::Failed | Phase::Plain(_) => {}
        }
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        let state = &mut *self.state;
        if let Phase::Plain(inner) = &mut state.phase {
            return inner.on_drained(cx);
        }
        if !state.serving() {
            return Action::Continue;
        }
        if state.file.is_some() {
            if let Err(action) = state.send_chunk(cx) {
                return action;
            }
            if state.file.is_some() || (state.inner_wants_drain && !state.finishing) {
                cx.notify_drained();
                return Action::Continue;
            }
            if state.finishing {
                return state.close(cx);
            }
            return Action::Continue;
        }
        if !state.inner_wants_drain || state.finishing {
            return Action::Continue;
        }
        state.inner_wants_drain = false;
        let was_paused = cx.paused_by_handler();
        let action = state.call_inner(cx, |inner, cx| inner.on_drained(cx));
        if action != Action::Continue {
            return action;
        }
        state.replay_if_resumed(was_paused, cx)
    }

    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Action {
        let state = &mut *self.state;
        if let Phase::Plain(inner) = &mut state.phase {
            return inner.on_deadline(cx);
        }
        match state.phase {
            Phase::Handshake { .. } => {
                state.fail(FailReason::Timeout, "no complete handshake in time", false)
            }
            Phase::Serving(_) if !state.finishing => {
                let was_paused = cx.paused_by_handler();
                let action = state.call_inner(cx, |inner, cx| inner.on_deadline(cx));
                if action != Action::Continue {
                    return action;
                }
                state.replay_if_resumed(was_paused, cx)
            }
            Phase::Serving(_) | Phase::Plain(_) => Action::Continue,
            Phase::Failed => Action::Abort,
        }
    }

    fn on_close(&mut self, reason: CloseReason) {
        let state = &mut *self.state;
        match &mut state.phase {
            Phase::Serving(inner) | Phase::Plain(inner) => inner.on_close(reason),
            Phase::Failed => {}
            // Closed by the server in the handshake.
            Phase::Handshake { started } => {
                let reason = match reason {
                    // Not the client's doing: not a failure.
                    CloseReason::Shutdown | CloseReason::Limit => return,
                    CloseReason::Idle => FailReason::Timeout,
                    _ if *started => FailReason::Truncated,
                    _ => FailReason::Empty,
                };
                state.phase = Phase::Failed;
                state.shared.stats.count_failed(reason);
                debug!(target: "evloop::tls", peer = %state.peer, reason = reason.name(), "TLS handshake failed: the connection ended");
            }
        }
    }
}

/// Whether `bytes`, a connection's first, can start a TLS handshake
/// record: content type 22, then a 3.x record version. SSLv2-style hellos
/// (no TLS version sends them) and anything else are not TLS.
fn starts_a_handshake(bytes: &[u8]) -> bool {
    matches!(bytes, [] | [0x16] | [0x16, 0x03, ..])
}

/// The `legacy_version` of the ClientHello that `bytes`, a connection's
/// first, begin with: after the record header (5 bytes) and the handshake
/// message's type and length (4).
fn hello_version(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [0x16, _, _, _, _, 1, _, _, _, major, minor, ..] => {
            Some(u16::from_be_bytes([*major, *minor]))
        }
        _ => None,
    }
}

/// Why rustls refused a handshake, as counted.
fn classify(e: &rustls::Error) -> FailReason {
    use rustls::{Error, InvalidMessage, PeerIncompatible};
    match e {
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => FailReason::NotTls,
        Error::PeerIncompatible(
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::ServerDoesNotSupportTls12Or13
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
        ) => FailReason::ProtocolVersion,
        Error::PeerIncompatible(_) | Error::NoApplicationProtocol => FailReason::Incompatible,
        Error::AlertReceived(_) => FailReason::Alert,
        _ => FailReason::Invalid,
    }
}

/// Encrypts `plain` into the connection's output: a record at a time, each
/// written out at once, so rustls holds nothing back.
fn write_plain(tls: &mut ServerConnection, mut plain: &[u8], cx: &mut Context<'_>) {
    while !plain.is_empty() {
        let n = tls.writer().write(plain).unwrap_or(0);
        flush(tls, cx);
        if n == 0 {
            // Only if rustls can send no more (after close_notify).
            return;
        }
        plain = &plain[n..];
    }
}

/// Moves what rustls has to send into the connection's output; returns
/// how many bytes that was.
fn flush(tls: &mut ServerConnection, cx: &mut Context<'_>) -> usize {
    let out = cx.output();
    let before = out.len();
    while tls.wants_write() {
        if tls.write_tls(out).is_err() {
            break;
        }
    }
    out.len() - before
}

/// Empties `buf` and gives its memory back when it is large.
fn release(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BUFFER {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}
