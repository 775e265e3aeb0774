use std::fmt;

use tracing::info;

use crate::Address;
use crate::context::Context;
use crate::service::{Action, CloseReason, Handler, Input};

/// The seed's behaviour: logs (at info level, target `evloop::log`) a line
/// when a client connects, `read N bytes` for every read with the true N,
/// and a line when it disconnects; sends nothing. With `hexdump`, each read's
/// bytes are shown too. Each connection gets a copy, which learns its peer
/// when it opens.
#[derive(Clone, Debug, Default)]
pub struct Log {
    hexdump: bool,
    peer: Option<Address>,
}

impl Log {
    /// The log service; with `hexdump`, the bytes of each read are logged
    /// too, as hex and text.
    pub fn new(hexdump: bool) -> Log {
        Log {
            hexdump,
            peer: None,
        }
    }

    fn peer(&self) -> &Address {
        self.peer.as_ref().unwrap_or(&Address::Unnamed)
    }
}

impl Handler for Log {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        self.peer = cx.peer().ok();
        info!(target: "evloop::log", "connect {}", self.peer());
        Action::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_>) -> Action {
        // Everything is consumed every time, so the input is exactly this read.
        let bytes = input.bytes();
        let peer = self.peer();
        if self.hexdump {
            info!(target: "evloop::log", "{peer}: read {} bytes\n{}", bytes.len(), HexDump(bytes));
        } else {
            info!(target: "evloop::log", "{peer}: read {} bytes", bytes.len());
        }
        input.consume_all();
        Action::Continue
    }

    fn on_close(&mut self, reason: CloseReason) {
        info!(target: "evloop::log", "disconnect {} ({})", self.peer(), reason.name());
    }
}

/// `hexdump -C` style: offset, 16 bytes in hex, printable ASCII.
struct HexDump<'a>(&'a [u8]);

impl fmt::Display for HexDump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, row) in self.0.chunks(16).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{:08x} ", i * 16)?;
            for col in 0..16 {
                match row.get(col) {
                    Some(b) => write!(f, " {b:02x}")?,
                    None => write!(f, "   ")?,
                }
            }
            f.write_str("  |")?;
            for &b in row {
                let c = if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                };
                write!(f, "{c}")?;
            }
            f.write_str("|")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_shows_offsets_hex_and_text() {
        let dump = HexDump(b"hello, world\n\x00\x01\x02xyz").to_string();
        let lines: Vec<_> = dump.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("00000000  68 65 6c 6c 6f"), "{dump}");
        assert!(lines[0].ends_with("|hello, world....|"), "{dump}");
        assert!(lines[1].starts_with("00000010  78 79 7a"), "{dump}");
    }
}
