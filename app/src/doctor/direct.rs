//! The doctor's direct route (transport `direct-ws`): dns and tcp to the gateway host, the gateway port itself, and TLS for wss:// URLs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawlink_core::transport::{Connected, Transport};
use clawlink_transport_ws::{DirectWs, GatewayUrl};
use serde_json::{json, Value};

use super::{dns_layer, tcp_connect, Route, Stop, TcpOutcome, Walk, CHANNEL_LIMIT, TCP_LIMIT};
use crate::failure::Failure;
use crate::settings::Settings;

/// A profile that connects straight to a ws:// or wss:// URL.
pub(super) struct DirectRoute {
    url: GatewayUrl,
    transport: Arc<DirectWs>,
    /// What the TLS layer trusts the certificate by, in words.
    trust: &'static str,
}

impl DirectRoute {
    /// The config layer's part: the URL parses and passes the plaintext policy, and the TLS
    /// settings load.
    pub(super) fn configure(settings: &Settings) -> Result<Self, Failure> {
        let raw = settings
            .profile
            .transport_settings(clawlink_transport_ws::NAME);
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
        Ok(Self {
            transport: Arc::new(
                DirectWs::with_tls(url.clone(), timeout, &parsed.tls)?
                    .allow_insecure_ws(parsed.allow_insecure_ws),
            ),
            url,
            trust,
        })
    }
}

#[async_trait(?Send)]
impl Route for DirectRoute {
    fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    async fn walk_to_gateway(
        &self,
        walk: &mut Walk,
        _settings: &Settings,
    ) -> Result<Option<Connected>, Stop> {
        let url = &self.url;
        let addrs = dns_layer(walk, &url.host, url.port, "the gateway host").await?;
        direct_tcp_layers(walk, &addrs, url).await?;
        if url.tls {
            // The TLS layer's stream carries on to the websocket layer.
            return Ok(Some(
                tls_layer(walk, url, &self.transport, self.trust).await?,
            ));
        }
        walk.not_applicable(
            "tls",
            "ws:// is plaintext (accepted for loopback, private and tailnet hosts only)",
        );
        Ok(None)
    }

    fn note_client_address(&self, walk: &mut Walk) {
        if self.url.is_loopback() {
            walk.info(
                "client-address",
                "local mode: the gateway sees this machine as 127.0.0.1".into(),
                json!({"seenAs": "127.0.0.1", "transport": "direct-ws"}),
            );
        } else {
            walk.info(
                "client-address",
                "direct transport: the gateway sees this machine's real address".into(),
                json!({"seenAs": "client address", "transport": "direct-ws"}),
            );
        }
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
