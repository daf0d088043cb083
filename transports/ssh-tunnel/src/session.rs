//! One authenticated SSH connection (russh): TCP or ProxyJump hop, host-key check, public-key auth, keepalive.
//!
//! Never prompts on its own (the app's `BatchMode=yes`): anything that needs a human goes
//! through the [`Prompter`], which in batch mode answers "no", and the error then names the
//! non-interactive fix. Each phase is timed for `clawlink test`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawlink_core::prompt::Prompter;
use clawlink_core::transport::{TransportError, TransportErrorKind};
use russh::client::{self, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelOpenFailure;
use secrecy::ExposeSecret;

use crate::hostkey::{HostKeyCheck, Trusted};
use crate::known_hosts::PublicKey;
use crate::sshconfig::Resolved;

/// Timings and facts of one connection, for `clawlink test`.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    pub tcp: Duration,
    /// Key exchange including the host-key decision.
    pub handshake: Duration,
    pub auth: Duration,
    pub host_key: Option<Trusted>,
    /// "key /home/me/.ssh/id_ed25519" or "ssh-agent key me@laptop".
    pub auth_method: String,
    pub user: String,
    pub endpoint: String,
}

/// Keepalive and timeout settings for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_count: usize,
}

/// A live, authenticated SSH connection.
pub struct SshSession {
    handle: Handle<ClientHandler>,
    pub info: SessionInfo,
    /// How long a channel may take to open: one round trip, bounded like the handshake.
    channel_open_timeout: Duration,
    /// Set when the server left a channel request unanswered: the session counts as lost.
    stalled: AtomicBool,
    /// The hop this connection runs through, kept alive as long as we are.
    _jump: Option<Arc<SshSession>>,
}

impl SshSession {
    /// Whether the connection is gone (keepalive timeout, server closed, network).
    pub fn is_closed(&self) -> bool {
        self.stalled()
            || self.handle.is_closed()
            || self._jump.as_ref().is_some_and(|j| j.is_closed())
    }

    /// Whether the server left a channel request unanswered (see [`SshSession::forward`]).
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    /// Opens a `direct-tcpip` channel to `host:port` as seen from the server, within the
    /// connect timeout. A server that answers keepalives but never the channel request would
    /// otherwise hold the caller (a local forward, the gateway connection) forever; the
    /// session is then marked stalled, so the next stream opens a fresh one.
    pub async fn forward(
        &self,
        host: &str,
        port: u16,
    ) -> Result<russh::Channel<client::Msg>, TransportError> {
        let open = self
            .handle
            .channel_open_direct_tcpip(host, port as u32, "127.0.0.1", 0);
        match tokio::time::timeout(self.channel_open_timeout, open).await {
            Ok(opened) => opened.map_err(|e| forward_error(e, host, port, &self.info.endpoint)),
            Err(_) => {
                self.stalled.store(true, Ordering::SeqCst);
                Err(TransportError::new(
                    TransportErrorKind::Tunnel,
                    format!(
                        "the SSH server {} did not answer the request for a channel to {host}:{port} within {} (connect timeout)",
                        self.info.endpoint,
                        seconds(self.channel_open_timeout)
                    ),
                )
                .with_fix(
                    "clawlink drops this SSH connection and opens a new one on the next attempt; if it \
                     keeps happening, the server is overloaded or limits channels (sshd's MaxSessions): \
                     check its logs, or raise connect_timeout_ms for a slow link",
                ))
            }
        }
    }

    /// Opens a session channel (for exec).
    pub async fn session_channel(&self) -> Result<russh::Channel<client::Msg>, TransportError> {
        self.handle.channel_open_session().await.map_err(|e| {
            TransportError::new(
                TransportErrorKind::Tunnel,
                format!(
                    "cannot open a session channel on {}: {e}",
                    self.info.endpoint
                ),
            )
        })
    }

    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "clawlink closing", "en")
            .await;
    }
}

fn forward_error(error: russh::Error, host: &str, port: u16, endpoint: &str) -> TransportError {
    match error {
        russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed) => TransportError::new(
            TransportErrorKind::Tunnel,
            format!("{endpoint} cannot connect to {host}:{port} on its side: nothing listens there"),
        )
        .with_fix(format!(
            "start the gateway on the remote host (`openclaw gateway run`), or set remote_port to the port it listens on (now {port})"
        )),
        russh::Error::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited) => TransportError::new(
            TransportErrorKind::Remote,
            format!("{endpoint} refuses port forwarding to {host}:{port}"),
        )
        .with_fix("allow it in the server's sshd_config (`AllowTcpForwarding local` or `yes`) for this user"),
        russh::Error::ChannelOpenFailure(refusal) => TransportError::new(
            TransportErrorKind::Tunnel,
            format!("{endpoint} refused a channel to {host}:{port}: {refusal:?}"),
        ),
        // Not a refusal by the server: the SSH connection itself is gone (Io), which the
        // tunnel answers by opening a new one.
        other => TransportError::new(
            TransportErrorKind::Io,
            format!("the SSH connection to {endpoint} is gone: {other}"),
        ),
    }
}

/// The russh event handler: only the host-key decision matters to us.
pub struct ClientHandler {
    host: String,
    port: u16,
    check: HostKeyCheck,
    outcome: Arc<Mutex<Option<Result<Trusted, TransportError>>>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = presented_key(key);
        let decision = self.check.decide(&self.host, self.port, &key).await;
        let accepted = decision.is_ok();
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(decision);
        Ok(accepted)
    }
}

/// What to do when the server accepts TCP but the SSH handshake does not finish in time.
pub(crate) const HANDSHAKE_TIMEOUT_FIX: &str = "the host accepted the connection but did not finish the SSH handshake in time: \
     check the network path to it (VPN, firewall, a proxy that swallows SSH), raise connect_timeout_ms (like ssh's ConnectTimeout) \
     for a slow link, and run `clawlink doctor` to see which layer stalls";

/// Opens a connection to `resolved`, through its ProxyJump hops if any.
pub async fn open(
    resolved: &Resolved,
    check: HostKeyCheck,
    prompter: Arc<dyn Prompter>,
    timing: Timing,
    hops: &[Resolved],
) -> Result<SshSession, TransportError> {
    let config = Arc::new(client::Config {
        keepalive_interval: Some(timing.keepalive_interval),
        keepalive_max: timing.keepalive_count,
        inactivity_timeout: None,
        nodelay: true,
        // A larger window lets bulk transfers (attachments, the Control UI's assets) flow
        // without waiting for window adjustments on every round trip.
        window_size: 8 * 1024 * 1024,
        channel_buffer_size: 1024,
        preferred: russh::Preferred {
            // AES-GCM first: ring uses the CPU's AES instructions, several times faster than
            // ChaCha20-Poly1305 in software (russh's default first choice).
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::AES_128_GCM,
                russh::cipher::AES_256_GCM,
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_CTR,
                russh::cipher::AES_128_CTR,
            ]),
            ..russh::Preferred::default()
        },
        ..client::Config::default()
    });
    let endpoint = format!("{}@{}:{}", resolved.user, resolved.host_name, resolved.port);
    let started = Instant::now();

    let hop_check = |hop: &Resolved| HostKeyCheck {
        target_display: hop.alias.clone(),
        user_files: hop.user_known_hosts.clone(),
        global_files: hop.global_known_hosts.clone(),
        openssh_setting: hop.strict_host_key_checking.clone(),
        ..check.clone()
    };
    let (stream, jump) = carrier(resolved, hops, &hop_check, prompter.clone(), timing).await?;
    let tcp_time = started.elapsed();

    let outcome = Arc::new(Mutex::new(None));
    let handler = ClientHandler {
        host: resolved.host_name.clone(),
        port: resolved.port,
        check,
        outcome: outcome.clone(),
    };
    let handshake_started = Instant::now();
    let handshake = tokio::time::timeout(
        timing.connect_timeout,
        client::connect_stream(config, stream, handler),
    )
    .await;
    let host_key = outcome.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (mut handle, trusted) = match (handshake, host_key) {
        (_, Some(Err(host_key_error))) => return Err(host_key_error),
        (Ok(Ok(handle)), trusted) => (handle, trusted.and_then(Result::ok)),
        (Ok(Err(e)), _) => return Err(handshake_error(e, &endpoint)),
        (Err(_), _) => {
            return Err(TransportError::new(
                TransportErrorKind::Connect,
                format!(
                    "SSH handshake with {endpoint} timed out after {}",
                    seconds(timing.connect_timeout)
                ),
            )
            .with_fix(HANDSHAKE_TIMEOUT_FIX))
        }
    };
    let handshake_time = handshake_started.elapsed();

    let auth_started = Instant::now();
    let auth_method = authenticate(
        &mut handle,
        resolved,
        prompter.as_ref(),
        &endpoint,
        timing.connect_timeout,
    )
    .await?;
    Ok(SshSession {
        handle,
        channel_open_timeout: timing.connect_timeout,
        stalled: AtomicBool::new(false),
        info: SessionInfo {
            tcp: tcp_time,
            handshake: handshake_time,
            auth: auth_started.elapsed(),
            host_key: trusted,
            auth_method,
            user: resolved.user.clone(),
            endpoint,
        },
        _jump: jump,
    })
}

/// The largest SSH packet russh accepts (its `MAXIMUM_PACKET_LEN` baseline, OpenSSH's
/// `PACKET_MAX_SIZE`), for the message that names it.
const LARGEST_SSH_PACKET: &str = "256 KiB";

/// Why a key exchange failed. A peer that does not speak SSH, or breaks its framing, answers
/// the same way next time: a protocol error, not retried. A connection that closed or broke
/// may be a restarting server: retried.
fn handshake_error(error: russh::Error, endpoint: &str) -> TransportError {
    match error {
        russh::Error::Version => TransportError::new(
            TransportErrorKind::Protocol,
            format!(
                "the SSH target {endpoint} does not speak SSH: it sent no SSH-2.0 identification line \
                 (russh reads at most 20 lines of 255 bytes before it)"
            ),
        )
        .with_fix(
            "check the port of the SSH target (ssh://user@host:PORT or Port in ~/.ssh/config): it \
             reaches another service, or a proxy that answers for it",
        ),
        russh::Error::PacketSize(size) => TransportError::new(
            TransportErrorKind::Protocol,
            format!(
                "the SSH server {endpoint} sent a packet of {size} bytes; clawlink accepts at most {LARGEST_SSH_PACKET}"
            ),
        )
        .with_fix(
            "something on the path corrupts the SSH stream or the server is broken: check for a \
             proxy or middlebox between here and the host, and the server's logs",
        ),
        russh::Error::Disconnect | russh::Error::HUP | russh::Error::IO(_) => TransportError::new(
            TransportErrorKind::Connect,
            format!("the SSH server {endpoint} closed the connection during the SSH handshake ({error})"),
        )
        .with_fix("check that sshd runs on that host and port and accepts connections from here (its MaxStartups, a fail2ban ban)"),
        other => TransportError::new(
            TransportErrorKind::Connect,
            format!("SSH handshake with {endpoint} failed: {other}"),
        )
        .with_fix(
            "check that the port speaks SSH and that the server allows this client's algorithms",
        ),
    }
}

/// `10 s`, or `0.5 s` for a limit that is not whole seconds.
fn seconds(limit: Duration) -> String {
    if limit.subsec_millis() == 0 {
        format!("{} s", limit.as_secs())
    } else {
        format!("{:.1} s", limit.as_secs_f64())
    }
}

/// The key a server presented (the certified key, for a host certificate).
fn presented_key(key: &PublicKeyOrCertificate) -> PublicKey {
    match key {
        PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
        PublicKeyOrCertificate::Certificate(cert) => PublicKey::new(cert.public_key().clone(), ""),
    }
}

/// The byte stream an SSH connection to `resolved` runs over: TCP, or a `direct-tcpip`
/// channel of the last ProxyJump hop (which, with the hops before it, is opened
/// recursively and kept alive by the returned session).
async fn carrier(
    resolved: &Resolved,
    hops: &[Resolved],
    hop_check: &(dyn Fn(&Resolved) -> HostKeyCheck + Sync),
    prompter: Arc<dyn Prompter>,
    timing: Timing,
) -> Result<(Box<dyn crate::Stream>, Option<Arc<SshSession>>), TransportError> {
    match hops.split_last() {
        None => {
            let tcp =
                connect_tcp(&resolved.host_name, resolved.port, timing.connect_timeout).await?;
            let _ = tcp.set_nodelay(true);
            Ok((Box::new(tcp), None))
        }
        Some((last, outer)) => {
            let jump = Box::pin(open(last, hop_check(last), prompter, timing, outer)).await?;
            let channel = jump.forward(&resolved.host_name, resolved.port).await?;
            Ok((Box::new(channel.into_stream()), Some(Arc::new(jump))))
        }
    }
}

/// TCP to `host:port` within `limit`: the name resolved, then each address in turn with
/// core's connect that keeps sending fresh SYNs while the path is dead (a restored path is
/// used within half a second, not at the kernel's next SYN retransmission).
async fn connect_tcp(
    host: &str,
    port: u16,
    limit: Duration,
) -> Result<tokio::net::TcpStream, TransportError> {
    let no_answer = || {
        TransportError::new(
            TransportErrorKind::Connect,
            format!("no answer from {host}:{port} within {} s", limit.as_secs()),
        )
        .with_fix("check the host name and port of the SSH target, and that the host is up")
    };
    let deadline = tokio::time::Instant::now() + limit;
    let addresses: Vec<std::net::SocketAddr> =
        tokio::time::timeout(limit, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| no_answer())?
            .map_err(|e| tcp_error(e, host, port))?
            .collect();
    let mut last_error = None;
    for address in addresses {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match clawlink_core::transport::tcp::connect(address, left).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    match last_error {
        Some(error) if error.kind() != std::io::ErrorKind::TimedOut => {
            Err(tcp_error(error, host, port))
        }
        _ => Err(no_answer()),
    }
}

fn tcp_error(error: std::io::Error, host: &str, port: u16) -> TransportError {
    let resolve_failed = error.kind() == std::io::ErrorKind::Other
        || error.to_string().contains("failed to lookup")
        || error.to_string().contains("Name or service not known");
    if resolve_failed {
        return TransportError::new(
            TransportErrorKind::Resolve,
            format!("cannot resolve the SSH host {host}: {error}"),
        )
        .with_fix("check the host name in the SSH target (or HostName in ~/.ssh/config) and this machine's DNS");
    }
    TransportError::new(
        TransportErrorKind::Connect,
        format!("cannot reach SSH on {host}:{port}: {error}"),
    )
    .with_fix("check that sshd runs on that host and port, and that no firewall blocks it")
}

/// One key we will offer.
enum Candidate {
    File(PathBuf),
    Agent,
}

/// Tries the agent and key files in OpenSSH's order; returns how we got in. Each request with
/// a key file waits at most `limit` for the server's answer (one round trip, like the
/// handshake); a passphrase prompt comes before it and is not timed. Agent requests are not
/// timed either: a hardware key may wait for a touch.
async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    resolved: &Resolved,
    prompter: &dyn Prompter,
    endpoint: &str,
    limit: Duration,
) -> Result<String, TransportError> {
    let mut candidates = Vec::new();
    if !resolved.identities_only && resolved.agent_socket.is_some() {
        candidates.push(Candidate::Agent);
    }
    let files: Vec<PathBuf> = if resolved.identity_files.is_empty() && !resolved.identities_only {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|n| home.join(".ssh").join(n))
            .filter(|p| p.is_file())
            .collect()
    } else {
        resolved.identity_files.clone()
    };
    candidates.extend(files.into_iter().map(Candidate::File));

    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let mut tried = Vec::new();
    let mut encrypted = Vec::new();
    for candidate in candidates {
        match candidate {
            Candidate::Agent => {
                let Some(socket) = &resolved.agent_socket else {
                    continue;
                };
                match try_agent(handle, &resolved.user, socket, rsa_hash).await {
                    Ok(Some(comment)) => return Ok(format!("ssh-agent key {comment}")),
                    Ok(None) => tried.push(format!("ssh-agent ({})", socket.display())),
                    Err(e) => tried.push(format!("ssh-agent unavailable ({e})")),
                }
            }
            Candidate::File(path) => {
                let key = match load_key(&path, prompter).await {
                    Ok(key) => key,
                    Err(KeyLoad::Encrypted) => {
                        encrypted.push(path.display().to_string());
                        continue;
                    }
                    Err(KeyLoad::Failed(e)) => {
                        tried.push(format!("{} (unreadable: {e})", path.display()));
                        continue;
                    }
                };
                let key = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
                let request = handle.authenticate_publickey(resolved.user.clone(), key);
                let Ok(answer) = tokio::time::timeout(limit, request).await else {
                    return Err(TransportError::new(
                        TransportErrorKind::Connect,
                        format!(
                            "the SSH server {endpoint} stopped answering during authentication: nothing came back for the key {} within {}",
                            path.display(),
                            seconds(limit)
                        ),
                    )
                    .with_fix(
                        "the server took the connection but stalls in authentication: check its load \
                         and logs (a slow PAM, LDAP or DNS lookup), or raise connect_timeout_ms for a slow link",
                    ));
                };
                match answer {
                    Ok(result) if result.success() => return Ok(format!("key {}", path.display())),
                    Ok(_) => tried.push(format!("{} (refused)", path.display())),
                    Err(e) => {
                        return Err(TransportError::new(
                            TransportErrorKind::Connect,
                            format!(
                                "the SSH connection to {endpoint} broke during authentication: {e}"
                            ),
                        ))
                    }
                }
            }
        }
    }
    if tried.is_empty() && !encrypted.is_empty() {
        return Err(TransportError::new(
            TransportErrorKind::Authentication,
            format!(
                "the SSH key {} is encrypted and no passphrase was given (batch mode never prompts)",
                encrypted.join(", ")
            ),
        )
        .with_fix(
            "load it into ssh-agent (`ssh-add KEY`), or set CLAWLINK_SSH_PASSPHRASE_FILE to a 0600 file holding the passphrase, or run the command interactively",
        ));
    }
    let mut message = format!(
        "SSH authentication as {} on {endpoint} failed",
        resolved.user
    );
    if tried.is_empty() {
        message.push_str(": no key to offer (no identity file, no ~/.ssh/id_*, no ssh-agent)");
    } else {
        message.push_str(&format!(": tried {}", tried.join(", ")));
    }
    if !encrypted.is_empty() {
        message.push_str(&format!("; skipped encrypted {}", encrypted.join(", ")));
    }
    Err(TransportError::new(TransportErrorKind::Authentication, message).with_fix(format!(
        "add your public key to ~{}/.ssh/authorized_keys on the host, or point identity_file (--identity) at the right key",
        resolved.user
    )))
}

enum KeyLoad {
    Encrypted,
    Failed(String),
}

async fn load_key(
    path: &Path,
    prompter: &dyn Prompter,
) -> Result<russh::keys::PrivateKey, KeyLoad> {
    match russh::keys::load_secret_key(path, None) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let prompt = format!("Passphrase for {}", path.display());
            let Some(passphrase) = prompter.secret(&prompt).await else {
                return Err(KeyLoad::Encrypted);
            };
            russh::keys::load_secret_key(path, Some(passphrase.expose_secret()))
                .map_err(|e| KeyLoad::Failed(format!("wrong passphrase? {e}")))
        }
        Err(e) => Err(KeyLoad::Failed(e.to_string())),
    }
}

async fn try_agent(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    socket: &Path,
    rsa_hash: Option<russh::keys::HashAlg>,
) -> Result<Option<String>, String> {
    let mut agent = AgentClient::connect_uds(socket)
        .await
        .map_err(|e| e.to_string())?;
    let identities = agent
        .request_identities()
        .await
        .map_err(|e| e.to_string())?;
    for identity in identities {
        let key = identity.public_key().into_owned();
        let comment = key.comment().to_owned();
        match handle
            .authenticate_publickey_with(user.to_owned(), key, rsa_hash, &mut agent)
            .await
        {
            Ok(result) if result.success() => return Ok(Some(comment.to_string())),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = ?e, "agent could not sign"),
        }
    }
    Ok(None)
}

/// A handler that only records the server's host key and then stops the handshake.
struct CaptureHandler {
    key: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for CaptureHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = presented_key(key);
        *self.key.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
        Ok(false)
    }
}

/// The host key `resolved` presents, fetched without authenticating (through the ProxyJump
/// hops, which do need to be trusted and to authenticate). `hop_check` builds each hop's
/// host-key check.
pub async fn fetch_host_key(
    resolved: &Resolved,
    hops: &[Resolved],
    prompter: Arc<dyn Prompter>,
    timing: Timing,
    hop_check: impl Fn(&Resolved) -> HostKeyCheck + Sync,
) -> Result<PublicKey, TransportError> {
    let (stream, _jump) = carrier(resolved, hops, &hop_check, prompter, timing).await?;
    let captured = Arc::new(Mutex::new(None));
    let handler = CaptureHandler {
        key: captured.clone(),
    };
    let config = Arc::new(client::Config::default());
    let _ = tokio::time::timeout(
        timing.connect_timeout,
        client::connect_stream(config, stream, handler),
    )
    .await;
    let key = captured.lock().unwrap_or_else(|e| e.into_inner()).take();
    key.ok_or_else(|| {
        TransportError::new(
            TransportErrorKind::Connect,
            format!(
                "{}:{} did not present a host key (is it an SSH server?)",
                resolved.host_name, resolved.port
            ),
        )
    })
}
