//! Transport `direct-ws`: a plain TCP connection to the gateway URL, for local mode and for `ws://` gateways on a LAN or tailnet.
//!
//! This is the seed's "Remote direct (ws/wss)" mode without TLS: the gateway sees the
//! client's real address. `wss://` (TLS, pinning) is not part of this crate yet; such a URL is
//! refused with an error that says so rather than being sent in clear text.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::registry::TransportDescriptor;
use clawlink_core::transport::{
    Connected, Transport, TransportEnv, TransportError, TransportErrorKind,
};
use serde::Deserialize;

/// The registered name.
pub const NAME: &str = "direct-ws";
/// The gateway's default port.
pub const DEFAULT_PORT: u16 = 18789;

clawlink_core::inventory::submit! {
    TransportDescriptor {
        name: NAME,
        summary: "connect straight to the gateway URL (local mode, LAN, tailnet); the gateway sees this machine's address",
        example_config: "url = \"ws://127.0.0.1:18789\"\n# connect_timeout_ms = 10000",
        factory: DirectWs::from_settings,
    }
}

/// Settings of `[profile.transports.direct-ws]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_url")]
    url: String,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
}

fn default_url() -> String {
    format!("ws://127.0.0.1:{DEFAULT_PORT}")
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// A parsed, validated gateway URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUrl {
    /// Host as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query to request (at least `/`).
    pub path: String,
}

impl GatewayUrl {
    /// Parses and checks a `ws://` URL: scheme, host present, no credentials in it.
    pub fn parse(input: &str) -> Result<Self, TransportError> {
        let url = url::Url::parse(input.trim()).map_err(|e| {
            TransportError::config(format!("gateway URL {input:?} is not a URL: {e}"))
                .with_fix("write it like ws://127.0.0.1:18789")
        })?;
        match url.scheme() {
            "ws" => {}
            "wss" => {
                return Err(TransportError::new(
                    TransportErrorKind::Unsupported,
                    format!("{input}: wss:// (TLS) is not supported by this build of the direct-ws transport yet"),
                )
                .with_fix("reach the gateway through the ssh-tunnel transport, or over ws:// on a trusted network"))
            }
            other => {
                return Err(TransportError::config(format!(
                    "gateway URL {input:?} has scheme {other:?}; the gateway speaks WebSocket"
                ))
                .with_fix("use ws://HOST:PORT"))
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TransportError::config(
                "the gateway URL contains credentials; they would end up in logs and shell history",
            )
            .with_fix("remove them from the URL and put the secret in auth.token_file or auth.password_file"));
        }
        if url
            .query_pairs()
            .any(|(k, _)| k.eq_ignore_ascii_case("token") || k.eq_ignore_ascii_case("password"))
        {
            return Err(TransportError::config(
                "the gateway URL carries a token or password parameter; it would end up in logs and shell history",
            )
            .with_fix("remove it from the URL and put the secret in auth.token_file or auth.password_file"));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(host) => host.to_string(),
            None => {
                return Err(
                    TransportError::config(format!("gateway URL {input:?} has no host"))
                        .with_fix("write it like ws://127.0.0.1:18789"),
                )
            }
        };
        let mut path = url.path().to_owned();
        if path.is_empty() {
            path.push('/');
        }
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(Self {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            path,
        })
    }

    /// `host:port` with IPv6 in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The canonical `ws://` form.
    pub fn to_url(&self) -> String {
        format!("ws://{}{}", self.authority(), self.path)
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        if self.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        self.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }
}

/// The `direct-ws` transport.
#[derive(Debug)]
pub struct DirectWs {
    url: GatewayUrl,
    connect_timeout: Duration,
}

impl DirectWs {
    pub fn new(url: GatewayUrl, connect_timeout: Duration) -> Self {
        Self {
            url,
            connect_timeout,
        }
    }

    fn from_settings(
        settings: &serde_json::Value,
        _env: &TransportEnv,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        let settings: Settings = serde_json::from_value(settings.clone()).map_err(|e| {
            TransportError::config(format!("transports.{NAME}: {e}"))
                .with_fix("valid keys: url, connect_timeout_ms (see `clawlink transports`)")
        })?;
        let url = GatewayUrl::parse(&settings.url)?;
        Ok(Arc::new(Self::new(
            url,
            Duration::from_millis(settings.connect_timeout_ms),
        )))
    }

    async fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        let target = (self.url.host.as_str(), self.url.port);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
            .await
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Resolve,
                    format!("cannot resolve {}: {e}", self.url.host),
                )
                .with_fix("check the host name in the gateway URL and this machine's DNS")
            })?
            .collect();
        if addrs.is_empty() {
            return Err(TransportError::new(
                TransportErrorKind::Resolve,
                format!("{} resolves to no address", self.url.host),
            ));
        }
        Ok(addrs)
    }
}

#[async_trait]
impl Transport for DirectWs {
    fn name(&self) -> &str {
        NAME
    }

    fn gateway_key(&self) -> String {
        format!("ws://{}", self.url.authority())
    }

    fn describe(&self) -> String {
        self.url.to_url()
    }

    fn is_loopback_to_gateway(&self) -> bool {
        self.url.is_loopback()
    }

    async fn connect(&self) -> Result<Connected, TransportError> {
        let addrs = self.resolve().await?;
        let several = addrs.len() > 1;
        let mut last_error = None;
        for addr in addrs {
            let label = if several {
                format!("{addr}: ")
            } else {
                String::new()
            };
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(stream)) => {
                    // Small JSON frames: latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%addr, "tcp connected");
                    return Ok(Connected {
                        stream: Box::new(stream),
                        request_url: self.url.to_url(),
                    });
                }
                Ok(Err(e)) => last_error = Some(format!("{label}{e}")),
                Err(_) => {
                    last_error = Some(format!(
                        "{label}no answer within {} ms",
                        self.connect_timeout.as_millis()
                    ))
                }
            }
        }
        Err(TransportError::new(
            TransportErrorKind::Connect,
            format!(
                "cannot reach the gateway at {}: {}",
                self.url.authority(),
                last_error.unwrap_or_default()
            ),
        )
        .with_fix(if self.url.is_loopback() {
            "start the gateway on this machine (`openclaw gateway run`) or check the port in the URL"
        } else {
            "check that the gateway listens on that address (gateway.bind) and that no firewall blocks the port"
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_port_and_path() {
        let url = GatewayUrl::parse("ws://127.0.0.1").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 18789, "/")
        );
        assert!(url.is_loopback());
        let url = GatewayUrl::parse("ws://[::1]:28789/x?y=1").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.authority(), "[::1]:28789");
        assert_eq!(url.to_url(), "ws://[::1]:28789/x?y=1");
        assert!(url.is_loopback());
        let url = GatewayUrl::parse("  ws://gw.lan:1234  ").unwrap();
        assert!(!url.is_loopback());
        assert!(GatewayUrl::parse("ws://localhost:1").unwrap().is_loopback());
    }

    #[test]
    fn credential_bearing_and_foreign_urls_are_refused() {
        let cases = [
            ("ws://user:pw@127.0.0.1:1", "credentials"),
            ("ws://127.0.0.1:1/?token=abc", "token or password"),
            ("ws://127.0.0.1:1/?Password=abc", "token or password"),
            ("http://127.0.0.1:1", "scheme"),
            ("127.0.0.1:18789", "not a URL"),
            ("not a url", "not a URL"),
        ];
        for (input, needle) in cases {
            let err = GatewayUrl::parse(input).unwrap_err();
            assert_eq!(err.kind, TransportErrorKind::Config, "{input}");
            assert!(err.to_string().contains(needle), "{input}: {err}");
            assert!(
                !err.to_string().contains("abc"),
                "secret echoed for {input}: {err}"
            );
            assert!(
                !err.to_string().contains("pw@"),
                "secret echoed for {input}: {err}"
            );
        }
        let err = GatewayUrl::parse("wss://gw.example.ts.net").unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Unsupported);
    }

    #[tokio::test]
    async fn connect_refused_is_a_retryable_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let transport = DirectWs::new(
            GatewayUrl::parse(&format!("ws://127.0.0.1:{port}")).unwrap(),
            Duration::from_secs(2),
        );
        let err = transport.connect().await.unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Connect);
        assert!(err.kind.is_retryable());
        assert!(err.fix.unwrap().contains("openclaw gateway run"));
    }

    #[test]
    fn settings_refuse_unknown_keys() {
        let env = TransportEnv {
            prompter: Arc::new(clawlink_core::prompt::NonInteractive),
        };
        let Err(err) = DirectWs::from_settings(&serde_json::json!({"ulr": "ws://x"}), &env) else {
            panic!("an unknown key was accepted")
        };
        assert!(err.to_string().contains("ulr"), "{err}");
        let ok = DirectWs::from_settings(&serde_json::json!({}), &env).unwrap();
        assert_eq!(ok.describe(), "ws://127.0.0.1:18789/");
    }
}
