//! The PROXY protocol header (versions 1 and 2), parsed from what has
//! arrived so far: pure, no system calls, so property tests and a fuzzer
//! cover it (`evloop/fuzz`).
//!
//! The parser is incremental in the only way that matters on a stream: it
//! is called again with more bytes, and says whether what it has is a whole
//! header, the start of one ([`Status::Partial`]), or never going to be one
//! ([`Invalid`]). Every verdict is final: a prefix rejected is rejected
//! with the same reason whatever follows, and a prefix of a valid header is
//! never rejected, however it is cut — a header that arrives a byte at a
//! time is accepted as if it came whole.
//!
//! What it takes, from the specification (HAProxy's `proxy-protocol.txt`):
//!
//! * v1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` (single spaces, ports in
//!   decimal without leading zeros, addresses of the family named), or
//!   `PROXY UNKNOWN` followed by anything up to `\r\n`; 107 bytes at most.
//! * v2: the 12-byte signature, version 2, command `LOCAL` (its addresses
//!   ignored, as the specification says) or `PROXY` with `AF_INET`,
//!   `AF_INET6` or `AF_UNIX` over `STREAM`, or `AF_UNSPEC`; TLVs after the
//!   addresses are skipped, but they must tile the rest of the header.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::str::FromStr;

use super::RejectReason;
use crate::Address;

/// The longest v1 header, CRLF included (the specification's figure).
pub const V1_MAX_LEN: usize = 107;

/// The start of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header's fixed part: the signature, version and command, family
/// and transport, and the length of the rest.
pub const V2_FIXED_LEN: usize = 16;

/// The longest v2 header the length field can describe.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

/// The shortest v2 header with the largest address block (two `AF_UNIX`
/// paths of 108 bytes): a limit on headers must allow at least this.
pub const V2_MIN_LIMIT: usize = V2_FIXED_LEN + 216;

const V1_PREFIX: &[u8] = b"PROXY ";

/// What a header says about the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Header {
    /// Relayed for a client: v1 `TCP4`/`TCP6`, v2 `PROXY` over `AF_INET`,
    /// `AF_INET6` or `AF_UNIX`.
    Proxied {
        /// The client: who connected to the proxy.
        source: Address,
        /// Where the client connected to (the proxy's listener, as the
        /// proxy saw it).
        destination: Address,
    },
    /// v2 `LOCAL`: the proxy's own connection (a health check); the peer
    /// is the proxy itself.
    Local,
    /// v1 `UNKNOWN`, or v2 `PROXY` with `AF_UNSPEC`: relayed, for a client
    /// the proxy cannot describe; the peer is the proxy itself.
    Unknown,
}

/// How far [`parse`] got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The start of a header, or nothing yet: more bytes are needed.
    Partial,
    /// A whole header, `len` bytes long: what follows is the client's.
    Complete {
        /// What it says.
        header: Header,
        /// Its length in bytes.
        len: usize,
    },
}

/// Why the bytes are not a header this parser takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The reason counted.
    pub reason: RejectReason,
    /// What exactly is wrong, for a debug log.
    pub detail: &'static str,
}

fn invalid(reason: RejectReason, detail: &'static str) -> Invalid {
    Invalid { reason, detail }
}

/// Parses the header at the start of `input`, taking v2 headers of at most
/// `max_len` bytes (v1 headers are 107 bytes at most whatever it is).
///
/// ```
/// use evloop::proxy::{parse, Header, Status};
///
/// let input = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
/// let Ok(Status::Complete { header, len }) = parse(input, 4096) else { panic!() };
/// assert_eq!(len, input.len() - 5);
/// let Header::Proxied { source, .. } = header else { panic!() };
/// assert_eq!(source.to_string(), "192.0.2.1:56324");
/// assert_eq!(parse(&input[..20], 4096), Ok(Status::Partial));
/// ```
pub fn parse(input: &[u8], max_len: usize) -> Result<Status, Invalid> {
    match input.first() {
        None => Ok(Status::Partial),
        Some(b'\r') => parse_v2(input, max_len),
        Some(_) => parse_v1(input),
    }
}

/// `Partial` unless `input` strays from `expected`, which it starts.
fn expect_prefix(input: &[u8], expected: &[u8]) -> Result<(), Invalid> {
    let n = input.len().min(expected.len());
    if input[..n] == expected[..n] {
        Ok(())
    } else {
        Err(invalid(
            RejectReason::NotProxy,
            "no PROXY protocol signature",
        ))
    }
}

fn parse_v1(input: &[u8]) -> Result<Status, Invalid> {
    expect_prefix(input, V1_PREFIX)?;
    // The line's bytes are checked as they come, so that garbage after
    // the prefix is refused at once rather than at 107 bytes or the
    // timeout; each check looks at bytes that are all there.
    let window = &input[..input.len().min(V1_MAX_LEN)];
    let mut end = None;
    for (i, &b) in window.iter().enumerate().skip(V1_PREFIX.len()) {
        match b {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => {
                    end = Some(i);
                    break;
                }
                Some(_) => return Err(malformed_v1("a CR not followed by LF")),
                None => {}
            },
            b' '..=b'~' => {}
            _ => return Err(malformed_v1("a byte that is not printable ASCII")),
        }
    }
    let Some(end) = end else {
        if window.len() == V1_MAX_LEN {
            return Err(invalid(
                RejectReason::TooLong,
                "v1: no CRLF within 107 bytes",
            ));
        }
        return Ok(Status::Partial);
    };
    // Printable ASCII only, checked above.
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..end])
        .map_err(|_| malformed_v1("not ASCII"))?;
    let header = v1_fields(line)?;
    Ok(Status::Complete {
        header,
        len: end + 2,
    })
}

fn malformed_v1(detail: &'static str) -> Invalid {
    invalid(RejectReason::Malformed, detail)
}

/// The fields after `PROXY `, without the CRLF.
fn v1_fields(line: &str) -> Result<Header, Invalid> {
    let (protocol, rest) = line.split_once(' ').unwrap_or((line, ""));
    let v6 = match protocol {
        // Whatever follows is to be ignored, says the specification.
        "UNKNOWN" => return Ok(Header::Unknown),
        "TCP4" => false,
        "TCP6" => true,
        "" => return Err(malformed_v1("v1: no protocol")),
        _ => {
            return Err(invalid(
                RejectReason::Unsupported,
                "v1: a protocol other than TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(malformed_v1("v1: not four addresses and ports"));
    };
    let ip = |text: &str| -> Result<IpAddr, Invalid> {
        let ip = if v6 {
            Ipv6Addr::from_str(text).map(IpAddr::V6)
        } else {
            Ipv4Addr::from_str(text).map(IpAddr::V4)
        };
        ip.map_err(|_| malformed_v1("v1: an address not of the family named"))
    };
    let source = SocketAddr::new(ip(source)?, v1_port(source_port)?);
    let destination = SocketAddr::new(ip(destination)?, v1_port(destination_port)?);
    Ok(Header::Proxied {
        source: Address::Inet(source),
        destination: Address::Inet(destination),
    })
}

/// A port: decimal digits without a leading zero (`0` itself aside), at
/// most 65535. (`u16::from_str` alone would take `+80` and `080`.)
fn v1_port(text: &str) -> Result<u16, Invalid> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(malformed_v1("v1: a port that is not a decimal number"));
    }
    text.parse()
        .map_err(|_| malformed_v1("v1: a port above 65535"))
}

fn parse_v2(input: &[u8], max_len: usize) -> Result<Status, Invalid> {
    expect_prefix(input, &V2_SIGNATURE)?;
    if input.len() < V2_FIXED_LEN {
        return Ok(Status::Partial);
    }
    let version_command = input[12];
    if version_command >> 4 != 2 {
        return Err(invalid(
            RejectReason::Unsupported,
            "v2: a version other than 2",
        ));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => {
            return Err(invalid(
                RejectReason::Unsupported,
                "v2: a command other than LOCAL or PROXY",
            ));
        }
    };
    let family = input[13];
    let rest_len = usize::from(u16::from_be_bytes([input[14], input[15]]));
    let len = V2_FIXED_LEN + rest_len;
    if len > max_len {
        return Err(invalid(RejectReason::TooLong, "v2: longer than the limit"));
    }
    // LOCAL: "the receiver must accept this connection as valid and must
    // use the real connection endpoints and discard the protocol block
    // including the family".
    let addresses_len = if local {
        0
    } else {
        match family {
            0x00 => 0,
            0x11 => 12,
            0x21 => 36,
            0x31 => 216,
            0x12 | 0x22 | 0x32 => {
                return Err(invalid(
                    RejectReason::Unsupported,
                    "v2: a datagram transport on a stream",
                ));
            }
            _ => {
                return Err(invalid(
                    RejectReason::Unsupported,
                    "v2: an unknown address family or transport",
                ));
            }
        }
    };
    if rest_len < addresses_len {
        return Err(invalid(
            RejectReason::Malformed,
            "v2: shorter than its addresses",
        ));
    }
    if input.len() < len {
        return Ok(Status::Partial);
    }
    let rest = &input[V2_FIXED_LEN..len];
    let (addresses, tlvs) = rest.split_at(addresses_len);
    if !local {
        check_tlvs(tlvs)?;
    }
    let header = match (local, family) {
        (true, _) => Header::Local,
        (false, 0x11) => Header::Proxied {
            source: inet(ipv4(&addresses[..4]), &addresses[8..10]),
            destination: inet(ipv4(&addresses[4..8]), &addresses[10..12]),
        },
        (false, 0x21) => Header::Proxied {
            source: inet(ipv6(&addresses[..16]), &addresses[32..34]),
            destination: inet(ipv6(&addresses[16..32]), &addresses[34..36]),
        },
        (false, 0x31) => Header::Proxied {
            source: unix(&addresses[..108]),
            destination: unix(&addresses[108..]),
        },
        _ => Header::Unknown,
    };
    Ok(Status::Complete { header, len })
}

fn ipv4(raw: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
}

fn ipv6(raw: &[u8]) -> IpAddr {
    let mut octets = [0; 16];
    octets.copy_from_slice(raw);
    IpAddr::V6(Ipv6Addr::from(octets))
}

fn inet(ip: IpAddr, port: &[u8]) -> Address {
    Address::Inet(SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

/// A v2 `AF_UNIX` address: 108 bytes, a path up to its first NUL, or an
/// abstract name (a leading NUL) whose padding NULs are dropped; all NUL is
/// no name.
fn unix(raw: &[u8]) -> Address {
    match raw.split_first() {
        Some((0, name)) => {
            let end = name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end == 0 {
                Address::Unnamed
            } else {
                Address::Abstract(name[..end].to_vec())
            }
        }
        _ => {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            Address::Unix(OsStr::from_bytes(&raw[..end]).into())
        }
    }
}

/// TLVs (type, 16-bit length, value) must fill the rest of the header
/// exactly, as HAProxy also requires; their contents are not looked at.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), Invalid> {
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(invalid(RejectReason::Malformed, "v2: a TLV cut short"));
        }
        let len = 3 + usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        if tlvs.len() < len {
            return Err(invalid(
                RejectReason::Malformed,
                "v2: a TLV longer than the header",
            ));
        }
        tlvs = &tlvs[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests;
