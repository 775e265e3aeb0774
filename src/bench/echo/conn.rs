//! One load-generating connection's bookkeeping, shared by both drivers:
//! keeps `pipeline` messages in flight and checks every byte that comes
//! back.

use std::time::Instant;

use super::payload::Payload;
use super::tls::Handshake;

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

    /// A TLS handshake completed at `now` (`--tls` only).
    fn handshake(&mut self, handshake: Handshake, now: Instant);
}

/// The bookkeeping of one connection, whatever moves its bytes: which
/// messages are queued, sent and echoed, when each was queued, and the
/// check of every echoed byte. It makes no system call; the driver
/// (`epoll.rs`, `uring.rs`) sends what [`gather`](Conn::gather) yields,
/// reports what went out with [`sent`](Conn::sent), and hands what came
/// back to [`check`](Conn::check).
///
/// Messages are numbered from 0; all have the payload's size. The counters
/// keep `written <= queued`, where `written` counts messages whose every
/// byte went out, and `received <= queued`.
#[derive(Debug)]
pub struct Conn {
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
}

impl Conn {
    /// The connection numbered `id`, which will keep up to `pipeline`
    /// messages in flight.
    pub fn new(id: u64, pipeline: usize, now: Instant) -> Conn {
        Conn {
            id,
            queued: 0,
            written: 0,
            write_offset: 0,
            received: 0,
            read_offset: 0,
            mismatch: None,
            sent_at: vec![now; pipeline].into_boxed_slice(),
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

    /// Whether queued bytes wait to be sent.
    pub fn has_unsent(&self) -> bool {
        self.written < self.queued
    }

    /// Appends the queued bytes not sent yet to `out`, in order, until
    /// `out` holds `limit` bytes: several pipelined messages go out in one
    /// send.
    pub fn gather(&self, payload: &Payload, out: &mut Vec<u8>, limit: usize) {
        let mut index = self.written;
        let mut offset = self.write_offset;
        while index < self.queued && out.len() < limit {
            let message = &payload.message(self.id, index)[offset..];
            let n = message.len().min(limit - out.len());
            out.extend_from_slice(&message[..n]);
            index += 1;
            offset = 0;
        }
    }

    /// `n` bytes of those [`gather`](Self::gather) yielded went out.
    pub fn sent(&mut self, payload: &Payload, n: usize) {
        let done = self.write_offset + n;
        self.written += (done / payload.size()) as u64;
        self.write_offset = done % payload.size();
    }

    /// Messages echoed whole so far.
    pub fn completed(&self) -> u64 {
        self.received
    }

    /// Stamps the messages queued and not sent yet `now`: with a new
    /// connection per request, a message waits from the moment its
    /// connection is opened.
    pub fn restamp_unsent(&mut self, now: Instant) {
        for message in self.written..self.queued {
            let slot = self.slot(message);
            self.sent_at[slot] = now;
        }
    }

    /// Bytes sent and not echoed yet: what a correct server still owes.
    pub fn outstanding(&self, payload: &Payload) -> u64 {
        let size = payload.size() as u64;
        let written = self.written * size + self.write_offset as u64;
        let received = self.received * size + self.read_offset as u64;
        written.saturating_sub(received)
    }

    /// Compares echoed bytes, received at `now`, with what was sent,
    /// message by message; reports each completed message and queues its
    /// successor (stamped `now`, sent by the driver's next send).
    pub fn check(
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
                // reading and goes out with the next send.
                self.top_up(now);
            }
        }
    }

    fn slot(&self, message: u64) -> usize {
        (message % self.sent_at.len() as u64) as usize
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Completions counted, their mismatches, and handshakes.
    #[derive(Default)]
    pub struct Recorded {
        pub complete: usize,
        pub mismatches: Vec<Mismatch>,
        pub handshakes: Vec<Handshake>,
    }

    impl Completions for Recorded {
        fn complete(&mut self, _: Instant, _: Instant, mismatch: Option<Mismatch>) {
            self.complete += 1;
            self.mismatches.extend(mismatch);
        }

        fn handshake(&mut self, handshake: Handshake, _: Instant) {
            self.handshakes.push(handshake);
        }
    }

    /// A connection with `pipeline` messages queued and sent, and the bytes
    /// that went out.
    fn sent_conn(payload: &Payload, pipeline: usize) -> (Conn, Vec<u8>) {
        let mut conn = Conn::new(7, pipeline, Instant::now());
        conn.top_up(Instant::now());
        let mut out = Vec::new();
        conn.gather(payload, &mut out, usize::MAX);
        conn.sent(payload, out.len());
        assert_eq!(conn.written, pipeline as u64);
        assert!(!conn.has_unsent());
        (conn, out)
    }

    #[test]
    fn a_faithful_echo_completes_every_message() {
        let payload = Payload::new(100);
        let (mut conn, echoed) = sent_conn(&payload, 3);
        assert_eq!(echoed.len(), 300);
        let mut recorded = Recorded::default();
        // Echo in odd-sized pieces so messages straddle them.
        for piece in echoed.chunks(70) {
            conn.check(&payload, piece, Instant::now(), &mut recorded);
        }
        assert_eq!(recorded.complete, 3);
        assert!(recorded.mismatches.is_empty());
        assert_eq!(conn.queued, 6, "each completion queues a successor");
        assert_eq!(conn.outstanding(&payload), 0);
        assert!(conn.has_unsent());
    }

    #[test]
    fn a_flipped_byte_is_a_mismatch_of_that_message_only() {
        let payload = Payload::new(100);
        let (mut conn, mut echoed) = sent_conn(&payload, 2);
        echoed[150] ^= 0x20;
        let mut recorded = Recorded::default();
        conn.check(&payload, &echoed, Instant::now(), &mut recorded);
        let expected = payload.message(7, 1)[50];
        assert_eq!(recorded.complete, 2);
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
    fn a_short_send_resumes_where_it_stopped() {
        let payload = Payload::new(100);
        let mut conn = Conn::new(3, 2, Instant::now());
        conn.top_up(Instant::now());
        let mut first = Vec::new();
        conn.gather(&payload, &mut first, 150);
        assert_eq!(first.len(), 150, "gathering stops at the limit");
        conn.sent(&payload, 120);
        assert_eq!(conn.outstanding(&payload), 120);
        let mut rest = Vec::new();
        conn.gather(&payload, &mut rest, usize::MAX);
        let whole: Vec<u8> = [payload.message(3, 0), payload.message(3, 1)].concat();
        assert_eq!(rest, whole[120..]);
        conn.sent(&payload, rest.len());
        assert!(!conn.has_unsent());
        assert_eq!(conn.outstanding(&payload), 200);
    }
}
