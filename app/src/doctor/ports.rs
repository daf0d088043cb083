//! Who holds a local TCP port: whether 127.0.0.1 / ::1 can be bound, and if not, which process listens there (for `clawlink doctor`).
//!
//! Linux reads `/proc/net/tcp{,6}` for the socket's inode and then `/proc/<pid>/fd` for the
//! process that owns it (only this user's processes are visible without privileges); macOS
//! asks `lsof`, which has no such restriction for listening sockets of the same user.

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

/// A process that holds a port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    pub pid: u32,
    /// The process name (`/proc/<pid>/comm`, or lsof's `c` field).
    pub comm: String,
}

/// What binding the port on loopback found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    /// Both loopback families could be bound (or IPv6 loopback does not exist here).
    Free,
    /// Binding failed: the error, and who holds the port when we could find out.
    Taken {
        address: String,
        error: String,
        holders: Vec<Holder>,
        /// Sockets on the port whose owner is not visible to this user (uid, when known).
        hidden_owner_uids: Vec<u32>,
    },
}

/// Tries to bind `port` on 127.0.0.1 and ::1, the addresses `clawlink tunnel` listens on.
pub fn check_loopback_port(port: u16) -> PortState {
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    let failure = match v4 {
        Err(e) => Some((format!("127.0.0.1:{port}"), e)),
        Ok(_held_while_checking_v6) => match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
            Ok(_) => None,
            // A host without IPv6 loopback: the tunnel forwards on 127.0.0.1 only.
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    || e.raw_os_error() == Some(libc_eafnosupport()) =>
            {
                None
            }
            Err(e) => Some((format!("[::1]:{port}"), e)),
        },
    };
    match failure {
        None => PortState::Free,
        Some((address, error)) => {
            let (holders, hidden_owner_uids) = holders_of(port);
            PortState::Taken {
                address,
                error: error.to_string(),
                holders,
                hidden_owner_uids,
            }
        }
    }
}

/// EAFNOSUPPORT without a libc dependency: 97 on Linux, 47 on macOS and the BSDs.
fn libc_eafnosupport() -> i32 {
    if cfg!(target_os = "linux") {
        97
    } else {
        47
    }
}

/// The processes holding `port`, and the uids of holders we cannot see.
#[cfg(target_os = "linux")]
pub fn holders_of(port: u16) -> (Vec<Holder>, Vec<u32>) {
    let sockets: Vec<ProcSocket> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|text| parse_proc_net_tcp(&text, port))
        .collect();
    // Listening sockets are the usual culprit; a socket merely bound (or a connection
    // using the port locally) blocks a bind too, so fall back to those.
    let listening: Vec<&ProcSocket> = sockets.iter().filter(|s| s.listening).collect();
    let relevant: Vec<&ProcSocket> = if listening.is_empty() {
        sockets.iter().collect()
    } else {
        listening
    };
    let inodes: Vec<u64> = relevant
        .iter()
        .map(|s| s.inode)
        .filter(|i| *i != 0)
        .collect();
    let mut holders = owners_of_inodes(&inodes);
    holders.sort_by_key(|h| h.pid);
    holders.dedup();
    let mut hidden: Vec<u32> = if holders.is_empty() {
        relevant.iter().map(|s| s.uid).collect()
    } else {
        Vec::new()
    };
    hidden.sort_unstable();
    hidden.dedup();
    (holders, hidden)
}

/// The processes holding `port` (lsof; macOS and other Unixes).
#[cfg(not(target_os = "linux"))]
pub fn holders_of(port: u16) -> (Vec<Holder>, Vec<u32>) {
    let output = std::process::Command::new("lsof")
        .args(["-nP", &format!("-iTCP:{port}"), "-sTCP:LISTEN", "-Fpc"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(output) = output else {
        return (Vec::new(), Vec::new());
    };
    (
        parse_lsof_fields(&String::from_utf8_lossy(&output.stdout)),
        Vec::new(),
    )
}

/// lsof `-F pc` output: `p<pid>` starts a process, `c<command>` names it.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn parse_lsof_fields(text: &str) -> Vec<Holder> {
    let mut holders = Vec::new();
    let mut pid = None;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix('p') {
            pid = value.trim().parse().ok();
        } else if let (Some(value), Some(p)) = (line.strip_prefix('c'), pid) {
            holders.push(Holder {
                pid: p,
                comm: value.trim().to_owned(),
            });
            pid = None;
        }
    }
    holders
}

/// One row of `/proc/net/tcp{,6}` for our port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcSocket {
    listening: bool,
    uid: u32,
    inode: u64,
}

/// The sockets of `/proc/net/tcp`-format `text` whose local port is `port`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_net_tcp(text: &str, port: u16) -> Vec<ProcSocket> {
    const TCP_LISTEN: &str = "0A";
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode …
            let local = fields.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            if local_port != port {
                return None;
            }
            Some(ProcSocket {
                listening: fields.get(3)? == &TCP_LISTEN,
                uid: fields.get(7)?.parse().ok()?,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The processes with an open fd on one of `inodes` (`socket:[N]` links in /proc/*/fd).
#[cfg(target_os = "linux")]
fn owners_of_inodes(inodes: &[u64]) -> Vec<Holder> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Other users' fd directories are unreadable without privileges: skipped.
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|target| target.to_str().map(|t| wanted.iter().any(|w| w == t)))
                .unwrap_or(false)
        });
        if owns {
            let comm = std::fs::read_to_string(process.path().join("comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|_| "?".into());
            holders.push(Holder { pid, comm });
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_rows_are_matched_by_local_port() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:C350 0100007F:4965 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(
            parse_proc_net_tcp(text, 0x4965),
            vec![ProcSocket {
                listening: true,
                uid: 1000,
                inode: 123456
            }]
        );
        assert_eq!(parse_proc_net_tcp(text, 0xC350).len(), 1);
        assert!(parse_proc_net_tcp(text, 1).is_empty());
    }

    #[test]
    fn lsof_fields_give_pid_and_command() {
        let holders = parse_lsof_fields("p4242\ncnode\np17\ncsshd\n");
        assert_eq!(
            holders,
            vec![
                Holder {
                    pid: 4242,
                    comm: "node".into()
                },
                Holder {
                    pid: 17,
                    comm: "sshd".into()
                }
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_port_this_process_listens_on_is_traced_back_to_it() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        match check_loopback_port(port) {
            PortState::Taken { holders, .. } => {
                assert!(
                    holders.iter().any(|h| h.pid == std::process::id()),
                    "{holders:?}"
                );
            }
            PortState::Free => panic!("a held port was reported free"),
        }
        drop(listener);
    }
}
