//! `dashboard`'s own loopback forwards of the gateway port and the widget sandbox, served by the app's one forward loop while the browser uses them, for any transport that offers `GatewayPorts`.
//!
//! Connections of other local users are turned away before any byte reaches the gateway
//! host: the page signs in with this user's credentials.

use std::sync::Arc;
use std::time::Duration;

use clawlink_core::transport::Transport;
use tokio::time::Instant;

use super::socket_owner::{self, Owner};
use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::forwards::{self, Activity, BoundForward, ForwardSpec, ServeOptions};

/// Own forwards: how long to wait for the browser's first connection…
const FIRST_USE_WAIT: Duration = Duration::from_secs(180);
/// …and how long they outlive the last one (a page reload reconnects within this).
const IDLE_GRACE: Duration = Duration::from_secs(60);

/// Loopback forwards of the gateway port and of the widget sandbox (port + 1), served by
/// this command while the browser uses them.
pub(super) struct OwnForwards {
    transport: Arc<dyn Transport>,
    pub(super) port: u16,
    forwards: [BoundForward; 2],
}

impl OwnForwards {
    /// Binds the preferred local port and the one after it (the sandbox must be at
    /// port + 1); when either is taken, a free pair.
    pub(super) async fn bind(transport: Arc<dyn Transport>) -> Result<Self, Failure> {
        let ports = transport.ports().ok_or_else(|| {
            Failure::config(
                format!(
                    "the {} transport offers no ports on the gateway host to forward",
                    transport.name()
                ),
                None,
            )
        })?;
        let remote = ports.gateway_port();
        let preferred = ports.preferred_local_port();
        let specs = [
            ForwardSpec {
                purpose: "gateway".into(),
                preferred_local_port: preferred,
                remote_port: remote,
            },
            ForwardSpec {
                purpose: "widget sandbox".into(),
                preferred_local_port: preferred.saturating_add(1),
                remote_port: remote.saturating_add(1),
            },
        ];
        let Some(forwards) = forwards::bind_pair_v4(preferred, specs)
            .await
            .map_err(Failure::from)?
        else {
            return Err(Failure::config(
                "no free pair of loopback ports for the dashboard's forwards",
                Some("free a port and its successor, or pass --local-port N".into()),
            ));
        };
        let port = forwards[0].local_port;
        if let Some(reason) = &forwards[0].fallback_reason {
            eprintln!("note: {reason}; forwarding on {port} instead");
        }
        Ok(Self {
            transport,
            port,
            forwards,
        })
    }

    /// Serves until the browser is done: no connection for [`IDLE_GRACE`] after the last
    /// one closed (or none within [`FIRST_USE_WAIT`]), or Ctrl-C.
    pub(super) async fn serve_while_used(self, global: &GlobalArgs) {
        if !global.quiet {
            crate::terminal::eprintln_safe!(
                "forwarding the dashboard to {} on 127.0.0.1:{} (and {} for widgets) while the page is open; Ctrl-C to stop",
                self.transport
                    .ports()
                    .map_or_else(|| self.transport.describe(), |p| p.host_label()),
                self.port,
                self.port.saturating_add(1)
            );
        }
        let activity = Arc::new(Activity::default());
        let admit: forwards::Admit = Arc::new(|local, peer| {
            if let Owner::Other(uid) = socket_owner::loopback_peer(local, peer) {
                tracing::warn!(
                    uid,
                    "turned away another local user's connection to the dashboard forward"
                );
                return false;
            }
            true
        });
        let serving = tokio::spawn(forwards::serve(
            self.transport.clone(),
            self.forwards.into(),
            ServeOptions {
                admit: Some(admit),
                activity: Some(activity.clone()),
            },
        ));
        let mut used = false;
        let mut idle_since = Instant::now();
        loop {
            let busy = activity.open_connections() > 0;
            if busy {
                used = true;
                idle_since = Instant::now();
            }
            let limit = if used { IDLE_GRACE } else { FIRST_USE_WAIT };
            let wake = tokio::select! {
                _ = crate::signals::shutdown_signal() => break,
                _ = activity.changed.notified() => true,
                _ = tokio::time::sleep_until(idle_since + limit), if !busy => false,
            };
            if !wake && activity.open_connections() == 0 {
                if !used && !global.quiet {
                    eprintln!(
                        "no browser came within {} s; closing the forwards",
                        FIRST_USE_WAIT.as_secs()
                    );
                }
                break;
            }
        }
        serving.abort();
        let _ = serving.await;
        self.transport.close().await;
    }
}
