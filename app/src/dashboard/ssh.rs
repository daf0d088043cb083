//! `clawlink dashboard` over SSH: reusing a forward of the same gateway, minting the one-time sign-in on the host, and serving forwards of its own while the page is open.
//!
//! A listener on the preferred local port is probed (with this profile's credentials) only
//! when the kernel says this user holds it: anything another local user listens on gets no
//! byte from us, and our own forwards turn away connections of other users.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clawlink_core::gateway::GatewayClient;
use clawlink_core::transport::{Transport, TransportEnv};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::socket_owner::{self, Owner};
use super::Route;
use crate::cli::GlobalArgs;
use crate::connect;
use crate::failure::Failure;
use crate::prompt::AppPrompter;
use crate::settings::Settings;

/// Own forwards: how long to wait for the browser's first connection…
const FIRST_USE_WAIT: Duration = Duration::from_secs(180);
/// …and how long they outlive the last one (a page reload reconnects within this).
const IDLE_GRACE: Duration = Duration::from_secs(60);

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
    if tunnel.openssh().is_some() {
        return Err(Failure::config(
            "the openssh backend cannot open forwards for the dashboard by itself",
            Some("start `clawlink tunnel` or `clawlink up` for this profile first, then run `clawlink dashboard`".into()),
        ));
    }
    tunnel.session().await.map_err(Failure::from)?;
    Ok(Route::Own(OwnForwards::bind(tunnel).await?))
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

/// Loopback forwards of the gateway port and of the widget sandbox (port + 1), served by
/// this command while the browser uses them.
pub(super) struct OwnForwards {
    tunnel: Arc<clawlink_transport_ssh::SshTunnel>,
    pub(super) port: u16,
    listeners: Vec<(TcpListener, u16)>,
}

impl OwnForwards {
    /// Binds the preferred local port and the one after it (the sandbox must be at
    /// port + 1); when either is taken, a free pair.
    async fn bind(tunnel: Arc<clawlink_transport_ssh::SshTunnel>) -> Result<Self, Failure> {
        let remote = tunnel.settings().remote_port;
        let preferred = tunnel.settings().local_port;
        let mut candidates = vec![preferred];
        for _ in 0..20 {
            let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(|e| Failure::config(format!("cannot listen on loopback: {e}"), None))?;
            if let Ok(addr) = probe.local_addr() {
                candidates.push(addr.port());
            }
        }
        for port in candidates {
            let Some(sandbox) = port.checked_add(1) else {
                continue;
            };
            let (Ok(gateway), Ok(widgets)) = (
                TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await,
                TcpListener::bind((Ipv4Addr::LOCALHOST, sandbox)).await,
            ) else {
                continue;
            };
            if port != preferred {
                eprintln!("note: 127.0.0.1:{preferred} (or the port after it) is in use; forwarding on {port} instead");
            }
            return Ok(Self {
                tunnel,
                port,
                listeners: vec![(gateway, remote), (widgets, remote.saturating_add(1))],
            });
        }
        Err(Failure::config(
            "no free pair of loopback ports for the dashboard's forwards",
            Some("free a port and its successor, or pass --local-port N".into()),
        ))
    }

    /// Serves until the browser is done: no connection for [`IDLE_GRACE`] after the last
    /// one closed (or none within [`FIRST_USE_WAIT`]), or Ctrl-C.
    pub(super) async fn serve_while_used(self, global: &GlobalArgs) {
        if !global.quiet {
            eprintln!(
                "forwarding the dashboard over SSH on 127.0.0.1:{} (and {} for widgets) while the page is open; Ctrl-C to stop",
                self.port,
                self.port.saturating_add(1)
            );
        }
        let active = Arc::new(AtomicUsize::new(0));
        let changed = Arc::new(Notify::new());
        let mut accept_loops = Vec::new();
        for (listener, remote_port) in self.listeners {
            let tunnel = self.tunnel.clone();
            let active = active.clone();
            let changed = changed.clone();
            accept_loops.push(tokio::spawn(async move {
                let local = listener.local_addr().ok();
                loop {
                    let Ok((socket, peer)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if let Some(Owner::Other(uid)) =
                        local.map(|local| socket_owner::loopback_peer(local, peer))
                    {
                        tracing::warn!(
                            uid,
                            "turned away another local user's connection to the dashboard forward"
                        );
                        continue;
                    }
                    active.fetch_add(1, Ordering::SeqCst);
                    changed.notify_one();
                    let tunnel = tunnel.clone();
                    let active = active.clone();
                    let changed = changed.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pipe(&tunnel, socket, remote_port).await {
                            tracing::debug!(error = %e, "dashboard connection ended");
                        }
                        active.fetch_sub(1, Ordering::SeqCst);
                        changed.notify_one();
                    });
                }
            }));
        }
        let mut used = false;
        let mut idle_since = Instant::now();
        loop {
            let busy = active.load(Ordering::SeqCst) > 0;
            if busy {
                used = true;
                idle_since = Instant::now();
            }
            let limit = if used { IDLE_GRACE } else { FIRST_USE_WAIT };
            let wake = tokio::select! {
                _ = crate::signals::shutdown_signal() => break,
                _ = changed.notified() => true,
                _ = tokio::time::sleep_until(idle_since + limit), if !busy => false,
            };
            if !wake && active.load(Ordering::SeqCst) == 0 {
                if !used && !global.quiet {
                    eprintln!(
                        "no browser came within {} s; closing the forwards",
                        FIRST_USE_WAIT.as_secs()
                    );
                }
                break;
            }
        }
        for task in accept_loops {
            task.abort();
        }
        self.tunnel.close().await;
    }
}

async fn pipe(
    tunnel: &clawlink_transport_ssh::SshTunnel,
    mut socket: TcpStream,
    remote_port: u16,
) -> Result<(), String> {
    let _ = socket.set_nodelay(true);
    let channel = tunnel
        .open_forward(remote_port)
        .await
        .map_err(|e| e.message)?;
    let mut stream = channel.into_stream();
    tokio::io::copy_bidirectional(&mut socket, &mut stream)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
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
