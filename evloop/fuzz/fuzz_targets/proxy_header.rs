//! The PROXY protocol parser, and the layer that uses it driving an echo
//! service through `evloop::testing`, with what a client sends cut into
//! pieces as the input says.
//!
//! Input: byte 0's low 3 bits are the number of pieces cut from the front
//! of the stream, and its bit 3 picks the smallest header limit
//! (`V2_MIN_LIMIT`) instead of the default 4 KiB; then one byte per piece,
//! its length less one; the rest is the byte stream the client sends (the
//! pieces first, then whatever is left in one go).
//!
//! Invariants:
//! * the parser's verdict on any prefix of the stream is "partial" or its
//!   verdict on the whole stream (verdicts are final);
//! * a complete header is no longer than the stream, nor than the limit
//!   (or 107 bytes, a v1 header's most);
//! * the layer, fed the stream in pieces and then its end, does what the
//!   verdict on the whole stream says: echoes exactly what follows a
//!   complete header and closes when the client does; resets a refused
//!   connection with nothing sent, counting that reason once; closes an
//!   unfinished one when the client does, counting it truncated (or empty).

#![no_main]

use evloop::proxy::{
    DEFAULT_MAX_HEADER, ProxyProtocol, RejectReason, Status, V1_MAX_LEN, V2_MIN_LIMIT, parse,
};
use evloop::services::Echo;
use evloop::testing::{Connection, State};
use evloop::CloseReason;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let pieces = usize::from(options & 7).min(rest.len());
    let (lengths, stream) = rest.split_at(pieces);
    let max = if options & 8 != 0 {
        V2_MIN_LIMIT
    } else {
        DEFAULT_MAX_HEADER
    };

    let whole = parse(stream, max);
    if let Ok(Status::Complete { len, .. }) = &whole {
        assert!(*len <= stream.len() && *len <= max.max(V1_MAX_LEN));
    }
    for cut in 0..stream.len() {
        let part = parse(&stream[..cut], max);
        assert!(
            part == Ok(Status::Partial) || part == whole,
            "cut at {cut}: {part:?}, whole: {whole:?}"
        );
    }

    let layer = ProxyProtocol::builder().max_header(max).build(Echo);
    let stats = layer.stats();
    let mut conn = Connection::open(&layer);
    let mut output = Vec::new();
    let mut sent = 0;
    for &length in lengths {
        let end = (sent + usize::from(length) + 1).min(stream.len());
        conn.receive(&stream[sent..end]);
        sent = end;
        output.extend(conn.take_output());
    }
    conn.receive(&stream[sent..]);
    output.extend(conn.take_output());
    conn.close_input();
    output.extend(conn.take_output());

    let counts = stats.snapshot();
    match whole {
        Ok(Status::Complete { len, .. }) => {
            assert_eq!(output, &stream[len..], "the echo of what follows the header");
            assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
            assert_eq!(counts.accepted(), 1);
            assert_eq!(counts.rejected_total(), 0);
        }
        Err(invalid) => {
            assert!(output.is_empty(), "sent {output:?} on a refusal");
            assert_eq!(conn.state(), State::Aborted);
            assert_eq!(counts.rejected(invalid.reason), 1);
            assert_eq!(counts.rejected_total(), 1);
            assert_eq!(counts.accepted(), 0);
        }
        Ok(Status::Partial) => {
            assert!(output.is_empty(), "sent {output:?} before a header");
            assert_eq!(conn.state(), State::Closed(CloseReason::Peer));
            let reason = if stream.is_empty() {
                RejectReason::Empty
            } else {
                RejectReason::Truncated
            };
            assert_eq!(counts.rejected(reason), 1);
            assert_eq!(counts.rejected_total(), 1);
        }
    }
});
