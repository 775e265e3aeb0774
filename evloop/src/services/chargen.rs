use crate::context::Context;
use crate::service::{Action, Handler, Input};

/// The printable ASCII characters, space to tilde, that lines rotate through.
const PRINTABLE: &[u8; 95] = b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
/// Characters per line, before CR LF.
const LINE: usize = 72;
/// Lines written per call: about 16 KiB, well under the low watermark, so a
/// client that never reads costs at most the watermark and one chunk.
const LINES_PER_CHUNK: usize = 220;

/// Character generator (RFC 864): from the moment a client connects, sends
/// lines of 72 printable characters, each starting one character further
/// along than the last, as fast as the client reads them; whatever the
/// client sends is discarded. It streams through
/// [`Context::notify_drained`], so however slowly the client reads, it holds
/// no more than the output watermarks. Each connection gets a copy, which
/// keeps its place in the stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chargen {
    /// The first character of the next line, as an index into the 95.
    next_line: usize,
}

impl Chargen {
    /// Writes the next chunk of lines and asks to hear when it has drained.
    fn write_chunk(&mut self, cx: &mut Context<'_>) -> Action {
        let out = cx.output();
        out.reserve(LINES_PER_CHUNK * (LINE + 2));
        for _ in 0..LINES_PER_CHUNK {
            let start = self.next_line;
            let first = &PRINTABLE[start..(start + LINE).min(PRINTABLE.len())];
            out.extend_from_slice(first);
            out.extend_from_slice(&PRINTABLE[..LINE - first.len()]);
            out.extend_from_slice(b"\r\n");
            self.next_line = (start + 1) % PRINTABLE.len();
        }
        cx.notify_drained();
        Action::Continue
    }
}

impl Handler for Chargen {
    fn on_open(&mut self, cx: &mut Context<'_>) -> Action {
        self.write_chunk(cx)
    }

    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_>) -> Action {
        input.consume_all();
        Action::Continue
    }

    fn on_drained(&mut self, cx: &mut Context<'_>) -> Action {
        self.write_chunk(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line n starts at the n-th printable character and wraps around.
    #[test]
    fn lines_rotate_through_the_printable_characters() {
        let mut conn = Chargen::default();
        let mut lines = Vec::new();
        for n in 0..100 {
            let start = conn.next_line;
            let mut line: Vec<u8> = PRINTABLE
                .iter()
                .cycle()
                .skip(start)
                .take(LINE)
                .copied()
                .collect();
            line.extend_from_slice(b"\r\n");
            lines.push(line);
            conn.next_line = (start + 1) % PRINTABLE.len();
            assert_eq!(start, n % 95);
        }
        assert_eq!(&lines[0][..10], b" !\"#$%&'()");
        assert_eq!(&lines[94][..3], b"~ !");
        assert_eq!(lines[95], lines[0]);
    }
}
