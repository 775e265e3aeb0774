//! An in-memory driver for one handler, for tests and fuzzers.
//!
//! [`Connection`] feeds a [`Handler`] through the same connection core the
//! real drivers use — leftover input and its limit (`max_input`), pauses
//! (the handler's and the output's high watermark), drain notices, the
//! replay of leftovers when a paused handler resumes, its deadline, what
//! [`Action`](crate::Action)s mean, the close once the output is out — with
//! no event queue and no loop: each method is one thing the client or the
//! clock does, and returns once the connection has done all it can with it.
//! So a test drives any service deterministically, and a fuzzer fast.
//!
//! What it models:
//!
//! * The client's bytes wait "in the kernel" until the connection reads
//!   them, as a socket's receive buffer does: not while it is paused or
//!   no longer reads. A read delivers at most 64 KiB, as the readiness
//!   driver's read buffer does.
//! * Output stays pending until [`Connection::take_output`], the client
//!   reading everything: the socket takes nothing of its own, so the
//!   watermarks count all output the client has not read.
//! * Time does not pass: [`Connection::fire_deadline`] makes the pending
//!   deadline (the handler's, or the linger's) pass. There is no idle
//!   timeout and no server-wide buffer budget.
//!
//! The core's socket is one end of a Unix socket pair (the connection keeps
//! the other end open), so [`Context::peer`](crate::Context::peer) and
//! [`Context::local`](crate::Context::local) return
//! [`Address::Unnamed`], and the handler's service is opened with that peer.
//!
//! ```
//! use evloop::services::Echo;
//! use evloop::testing::{Connection, State};
//!
//! let mut conn = Connection::open(&Echo);
//! conn.receive(b"hello");
//! assert_eq!(conn.take_output(), b"hello");
//! conn.close_input();
//! assert_eq!(conn.state(), State::Closed(evloop::CloseReason::Peer));
//! ```

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use super::conn::{Conn, Core, Env, Fate, Phase, Spare};
use crate::Address;
use crate::clock::Clock;
use crate::config::Config;
use crate::service::{CloseReason, Handler, Service};

/// The most one read delivers: the readiness driver's read buffer.
const READ_SIZE: usize = super::READ_BUFFER;

/// Where a [`Connection`] is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Reading (unless paused) and writing.
    Open,
    /// Reading no more — the handler closed, or the client's end of input
    /// was read — and closing once its output is taken.
    Closing,
    /// The handler closed and its output was all taken: the end of the
    /// stream is sent (the client reads no more), and what the client
    /// still sends is dropped until it closes too
    /// ([`close_input`](Connection::close_input)) or the linger time passes
    /// ([`fire_deadline`](Connection::fire_deadline)).
    Lingering,
    /// Closed for this reason, and the handler heard it: output not taken
    /// by then was dropped, as the loop drops it.
    Closed(CloseReason),
    /// Reset at the handler's request ([`Action::Abort`](crate::Action)):
    /// output not taken was dropped; the handler heard
    /// [`CloseReason::Service`].
    Aborted,
}

/// Sets up a [`Connection`]: the limits the connection core runs with.
#[derive(Clone, Debug)]
pub struct Builder {
    config: Config,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// The server's defaults: input left unconsumed up to 64 KiB, output
    /// watermarks 64 KiB and 256 KiB.
    pub fn new() -> Builder {
        Builder {
            config: Config::default(),
        }
    }

    /// The most input a handler may leave unconsumed; past it the
    /// connection closes with [`CloseReason::Error`].
    pub fn max_input(mut self, bytes: usize) -> Self {
        self.config.max_input = bytes;
        self
    }

    /// Output watermarks: reading pauses once `high` bytes are pending and
    /// resumes, and drain notices come, at `low` or fewer.
    pub fn watermarks(mut self, low: usize, high: usize) -> Self {
        self.config.low_watermark = low.min(high);
        self.config.high_watermark = high.max(1);
        self
    }

    /// Opens a connection to `service` (a handler that is `Clone` is its
    /// own service): its handler's `on_open` has run.
    ///
    /// # Panics
    /// If no Unix socket pair can be made (out of descriptors).
    pub fn open<S: Service>(self, service: &S) -> Connection<S::Handler> {
        let (server, client) = UnixStream::pair().expect("a Unix socket pair");
        let peer = Address::Unnamed;
        let clock = Clock::start();
        let handler = service.open(&peer);
        let mut connection = Connection {
            conn: Conn {
                core: Core::new(OwnedFd::from(server), 0, clock.tick()),
                handler,
            },
            _client: client,
            clock,
            config: self.config,
            spare: Spare::default(),
            unread: Vec::new(),
            input_closed: false,
            ended: None,
        };
        let env = Env::new(&connection.clock, &connection.config, 0, Some(&peer));
        let opened = call(&mut connection.conn, &env, |conn, out, env| {
            conn.opened(out, env)
        });
        connection.go_on(opened.map(drop));
        connection
    }
}

/// One connection of a handler, driven in memory: see the [module
/// docs](self).
pub struct Connection<H: Handler> {
    conn: Conn<H>,
    /// The other end of the core's socket, kept open so that it stays
    /// connected.
    _client: UnixStream,
    clock: Clock,
    config: Config,
    spare: Spare,
    /// What the client sent and the connection has not read yet.
    unread: Vec<u8>,
    /// The client closed its side, after `unread`.
    input_closed: bool,
    /// How the connection ended, once it has.
    ended: Option<State>,
}

impl<H: Handler> fmt::Debug for Connection<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state())
            .field("paused", &self.is_paused())
            .field("pending_output", &self.pending_output())
            .field("leftover_input", &self.leftover_input())
            .field("unread_input", &self.unread.len())
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Connection<H> {
    /// Opens a connection to `service` with the server's default limits
    /// (see [`Builder`]).
    pub fn open<S: Service<Handler = H>>(service: &S) -> Connection<H> {
        Builder::new().open(service)
    }

    /// The client sends `bytes`: the connection reads them now unless it
    /// is paused or reads no more (they wait until it does); once it has
    /// closed, they are dropped.
    ///
    /// # Panics
    /// After [`close_input`](Self::close_input): the client sends nothing
    /// after its end of input.
    pub fn receive(&mut self, bytes: &[u8]) {
        assert!(!self.input_closed, "receive after close_input");
        if self.ended.is_some() {
            return;
        }
        self.unread.extend_from_slice(bytes);
        self.run();
    }

    /// The client closes its side (FIN): once the connection has read what
    /// came before, the handler hears `on_read_closed`. Does nothing the
    /// second time.
    pub fn close_input(&mut self) {
        if self.input_closed {
            return;
        }
        self.input_closed = true;
        if self.ended.is_none() {
            self.run();
        }
    }

    /// The client reads all the output pending (a file being sent too);
    /// the connection then does what that allows: lifts its output pause,
    /// tells a handler that asked that its output drained, closes once a
    /// closing connection's output is out.
    pub fn take_output(&mut self) -> Vec<u8> {
        if self.ended.is_some() {
            return Vec::new();
        }
        let mut output = self.conn.core.unsent().to_vec();
        self.conn.core.sent(output.len(), self.clock.tick());
        // A file being sent follows the output: the client reads it too, a
        // chunk at a time as a driver without `sendfile` sends it.
        while self.conn.core.sending_file() {
            if self.conn.core.refill_from_file().is_err() {
                self.end(Fate::Abort);
                return output;
            }
            let chunk = self.conn.core.unsent();
            output.extend_from_slice(chunk);
            let n = chunk.len();
            self.conn.core.sent(n, self.clock.tick());
        }
        self.run();
        output
    }

    /// The connection's deadline passes: the linger time while lingering
    /// (it closes), else the handler's deadline if it set one. Returns
    /// whether there was a deadline.
    pub fn fire_deadline(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        if self.conn.core.phase == Phase::Lingering {
            self.end(Fate::Close(CloseReason::Service));
            return true;
        }
        if self.conn.core.deadline().is_none() {
            return false;
        }
        let env = Env::new(&self.clock, &self.config, 0, None);
        let fired = call(&mut self.conn, &env, |conn, out, env| {
            conn.deadline_passed(out, env)
        });
        self.go_on(fired.map(drop));
        true
    }

    /// Whether the handler has a deadline set.
    pub fn has_deadline(&self) -> bool {
        self.ended.is_none() && self.conn.core.deadline().is_some()
    }

    /// Whether reading is paused while the connection is open: by its
    /// handler, or because its output passed the high watermark.
    pub fn is_paused(&self) -> bool {
        self.ended.is_none() && self.conn.core.phase == Phase::Open && !self.conn.core.wants_read()
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        if let Some(ended) = self.ended {
            return ended;
        }
        match self.conn.core.phase {
            Phase::Open => State::Open,
            Phase::Draining(_) | Phase::Closing => State::Closing,
            Phase::Lingering => State::Lingering,
        }
    }

    /// Output produced and not taken yet.
    pub fn pending_output(&self) -> usize {
        self.conn.core.pending()
    }

    /// How much input the handler left unconsumed, kept for its next call
    /// (at most `max_input`).
    pub fn leftover_input(&self) -> usize {
        self.conn.core.leftover_input().len()
    }

    /// How much of what the client sent the connection has not read yet.
    pub fn unread_input(&self) -> usize {
        self.unread.len()
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.conn.handler
    }

    /// Reads, and tells the handler of drained output, as long as the
    /// connection wants to and can.
    fn run(&mut self) {
        let ran = self.read_while_wanted();
        self.go_on(ran);
    }

    /// After a handler call: goes on as the drivers do, or ends the
    /// connection as the call said.
    fn go_on(&mut self, called: Result<(), Fate>) {
        match called.and_then(|()| self.read_while_wanted()) {
            Ok(()) => {}
            Err(fate) => self.end(fate),
        }
    }

    fn read_while_wanted(&mut self) -> Result<(), Fate> {
        loop {
            self.settle_output()?;
            let env = Env::new(&self.clock, &self.config, 0, None);
            match self.conn.core.phase {
                Phase::Open if self.conn.core.wants_read() && !self.unread.is_empty() => {
                    let n = self.unread.len().min(READ_SIZE);
                    let fresh: Vec<u8> = self.unread.drain(..n).collect();
                    call(&mut self.conn, &env, |conn, out, env| {
                        conn.received(&fresh, out, env)
                    })?;
                }
                Phase::Open if self.conn.core.wants_read() && self.input_closed => {
                    call(&mut self.conn, &env, |conn, out, env| {
                        conn.read_closed(out, env)
                    })?;
                }
                Phase::Lingering => {
                    // Read and dropped; the client's end of input ends it.
                    self.unread.clear();
                    if self.input_closed {
                        return Err(Fate::Close(CloseReason::Service));
                    }
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
    }

    /// Lifts the output pauses once drained, tells a streaming handler its
    /// output drained, and ends what is done, as the drivers do after every
    /// event.
    fn settle_output(&mut self) -> Result<(), Fate> {
        let low = self.config.low_watermark;
        self.conn.core.resume_if_drained(low);
        let env = Env::new(&self.clock, &self.config, 0, None);
        // A budget that runs out only hands the turn back to a real loop,
        // which serves the connection again later in the same turn.
        loop {
            let mut budget = self.config.read_budget;
            let streaming = self.conn.stream_while_drained(low, &mut budget, |conn| {
                call(conn, &env, |conn, out, env| conn.drained(out, env))
            })?;
            if !streaming {
                break;
            }
        }
        if self.conn.core.pending() == 0 {
            self.conn.core.end_if_flushed(self.clock.tick())?;
        }
        Ok(())
    }

    fn end(&mut self, fate: Fate) {
        let (reason, state) = match fate {
            Fate::Close(reason) => (reason, State::Closed(reason)),
            Fate::Abort => (CloseReason::Service, State::Aborted),
        };
        self.ended = Some(state);
        self.unread = Vec::new();
        // Nothing here publishes buffered bytes: the count is dropped.
        let mut unpublished = 0;
        self.conn.ended(reason, &mut unpublished, &mut self.spare);
    }
}

impl<H: Handler> Drop for Connection<H> {
    /// An open connection is closed as at a server's shutdown deadline:
    /// its handler hears [`CloseReason::Shutdown`].
    fn drop(&mut self) {
        if self.ended.is_none() {
            self.end(Fate::Close(CloseReason::Shutdown));
        }
    }
}

/// One call into the connection's state machine, writing into its own
/// output buffer.
fn call<H: Handler>(
    conn: &mut Conn<H>,
    env: &Env<'_>,
    f: impl FnOnce(&mut Conn<H>, &mut Vec<u8>, &Env<'_>) -> Result<(), Fate>,
) -> Result<usize, Fate> {
    let high = env.config.high_watermark;
    let (wrote, _paused) = conn.call_into_own_output(high, |conn, out| f(conn, out, env))?;
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::services::Echo;
    use crate::{Action, Context, Input};

    /// Answers each line with it in capitals, one line per call: it pauses
    /// after each answer and resumes when the answer has drained. Records
    /// what it heard of the connection.
    #[derive(Clone, Default)]
    struct Lines {
        heard: Arc<Mutex<Vec<String>>>,
        /// What it returns after answering a line that says `close`/`abort`.
        ending: Option<Action>,
    }

    impl Lines {
        fn heard(&self) -> Vec<String> {
            self.heard.lock().unwrap().clone()
        }

        fn note(&self, what: String) {
            self.heard.lock().unwrap().push(what);
        }
    }

    impl Handler for Lines {
        fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
            self.note(format!(
                "open {} {}",
                cx.peer().unwrap(),
                cx.local().unwrap()
            ));
            cx.set_deadline(Duration::from_secs(1));
            Action::Continue
        }

        fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
            let Some(end) = input.bytes().iter().position(|&b| b == b'\n') else {
                return Action::Continue;
            };
            let line = input.bytes()[..=end].to_ascii_uppercase();
            input.consume(end + 1);
            cx.write(&line);
            if line.starts_with(b"BYE") {
                return self.ending.unwrap_or(Action::Close);
            }
            cx.pause_reading();
            cx.notify_drained();
            Action::Continue
        }

        fn on_read_closed(&mut self, unconsumed: &[u8], _cx: &mut Context<'_>) {
            self.note(format!("read closed with {} left", unconsumed.len()));
        }

        fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
            cx.resume_reading();
            Action::Continue
        }

        fn on_deadline(&mut self, cx: &mut Context<'_>) -> Action {
            self.note("deadline".into());
            cx.write(b"late\n");
            Action::Continue
        }

        fn on_close(&mut self, reason: CloseReason) {
            self.note(format!("closed {}", reason.name()));
        }
    }

    #[test]
    fn echo_answers_and_closes_when_the_client_does() {
        let mut conn = Connection::open(&Echo);
        conn.receive(b"hello");
        assert_eq!(conn.pending_output(), 5);
        assert_eq!(conn.take_output(), b"hello");
        assert_eq!(conn.state(), State::Open);
        conn.close_input();
        assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
        assert!(conn.take_output().is_empty());
    }

    #[test]
    fn the_handler_sees_an_unnamed_peer_and_local_address() {
        let lines = Lines::default();
        let conn = Connection::open(&lines);
        assert_eq!(lines.heard(), ["open unix:(unnamed) unix:(unnamed)"]);
        drop(conn);
        assert_eq!(lines.heard()[1], "closed shutdown");
    }

    #[test]
    fn a_paused_handler_gets_its_leftovers_again_when_it_resumes() {
        let lines = Lines::default();
        // A low watermark of 0: the output drains only when taken.
        let mut conn = Builder::new().watermarks(0, 1024).open(&lines);
        conn.receive(b"one\ntwo\nthr");
        assert!(conn.is_paused());
        assert_eq!(conn.leftover_input(), 7);
        // The answer drains: the handler resumes, sees "two\n" again
        // without a new read, answers and pauses once more.
        assert_eq!(conn.take_output(), b"ONE\n");
        assert_eq!(conn.take_output(), b"TWO\n");
        assert!(!conn.is_paused());
        assert_eq!(conn.leftover_input(), 3);
        conn.receive(b"ee\n");
        assert_eq!(conn.take_output(), b"THREE\n");
    }

    #[test]
    fn input_waits_unread_while_paused_and_so_does_the_end_of_input() {
        let lines = Lines::default();
        let mut conn = Builder::new().watermarks(0, 1024).open(&lines);
        conn.receive(b"a\n");
        conn.receive(b"b\n");
        conn.close_input();
        assert_eq!(conn.unread_input(), 2);
        assert_eq!(conn.state(), State::Open);
        assert_eq!(conn.take_output(), b"A\n");
        assert_eq!(conn.take_output(), b"B\n");
        assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
        let heard = lines.heard();
        assert_eq!(heard[1..], ["read closed with 0 left", "closed peer"]);
    }

    #[test]
    fn output_past_the_high_watermark_pauses_reading_until_taken() {
        let mut conn = Builder::new().watermarks(4, 8).open(&Echo);
        conn.receive(b"0123456789");
        assert!(conn.is_paused());
        conn.receive(b"abc");
        assert_eq!(conn.unread_input(), 3);
        assert_eq!(conn.take_output(), b"0123456789");
        assert!(!conn.is_paused());
        assert_eq!(conn.take_output(), b"abc");
    }

    #[test]
    fn input_left_past_the_limit_closes_with_an_error() {
        let lines = Lines::default();
        let mut conn = Builder::new().max_input(8).open(&lines);
        conn.receive(b"12345678");
        assert_eq!(conn.state(), State::Open);
        conn.receive(b"9");
        assert_eq!(conn.state(), State::Closed(CloseReason::Error));
        assert_eq!(lines.heard().last().unwrap(), "closed error");
    }

    #[test]
    fn close_sends_the_output_then_lingers_until_the_client_closes() {
        let lines = Lines::default();
        let mut conn = Connection::open(&lines);
        conn.receive(b"bye\nignored\n");
        assert_eq!(conn.state(), State::Closing);
        assert_eq!(conn.take_output(), b"BYE\n");
        assert_eq!(conn.state(), State::Lingering);
        conn.receive(b"more");
        assert_eq!(conn.unread_input(), 0);
        conn.close_input();
        assert_eq!(conn.state(), State::Closed(CloseReason::Service));
    }

    #[test]
    fn the_linger_time_passing_closes_a_lingering_connection() {
        let mut conn = Connection::open(&Lines::default());
        conn.receive(b"bye\n");
        conn.take_output();
        assert!(conn.fire_deadline());
        assert_eq!(conn.state(), State::Closed(CloseReason::Service));
        assert!(!conn.fire_deadline());
    }

    #[test]
    fn abort_drops_the_output_not_taken() {
        let lines = Lines {
            ending: Some(Action::Abort),
            ..Lines::default()
        };
        let mut conn = Connection::open(&lines);
        conn.receive(b"bye\n");
        assert_eq!(conn.state(), State::Aborted);
        assert!(conn.take_output().is_empty());
        assert_eq!(lines.heard().last().unwrap(), "closed service");
    }

    #[test]
    fn the_handlers_deadline_fires_once_when_asked() {
        let lines = Lines::default();
        let mut conn = Connection::open(&lines);
        assert!(conn.has_deadline());
        assert!(conn.fire_deadline());
        assert!(!conn.has_deadline());
        assert!(!conn.fire_deadline());
        assert_eq!(conn.take_output(), b"late\n");
        assert_eq!(lines.heard()[1], "deadline");
    }
}
