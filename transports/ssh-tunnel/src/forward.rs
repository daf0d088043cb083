//! Local forwards for other programs (`clawlink tunnel`, like `ssh -N -L`): loopback listeners whose connections ride SSH channels.
//!
//! Each accepted connection opens its own `direct-tcpip` channel on the shared SSH session,
//! so the listeners outlive any one SSH connection: when SSH reconnects, the same local ports
//! keep working and nothing has to be re-bound. Listeners bind 127.0.0.1 and ::1 only, never
//! another address. With the openssh backend clawlink still holds the listeners itself and
//! relays each connection to the system ssh's private Unix socket ([`serve_to_sockets`]), so
//! no port is ever released for another local user to grab.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use clawlink_core::transport::{LocalEndpoint, TransportError, TransportErrorKind};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::SshTunnel;

/// One forward to set up.
#[derive(Debug, Clone)]
pub struct ForwardSpec {
    /// What it reaches ("gateway", "widget sandbox").
    pub purpose: String,
    pub preferred_local_port: u16,
    pub remote_port: u16,
}

/// A forward whose listeners are bound.
#[derive(Debug)]
pub struct BoundForward {
    pub spec: ForwardSpec,
    pub local_port: u16,
    /// Why the preferred port was not used, when it was not.
    pub fallback_reason: Option<String>,
    listeners: Vec<TcpListener>,
}

impl BoundForward {
    /// The URLs other programs should use.
    pub fn endpoints(&self) -> Vec<LocalEndpoint> {
        let scheme = if self.spec.purpose == "gateway" {
            "ws"
        } else {
            "http"
        };
        vec![LocalEndpoint {
            purpose: self.spec.purpose.clone(),
            url: format!("{scheme}://127.0.0.1:{}", self.local_port),
        }]
    }

    /// The addresses actually listened on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Binds 127.0.0.1 and ::1 at the preferred port; when it is taken, at one free port
/// (both families on the same number), and says so.
pub async fn bind(spec: ForwardSpec) -> Result<BoundForward, TransportError> {
    match bind_both(spec.preferred_local_port).await {
        Ok(listeners) => Ok(BoundForward {
            local_port: spec.preferred_local_port,
            spec,
            fallback_reason: None,
            listeners,
        }),
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrInUse
                || e.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            let reason = format!(
                "127.0.0.1:{} is {}",
                spec.preferred_local_port,
                describe_bind_error(&e)
            );
            for _ in 0..20 {
                let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .await
                    .map_err(bind_failed)?;
                let port = probe.local_addr().map_err(bind_failed)?.port();
                drop(probe);
                if let Ok(listeners) = bind_both(port).await {
                    return Ok(BoundForward {
                        local_port: port,
                        spec,
                        fallback_reason: Some(reason),
                        listeners,
                    });
                }
            }
            Err(TransportError::new(
                TransportErrorKind::Tunnel,
                "no free loopback port for the local forward",
            ))
        }
        Err(e) => Err(bind_failed(e)),
    }
}

fn describe_bind_error(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "already in use",
        std::io::ErrorKind::PermissionDenied => "not allowed (ports below 1024 need privileges)",
        _ => "unavailable",
    }
}

fn bind_failed(e: std::io::Error) -> TransportError {
    TransportError::new(
        TransportErrorKind::Tunnel,
        format!("cannot listen on loopback: {e}"),
    )
}

async fn bind_both(port: u16) -> std::io::Result<Vec<TcpListener>> {
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let mut listeners = vec![v4];
    match TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
        Ok(v6) => listeners.push(v6),
        // A host without IPv6 loopback still gets the IPv4 forward.
        Err(e)
            if e.kind() == std::io::ErrorKind::AddrNotAvailable
                || e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            tracing::debug!("no IPv6 loopback; forwarding on 127.0.0.1 only");
        }
        Err(e) => return Err(e),
    }
    Ok(listeners)
}

/// Accepts on every listener of `forwards` until the task is dropped or aborted; each
/// connection gets its own SSH channel to the forward's remote port on 127.0.0.1.
pub async fn serve(tunnel: Arc<SshTunnel>, forwards: Vec<BoundForward>) {
    let mut accept_loops = JoinSet::new();
    for forward in forwards {
        let remote_port = forward.spec.remote_port;
        for listener in forward.listeners {
            let tunnel = tunnel.clone();
            accept_loops.spawn(accept_loop(listener, move |socket| {
                let tunnel = tunnel.clone();
                async move { pipe(&tunnel, socket, remote_port).await }
            }));
        }
    }
    while accept_loops.join_next().await.is_some() {}
}

/// Like [`serve`], for the openssh backend: each connection to the listeners of
/// `forwards[i]` is relayed to the Unix socket `sockets[i]` that the system ssh forwards.
pub async fn serve_to_sockets(forwards: Vec<BoundForward>, sockets: Vec<PathBuf>) {
    let mut accept_loops = JoinSet::new();
    for (forward, path) in forwards.into_iter().zip(sockets) {
        let path = Arc::new(path);
        for listener in forward.listeners {
            let path = path.clone();
            accept_loops.spawn(accept_loop(listener, move |socket| {
                let path = path.clone();
                async move { relay_to_socket(socket, &path).await }
            }));
        }
    }
    while accept_loops.join_next().await.is_some() {}
}

/// Accepts on `listener` forever, handling each connection with `handle` in its own task.
async fn accept_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Result<(), TransportError>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. out of file descriptors: pause instead of spinning a core.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let handling = handle(socket);
        connections.spawn(async move {
            match handling.await {
                // A client hanging up mid-transfer is normal for HTTP.
                Err(e) if e.kind == TransportErrorKind::Io => {
                    tracing::debug!(%peer, error = %e, "forwarded connection ended")
                }
                Err(e) => tracing::warn!(%peer, error = %e, "forwarded connection failed"),
                Ok(()) => {}
            }
        });
        // Reap finished connections so the set does not grow forever.
        while connections.try_join_next().is_some() {}
    }
}

async fn relay_to_socket(
    mut socket: TcpStream,
    path: &std::path::Path,
) -> Result<(), TransportError> {
    let mut upstream = tokio::net::UnixStream::connect(path).await.map_err(|e| {
        TransportError::new(
            TransportErrorKind::Tunnel,
            format!(
                "ssh's forward socket {}: {e} (is ssh restarting?)",
                path.display()
            ),
        )
    })?;
    tokio::io::copy_bidirectional_with_sizes(&mut socket, &mut upstream, 64 * 1024, 64 * 1024)
        .await
        .map(|_| ())
        .map_err(|e| {
            TransportError::new(
                TransportErrorKind::Io,
                format!("forwarded connection ended: {e}"),
            )
        })
}

async fn pipe(
    tunnel: &SshTunnel,
    mut socket: TcpStream,
    remote_port: u16,
) -> Result<(), TransportError> {
    let channel = tunnel.open_forward(remote_port).await?;
    let mut stream = channel.into_stream();
    // 64 KiB buffers: one SSH packet's worth per write instead of tokio's default 8 KiB.
    tokio::io::copy_bidirectional_with_sizes(&mut socket, &mut stream, 64 * 1024, 64 * 1024)
        .await
        .map(|_| ())
        .map_err(|e| {
            TransportError::new(
                TransportErrorKind::Io,
                format!("forwarded connection ended: {e}"),
            )
        })
}
