//! The doctor's SSH route (transport `ssh-tunnel`): dns and tcp to the SSH host (or its first ProxyJump hop), the host key, the login, the remote openclaw CLI, the local tunnel port, and the gateway port on the host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawlink_core::prompt::{Confirmation, Prompter};
use clawlink_core::transport::{Connected, Transport, TransportError, TransportErrorKind};
use clawlink_transport_ssh::sshconfig::Resolved;
use clawlink_transport_ssh::SshTunnel;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::{
    dns_layer, ms, ports, tcp_connect, Route, Status, Stop, TcpOutcome, Walk, CHANNEL_LIMIT,
    TCP_LIMIT,
};
use crate::failure::Failure;
use crate::remote;
use crate::settings::Settings;
use crate::state;

/// Time limits of the SSH steps, like the doctor's others: generous for a slow link, short
/// enough that a dead one is named within a minute.
const SSH_LIMIT: Duration = Duration::from_secs(45);
const REMOTE_CLI_LIMIT: Duration = Duration::from_secs(40);

/// A profile that reaches the gateway through an SSH tunnel.
pub(super) struct SshRoute {
    tunnel: Arc<SshTunnel>,
    /// The target as `~/.ssh/config` resolves it.
    resolved: Resolved,
    /// The first ProxyJump hop, when there is one: dns and tcp check it instead of the target.
    first_hop: Option<Resolved>,
}

impl SshRoute {
    /// The config layer's part: the tunnel's settings parse and the target resolves.
    pub(super) fn configure(settings: &Settings) -> Result<Self, Failure> {
        let raw = settings
            .profile
            .transport_settings(clawlink_transport_ssh::NAME);
        let parsed = SshTunnel::parse_settings(&raw)?;
        let tunnel = Arc::new(SshTunnel::new(
            parsed,
            Arc::new(DoctorPrompter::from_environment()),
        )?);
        let (resolved, hops) = tunnel.resolve()?;
        Ok(Self {
            tunnel,
            resolved,
            first_hop: hops.into_iter().next(),
        })
    }
}

#[async_trait(?Send)]
impl Route for SshRoute {
    fn transport(&self) -> Arc<dyn Transport> {
        self.tunnel.clone()
    }

    fn ignored_ssh_config(&self) -> Vec<String> {
        self.resolved.ignored.clone()
    }

    async fn walk_to_gateway(
        &self,
        walk: &mut Walk,
        settings: &Settings,
    ) -> Result<Option<Connected>, Stop> {
        let tunnel = &self.tunnel;
        let (host, port, via) = match &self.first_hop {
            Some(hop) => (hop.host_name.clone(), hop.port, Some(hop.alias.clone())),
            None => (self.resolved.host_name.clone(), self.resolved.port, None),
        };
        let what = match &via {
            Some(alias) => format!("the ProxyJump host {alias}"),
            None => "the SSH host".to_owned(),
        };
        let addrs = dns_layer(walk, &host, port, &what).await?;
        ssh_tcp_layer(walk, &addrs, &host, port, &what).await?;
        ssh_session_layers(walk, tunnel).await?;
        remote_cli_layer(walk, tunnel).await?;
        local_port_layer(walk, settings, tunnel).await?;
        gateway_port_over_ssh(walk, tunnel).await?;
        walk.not_applicable(
            "tls",
            "SSH encrypts the tunnel; the gateway port on the host speaks plain ws://",
        );
        Ok(None)
    }

    fn note_client_address(&self, walk: &mut Walk) {
        walk.info(
            "client-address",
            "the gateway sees this client (and anything through the tunnel) as 127.0.0.1 — expected with SSH (a node's IP shows 127.0.0.1); use the direct transport (--url ws://… or wss://…) if the gateway must see the real client IP".into(),
            json!({"seenAs": "127.0.0.1", "transport": "ssh-tunnel"}),
        );
    }
}

/// The doctor never asks: host keys are only trusted as the profile's policy says, and an
/// encrypted key's passphrase comes only from `CLAWLINK_SSH_PASSPHRASE_FILE`.
struct DoctorPrompter {
    passphrase_file: Option<PathBuf>,
}

impl DoctorPrompter {
    fn from_environment() -> Self {
        Self {
            passphrase_file: std::env::var_os("CLAWLINK_SSH_PASSPHRASE_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

#[async_trait]
impl Prompter for DoctorPrompter {
    async fn confirm(&self, _question: &Confirmation) -> bool {
        false
    }

    async fn secret(&self, _prompt: &str) -> Option<SecretString> {
        let file = self.passphrase_file.as_ref()?;
        state::read_secret_file(file, "the SSH passphrase file").ok()
    }

    fn is_interactive(&self) -> bool {
        false
    }
}

async fn ssh_tcp_layer(
    walk: &mut Walk,
    addrs: &[SocketAddr],
    host: &str,
    port: u16,
    what: &str,
) -> Result<(), Stop> {
    let started = Instant::now();
    match tcp_connect(addrs).await {
        TcpOutcome::Connected(mut stream, addr) => {
            // The server speaks first in SSH: its banner proves the port is an SSH server.
            let mut banner = [0u8; 255];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut banner)).await;
            let connect_ms = ms(started);
            let banner = match read {
                Ok(Ok(n)) => String::from_utf8_lossy(&banner[..n])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                _ => String::new(),
            };
            if !banner.is_empty() && !banner.starts_with("SSH-") {
                return Err(walk.fail(
                    "tcp",
                    started,
                    format!("{addr} answers, but it is not an SSH server (it said {banner:?})"),
                    Some(format!("check the port of the SSH target (now {port}; Port in ~/.ssh/config)")),
                    json!({"address": addr.to_string(), "banner": banner}),
                ));
            }
            walk.pass(
                "tcp",
                started,
                format!(
                    "connected to {addr} in {connect_ms} ms{}",
                    if banner.is_empty() { String::new() } else { format!(" · {banner}") }
                ),
                json!({"address": addr.to_string(), "banner": banner}),
            );
            Ok(())
        }
        TcpOutcome::Refused(errors) => Err(walk.fail(
            "tcp",
            started,
            format!("{what} {host} refuses connections on port {port}: no SSH server listens there ({})", errors.join("; ")),
            Some("check the port of the SSH target (user@host:PORT or Port in ~/.ssh/config) and that sshd runs on the host".into()),
            json!({"host": host, "port": port}),
        )),
        TcpOutcome::Unreachable(errors) => Err(walk.fail(
            "tcp",
            started,
            format!("cannot reach {what} {host} on port {port}: {}", errors.join("; ")),
            Some("the host is down or unreachable from here, or a firewall drops the port: check the address, the VPN or tailnet, and the firewall".into()),
            json!({"host": host, "port": port}),
        )),
    }
}

/// The host-key and authentication layers: one real SSH connection, shared afterwards by
/// the remote CLI, the forward and the gateway socket.
async fn ssh_session_layers(walk: &mut Walk, tunnel: &Arc<SshTunnel>) -> Result<(), Stop> {
    let started = Instant::now();
    if let Some(ssh) = tunnel.openssh() {
        return match tokio::time::timeout(SSH_LIMIT, ssh.run("true", SSH_LIMIT)).await {
            Ok(Ok(_)) => {
                walk.pass(
                    "ssh-host-key",
                    started,
                    "checked by the system ssh (openssh backend, your known_hosts)".into(),
                    json!({"backend": "openssh"}),
                );
                walk.pass(
                    "ssh-auth",
                    started,
                    format!("the system ssh logged in to {}", tunnel.target()),
                    json!({"backend": "openssh"}),
                );
                Ok(())
            }
            Ok(Err(e)) if e.kind == TransportErrorKind::Authentication => {
                walk.pass(
                    "ssh-host-key",
                    started,
                    "accepted by the system ssh (it got as far as authentication)".into(),
                    json!({"backend": "openssh"}),
                );
                Err(walk.fail(
                    "ssh-auth",
                    started,
                    e.message,
                    e.fix,
                    json!({"backend": "openssh"}),
                ))
            }
            Ok(Err(e)) => Err(walk.fail(
                "ssh-host-key",
                started,
                e.message,
                e.fix,
                json!({"backend": "openssh"}),
            )),
            Err(_) => Err(walk.fail(
                "ssh-auth",
                started,
                format!(
                    "the system ssh did not log in within {} s",
                    SSH_LIMIT.as_secs()
                ),
                Some("run `ssh -v TARGET true` to see where it stops".into()),
                Value::Null,
            )),
        };
    }
    let session = match tokio::time::timeout(SSH_LIMIT, tunnel.session()).await {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => return Err(session_failure(walk, tunnel, started, e).await),
        Err(_) => {
            return Err(walk.fail(
                "ssh-auth",
                started,
                format!("the SSH login to {} did not finish within {} s", tunnel.target(), SSH_LIMIT.as_secs()),
                Some("an ssh-agent or a hardware key may be waiting for confirmation; try identity_file (--identity) with a plain key".into()),
                Value::Null,
            ))
        }
    };
    let info = &session.info;
    let host_key = info.host_key.as_ref();
    walk.push(
        "ssh-host-key",
        Status::Ok,
        Some(info.handshake.as_millis() as u64),
        match host_key {
            Some(t) => format!("{} trusted ({})", t.fingerprint, t.how),
            None => "accepted".into(),
        },
        None,
        json!({"fingerprint": host_key.map(|t| &t.fingerprint), "trustedBy": host_key.map(|t| &t.how)}),
    );
    walk.push(
        "ssh-auth",
        Status::Ok,
        Some(info.auth.as_millis() as u64),
        format!("{} logged in with {}", info.endpoint, info.auth_method),
        None,
        json!({"endpoint": info.endpoint, "auth": info.auth_method}),
    );
    Ok(())
}

/// Names the SSH layer a failed connection stopped at.
async fn session_failure(
    walk: &mut Walk,
    tunnel: &SshTunnel,
    started: Instant,
    error: TransportError,
) -> Stop {
    match error.kind {
        TransportErrorKind::HostTrust => walk.fail(
            "ssh-host-key",
            started,
            error.message,
            error.fix,
            json!({"kind": "host-trust"}),
        ),
        TransportErrorKind::Authentication => {
            pass_host_key_before_auth(walk, tunnel).await;
            walk.fail(
                "ssh-auth",
                started,
                error.message,
                error.fix,
                json!({"kind": "authentication"}),
            )
        }
        _ if error.message.contains("during authentication") => {
            pass_host_key_before_auth(walk, tunnel).await;
            walk.fail("ssh-auth", started, error.message, error.fix, Value::Null)
        }
        TransportErrorKind::Connect if error.message.contains("handshake") => walk.fail(
            "ssh-host-key",
            started,
            error.message,
            error.fix,
            json!({"kind": "handshake"}),
        ),
        _ => walk.fail(
            "ssh-host-key",
            started,
            error.message,
            error.fix,
            Value::Null,
        ),
    }
}

/// When authentication failed the host key had passed; show which key it was.
async fn pass_host_key_before_auth(walk: &mut Walk, tunnel: &SshTunnel) {
    let started = Instant::now();
    let detail = match tokio::time::timeout(TCP_LIMIT, tunnel.probe_host_key()).await {
        Ok(Ok(probe)) => format!("{} ({}) accepted", probe.fingerprint, probe.algorithm),
        _ => "accepted (the server got as far as authentication)".into(),
    };
    walk.pass("ssh-host-key", started, detail, Value::Null);
}

async fn remote_cli_layer(walk: &mut Walk, tunnel: &SshTunnel) -> Result<(), Stop> {
    let started = Instant::now();
    match tokio::time::timeout(REMOTE_CLI_LIMIT, remote::remote_cli_step(tunnel, false)).await {
        Ok(step) if step.ok => {
            walk.pass("remote-cli", started, format!("openclaw --version on {}: {}", tunnel.target().host, step.detail), step.data);
            Ok(())
        }
        Ok(step) => Err(walk.fail("remote-cli", started, step.detail, step.fix, step.data)),
        Err(_) => Err(walk.fail(
            "remote-cli",
            started,
            format!("`openclaw --version` on {} did not finish within {} s", tunnel.target().host, REMOTE_CLI_LIMIT.as_secs()),
            Some("run `openclaw --version` on the host: a slow or hung CLI start (network filesystem, broken node install) shows there".into()),
            Value::Null,
        )),
    }
}

async fn local_port_layer(
    walk: &mut Walk,
    settings: &Settings,
    tunnel: &SshTunnel,
) -> Result<(), Stop> {
    let started = Instant::now();
    let explicit = settings
        .profile
        .transport_settings(clawlink_transport_ssh::NAME)
        .get("local_port")
        .is_some();
    let port = tunnel.settings().local_port;
    match ports::check_loopback_port(port) {
        ports::PortState::Free => {
            walk.pass(
                "local-port",
                started,
                format!(
                    "127.0.0.1:{port} is free for `clawlink tunnel`{}",
                    if explicit { "" } else { " (the default; clawlink's own connection needs no local port: it rides an SSH channel)" }
                ),
                json!({"port": port, "explicit": explicit, "free": true}),
            );
            Ok(())
        }
        ports::PortState::Taken {
            address,
            error,
            holders,
            hidden_owner_uids,
        } => {
            // The profile's own agent holding its forward is the healthy case. It is ours
            // only when both agree: the agent (asked on its control socket, whose peer UID
            // is checked) says it forwards this port, and the kernel says its pid holds it.
            // Only then does the doctor talk to the port, and even then sends no credential.
            let agent = crate::agent::ask(settings, &crate::control::Request::Status)
                .await
                .ok()
                .flatten();
            if let Some(forward) = agent
                .as_ref()
                .and_then(|a| agent_forward(a, port, &holders))
            {
                let through = probe_agent_forward(port).await;
                walk.pass(
                    "local-port",
                    started,
                    format!(
                        "{address} is this profile's agent's gateway forward (pid {}, socket {}) · {through}",
                        forward.pid, forward.socket
                    ),
                    json!({"port": port, "explicit": explicit, "free": false, "heldByAgent": {"pid": forward.pid, "socket": forward.socket}, "throughForward": through}),
                );
                return Ok(());
            }
            let who = describe_holders(&holders, &hidden_owner_uids);
            let data = json!({"port": port, "explicit": explicit, "free": false, "address": address, "holders": holders, "hiddenOwnerUids": hidden_owner_uids});
            if !explicit {
                walk.pass(
                    "local-port",
                    started,
                    format!("the default tunnel port {address} is {who}; `clawlink tunnel` and `clawlink up` would fall back to a free port, and clawlink's own connection needs none"),
                    data,
                );
                return Ok(());
            }
            let stop = match holders.first() {
                Some(h) => format!(
                    "stop {} (pid {}) if it is a leftover — `kill {}` —, or",
                    h.comm, h.pid, h.pid
                ),
                None => "free it, or".into(),
            };
            Err(walk.fail(
                "local-port",
                started,
                format!("{address} (local_port) is {who} ({error})"),
                Some(format!(
                    "{stop} pick another port with --local-port N / local_port; `clawlink tunnel` and `clawlink up` would fall back to a free port by themselves (and say which)"
                )),
                data,
            ))
        }
    }
}

/// The running agent's gateway forward on `port`, as the agent reported it.
#[derive(Debug, PartialEq, Eq)]
struct AgentForward {
    pid: u32,
    socket: String,
}

/// The agent's forward on `port`, when the agent's `status` lists a gateway endpoint on that
/// port and the agent's pid is among the processes the kernel says hold it.
fn agent_forward(status: &Value, port: u16, holders: &[ports::Holder]) -> Option<AgentForward> {
    let pid = u32::try_from(status.get("pid")?.as_u64()?).ok()?;
    let forwards_port = status
        .pointer("/transport/localEndpoints")?
        .as_array()?
        .iter()
        .filter(|e| e["purpose"] == "gateway")
        .filter_map(|e| e["url"].as_str())
        .any(|url| {
            url.trim_end_matches('/')
                .ends_with(&format!("127.0.0.1:{port}"))
        });
    let holds = holders.iter().any(|h| h.pid == pid);
    (forwards_port && holds).then(|| AgentForward {
        pid,
        socket: status["socket"].as_str().unwrap_or("?").to_owned(),
    })
}

/// Checks the agent's forward end to end without credentials: the gateway's HTTP `/health`
/// (liveness, no auth) through it. Plain HTTP, not a WebSocket: a socket that upgrades and
/// leaves before `connect` is logged by the gateway as a warning.
async fn probe_agent_forward(port: u16) -> String {
    use tokio::io::AsyncWriteExt;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: clawlink-doctor/{}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(16 * 1024)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(super::HTTP_ANSWER_LIMIT, exchange).await {
        Err(_) => "its forward did not answer in time".into(),
        Ok(Err(e)) => format!("its forward broke the connection: {e}"),
        Ok(Ok(answer)) => {
            let status = answer.lines().next().unwrap_or_default().trim().to_owned();
            let body = answer
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.trim())
                .unwrap_or_default();
            if status.contains(" 200") && body.contains("\"ok\":true") {
                "through it the gateway's /health answers ok".into()
            } else {
                format!("through it the gateway's /health answered {status:?}")
            }
        }
    }
}

fn describe_holders(holders: &[ports::Holder], hidden_uids: &[u32]) -> String {
    if !holders.is_empty() {
        let list: Vec<String> = holders
            .iter()
            .map(|h| format!("{} (pid {})", h.comm, h.pid))
            .collect();
        return format!("held by {}", list.join(", "));
    }
    if !hidden_uids.is_empty() {
        let uids: Vec<String> = hidden_uids.iter().map(|u| u.to_string()).collect();
        return format!(
            "held by a process of another user (uid {}; `sudo ss -ltnp` names it)",
            uids.join(", ")
        );
    }
    "already in use".into()
}

/// Through the tunnel: a `direct-tcpip` channel to the gateway port on the host. A refusal
/// there means the gateway is not running (or listens on another port).
async fn gateway_port_over_ssh(walk: &mut Walk, tunnel: &Arc<SshTunnel>) -> Result<(), Stop> {
    let started = Instant::now();
    let port = tunnel.settings().remote_port;
    let host = tunnel.target().host.clone();
    let not_running_fix = format!(
        "on {host}, `openclaw gateway status` shows whether the gateway runs and on which port: start it \
         (`openclaw gateway run`, or its service) or set remote_port (--remote-port) to the port it listens on (now {port})"
    );
    let data = json!({"remotePort": port});
    if tunnel.openssh().is_some() {
        // ssh -L accepts locally first and drops the connection when the far side refuses.
        let transport: Arc<dyn Transport> = tunnel.clone();
        let connected = match tokio::time::timeout(CHANNEL_LIMIT, transport.connect()).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return Err(walk.fail("gateway-port", started, e.message, e.fix, data)),
            Err(_) => {
                return Err(walk.fail(
                    "gateway-port",
                    started,
                    format!(
                        "ssh did not open the forward within {} s",
                        CHANNEL_LIMIT.as_secs()
                    ),
                    None,
                    data,
                ))
            }
        };
        let mut stream = connected.stream;
        let mut byte = [0u8; 1];
        return match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(walk.fail(
                "gateway-port",
                started,
                format!("ssh dropped the forwarded connection: nothing accepts connections on 127.0.0.1:{port} on {host}"),
                Some(not_running_fix),
                data,
            )),
            _ => {
                walk.pass("gateway-port", started, format!("{host} accepts connections on 127.0.0.1:{port} (through ssh -L)"), data);
                Ok(())
            }
        };
    }
    match tokio::time::timeout(CHANNEL_LIMIT, tunnel.open_forward(port)).await {
        Ok(Ok(channel)) => {
            let _ = channel.close().await;
            walk.pass(
                "gateway-port",
                started,
                format!("{host} accepts connections on 127.0.0.1:{port} on its side"),
                data,
            );
            Ok(())
        }
        Ok(Err(e))
            if e.kind == TransportErrorKind::Tunnel && e.message.contains("nothing listens") =>
        {
            Err(walk.fail(
                "gateway-port",
                started,
                format!(
                    "{}: the gateway is not running there, or listens on another port",
                    e.message
                ),
                Some(not_running_fix),
                data,
            ))
        }
        Ok(Err(e)) => Err(walk.fail("gateway-port", started, e.message, e.fix, data)),
        Err(_) => Err(walk.fail(
            "gateway-port",
            started,
            format!(
                "{host} did not open a channel to 127.0.0.1:{port} within {} s",
                CHANNEL_LIMIT.as_secs()
            ),
            Some(not_running_fix),
            data,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_named_with_pid() {
        let holders = vec![ports::Holder {
            pid: 42,
            comm: "node".into(),
        }];
        assert_eq!(describe_holders(&holders, &[]), "held by node (pid 42)");
        assert!(describe_holders(&[], &[0]).contains("another user"));
    }

    #[test]
    fn a_port_is_the_agents_only_when_the_agent_and_the_kernel_agree() {
        let status = json!({
            "pid": 42,
            "socket": "/run/user/1000/clawlink/work.sock",
            "transport": {"localEndpoints": [
                {"purpose": "gateway", "url": "ws://127.0.0.1:18789"},
                {"purpose": "widget sandbox", "url": "http://127.0.0.1:18790"},
            ]},
        });
        let agent = vec![ports::Holder {
            pid: 42,
            comm: "clawlink".into(),
        }];
        let other = vec![ports::Holder {
            pid: 7,
            comm: "clawlink".into(),
        }];
        assert_eq!(
            agent_forward(&status, 18789, &agent),
            Some(AgentForward {
                pid: 42,
                socket: "/run/user/1000/clawlink/work.sock".into()
            })
        );
        // Another process on the port the agent claims, or the agent on another port: not it.
        assert_eq!(agent_forward(&status, 18789, &other), None);
        assert_eq!(agent_forward(&status, 18790, &agent), None);
        assert_eq!(agent_forward(&status, 1878, &agent), None);
    }
}
