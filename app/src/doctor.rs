//! `clawlink doctor`: walks the layers from config to health and names the first that fails.
//!
//! The report lists, in order: config → the transport's own layers → websocket → protocol →
//! auth → health; then `info` notes (what address the gateway sees, where the credentials
//! came from, the round trip). A transport that offers the `Diagnosis` capability reports its
//! layers itself (ssh-tunnel: dns → tcp → ssh-host-key → ssh-auth → remote-cli → local-port →
//! gateway-port → tls; direct-ws: dns → tcp → gateway-port → tls), and asks the doctor for
//! the generic local-port check where its forwards would listen; any other transport is
//! asked for a stream as a whole (its gateway-port layer). The report always lists the
//! layers of its documented shape (derived from the linked transports' descriptors): those the transport does not have are
//! `skipped` with an "n/a" reason, never failures; after the first failure the remaining
//! layers are `skipped` as "not checked". Every step has its own time limit, so the doctor
//! never hangs, and nothing it runs ever prompts.
//!
//! Exit codes: 0 when every layer passed, 1 when one failed, 2 when the config layer failed.

mod local_port;
mod ports;
mod tap;
mod ws_probe;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use async_trait::async_trait;
use clawlink_core::gateway::auth::device_token_key;
use clawlink_core::gateway::protocol::PROTOCOL_VERSION;
use clawlink_core::gateway::{ClientOptions, GatewayClient, GatewayError};
use clawlink_core::prompt::{Confirmation, Prompter};
use clawlink_core::transport::diagnosis::Note;
use clawlink_core::transport::{
    Connected, Diagnosis, LayerReport, LayerSink, LayerStatus, Stopped, Transport, TransportEnv,
};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::GlobalArgs;
use crate::connect::{self, SecretSources};
use crate::failure::Failure;
use crate::settings::Settings;
use crate::state;

/// The layer the doctor checks itself for a transport without its own diagnosis: a stream
/// to the gateway through `connect`, as a whole.
const WHOLE_STREAM_LAYER: &str = "gateway-port";

/// The generic layers after the transport's, in order.
const GATEWAY_LAYERS: [&str; 4] = ["websocket", "protocol", "auth", "health"];

/// Time limits per step: generous for a slow link, short enough that a dead one is named
/// within a minute.
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

impl From<LayerStatus> for Status {
    fn from(status: LayerStatus) -> Self {
        match status {
            LayerStatus::Ok => Self::Ok,
            LayerStatus::Failed => Self::Failed,
            LayerStatus::Skipped => Self::Skipped,
        }
    }
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
struct Walk {
    rows: Vec<Row>,
    /// Every layer of this report, in order.
    order: Vec<&'static str>,
    /// Why a layer of the report the transport does not have is skipped.
    absent_because: String,
}

impl Default for Walk {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            order: report_layers(),
            absent_because: "not a layer of this transport".into(),
        }
    }
}

impl Walk {
    /// The report's layers for a transport whose own layers are `transport_layers`.
    fn set_transport_layers(&mut self, transport_layers: &[&'static str], absent_because: String) {
        self.order = report_order(transport_layers);
        self.absent_because = absent_because;
    }

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
    ) -> Stopped {
        self.push(layer, Status::Failed, Some(ms(started)), detail, fix, data);
        Stopped
    }

    /// Records a layer a transport reported; `Err` when it failed.
    fn record(&mut self, report: LayerReport) -> Result<(), Stopped> {
        let failed = report.status == LayerStatus::Failed;
        self.push(
            report.layer,
            report.status.into(),
            report.ms,
            report.detail,
            report.fix,
            report.data,
        );
        if failed {
            Err(Stopped)
        } else {
            Ok(())
        }
    }

    fn info(&mut self, layer: &'static str, detail: String, data: Value) {
        self.push(layer, Status::Info, None, detail, None, data);
    }

    fn failed(&self) -> Option<&Row> {
        self.rows.iter().find(|r| r.status == Status::Failed)
    }

    /// Puts the rows in the report's order: the layers the walk did not reach are skipped
    /// as "not checked" after a failure, and those the transport does not have as "n/a"
    /// before it; the info notes come last.
    fn finish(&mut self) {
        let failed = self.failed().map(|r| r.layer);
        let failed_at = failed.and_then(|f| self.order.iter().position(|n| *n == f));
        let mut rows: Vec<Option<Row>> = std::mem::take(&mut self.rows)
            .into_iter()
            .map(Some)
            .collect();
        let mut ordered = Vec::with_capacity(rows.len() + self.order.len());
        for (i, name) in self.order.iter().enumerate() {
            let reported = rows
                .iter_mut()
                .find(|r| {
                    r.as_ref()
                        .is_some_and(|r| r.layer == *name && r.status != Status::Info)
                })
                .and_then(Option::take);
            let row = match (reported, failed, failed_at) {
                (Some(row), _, _) => row,
                (None, Some(failed), Some(at)) if i > at => {
                    skipped(name, format!("not checked: {failed} failed"))
                }
                (None, Some(failed), None) => {
                    skipped(name, format!("not checked: {failed} failed"))
                }
                (None, _, _) => skipped(name, format!("n/a: {}", self.absent_because)),
            };
            ordered.push(row);
        }
        // Layers outside the order (none when transports keep their contract) stay, then
        // the notes.
        let (notes, others): (Vec<Row>, Vec<Row>) = rows
            .into_iter()
            .flatten()
            .partition(|r| r.status == Status::Info);
        ordered.extend(others);
        ordered.extend(notes);
        self.rows = ordered;
    }
}

fn skipped(layer: &'static str, detail: String) -> Row {
    Row {
        layer,
        status: Status::Skipped,
        ms: None,
        detail,
        fix: None,
        data: Value::Null,
    }
}

/// The layers every report lists, in order: its documented shape, which scripts read.
/// Derived from the linked transports' descriptors (see [`report_shape`]), so that the
/// doctor never names a transport's layers itself.
fn report_layers() -> Vec<&'static str> {
    report_shape(
        clawlink_core::registry::transports()
            .iter()
            .map(|descriptor| descriptor.layers),
    )
}

/// "config", every transport's own layers (each merged in that transport's order), the
/// whole-stream layer, then the gateway's layers.
fn report_shape<'a>(
    transports_layers: impl IntoIterator<Item = &'a [&'static str]>,
) -> Vec<&'static str> {
    let mut order = vec!["config"];
    for layers in transports_layers {
        merge_layers(&mut order, layers);
    }
    if !order.contains(&WHOLE_STREAM_LAYER) {
        order.push(WHOLE_STREAM_LAYER);
    }
    order.extend(GATEWAY_LAYERS);
    order
}

/// Adds each of `layers` that `order` lacks after the last one present that precedes it in
/// `layers` (or after "config").
fn merge_layers(order: &mut Vec<&'static str>, layers: &[&'static str]) {
    for (k, name) in layers.iter().enumerate() {
        if order.contains(name) {
            continue;
        }
        let after = layers[..k]
            .iter()
            .filter_map(|before| order.iter().position(|n| n == before))
            .max()
            .unwrap_or(0);
        order.insert(after + 1, name);
    }
}

/// config, the transport's layers, the gateway's; then each layer of the report's shape the
/// transport lacks, after the last one present that precedes it there.
fn report_order(transport_layers: &[&'static str]) -> Vec<&'static str> {
    let mut order = vec!["config"];
    order.extend(
        transport_layers
            .iter()
            .filter(|n| **n != "config" && !GATEWAY_LAYERS.contains(n)),
    );
    order.extend(GATEWAY_LAYERS);
    merge_layers(&mut order, &report_layers());
    order
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// `clawlink doctor`.
pub async fn run(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let mut walk = Walk::default();
    let _ = diagnose(settings, &mut walk).await;
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
    transport: Arc<dyn Transport>,
    /// Checks a transport without its own diagnosis as a whole.
    whole: WholeTransport,
    options: ClientOptions,
    sources: SecretSources,
    data_dir: PathBuf,
}

impl Setup {
    /// The transport's own diagnosis, or the check of it as a whole.
    fn diagnosis(&self) -> &dyn Diagnosis {
        self.transport.diagnosis().unwrap_or(&self.whole)
    }
}

/// The doctor's side of a transport's walk: its reports go into the report, and the
/// local-port check it asks for runs here.
struct Sink<'a> {
    walk: &'a mut Walk,
    settings: &'a Settings,
}

#[async_trait(?Send)]
impl LayerSink for Sink<'_> {
    fn report(&mut self, report: LayerReport) -> Result<(), Stopped> {
        self.walk.record(report)
    }

    async fn local_port(&mut self, port: u16, explicit: bool) -> Result<(), Stopped> {
        local_port::layer(self.walk, self.settings, port, explicit).await
    }
}

/// A transport the doctor has no layers for (one without the `Diagnosis` capability): it
/// resolves and connects by itself, so one layer asks it for a stream to the gateway port.
struct WholeTransport(Arc<dyn Transport>);

#[async_trait(?Send)]
impl Diagnosis for WholeTransport {
    fn layers(&self) -> Vec<&'static str> {
        vec!["gateway-port"]
    }

    async fn diagnose(&self, sink: &mut dyn LayerSink) -> Result<Option<Connected>, Stopped> {
        let transport = &self.0;
        let started = Instant::now();
        let connected = match tokio::time::timeout(CHANNEL_LIMIT, transport.connect()).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => {
                let fix = e.fix.or_else(|| {
                    Some(format!(
                        "see the {} transport's settings (`clawlink transports`)",
                        transport.name()
                    ))
                });
                sink.report(LayerReport::failed(
                    "gateway-port",
                    started,
                    e.message,
                    fix,
                    Value::Null,
                ))?;
                return Err(Stopped);
            }
            Err(_) => {
                sink.report(LayerReport::failed(
                    "gateway-port",
                    started,
                    format!(
                        "{} did not open a stream within {} s",
                        transport.name(),
                        CHANNEL_LIMIT.as_secs()
                    ),
                    Some(format!(
                        "check that the gateway runs and that the {} transport's settings reach it",
                        transport.name()
                    )),
                    Value::Null,
                ))?;
                return Err(Stopped);
            }
        };
        sink.report(LayerReport::ok(
            "gateway-port",
            started,
            format!("{} opened a stream to the gateway", transport.name()),
            Value::Null,
        ))?;
        Ok(Some(connected))
    }

    fn client_address(&self) -> Note {
        Note {
            detail: format!(
                "the {} transport decides which address the gateway sees",
                self.0.name()
            ),
            data: Value::Null,
        }
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

async fn diagnose(settings: &Settings, walk: &mut Walk) -> Result<(), Stopped> {
    let started = Instant::now();
    let (setup, notes) = match configure(settings).await {
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
    let transport = setup.transport.clone();
    let diagnosis = setup.diagnosis();
    walk.set_transport_layers(
        &diagnosis.layers(),
        if transport.diagnosis().is_some() {
            format!("not a layer of the {} transport", transport.name())
        } else {
            format!(
                "the {} transport resolves and connects by itself",
                transport.name()
            )
        },
    );
    let mut data = json!({
        "profile": settings.profile_name,
        "transport": transport.name(),
        "gateway": transport.describe(),
        "files": settings.files,
    });
    if let Value::Object(map) = &mut data {
        map.extend(notes.data);
    }
    walk.pass(
        "config",
        started,
        format!(
            "profile {} · {} → {}{}",
            settings.profile_name,
            transport.name(),
            transport.describe(),
            notes
                .notes
                .iter()
                .map(|n| format!(" · {n}"))
                .collect::<String>()
        ),
        data,
    );

    // A stream the websocket layer can reuse instead of opening its own.
    let ready_stream = diagnosis
        .diagnose(&mut Sink {
            walk: &mut *walk,
            settings,
        })
        .await?;

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
    notes_layer(walk, &setup, connect_ms, health_ms);
    Ok(())
}

/// The config layer: the transport's settings (built through the registry, with a prompter
/// that never asks) and its own offline checks, the credentials and the device state load.
async fn configure(
    settings: &Settings,
) -> Result<(Setup, clawlink_core::transport::diagnosis::SettingsNotes), Failure> {
    let env = TransportEnv {
        prompter: Arc::new(DoctorPrompter::from_environment()),
    };
    let transport = connect::build_transport_with(settings, &env)?;
    let whole = WholeTransport(transport.clone());
    let notes = transport
        .diagnosis()
        .unwrap_or(&whole)
        .check_settings()
        .map_err(Failure::from)?;
    let (_, sources) = connect::credentials(settings).await?;
    let mut options = connect::operator_options(settings).await?;
    // The doctor must answer within its step limits, whatever the profile allows.
    options.connect_timeout = options.connect_timeout.min(HELLO_LIMIT);
    options.request_timeout = options.request_timeout.min(HEALTH_LIMIT);
    Ok((
        Setup {
            transport,
            whole,
            options,
            sources,
            data_dir: state::data_dir()?,
        },
        notes,
    ))
}

/// The HTTP upgrade and the `connect.challenge`, on a fresh stream (or the TLS layer's).
async fn websocket_layer(
    walk: &mut Walk,
    transport: &Arc<dyn Transport>,
    ready: Option<Connected>,
) -> Result<(), Stopped> {
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
) -> Result<(GatewayClient, u64), Stopped> {
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

async fn health_layer(walk: &mut Walk, client: &GatewayClient) -> Result<u64, Stopped> {
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
fn notes_layer(walk: &mut Walk, setup: &Setup, connect_ms: u64, health_ms: u64) {
    let address = setup.diagnosis().client_address();
    walk.info("client-address", address.detail, address.data);
    let source = credential_source(setup, &setup.transport);
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
        assert_eq!(names, report_layers());
        assert!(walk.rows[2..]
            .iter()
            .all(|r| r.status == Status::Skipped && r.detail == "not checked: dns failed"));
    }

    /// The shape of a build with both shipped transports, as scripts read it.
    const SHIPPED_SHAPE: [&str; 13] = [
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
    const SSH_LAYERS: [&str; 8] = [
        "dns",
        "tcp",
        "ssh-host-key",
        "ssh-auth",
        "remote-cli",
        "local-port",
        "gateway-port",
        "tls",
    ];
    const DIRECT_LAYERS: [&str; 4] = ["dns", "tcp", "gateway-port", "tls"];

    #[test]
    fn the_shape_is_merged_from_the_transports_layers_in_any_registration_order() {
        assert_eq!(
            report_shape([&DIRECT_LAYERS[..], &SSH_LAYERS[..]]),
            SHIPPED_SHAPE
        );
        assert_eq!(
            report_shape([&SSH_LAYERS[..], &DIRECT_LAYERS[..]]),
            SHIPPED_SHAPE
        );
        // No transport with a diagnosis: the doctor's own layers only.
        assert_eq!(
            report_shape([]),
            [
                "config",
                "gateway-port",
                "websocket",
                "protocol",
                "auth",
                "health"
            ]
        );
        // The linked transports' declared layers all appear, in their order.
        let linked = report_layers();
        for descriptor in clawlink_core::registry::transports() {
            let positions: Vec<usize> = descriptor
                .layers
                .iter()
                .map(|l| linked.iter().position(|n| n == l).unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{linked:?}");
        }
    }

    #[test]
    fn the_report_keeps_its_shape_and_adds_a_transports_own_layers() {
        let shape = report_layers();
        for layers in [&SSH_LAYERS[..], &DIRECT_LAYERS[..], &["gateway-port"][..]] {
            if layers.iter().all(|l| shape.contains(l)) {
                assert_eq!(report_order(layers), shape);
            }
        }
        // A layer of another transport goes where that transport walks it.
        let quic = report_order(&["dns", "udp", "quic-handshake", "gateway-port"]);
        let at = |name: &str| quic.iter().position(|n| *n == name).unwrap();
        assert!(at("udp") < at("quic-handshake"));
        assert!(at("quic-handshake") < at("gateway-port") && at("gateway-port") < at("websocket"));
        assert_eq!(
            quic.len(),
            shape.len() + 2 + usize::from(!shape.contains(&"dns"))
        );
    }

    #[test]
    fn layers_a_transport_lacks_are_not_applicable_before_a_failure() {
        let mut walk = Walk::default();
        walk.set_transport_layers(
            &["dns", "tcp", "gateway-port", "tls"],
            "no such layer".into(),
        );
        let started = Instant::now();
        walk.pass("config", started, "ok".into(), Value::Null);
        walk.pass("dns", started, "ok".into(), Value::Null);
        walk.pass("tcp", started, "ok".into(), Value::Null);
        let _ = walk.fail(
            "gateway-port",
            started,
            "refused".into(),
            Some("start it".into()),
            Value::Null,
        );
        walk.info("latency", "1 ms".into(), Value::Null);
        walk.finish();
        let names: Vec<&str> = walk.rows.iter().map(|r| r.layer).collect();
        let shape = report_order(&["dns", "tcp", "gateway-port", "tls"]);
        assert_eq!(&names[..shape.len()], shape);
        assert_eq!(names.last(), Some(&"latency"));
        let row = |name: &str| walk.rows.iter().find(|r| r.layer == name).unwrap();
        if let Some(absent) = shape.iter().find(|l| {
            ![
                "config",
                "dns",
                "tcp",
                "gateway-port",
                "tls",
                "websocket",
                "protocol",
                "auth",
                "health",
            ]
            .contains(l)
        }) {
            assert_eq!(row(absent).detail, "n/a: no such layer");
        }
        assert_eq!(row("tls").detail, "not checked: gateway-port failed");
    }
}
