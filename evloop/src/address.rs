//! The address of a socket end: TCP over IP, or a Unix domain socket.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a socket listens, or who is at the other end of a connection.
///
/// As text (its [`Display`](fmt::Display) and [`FromStr`] forms):
///
/// | address | text |
/// |---|---|
/// | IPv4, IPv6 (TCP) | `127.0.0.1:1815`, `[::1]:1815`, `[fe80::1%2]:1815` |
/// | a Unix socket file | `unix:/run/evloop.sock` |
/// | a Linux abstract name | `unix:@evloop` |
/// | no name | `unix:(unnamed)` (shown, never parsed) |
///
/// ```
/// use evloop::Address;
///
/// let unix: Address = "unix:/run/evloop.sock".parse().unwrap();
/// assert_eq!(unix, Address::Unix("/run/evloop.sock".into()));
/// assert_eq!(unix.to_string(), "unix:/run/evloop.sock");
/// let tcp: Address = "[::1]:1815".parse().unwrap();
/// assert_eq!(tcp.inet(), Some("[::1]:1815".parse().unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// An IP address and port: a TCP socket.
    Inet(SocketAddr),
    /// The file of a Unix domain stream socket (`AF_UNIX`).
    Unix(PathBuf),
    /// A name in Linux's (and Android's) abstract namespace: a Unix socket
    /// without a file, gone when its last socket closes. The bytes are the
    /// name without the leading NUL the kernel uses to mark it.
    Abstract(Vec<u8>),
    /// A socket without a name: a Unix client that did not bind one (the
    /// usual case), or a peer whose address the system did not report.
    Unnamed,
}

impl Address {
    /// The IP address and port, for a TCP address.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(addr) => Some(*addr),
            _ => None,
        }
    }

    /// Whether connections arriving at `local` (a connection's own
    /// address) came through a listener bound here: the same address, or
    /// the same port on an unspecified address of the same family
    /// (`0.0.0.0:P`, `[::]:P`).
    pub(crate) fn covers(&self, local: &Address) -> bool {
        match (self, local) {
            (Address::Inet(listener), Address::Inet(local)) => {
                listener.port() == local.port()
                    && (listener.ip() == local.ip()
                        || (listener.ip().is_unspecified()
                            && listener.is_ipv4() == local.is_ipv4()))
            }
            _ => self == local,
        }
    }

    /// Whether a socket bound here serves `wanted`: the same address, or,
    /// for a wanted port 0 ("any free port"), the same IP address.
    pub(crate) fn satisfies(&self, wanted: &Address) -> bool {
        match (self, wanted) {
            (Address::Inet(have), Address::Inet(want)) if want.port() == 0 => {
                have.ip() == want.ip()
            }
            _ => self == wanted,
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Inet(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(addr) => addr.fmt(f),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Abstract(name) => write!(f, "unix:@{}", name.escape_ascii()),
            Address::Unnamed => f.write_str("unix:(unnamed)"),
        }
    }
}

/// Why text is not an [`Address`]; its message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseAddressError(&'static str);

impl fmt::Display for ParseAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ParseAddressError {}

impl FromStr for Address {
    type Err = ParseAddressError;

    /// Parses `unix:/path/to.sock` (a relative path works too),
    /// `unix:@name`, or `IP:PORT` as [`SocketAddr`] does (`127.0.0.1:1815`,
    /// `[::1]:1815`, a numeric IPv6 scope: `[fe80::1%2]:1815`).
    fn from_str(text: &str) -> Result<Address, ParseAddressError> {
        let Some(unix) = text.strip_prefix("unix:") else {
            return text.parse().map(Address::Inet).map_err(|_| {
                ParseAddressError(
                    "not an address (expected IP:PORT, unix:/path/to.sock or unix:@name)",
                )
            });
        };
        if let Some(name) = unix.strip_prefix('@') {
            if name.is_empty() {
                return Err(ParseAddressError("unix:@ needs a name after the @"));
            }
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if unix.is_empty() {
            return Err(ParseAddressError(
                "unix: needs a path or a name (unix:/path/to.sock or unix:@name)",
            ));
        }
        if unix.contains('\0') {
            return Err(ParseAddressError(
                "a Unix socket path cannot hold a NUL byte",
            ));
        }
        Ok(Address::Unix(unix.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for text in [
            "127.0.0.1:1815",
            "[::1]:1815",
            "[fe80::1%2]:80",
            "unix:/run/x.sock",
            "unix:relative.sock",
            "unix:@name",
        ] {
            let addr: Address = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(Address::Unnamed.to_string(), "unix:(unnamed)");
        assert_eq!(
            "unix:@evloop".parse(),
            Ok(Address::Abstract(b"evloop".to_vec()))
        );
        assert_eq!(
            Address::Abstract(b"a\0b".to_vec()).to_string(),
            "unix:@a\\x00b"
        );
    }

    #[test]
    fn nonsense_is_refused_with_what_was_expected() {
        let error = |text: &str| text.parse::<Address>().unwrap_err().to_string();
        assert_eq!(
            error("localhost:80"),
            "not an address (expected IP:PORT, unix:/path/to.sock or unix:@name)"
        );
        assert_eq!(error("/run/x.sock"), error("localhost:80"));
        assert_eq!(
            error("unix:"),
            "unix: needs a path or a name (unix:/path/to.sock or unix:@name)"
        );
        assert_eq!(error("unix:@"), "unix:@ needs a name after the @");
        assert_eq!(
            error("unix:/a\0b"),
            "a Unix socket path cannot hold a NUL byte"
        );
    }

    #[test]
    fn unspecified_listeners_cover_their_family() {
        let addr = |text: &str| text.parse::<Address>().unwrap();
        assert!(addr("0.0.0.0:80").covers(&addr("192.0.2.1:80")));
        assert!(!addr("0.0.0.0:80").covers(&addr("192.0.2.1:81")));
        assert!(!addr("0.0.0.0:80").covers(&addr("[2001:db8::1]:80")));
        assert!(addr("[::]:80").covers(&addr("[2001:db8::1]:80")));
        assert!(addr("127.0.0.1:80").covers(&addr("127.0.0.1:80")));
        assert!(!addr("127.0.0.1:80").covers(&addr("127.0.0.2:80")));
        assert!(addr("unix:/run/a.sock").covers(&addr("unix:/run/a.sock")));
        assert!(!addr("unix:/run/a.sock").covers(&addr("unix:/run/b.sock")));
    }
}
