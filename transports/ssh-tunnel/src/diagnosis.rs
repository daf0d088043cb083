//! The SSH tunnel's doctor layers: dns and tcp to the SSH host (or its first ProxyJump hop), the host key, the login, the remote openclaw CLI, the doctor's local-port check, and the gateway port on the host.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawlink_core::transport::diagnosis::net::{dns_layer, tcp_connect, TcpOutcome, TCP_LIMIT};
use clawlink_core::transport::diagnosis::{Note, SettingsNotes, LOCAL_PORT_LAYER};
use clawlink_core::transport::{
    Connected, Diagnosis, LayerReport, LayerSink, LayerStatus, Stopped, Transport, TransportError,
    TransportErrorKind,
};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::{exec, SshTunnel};

/// Time limits of the SSH steps: generous for a slow link, short enough that a dead one is
/// named within a minute.
const SSH_LIMIT: Duration = Duration::from_secs(45);
const CHANNEL_LIMIT: Duration = Duration::from_secs(15);
const REMOTE_CLI_LIMIT: Duration = Duration::from_secs(40);
const VERSION_LIMIT: Duration = Duration::from_secs(30);

/// The layers, in the order they are walked.
/// The layers `diagnose` reports, in order (also the descriptor's `layers`).
pub(crate) const LAYERS: &[&str] = &[
    "dns",
    "tcp",
    "ssh-host-key",
    "ssh-auth",
    "remote-cli",
    LOCAL_PORT_LAYER,
    "gateway-port",
    "tls",
];

#[async_trait(?Send)]
impl Diagnosis for SshTunnel {
    fn layers(&self) -> Vec<&'static str> {
        LAYERS.to_vec()
    }

    fn check_settings(&self) -> Result<SettingsNotes, TransportError> {
        let (resolved, _) = self.resolve()?;
        let mut notes = SettingsNotes::default();
        // The system ssh of the openssh backend reads the file and applies every keyword.
        if self.openssh().is_some() {
            return Ok(notes);
        }
        let file = self
            .settings()
            .ssh_config
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "~/.ssh/config".into());
        if !resolved.ignored.is_empty() {
            notes.notes.push(format!(
                "{file} sets keywords for this host that the in-process SSH ignores: {} \
                 (backend = \"openssh\" in [PROFILE.transports.ssh_tunnel] has the system ssh apply them)",
                resolved.ignored.join(", ")
            ));
        }
        notes.data.insert(
            "ignoredSshConfig".into(),
            json!({"file": file, "keywords": resolved.ignored}),
        );
        Ok(notes)
    }

    async fn session_step(&self) -> Option<LayerReport> {
        let started = Instant::now();
        let step = match self.openssh() {
            Some(ssh) => ssh.run("true", SSH_LIMIT).await.map(|_| {
                LayerReport::ok(
                    "ssh",
                    started,
                    format!(
                        "{} · system ssh (openssh backend) connected and authenticated",
                        self.target()
                    ),
                    json!({"backend": "openssh"}),
                )
            }),
            None => self.session().await.map(|session| {
                let info = &session.info;
                let host_key = info
                    .host_key
                    .as_ref()
                    .map(|t| format!("host key {} ({})", t.fingerprint, t.how))
                    .unwrap_or_default();
                LayerReport::ok(
                    "ssh",
                    started,
                    format!("{} · {host_key} · auth: {}", info.endpoint, info.auth_method),
                    json!({
                        "backend": "russh",
                        "endpoint": info.endpoint,
                        "tcpMs": info.tcp.as_millis() as u64,
                        "handshakeMs": info.handshake.as_millis() as u64,
                        "authMs": info.auth.as_millis() as u64,
                        "hostKey": info.host_key.as_ref().map(|t| json!({"fingerprint": t.fingerprint, "trustedBy": t.how})),
                        "auth": info.auth_method,
                    }),
                )
            }),
        };
        Some(
            step.unwrap_or_else(|e| {
                LayerReport::failed("ssh", started, e.message, e.fix, Value::Null)
            }),
        )
    }

    async fn diagnose(&self, sink: &mut dyn LayerSink) -> Result<Option<Connected>, Stopped> {
        let (resolved, hops) = self.resolve().map_err(|e| {
            // Checked by the config layer already; a file changed in between.
            let _ = sink.report(LayerReport::failed(
                "dns",
                Instant::now(),
                e.message,
                e.fix.or(Some("fix the SSH config file".into())),
                Value::Null,
            ));
            Stopped
        })?;
        let (host, port, what) = match hops.first() {
            Some(hop) => (
                hop.host_name.clone(),
                hop.port,
                format!("the ProxyJump host {}", hop.alias),
            ),
            None => (
                resolved.host_name.clone(),
                resolved.port,
                "the SSH host".to_owned(),
            ),
        };
        let (report, addrs) = dns_layer(
            &host,
            port,
            &what,
            "check the host name in the SSH target (or HostName in ~/.ssh/config) and this machine's DNS (/etc/resolv.conf, VPN or tailnet MagicDNS)",
        )
        .await;
        sink.report(report)?;
        let addrs = addrs.unwrap_or_default();
        sink.report(tcp_layer(&addrs, &host, port, &what).await)?;
        session_layers(self, sink).await?;
        sink.report(remote_cli_layer(self).await)?;
        sink.local_port(self.settings.local_port, self.local_port_explicit)
            .await?;
        sink.report(gateway_port_layer(self).await)?;
        sink.report(LayerReport::not_applicable(
            "tls",
            "SSH encrypts the tunnel; the gateway port on the host speaks plain ws://",
        ))?;
        Ok(None)
    }

    fn client_address(&self) -> Note {
        Note {
            detail: "the gateway sees this client (and anything through the tunnel) as 127.0.0.1 — expected with SSH (a node's IP shows 127.0.0.1); use the direct transport (--url ws://… or wss://…) if the gateway must see the real client IP".into(),
            data: json!({"seenAs": "127.0.0.1", "transport": crate::NAME}),
        }
    }
}

async fn tcp_layer(addrs: &[SocketAddr], host: &str, port: u16, what: &str) -> LayerReport {
    let started = Instant::now();
    match tcp_connect(addrs).await {
        TcpOutcome::Connected(mut stream, addr) => {
            // The server speaks first in SSH: its banner proves the port is an SSH server.
            let mut banner = [0u8; 255];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut banner)).await;
            let connect_ms = started.elapsed().as_millis();
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
                return LayerReport::failed(
                    "tcp",
                    started,
                    format!("{addr} answers, but it is not an SSH server (it said {banner:?})"),
                    Some(format!("check the port of the SSH target (now {port}; Port in ~/.ssh/config)")),
                    json!({"address": addr.to_string(), "banner": banner}),
                );
            }
            LayerReport::ok(
                "tcp",
                started,
                format!(
                    "connected to {addr} in {connect_ms} ms{}",
                    if banner.is_empty() { String::new() } else { format!(" · {banner}") }
                ),
                json!({"address": addr.to_string(), "banner": banner}),
            )
        }
        TcpOutcome::Refused(errors) => LayerReport::failed(
            "tcp",
            started,
            format!("{what} {host} refuses connections on port {port}: no SSH server listens there ({})", errors.join("; ")),
            Some("check the port of the SSH target (user@host:PORT or Port in ~/.ssh/config) and that sshd runs on the host".into()),
            json!({"host": host, "port": port}),
        ),
        TcpOutcome::Unreachable(errors) => LayerReport::failed(
            "tcp",
            started,
            format!("cannot reach {what} {host} on port {port}: {}", errors.join("; ")),
            Some("the host is down or unreachable from here, or a firewall drops the port: check the address, the VPN or tailnet, and the firewall".into()),
            json!({"host": host, "port": port}),
        ),
    }
}

/// The host-key and authentication layers: one real SSH connection, shared afterwards by
/// the remote CLI, the forward and the gateway socket.
async fn session_layers(tunnel: &SshTunnel, sink: &mut dyn LayerSink) -> Result<(), Stopped> {
    let started = Instant::now();
    if let Some(ssh) = tunnel.openssh() {
        let backend = json!({"backend": "openssh"});
        return match tokio::time::timeout(SSH_LIMIT, ssh.run("true", SSH_LIMIT)).await {
            Ok(Ok(_)) => {
                sink.report(LayerReport::ok(
                    "ssh-host-key",
                    started,
                    "checked by the system ssh (openssh backend, your known_hosts)".into(),
                    backend.clone(),
                ))?;
                sink.report(LayerReport::ok(
                    "ssh-auth",
                    started,
                    format!("the system ssh logged in to {}", tunnel.target()),
                    backend,
                ))
            }
            Ok(Err(e)) if e.kind == TransportErrorKind::Authentication => {
                sink.report(LayerReport::ok(
                    "ssh-host-key",
                    started,
                    "accepted by the system ssh (it got as far as authentication)".into(),
                    backend.clone(),
                ))?;
                sink.report(LayerReport::failed(
                    "ssh-auth", started, e.message, e.fix, backend,
                ))
            }
            Ok(Err(e)) => sink.report(LayerReport::failed(
                "ssh-host-key",
                started,
                e.message,
                e.fix,
                backend,
            )),
            Err(_) => sink.report(LayerReport::failed(
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
        Ok(Err(e)) => return session_failure(sink, tunnel, started, e).await,
        Err(_) => {
            return sink.report(LayerReport::failed(
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
    sink.report(
        LayerReport::timed(
            "ssh-host-key",
            LayerStatus::Ok,
            info.handshake.as_millis() as u64,
        )
        .detail(
            match host_key {
                Some(t) => format!("{} trusted ({})", t.fingerprint, t.how),
                None => "accepted".into(),
            },
            None,
            json!({"fingerprint": host_key.map(|t| &t.fingerprint), "trustedBy": host_key.map(|t| &t.how)}),
        ),
    )?;
    sink.report(
        LayerReport::timed("ssh-auth", LayerStatus::Ok, info.auth.as_millis() as u64).detail(
            format!("{} logged in with {}", info.endpoint, info.auth_method),
            None,
            json!({"endpoint": info.endpoint, "auth": info.auth_method}),
        ),
    )
}

/// Names the SSH layer a failed connection stopped at.
async fn session_failure(
    sink: &mut dyn LayerSink,
    tunnel: &SshTunnel,
    started: Instant,
    error: TransportError,
) -> Result<(), Stopped> {
    let auth_failed = error.kind == TransportErrorKind::Authentication
        || (error.kind != TransportErrorKind::HostTrust
            && error.message.contains("during authentication"));
    if auth_failed {
        sink.report(host_key_before_auth(tunnel).await)?;
        let data = if error.kind == TransportErrorKind::Authentication {
            json!({"kind": "authentication"})
        } else {
            Value::Null
        };
        return sink.report(LayerReport::failed(
            "ssh-auth",
            started,
            error.message,
            error.fix,
            data,
        ));
    }
    let data = match error.kind {
        TransportErrorKind::HostTrust => json!({"kind": "host-trust"}),
        TransportErrorKind::Connect if error.message.contains("handshake") => {
            json!({"kind": "handshake"})
        }
        // Not SSH at all, or a broken SSH stream: the fix is the port or the path, not trust.
        TransportErrorKind::Protocol => json!({"kind": "protocol"}),
        _ => Value::Null,
    };
    sink.report(LayerReport::failed(
        "ssh-host-key",
        started,
        error.message,
        error.fix,
        data,
    ))
}

/// When authentication failed the host key had passed; shows which key it was.
async fn host_key_before_auth(tunnel: &SshTunnel) -> LayerReport {
    let started = Instant::now();
    let detail = match tokio::time::timeout(TCP_LIMIT, tunnel.probe_host_key()).await {
        Ok(Ok(probe)) => format!("{} ({}) accepted", probe.fingerprint, probe.algorithm),
        _ => "accepted (the server got as far as authentication)".into(),
    };
    LayerReport::ok("ssh-host-key", started, detail, Value::Null)
}

/// `openclaw --version` on the host, with the CLI resolution `clawlink test` relies on.
async fn remote_cli_layer(tunnel: &SshTunnel) -> LayerReport {
    let started = Instant::now();
    let host = &tunnel.target().host;
    let output = match tokio::time::timeout(
        REMOTE_CLI_LIMIT,
        tunnel.run_cli(&["--version"], VERSION_LIMIT),
    )
    .await
    {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return LayerReport::failed("remote-cli", started, e.message, e.fix, Value::Null)
        }
        Err(_) => {
            return LayerReport::failed(
                "remote-cli",
                started,
                format!("`openclaw --version` on {host} did not finish within {} s", REMOTE_CLI_LIMIT.as_secs()),
                Some("run `openclaw --version` on the host: a slow or hung CLI start (network filesystem, broken node install) shows there".into()),
                Value::Null,
            )
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.exit_code {
        Some(0) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let version = stdout.lines().next().unwrap_or("").trim().to_owned();
            LayerReport::ok(
                "remote-cli",
                started,
                format!("openclaw --version on {host}: {version}"),
                json!({"version": version}),
            )
        }
        Some(exec::NOT_FOUND) => {
            let (detail, fix) = explain_cli_not_found(&stderr, host);
            LayerReport::failed(
                "remote-cli",
                started,
                format!("exit 127: {detail} on {host}"),
                Some(fix),
                Value::Null,
            )
        }
        code => {
            let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
            LayerReport::failed(
                "remote-cli",
                started,
                format!(
                    "openclaw --version exited with {}: {}",
                    code.map(|c| c.to_string())
                        .unwrap_or_else(|| "a signal".into()),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
                Some("run the same command on the host to see the full error".into()),
                Value::Null,
            )
        }
    }
}

/// What an exit 127 of the CLI resolution script means, from the marker line it printed on
/// stderr (project root missing, node missing, or the CLI itself), and how to fix it.
pub fn explain_cli_not_found(stderr: &str, host: &str) -> (String, String) {
    let line = |marker: &str| {
        stderr
            .lines()
            .find(|l| l.contains(marker))
            .map(|l| l.replace(&format!("{marker}: "), ""))
    };
    if let Some(detail) = line(exec::MARK_NO_PROJECT) {
        return (
            detail,
            "fix project_root (--project-root) to the directory of the openclaw checkout on the host".into(),
        );
    }
    if let Some(detail) = line(exec::MARK_NO_NODE) {
        return (
            detail,
            "install Node.js ≥ 24 on the host so that non-interactive shells find it (e.g. in /usr/local/bin)".into(),
        );
    }
    let detail = line(exec::MARK_NO_CLI).unwrap_or_else(|| stderr.trim().to_owned());
    (
        detail,
        format!(
            "on {host}, link it into a standard directory: `sudo ln -s \"$(command -v openclaw)\" /usr/local/bin/openclaw` \
             (run in an interactive shell there); or set cli_path (--cli-path) to its full path; or add its directory to \
             PATH in ~/.profile / ~/.zshenv, which non-interactive shells read"
        ),
    )
}

/// Through the tunnel, the gateway port on the host. A refusal there means the gateway is
/// not running (or listens on another port).
async fn gateway_port_layer(tunnel: &SshTunnel) -> LayerReport {
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
        let connected = match tokio::time::timeout(CHANNEL_LIMIT, tunnel.connect()).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => {
                return LayerReport::failed("gateway-port", started, e.message, e.fix, data)
            }
            Err(_) => {
                return LayerReport::failed(
                    "gateway-port",
                    started,
                    format!(
                        "ssh did not open the forward within {} s",
                        CHANNEL_LIMIT.as_secs()
                    ),
                    Some(not_running_fix),
                    data,
                )
            }
        };
        let mut stream = connected.stream;
        let mut byte = [0u8; 1];
        return match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => LayerReport::failed(
                "gateway-port",
                started,
                format!("ssh dropped the forwarded connection: nothing accepts connections on 127.0.0.1:{port} on {host}"),
                Some(not_running_fix),
                data,
            ),
            _ => LayerReport::ok("gateway-port", started, format!("{host} accepts connections on 127.0.0.1:{port} (through ssh -L)"), data),
        };
    }
    match tokio::time::timeout(CHANNEL_LIMIT, tunnel.open_forward(port)).await {
        Ok(Ok(channel)) => {
            let _ = channel.close().await;
            LayerReport::ok(
                "gateway-port",
                started,
                format!("{host} accepts connections on 127.0.0.1:{port} on its side"),
                data,
            )
        }
        Ok(Err(e))
            if e.kind == TransportErrorKind::Tunnel && e.message.contains("nothing listens") =>
        {
            LayerReport::failed(
                "gateway-port",
                started,
                format!(
                    "{}: the gateway is not running there, or listens on another port",
                    e.message
                ),
                Some(not_running_fix),
                data,
            )
        }
        Ok(Err(e)) => LayerReport::failed("gateway-port", started, e.message, e.fix, data),
        Err(_) => LayerReport::failed(
            "gateway-port",
            started,
            format!(
                "{host} did not open a channel to 127.0.0.1:{port} within {} s",
                CHANNEL_LIMIT.as_secs()
            ),
            Some(not_running_fix),
            data,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_list_is_well_formed_and_asks_for_the_local_port() {
        clawlink_core::transport::diagnosis::check_layer_names(LAYERS).unwrap();
        assert!(LAYERS.contains(&LOCAL_PORT_LAYER));
    }

    #[test]
    fn exit_127_is_explained_by_its_marker() {
        let (detail, fix) = explain_cli_not_found(
            &format!("{}: no directory /srv/claw\n", exec::MARK_NO_PROJECT),
            "h",
        );
        assert_eq!(detail, "no directory /srv/claw");
        assert!(fix.contains("project_root"));
        let (_, fix) = explain_cli_not_found("sh: openclaw: not found", "gw");
        assert!(fix.contains("on gw") && fix.contains("cli_path"));
    }
}
