//! Transport `direct-ws`: straight to the gateway URL — `ws://` for local mode, a LAN or a tailnet; `wss://` (TLS) for anything else.
//!
//! This is the seed's "Remote direct (ws/wss)" mode: no tunnel, the gateway sees this
//! machine's real address. The URL rules are the macOS app's (E3): plaintext `ws://` only to
//! loopback, private, link-local, CGNAT (Tailscale), `*.local` and `*.ts.net` hosts, unless
//! the user sets the loudly-warned `allow_insecure_ws`; credentials never ride in the URL.
//! A name is only as good as what it resolves to: `localhost` and `*.localhost` never go to
//! DNS (they are loopback, RFC 6761, as browsers treat them), and plaintext to a `*.local` or
//! `*.ts.net` name uses only the resolved addresses in that name's range.

mod diagnosis;
mod host_identity;
pub mod tls;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::registry::{
    FlagValue, RequiredArgument, Selection, TransportDescriptor, TransportFlag, TrustCommand,
};
use clawlink_core::transport::{
    Connected, Transport, TransportEnv, TransportError, TransportErrorKind,
};
use serde::Deserialize;

/// The registered name.
pub const NAME: &str = "direct-ws";
/// The gateway's default port.
pub const DEFAULT_PORT: u16 = 18789;

/// The settings table as `clawlink transports` shows it: every key of [`Settings`] and
/// [`TlsSettings`] (a test checks that none is missing).
pub const EXAMPLE_CONFIG: &str = "url = \"wss://gateway.example.ts.net\"     # or ws://127.0.0.1:18789, ws://<LAN or tailnet host>:18789\n\
# connect_timeout_ms = 10000 # TCP connect and TLS handshake, each\n\
# allow_insecure_ws = false  # plaintext ws:// to a public host: never, unless you really mean it\n\
# [PROFILE.transports.direct_ws.tls]\n\
# spki_sha256 = \"…\"        # public-key pin (survives renewal); `clawlink tls trust URL` writes it\n\
# fingerprint = \"sha256:…\" # leaf certificate pin, as the openclaw CLI's --tls-fingerprint\n\
# ca_file = \"/path/ca.pem\"  # a private CA";

clawlink_core::inventory::submit! {
    TransportDescriptor {
        name: NAME,
        summary: "connect straight to the gateway URL (local mode, LAN, tailnet); the gateway sees this machine's address",
        example_config: EXAMPLE_CONFIG,
        flags: &[TransportFlag {
            flag: "url",
            value_name: "ws://HOST:PORT",
            key: "url",
            help: "Connect straight to this gateway URL (selects the direct-ws transport)",
            value: FlagValue::Url,
            // Local or remote, the URL says where the gateway is: the profile's mode stays.
            selects: Some(Selection { mode: None }),
        }],
        capabilities: &[
            clawlink_core::transport::Capability::Diagnosis,
            clawlink_core::transport::Capability::HostIdentity,
        ],
        layers: diagnosis::LAYERS,
        trust: Some(TrustCommand {
            command: "tls",
            argument_key: "url",
            argument_required: Some(RequiredArgument {
                missing: "no gateway URL given",
                fix: "pass the wss:// URL: `clawlink tls trust wss://HOST`",
            }),
            profile_pin_key: Some("tls.spki_sha256"),
        }),
        factory: &DirectWs::from_settings,
    }
}

/// Settings of `[profile.transports.direct_ws]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_url")]
    pub url: String,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Break-glass: plaintext `ws://` to a host that is not loopback, private or a tailnet.
    #[serde(default)]
    pub allow_insecure_ws: bool,
    #[serde(default)]
    pub tls: TlsSettings,
}

/// `[…direct_ws.tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the CA(s) that signed a private gateway's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the leaf certificate DER.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// SHA-256 of the certificate's public key (SubjectPublicKeyInfo DER).
    #[serde(default)]
    pub spki_sha256: Option<String>,
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
    /// `wss://`.
    pub tls: bool,
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
        let tls = match url.scheme() {
            "ws" => false,
            "wss" => true,
            other => {
                return Err(TransportError::config(format!(
                    "gateway URL {input:?} has scheme {other:?}; the gateway speaks WebSocket"
                ))
                .with_fix("use ws://HOST:PORT, or wss://HOST for TLS"))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TransportError::config(
                "the gateway URL contains credentials; they would end up in logs and shell history",
            )
            .with_fix("remove them from the URL and put the secret in auth.token_file or auth.password_file"));
        }
        if let Some((key, _)) = url.query_pairs().find(|(k, _)| is_credential_key(k)) {
            return Err(TransportError::config(format!(
                "the gateway URL carries a credential parameter `{key}` (a token or password); it would end up in logs and shell history"
            ))
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
            tls,
            host,
            port: url
                .port()
                .or_else(|| typed_port(input).then(|| url.port_or_known_default())?)
                .unwrap_or(if tls { 443 } else { DEFAULT_PORT }),
            path,
        })
    }

    /// Whether plaintext `ws://` to this host is acceptable without the break-glass setting:
    /// loopback, RFC 1918, link-local, CGNAT 100.64/10 (Tailscale), IPv6 unique-local,
    /// `localhost`, `*.local` (mDNS) and `*.ts.net` (MagicDNS) — the macOS app's E3 rules.
    /// For a name, what it resolves to is checked again at connect time ([`PlaintextName`]).
    pub fn plaintext_allowed(&self) -> bool {
        if self.plaintext_name().is_some() {
            return true;
        }
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                let [a, b, ..] = ip.octets();
                ip.is_loopback()
                    || ip.is_private()
                    || ip.is_link_local()
                    || (a == 100 && (64..128).contains(&b))
            }
            Ok(IpAddr::V6(ip)) => {
                let first = ip.segments()[0];
                ip.is_loopback()
                    || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                    || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_private())
            }
            Err(_) => false,
        }
    }

    /// The class of a host name that plaintext is allowed to by name, if it is one.
    pub fn plaintext_name(&self) -> Option<PlaintextName> {
        let host = self.host.trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            Some(PlaintextName::Localhost)
        } else if host.ends_with(".local") {
            Some(PlaintextName::Mdns)
        } else if host.ends_with(".ts.net") {
            Some(PlaintextName::Tailnet)
        } else {
            None
        }
    }

    /// `host:port` with IPv6 in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The canonical `ws://` / `wss://` form.
    pub fn to_url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.tls { "wss" } else { "ws" },
            self.authority(),
            self.path
        )
    }

    /// Whether the host is a loopback address, `localhost` or `*.localhost`.
    pub fn is_loopback(&self) -> bool {
        if self.plaintext_name() == Some(PlaintextName::Localhost) {
            return true;
        }
        self.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Whether `input` (a URL the url crate accepted) names a port. The url crate forgets a port
/// equal to its scheme's default (80 for `ws`), so without this `ws://host:80` would silently
/// go to the gateway's default port instead.
fn typed_port(input: &str) -> bool {
    // The url crate accepts any number of `/` or `\` after a special scheme.
    let Some((_, rest)) = input.trim().split_once(':') else {
        return false;
    };
    let rest = rest.trim_start_matches(['/', '\\']);
    let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = host_port.rsplit_once(']').map_or(host_port, |(_, p)| p);
    // The url crate drops tabs and newlines anywhere, so only digits make a port.
    after_host
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.chars().any(|c| c.is_ascii_digit()))
}

/// Whether a query parameter's name looks like it carries a credential (`token`,
/// `password`, `auth`, `api_key`, `bootstrapToken`, …).
fn is_credential_key(key: &str) -> bool {
    let key: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(
        key.as_str(),
        "auth"
            | "authorization"
            | "passwd"
            | "pwd"
            | "pass"
            | "apikey"
            | "credential"
            | "credentials"
    ) || ["token", "password", "secret"]
        .iter()
        .any(|word| key.contains(word))
}

/// A host name that plaintext `ws://` is allowed to by its suffix, and the addresses it must
/// then resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaintextName {
    /// `localhost`, `*.localhost`: loopback, answered without DNS (RFC 6761).
    Localhost,
    /// `*.local` (mDNS): loopback, private or link-local addresses.
    Mdns,
    /// `*.ts.net` (Tailscale MagicDNS): 100.64.0.0/10 or the tailnet's fd7a:115c:a1e0::/48.
    Tailnet,
}

impl PlaintextName {
    /// Whether `ip` is an address a name of this class may stand for.
    pub fn admits(self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self, ip) {
            (Self::Localhost, ip) => ip.is_loopback(),
            (Self::Mdns, IpAddr::V4(v4)) => {
                v4.is_loopback() || v4.is_private() || v4.is_link_local()
            }
            (Self::Mdns, IpAddr::V6(v6)) => {
                let first = v6.segments()[0];
                v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
            }
            (Self::Tailnet, IpAddr::V4(v4)) => {
                let [a, b, ..] = v4.octets();
                a == 100 && (64..128).contains(&b)
            }
            (Self::Tailnet, IpAddr::V6(v6)) => v6.segments()[..3] == [0xfd7a, 0x115c, 0xa1e0],
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Localhost => "a loopback address",
            Self::Mdns => "a loopback, private or link-local address",
            Self::Tailnet => "a tailnet address (100.64.0.0/10 or fd7a:115c:a1e0::/48)",
        }
    }
}

/// The addresses to connect to for `url`. `localhost` names are loopback without asking
/// `lookup` (DNS); for plaintext to a `*.local` or `*.ts.net` name (unless
/// `insecure_ws_allowed`), only the resolved addresses in that name's range are kept, and
/// none is a refusal that says what the name resolved to.
pub async fn resolve_gateway<F, Fut>(
    url: &GatewayUrl,
    insecure_ws_allowed: bool,
    lookup: F,
) -> Result<Vec<SocketAddr>, TransportError>
where
    F: FnOnce(String, u16) -> Fut,
    Fut: Future<Output = std::io::Result<Vec<SocketAddr>>>,
{
    let class = url.plaintext_name();
    if class == Some(PlaintextName::Localhost) {
        return Ok(vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), url.port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), url.port),
        ]);
    }
    let addrs = lookup(url.host.clone(), url.port).await.map_err(|e| {
        TransportError::new(
            TransportErrorKind::Resolve,
            format!("cannot resolve {}: {e}", url.host),
        )
        .with_fix("check the host name in the gateway URL and this machine's DNS")
    })?;
    if addrs.is_empty() {
        return Err(TransportError::new(
            TransportErrorKind::Resolve,
            format!("{} resolves to no address", url.host),
        ));
    }
    let Some(class) = class.filter(|_| !url.tls && !insecure_ws_allowed) else {
        return Ok(addrs);
    };
    let (admitted, foreign): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.into_iter().partition(|a| class.admits(a.ip()));
    if !foreign.is_empty() {
        tracing::warn!(host = %url.host, ?foreign, "ignoring addresses outside the range plaintext ws:// is allowed to");
    }
    if admitted.is_empty() {
        let seen: Vec<String> = foreign.iter().map(|a| a.ip().to_string()).collect();
        return Err(TransportError::config(format!(
            "{} resolved to {}, not {}: plaintext ws:// is allowed to that name only inside that range, and the gateway token would otherwise cross the network unencrypted",
            url.host,
            seen.join(", "),
            class.expected()
        ))
        .with_fix("check the name's DNS (or mDNS / MagicDNS) answer, use wss://, or the ssh-tunnel transport"));
    }
    Ok(admitted)
}

/// The `direct-ws` transport.
pub struct DirectWs {
    url: GatewayUrl,
    connect_timeout: Duration,
    tls: Option<TlsSetup>,
    /// `allow_insecure_ws`: plaintext to any address a name resolves to.
    insecure_ws_allowed: bool,
}

impl std::fmt::Debug for DirectWs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWs")
            .field("url", &self.url.to_url())
            .finish_non_exhaustive()
    }
}

/// What a `wss://` connection needs, built once.
struct TlsSetup {
    policy: tls::TlsPolicy,
    roots: Arc<rustls::client::WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl DirectWs {
    /// A transport to `url` with default TLS settings (public roots, no pin).
    pub fn new(url: GatewayUrl, connect_timeout: Duration) -> Result<Self, TransportError> {
        Self::with_tls(url, connect_timeout, &TlsSettings::default())
    }

    /// A transport to `url` with the given TLS settings (used only for `wss://`).
    pub fn with_tls(
        url: GatewayUrl,
        connect_timeout: Duration,
        settings: &TlsSettings,
    ) -> Result<Self, TransportError> {
        let tls = if url.tls {
            let pin =
                |value: &Option<String>, key: &str| -> Result<Option<tls::Pin>, TransportError> {
                    value
                        .as_deref()
                        .map(|v| {
                            tls::parse_pin(v)
                                .map_err(|e| TransportError::config(format!("tls.{key}: {e}")))
                        })
                        .transpose()
                };
            let extra_roots = match &settings.ca_file {
                Some(path) => tls::TlsPolicy::load_ca_file(path)?,
                None => Vec::new(),
            };
            let policy = tls::TlsPolicy {
                leaf_pin: pin(&settings.fingerprint, "fingerprint")?,
                spki_pin: pin(&settings.spki_sha256, "spki_sha256")?,
                extra_roots,
                capture_only: false,
            };
            // ring, explicitly: never a process-wide default that another crate could change.
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let roots = tls::build_roots(&policy.extra_roots, provider.clone())?;
            Some(TlsSetup {
                policy,
                roots,
                provider,
            })
        } else {
            None
        };
        Ok(Self {
            url,
            connect_timeout,
            tls,
            insecure_ws_allowed: false,
        })
    }

    /// With `allow_insecure_ws`: a `*.local` / `*.ts.net` name may resolve anywhere.
    pub fn allow_insecure_ws(mut self, allowed: bool) -> Self {
        self.insecure_ws_allowed = allowed;
        self
    }

    fn from_settings(
        settings: &serde_json::Value,
        _env: &TransportEnv,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        let settings = Self::parse_settings(settings)?;
        let url = GatewayUrl::parse(&settings.url)?;
        Self::check_url_policy(&url, &settings)?;
        Ok(Arc::new(
            Self::with_tls(
                url,
                Duration::from_millis(settings.connect_timeout_ms),
                &settings.tls,
            )?
            .allow_insecure_ws(settings.allow_insecure_ws),
        ))
    }

    /// Parses the settings table.
    pub fn parse_settings(settings: &serde_json::Value) -> Result<Settings, TransportError> {
        serde_json::from_value(settings.clone()).map_err(|e| {
            use clawlink_core::registry::settings_keys;
            TransportError::config(format!("transports.direct_ws: {e}")).with_fix(format!(
                "valid keys: {}, tls.{{{}}} (see `clawlink transports`)",
                settings_keys::<Settings>()
                    .iter()
                    .filter(|k| **k != "tls")
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
                settings_keys::<TlsSettings>().join(",")
            ))
        })
    }

    /// The security rules a URL must pass before any connection.
    pub fn check_url_policy(url: &GatewayUrl, settings: &Settings) -> Result<(), TransportError> {
        let tls = &settings.tls;
        if !url.tls
            && (tls.fingerprint.is_some() || tls.spki_sha256.is_some() || tls.ca_file.is_some())
        {
            return Err(TransportError::config(format!(
                "{} is plaintext ws://, but a TLS pin or CA file is configured: there is no certificate to check",
                url.to_url()
            ))
            .with_fix("use wss:// for a TLS gateway, or remove the tls table"));
        }
        if !url.tls && !url.plaintext_allowed() {
            if !settings.allow_insecure_ws {
                return Err(TransportError::config(format!(
                    "ws://{} is plaintext to a host that is not loopback, private or on a tailnet: the gateway token and every message would cross the network unencrypted",
                    url.authority()
                ))
                .with_fix("use wss:// (Tailscale Serve or an HTTPS reverse proxy in front of the gateway), the ssh-tunnel transport, or — at your own risk — allow_insecure_ws = true"));
            }
            tracing::warn!(
                url = %url.to_url(),
                "allow_insecure_ws is set: talking PLAINTEXT to a public host; anyone on the path can read and alter gateway traffic"
            );
        }
        Ok(())
    }

    /// The certificate fingerprints a `wss://` gateway presents, without trusting it (for
    /// `clawlink tls trust`).
    pub async fn probe_certificate(&self) -> Result<tls::Fingerprints, TransportError> {
        let Some(setup) = &self.tls else {
            return Err(TransportError::config(format!(
                "{} is not a wss:// URL",
                self.url.to_url()
            )));
        };
        let tcp = self.tcp().await?;
        let policy = tls::TlsPolicy {
            capture_only: true,
            ..tls::TlsPolicy::default()
        };
        let verifier = Arc::new(tls::GatewayVerifier::new(
            policy,
            setup.roots.clone(),
            setup.provider.clone(),
        ));
        let observation = verifier.observation.clone();
        let _ = self.handshake(setup, verifier, tcp).await;
        let seen = observation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fingerprints
            .clone();
        seen.ok_or_else(|| {
            TransportError::new(
                TransportErrorKind::Tls,
                format!("{} presented no certificate", self.url.to_url()),
            )
            .with_fix("check that the port serves TLS")
        })
    }

    async fn handshake(
        &self,
        setup: &TlsSetup,
        verifier: Arc<tls::GatewayVerifier>,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
        let config = rustls::ClientConfig::builder_with_provider(setup.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(self.url.host.clone())
            .map_err(std::io::Error::other)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        match tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }

    /// A TCP connection to the first address that answers.
    async fn tcp(&self) -> Result<tokio::net::TcpStream, TransportError> {
        let addrs = self.resolve().await?;
        let several = addrs.len() > 1;
        let mut last_error = None;
        for addr in addrs {
            let label = if several {
                format!("{addr}: ")
            } else {
                String::new()
            };
            // Fresh SYNs while the path is dead: a path that comes back is used at once.
            match clawlink_core::transport::tcp::connect(addr, self.connect_timeout).await {
                Ok(stream) => {
                    // Small JSON frames: latency matters more than packet count.
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%addr, "tcp connected");
                    return Ok(stream);
                }
                Err(e) => last_error = Some(format!("{label}{e}")),
            }
        }
        Err(TransportError::new(
            TransportErrorKind::Connect,
            format!("cannot reach the gateway at {}: {}", self.url.authority(), last_error.unwrap_or_default()),
        )
        .with_fix(if self.url.is_loopback() {
            "start the gateway on this machine (`openclaw gateway run`) or check the port in the URL"
        } else {
            "check that the gateway listens on that address (gateway.bind) and that no firewall blocks the port"
        }))
    }

    async fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        resolve_gateway(
            &self.url,
            self.insecure_ws_allowed,
            |host, port| async move {
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(Iterator::collect)
            },
        )
        .await
    }
}

#[async_trait]
impl Transport for DirectWs {
    fn name(&self) -> &str {
        NAME
    }

    fn gateway_key(&self) -> String {
        format!(
            "{}://{}",
            if self.url.tls { "wss" } else { "ws" },
            self.url.authority()
        )
    }

    fn describe(&self) -> String {
        self.url.to_url()
    }

    fn gateway_url(&self) -> Option<String> {
        Some(self.url.to_url())
    }

    fn host_identity(&self) -> Option<&dyn clawlink_core::transport::HostIdentity> {
        Some(self)
    }

    /// Loopback, or a pinned wss:// endpoint: where the reference client allows one retry
    /// of a refused shared token with the device token.
    fn is_loopback_to_gateway(&self) -> bool {
        self.url.is_loopback() || self.tls.as_ref().is_some_and(|t| t.policy.has_pin())
    }

    fn diagnosis(&self) -> Option<&dyn clawlink_core::transport::Diagnosis> {
        Some(self)
    }

    async fn connect(&self) -> Result<Connected, TransportError> {
        let tcp = self.tcp().await?;
        let Some(setup) = &self.tls else {
            return Ok(Connected {
                stream: Box::new(tcp),
                request_url: self.url.to_url(),
            });
        };
        let verifier = Arc::new(tls::GatewayVerifier::new(
            setup.policy.clone(),
            setup.roots.clone(),
            setup.provider.clone(),
        ));
        let observation = verifier.observation.clone();
        match self.handshake(setup, verifier, tcp).await {
            Ok(stream) => Ok(Connected {
                stream: Box::new(stream),
                request_url: self.url.to_url(),
            }),
            Err(e) => {
                let seen = observation.lock().unwrap_or_else(|e| e.into_inner());
                Err(tls::handshake_error(
                    &self.url.to_url(),
                    e,
                    &seen,
                    &setup.policy,
                ))
            }
        }
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
    fn a_typed_default_port_is_kept() {
        // The url crate reports no port for `ws://…:80` (80 is ws's default); the gateway's
        // default 18789 must not replace a port the user typed.
        for (input, port) in [
            ("ws://127.0.0.1:80", 80),
            ("ws://127.0.0.1:080/x", 80),
            ("ws:/[::1]:80", 80),
            ("ws://@127.0.0.1:80", 80),
            ("wss://gw.example.com:443", 443),
            ("ws://127.0.0.1:/", DEFAULT_PORT),
            ("ws://127.0.0.1/a:80", DEFAULT_PORT),
            ("ws://[::80]", DEFAULT_PORT),
            ("wss://gw.example.com", 443),
        ] {
            let url = GatewayUrl::parse(input).unwrap();
            assert_eq!(url.port, port, "{input}");
            assert_eq!(GatewayUrl::parse(&url.to_url()).unwrap(), url, "{input}");
        }
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
    }

    /// The URL rule table: (url, allow_insecure_ws, expected: Ok(canonical url) or Err(needle)).
    #[test]
    fn url_rules_table() {
        let cases: &[(&str, bool, Result<&str, &str>)] = &[
            ("ws://127.0.0.1", false, Ok("ws://127.0.0.1:18789/")),
            ("ws://localhost:18789", false, Ok("ws://localhost:18789/")),
            ("ws://[::1]:28789", false, Ok("ws://[::1]:28789/")),
            ("ws://10.1.2.3:18789", false, Ok("ws://10.1.2.3:18789/")),
            ("ws://172.16.0.9", false, Ok("ws://172.16.0.9:18789/")),
            ("ws://172.31.255.1", false, Ok("ws://172.31.255.1:18789/")),
            (
                "ws://192.168.1.20:18789",
                false,
                Ok("ws://192.168.1.20:18789/"),
            ),
            ("ws://169.254.10.10", false, Ok("ws://169.254.10.10:18789/")),
            ("ws://100.64.0.1", false, Ok("ws://100.64.0.1:18789/")),
            (
                "ws://100.127.255.254",
                false,
                Ok("ws://100.127.255.254:18789/"),
            ),
            (
                "ws://[fd7a:115c:a1e0::1]:18789",
                false,
                Ok("ws://[fd7a:115c:a1e0::1]:18789/"),
            ),
            ("ws://[fe80::1]", false, Ok("ws://[fe80::1]:18789/")),
            ("ws://gateway.local", false, Ok("ws://gateway.local:18789/")),
            (
                "ws://box.tail1234.ts.net:18789",
                false,
                Ok("ws://box.tail1234.ts.net:18789/"),
            ),
            (
                "wss://box.tail1234.ts.net",
                false,
                Ok("wss://box.tail1234.ts.net:443/"),
            ),
            (
                "wss://gateway.example.com",
                false,
                Ok("wss://gateway.example.com:443/"),
            ),
            (
                "wss://gateway.example.com:8443/ws",
                false,
                Ok("wss://gateway.example.com:8443/ws"),
            ),
            ("wss://[2001:db8::1]", false, Ok("wss://[2001:db8::1]:443/")),
            ("ws://gateway.example.com", false, Err("plaintext")),
            ("ws://8.8.8.8:18789", false, Err("plaintext")),
            ("ws://100.128.0.1", false, Err("plaintext")),
            ("ws://172.32.0.1", false, Err("plaintext")),
            ("ws://[2001:db8::1]", false, Err("plaintext")),
            (
                "ws://gateway.example.com",
                true,
                Ok("ws://gateway.example.com:18789/"),
            ),
            (
                "wss://user:secret@gateway.example.com",
                false,
                Err("credentials"),
            ),
            (
                "ws://127.0.0.1/?token=secret",
                false,
                Err("token or password"),
            ),
            (
                "wss://gw.example.com/?password=secret",
                false,
                Err("token or password"),
            ),
            ("https://gateway.example.com", false, Err("scheme")),
            ("ws://", false, Err("")),
        ];
        for (input, insecure, expected) in cases {
            let settings = Settings {
                url: input.to_string(),
                connect_timeout_ms: 1000,
                allow_insecure_ws: *insecure,
                tls: TlsSettings::default(),
            };
            let outcome = GatewayUrl::parse(input)
                .and_then(|url| DirectWs::check_url_policy(&url, &settings).map(|()| url.to_url()));
            match (expected, outcome) {
                (Ok(canonical), Ok(url)) => assert_eq!(&url, canonical, "{input}"),
                (Err(needle), Err(e)) => {
                    assert!(e.to_string().contains(needle), "{input}: {e}");
                    assert!(
                        !e.to_string().contains("secret"),
                        "{input}: secret echoed: {e}"
                    );
                }
                (expected, outcome) => panic!("{input}: expected {expected:?}, got {outcome:?}"),
            }
        }
        assert!(cases.len() >= 20);
    }

    #[test]
    fn every_credential_looking_query_key_is_refused_without_echoing_its_value() {
        for key in [
            "auth",
            "Auth",
            "authorization",
            "access_token",
            "bootstrapToken",
            "api-key",
            "secret",
            "client_secret",
            "pwd",
            "passwd",
        ] {
            let err = GatewayUrl::parse(&format!("ws://127.0.0.1:1/?{key}=s3cr3t")).unwrap_err();
            assert_eq!(err.kind, TransportErrorKind::Config, "{key}");
            assert!(err.to_string().contains(key), "{key}: {err}");
            assert!(!err.to_string().contains("s3cr3t"), "{key}: {err}");
        }
        for harmless in ["session=main", "v=3", "mode=webchat"] {
            GatewayUrl::parse(&format!("ws://127.0.0.1:1/?{harmless}")).unwrap();
        }
    }

    /// A stand-in for DNS: answers `addrs` for any name, or panics when it must not be asked.
    fn answer(
        addrs: &'static [&'static str],
    ) -> impl FnOnce(String, u16) -> std::future::Ready<std::io::Result<Vec<SocketAddr>>> {
        move |_host, port| {
            std::future::ready(Ok(addrs
                .iter()
                .map(|a| SocketAddr::new(a.parse().unwrap(), port))
                .collect()))
        }
    }

    async fn resolved(
        url: &str,
        insecure: bool,
        addrs: &'static [&'static str],
    ) -> Result<Vec<String>, TransportError> {
        let url = GatewayUrl::parse(url).unwrap();
        resolve_gateway(&url, insecure, answer(addrs))
            .await
            .map(|list| list.iter().map(|a| a.ip().to_string()).collect())
    }

    #[tokio::test]
    async fn localhost_names_are_loopback_and_never_reach_dns() {
        for url in [
            "ws://evil.localhost:1",
            "ws://localhost:1",
            "wss://a.b.LOCALHOST.:1",
        ] {
            let url = GatewayUrl::parse(url).unwrap();
            let addrs = resolve_gateway(&url, false, |host, _| {
                panic!("{host} was sent to DNS");
                #[allow(unreachable_code)]
                std::future::ready(Ok(Vec::new()))
            })
            .await
            .unwrap();
            assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 1));
            assert!(url.is_loopback());
        }
    }

    #[tokio::test]
    async fn plaintext_names_must_resolve_inside_their_range() {
        // (url, allow_insecure_ws, DNS answer, expected: Ok(addresses kept) or Err(needle))
        type Case = (
            &'static str,
            bool,
            &'static [&'static str],
            Result<&'static [&'static str], &'static str>,
        );
        let cases: &[Case] = &[
            (
                "ws://gw.local",
                false,
                &["192.168.1.5"],
                Ok(&["192.168.1.5"]),
            ),
            (
                "ws://gw.local",
                false,
                &["fe80::1", "fd00::2"],
                Ok(&["fe80::1", "fd00::2"]),
            ),
            (
                "ws://gw.local",
                false,
                &["203.0.113.5", "10.0.0.7"],
                Ok(&["10.0.0.7"]),
            ),
            (
                "ws://gw.local",
                false,
                &["203.0.113.5"],
                Err("203.0.113.5, not a loopback, private or link-local"),
            ),
            (
                "ws://gw.local",
                false,
                &["100.64.0.1"],
                Err("private or link-local"),
            ),
            (
                "ws://box.tail1.ts.net",
                false,
                &["100.101.102.103"],
                Ok(&["100.101.102.103"]),
            ),
            (
                "ws://box.tail1.ts.net",
                false,
                &["fd7a:115c:a1e0::5"],
                Ok(&["fd7a:115c:a1e0::5"]),
            ),
            (
                "ws://box.tail1.ts.net",
                false,
                &["192.168.1.5"],
                Err("tailnet address"),
            ),
            (
                "ws://box.tail1.ts.net",
                false,
                &["fd00::5"],
                Err("tailnet address"),
            ),
            // TLS protects the traffic, and the break-glass setting waives the range.
            (
                "wss://gw.local",
                false,
                &["203.0.113.5"],
                Ok(&["203.0.113.5"]),
            ),
            (
                "ws://gw.local",
                true,
                &["203.0.113.5"],
                Ok(&["203.0.113.5"]),
            ),
            // Not a by-name exception: check_url_policy already decided.
            ("ws://10.0.0.1", false, &["10.0.0.1"], Ok(&["10.0.0.1"])),
        ];
        for (url, insecure, answer, expected) in cases {
            let outcome = resolved(url, *insecure, answer).await;
            match (expected, outcome) {
                (Ok(kept), Ok(got)) => assert_eq!(&got, kept, "{url} {answer:?}"),
                (Err(needle), Err(e)) => {
                    assert_eq!(e.kind, TransportErrorKind::Config, "{url}");
                    assert!(e.to_string().contains(needle), "{url}: {e}");
                    assert!(e.fix.is_some(), "{url}");
                }
                (expected, outcome) => {
                    panic!("{url} {answer:?}: expected {expected:?}, got {outcome:?}")
                }
            }
        }
    }

    #[test]
    fn a_pin_on_plaintext_ws_is_a_configuration_error() {
        let settings = DirectWs::parse_settings(&serde_json::json!({
            "url": "ws://127.0.0.1:1",
            "tls": {"fingerprint": "sha256:".to_owned() + &"ab".repeat(32)}
        }))
        .unwrap();
        let url = GatewayUrl::parse(&settings.url).unwrap();
        let err = DirectWs::check_url_policy(&url, &settings).unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Config);
        assert!(err.to_string().contains("no certificate to check"), "{err}");
    }

    #[tokio::test]
    async fn connect_refused_is_a_retryable_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let transport = DirectWs::new(
            GatewayUrl::parse(&format!("ws://127.0.0.1:{port}")).unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
        let err = transport.connect().await.unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Connect);
        assert!(err.kind.is_retryable());
        assert!(err.fix.unwrap().contains("openclaw gateway run"));
    }

    #[test]
    fn every_setting_is_in_the_example_and_the_error_hint() {
        use clawlink_core::registry::settings_keys;
        let keys: Vec<&str> = settings_keys::<Settings>()
            .iter()
            .chain(settings_keys::<TlsSettings>())
            .copied()
            .filter(|k| *k != "tls")
            .collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        for key in &keys {
            assert!(
                EXAMPLE_CONFIG
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
                "{key} missing from the example config"
            );
        }
        let tls_table = EXAMPLE_CONFIG.find("direct_ws.tls]").unwrap();
        for key in settings_keys::<Settings>().iter().filter(|k| **k != "tls") {
            let at = EXAMPLE_CONFIG.find(&format!("{key} =")).unwrap();
            assert!(at < tls_table, "{key} is shown inside the tls table");
        }
        let error = DirectWs::parse_settings(&serde_json::json!({"ulr": "x"})).unwrap_err();
        for key in &keys {
            assert!(
                error.fix.as_deref().unwrap().contains(key),
                "{key}: {error:?}"
            );
        }
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
