//! Local forwards for other programs (like `ssh -N -L`), for any transport that offers `GatewayPorts`: loopback listeners whose connections each get a fresh stream to a port on the gateway host.
//!
//! One listener loop serves `clawlink tunnel`, the forwards of `up` and `dashboard`'s own.
//! Each accepted connection opens its own stream through the transport
//! ([`GatewayPorts::open`]), so the listeners outlive any one transport session: when the
//! session is restored (see [`keep_session_up`]), the same local ports keep working and
//! nothing is re-bound. Listeners bind 127.0.0.1 and ::1 only, never another address.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clawlink_core::registry;
use clawlink_core::transport::{
    Capability, GatewayPorts, LocalEndpoint, Transport, TransportError, TransportErrorKind,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::failure::Failure;
use crate::settings::Settings;

/// Bytes buffered per direction of a forwarded connection: one SSH packet's worth per write
/// instead of tokio's default 8 KiB (throughput), allocated when the connection starts.
const COPY_BUFFER: usize = 64 * 1024;

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
    /// The URL other programs should use.
    pub fn endpoint(&self) -> LocalEndpoint {
        let scheme = if self.spec.purpose == "gateway" {
            "ws"
        } else {
            "http"
        };
        LocalEndpoint {
            purpose: self.spec.purpose.clone(),
            url: format!("{scheme}://127.0.0.1:{}", self.local_port),
        }
    }

    /// The addresses actually listened on.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Binds the loopback listeners of the gateway forward and of the Control UI's widget
/// sandbox (the gateway port + 1, which moves with it), each at its preferred port or, when
/// that is taken, at a free one (noted in `fallback_reason`).
pub async fn bind_gateway_and_sandbox(
    ports: &dyn GatewayPorts,
) -> Result<[BoundForward; 2], Failure> {
    let remote = ports.gateway_port();
    let gateway = bind(ForwardSpec {
        purpose: "gateway".into(),
        preferred_local_port: ports.preferred_local_port(),
        remote_port: remote,
    })
    .await
    .map_err(Failure::from)?;
    let sandbox = bind(ForwardSpec {
        purpose: "widget sandbox".into(),
        preferred_local_port: gateway.local_port.saturating_add(1),
        remote_port: remote.saturating_add(1),
    })
    .await
    .map_err(Failure::from)?;
    Ok([gateway, sandbox])
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
                let port = free_loopback_port().await?;
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

/// Binds 127.0.0.1 only, at `preferred` and the port after it (`dashboard`: the sandbox
/// must be at port + 1 of the URL it opens); when either is taken, a free pair (noted in
/// `fallback_reason`). `None` when no pair is free.
pub async fn bind_pair_v4(
    preferred: u16,
    specs: [ForwardSpec; 2],
) -> Result<Option<[BoundForward; 2]>, TransportError> {
    let mut candidates = vec![preferred];
    for _ in 0..20 {
        candidates.push(free_loopback_port().await?);
    }
    for port in candidates {
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        let (Ok(first), Ok(second)) = (
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await,
            TcpListener::bind((Ipv4Addr::LOCALHOST, next)).await,
        ) else {
            continue;
        };
        let [gateway, sandbox] = specs;
        let moved = (port != preferred)
            .then(|| format!("127.0.0.1:{preferred} (or the port after it) is in use"));
        return Ok(Some([
            BoundForward {
                spec: gateway,
                local_port: port,
                fallback_reason: moved.clone(),
                listeners: vec![first],
            },
            BoundForward {
                spec: sandbox,
                local_port: next,
                fallback_reason: moved,
                listeners: vec![second],
            },
        ]));
    }
    Ok(None)
}

async fn free_loopback_port() -> Result<u16, TransportError> {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(bind_failed)?;
    Ok(probe.local_addr().map_err(bind_failed)?.port())
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

/// Decides per accepted connection whether to serve it (`local`, `peer`).
pub type Admit = Arc<dyn Fn(SocketAddr, SocketAddr) -> bool + Send + Sync>;

/// How many forwarded connections are open, and a wake-up when that changes (`dashboard`
/// serves while the page uses its forwards).
#[derive(Default)]
pub struct Activity {
    open: AtomicUsize,
    pub changed: Notify,
}

impl Activity {
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// What [`serve`] does besides forwarding.
#[derive(Default, Clone)]
pub struct ServeOptions {
    /// Turns connections away before any byte reaches the gateway host (e.g. another local
    /// user's); `None` serves every connection.
    pub admit: Option<Admit>,
    /// Counts open connections.
    pub activity: Option<Arc<Activity>>,
}

/// Accepts on every listener of `forwards` until the task is dropped or aborted; each
/// connection gets its own stream to the forward's remote port through `transport`'s
/// [`GatewayPorts`]. Ends at once when the transport offers none.
pub async fn serve(
    transport: Arc<dyn Transport>,
    forwards: Vec<BoundForward>,
    options: ServeOptions,
) {
    if transport.ports().is_none() {
        tracing::error!(
            transport = transport.name(),
            "the transport offers no ports to forward to"
        );
        return;
    }
    let mut accept_loops = JoinSet::new();
    for forward in forwards {
        let remote_port = forward.spec.remote_port;
        for listener in forward.listeners {
            let transport = transport.clone();
            accept_loops.spawn(accept_loop(listener, options.clone(), move |socket| {
                let transport = transport.clone();
                async move { pipe(transport.as_ref(), socket, remote_port).await }
            }));
        }
    }
    while accept_loops.join_next().await.is_some() {}
}

/// Accepts on `listener` forever, handling each admitted connection with `handle` in its
/// own task.
async fn accept_loop<F, Fut>(listener: TcpListener, options: ServeOptions, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Result<(), TransportError>> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. out of file descriptors: pause instead of spinning a core.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let (Some(admit), Some(local)) = (&options.admit, local) {
            if !admit(local, peer) {
                continue;
            }
        }
        let _ = socket.set_nodelay(true);
        let handling = handle(socket);
        let activity = options.activity.clone();
        if let Some(activity) = &activity {
            activity.open.fetch_add(1, Ordering::SeqCst);
            activity.changed.notify_one();
        }
        connections.spawn(async move {
            match handling.await {
                // A client hanging up mid-transfer is normal for HTTP.
                Err(e) if e.kind == TransportErrorKind::Io => {
                    tracing::debug!(%peer, error = %e, "forwarded connection ended")
                }
                Err(e) => tracing::warn!(%peer, error = %e, "forwarded connection failed"),
                Ok(()) => {}
            }
            if let Some(activity) = activity {
                activity.open.fetch_sub(1, Ordering::SeqCst);
                activity.changed.notify_one();
            }
        });
        // Reap finished connections so the set does not grow forever.
        while connections.try_join_next().is_some() {}
    }
}

async fn pipe(
    transport: &dyn Transport,
    mut socket: TcpStream,
    remote_port: u16,
) -> Result<(), TransportError> {
    let ports = transport.ports().ok_or_else(|| {
        TransportError::new(
            TransportErrorKind::Unsupported,
            "no ports on the gateway host",
        )
    })?;
    let mut upstream = ports.open(remote_port).await?;
    tokio::io::copy_bidirectional_with_sizes(&mut socket, &mut upstream, COPY_BUFFER, COPY_BUFFER)
        .await
        .map(|_| ())
        .map_err(|e| {
            TransportError::new(
                TransportErrorKind::Io,
                format!("forwarded connection ended: {e}"),
            )
        })
}

/// Notices that the transport's session is gone and restores it (the listeners stay bound;
/// connections accepted meanwhile wait for the new session), saying so on stderr. Returns
/// only with an error retrying cannot fix (host key, auth); never for a transport without
/// supervision (each stream stands alone there).
pub async fn keep_session_up(transport: Arc<dyn Transport>) -> TransportError {
    let Some(supervision) = transport.supervision() else {
        return std::future::pending().await;
    };
    loop {
        let lost = supervision.session_lost().await;
        eprintln!("clawlink: {}; reconnecting", lost.message);
        match restore(|| supervision.restore()).await {
            Ok(()) => eprintln!("clawlink: {} restored", transport.describe()),
            Err(e) => return e,
        }
    }
}

/// Retries `attempt` with capped, jittered backoff until it succeeds or fails with an error
/// retrying cannot fix (host key, auth), saying each time what failed. Callers stop it by
/// dropping the future (on a signal).
async fn restore<T, Fut>(mut attempt: impl FnMut() -> Fut) -> Result<T, TransportError>
where
    Fut: Future<Output = Result<T, TransportError>>,
{
    let backoff = clawlink_core::gateway::Backoff::default();
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if !e.kind.is_retryable() => return Err(e),
            Err(e) => {
                let delay = backoff.delay(failures);
                failures += 1;
                eprintln!(
                    "clawlink: {} (retrying in {:.1}s)",
                    e.message,
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The profile's transport, when it offers ports on the gateway host; otherwise the one-line
/// refusal naming the capability and the transports that offer it.
pub fn transport_with_ports(
    settings: &Settings,
    command: &str,
) -> Result<Arc<dyn Transport>, Failure> {
    let transport = crate::connect::build_transport(settings)?;
    if transport.ports().is_some() {
        return Ok(transport);
    }
    Err(Failure::from(registry::refuse_missing(
        &format!("`clawlink {command}`"),
        transport.name(),
        Capability::GatewayPorts,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use clawlink_core::transport::{Connected, DuplexStream};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A transport whose gateway host answers every stream with "PORT:" and then echoes.
    struct EchoHost {
        gateway_port: u16,
        preferred_local_port: u16,
        /// Streams opened so far.
        opened: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Transport for EchoHost {
        fn name(&self) -> &str {
            "echo"
        }
        fn gateway_key(&self) -> String {
            "echo".into()
        }
        fn describe(&self) -> String {
            "echo host".into()
        }
        async fn connect(&self) -> Result<Connected, TransportError> {
            Err(TransportError::new(
                TransportErrorKind::Unsupported,
                "only ports",
            ))
        }
        fn ports(&self) -> Option<&dyn GatewayPorts> {
            Some(self)
        }
    }

    #[async_trait]
    impl GatewayPorts for EchoHost {
        fn gateway_port(&self) -> u16 {
            self.gateway_port
        }
        fn preferred_local_port(&self) -> u16 {
            self.preferred_local_port
        }
        fn host_label(&self) -> String {
            "echo-host".into()
        }
        async fn open(&self, port: u16) -> Result<Box<dyn DuplexStream>, TransportError> {
            self.opened.fetch_add(1, Ordering::SeqCst);
            let (ours, mut theirs) = tokio::io::duplex(1024);
            tokio::spawn(async move {
                let _ = theirs.write_all(format!("{port}:").as_bytes()).await;
                let (mut read, mut write) = tokio::io::split(theirs);
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
            Ok(Box::new(ours))
        }
    }

    async fn exchange(port: u16, message: &str) -> String {
        let mut socket = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        socket.write_all(message.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn each_connection_gets_a_fresh_stream_to_its_forwards_port_on_loopback_only() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let host = EchoHost {
            gateway_port: 18789,
            preferred_local_port: taken.local_addr().unwrap().port(),
            opened: Arc::default(),
        };
        let [gateway, sandbox] = bind_gateway_and_sandbox(&host).await.unwrap();
        // The preferred port was taken: moved, and the note says why in today's words.
        assert!(
            gateway
                .fallback_reason
                .as_deref()
                .is_some_and(|r| r.ends_with("is already in use")),
            "{gateway:?}"
        );
        assert_eq!(sandbox.spec.remote_port, 18790);
        for address in gateway.addresses().iter().chain(&sandbox.addresses()) {
            assert!(address.ip().is_loopback(), "{address}");
        }
        let (gateway_port, sandbox_port) = (gateway.local_port, sandbox.local_port);
        let activity = Arc::new(Activity::default());
        let transport: Arc<dyn Transport> = Arc::new(host);
        let serving = tokio::spawn(serve(
            transport,
            vec![gateway, sandbox],
            ServeOptions {
                admit: None,
                activity: Some(activity.clone()),
            },
        ));
        assert_eq!(exchange(gateway_port, "hello").await, "18789:hello");
        assert_eq!(exchange(sandbox_port, "widgets").await, "18790:widgets");
        // Both connections end: the count comes back to zero (bounded: one wake per change).
        for _ in 0..8 {
            if activity.open_connections() == 0 {
                break;
            }
            activity.changed.notified().await;
        }
        assert_eq!(activity.open_connections(), 0);
        serving.abort();
        let _ = serving.await;
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, gateway_port))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_connection_not_admitted_gets_no_stream() {
        let opened = Arc::new(AtomicUsize::new(0));
        let host = EchoHost {
            gateway_port: 18789,
            preferred_local_port: 0,
            opened: opened.clone(),
        };
        let specs = [
            ForwardSpec {
                purpose: "gateway".into(),
                preferred_local_port: 0,
                remote_port: 18789,
            },
            ForwardSpec {
                purpose: "widget sandbox".into(),
                preferred_local_port: 0,
                remote_port: 18790,
            },
        ];
        let preferred = free_loopback_port().await.unwrap();
        let pair = bind_pair_v4(preferred, specs).await.unwrap().unwrap();
        assert_eq!(pair[1].local_port, pair[0].local_port + 1);
        let port = pair[0].local_port;
        let transport: Arc<dyn Transport> = Arc::new(host);
        let serving = tokio::spawn(serve(
            transport,
            pair.into(),
            ServeOptions {
                admit: Some(Arc::new(|_, _| false)),
                activity: None,
            },
        ));
        // Turned away: closed (or reset) before any byte, and no stream was opened.
        let mut socket = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let _ = socket.write_all(b"hello").await;
        let mut answer = Vec::new();
        match socket.read_to_end(&mut answer).await {
            Ok(_) => assert!(answer.is_empty(), "{answer:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        assert_eq!(opened.load(Ordering::SeqCst), 0);
        serving.abort();
    }
}
