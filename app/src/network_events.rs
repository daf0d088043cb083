//! Network changes and resume from sleep, turned into [`GatewayClient::network_changed`]: on Linux, netlink (a link up, a new address or route) and logind's `PrepareForSleep(false)` on the system bus.
//!
//! Both only hurry what would happen anyway: a live connection probes its path at once (an
//! address change has killed its TCP connection, and the probe finds out in one round
//! trip plus its timeout instead of after a silence), and a connection being restored stops
//! sleeping out its backoff. Elsewhere (macOS) nothing is watched: the liveness probes
//! still notice a dead path within seconds and the backoff is capped at 5 s.

use clawlink_core::gateway::GatewayClient;
use tokio::task::JoinHandle;

/// The running watchers; dropping this stops them.
pub struct Watchers(Vec<JoinHandle<()>>);

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts the watchers for `client`, until the returned value is dropped.
pub fn watch(client: &GatewayClient) -> Watchers {
    #[cfg(target_os = "linux")]
    {
        Watchers(vec![
            tokio::spawn(linux::netlink(client.clone())),
            tokio::spawn(linux::resume(client.clone())),
        ])
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = client;
        Watchers(Vec::new())
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use clawlink_core::gateway::GatewayClient;
    use futures_util::StreamExt;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// Events closer together than this are one change (a link coming up brings its
    /// addresses and routes within milliseconds).
    const COALESCE: Duration = Duration::from_millis(100);

    /// Watches rtnetlink's link, address and route groups; nudges the client on a link that
    /// is up, a new address or a new route.
    pub async fn netlink(client: GatewayClient) {
        let socket = match open_route_socket() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(%error, "no netlink socket: network changes are not watched");
                return;
            }
        };
        // SAFETY: an OwnedFd's descriptor stays open and the same until the AsyncFd drops it.
        let Ok(socket) = (unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) })
        else {
            return;
        };
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let Ok(mut ready) = socket.readable().await else {
                return;
            };
            let mut changed = false;
            loop {
                // SAFETY: recv into our buffer of its length on a socket we own.
                let n = unsafe {
                    libc::recv(
                        socket.get_ref().as_raw_fd(),
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    let error = io::Error::last_os_error();
                    match error.kind() {
                        io::ErrorKind::WouldBlock => {
                            ready.clear_ready();
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        // ENOBUFS: we missed events; that itself means things changed.
                        _ if error.raw_os_error() == Some(libc::ENOBUFS) => {
                            changed = true;
                            continue;
                        }
                        _ => {
                            tracing::debug!(%error, "netlink socket failed; no longer watched");
                            return;
                        }
                    }
                }
                changed |= announces_connectivity(&buffer[..n as usize]);
            }
            if changed {
                tokio::time::sleep(COALESCE).await;
                tracing::debug!("network changed");
                client.network_changed();
            }
        }
    }

    fn open_route_socket() -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is its documented initial state.
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        address.nl_groups = (libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE) as u32;
        // SAFETY: binding our socket to a valid sockaddr_nl of its size.
        let bound = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&address as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// Whether a batch of netlink messages says connectivity may have come (back): a link
    /// that is up and running, a new address, a new route. Removals only take paths away,
    /// which the liveness probes notice by themselves.
    pub(super) fn announces_connectivity(mut batch: &[u8]) -> bool {
        const HEADER: usize = size_of::<libc::nlmsghdr>();
        let mut found = false;
        while batch.len() >= HEADER {
            // SAFETY: at least a header's bytes remain; read_unaligned copes with alignment.
            let header: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(batch.as_ptr().cast()) };
            let length = header.nlmsg_len as usize;
            if length < HEADER || length > batch.len() {
                break;
            }
            let payload = &batch[HEADER..length];
            found |= match header.nlmsg_type {
                libc::RTM_NEWLINK => link_is_running(payload),
                libc::RTM_NEWADDR | libc::RTM_NEWROUTE => true,
                _ => false,
            };
            // Messages are padded to 4 bytes (NLMSG_ALIGN).
            let next = (length + 3) & !3;
            batch = batch.get(next..).unwrap_or_default();
        }
        found
    }

    fn link_is_running(payload: &[u8]) -> bool {
        if payload.len() < size_of::<libc::ifinfomsg>() {
            return false;
        }
        // SAFETY: the payload holds a whole ifinfomsg; read_unaligned copes with alignment.
        let info: libc::ifinfomsg = unsafe { std::ptr::read_unaligned(payload.as_ptr().cast()) };
        let wanted = (libc::IFF_UP | libc::IFF_RUNNING) as u32;
        info.ifi_flags & wanted == wanted
    }

    /// logind's `PrepareForSleep(false)`: the machine has just resumed.
    pub async fn resume(client: GatewayClient) {
        let connection = match zbus::Connection::system().await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(%error, "no system bus: resume from sleep is not watched");
                return;
            }
        };
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.login1.Manager")
            .and_then(|rule| rule.member("PrepareForSleep"))
            .map(|rule| rule.build());
        let Ok(rule) = rule else { return };
        let mut signals = match zbus::MessageStream::for_match_rule(rule, &connection, None).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "cannot watch logind: resume from sleep is not watched");
                return;
            }
        };
        while let Some(Ok(message)) = signals.next().await {
            if let Ok(false) = message.body().deserialize::<bool>() {
                tracing::debug!("resumed from sleep");
                client.network_changed();
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::announces_connectivity;

    /// A netlink message: header then payload, padded to 4 bytes.
    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let length = size_of::<libc::nlmsghdr>() + payload.len();
        let header = libc::nlmsghdr {
            nlmsg_len: length as u32,
            nlmsg_type: kind,
            nlmsg_flags: 0,
            nlmsg_seq: 0,
            nlmsg_pid: 0,
        };
        // SAFETY: nlmsghdr is plain data; viewing it as bytes is sound.
        let mut bytes = unsafe {
            std::slice::from_raw_parts(
                (&header as *const libc::nlmsghdr).cast::<u8>(),
                size_of::<libc::nlmsghdr>(),
            )
        }
        .to_vec();
        bytes.extend_from_slice(payload);
        bytes.resize((length + 3) & !3, 0);
        bytes
    }

    fn link(flags: libc::c_int) -> Vec<u8> {
        // SAFETY: ifinfomsg is plain data.
        let mut info: libc::ifinfomsg = unsafe { std::mem::zeroed() };
        info.ifi_flags = flags as u32;
        // SAFETY: as above.
        unsafe {
            std::slice::from_raw_parts(
                (&info as *const libc::ifinfomsg).cast::<u8>(),
                size_of::<libc::ifinfomsg>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn links_up_new_addresses_and_routes_count_removals_do_not() {
        let up = message(libc::RTM_NEWLINK, &link(libc::IFF_UP | libc::IFF_RUNNING));
        let down = message(libc::RTM_NEWLINK, &link(libc::IFF_UP));
        let address = message(libc::RTM_NEWADDR, &[0; 8]);
        let gone = message(libc::RTM_DELADDR, &[0; 8]);
        let route = message(libc::RTM_NEWROUTE, &[0; 12]);
        assert!(announces_connectivity(&up));
        assert!(!announces_connectivity(&down));
        assert!(announces_connectivity(&address));
        assert!(!announces_connectivity(&gone));
        assert!(announces_connectivity(&route));
        // Several in one batch, the interesting one last.
        let batch = [down.clone(), gone.clone(), route].concat();
        assert!(announces_connectivity(&batch));
        assert!(!announces_connectivity(&[down, gone].concat()));
        // Truncated or garbage input is read as nothing, never past its end.
        assert!(!announces_connectivity(&up[..10]));
        assert!(!announces_connectivity(&[0xff; 40]));
    }
}
