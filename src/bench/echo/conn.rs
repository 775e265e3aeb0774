//! One load-generating connection: keeps `pipeline` messages in flight and
//! checks every byte that comes back.

use std::io::{self, Read, Write};
use std::time::Instant;

use socket2::Socket;

use super::payload::Payload;

/// Where the first wrong byte of a message was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// The connection's number (global, across threads).
    pub connection: u64,
    /// The message's index on that connection.
    pub message: u64,
    /// The offset of the first wrong byte within the message.
    pub offset: usize,
    /// The byte that was sent.
    pub expected: u8,
    /// The byte that came back.
    pub received: u8,
}

/// What the connection reports to its worker as messages complete.
pub trait Completions {
    /// A message queued at `sent_at` came back whole at `now`; `mismatch` is
    /// its first wrong byte, if any.
    fn complete(&mut self, sent_at: Instant, now: Instant, mismatch: Option<Mismatch>);
}

/// The state of one connection. Messages are numbered from 0; all have the
/// payload's size. The counters keep `received <= written <= queued`, where
/// `written` counts messages whose every byte went out.
#[derive(Debug)]
pub struct Conn {
    /// A TCP or Unix stream socket.
    stream: Socket,
    id: u64,
    /// Messages handed to the connection (their send time is recorded).
    queued: u64,
    /// Messages fully written, and bytes written of the next one.
    written: u64,
    write_offset: usize,
    /// Messages fully received, and bytes received of the next one.
    received: u64,
    read_offset: usize,
    /// The first wrong byte of the message being received.
    mismatch: Option<Mismatch>,
    /// When each message in flight was queued, indexed by `message % pipeline`.
    sent_at: Box<[Instant]>,
    /// The last write returned `WouldBlock`: wait for a writable event.
    write_blocked: bool,
}

impl Conn {
    /// Wraps a connected, non-blocking stream numbered `id`, which will keep
    /// up to `pipeline` messages in flight.
    pub fn new(stream: Socket, id: u64, pipeline: usize, now: Instant) -> Conn {
        Conn {
            stream,
            id,
            queued: 0,
            written: 0,
            write_offset: 0,
            received: 0,
            read_offset: 0,
            mismatch: None,
            sent_at: vec![now; pipeline].into_boxed_slice(),
            write_blocked: false,
        }
    }

    /// Queues messages until `pipeline` are in flight, stamping them `now`.
    pub fn top_up(&mut self, now: Instant) {
        let pipeline = self.sent_at.len() as u64;
        while self.queued < self.received + pipeline {
            self.sent_at[self.slot(self.queued)] = now;
            self.queued += 1;
        }
    }

    /// A writable event: the socket has room again.
    pub fn writable(&mut self) {
        self.write_blocked = false;
    }

    /// Writes queued bytes until all are out or the socket is full. `scratch`
    /// gathers several pipelined messages into one `write`.
    pub fn flush(&mut self, payload: &Payload, scratch: &mut [u8]) -> io::Result<()> {
        let size = payload.size();
        while !self.write_blocked && self.written < self.queued {
            let mut len = 0;
            let mut index = self.written;
            let mut offset = self.write_offset;
            while index < self.queued && len < scratch.len() {
                let message = &payload.message(self.id, index)[offset..];
                let n = message.len().min(scratch.len() - len);
                scratch[len..len + n].copy_from_slice(&message[..n]);
                len += n;
                index += 1;
                offset = 0;
            }
            match self.stream.write(&scratch[..len]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let done = self.write_offset + n;
                    self.written += (done / size) as u64;
                    self.write_offset = done % size;
                }
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
    /// only return `WouldBlock` (the next echo raises a new edge). Bytes a
    /// broken server adds are read with the next echo and show up as a
    /// mismatch.
    pub fn read(
        &mut self,
        payload: &Payload,
        buffer: &mut [u8],
        completions: &mut impl Completions,
    ) -> io::Result<()> {
        let size = payload.size() as u64;
        loop {
            let written_bytes = self.written * size + self.write_offset as u64;
            let received_bytes = self.received * size + self.read_offset as u64;
            let outstanding = written_bytes - received_bytes;
            if outstanding == 0 {
                return Ok(());
            }
            let want = buffer
                .len()
                .min(outstanding.try_into().unwrap_or(usize::MAX));
            match self.stream.read(&mut buffer[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
                Ok(n) => self.check(payload, &buffer[..n], Instant::now(), completions),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Compares received bytes with what was sent, message by message.
    fn check(
        &mut self,
        payload: &Payload,
        mut bytes: &[u8],
        now: Instant,
        completions: &mut impl Completions,
    ) {
        while !bytes.is_empty() {
            let expected = &payload.message(self.id, self.received)[self.read_offset..];
            let n = expected.len().min(bytes.len());
            if self.mismatch.is_none() && bytes[..n] != expected[..n] {
                let at = (0..n).find(|&i| bytes[i] != expected[i]).unwrap_or(0);
                self.mismatch = Some(Mismatch {
                    connection: self.id,
                    message: self.received,
                    offset: self.read_offset + at,
                    expected: expected[at],
                    received: bytes[at],
                });
            }
            self.read_offset += n;
            bytes = &bytes[n..];
            if self.read_offset == payload.size() {
                let sent_at = self.sent_at[self.slot(self.received)];
                completions.complete(sent_at, now, self.mismatch.take());
                self.received += 1;
                self.read_offset = 0;
                // A slot is free: its successor is stamped with the same clock
                // reading and goes out with the next flush.
                self.top_up(now);
            }
        }
    }

    fn slot(&self, message: u64) -> usize {
        (message % self.sent_at.len() as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[derive(Default)]
    struct Recorded {
        complete: usize,
        mismatches: Vec<Mismatch>,
    }

    impl Completions for Recorded {
        fn complete(&mut self, _: Instant, _: Instant, mismatch: Option<Mismatch>) {
            self.complete += 1;
            self.mismatches.extend(mismatch);
        }
    }

    /// A connection with `pipeline` messages written, and the server's end.
    fn written_conn(payload: &Payload, pipeline: usize) -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut conn = Conn::new(client.into(), 7, pipeline, Instant::now());
        conn.top_up(Instant::now());
        let mut scratch = vec![0; 64 * 1024];
        conn.flush(payload, &mut scratch).unwrap();
        assert_eq!(conn.written, pipeline as u64);
        (conn, server)
    }

    #[test]
    fn a_faithful_echo_completes_every_message() {
        let payload = Payload::new(100);
        let (mut conn, mut server) = written_conn(&payload, 3);
        let mut echoed = vec![0; 300];
        server.read_exact(&mut echoed).unwrap();
        // Echo in odd-sized pieces so messages straddle reads.
        for piece in echoed.chunks(70) {
            server.write_all(piece).unwrap();
        }
        let mut recorded = Recorded::default();
        let mut buffer = vec![0; 64];
        while recorded.complete < 3 {
            conn.read(&payload, &mut buffer, &mut recorded).unwrap();
        }
        assert!(recorded.mismatches.is_empty());
        assert_eq!(conn.queued, 6, "each completion queues a successor");
    }

    #[test]
    fn a_flipped_byte_is_a_mismatch_of_that_message_only() {
        let payload = Payload::new(100);
        let (mut conn, mut server) = written_conn(&payload, 2);
        let mut echoed = vec![0; 200];
        server.read_exact(&mut echoed).unwrap();
        echoed[150] ^= 0x20;
        server.write_all(&echoed).unwrap();
        let mut recorded = Recorded::default();
        let mut buffer = vec![0; 1024];
        while recorded.complete < 2 {
            conn.read(&payload, &mut buffer, &mut recorded).unwrap();
        }
        let expected = payload.message(7, 1)[50];
        assert_eq!(
            recorded.mismatches,
            [Mismatch {
                connection: 7,
                message: 1,
                offset: 50,
                expected,
                received: expected ^ 0x20,
            }]
        );
    }

    #[test]
    fn a_closed_server_is_an_error() {
        let payload = Payload::new(10);
        let (mut conn, server) = written_conn(&payload, 1);
        drop(server);
        let mut buffer = vec![0; 64];
        conn.stream.set_nonblocking(false).unwrap();
        let result = conn.read(&payload, &mut buffer, &mut Recorded::default());
        assert!(result.is_err());
    }
}
