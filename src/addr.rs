//! Listen addresses on the command line: `IP:PORT`, `[IPv6]:PORT`,
//! link-local IPv6 with its scope, by interface index or name
//! (`[fe80::1%2]:PORT`, `[fe80::1%eth0]:PORT`), and Unix sockets:
//! `unix:/path/to.sock`, `unix:@name` (Linux's abstract namespace).

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};

use evloop::Address;

/// Parses an address; an interface name in the scope is looked up.
pub fn parse(text: &str) -> Result<Address, String> {
    parse_with(text, interface_index)
}

/// Parses an address, looking interface names up with `index_of`.
fn parse_with(text: &str, index_of: impl Fn(&str) -> io::Result<u32>) -> Result<Address, String> {
    // The library's parser knows numeric scopes (`[fe80::1%2]:80`) only.
    match text.parse::<Address>() {
        Ok(addr) => return Ok(addr),
        Err(e) if text.starts_with("unix:") => return Err(e.to_string()),
        Err(_) => {}
    }
    let not_an_address = || {
        "not an address (expected IP:PORT, e.g. 127.0.0.1:1815, [::1]:1815 or [fe80::1%eth0]:1815, \
         or unix:/path/to.sock or unix:@name)"
            .to_owned()
    };
    let (inside, port) = text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"))
        .ok_or_else(not_an_address)?;
    let (ip, interface) = inside.split_once('%').ok_or_else(not_an_address)?;
    let ip: Ipv6Addr = ip.parse().map_err(|_| not_an_address())?;
    let port: u16 = port.parse().map_err(|_| not_an_address())?;
    let scope = index_of(interface).map_err(|e| format!("no interface '{interface}' ({e})"))?;
    Ok(Address::Inet(SocketAddrV6::new(ip, port, 0, scope).into()))
}

/// The index of the network interface called `name` (`if_nametoindex`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn interface_index(name: &str) -> io::Result<u32> {
    use rustix::net::{AddressFamily, SocketType, netdevice, socket};
    // The ioctl works on any socket; glibc's if_nametoindex does the same.
    let socket = socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    Ok(netdevice::name_to_index(&socket, name)?)
}

/// The index of the network interface called `name`: looked up on Linux
/// only; elsewhere the scope must be the index.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn interface_index(_name: &str) -> io::Result<u32> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "interface names are looked up on Linux only: give the index, e.g. %2",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo_is_1(name: &str) -> io::Result<u32> {
        match name {
            "lo" => Ok(1),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such device")),
        }
    }

    fn v6(text: &str, port: u16, scope: u32) -> Address {
        Address::Inet(SocketAddrV6::new(text.parse().unwrap(), port, 0, scope).into())
    }

    #[test]
    fn issue_8_scope_ids_by_number_and_by_name() {
        assert_eq!(
            parse_with("[fe80::1%1]:80", lo_is_1),
            Ok(v6("fe80::1", 80, 1))
        );
        assert_eq!(
            parse_with("[fe80::1%lo]:80", lo_is_1),
            Ok(v6("fe80::1", 80, 1))
        );
        assert_eq!(
            parse_with("[fe80::1%eth9]:80", lo_is_1),
            Err("no interface 'eth9' (no such device)".to_owned())
        );
    }

    #[test]
    fn plain_addresses_and_nonsense() {
        assert_eq!(
            parse_with("127.0.0.1:1815", lo_is_1),
            Ok(Address::Inet(([127, 0, 0, 1], 1815).into()))
        );
        assert_eq!(parse_with("[::1]:0", lo_is_1), Ok(v6("::1", 0, 0)));
        for text in [
            "localhost:http",
            "[fe80::1%lo]",
            "[fe80::1%lo]:x",
            "[nope%lo]:80",
            "1.2.3.4%lo:80",
        ] {
            assert!(
                parse_with(text, lo_is_1)
                    .unwrap_err()
                    .starts_with("not an address"),
                "{text}"
            );
        }
    }

    #[test]
    fn unix_sockets_by_path_and_by_abstract_name() {
        assert_eq!(
            parse_with("unix:/run/evloop.sock", lo_is_1),
            Ok(Address::Unix("/run/evloop.sock".into()))
        );
        assert_eq!(
            parse_with("unix:@evloop", lo_is_1),
            Ok(Address::Abstract(b"evloop".to_vec()))
        );
        assert_eq!(
            parse_with("unix:", lo_is_1),
            Err("unix: needs a path or a name (unix:/path/to.sock or unix:@name)".to_owned())
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_loopback_interface_is_found_by_name() {
        assert!(parse("[::1%lo]:0").is_ok());
    }
}
