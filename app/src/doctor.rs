//! `clawlink doctor`: walks the layers from config to health and names the first that fails.
//!
//! Layers, in order: config → dns → tcp → ssh-host-key → ssh-auth → remote-cli → local-port →
//! gateway-port → tls → websocket → protocol → auth → health; then `info` notes (what address
//! the gateway sees, where the credentials came from, the round trip). Layers that do not apply
//! to the profile's transport are `skipped` with an "n/a" reason, never failures; after the
//! first failure the remaining layers are `skipped` as "not checked". Every step has its own
//! time limit, so the doctor never hangs, and nothing it runs ever prompts.
//!
//! Each transport the build links has its own route through the layers from dns to tls
//! (`doctor/ssh.rs`, `doctor/direct.rs`, each compiled only with its transport); any other
//! transport is asked for a stream as a whole.
//!
//! Exit codes: 0 when every layer passed, 1 when one failed, 2 when the config layer failed.

#[cfg(feature = "transport-ws")]
mod direct;
#[cfg(feature = "transport-ssh")]
mod ports;
#[cfg(feature = "transport-ssh")]
mod ssh;
mod tap;
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
use clawlink_core::transport::{Connected, Transport};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::GlobalArgs;
use crate::connect::{self, SecretSources};
use crate::failure::Failure;
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
        // Details quote the gateway, the SSH host or whatever answered: see clawlink_core::text.
        crate::terminal::println_safe!("{mark} {:<14} {:>8}  {}", row.layer, ms, row.detail);
        if let Some(fix) = &row.fix {
            crate::terminal::println_safe!("  {:<14} {:>8}  fix: {fix}", "", "");
        }
    }
    if rows.iter().all(|r| r.status != Status::Failed) {
        println!("all layers ok");
    }
}

/// What the config layer produced.
struct Setup {
    route: Box<dyn Route>,
    options: ClientOptions,
    sources: SecretSources,
    data_dir: PathBuf,
}

/// How the doctor reaches the gateway over one kind of transport: the layers from dns to
/// tls, and what the gateway sees as this client's address. Layers a route does not have
/// are `skipped` with an "n/a" reason.
#[async_trait(?Send)]
trait Route {
    fn transport(&self) -> Arc<dyn Transport>;

    /// `~/.ssh/config` keywords the profile's SSH target resolution ignored.
    fn ignored_ssh_config(&self) -> Vec<String> {
        Vec::new()
    }

    /// Walks dns … tls; returns the stream it opened to the gateway when the websocket layer
    /// can reuse it.
    async fn walk_to_gateway(
        &self,
        walk: &mut Walk,
        settings: &Settings,
    ) -> Result<Option<Connected>, Stop>;

    fn note_client_address(&self, walk: &mut Walk);
}

/// A transport the doctor has no layers of its own for (a plugin's): it resolves and
/// connects by itself.
struct OtherRoute(Arc<dyn Transport>);

#[async_trait(?Send)]
impl Route for OtherRoute {
    fn transport(&self) -> Arc<dyn Transport> {
        self.0.clone()
    }

    async fn walk_to_gateway(
        &self,
        walk: &mut Walk,
        _settings: &Settings,
    ) -> Result<Option<Connected>, Stop> {
        let transport = &self.0;
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
        let connected = match tokio::time::timeout(CHANNEL_LIMIT, transport.connect()).await {
            Ok(Ok(connected)) => {
                walk.pass(
                    "gateway-port",
                    started,
                    format!("{} opened a stream to the gateway", transport.name()),
                    Value::Null,
                );
                connected
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
        };
        walk.not_applicable("tls", "handled by the transport");
        Ok(Some(connected))
    }

    fn note_client_address(&self, walk: &mut Walk) {
        walk.info(
            "client-address",
            format!(
                "the {} transport decides which address the gateway sees",
                self.0.name()
            ),
            Value::Null,
        );
    }
}

/// The route of the profile's transport: the transports this build links have their own
/// layers; any other is built through the registry (which names a transport this build lacks).
fn route(settings: &Settings) -> Result<Box<dyn Route>, Failure> {
    #[cfg(feature = "transport-ssh")]
    if settings.profile.transport_name() == clawlink_transport_ssh::NAME {
        return Ok(Box::new(ssh::SshRoute::configure(settings)?));
    }
    #[cfg(feature = "transport-ws")]
    if settings.profile.transport_name() == clawlink_transport_ws::NAME {
        return Ok(Box::new(direct::DirectRoute::configure(settings)?));
    }
    Ok(Box::new(OtherRoute(connect::build_transport(settings)?)))
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
    let ignored = setup.route.ignored_ssh_config();
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

    // A stream the websocket layer can reuse instead of opening its own.
    let ready_stream = setup.route.walk_to_gateway(walk, settings).await?;

    // The operator connection, tapped: on the healthy path it shows the websocket layer too,
    // and no second socket leaves the gateway before `connect` (which it logs as a warning).
    let tapped = Arc::new(tap::TapTransport::new(transport.clone()));
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        HELLO_LIMIT + Duration::from_secs(5),
        GatewayClient::connect(tapped.clone(), setup.options.clone()),
    )
    .await;
    match tapped.challenge() {
        Some(challenge) => {
            drop(ready_stream);
            let url = tapped.request_url().unwrap_or_else(|| transport.describe());
            let took = challenge.upgrade_ms + challenge.challenge_ms;
            pass_websocket(walk, took, &url, &challenge);
        }
        // Something is wrong at or below the WebSocket: the bare probe says what.
        None => websocket_layer(walk, &transport, ready_stream).await?,
    }
    let (client, connect_ms) = handshake_layers(walk, &setup, &transport, started, outcome).await?;
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
    let route = route(settings)?;
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
// The direct route only tells the cases apart; the SSH route also reads the stream (for the
// server's banner) and the refusals, so without it their fields are never read.
#[cfg_attr(not(feature = "transport-ssh"), allow(dead_code))]
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
            pass_websocket(walk, ms(started), &url, &challenge);
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

/// The websocket layer passed; `took` is how long the check took, in ms.
fn pass_websocket(walk: &mut Walk, took: u64, url: &str, challenge: &ws_probe::Challenge) {
    walk.push(
        "websocket",
        Status::Ok,
        Some(took),
        format!(
            "upgrade of {url} accepted in {} ms · connect.challenge after {} ms",
            challenge.upgrade_ms, challenge.challenge_ms
        ),
        None,
        json!({
            "url": url,
            "upgradeMs": challenge.upgrade_ms,
            "challengeMs": challenge.challenge_ms,
            "clockOffsetMs": challenge.clock_offset_ms,
            "capabilities": challenge.capabilities,
        }),
    );
}

/// The protocol and auth layers: one real connect as the operator.
async fn handshake_layers(
    walk: &mut Walk,
    setup: &Setup,
    transport: &Arc<dyn Transport>,
    started: Instant,
    outcome: Result<Result<GatewayClient, GatewayError>, tokio::time::error::Elapsed>,
) -> Result<(GatewayClient, u64), Stop> {
    let source = credential_source(setup, transport);
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
            parts.push(crate::human::count(errors.len() as u64, "plugin error"));
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
    setup.route.note_client_address(walk);
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
}
