//! `clawlink doctor`: walks the layers from config to health and names the first that fails.
//!
//! Layers, in order: config → dns → tcp → ssh-host-key → ssh-auth → remote-cli → local-port →
//! gateway-port → tls → websocket → protocol → auth → health; then `info` notes (what address
//! the gateway sees, where the credentials came from, the round trip). Layers that do not apply
//! to the profile's transport are `skipped` with an "n/a" reason, never failures; after the
//! first failure the remaining layers are `skipped` as "not checked". Every step has its own
//! time limit, so the doctor never hangs, and nothing it runs ever prompts.
//!
//! Exit codes: 0 when every layer passed, 1 when one failed, 2 when the config layer failed.

mod ports;
mod ws_probe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use async_trait::async_trait;
use clawlink_core::gateway::auth::device_token_key;
use clawlink_core::gateway::protocol::PROTOCOL_VERSION;
use clawlink_core::gateway::{ClientOptions, GatewayClient, GatewayError};
use clawlink_core::prompt::{Confirmation, Prompter};
use clawlink_core::transport::{Connected, Transport, TransportError, TransportErrorKind};
use clawlink_transport_ssh::sshconfig::Resolved;
use clawlink_transport_ssh::SshTunnel;
use clawlink_transport_ws::{DirectWs, GatewayUrl};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::cli::GlobalArgs;
use crate::connect::{self, SecretSources};
use crate::failure::Failure;
use crate::remote;
use crate::settings::Settings;
use crate::state;

/// Every layer, in the order they are checked.
const LAYERS: [&str; 13] = [
    "config",
    "dns",
    "tcp",
    "ssh-host-key",
    "ssh-auth",
    "remote-cli",
    "local-port",
    "gateway-port",
    "tls",
    "websocket",
    "protocol",
    "auth",
    "health",
];

/// Time limits per step: generous for a slow link, short enough that a dead one is named
/// within a minute.
const DNS_LIMIT: Duration = Duration::from_secs(5);
const TCP_LIMIT: Duration = Duration::from_secs(10);
const SSH_LIMIT: Duration = Duration::from_secs(45);
const REMOTE_CLI_LIMIT: Duration = Duration::from_secs(40);
const CHANNEL_LIMIT: Duration = Duration::from_secs(15);
const HTTP_ANSWER_LIMIT: Duration = Duration::from_secs(10);
const HELLO_LIMIT: Duration = Duration::from_secs(20);
const HEALTH_LIMIT: Duration = Duration::from_secs(20);
const CLOSE_LIMIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Failed,
    Skipped,
    Info,
}

/// One line of the report.
#[derive(Debug, Serialize)]
struct Row {
    layer: &'static str,
    status: Status,
    /// How long the check took; null when nothing was measured.
    ms: Option<u64>,
    detail: String,
    fix: Option<String>,
    data: Value,
}

/// The report being written, layer by layer.
#[derive(Default)]
struct Walk {
    rows: Vec<Row>,
}

impl Walk {
    fn push(
        &mut self,
        layer: &'static str,
        status: Status,
        ms: Option<u64>,
        detail: String,
        fix: Option<String>,
        data: Value,
    ) {
        self.rows.push(Row {
            layer,
            status,
            ms,
            detail,
            fix,
            data,
        });
    }

    fn pass(&mut self, layer: &'static str, started: Instant, detail: String, data: Value) {
        self.push(layer, Status::Ok, Some(ms(started)), detail, None, data);
    }

    /// Records the failure; the caller stops the walk.
    fn fail(
        &mut self,
        layer: &'static str,
        started: Instant,
        detail: String,
        fix: Option<String>,
        data: Value,
    ) -> Stop {
        self.push(layer, Status::Failed, Some(ms(started)), detail, fix, data);
        Stop
    }

    fn not_applicable(&mut self, layer: &'static str, why: &str) {
        self.push(
            layer,
            Status::Skipped,
            None,
            format!("n/a: {why}"),
            None,
            Value::Null,
        );
    }

    fn info(&mut self, layer: &'static str, detail: String, data: Value) {
        self.push(layer, Status::Info, None, detail, None, data);
    }

    fn failed(&self) -> Option<&Row> {
        self.rows.iter().find(|r| r.status == Status::Failed)
    }

    /// Lists the layers the walk did not reach as skipped, after the failure.
    fn finish(&mut self) {
        let failed = self.failed().map(|r| r.layer);
        let Some(failed) = failed else { return };
        let info_at = self
            .rows
            .iter()
            .position(|r| r.status == Status::Info)
            .unwrap_or(self.rows.len());
        let mut missing: Vec<Row> = LAYERS
            .iter()
            .filter(|name| !self.rows.iter().any(|r| r.layer == **name))
            .map(|name| Row {
                layer: name,
                status: Status::Skipped,
                ms: None,
                detail: format!("not checked: {failed} failed"),
                fix: None,
                data: Value::Null,
            })
            .collect();
        let tail = self.rows.split_off(info_at);
        self.rows.append(&mut missing);
        self.rows.extend(tail);
    }
}

/// The walk stopped at a failed layer (already recorded).
struct Stop;

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// `clawlink doctor`.
pub async fn run(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let mut walk = Walk::default();
    let _ = diagnose(global, settings, &mut walk).await;
    walk.finish();
    let failed = walk
        .failed()
        .map(|r| (r.layer, r.detail.clone(), r.fix.clone()));
    if global.json {
        println!(
            "{}",
            json!({
                "ok": failed.is_none(),
                "failedLayer": failed.as_ref().map(|f| f.0),
                "layers": walk.rows,
            })
        );
    } else {
        print_text(&walk.rows);
    }
    match failed {
        None => Ok(()),
        Some((layer, detail, fix)) => Err(Failure {
            layer: layer.to_owned(),
            message: detail,
            fix,
            exit_code: if layer == "config" { 2 } else { 1 },
            // The report above is the JSON output.
            json: Value::Null,
        }
        .into()),
    }
}

fn print_text(rows: &[Row]) {
    for row in rows {
        let mark = match row.status {
            Status::Ok => "✓",
            Status::Failed => "✗",
            Status::Skipped => "-",
            Status::Info => "i",
        };
        let ms = row.ms.map(|m| format!("{m} ms")).unwrap_or_default();
        println!("{mark} {:<14} {:>8}  {}", row.layer, ms, row.detail);
        if let Some(fix) = &row.fix {
            println!("  {:<14} {:>8}  fix: {fix}", "", "");
        }
    }
    if rows.iter().all(|r| r.status != Status::Failed) {
        println!("all layers ok");
    }
}

/// What the config layer produced.
struct Setup {
    route: Route,
    options: ClientOptions,
    sources: SecretSources,
    data_dir: PathBuf,
}

enum Route {
    Ssh {
        tunnel: Arc<SshTunnel>,
        resolved: Box<Resolved>,
        first_hop: Option<Box<Resolved>>,
    },
    Direct {
        url: GatewayUrl,
        transport: Arc<DirectWs>,
        trust: &'static str,
    },
    Other(Arc<dyn Transport>),
}

impl Route {
    fn transport(&self) -> Arc<dyn Transport> {
        match self {
            Route::Ssh { tunnel, .. } => tunnel.clone(),
            Route::Direct { transport, .. } => transport.clone(),
            Route::Other(transport) => transport.clone(),
        }
    }
}

async fn diagnose(global: &GlobalArgs, settings: &Settings, walk: &mut Walk) -> Result<(), Stop> {
    let started = Instant::now();
    let setup = match configure(global, settings).await {
        Ok(setup) => setup,
        Err(failure) => {
            return Err(walk.fail(
                "config",
                started,
                failure.message,
                failure.fix,
                json!({"profile": settings.profile_name, "files": settings.files}),
            ))
        }
    };
    let transport = setup.route.transport();
    let mut ignored = Vec::new();
    if let Route::Ssh { resolved, .. } = &setup.route {
        ignored = resolved.ignored.clone();
    }
    walk.pass(
        "config",
        started,
        format!(
            "profile {} · {} → {}{}",
            settings.profile_name,
            transport.name(),
            transport.describe(),
            if ignored.is_empty() {
                String::new()
            } else {
                format!(" · ~/.ssh/config keywords ignored: {}", ignored.join(", "))
            }
        ),
        json!({
            "profile": settings.profile_name,
            "transport": transport.name(),
            "gateway": transport.describe(),
            "files": settings.files,
            "ignoredSshConfig": ignored,
        }),
    );

    // Connections the later layers can reuse instead of opening their own.
    let mut ready_stream: Option<Connected> = None;
    match &setup.route {
        Route::Ssh {
            tunnel,
            resolved,
            first_hop,
        } => {
            let (host, port, via) = match first_hop {
                Some(hop) => (hop.host_name.clone(), hop.port, Some(hop.alias.clone())),
                None => (resolved.host_name.clone(), resolved.port, None),
            };
            let what = match &via {
                Some(alias) => format!("the ProxyJump host {alias}"),
                None => "the SSH host".to_owned(),
            };
            let addrs = dns_layer(walk, &host, port, &what).await?;
            ssh_tcp_layer(walk, &addrs, &host, port, &what).await?;
            ssh_session_layers(walk, tunnel).await?;
            remote_cli_layer(walk, tunnel).await?;
            local_port_layer(walk, settings, tunnel)?;
            gateway_port_over_ssh(walk, tunnel).await?;
            walk.not_applicable(
                "tls",
                "SSH encrypts the tunnel; the gateway port on the host speaks plain ws://",
            );
        }
        Route::Direct {
            url,
            transport,
            trust,
        } => {
            let addrs = dns_layer(walk, &url.host, url.port, "the gateway host").await?;
            direct_tcp_layers(walk, &addrs, url).await?;
            if url.tls {
                ready_stream = Some(tls_layer(walk, url, transport, trust).await?);
            } else {
                walk.not_applicable(
                    "tls",
                    "ws:// is plaintext (accepted for loopback, private and tailnet hosts only)",
                );
            }
        }
        Route::Other(transport) => {
            let why = format!(
                "the {} transport resolves and connects by itself",
                transport.name()
            );
            walk.not_applicable("dns", &why);
            walk.not_applicable("tcp", &why);
            for layer in ["ssh-host-key", "ssh-auth", "remote-cli", "local-port"] {
                walk.not_applicable(layer, "not an SSH transport");
            }
            let started = Instant::now();
            match tokio::time::timeout(CHANNEL_LIMIT, transport.connect()).await {
                Ok(Ok(connected)) => {
                    walk.pass(
                        "gateway-port",
                        started,
                        format!("{} opened a stream to the gateway", transport.name()),
                        Value::Null,
                    );
                    ready_stream = Some(connected);
                }
                Ok(Err(e)) => {
                    return Err(walk.fail("gateway-port", started, e.message, e.fix, Value::Null))
                }
                Err(_) => {
                    return Err(walk.fail(
                        "gateway-port",
                        started,
                        format!(
                            "{} did not open a stream within {} s",
                            transport.name(),
                            CHANNEL_LIMIT.as_secs()
                        ),
                        None,
                        Value::Null,
                    ))
                }
            }
            walk.not_applicable("tls", "handled by the transport");
        }
    }

    websocket_layer(walk, &transport, ready_stream).await?;
    let (client, connect_ms) = handshake_layers(walk, &setup, &transport).await?;
    let outcome = health_layer(walk, &client).await;
    // Closing is best effort: a peer that stopped answering must not hold the report back.
    let _ = tokio::time::timeout(CLOSE_LIMIT, client.shutdown()).await;
    let _ = tokio::time::timeout(CLOSE_LIMIT, transport.close()).await;
    let health_ms = outcome?;
    notes(walk, &setup, connect_ms, health_ms);
    Ok(())
}

/// The config layer: the transport's settings, the credentials and the device state all load.
async fn configure(global: &GlobalArgs, settings: &Settings) -> Result<Setup, Failure> {
    let name = settings.profile.transport_name();
    let route = if name == clawlink_transport_ssh::NAME {
        let raw = settings.profile.transport_settings(name);
        let parsed = SshTunnel::parse_settings(&raw)?;
        let tunnel = Arc::new(SshTunnel::new(
            parsed,
            Arc::new(DoctorPrompter::from_environment()),
        )?);
        let (resolved, hops) = tunnel.resolve()?;
        Route::Ssh {
            tunnel,
            resolved: Box::new(resolved),
            first_hop: hops.into_iter().next().map(Box::new),
        }
    } else if name == clawlink_transport_ws::NAME {
        let raw = settings.profile.transport_settings(name);
        let parsed = DirectWs::parse_settings(&raw)?;
        let url = GatewayUrl::parse(&parsed.url)?;
        DirectWs::check_url_policy(&url, &parsed)?;
        let trust = match (
            &parsed.tls.spki_sha256,
            &parsed.tls.fingerprint,
            &parsed.tls.ca_file,
        ) {
            (Some(_), _, _) => "public-key pin (tls.spki_sha256)",
            (_, Some(_), _) => "certificate pin (tls.fingerprint)",
            (_, _, Some(_)) => "private CA (tls.ca_file)",
            _ => "public and system roots",
        };
        let timeout = Duration::from_millis(parsed.connect_timeout_ms).min(TCP_LIMIT);
        Route::Direct {
            transport: Arc::new(DirectWs::with_tls(url.clone(), timeout, &parsed.tls)?),
            url,
            trust,
        }
    } else {
        Route::Other(connect::build_transport(settings)?)
    };
    let (_, sources) = connect::credentials(global, settings).await?;
    let mut options = connect::operator_options(global, settings).await?;
    // The doctor must answer within its step limits, whatever the profile allows.
    options.connect_timeout = options.connect_timeout.min(HELLO_LIMIT);
    options.request_timeout = options.request_timeout.min(HEALTH_LIMIT);
    Ok(Setup {
        route,
        options,
        sources,
        data_dir: state::data_dir()?,
    })
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

async fn dns_layer(
    walk: &mut Walk,
    host: &str,
    port: u16,
    what: &str,
) -> Result<Vec<SocketAddr>, Stop> {
    let started = Instant::now();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        walk.pass(
            "dns",
            started,
            format!("{what} {host} is an IP address: nothing to resolve"),
            json!({"host": host, "addresses": [ip.to_string()]}),
        );
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = tokio::time::timeout(DNS_LIMIT, tokio::net::lookup_host((host, port)))
        .await
        .map(|r| r.map(|addrs| addrs.collect::<Vec<_>>()));
    let fix = if what.contains("gateway") {
        "check the host name in the gateway URL and this machine's DNS (/etc/resolv.conf, VPN or tailnet MagicDNS)".to_owned()
    } else {
        "check the host name in the SSH target (or HostName in ~/.ssh/config) and this machine's DNS (/etc/resolv.conf, VPN or tailnet MagicDNS)".to_owned()
    };
    match lookup {
        Err(_) => Err(walk.fail(
            "dns",
            started,
            format!(
                "resolving {what} {host} took more than {} s",
                DNS_LIMIT.as_secs()
            ),
            Some(fix),
            json!({"host": host}),
        )),
        Ok(Err(e)) => Err(walk.fail(
            "dns",
            started,
            format!("cannot resolve {what} {host}: {e}"),
            Some(fix),
            json!({"host": host}),
        )),
        Ok(Ok(addrs)) if addrs.is_empty() => Err(walk.fail(
            "dns",
            started,
            format!("{what} {host} resolves to no address"),
            Some(fix),
            json!({"host": host}),
        )),
        Ok(Ok(addrs)) => {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            walk.pass(
                "dns",
                started,
                format!("{what} {host} → {}", list.join(", ")),
                json!({"host": host, "addresses": list}),
            );
            Ok(addrs)
        }
    }
}

/// How a TCP connect to a list of addresses went.
enum TcpOutcome {
    Connected(tokio::net::TcpStream, SocketAddr),
    /// Every address answered with a refusal: the host is up, nothing listens on the port.
    Refused(Vec<String>),
    /// No answer, or the network said no route.
    Unreachable(Vec<String>),
}

async fn tcp_connect(addrs: &[SocketAddr]) -> TcpOutcome {
    let mut refused = Vec::new();
    let mut other = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(TCP_LIMIT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return TcpOutcome::Connected(stream, *addr),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused.push(format!("{addr}: {e}"))
            }
            Ok(Err(e)) => other.push(format!("{addr}: {e}")),
            Err(_) => other.push(format!(
                "{addr}: no answer within {} s",
                TCP_LIMIT.as_secs()
            )),
        }
    }
    if other.is_empty() {
        TcpOutcome::Refused(refused)
    } else {
        other.extend(refused);
        TcpOutcome::Unreachable(other)
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

fn local_port_layer(walk: &mut Walk, settings: &Settings, tunnel: &SshTunnel) -> Result<(), Stop> {
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

/// Direct URLs: the TCP connect goes to the gateway port itself, so a refusal names the
/// gateway-port layer (the host answered; nothing listens) and silence names tcp.
async fn direct_tcp_layers(
    walk: &mut Walk,
    addrs: &[SocketAddr],
    url: &GatewayUrl,
) -> Result<(), Stop> {
    let started = Instant::now();
    let outcome = tcp_connect(addrs).await;
    let data = json!({"host": url.host, "port": url.port});
    let connected = match outcome {
        TcpOutcome::Connected(_, addr) => {
            walk.pass("tcp", started, format!("connected to {addr}"), json!({"address": addr.to_string()}));
            true
        }
        TcpOutcome::Refused(_) => {
            walk.pass(
                "tcp",
                started,
                format!("{} is reachable (it answered with a refusal)", url.host),
                data.clone(),
            );
            false
        }
        TcpOutcome::Unreachable(errors) => {
            return Err(walk.fail(
                "tcp",
                started,
                format!("cannot reach {}: {}", url.authority(), errors.join("; ")),
                Some("the host is down or unreachable from here, or a firewall drops the port: check the address, the VPN or tailnet, and gateway.bind on the gateway".into()),
                data,
            ))
        }
    };
    for layer in ["ssh-host-key", "ssh-auth", "remote-cli", "local-port"] {
        walk.not_applicable(layer, "direct transport, no SSH");
    }
    if connected {
        walk.pass(
            "gateway-port",
            started,
            format!("something listens on {}", url.authority()),
            data,
        );
        return Ok(());
    }
    let fix = if url.is_loopback() {
        format!(
            "start the gateway on this machine (`openclaw gateway run`; `openclaw gateway status` shows its port) or fix the port in the URL (now {})",
            url.port
        )
    } else {
        format!(
            "on {}, `openclaw gateway status` shows whether the gateway runs and on which port and address (gateway.bind must not be loopback-only for direct access); fix the URL's port (now {}) to match",
            url.host, url.port
        )
    };
    Err(walk.fail(
        "gateway-port",
        started,
        format!("{} refused the connection: nothing listens on port {} (the gateway is not running there, or listens on another port)", url.host, url.port),
        Some(fix),
        data,
    ))
}

async fn tls_layer(
    walk: &mut Walk,
    url: &GatewayUrl,
    transport: &Arc<DirectWs>,
    trust: &str,
) -> Result<Connected, Stop> {
    let started = Instant::now();
    match tokio::time::timeout(CHANNEL_LIMIT, transport.connect()).await {
        Ok(Ok(connected)) => {
            let seen = tokio::time::timeout(CHANNEL_LIMIT, transport.probe_certificate())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|f| f.describe());
            walk.pass(
                "tls",
                started,
                format!(
                    "certificate of {} trusted by the {trust}{}",
                    url.authority(),
                    seen.as_ref().map(|s| format!(" · {s}")).unwrap_or_default()
                ),
                json!({"trustedBy": trust, "certificate": seen}),
            );
            Ok(connected)
        }
        Ok(Err(e)) => Err(walk.fail(
            "tls",
            started,
            e.message,
            e.fix,
            json!({"trustedBy": trust}),
        )),
        Err(_) => Err(walk.fail(
            "tls",
            started,
            format!(
                "the TLS handshake with {} did not finish within {} s",
                url.authority(),
                CHANNEL_LIMIT.as_secs()
            ),
            Some("check that the port serves TLS (a ws:// gateway does not)".into()),
            Value::Null,
        )),
    }
}

/// The HTTP upgrade and the `connect.challenge`, on a fresh stream (or the TLS layer's).
async fn websocket_layer(
    walk: &mut Walk,
    transport: &Arc<dyn Transport>,
    ready: Option<Connected>,
) -> Result<(), Stop> {
    let started = Instant::now();
    let connected = match ready {
        Some(connected) => connected,
        None => match tokio::time::timeout(CHANNEL_LIMIT, transport.connect()).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => {
                return Err(walk.fail("websocket", started, e.message, e.fix, Value::Null))
            }
            Err(_) => {
                return Err(walk.fail(
                    "websocket",
                    started,
                    format!(
                        "no stream to the gateway within {} s",
                        CHANNEL_LIMIT.as_secs()
                    ),
                    None,
                    Value::Null,
                ))
            }
        },
    };
    let url = connected.request_url.clone();
    match ws_probe::probe(connected.stream, &url, HTTP_ANSWER_LIMIT).await {
        Ok(challenge) => {
            walk.pass(
                "websocket",
                started,
                format!(
                    "upgrade of {url} accepted in {} ms · connect.challenge after {} ms",
                    challenge.upgrade_ms, challenge.challenge_ms
                ),
                json!({
                    "url": url,
                    "upgradeMs": challenge.upgrade_ms,
                    "challengeMs": challenge.challenge_ms,
                    "clockOffsetMs": challenge.clock_offset_ms,
                    "capabilities": challenge.capabilities,
                }),
            );
            Ok(())
        }
        Err(failure) => Err(walk.fail(
            "websocket",
            started,
            failure.detail,
            Some(failure.fix),
            failure.data,
        )),
    }
}

/// The protocol and auth layers: one real connect as the operator.
async fn handshake_layers(
    walk: &mut Walk,
    setup: &Setup,
    transport: &Arc<dyn Transport>,
) -> Result<(GatewayClient, u64), Stop> {
    let started = Instant::now();
    let source = credential_source(setup, transport);
    let outcome = tokio::time::timeout(
        HELLO_LIMIT + Duration::from_secs(5),
        GatewayClient::connect(transport.clone(), setup.options.clone()),
    )
    .await;
    let protocol_accepted = |walk: &mut Walk| {
        walk.pass(
            "protocol",
            started,
            format!("protocol {PROTOCOL_VERSION} accepted (the gateway checks the version before the credentials)"),
            json!({"protocol": PROTOCOL_VERSION}),
        )
    };
    let error = match outcome {
        Ok(Ok(client)) => {
            let connect_ms = ms(started);
            // `connect` returns as hello-ok arrives; the state holding it may lag a moment.
            let hello = match client.wait_connected(CLOSE_LIMIT).await {
                Ok(hello) => hello,
                Err(e) => {
                    let failure = Failure::from(e);
                    return Err(walk.fail(
                        "protocol",
                        started,
                        format!("the connection dropped right after hello-ok: {}", failure.message),
                        failure.fix,
                        failure.json,
                    ));
                }
            };
            walk.pass(
                "protocol",
                started,
                format!(
                    "protocol {} (gateway openclaw {}; clawlink speaks {PROTOCOL_VERSION})",
                    hello.protocol, hello.server.version
                ),
                json!({"protocol": hello.protocol, "server": hello.server.version}),
            );
            let method = hello.auth.method.clone().unwrap_or_else(|| "?".into());
            walk.push(
                "auth",
                Status::Ok,
                None,
                format!(
                    "authenticated as {} with {method} ({source}){}",
                    hello.auth.role,
                    if hello.auth.device_token.is_some() { " · device paired" } else { "" }
                ),
                None,
                json!({"method": method, "role": hello.auth.role, "scopes": hello.auth.scopes, "paired": hello.auth.device_token.is_some(), "credentialSource": source}),
            );
            return Ok((client, connect_ms));
        }
        Ok(Err(error)) => error,
        Err(_) => {
            return Err(walk.fail(
                "protocol",
                started,
                format!("no hello-ok from the gateway within {} s", (HELLO_LIMIT + Duration::from_secs(5)).as_secs()),
                Some("the gateway accepted the socket but did not finish the handshake: look at its log (`openclaw logs`) on the host".into()),
                Value::Null,
            ))
        }
    };
    match error {
        GatewayError::Protocol { message, .. } => {
            let theirs = gateway_protocol(&message);
            Err(walk.fail(
                "protocol",
                started,
                format!(
                    "{message}; gateway protocol {}, clawlink protocol {PROTOCOL_VERSION}",
                    theirs
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "unknown".into())
                ),
                Some(protocol_fix(theirs)),
                json!({"gatewayProtocol": theirs, "clawlinkProtocol": PROTOCOL_VERSION}),
            ))
        }
        GatewayError::Auth { code, message, fix } => {
            protocol_accepted(walk);
            Err(walk.fail(
                "auth",
                started,
                format!("{code}: {message} · credentials: {source}"),
                Some(fix),
                json!({"code": code, "credentialSource": source}),
            ))
        }
        GatewayError::Pairing {
            request_id,
            message,
            fix,
        } => {
            protocol_accepted(walk);
            Err(walk.fail(
                "auth",
                started,
                format!("PAIRING_REQUIRED: {message} · credentials: {source}"),
                Some(fix),
                json!({"code": "PAIRING_REQUIRED", "requestId": request_id, "credentialSource": source}),
            ))
        }
        other => {
            let failure = Failure::from(other);
            Err(walk.fail(
                "protocol",
                started,
                format!(
                    "the gateway did not complete the handshake: {}: {}",
                    failure.layer, failure.message
                ),
                failure.fix,
                failure.json,
            ))
        }
    }
}

/// The gateway's protocol version named in a protocol error ("… protocol 5 …").
fn gateway_protocol(message: &str) -> Option<u32> {
    message.match_indices("protocol ").find_map(|(i, m)| {
        let digits: String = message[i + m.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok().filter(|v| *v != PROTOCOL_VERSION)
    })
}

fn protocol_fix(theirs: Option<u32>) -> String {
    match theirs {
        Some(v) if v > PROTOCOL_VERSION => format!(
            "the gateway is newer (protocol {v}): update clawlink to a release that speaks protocol {v}"
        ),
        Some(v) => format!(
            "the gateway is older (protocol {v}): update openclaw on the gateway host (`npm install -g openclaw@latest`, then restart the gateway) to a release that speaks protocol {PROTOCOL_VERSION}"
        ),
        None => "update clawlink or the gateway so both speak the same protocol version".into(),
    }
}

/// Where the credentials of this connection come from (never their value).
fn credential_source(setup: &Setup, transport: &Arc<dyn Transport>) -> String {
    let SecretSources { token, password } = &setup.sources;
    let key = device_token_key(
        &transport.gateway_key(),
        setup.options.identity.id(),
        &setup.options.role,
    );
    let stored = setup.options.device_tokens.load(&key).is_some();
    let device = if stored {
        format!(
            "a device token stored in {}",
            setup.data_dir.join("device-tokens.json").display()
        )
    } else {
        "no stored device token yet".into()
    };
    match (token, password) {
        (Some(t), _) => format!("token from {t}; {device}"),
        (_, Some(p)) => format!("password from {p}; {device}"),
        (None, None) if stored => format!("no shared secret configured; {device}"),
        (None, None) => "no token, no password and no stored device token".into(),
    }
}

async fn health_layer(walk: &mut Walk, client: &GatewayClient) -> Result<u64, Stop> {
    let started = Instant::now();
    match tokio::time::timeout(HEALTH_LIMIT, client.request("health", Value::Null)).await {
        Ok(Ok(health)) => {
            let round_trip = ms(started);
            match judge_health(&health) {
                Ok(summary) => {
                    walk.pass(
                        "health",
                        started,
                        format!("ok · {summary}"),
                        health_data(&health),
                    );
                    Ok(round_trip)
                }
                Err((summary, fix)) => Err(walk.fail(
                    "health",
                    started,
                    format!("the gateway answers but is not healthy: {summary}"),
                    Some(fix),
                    health_data(&health),
                )),
            }
        }
        Ok(Err(e)) => {
            let failure = Failure::from(e);
            Err(walk.fail(
                "health",
                started,
                failure.message,
                failure.fix.or(Some(HEALTH_FIX.into())),
                failure.json,
            ))
        }
        Err(_) => Err(walk.fail(
            "health",
            started,
            format!("no answer to health within {} s", HEALTH_LIMIT.as_secs()),
            Some(HEALTH_FIX.into()),
            Value::Null,
        )),
    }
}

const HEALTH_FIX: &str = "on the gateway host, `openclaw status --json` shows what is unhealthy (SSH reachability, PATH, and whether channels such as WhatsApp/Baileys are connected); `openclaw logs` shows why";

/// The health verdict: `Ok(summary)`, or `Err((summary, fix))` when the snapshot says
/// something needs doing. The health plugin's model gives the app's words; an event-loop
/// blip alone is reported but does not fail the walk.
#[cfg(feature = "feature-health")]
fn judge_health(health: &Value) -> Result<String, (String, String)> {
    use clawlink_feature_health::model::{self, ChannelState, HealthState};
    let assessment = model::assess(health);
    let channel_trouble = assessment
        .channels
        .iter()
        .any(|c| matches!(c.state, ChannelState::Degraded | ChannelState::NotLinked));
    let mut summary = match &assessment.detail {
        Some(detail) if !assessment.summary.contains(detail.as_str()) => {
            format!("{} ({detail})", assessment.summary)
        }
        _ => assessment.summary.clone(),
    };
    let extra = summarize_health(health);
    if !extra.is_empty() {
        summary = format!("{summary} · {extra}");
    }
    let failing = health["ok"] != true
        || assessment.state == HealthState::LinkingNeeded
        || (assessment.state == HealthState::Degraded && channel_trouble);
    if !failing {
        return Ok(summary);
    }
    let fix = if assessment.state == HealthState::LinkingNeeded {
        format!(
            "link the channel on the gateway host: `{}` (or `clawlink channels login` from here); then {HEALTH_FIX}",
            model::LINK_COMMAND
        )
    } else {
        HEALTH_FIX.to_owned()
    };
    Err((summary, fix))
}

#[cfg(not(feature = "feature-health"))]
fn judge_health(health: &Value) -> Result<String, (String, String)> {
    let summary = summarize_health(health);
    if health["ok"] == true {
        Ok(summary)
    } else {
        Err((format!("ok: false · {summary}"), HEALTH_FIX.to_owned()))
    }
}

fn summarize_health(health: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(agents) = health["agents"].as_array() {
        parts.push(format!(
            "{} agent{}",
            agents.len(),
            if agents.len() == 1 { "" } else { "s" }
        ));
    }
    if let Some(channels) = health["channels"].as_object() {
        if channels.is_empty() {
            parts.push("no channels".into());
        }
        for (name, channel) in channels {
            let state = match (channel["connected"].as_bool(), channel["linked"].as_bool()) {
                (Some(true), _) => "connected",
                (Some(false), Some(true)) => "linked, NOT connected",
                (Some(false), _) => "NOT connected",
                (None, Some(false)) => "not linked",
                _ => "configured",
            };
            parts.push(format!("{name} {state}"));
        }
    }
    if health.pointer("/eventLoop/degraded") == Some(&Value::Bool(true)) {
        parts.push("event loop degraded".into());
    }
    if let Some(errors) = health.pointer("/plugins/errors").and_then(Value::as_array) {
        if !errors.is_empty() {
            parts.push(format!("{} plugin error(s)", errors.len()));
        }
    }
    parts.join(" · ")
}

fn health_data(health: &Value) -> Value {
    json!({
        "ok": health["ok"],
        "agents": health["agents"].as_array().map(Vec::len),
        "channels": health["channels"].as_object().map(|c| c.keys().cloned().collect::<Vec<_>>()),
        "eventLoopDegraded": health.pointer("/eventLoop/degraded"),
    })
}

/// What a healthy connection still needs explaining.
fn notes(walk: &mut Walk, setup: &Setup, connect_ms: u64, health_ms: u64) {
    match &setup.route {
        Route::Ssh { .. } => walk.info(
            "client-address",
            "the gateway sees this client (and anything through the tunnel) as 127.0.0.1 — expected with SSH (a node's IP shows 127.0.0.1); use the direct transport (--url ws://… or wss://…) if the gateway must see the real client IP".into(),
            json!({"seenAs": "127.0.0.1", "transport": "ssh-tunnel"}),
        ),
        Route::Direct { url, .. } if url.is_loopback() => walk.info(
            "client-address",
            "local mode: the gateway sees this machine as 127.0.0.1".into(),
            json!({"seenAs": "127.0.0.1", "transport": "direct-ws"}),
        ),
        Route::Direct { .. } => walk.info(
            "client-address",
            "direct transport: the gateway sees this machine's real address".into(),
            json!({"seenAs": "client address", "transport": "direct-ws"}),
        ),
        Route::Other(transport) => walk.info(
            "client-address",
            format!("the {} transport decides which address the gateway sees", transport.name()),
            Value::Null,
        ),
    }
    let source = credential_source(setup, &setup.route.transport());
    walk.info("credentials", source.clone(), json!({"source": source}));
    walk.info(
        "latency",
        format!("health round trip {health_ms} ms (handshake {connect_ms} ms)"),
        json!({"pingMs": health_ms, "handshakeMs": connect_ms}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_protocol_is_read_from_either_error() {
        assert_eq!(
            gateway_protocol("protocol mismatch (gateway speaks protocol 5, clawlink speaks 4)"),
            Some(5)
        );
        assert_eq!(
            gateway_protocol("the gateway answered with protocol 3 (clawlink speaks 4)"),
            Some(3)
        );
        assert_eq!(
            gateway_protocol(
                "protocol mismatch (gateway speaks protocol another version, clawlink speaks 4)"
            ),
            None
        );
        assert!(protocol_fix(Some(5)).contains("update clawlink"));
        assert!(protocol_fix(Some(3)).contains("update openclaw on the gateway host"));
    }

    #[test]
    fn skipped_layers_follow_the_failure_and_precede_the_notes() {
        let mut walk = Walk::default();
        let started = Instant::now();
        walk.pass("config", started, "ok".into(), Value::Null);
        let _ = walk.fail(
            "dns",
            started,
            "nope".into(),
            Some("fix it".into()),
            Value::Null,
        );
        walk.finish();
        let names: Vec<&str> = walk.rows.iter().map(|r| r.layer).collect();
        assert_eq!(names, LAYERS);
        assert!(walk.rows[2..]
            .iter()
            .all(|r| r.status == Status::Skipped && r.detail == "not checked: dns failed"));
    }

    #[test]
    fn holders_are_named_with_pid() {
        let holders = vec![ports::Holder {
            pid: 42,
            comm: "node".into(),
        }];
        assert_eq!(describe_holders(&holders, &[]), "held by node (pid 42)");
        assert!(describe_holders(&[], &[0]).contains("another user"));
    }
}
