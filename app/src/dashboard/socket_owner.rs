//! Which local user holds a loopback TCP socket, from the kernel's socket tables (`/proc/net/tcp`, `/proc/net/tcp6`), so that no credential goes to a listener another user opened.
//!
//! TCP has no `SO_PEERCRED`, but Linux lists every socket with the uid that created it (what
//! identd reads). Elsewhere (macOS) the owner is unknown, and unknown is treated as "not
//! ours".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's state number of a listening socket.
const LISTEN: u8 = 0x0A;

/// One row of a `/proc/net/tcp*` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SocketRow {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    uid: u32,
}

/// Who holds something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// This process's user.
    Me,
    /// Another local user (their uid).
    Other(u32),
    /// The tables say nothing (not Linux, or no such socket).
    Unknown,
}

/// Who holds the listener that a connection to 127.0.0.1:`port` reaches (one bound to
/// 127.0.0.1, or to every address). Any listener of another user there wins: it may be
/// the one that answers.
pub(super) fn loopback_listener(port: u16) -> Owner {
    let rows = read_tables();
    let listeners = rows.iter().filter(|row| {
        row.state == LISTEN && row.local.port() == port && reaches_loopback(row.local.ip())
    });
    judge(listeners.map(|row| row.uid))
}

/// Who holds the client end of a connection our listener at `local` accepted from `peer`.
pub(super) fn loopback_peer(local: SocketAddr, peer: SocketAddr) -> Owner {
    let rows = read_tables();
    let ends = rows
        .iter()
        .filter(|row| same(row.local, peer) && same(row.remote, local));
    judge(ends.map(|row| row.uid))
}

fn judge(uids: impl Iterator<Item = u32>) -> Owner {
    let me = current_uid();
    let mut owner = Owner::Unknown;
    for uid in uids {
        if uid != me {
            return Owner::Other(uid);
        }
        owner = Owner::Me;
    }
    owner
}

/// The effective user ID, whose files and sockets we trust (with root's).
use clawlink_core::ownership::effective_uid as current_uid;

/// The same endpoint, an IPv4 address and its IPv4-mapped IPv6 form alike.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let plain = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && plain(a.ip()) == plain(b.ip())
}

fn reaches_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
        }
    }
}

fn read_tables() -> Vec<SocketRow> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(parse_row)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `  0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 …`
fn parse_row(line: &str) -> Option<SocketRow> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(SocketRow {
        local: parse_endpoint(fields.get(1)?)?,
        remote: parse_endpoint(fields.get(2)?)?,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        uid: fields.get(7)?.parse().ok()?,
    })
}

/// `ADDR:PORT` in hex: the address as the kernel's 32-bit words in host byte order, the
/// port as a number.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn kernel_socket_rows_are_read() {
        let row = parse_row(
            "   3: 0100007F:4E25 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 123 1 0 100 0 0 10 0",
        )
        .unwrap();
        assert_eq!(row.local, "127.0.0.1:20005".parse().unwrap());
        assert_eq!(row.state, LISTEN);
        assert_eq!(row.uid, 1001);
        let v6 = parse_row(
            "   0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:4E25 01 00000000:00000000 00:00000000 00000000     0        0 9 1 0 20 4 30 10 -1",
        )
        .unwrap();
        assert_eq!(v6.local, "[::ffff:127.0.0.1]:40000".parse().unwrap());
        assert!(same(v6.remote, "127.0.0.1:20005".parse().unwrap()));
        assert!(parse_row("  sl  local_address rem_address   st").is_none());
    }

    #[test]
    fn another_users_socket_wins() {
        let me = current_uid();
        assert_eq!(judge([me].into_iter()), Owner::Me);
        assert_eq!(judge([me, me + 1].into_iter()), Owner::Other(me + 1));
        assert_eq!(judge(std::iter::empty()), Owner::Unknown);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn our_own_listener_and_its_connections_are_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        assert_eq!(loopback_listener(local.port()), Owner::Me);
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(loopback_peer(local, peer), Owner::Me);
    }
}
