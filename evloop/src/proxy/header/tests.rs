use std::net::SocketAddrV6;

use proptest::prelude::*;

use super::*;

const MAX: usize = 4096;

fn complete(input: &[u8]) -> (Header, usize) {
    match parse(input, MAX) {
        Ok(Status::Complete { header, len }) => (header, len),
        other => panic!("{:?}: {other:?}", input.escape_ascii().to_string()),
    }
}

fn refused(input: &[u8]) -> RejectReason {
    match parse(input, MAX) {
        Err(invalid) => invalid.reason,
        other => panic!("{:?}: {other:?}", input.escape_ascii().to_string()),
    }
}

fn proxied(source: &str, destination: &str) -> Header {
    Header::Proxied {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

/// A v2 header: version 2, `command`, `family`, then `rest`.
fn v2(command: u8, family: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(rest.len()).unwrap().to_be_bytes());
    out.extend_from_slice(rest);
    out
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    out.extend_from_slice(value);
    out
}

#[test]
fn v1_names_the_client_of_either_family() {
    let input = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
    let (header, len) = complete(input);
    assert_eq!(header, proxied("192.0.2.1:56324", "198.51.100.2:443"));
    assert_eq!(&input[len..], b"GET / HTTP/1.1\r\n");
    let (header, len) = complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n");
    assert_eq!(header, proxied("[2001:db8::1]:0", "[2001:db8::2]:65535"));
    assert_eq!(len, 44);
}

#[test]
fn v1_unknown_ignores_whatever_follows_it() {
    assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (Header::Unknown, 15));
    let worst = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(worst.len(), V1_MAX_LEN);
    assert_eq!(complete(worst), (Header::Unknown, V1_MAX_LEN));
}

#[test]
fn v1_that_breaks_the_specification_is_malformed() {
    for bad in [
        &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n"[..],
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\rX",
        b"PROXY TCP4 192.0.2.1  198.51.100.2 56324 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.2 56324 443\r\n",
        b"PROXY TCP6 192.0.2.1 2001:db8::2 56324 443\r\n",
        b"PROXY TCP4 192.0.2.01 198.51.100.2 56324 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 +5632 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 \r\n",
        b"PROXY \r\n",
        b"PROXY TCP4 \xc3\xa9",
    ] {
        assert_eq!(
            refused(bad),
            RejectReason::Malformed,
            "{}",
            bad.escape_ascii()
        );
    }
}

#[test]
fn v1_of_another_protocol_is_unsupported() {
    assert_eq!(
        refused(b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n"),
        RejectReason::Unsupported
    );
}

#[test]
fn v1_without_crlf_in_107_bytes_is_too_long() {
    let mut input = b"PROXY UNKNOWN ".to_vec();
    input.resize(V1_MAX_LEN - 1, b'x');
    assert_eq!(parse(&input, MAX), Ok(Status::Partial));
    input.push(b'\r');
    assert_eq!(refused(&input), RejectReason::TooLong);
}

#[test]
fn anything_else_is_not_proxy() {
    for bad in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"PROXYTCP4",
        b"proxy TCP4",
        b"\x16\x03\x01\x02\x00",
        b"\r\n\r\n\0\r\nquit\n",
        b"\r\r",
    ] {
        assert_eq!(
            refused(bad),
            RejectReason::NotProxy,
            "{}",
            bad.escape_ascii()
        );
    }
}

/// ppp 2.3 refuses this one (an empty destination port): a header that
/// arrives in pieces must never be, wherever it is cut.
#[test]
fn a_v1_header_cut_before_its_last_port_is_partial() {
    assert_eq!(
        parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 ", MAX),
        Ok(Status::Partial)
    );
    assert_eq!(
        parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r", MAX),
        Ok(Status::Partial)
    );
    assert_eq!(parse(b"", MAX), Ok(Status::Partial));
    assert_eq!(
        parse(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00", MAX),
        Ok(Status::Partial)
    );
}

#[test]
fn v2_names_the_client_and_skips_tlvs() {
    let mut rest = vec![192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb];
    rest.extend(tlv(0x01, b"h2"));
    rest.extend(tlv(0x04, b""));
    rest.extend(tlv(0xEA, &[7; 300]));
    let mut input = v2(1, 0x11, &rest);
    let len = input.len();
    input.extend_from_slice(b"after");
    assert_eq!(
        complete(&input),
        (proxied("192.0.2.1:56324", "198.51.100.2:443"), len)
    );

    let mut rest = Vec::new();
    rest.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    rest.extend("2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
    rest.extend([0, 80, 1, 0]);
    let input = v2(1, 0x21, &rest);
    assert_eq!(
        complete(&input),
        (proxied("[2001:db8::1]:80", "[2001:db8::2]:256"), 52)
    );
}

#[test]
fn v2_unix_addresses_are_paths_abstract_names_or_unnamed() {
    let mut rest = vec![0; 216];
    rest[..9].copy_from_slice(b"/run/a.sk");
    rest[109..113].copy_from_slice(b"name");
    let (header, _) = complete(&v2(1, 0x31, &rest));
    assert_eq!(
        header,
        Header::Proxied {
            source: Address::Unix("/run/a.sk".into()),
            destination: Address::Abstract(b"name".to_vec()),
        }
    );
    let (header, _) = complete(&v2(1, 0x31, &[0; 216]));
    assert_eq!(
        header,
        Header::Proxied {
            source: Address::Unnamed,
            destination: Address::Unnamed,
        }
    );
}

#[test]
fn v2_local_and_unspec_name_no_client() {
    // LOCAL: the address block is ignored, whatever its family says.
    assert_eq!(complete(&v2(0, 0x00, &[])), (Header::Local, 16));
    assert_eq!(complete(&v2(0, 0x11, &[1, 2, 3])), (Header::Local, 19));
    assert_eq!(complete(&v2(0, 0xff, &[])), (Header::Local, 16));
    assert_eq!(complete(&v2(1, 0x00, &tlv(1, b"x"))), (Header::Unknown, 20));
}

#[test]
fn v2_refusals_say_why() {
    let mut version_1 = v2(1, 0x11, &[0; 12]);
    version_1[12] = 0x11;
    assert_eq!(refused(&version_1[..16]), RejectReason::Unsupported);
    assert_eq!(refused(&v2(2, 0x11, &[0; 12])), RejectReason::Unsupported);
    assert_eq!(refused(&v2(1, 0x12, &[0; 12])), RejectReason::Unsupported);
    assert_eq!(refused(&v2(1, 0x41, &[0; 12])), RejectReason::Unsupported);
    assert_eq!(refused(&v2(1, 0x10, &[0; 12])), RejectReason::Unsupported);
    assert_eq!(
        refused(&v2(1, 0x21, &[0; 12])[..16]),
        RejectReason::Malformed
    );
    let mut cut_tlv = vec![0; 12];
    cut_tlv.extend([1, 0]);
    assert_eq!(refused(&v2(1, 0x11, &cut_tlv)), RejectReason::Malformed);
    let mut long_tlv = vec![0; 12];
    long_tlv.extend([1, 0, 5, 1]);
    assert_eq!(refused(&v2(1, 0x11, &long_tlv)), RejectReason::Malformed);
    // Refused as soon as the length is read.
    let long = v2(1, 0x11, &vec![0; MAX]);
    assert_eq!(refused(&long[..16]), RejectReason::TooLong);
    assert_eq!(parse(&long[..16], V2_MAX_LEN), Ok(Status::Partial));
}

// ---- properties ----------------------------------------------------------------

/// A header the parser must take, how it is sent, and what it says.
#[derive(Clone, Debug)]
struct Case {
    bytes: Vec<u8>,
    header: Header,
}

fn inet_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| (SocketAddr::from((s, sp)), SocketAddr::from((d, dp)))),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| (
                SocketAddr::V6(SocketAddrV6::new(s.into(), sp, 0, 0)),
                SocketAddr::V6(SocketAddrV6::new(d.into(), dp, 0, 0))
            )),
    ]
}

fn tlvs() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..40)),
        0..4,
    )
    .prop_map(|tlvs| tlvs.iter().flat_map(|(k, v)| tlv(*k, v)).collect())
}

fn v1_case() -> impl Strategy<Value = Case> {
    prop_oneof![
        inet_pair().prop_map(|(s, d)| {
            let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            let text = format!(
                "PROXY {family} {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            );
            Case {
                bytes: text.into_bytes(),
                header: Header::Proxied {
                    source: s.into(),
                    destination: d.into(),
                },
            }
        }),
        "( [ -~]{0,91})?".prop_map(|rest| Case {
            bytes: format!("PROXY UNKNOWN{rest}\r\n").into_bytes(),
            header: Header::Unknown,
        }),
    ]
}

fn v2_case() -> impl Strategy<Value = Case> {
    prop_oneof![
        (inet_pair(), tlvs()).prop_map(|((s, d), tlvs)| {
            let (family, mut rest) = match (s, d) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    (0x11, [s.ip().octets(), d.ip().octets()].concat())
                }
                (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                    (0x21, [s.ip().octets(), d.ip().octets()].concat())
                }
                _ => unreachable!("pairs are of one family"),
            };
            rest.extend(s.port().to_be_bytes());
            rest.extend(d.port().to_be_bytes());
            rest.extend(tlvs);
            Case {
                bytes: v2(1, family, &rest),
                header: Header::Proxied {
                    source: s.into(),
                    destination: d.into(),
                },
            }
        }),
        (
            prop::collection::vec(1..=255u8, 1..108),
            prop::collection::vec(1..=255u8, 1..107),
            tlvs()
        )
            .prop_map(|(path, name, tlvs)| {
                let mut rest = vec![0; 216];
                rest[..path.len()].copy_from_slice(&path);
                rest[109..109 + name.len()].copy_from_slice(&name);
                rest.extend(tlvs);
                Case {
                    bytes: v2(1, 0x31, &rest),
                    header: Header::Proxied {
                        source: Address::Unix(OsStr::from_bytes(&path).into()),
                        destination: Address::Abstract(name),
                    },
                }
            }),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(family, rest)| {
            Case {
                bytes: v2(0, family, &rest),
                header: Header::Local,
            }
        }),
        tlvs().prop_map(|tlvs| Case {
            bytes: v2(1, 0x00, &tlvs),
            header: Header::Unknown,
        }),
    ]
}

/// Bytes that start like a header more often than chance would have it.
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(Vec::new()),
        Just(b"PROXY ".to_vec()),
        Just(b"PROXY TCP4 ".to_vec()),
        Just(b"PROXY UNKNOWN".to_vec()),
        Just(V2_SIGNATURE.to_vec()),
        Just([&V2_SIGNATURE[..], &[0x21, 0x11, 0x00, 0x0c]].concat()),
        v1_case().prop_map(|c| c.bytes),
        v2_case().prop_map(|c| c.bytes),
    ];
    let rest = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "[ -~\r\n]{0,120}".prop_map(String::into_bytes),
    ];
    (start, rest, any::<prop::sample::Index>()).prop_map(|(mut start, rest, cut)| {
        // Sometimes a valid header with a byte changed.
        if !start.is_empty() && cut.index(4) == 0 {
            let at = cut.index(start.len());
            start[at] = start[at].wrapping_add(1);
        }
        start.extend(rest);
        start
    })
}

proptest! {
    /// Cut anywhere, a header is partial until whole, then complete with
    /// exactly its length, whatever follows it.
    #[test]
    fn a_header_is_partial_until_whole(
        case in prop_oneof![v1_case(), v2_case()],
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        for cut in 0..case.bytes.len() {
            prop_assert_eq!(parse(&case.bytes[..cut], V2_MAX_LEN), Ok(Status::Partial));
        }
        let mut input = case.bytes.clone();
        input.extend(after);
        prop_assert_eq!(
            parse(&input, V2_MAX_LEN),
            Ok(Status::Complete { header: case.header, len: case.bytes.len() })
        );
    }

    /// A verdict on a prefix is the verdict on the whole: no prefix of
    /// anything is refused for a reason more bytes would change, and a
    /// complete header's length never reaches past what was given.
    #[test]
    fn verdicts_are_final(input in header_like(), max in V2_MIN_LIMIT..1024usize) {
        let whole = parse(&input, max);
        if let Ok(Status::Complete { len, .. }) = &whole {
            prop_assert!(*len <= input.len() && *len <= max.max(V1_MAX_LEN));
        }
        for cut in 0..input.len() {
            let part = parse(&input[..cut], max);
            if part != Ok(Status::Partial) {
                prop_assert_eq!(&part, &whole, "cut at {}", cut);
            }
        }
    }

    /// ppp's builder writes v2 headers (with TLVs) we read back as it
    /// meant them.
    #[test]
    fn ppp_built_v2_headers_read_back((s, d) in inet_pair(), tlv_values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..30), 0..3)) {
        use ppp::v2::{Builder, Command, Protocol, Version};
        let addresses: ppp::v2::Addresses = match (s, d) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => ppp::v2::IPv4::new(*s.ip(), *d.ip(), s.port(), d.port()).into(),
            (SocketAddr::V6(s), SocketAddr::V6(d)) => ppp::v2::IPv6::new(*s.ip(), *d.ip(), s.port(), d.port()).into(),
            _ => unreachable!("pairs are of one family"),
        };
        let mut builder = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses);
        for (i, value) in tlv_values.iter().enumerate() {
            builder = builder.write_tlv(0xE0 + i as u8, value).unwrap();
        }
        let bytes = builder.build().unwrap();
        prop_assert_eq!(
            parse(&bytes, V2_MAX_LEN),
            Ok(Status::Complete {
                header: Header::Proxied { source: s.into(), destination: d.into() },
                len: bytes.len(),
            })
        );
    }

    /// Whatever we take as naming a client, ppp reads as naming the same
    /// one (it is laxer: some of what it takes, we refuse).
    #[test]
    fn ppp_agrees_on_the_headers_we_take(input in header_like()) {
        if let Ok(Status::Complete { header: Header::Proxied { source, .. }, len }) = parse(&input, V2_MAX_LEN) {
            let theirs = match ppp::HeaderResult::parse(&input[..len]) {
                ppp::HeaderResult::V1(Ok(h)) => match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => Some(Address::from(SocketAddr::from((a.source_address, a.source_port)))),
                    ppp::v1::Addresses::Tcp6(a) => Some(Address::from(SocketAddr::from((a.source_address, a.source_port)))),
                    ppp::v1::Addresses::Unknown => None,
                },
                ppp::HeaderResult::V2(Ok(h)) => match h.addresses {
                    ppp::v2::Addresses::IPv4(a) => Some(Address::from(SocketAddr::from((a.source_address, a.source_port)))),
                    ppp::v2::Addresses::IPv6(a) => Some(Address::from(SocketAddr::from((a.source_address, a.source_port)))),
                    ppp::v2::Addresses::Unix(_) => Some(source.clone()),
                    ppp::v2::Addresses::Unspecified => None,
                },
                other => return Err(TestCaseError::fail(format!("ppp refuses it: {other:?}"))),
            };
            prop_assert_eq!(theirs, Some(source));
        }
    }
}
