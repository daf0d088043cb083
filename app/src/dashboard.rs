//! `clawlink dashboard`: the gateway's own Control UI in the browser, through the active transport, signed in the way `openclaw dashboard` does it.
//!
//! Where the browser goes: a running agent's (or `clawlink tunnel`'s) loopback forward of
//! the gateway port, else forwards this command opens itself and serves while the page
//! is open, else — direct transports — the gateway's own URL.
//!
//! How it signs in (from openclaw's `commands/dashboard.ts` and `control-ui-handoff.ts`):
//! `openclaw dashboard` mints a one-time, ten-minute "bootstrap" token with the Control
//! UI owner profile on the gateway host and puts it in the URL fragment
//! (`#bootstrapToken=…&bootstrapProfile=owner&gatewayUrl=…`); a fragment never reaches a
//! server log. Over SSH we run exactly that (`openclaw dashboard --json` on the host) and
//! point its URL at our forward. Without the remote CLI (direct transports, a host
//! without `openclaw` on PATH) the fallback is the one openclaw documents: the gateway
//! token as `#token=` in the fragment. Neither reaches argv, logs or the terminal: the
//! browser gets the `file://` URL of a page only this user can read, which leads through a
//! one-use loopback page to the signed-in URL (`browser`). `--print` prints the bootstrap URL (one-time) or, for the token fallback, the URL
//! without the secret.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clawlink_core::transport::{Capability, Transport};
use secrecy::ExposeSecret;
use serde_json::Value;

pub use crate::cli::DashboardArgs;
use crate::cli::GlobalArgs;
use crate::connect;
use crate::failure::Failure;
use crate::settings::Settings;

mod browser;
mod existing_forward;
mod own_forwards;
mod sign_in;
mod socket_owner;
use existing_forward::reuse_or_own;
use own_forwards::OwnForwards;
use sign_in::mint_bootstrap;

/// Where the browser reaches the gateway.
enum Route {
    /// A loopback forward someone else serves (an agent, `clawlink tunnel`).
    Forwarded { port: u16, by: &'static str },
    /// Forwards this command serves itself.
    Own(OwnForwards),
    /// The gateway's own URL (direct transports).
    Direct { http: String, ws: String },
}

impl Route {
    /// Whether this command serves the forwards itself (over the transport).
    fn serves_forwards(&self) -> bool {
        !matches!(self, Route::Forwarded { .. } | Route::Direct { .. })
    }

    fn http_base(&self) -> String {
        match self {
            Route::Forwarded { port, .. } => format!("http://127.0.0.1:{port}/"),
            Route::Own(own) => format!("http://127.0.0.1:{}/", own.port),
            Route::Direct { http, .. } => http.clone(),
        }
    }

    fn ws_url(&self) -> String {
        match self {
            Route::Forwarded { port, .. } => format!("ws://127.0.0.1:{port}"),
            Route::Own(own) => format!("ws://127.0.0.1:{}", own.port),
            Route::Direct { ws, .. } => ws.clone(),
        }
    }
}

/// How the browser signs in.
enum SignIn {
    /// A one-time bootstrap token minted on the gateway host.
    Bootstrap { token: String, profile: String },
    /// The gateway token (`#token=`), when no bootstrap token could be minted.
    Token(secrecy::SecretString),
    /// Nothing to hand over (password auth without the remote CLI): the page asks.
    None { why: String },
}

/// `clawlink dashboard`.
pub async fn dashboard(
    global: &GlobalArgs,
    settings: &Settings,
    args: &DashboardArgs,
) -> Result<()> {
    // One transport (one SSH session) for the route, the sign-in and our own forwards.
    let (route, transport) = resolve_route(settings).await?;
    let transport = match transport {
        Some(transport) => transport,
        None => connect::build_transport(settings)?,
    };
    let sign_in = sign_in(settings, transport.as_ref()).await?;
    if !route.serves_forwards() {
        // Nothing else runs over it; our own forwards close it when the page is done.
        transport.close().await;
    }
    let base = route.http_base();
    let ws = route.ws_url();
    if let Route::Forwarded { port, by } = &route {
        tracing::info!(port, by, "the dashboard goes through an existing forward");
    }
    warn_about_sandbox(transport.ports().map(|p| p.gateway_port()), &route);

    if args.print {
        let printed = match &sign_in {
            SignIn::Bootstrap { token, profile } => signed_url(
                &base,
                &ws,
                &[("bootstrapToken", token), ("bootstrapProfile", profile)],
            ),
            SignIn::Token(_) => {
                eprintln!("note: the gateway token is not printed; the Control UI asks for it (or open the dashboard without --print)");
                base.clone()
            }
            SignIn::None { why } => {
                crate::terminal::eprintln_safe!("note: {why}");
                base.clone()
            }
        };
        if global.json {
            println!(
                "{}",
                serde_json::json!({"url": printed, "signedIn": matches!(sign_in, SignIn::Bootstrap { .. })})
            );
        } else {
            println!("{printed}");
        }
    } else {
        let wait = Duration::from_secs(args.wait);
        match &sign_in {
            SignIn::Bootstrap { token, profile } => {
                let target = signed_url(
                    &base,
                    &ws,
                    &[("bootstrapToken", token), ("bootstrapProfile", profile)],
                );
                browser::open_signed_in(global, target, wait).await?
            }
            SignIn::Token(token) => {
                let target = signed_url(&base, &ws, &[("token", token.expose_secret())]);
                browser::open_signed_in(global, target, wait).await?
            }
            SignIn::None { why } => {
                crate::terminal::eprintln_safe!("note: {why}");
                browser::open_plain(global, &base).await?
            }
        }
    }
    if let Route::Own(own) = route {
        own.serve_while_used(global).await;
    }
    Ok(())
}

/// Chooses how the browser reaches the gateway; with the transport it built for that, if any.
async fn resolve_route(
    settings: &Settings,
) -> Result<(Route, Option<Arc<dyn Transport>>), Failure> {
    if let Some(status) = crate::agent::live_status(settings).await? {
        let forwarded = status
            .pointer("/transport/localEndpoints")
            .and_then(Value::as_array)
            .and_then(|list| {
                list.iter()
                    .find(|e| e.get("purpose").and_then(Value::as_str) == Some("gateway"))
            })
            .and_then(|e| e.get("url").and_then(Value::as_str))
            .and_then(loopback_port);
        if let Some(port) = forwarded {
            return Ok((
                Route::Forwarded {
                    port,
                    by: "the running agent",
                },
                None,
            ));
        }
    }
    let transport = connect::build_transport(settings)?;
    if transport.ports().is_some() {
        let route = reuse_or_own(settings, transport.clone()).await?;
        return Ok((route, Some(transport)));
    }
    Ok((direct_route(transport.as_ref())?, Some(transport)))
}

/// The gateway's own address, for a transport that reaches it without a go-between.
fn direct_route(transport: &dyn Transport) -> Result<Route, Failure> {
    let Some(ws) = transport.gateway_url() else {
        let refusal = clawlink_core::registry::refuse_missing(
            "the dashboard (the gateway's HTTP port in a browser)",
            transport.name(),
            Capability::GatewayPorts,
        );
        let fix = format!(
            "{}; or a direct URL profile (--url); or start `clawlink up` with a transport that forwards ports",
            refusal.fix.clone().unwrap_or_default()
        );
        return Err(Failure::from(refusal.with_fix(fix)));
    };
    let http = if let Some(rest) = ws.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = ws.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        ws.clone()
    };
    let http = if http.ends_with('/') {
        http
    } else {
        format!("{http}/")
    };
    Ok(Route::Direct { http, ws })
}

/// The port of a `ws://127.0.0.1:PORT` endpoint.
fn loopback_port(url: &str) -> Option<u16> {
    let rest = url
        .strip_prefix("ws://127.0.0.1:")
        .or_else(|| url.strip_prefix("http://127.0.0.1:"))?;
    rest.trim_end_matches('/').parse().ok()
}

/// The sandbox iframes of the Control UI load from the gateway's own sandbox port number
/// (the gateway announces `sandboxPort`), so through a forward they work only when the
/// local port is the remote one. `gateway_port`: the gateway's port on its host, when the
/// transport forwards ports.
fn warn_about_sandbox(gateway_port: Option<u16>, route: &Route) {
    let Some(remote) = gateway_port else {
        return;
    };
    let local = match route {
        Route::Forwarded { port, .. } => Some(*port),
        Route::Own(own) => Some(own.port),
        Route::Direct { .. } => None,
    };
    if let Some(local) = local.filter(|l| *l != remote) {
        eprintln!(
            "note: the dashboard is on local port {local} but the gateway's port is {remote}; \
             canvas widgets (sandbox port {}) load only when both are the same — use --local-port {remote} when it is free",
            u32::from(remote) + 1
        );
    }
}

/// Gets a sign-in for the browser: a bootstrap token minted on the gateway host when the
/// transport runs commands there, else the gateway token.
async fn sign_in(settings: &Settings, transport: &dyn Transport) -> Result<SignIn, Failure> {
    if let Some(commands) = transport.commands() {
        eprintln!(
            "minting a one-time sign-in on {} (`openclaw dashboard`)…",
            commands.host()
        );
        match mint_bootstrap(commands).await {
            Ok(sign_in) => return Ok(sign_in),
            Err(why) => crate::terminal::eprintln_safe!(
                "note: {why}; signing in with the gateway token instead"
            ),
        }
    }
    let (credentials, _) = connect::credentials(settings).await?;
    Ok(match (credentials.token, credentials.password) {
        (Some(token), _) => SignIn::Token(token),
        (None, Some(_)) => SignIn::None {
            why: "the Control UI asks for the gateway password (openclaw never puts a password in a URL)".into(),
        },
        (None, None) => SignIn::None {
            why: "no gateway token is configured; the Control UI asks for one".into(),
        },
    })
}

/// `key=value&…` of a URL fragment, decoded as the browser's `URLSearchParams` does.
fn parse_fragment(fragment: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(fragment.as_bytes())
        .into_owned()
        .collect()
}

/// Everything but RFC 3986's unreserved characters is escaped in fragment values.
const FRAGMENT_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, FRAGMENT_VALUE).to_string()
}

/// `BASE#k=v&…&gatewayUrl=WS`: the sign-in in the fragment (never sent to a server), and
/// the gateway URL the page should use (the forward, not the host's own port).
fn signed_url(base: &str, ws: &str, params: &[(&str, &str)]) -> String {
    let mut fragment: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    fragment.push(format!("gatewayUrl={}", percent_encode(ws)));
    format!("{base}#{}", fragment.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openclaw_browser_url_fragment_is_read() {
        let params = parse_fragment(
            "bootstrapToken=abc_DEF-1&bootstrapProfile=owner&gatewayUrl=ws%3A%2F%2F127.0.0.1%3A28789",
        );
        assert_eq!(
            params,
            vec![
                ("bootstrapToken".to_owned(), "abc_DEF-1".to_owned()),
                ("bootstrapProfile".to_owned(), "owner".to_owned()),
                ("gatewayUrl".to_owned(), "ws://127.0.0.1:28789".to_owned()),
            ]
        );
        assert_eq!(
            parse_fragment("a=100%&b=a%2&c=x+y"),
            vec![
                ("a".to_owned(), "100%".to_owned()),
                ("b".to_owned(), "a%2".to_owned()),
                ("c".to_owned(), "x y".to_owned()),
            ]
        );
    }

    #[test]
    fn signed_urls_point_the_page_at_the_forward() {
        let url = signed_url(
            "http://127.0.0.1:18789/",
            "ws://127.0.0.1:18789",
            &[("bootstrapToken", "t/k+n"), ("bootstrapProfile", "owner")],
        );
        assert_eq!(
            url,
            "http://127.0.0.1:18789/#bootstrapToken=t%2Fk%2Bn&bootstrapProfile=owner&gatewayUrl=ws%3A%2F%2F127.0.0.1%3A18789"
        );
        let params = parse_fragment(url.split_once('#').unwrap().1);
        assert_eq!(params[0].1, "t/k+n");
    }

    #[test]
    fn loopback_endpoints_and_direct_urls() {
        assert_eq!(loopback_port("ws://127.0.0.1:18789"), Some(18789));
        assert_eq!(loopback_port("http://127.0.0.1:18790/"), Some(18790));
        assert_eq!(loopback_port("ws://10.0.0.1:18789"), None);
    }
}
