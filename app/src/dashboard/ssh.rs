//! `clawlink dashboard` over SSH: reusing a forward of the same gateway, minting the one-time sign-in on the host, or else forwards of its own (`own_forwards`) while the page is open.
//!
//! A listener on the preferred local port is probed (with this profile's credentials) only
//! when the kernel says this user holds it: anything another local user listens on gets no
//! byte from us, and our own forwards turn away connections of other users.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use clawlink_core::gateway::GatewayClient;
use clawlink_core::transport::{Transport, TransportEnv};
use tokio::net::TcpStream;

use super::own_forwards::OwnForwards;
use super::socket_owner::{self, Owner};
use super::Route;
use crate::cli::GlobalArgs;
use crate::connect;
use crate::failure::Failure;
use crate::prompt::AppPrompter;
use crate::settings::Settings;

pub(super) async fn ssh_route(
    global: &GlobalArgs,
    settings: &Settings,
    tunnel: Arc<clawlink_transport_ssh::SshTunnel>,
) -> Result<Route, Failure> {
    let preferred = tunnel.settings().local_port;
    match socket_owner::loopback_listener(preferred) {
        Owner::Other(uid) => eprintln!(
            "note: another local user (uid {uid}) listens on 127.0.0.1:{preferred}; nothing is sent there — opening a forward of our own"
        ),
        Owner::Unknown if listening(preferred).await => eprintln!(
            "note: cannot tell who listens on 127.0.0.1:{preferred}; nothing is sent there — opening a forward of our own"
        ),
        Owner::Unknown => {}
        Owner::Me => match same_gateway(global, settings, &tunnel, preferred).await {
            Ok(true) => {
                return Ok(Route::Forwarded {
                    port: preferred,
                    by: "an existing forward (`clawlink tunnel`)",
                })
            }
            Ok(false) => eprintln!(
                "note: 127.0.0.1:{preferred} serves another gateway; opening a forward of our own"
            ),
            Err(e) => {
                tracing::info!(error = %e, "could not identify the gateway on 127.0.0.1:{preferred}")
            }
        },
    }
    let transport: Arc<dyn Transport> = tunnel;
    if let Some(supervision) = transport.supervision() {
        // Fail fast (host key, auth) before binding anything.
        supervision.restore().await.map_err(Failure::from)?;
    }
    Ok(Route::Own(OwnForwards::bind(transport).await?))
}

/// Whether the gateway behind 127.0.0.1:`port` is the one the SSH tunnel reaches: the
/// same process answers both (same `server.bootId`). Sends the profile's credentials
/// there: only for a listener this user holds.
async fn same_gateway(
    global: &GlobalArgs,
    settings: &Settings,
    tunnel: &Arc<clawlink_transport_ssh::SshTunnel>,
    port: u16,
) -> Result<bool, Failure> {
    let direct = clawlink_core::registry::transport("direct-ws").ok_or_else(|| {
        Failure::config(
            "this build has no direct-ws transport to probe the forward",
            None,
        )
    })?;
    let env = TransportEnv {
        prompter: Arc::new(AppPrompter::from_environment()),
    };
    let local: Arc<dyn Transport> = (direct.factory)(
        &serde_json::json!({"url": format!("ws://127.0.0.1:{port}")}),
        &env,
    )
    .map_err(Failure::from)?;
    let options = connect::operator_options(global, settings).await?;
    let boot_id = |client: &GatewayClient| client.hello().and_then(|h| h.server.boot_id.clone());
    let theirs = tokio::time::timeout(
        Duration::from_secs(10),
        GatewayClient::connect(local, options.clone()),
    )
    .await
    .map_err(|_| {
        Failure::agent(
            format!("127.0.0.1:{port} did not answer as a gateway"),
            None,
        )
    })?
    .map_err(Failure::from)?;
    let their_boot = boot_id(&theirs);
    theirs.shutdown().await;
    let transport: Arc<dyn Transport> = tunnel.clone();
    let ours = GatewayClient::connect(transport, options)
        .await
        .map_err(Failure::from)?;
    let our_boot = boot_id(&ours);
    // The tunnel's SSH session stays open: the sign-in mints over it, the own forwards use it.
    ours.shutdown().await;
    Ok(their_boot.is_some() && their_boot == our_boot)
}

/// Whether something accepts connections on 127.0.0.1:`port`.
async fn listening(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        )
        .await,
        Ok(Ok(_))
    )
}
