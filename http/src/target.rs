//! From a request target to a path under the root: decode, then
//! normalise, then check — in that order, so that no encoding of `..`, `/`
//! or NUL can smuggle a step outside the root past the check.

/// Why a target cannot name a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a path this server can serve: a malformed percent escape, NUL,
    /// a backslash, an encoded slash, `..` above the root, or a target that
    /// is neither origin-form nor absolute-form. Answered 400.
    BadRequest,
    /// A path segment starting with `.` (a dotfile), refused by
    /// configuration. Answered 403.
    Hidden,
}

/// A target resolved to a path relative to the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The target ends with `/` (or a dot segment): it names a directory.
    pub(crate) directory: bool,
}

/// Resolves `target` (origin-form `/a/b?q` or absolute-form
/// `http://host/a/b`) into `out`: the decoded path relative to the root,
/// segments joined by `/`, with no empty, `.` or `..` segment and no
/// leading `/` (empty for the root itself). `out` is cleared first; it is
/// the caller's buffer so that a keep-alive connection allocates once.
pub(crate) fn resolve(
    target: &[u8],
    dotfiles: bool,
    out: &mut Vec<u8>,
) -> Result<Resolved, Refusal> {
    out.clear();
    let path = path_of(target).ok_or(Refusal::BadRequest)?;
    let mut directory = false;
    for raw in path[1..].split(|&b| b == b'/') {
        let start = out.len();
        if start > 0 {
            out.push(b'/');
        }
        decode_segment(raw, out)?;
        let segment = &out[start + usize::from(start > 0)..];
        directory = matches!(segment, b"" | b"." | b"..");
        match segment {
            b"" | b"." => out.truncate(start),
            b".." => {
                out.truncate(start);
                if out.is_empty() {
                    return Err(Refusal::BadRequest);
                }
                let parent = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(parent);
            }
            _ => {}
        }
    }
    if !dotfiles && out.split(|&b| b == b'/').any(|s| s.first() == Some(&b'.')) {
        return Err(Refusal::Hidden);
    }
    Ok(Resolved { directory })
}

/// The path of a target, from its `/` up to the query: origin-form as is,
/// absolute-form (`http://host:port/path`, any case of the scheme) without
/// its scheme and authority. `None` for anything else (`*`, authority-form).
fn path_of(target: &[u8]) -> Option<&[u8]> {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let target = &target[..end];
    if target.first() == Some(&b'/') {
        return Some(target);
    }
    let scheme_end = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    match rest.iter().position(|&b| b == b'/') {
        Some(slash) if slash > 0 => Some(&rest[slash..]),
        // An authority with no path: the root.
        None if !rest.is_empty() => Some(b"/"),
        _ => None,
    }
}

/// Appends the percent-decoding of one segment to `out`, refusing what no
/// file name here may contain: NUL, `/` (it was encoded: a separator in
/// disguise) and `\` (a separator elsewhere).
fn decode_segment(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
    let mut i = 0;
    while i < raw.len() {
        let byte = match raw[i] {
            b'%' => {
                let hi = raw.get(i + 1).and_then(|&b| hex(b));
                let lo = raw.get(i + 2).and_then(|&b| hex(b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(Refusal::BadRequest);
                };
                i += 3;
                hi << 4 | lo
            }
            b => {
                i += 1;
                b
            }
        };
        if matches!(byte, 0 | b'/' | b'\\') {
            return Err(Refusal::BadRequest);
        }
        out.push(byte);
    }
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `bytes` percent-encoded to `out`: everything but RFC 3986's
/// unreserved characters, and `/` when `keep_slash` (a whole path rather
/// than one name).
pub(crate) fn encode(bytes: &[u8], keep_slash: bool, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(target: &str) -> Result<(String, bool), Refusal> {
        let mut out = Vec::new();
        let r = resolve(target.as_bytes(), false, &mut out)?;
        Ok((String::from_utf8(out).unwrap(), r.directory))
    }

    #[test]
    fn plain_paths_are_relative_to_the_root() {
        assert_eq!(resolved("/"), Ok((String::new(), true)));
        assert_eq!(resolved("/index.html"), Ok(("index.html".into(), false)));
        assert_eq!(resolved("/a/b/"), Ok(("a/b".into(), true)));
        assert_eq!(resolved("//a///b"), Ok(("a/b".into(), false)));
        assert_eq!(resolved("/a/./b?x=/../.."), Ok(("a/b".into(), false)));
        assert_eq!(resolved("/a/b/.."), Ok(("a".into(), true)));
        assert_eq!(resolved("/a%20b/%C3%A9"), Ok(("a b/é".into(), false)));
    }

    #[test]
    fn absolute_form_keeps_only_the_path() {
        assert_eq!(
            resolved("http://example.com/a/b"),
            Ok(("a/b".into(), false))
        );
        assert_eq!(
            resolved("HTTP://example.com:8080"),
            Ok((String::new(), true))
        );
        assert_eq!(resolved("http:///etc/passwd"), Err(Refusal::BadRequest));
        assert_eq!(resolved("ftp://example.com/a"), Err(Refusal::BadRequest));
        assert_eq!(resolved("*"), Err(Refusal::BadRequest));
        assert_eq!(resolved("example.com:443"), Err(Refusal::BadRequest));
    }

    #[test]
    fn escapes_above_the_root_are_refused() {
        for target in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/%2E%2E/etc/passwd",
            "/a/%2e%2e/%2e%2e/x",
            "/..%2fetc%2fpasswd",
            "/%2fetc/passwd",
            "/a%00.html",
            "/a%5c..%5c..%5cetc",
            "/a\\..\\..\\etc",
            "/%",
            "/%2",
            "/%zz",
        ] {
            assert_eq!(resolved(target), Err(Refusal::BadRequest), "{target}");
        }
    }

    #[test]
    fn dotfiles_are_refused_unless_allowed() {
        assert_eq!(resolved("/.git/config"), Err(Refusal::Hidden));
        assert_eq!(resolved("/a/.env"), Err(Refusal::Hidden));
        assert_eq!(resolved("/%2egit/config"), Err(Refusal::Hidden));
        assert_eq!(
            resolved("/.git/../index.html"),
            Ok(("index.html".into(), false))
        );
        let mut out = Vec::new();
        assert!(resolve(b"/.well-known/x", true, &mut out).is_ok());
        assert_eq!(out, b".well-known/x");
    }

    #[test]
    fn encoding_round_trips_through_decoding() {
        let name = "a b/é%?#\\\0".as_bytes();
        let mut encoded = Vec::new();
        encode(name, false, &mut encoded);
        assert!(
            encoded
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(b))
        );
        let mut decoded = Vec::new();
        // The encoded NUL, slash and backslash are refused when decoded.
        assert_eq!(
            decode_segment(&encoded, &mut decoded),
            Err(Refusal::BadRequest)
        );
        let mut encoded = Vec::new();
        encode(b"a b/c", true, &mut encoded);
        assert_eq!(encoded, b"a%20b/c");
    }
}
