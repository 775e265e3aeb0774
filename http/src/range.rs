//! The `Range` header (RFC 9110 §14): one byte range is served as 206;
//! several are answered with the whole file (allowed, and what a cache
//! handles best); one that starts past the end is 416.

/// What to send of a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Span {
    /// All of it: no `Range`, a malformed one (ignored, as the RFC says),
    /// or several ranges.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

/// Reads a `Range` header's value against a length.
pub(crate) fn span(header: &[u8], len: u64) -> Span {
    let Some(spec) = strip_unit(header) else {
        return Span::Whole;
    };
    if spec.contains(&b',') {
        return Span::Whole;
    }
    let spec = spec.trim_ascii();
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return Span::Whole;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (decimal(first), decimal(last)) {
        // bytes=-N: the last N bytes.
        (None, Some(suffix)) if first.is_empty() => {
            if suffix == 0 || len == 0 {
                Span::Unsatisfiable
            } else {
                Span::Part {
                    start: len.saturating_sub(suffix),
                    end: len - 1,
                }
            }
        }
        // bytes=A- and bytes=A-B.
        (Some(start), end) if last.is_empty() || end.is_some() => {
            let end = end.unwrap_or(u64::MAX);
            if end < start {
                Span::Whole
            } else if start >= len {
                Span::Unsatisfiable
            } else {
                Span::Part {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        _ => Span::Whole,
    }
}

/// The ranges after `bytes=` (the unit is case-insensitive).
fn strip_unit(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let (unit, rest) = header.split_at_checked(6)?;
    unit.eq_ignore_ascii_case(b"bytes=").then_some(rest)
}

/// A decimal number of at most 19 digits, no sign, no spaces (a range's
/// bounds, a `Content-Length`): anything else is malformed.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_digits_only() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"1234"), Some(1234));
        assert_eq!(
            decimal(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1 2",
            b"0x10",
            b"12345678901234567890",
        ] {
            assert_eq!(decimal(bad), None);
        }
    }

    #[test]
    fn single_ranges() {
        let part = |start, end| Span::Part { start, end };
        assert_eq!(span(b"bytes=0-0", 10), part(0, 0));
        assert_eq!(span(b"bytes=2-5", 10), part(2, 5));
        assert_eq!(span(b"bytes=2-", 10), part(2, 9));
        assert_eq!(span(b"bytes=2-100", 10), part(2, 9));
        assert_eq!(span(b"bytes=-3", 10), part(7, 9));
        assert_eq!(span(b"bytes=-30", 10), part(0, 9));
        assert_eq!(span(b"BYTES= 9-9 ", 10), part(9, 9));
    }

    #[test]
    fn past_the_end_is_unsatisfiable() {
        assert_eq!(span(b"bytes=10-", 10), Span::Unsatisfiable);
        assert_eq!(span(b"bytes=10-20", 10), Span::Unsatisfiable);
        assert_eq!(span(b"bytes=-0", 10), Span::Unsatisfiable);
        assert_eq!(span(b"bytes=0-", 0), Span::Unsatisfiable);
        assert_eq!(span(b"bytes=-1", 0), Span::Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_ranges_get_the_whole() {
        for header in [
            &b"bytes=0-1,3-4"[..],
            b"items=0-1",
            b"bytes=5-2",
            b"bytes=-",
            b"bytes=a-b",
            b"bytes=+1-2",
            b"bytes=1-2-3",
            b"bytes=99999999999999999999-",
            b"bytes",
            b"",
        ] {
            assert_eq!(
                span(header, 10),
                Span::Whole,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }
}
