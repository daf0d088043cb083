//! Rogue SSH servers in-process (raw TCP scripts and a russh server): garbage and endless banners, a key exchange that never finishes, an oversized packet, an authentication and a channel that are never answered; each ends in bounded time with a layered error, retried only where it can help.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawlink_core::prompt::NonInteractive;
use clawlink_core::transport::{Transport, TransportError, TransportErrorKind};
use clawlink_transport_ssh::sshconfig::SshEnv;
use clawlink_transport_ssh::SshTunnel;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The hang guard of every scenario: far above the client's own limit (the 1 s connect
/// timeout below), so reaching it means the client has no bound of its own.
const HANG_GUARD: Duration = Duration::from_secs(15);
/// The connect timeout the scenarios give the tunnel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A rogue listening on loopback; stops with the test.
struct Rogue {
    port: u16,
    /// How many TCP connections it accepted.
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A rogue that runs `script` on each accepted connection.
async fn rogue<F, Fut>(script: F) -> Rogue
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(socket));
        }
    });
    Rogue {
        port,
        accepted,
        task,
    }
}

/// A tunnel to the rogue on `port`, in a home of its own (no ~/.ssh, no agent). Keepalives
/// are slow so that only the mechanism under test can end a scenario in time.
fn tunnel(port: u16, home: &tempfile::TempDir, extra: serde_json::Value) -> SshTunnel {
    let mut settings = serde_json::json!({
        "target": format!("me@127.0.0.1:{port}"),
        "connect_timeout_ms": CONNECT_TIMEOUT.as_millis() as u64,
        "keepalive_interval_s": 60,
    });
    for (key, value) in extra.as_object().unwrap() {
        settings[key] = value.clone();
    }
    let env = SshEnv {
        home: home.path().to_path_buf(),
        local_user: "me".into(),
        auth_sock: None,
    };
    SshTunnel::with_env(
        SshTunnel::parse_settings(&settings).unwrap(),
        Arc::new(NonInteractive),
        env,
    )
    .unwrap()
}

/// Opens a session under the hang guard; the error and how long it took.
async fn session_error(tunnel: &SshTunnel) -> (TransportError, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(HANG_GUARD, tunnel.open_session())
        .await
        .expect("the SSH client did not return within the hang guard");
    match result {
        Ok(_) => panic!("an SSH session opened to a rogue server"),
        Err(error) => (error, started.elapsed()),
    }
}

/// Reads and discards what the client sends, so its writes never block.
async fn drain(mut socket: TcpStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = socket.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}

#[tokio::test]
async fn a_garbage_banner_is_a_protocol_error_saying_the_port_does_not_speak_ssh() {
    let server = rogue(|mut socket| async move {
        let _ = socket
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
        let _ = socket.write_all(&[0xde; 300]).await;
        drain(socket).await;
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let (error, took) = session_error(&tunnel(server.port, &home, serde_json::json!({}))).await;
    assert_eq!(error.kind, TransportErrorKind::Protocol, "{error:?}");
    assert!(!error.kind.is_retryable());
    assert_eq!(error.kind.layer(), "protocol");
    assert!(error.message.contains("does not speak SSH"), "{error:?}");
    assert!(error.fix.as_deref().unwrap().contains("port"), "{error:?}");
    assert!(took < CONNECT_TIMEOUT, "ended by the timeout: {took:?}");
}

#[tokio::test]
async fn an_endless_banner_is_cut_off_by_a_line_limit_or_the_connect_timeout() {
    // Lines as fast as the client reads them: russh stops after 20 lines.
    let flood = rogue(|mut socket| async move {
        while socket
            .write_all(b"Welcome to a very chatty server\r\n")
            .await
            .is_ok()
        {}
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let (error, took) = session_error(&tunnel(flood.port, &home, serde_json::json!({}))).await;
    assert_eq!(error.kind, TransportErrorKind::Protocol, "{error:?}");
    assert!(error.message.contains("does not speak SSH"), "{error:?}");
    assert!(took < CONNECT_TIMEOUT, "{took:?}");

    // A line that trickles in and never ends: the connect timeout ends it, and a slow server
    // may be faster next time (retryable).
    let trickle = rogue(|mut socket| async move {
        loop {
            if socket.write_all(b"S").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (error, took) = session_error(&tunnel(trickle.port, &home, serde_json::json!({}))).await;
    assert_eq!(error.kind, TransportErrorKind::Connect, "{error:?}");
    assert!(error.kind.is_retryable());
    assert!(error.message.contains("timed out after 1 s"), "{error:?}");
    assert!(
        took >= CONNECT_TIMEOUT && took < CONNECT_TIMEOUT * 3,
        "{took:?}"
    );
}

/// An SSH packet without encryption (RFC 4253 §6): length, padding length, payload, padding
/// to a multiple of 8 bytes (at least 4).
fn plain_packet(payload: &[u8]) -> Vec<u8> {
    let mut padding = 8 - (4 + 1 + payload.len()) % 8;
    if padding < 4 {
        padding += 8;
    }
    let mut packet = Vec::new();
    packet.extend_from_slice(&((1 + payload.len() + padding) as u32).to_be_bytes());
    packet.push(padding as u8);
    packet.extend_from_slice(payload);
    packet.extend(std::iter::repeat_n(0u8, padding));
    packet
}

/// A server KEXINIT offering algorithms the client shares, so the exchange really starts.
fn server_kexinit() -> Vec<u8> {
    let mut payload = vec![20u8]; // SSH_MSG_KEXINIT
    payload.extend_from_slice(&[7u8; 16]); // cookie
    for list in [
        "curve25519-sha256",
        "ssh-ed25519",
        "aes128-ctr",
        "aes128-ctr",
        "hmac-sha2-256",
        "hmac-sha2-256",
        "none",
        "none",
        "",
        "",
    ] {
        payload.extend_from_slice(&(list.len() as u32).to_be_bytes());
        payload.extend_from_slice(list.as_bytes());
    }
    payload.push(0); // first_kex_packet_follows
    payload.extend_from_slice(&0u32.to_be_bytes()); // reserved
    plain_packet(&payload)
}

/// The message number of the client's half of a curve25519 key exchange (RFC 5656 §7.1).
const SSH_MSG_KEX_ECDH_INIT: u8 = 30;

/// Reads the client's identification line, then records the message number of each of its
/// unencrypted packets (all of them, before keys are exchanged).
async fn read_client_messages(
    socket: &mut TcpStream,
    seen: &Mutex<Vec<u8>>,
) -> std::io::Result<()> {
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        line.push(socket.read_u8().await?);
    }
    loop {
        let len = socket.read_u32().await? as usize;
        let mut packet = vec![0u8; len.min(1 << 16)];
        socket.read_exact(&mut packet).await?;
        seen.lock().unwrap().push(packet[1]);
    }
}

#[tokio::test]
async fn a_key_exchange_that_never_finishes_is_ended_by_the_connect_timeout_and_retryable() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = rogue(move |mut socket| {
        let record = record.clone();
        async move {
            let _ = socket.write_all(b"SSH-2.0-Rogue_1.0\r\n").await;
            let _ = socket.write_all(&server_kexinit()).await;
            // Takes the client's KEXINIT and key-exchange init, never answers them.
            let _ = read_client_messages(&mut socket, &record).await;
            drain(socket).await;
        }
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let (error, took) = session_error(&tunnel(server.port, &home, serde_json::json!({}))).await;
    // The exchange really started: the client sent its key-exchange init and waited.
    assert!(
        seen.lock().unwrap().contains(&SSH_MSG_KEX_ECDH_INIT),
        "{:?}",
        seen.lock().unwrap()
    );
    assert_eq!(error.kind, TransportErrorKind::Connect, "{error:?}");
    assert!(error.kind.is_retryable());
    assert!(error.message.contains("handshake"), "{error:?}");
    assert!(error.message.contains("timed out after 1 s"), "{error:?}");
    assert!(
        error.fix.as_deref().unwrap().contains("connect_timeout_ms"),
        "{error:?}"
    );
    assert!(
        took >= CONNECT_TIMEOUT && took < CONNECT_TIMEOUT * 3,
        "{took:?}"
    );
}

#[tokio::test]
async fn an_oversized_packet_is_a_protocol_error_naming_its_size_and_the_limit() {
    let server = rogue(|mut socket| async move {
        let _ = socket.write_all(b"SSH-2.0-Rogue_1.0\r\n").await;
        // A 2 GiB packet announced in the clear, then a trickle of it.
        let _ = socket.write_all(&0x7fff_ffffu32.to_be_bytes()).await;
        let _ = socket.write_all(&[0u8; 64]).await;
        drain(socket).await;
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let (error, took) = session_error(&tunnel(server.port, &home, serde_json::json!({}))).await;
    assert_eq!(error.kind, TransportErrorKind::Protocol, "{error:?}");
    assert!(!error.kind.is_retryable());
    assert!(error.message.contains("2147483647 bytes"), "{error:?}");
    assert!(error.message.contains("at most 256 KiB"), "{error:?}");
    assert!(took < CONNECT_TIMEOUT, "ended by the timeout: {took:?}");
}

/// A russh server that accepts any key and keeps every `direct-tcpip` request unanswered
/// (it still answers keepalives: the session itself looks healthy).
struct ChannelHoarder {
    held: Arc<Mutex<Vec<russh::server::ChannelOpenHandle>>>,
}

impl russh::server::Handler for ChannelHoarder {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: russh::Channel<russh::server::Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.held.lock().unwrap().push(reply);
        Ok(())
    }
}

fn key_from_seed(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

/// A russh server on loopback serving each connection with `handler()`, and a tunnel to it
/// that trusts its host key (pinned) and offers one key file.
async fn russh_rogue<H>(
    handler: impl Fn() -> H + Send + Sync + 'static,
    home: &tempfile::TempDir,
) -> (Rogue, SshTunnel)
where
    H: russh::server::Handler<Error = russh::Error> + Send + 'static,
{
    let host_key = key_from_seed(1);
    let pin = host_key
        .public_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();
    let config = Arc::new(russh::server::Config {
        keys: vec![host_key],
        auth_rejection_time: Duration::ZERO,
        ..Default::default()
    });
    let server = rogue(move |socket| {
        let config = config.clone();
        let handler = handler();
        async move {
            if let Ok(session) = russh::server::run_stream(config, socket, handler).await {
                let _ = session.await;
            }
        }
    })
    .await;
    let identity = home.path().join("id_ed25519");
    let client_key = key_from_seed(2).to_openssh(LineEnding::LF).unwrap();
    std::fs::write(&identity, client_key.as_bytes()).unwrap();
    let tunnel = tunnel(
        server.port,
        home,
        serde_json::json!({"identity_file": identity, "host_key_policy": pin}),
    );
    (server, tunnel)
}

/// A russh server whose authentication never answers (a hung PAM or directory lookup).
struct StalledAuth;

impl russh::server::Handler for StalledAuth {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_authentication_that_is_never_answered_is_bounded_and_retryable() {
    let home = tempfile::tempdir().unwrap();
    let (_server, tunnel) = russh_rogue(|| StalledAuth, &home).await;
    let (error, took) = session_error(&tunnel).await;
    assert_eq!(error.kind, TransportErrorKind::Connect, "{error:?}");
    assert!(error.kind.is_retryable());
    assert!(
        error
            .message
            .contains("stopped answering during authentication"),
        "{error:?}"
    );
    assert!(error.message.contains("within 1 s"), "{error:?}");
    assert!(took < CONNECT_TIMEOUT * 4, "{took:?}");
}

#[tokio::test]
async fn a_channel_that_never_opens_is_a_retryable_tunnel_error_and_the_stalled_session_is_replaced(
) {
    let held = Arc::new(Mutex::new(Vec::new()));
    let hoard = held.clone();
    let home = tempfile::tempdir().unwrap();
    let (server, tunnel) = russh_rogue(
        move || ChannelHoarder {
            held: hoard.clone(),
        },
        &home,
    )
    .await;

    for attempt in 1..=2 {
        let started = Instant::now();
        let result = tokio::time::timeout(HANG_GUARD, tunnel.connect())
            .await
            .expect("opening a channel was not bounded");
        let took = started.elapsed();
        let Err(error) = result else {
            panic!("a channel opened on a server that never answers");
        };
        assert_eq!(error.kind, TransportErrorKind::Tunnel, "{error:?}");
        assert!(error.kind.is_retryable());
        assert!(
            error
                .message
                .contains("did not answer the request for a channel"),
            "{error:?}"
        );
        assert!(error.message.contains("within 1 s"), "{error:?}");
        assert!(took < CONNECT_TIMEOUT * 4, "{took:?}");
        // Each attempt ran on a session of its own: a stalled one is not reused.
        assert_eq!(server.accepted.load(Ordering::SeqCst), attempt);
    }
    assert_eq!(held.lock().unwrap().len(), 2);
}
