//! `clawlink dashboard` through a transport that forwards ports: reusing a loopback forward of the same gateway (`clawlink tunnel`'s), or else forwards of its own (`own_forwards`) while the page is open.
//!
//! A listener on the preferred local port is probed (with this profile's credentials) only
//! when the kernel says this user holds it: anything another local user listens on gets no
//! byte from us, and our own forwards turn away connections of other users.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clawlink_core::gateway::GatewayClient;
use clawlink_core::transport::{
    Connected, GatewayPorts, Transport, TransportError, TransportErrorKind,
};
use tokio::net::TcpStream;

use super::own_forwards::OwnForwards;
use super::socket_owner::{self, Owner};
use super::Route;
use crate::connect;
use crate::failure::Failure;
use crate::settings::Settings;

/// The route through `transport`, which offers [`GatewayPorts`]: an existing forward of the
/// same gateway on the preferred local port, else forwards of our own.
pub(super) async fn reuse_or_own(
    settings: &Settings,
    transport: Arc<dyn Transport>,
) -> Result<Route, Failure> {
    let preferred = transport
        .ports()
        .map(GatewayPorts::preferred_local_port)
        .ok_or_else(|| {
            Failure::config(
                "the dashboard's forwards need a transport that forwards ports",
                None,
            )
        })?;
    match socket_owner::loopback_listener(preferred) {
        Owner::Other(uid) => eprintln!(
            "note: another local user (uid {uid}) listens on 127.0.0.1:{preferred}; nothing is sent there — opening a forward of our own"
        ),
        Owner::Unknown if listening(preferred).await => eprintln!(
            "note: cannot tell who listens on 127.0.0.1:{preferred}; nothing is sent there — opening a forward of our own"
        ),
        Owner::Unknown => {}
        Owner::Me => match same_gateway(settings, &transport, preferred).await {
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
    if let Some(supervision) = transport.supervision() {
        // Fail fast (host key, auth) before binding anything.
        supervision.restore().await.map_err(Failure::from)?;
    }
    Ok(Route::Own(OwnForwards::bind(transport).await?))
}

/// Whether the gateway behind 127.0.0.1:`port` is the one `transport` reaches: the
/// same process answers both (same `server.bootId`). Sends the profile's credentials
/// there: only for a listener this user holds.
async fn same_gateway(
    settings: &Settings,
    transport: &Arc<dyn Transport>,
    port: u16,
) -> Result<bool, Failure> {
    let local: Arc<dyn Transport> = Arc::new(LoopbackForward { port });
    let options = connect::operator_options(settings).await?;
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
    let ours = GatewayClient::connect(transport.clone(), options)
        .await
        .map_err(Failure::from)?;
    let our_boot = boot_id(&ours);
    // The transport's session stays open: the sign-in mints over it, the own forwards use it.
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

/// A forward on this machine's loopback, reached as it is (the probe of [`same_gateway`]).
/// Its gateway key is the one a direct `ws://127.0.0.1:PORT` profile uses, so a device
/// token stored for that address is the one offered.
struct LoopbackForward {
    port: u16,
}

#[async_trait]
impl Transport for LoopbackForward {
    fn name(&self) -> &str {
        "loopback-forward"
    }

    fn gateway_key(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn describe(&self) -> String {
        self.gateway_key()
    }

    fn is_loopback_to_gateway(&self) -> bool {
        true
    }

    async fn connect(&self) -> Result<Connected, TransportError> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .await
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Connect,
                    format!("127.0.0.1:{}: {e}", self.port),
                )
            })?;
        Ok(Connected {
            stream: Box::new(stream),
            request_url: format!("ws://127.0.0.1:{}/", self.port),
        })
    }
}
