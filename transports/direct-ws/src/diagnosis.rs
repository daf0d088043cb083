//! The direct transport's doctor layers: dns and tcp to the gateway host, the gateway port itself, and TLS for wss:// URLs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clawlink_core::transport::diagnosis::net::{dns_layer, tcp_connect, TcpOutcome};
use clawlink_core::transport::diagnosis::Note;
use clawlink_core::transport::{Connected, Diagnosis, LayerReport, LayerSink, Stopped, Transport};
use serde_json::{json, Value};

use crate::{DirectWs, GatewayUrl};

/// How long the TLS handshake (and the certificate probe) may take.
const TLS_LIMIT: Duration = Duration::from_secs(15);

/// The layers, in the order they are walked.
/// The layers `diagnose` reports, in order (also the descriptor's `layers`).
pub(crate) const LAYERS: &[&str] = &["dns", "tcp", "gateway-port", "tls"];

#[async_trait(?Send)]
impl Diagnosis for DirectWs {
    fn layers(&self) -> Vec<&'static str> {
        LAYERS.to_vec()
    }

    async fn diagnose(&self, sink: &mut dyn LayerSink) -> Result<Option<Connected>, Stopped> {
        let url = &self.url;
        let (report, addrs) = dns_layer(
            &url.host,
            url.port,
            "the gateway host",
            "check the host name in the gateway URL and this machine's DNS (/etc/resolv.conf, VPN or tailnet MagicDNS)",
        )
        .await;
        sink.report(report)?;
        tcp_layers(sink, &addrs.unwrap_or_default(), url).await?;
        if url.tls {
            // The TLS layer's stream carries on to the doctor's websocket layer.
            return tls_layer(sink, self).await.map(Some);
        }
        sink.report(LayerReport::not_applicable(
            "tls",
            "ws:// is plaintext (accepted for loopback, private and tailnet hosts only)",
        ))?;
        Ok(None)
    }

    fn client_address(&self) -> Note {
        if self.url.is_loopback() {
            Note {
                detail: "local mode: the gateway sees this machine as 127.0.0.1".into(),
                data: json!({"seenAs": "127.0.0.1", "transport": crate::NAME}),
            }
        } else {
            Note {
                detail: "direct transport: the gateway sees this machine's real address".into(),
                data: json!({"seenAs": "client address", "transport": crate::NAME}),
            }
        }
    }
}

/// The TCP connect goes to the gateway port itself, so a refusal names the gateway-port
/// layer (the host answered; nothing listens) and silence names tcp.
async fn tcp_layers(
    sink: &mut dyn LayerSink,
    addrs: &[SocketAddr],
    url: &GatewayUrl,
) -> Result<(), Stopped> {
    let started = Instant::now();
    let data = json!({"host": url.host, "port": url.port});
    let connected = match tcp_connect(addrs).await {
        TcpOutcome::Connected(_, addr) => {
            sink.report(LayerReport::ok("tcp", started, format!("connected to {addr}"), json!({"address": addr.to_string()})))?;
            true
        }
        TcpOutcome::Refused(_) => {
            sink.report(LayerReport::ok(
                "tcp",
                started,
                format!("{} is reachable (it answered with a refusal)", url.host),
                data.clone(),
            ))?;
            false
        }
        TcpOutcome::Unreachable(errors) => {
            return sink.report(LayerReport::failed(
                "tcp",
                started,
                format!("cannot reach {}: {}", url.authority(), errors.join("; ")),
                Some("the host is down or unreachable from here, or a firewall drops the port: check the address, the VPN or tailnet, and gateway.bind on the gateway".into()),
                data,
            ))
        }
    };
    if connected {
        return sink.report(LayerReport::ok(
            "gateway-port",
            started,
            format!("something listens on {}", url.authority()),
            data,
        ));
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
    sink.report(LayerReport::failed(
        "gateway-port",
        started,
        format!("{} refused the connection: nothing listens on port {} (the gateway is not running there, or listens on another port)", url.host, url.port),
        Some(fix),
        data,
    ))
}

/// What the TLS layer trusts the certificate by, in words.
fn trust_basis(transport: &DirectWs) -> &'static str {
    match transport.tls.as_ref().map(|t| &t.policy) {
        Some(policy) if policy.spki_pin.is_some() => "public-key pin (tls.spki_sha256)",
        Some(policy) if policy.leaf_pin.is_some() => "certificate pin (tls.fingerprint)",
        Some(policy) if !policy.extra_roots.is_empty() => "private CA (tls.ca_file)",
        _ => "public and system roots",
    }
}

async fn tls_layer(sink: &mut dyn LayerSink, transport: &DirectWs) -> Result<Connected, Stopped> {
    let started = Instant::now();
    let url = &transport.url;
    let trust = trust_basis(transport);
    match tokio::time::timeout(TLS_LIMIT, transport.connect()).await {
        Ok(Ok(connected)) => {
            let seen = tokio::time::timeout(TLS_LIMIT, transport.probe_certificate())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|f| f.describe());
            sink.report(LayerReport::ok(
                "tls",
                started,
                format!(
                    "certificate of {} trusted by the {trust}{}",
                    url.authority(),
                    seen.as_ref().map(|s| format!(" · {s}")).unwrap_or_default()
                ),
                json!({"trustedBy": trust, "certificate": seen}),
            ))?;
            Ok(connected)
        }
        Ok(Err(e)) => {
            let fix = e
                .fix
                .or(Some("check the gateway's certificate and the profile's tls settings (`clawlink tls trust` pins a self-signed one)".into()));
            Err(sink
                .report(LayerReport::failed(
                    "tls",
                    started,
                    e.message,
                    fix,
                    json!({"trustedBy": trust}),
                ))
                .unwrap_err())
        }
        Err(_) => Err(sink
            .report(LayerReport::failed(
                "tls",
                started,
                format!(
                    "the TLS handshake with {} did not finish within {} s",
                    url.authority(),
                    TLS_LIMIT.as_secs()
                ),
                Some("check that the port serves TLS (a ws:// gateway does not)".into()),
                Value::Null,
            ))
            .unwrap_err()),
    }
}
