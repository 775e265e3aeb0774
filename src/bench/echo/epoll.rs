//! The readiness driver (`--io epoll`, the default): one
//! [`Poller`] per thread — epoll, or kqueue on BSD and macOS — with every
//! socket non-blocking and registered once for both directions
//! (edge-triggered), one read buffer and one write buffer per thread, and
//! `read`/`write` called here whenever a socket is ready.
//!
//! With `--tls`, each connection's [`Session`] sits between the socket and
//! the echo check: bytes read go through it (into a second buffer of the
//! thread's, for the plaintext), and its records are written straight to
//! the socket. With `--new-connection`, a connection whose message came
//! back is closed and replaced at once by a new one, connected without
//! blocking, under the same token.

use std::io::{self, Read, Write};
use std::time::Instant;

use evloop::poll::{Events, Interest, Poller, Token};
use socket2::Socket;

use super::conn::{Completions, Conn};
use super::payload::Payload;
use super::tls::Session;
use super::worker::{Driver, Plan, Tally, connect_nonblocking};

/// How many events one wait may return.
const EVENTS_PER_WAIT: usize = 1024;
/// The size of the read buffer and of the buffer that gathers pipelined
/// messages into one write.
const IO_BUFFER: usize = 64 * 1024;

/// A thread's poller.
#[derive(Debug)]
pub struct Readiness {
    poller: Poller,
}

impl Driver for Readiness {
    fn open(_plan: &Plan, _connections: usize) -> io::Result<Self> {
        Ok(Readiness {
            poller: Poller::new()?,
        })
    }

    fn prepare(&mut self, socket: &Socket, token: usize) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poller.register(socket, Token(token), interest)
    }

    fn drive(
        self,
        plan: &Plan,
        payload: &Payload,
        conns: Vec<(Socket, Conn)>,
        tally: &mut Tally,
        until: Instant,
    ) -> io::Result<()> {
        let mut read_buffer = vec![0; IO_BUFFER];
        let mut plain_buffer = if plan.tls.is_some() {
            vec![0; IO_BUFFER]
        } else {
            Vec::new()
        };
        let mut write_buffer = Vec::with_capacity(IO_BUFFER);
        let started = Instant::now();
        let mut streams: Vec<Option<Stream>> = conns
            .into_iter()
            .map(|(socket, conn)| {
                let opened_at = conn.completed();
                let mut stream = Stream {
                    socket,
                    conn,
                    write_blocked: false,
                    session: None,
                    opened_at,
                };
                let result = match &plan.tls {
                    Some(tls) => Session::new(tls, started).map(|s| stream.session = Some(s)),
                    None => Ok(()),
                };
                match result.and_then(|()| stream.flush(payload, &mut write_buffer)) {
                    Ok(()) => Some(stream),
                    Err(e) => {
                        tally.lost(&plan.target, &e, stream.handshaking());
                        None
                    }
                }
            })
            .collect();

        let mut events = Events::with_capacity(EVENTS_PER_WAIT);
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            self.poller.wait(&mut events, Some(until - now))?;
            for event in events.iter() {
                let Some(slot) = streams.get_mut(event.token().0) else {
                    continue;
                };
                let Some(stream) = slot else {
                    continue;
                };
                if event.is_writable() {
                    stream.write_blocked = false;
                }
                let mut result = Ok(());
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    result = match &mut stream.session {
                        None => stream.read(payload, &mut read_buffer, tally),
                        Some(_) => {
                            stream.read_tls(payload, &mut read_buffer, &mut plain_buffer, tally)
                        }
                    };
                    // The read stops once every byte sent is back, before
                    // an end of input that came with the last echo; no
                    // later edge would tell, and the server owes nothing
                    // more that could raise one.
                    if result.is_ok() && event.is_read_closed() && !stream.finished(plan) {
                        result = Err(server_closed());
                    }
                }
                if result.is_ok() && stream.finished(plan) {
                    result = stream.reopen(plan, &self.poller, event.token());
                }
                // Each message completed by the read queued its successor: send.
                result = result.and_then(|()| stream.flush(payload, &mut write_buffer));
                if let Err(e) = result {
                    tally.lost(&plan.target, &e, stream.handshaking());
                    // A TLS alert about the failure, if the socket takes it.
                    if let Some(session) = &mut stream.session {
                        let _ = session.write_tls(&mut stream.socket);
                    }
                    // Closing the socket also removes it from the poller.
                    *slot = None;
                }
            }
        }
    }
}

/// A connection on the readiness driver: its non-blocking socket and its
/// bookkeeping.
#[derive(Debug)]
struct Stream {
    /// A TCP or Unix stream socket.
    socket: Socket,
    conn: Conn,
    /// The last write returned `WouldBlock`: wait for a writable event.
    write_blocked: bool,
    /// The TLS session (`--tls`).
    session: Option<Session>,
    /// Messages completed when the connection was opened.
    opened_at: u64,
}

impl Stream {
    /// Whether the connection's TLS handshake is under way: a failure now
    /// is one to connect.
    fn handshaking(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.handshaken())
    }

    /// Whether the connection is done (`--new-connection`: its message
    /// came back).
    fn finished(&self, plan: &Plan) -> bool {
        plan.new_connection() && self.conn.completed() > self.opened_at
    }

    /// Ends the connection (a `close_notify` if the socket takes it) and
    /// opens the next one under `token`, its session and connect started
    /// now; the message queued for it is stamped now.
    fn reopen(&mut self, plan: &Plan, poller: &Poller, token: Token) -> io::Result<()> {
        let Some(tls) = &plan.tls else {
            return Ok(());
        };
        if let Some(session) = &mut self.session {
            session.close();
            let _ = session.write_tls(&mut self.socket);
        }
        let now = Instant::now();
        // The new session first: a failure to connect counts as one.
        self.session = Some(Session::new(tls, now)?);
        let socket = connect_nonblocking(&plan.target, plan.connect_timeout)?;
        poller.register(&socket, token, Interest::READABLE | Interest::WRITABLE)?;
        // The old socket closes here, which removes it from the poller.
        self.socket = socket;
        self.write_blocked = false;
        self.opened_at = self.conn.completed();
        self.conn.restamp_unsent(now);
        Ok(())
    }

    /// Writes queued bytes until all are out or the socket is full.
    /// `scratch` gathers several pipelined messages into one `write`.
    fn flush(&mut self, payload: &Payload, scratch: &mut Vec<u8>) -> io::Result<()> {
        if let Some(session) = &mut self.session {
            return flush_tls(
                session,
                &mut self.socket,
                &mut self.conn,
                &mut self.write_blocked,
                payload,
                scratch,
            );
        }
        while !self.write_blocked && self.conn.has_unsent() {
            scratch.clear();
            self.conn.gather(payload, scratch, IO_BUFFER);
            match self.socket.write(scratch) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.conn.sent(payload, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads and checks echoed bytes until the socket is drained or every
    /// byte written so far is back, reporting each completed message.
    ///
    /// Reading never asks for more than is outstanding: a correct server has
    /// nothing else to send, and stopping there spares the `read` that would
    /// only return `WouldBlock` (the next echo raises a new edge; an end of
    /// input that came with this one is the caller's to see in the event).
    /// Bytes a broken server adds are read with the next echo and show up
    /// as a mismatch.
    fn read(
        &mut self,
        payload: &Payload,
        buffer: &mut [u8],
        completions: &mut impl Completions,
    ) -> io::Result<()> {
        loop {
            let outstanding = self.conn.outstanding(payload);
            if outstanding == 0 {
                return Ok(());
            }
            let want = buffer
                .len()
                .min(outstanding.try_into().unwrap_or(usize::MAX));
            match self.socket.read(&mut buffer[..want]) {
                Ok(0) => return Err(server_closed()),
                Ok(n) => self
                    .conn
                    .check(payload, &buffer[..n], Instant::now(), completions),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads TLS records until the socket is drained, through the session:
    /// the handshake advances, and the plaintext (decrypted into `plain`) is
    /// checked. Unlike [`read`](Self::read), it cannot stop at what is
    /// outstanding: the server's handshake and tickets come unasked.
    fn read_tls(
        &mut self,
        payload: &Payload,
        buffer: &mut [u8],
        plain: &mut [u8],
        completions: &mut impl Completions,
    ) -> io::Result<()> {
        let Some(session) = &mut self.session else {
            return Ok(());
        };
        loop {
            match self.socket.read(buffer) {
                Ok(0) => return Err(server_closed()),
                Ok(n) => session.receive(
                    &buffer[..n],
                    &mut self.conn,
                    payload,
                    plain,
                    Instant::now(),
                    completions,
                )?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Hands `conn`'s queued plaintext to `session` and writes its records to
/// `socket` until none waits or the socket is full.
fn flush_tls(
    session: &mut Session,
    socket: &mut Socket,
    conn: &mut Conn,
    write_blocked: &mut bool,
    payload: &Payload,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    session.encrypt(conn, payload, scratch)?;
    while !*write_blocked && session.wants_write() {
        match session.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            // Room in rustls's buffer: more plaintext fits.
            Ok(_) => session.encrypt(conn, payload, scratch)?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *write_blocked = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The error of a connection whose server ended its output.
fn server_closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    )
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::super::conn::tests::Recorded;
    use super::*;

    /// A stream with `pipeline` messages written, and the server's end.
    fn written_stream(payload: &Payload, pipeline: usize) -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut conn = Conn::new(7, pipeline, Instant::now());
        conn.top_up(Instant::now());
        let mut stream = Stream {
            socket: client.into(),
            conn,
            write_blocked: false,
            session: None,
            opened_at: 0,
        };
        let mut scratch = Vec::new();
        stream.flush(payload, &mut scratch).unwrap();
        assert!(!stream.conn.has_unsent());
        (stream, server)
    }

    #[test]
    fn echoed_bytes_are_read_and_checked_in_pieces() {
        let payload = Payload::new(100);
        let (mut stream, mut server) = written_stream(&payload, 3);
        let mut echoed = vec![0; 300];
        server.read_exact(&mut echoed).unwrap();
        for piece in echoed.chunks(70) {
            server.write_all(piece).unwrap();
        }
        let mut recorded = Recorded::default();
        let mut buffer = vec![0; 64];
        while recorded.complete < 3 {
            stream.read(&payload, &mut buffer, &mut recorded).unwrap();
        }
        assert!(recorded.mismatches.is_empty());
        assert!(
            stream.conn.has_unsent(),
            "each completion queues a successor"
        );
    }

    #[test]
    fn a_closed_server_is_an_error() {
        let payload = Payload::new(10);
        let (mut stream, server) = written_stream(&payload, 1);
        drop(server);
        let mut buffer = vec![0; 64];
        let result = stream.read(&payload, &mut buffer, &mut Recorded::default());
        assert!(result.is_err());
    }
}
