//! The readiness driver (`--io epoll`, the default): one
//! [`Poller`] per thread — epoll, or kqueue on BSD and macOS — with every
//! socket non-blocking and registered once for both directions
//! (edge-triggered), one read buffer and one write buffer per thread, and
//! `read`/`write` called here whenever a socket is ready.

use std::io::{self, Read, Write};
use std::time::Instant;

use evloop::poll::{Events, Interest, Poller, Token};
use socket2::Socket;

use super::conn::{Completions, Conn};
use super::payload::Payload;
use super::worker::{Driver, Plan, Tally};

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
        let mut write_buffer = Vec::with_capacity(IO_BUFFER);
        let mut streams: Vec<Option<Stream>> = conns
            .into_iter()
            .map(|(socket, conn)| {
                let mut stream = Stream {
                    socket,
                    conn,
                    write_blocked: false,
                };
                match stream.flush(payload, &mut write_buffer) {
                    Ok(()) => Some(stream),
                    Err(e) => {
                        tally.io_error(&plan.target, &e);
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
                    result = stream.read(payload, &mut read_buffer, tally);
                    // The read stops once every byte sent is back, before
                    // an end of input that came with the last echo; no
                    // later edge would tell, and the server owes nothing
                    // more that could raise one.
                    if result.is_ok() && event.is_read_closed() {
                        result = Err(server_closed());
                    }
                }
                // Each message completed by the read queued its successor: send.
                result = result.and_then(|()| stream.flush(payload, &mut write_buffer));
                if let Err(e) = result {
                    tally.io_error(&plan.target, &e);
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
}

impl Stream {
    /// Writes queued bytes until all are out or the socket is full.
    /// `scratch` gathers several pipelined messages into one `write`.
    fn flush(&mut self, payload: &Payload, scratch: &mut Vec<u8>) -> io::Result<()> {
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
