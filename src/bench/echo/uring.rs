//! The completion driver (`--io uring`, Linux): one io_uring per thread,
//! through evloop's safe wrapper ([`evloop::ring`]).
//!
//! Each connection has a receive armed at all times — multishot over TCP,
//! one completion per submission on Unix sockets (a multishot receive can
//! miss the end of input there on kernels in use) — into the ring's
//! provided buffers, and at most one send in flight, from its own buffer,
//! which the ring keeps until the send completes. Each batch of
//! completions is handled as a whole: echoed bytes are checked where the
//! kernel put them and the buffer goes straight back; the messages they
//! complete queue their successors; then the sends and re-armed receives of
//! the whole batch go to the kernel with the next wait, in one system call.
//! On the readiness driver the same batch costs a `read` and a `write` per
//! connection.
//!
//! With `--tls`, each connection's [`Session`] sits between the ring and
//! the echo check: received bytes are decrypted from the provided buffer
//! into a buffer of the thread's and checked; the send buffer carries the
//! session's records. With `--new-connection`, receives are one per
//! submission, so that once a connection's message is back and its
//! `close_notify` sent nothing of it is in flight: its socket closes then,
//! and the next one is connected in its place (a blocking connect: the ring
//! has no connect operation; on loopback it returns at once).
//!
//! A receive that ends (the kernel's choice, or `ENOBUFS` when the buffers
//! ran out) is submitted again at the end of the batch, once the batch's
//! buffers are back, so it never spins. A connection that fails is
//! cancelled and its socket kept open until the ring is gone, so that the
//! cancel finds it; completions still on their way for it only give their
//! buffers back.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use evloop::ring::{Completion as Done, Op, Ring, RingConfig};
use rustix::io::Errno;
use socket2::Socket;

use super::conn::Conn;
use super::payload::Payload;
use super::tls::Session;
use super::worker::{Driver, Plan, Tally, connect};

/// The most completions taken per wait.
const COMPLETIONS_PER_WAIT: usize = 1024;
/// The most bytes one send carries (pipelined messages gathered).
const SEND_LIMIT: usize = 64 * 1024;
/// The most memory a thread's receive buffers take.
const BUFFER_BUDGET: usize = 64 * 1024 * 1024;

/// A thread's ring.
#[derive(Debug)]
pub struct Completion {
    ring: Ring,
    /// Receive once per submission (Unix sockets), not multishot.
    oneshot: bool,
}

/// A connection on the completion driver.
#[derive(Debug)]
struct Link {
    socket: Socket,
    conn: Conn,
    /// The send buffer; `None` while the ring holds it for a send.
    output: Option<Vec<u8>>,
    /// A receive is in flight.
    recv_armed: bool,
    /// The TLS session (`--tls`).
    session: Option<Session>,
    /// Messages completed when the connection was opened.
    opened_at: u64,
    /// Its message is back (`--new-connection`): once nothing is in
    /// flight, the connection is replaced.
    retiring: bool,
}

impl Link {
    /// Whether the connection's TLS handshake is under way: a failure now
    /// is one to connect.
    fn handshaking(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.handshaken())
    }
}

/// The ring's sizes for `connections` connections of `plan`: room for a
/// receive and a send per connection in the submission queue; receive
/// buffers that each hold what one connection has in flight (4 KiB to
/// 64 KiB), two per connection, within [`BUFFER_BUDGET`]. Running out of
/// buffers costs a re-armed receive, not a lost byte.
fn ring_config(plan: &Plan, connections: usize) -> RingConfig {
    let per_connection = 2 * connections.max(1);
    let in_flight = plan.size.saturating_mul(plan.pipeline);
    let buffer_size = in_flight.next_power_of_two().clamp(4096, 64 * 1024);
    let mut buffers = per_connection.next_power_of_two().clamp(16, 32768);
    while buffers > 16 && buffers * buffer_size > BUFFER_BUDGET {
        buffers /= 2;
    }
    RingConfig {
        entries: per_connection.next_power_of_two().clamp(64, 4096) as u32,
        buffers: buffers as u16,
        buffer_size: buffer_size as u32,
    }
}

impl Driver for Completion {
    fn open(plan: &Plan, connections: usize) -> io::Result<Self> {
        Ok(Completion {
            ring: Ring::new(ring_config(plan, connections))?,
            oneshot: plan.target.inet().is_none() || plan.new_connection(),
        })
    }

    /// Nothing to do: the ring needs no registration, and the socket stays
    /// in blocking mode (the ring never blocks on it).
    fn prepare(&mut self, _socket: &Socket, _token: usize) -> io::Result<()> {
        Ok(())
    }

    fn drive(
        self,
        plan: &Plan,
        payload: &Payload,
        conns: Vec<(Socket, Conn)>,
        tally: &mut Tally,
        until: Instant,
    ) -> io::Result<()> {
        let capacity = (plan.size * plan.pipeline).min(SEND_LIMIT);
        let started = Instant::now();
        let links: Vec<Option<Link>> = conns
            .into_iter()
            .map(|(socket, conn)| {
                let session = match &plan.tls {
                    Some(tls) => match Session::new(tls, started) {
                        Ok(session) => Some(session),
                        Err(e) => {
                            tally.lost(&plan.target, &e, true);
                            return None;
                        }
                    },
                    None => None,
                };
                Some(Link {
                    socket,
                    opened_at: conn.completed(),
                    conn,
                    output: Some(Vec::with_capacity(capacity)),
                    recv_armed: false,
                    session,
                    retiring: false,
                })
            })
            .collect();
        // Every connection starts with its receive and its first messages.
        let tokens = 0..u32::try_from(links.len()).expect("fewer than 2^32 connections a thread");
        let mut run = Run {
            ring: self.ring,
            oneshot: self.oneshot,
            plan,
            payload,
            tally,
            links,
            rearm: tokens.clone().collect(),
            to_send: tokens.collect(),
            closed: Vec::new(),
            scratch: Vec::new(),
            plain: if plan.tls.is_some() {
                vec![0; SEND_LIMIT]
            } else {
                Vec::new()
            },
        };
        let mut completions = Vec::with_capacity(COMPLETIONS_PER_WAIT);
        let result = loop {
            if let Err(e) = run.submit() {
                break Err(e);
            }
            let now = Instant::now();
            if now >= until {
                break Ok(());
            }
            if let Err(e) = run
                .ring
                .submit_and_wait(&mut completions, Some(until - now))
            {
                break Err(e);
            }
            for done in completions.drain(..) {
                match done.op() {
                    Op::Recv => run.received(&done),
                    Op::Send => run.sent(&done),
                    // Cancels report nothing the load needs.
                    _ => {}
                }
            }
        };
        // A clean stop: dropping the ring cancels what is in flight and
        // waits for it; only then do the sockets close.
        let Run {
            ring,
            links,
            closed,
            ..
        } = run;
        drop(ring);
        drop(links);
        drop(closed);
        result
    }
}

/// The open connection `token`, if it is.
fn link(links: &mut [Option<Link>], token: u32) -> Option<&mut Link> {
    links.get_mut(token as usize)?.as_mut()
}

/// One thread's run on the ring.
struct Run<'a> {
    ring: Ring,
    oneshot: bool,
    plan: &'a Plan,
    payload: &'a Payload,
    tally: &'a mut Tally,
    /// The connections, by token; `None` once closed.
    links: Vec<Option<Link>>,
    /// Connections whose receive ended and is to be submitted again.
    rearm: Vec<u32>,
    /// Connections with bytes to send once no send is in flight.
    to_send: Vec<u32>,
    /// The sockets of failed connections, kept open until the ring is gone.
    closed: Vec<Socket>,
    /// Gathers plaintext for TLS sessions.
    scratch: Vec<u8>,
    /// Where TLS sessions decrypt received records.
    plain: Vec<u8>,
}

impl Run<'_> {
    /// Queues the batch's re-armed receives and sends; the next wait
    /// submits them.
    fn submit(&mut self) -> io::Result<()> {
        for token in std::mem::take(&mut self.rearm) {
            let Some(link) = link(&mut self.links, token) else {
                continue;
            };
            if link.recv_armed {
                continue;
            }
            link.recv_armed = true;
            let fd = link.socket.as_fd();
            if self.oneshot {
                self.ring.recv_once(fd, token)?;
            } else {
                self.ring.recv_multi(fd, token)?;
            }
        }
        for token in std::mem::take(&mut self.to_send) {
            let payload = self.payload;
            let Some(link) = link(&mut self.links, token) else {
                continue;
            };
            if let Some(session) = &mut link.session {
                // None: a send is in flight; its completion sends the rest.
                let Some(mut output) = link.output.take() else {
                    continue;
                };
                output.clear();
                // A retiring connection's next message waits for the next
                // connection: only its `close_notify` goes out.
                let conn = (!link.retiring).then_some(&mut link.conn);
                let sealed = seal(session, conn, payload, &mut self.scratch, &mut output);
                if output.is_empty() || sealed.is_err() {
                    link.output = Some(output);
                    if let Err(e) = sealed {
                        self.close(token, e);
                    }
                    continue;
                }
                let fd = link.socket.as_fd();
                self.ring.send(fd, output, 0, token)?;
                continue;
            }
            if !link.conn.has_unsent() {
                continue;
            }
            // None: a send is in flight; its completion sends the rest.
            let Some(mut output) = link.output.take() else {
                continue;
            };
            output.clear();
            link.conn.gather(payload, &mut output, SEND_LIMIT);
            let fd = link.socket.as_fd();
            self.ring.send(fd, output, 0, token)?;
        }
        Ok(())
    }

    /// A receive completion: echoed bytes are checked and their buffer
    /// given back; the end of input or an error closes the connection.
    fn received(&mut self, done: &Done) {
        let token = done.token();
        let ended = !done.more();
        let mut failed = None;
        if let Some((id, bytes)) = self.ring.received(done) {
            let now = Instant::now();
            if let Some(Some(link)) = self.links.get_mut(token as usize)
                && !bytes.is_empty()
            {
                match &mut link.session {
                    None => link.conn.check(self.payload, bytes, now, &mut *self.tally),
                    Some(session) => {
                        failed = session
                            .receive(
                                bytes,
                                &mut link.conn,
                                self.payload,
                                &mut self.plain,
                                now,
                                &mut *self.tally,
                            )
                            .err();
                        if session.wants_write() {
                            self.to_send.push(token);
                        }
                    }
                }
                if link.conn.has_unsent() {
                    self.to_send.push(token);
                }
            }
            self.ring.recycle(id);
        }
        if let Some(e) = failed {
            self.close(token, e);
            return;
        }
        let new_connection = self.plan.new_connection();
        let Some(link) = link(&mut self.links, token) else {
            return;
        };
        if ended {
            link.recv_armed = false;
        }
        if new_connection && !link.retiring && link.conn.completed() > link.opened_at {
            // The message is back: say goodbye, and stop receiving.
            link.retiring = true;
            if let Some(session) = &mut link.session {
                session.close();
            }
            self.to_send.push(token);
        }
        let retiring = link.retiring;
        match done.result() {
            Ok(0) => self.close(
                token,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ),
            ),
            Ok(_) if retiring => self.reopen_when_idle(token),
            Ok(_) => {
                if ended {
                    self.rearm.push(token);
                }
            }
            // The buffers ran out: the batch gives them back first.
            Err(e) if Errno::from_io_error(&e) == Some(Errno::NOBUFS) => self.rearm.push(token),
            Err(e) => self.close(token, e),
        }
    }

    /// A send completion: the bytes that went out are counted, and what
    /// was queued meanwhile goes next.
    fn sent(&mut self, done: &Done) {
        let token = done.token();
        let Some((output, start)) = self.ring.take_sent(done) else {
            return;
        };
        let payload = self.payload;
        let Some(link) = link(&mut self.links, token) else {
            return;
        };
        match done.result() {
            Ok(0) => {
                link.output = Some(output);
                self.close(token, io::ErrorKind::WriteZero.into());
            }
            // The session's records, of which the rest goes out at once
            // (the session counted the plaintext as sent when it took it).
            Ok(n) if link.session.is_some() => {
                let sent = start + n as usize;
                if sent < output.len() {
                    let fd = link.socket.as_fd();
                    if let Err(e) = self.ring.send(fd, output, sent, token) {
                        self.close(token, e);
                    }
                    return;
                }
                link.output = Some(output);
                let session = link.session.as_ref().expect("a TLS connection");
                if session.wants_write() || link.conn.has_unsent() {
                    self.to_send.push(token);
                }
                if link.retiring {
                    self.reopen_when_idle(token);
                }
            }
            Ok(n) => {
                link.output = Some(output);
                link.conn.sent(payload, n as usize);
                if link.conn.has_unsent() {
                    self.to_send.push(token);
                }
            }
            Err(e) => {
                link.output = Some(output);
                self.close(token, e);
            }
        }
    }

    /// Replaces the retiring connection `token` with a new one once nothing
    /// of it is in flight or waiting: its socket closes, the next one
    /// connects (blocking; a failure counts as one to connect), and its
    /// message, stamped now, goes out behind the new `ClientHello`.
    fn reopen_when_idle(&mut self, token: u32) {
        let Some(tls) = &self.plan.tls else {
            return;
        };
        let Some(link) = link(&mut self.links, token) else {
            return;
        };
        let waiting = link.session.as_ref().is_some_and(Session::wants_write);
        if link.recv_armed || link.output.is_none() || waiting {
            return;
        }
        let now = Instant::now();
        let connected = Session::new(tls, now).and_then(|session| {
            // The new session first: a failure to connect counts as one.
            link.session = Some(session);
            connect(&self.plan.target, self.plan.connect_timeout)
        });
        match connected {
            Ok(socket) => {
                // Nothing of the old socket is in flight: it closes here.
                link.socket = socket;
                link.retiring = false;
                link.opened_at = link.conn.completed();
                link.conn.restamp_unsent(now);
                self.rearm.push(token);
                self.to_send.push(token);
            }
            Err(e) => self.close(token, e),
        }
    }

    /// Counts the connection as lost and cancels what it has in flight.
    fn close(&mut self, token: u32, error: io::Error) {
        let Some(link) = self.links.get_mut(token as usize).and_then(Option::take) else {
            return;
        };
        self.tally
            .lost(&self.plan.target, &error, link.handshaking());
        if (link.recv_armed || link.output.is_none())
            && let Err(e) = self.ring.cancel_fd(link.socket.as_fd(), token)
        {
            say!("error: cancelling connection {token}'s operations: {e}");
        }
        self.closed.push(link.socket);
    }
}

/// Hands `conn`'s queued plaintext (if a connection is given) to `session`
/// and appends the records that wait to `output`, up to about
/// [`SEND_LIMIT`] bytes.
fn seal(
    session: &mut Session,
    mut conn: Option<&mut Conn>,
    payload: &Payload,
    scratch: &mut Vec<u8>,
    output: &mut Vec<u8>,
) -> io::Result<()> {
    loop {
        if let Some(conn) = conn.as_deref_mut() {
            session.encrypt(conn, payload, scratch)?;
        }
        if !session.wants_write() || output.len() >= SEND_LIMIT {
            return Ok(());
        }
        // Taking records makes room in rustls's buffer: more plaintext fits.
        session.write_tls(output)?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::echo::worker::Io;

    fn plan(size: usize, pipeline: usize) -> Plan {
        Plan {
            target: "127.0.0.1:1815".parse().unwrap(),
            io: Io::Uring,
            size,
            pipeline,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            tls: None,
        }
    }

    #[test]
    fn rings_are_sized_for_their_connections() {
        // Small messages: 4 KiB buffers, two per connection.
        let config = ring_config(&plan(128, 1), 500);
        assert_eq!((config.buffers, config.buffer_size), (1024, 4096));
        assert_eq!(config.entries, 1024);
        // What a connection has in flight fits one buffer, up to 64 KiB.
        let config = ring_config(&plan(4096, 4), 50);
        assert_eq!((config.buffers, config.buffer_size), (128, 16 * 1024));
        // Never more than the budget, never fewer than 16 buffers.
        let config = ring_config(&plan(1 << 20, 16), 100_000);
        assert_eq!(config.buffer_size, 64 * 1024);
        assert!(usize::from(config.buffers) * 64 * 1024 <= BUFFER_BUDGET);
        assert_eq!(ring_config(&plan(1, 1), 1).buffers, 16);
        assert_eq!(ring_config(&plan(1, 1), 1).entries, 64);
    }
}
