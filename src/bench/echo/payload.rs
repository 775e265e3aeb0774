//! The bytes each message carries, so that every echoed byte can be checked.
//!
//! A message is a window into a fixed table of pseudo-random bytes; where the
//! window starts depends on the connection and the message index. Two
//! consecutive messages of a connection therefore differ, and a server that
//! returns stale, shifted, truncated or another connection's bytes produces a
//! mismatch. Taking a window of a table (instead of generating bytes per
//! message) keeps sending and checking at the cost of a `memcpy` and a `memcmp`.

/// How many distinct starting points a message can have. A stale message
/// goes unnoticed only when two messages happen to start at the same point:
/// one chance in this many.
const START_POINTS: usize = 64 * 1024;

/// The deterministic content of every message of one benchmark run.
#[derive(Debug)]
pub struct Payload {
    table: Box<[u8]>,
    size: usize,
}

impl Payload {
    /// The payload for messages of `size` bytes (at least one).
    pub fn new(size: usize) -> Payload {
        assert!(size > 0, "a message has at least one byte");
        let mut state = 0x0123_4567_89ab_cdef;
        let mut table = vec![0u8; START_POINTS + size];
        for chunk in table.chunks_mut(8) {
            let word = splitmix64(&mut state).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Payload {
            table: table.into_boxed_slice(),
            size,
        }
    }

    /// The size of every message.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The bytes of message number `index` of connection `connection`.
    pub fn message(&self, connection: u64, index: u64) -> &[u8] {
        let mut state = connection.rotate_left(32) ^ index;
        // The low bits of SplitMix64's output are as good as the high ones.
        let start = (splitmix64(&mut state) % START_POINTS as u64) as usize;
        &self.table[start..start + self.size]
    }
}

/// SplitMix64: a tiny, fast generator whose every output bit depends on every
/// input bit, which is all a test pattern needs.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_requested_size() {
        let payload = Payload::new(3);
        assert_eq!(payload.message(0, 0).len(), 3);
        assert_eq!(Payload::new(70_000).message(9, 9).len(), 70_000);
    }

    #[test]
    fn messages_are_deterministic() {
        let a = Payload::new(128);
        let b = Payload::new(128);
        assert_eq!(a.message(5, 17), b.message(5, 17));
    }

    #[test]
    fn consecutive_messages_and_connections_differ() {
        let payload = Payload::new(64);
        for index in 0..1000 {
            assert_ne!(payload.message(1, index), payload.message(1, index + 1));
            assert_ne!(payload.message(1, index), payload.message(2, index));
        }
    }

    #[test]
    fn a_shifted_message_differs() {
        let payload = Payload::new(128);
        let message = payload.message(0, 0);
        let next = payload.message(0, 1);
        let shifted: Vec<u8> = message[1..].iter().chain(&next[..1]).copied().collect();
        assert_ne!(shifted, message);
    }
}
