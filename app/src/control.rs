//! The agent's control socket: a 0600 Unix socket per profile through which other clawlink invocations ask the running agent.
//!
//! One request per connection: the client writes one JSON line, the agent answers one JSON
//! line and closes. Only the user who runs the agent may talk to it: the socket lives in a
//! 0700 directory we own, is created 0600, and every peer's UID is checked (SO_PEERCRED /
//! getpeereid) before a byte is read.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::failure::Failure;

/// A request to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The agent's live state.
    Status,
    /// Drop the connection (and the SSH session) and connect afresh.
    Reconnect,
    /// An action of a running feature (e.g. health `refresh`).
    Feature {
        feature: String,
        action: String,
        #[serde(default)]
        args: Value,
    },
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub result: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ResponseError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Response {
    pub fn ok(result: Value) -> Self {
        Self {
            ok: true,
            result,
            error: None,
        }
    }

    pub fn error(message: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            ok: false,
            result: Value::Null,
            error: Some(ResponseError {
                message: message.into(),
                fix,
            }),
        }
    }
}

/// Longest request line the agent reads; requests are tiny.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long either side waits for the other's line.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The directory holding the sockets: `CLAWLINK_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/clawlink`, else `$TMPDIR/clawlink-<uid>` (macOS has no XDG runtime dir).
///
/// The last one is in a directory every user can write to, so another user may have made
/// it first (to plant a socket there). Then it is not used, by the agent or its clients
/// alike: both pick `<data dir>/run` instead, which only we can write, and say so.
pub fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLAWLINK_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("clawlink");
    }
    let shared = std::env::temp_dir().join(format!("clawlink-{}", current_uid()));
    let Some(reason) = foreign_directory(&shared) else {
        return shared;
    };
    match crate::state::data_dir() {
        Ok(data) => {
            let private = data.join("run");
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "not using {} for the control socket: {reason}; using {} instead \
                 (fix: have its owner or root remove it, or set XDG_RUNTIME_DIR)",
                    shared.display(),
                    private.display()
                )
            });
            private
        }
        // `bind` and the clients refuse the shared one with the reason.
        Err(_) => shared,
    }
}

/// Why `dir`, when it exists, cannot be trusted with our sockets: not a directory (a
/// symlink counts as not one), not owned by us, or writable by others.
fn foreign_directory(dir: &Path) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(dir).ok()?;
    if !meta.is_dir() {
        return Some("it is not a directory".into());
    }
    if meta.uid() != current_uid() {
        return Some(format!(
            "it belongs to {}, not to you",
            describe_uid(meta.uid())
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Some(format!("other users can write to it (mode {mode:o})"));
    }
    None
}

/// `uid 1001 (noclaw)`, or just the number when the name is unknown.
fn describe_uid(uid: u32) -> String {
    // SAFETY: getpwuid returns null or a pointer to static storage, read at once.
    let name = unsafe {
        let entry = libc::getpwuid(uid);
        if entry.is_null() || (*entry).pw_name.is_null() {
            None
        } else {
            Some(
                std::ffi::CStr::from_ptr((*entry).pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    match name {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The control socket of `profile`'s agent.
pub fn socket_path(profile: &str) -> PathBuf {
    runtime_dir().join(format!("{profile}.sock"))
}

/// The effective user ID, whose files and sockets we trust (with root's).
use clawlink_core::ownership::effective_uid as current_uid;

/// Creates the runtime directory 0700, or checks that an existing one is ours and private
/// (another user must not be able to plant a socket where we look for the agent).
fn ensure_private_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let fix = Some(format!(
        "remove {} or set CLAWLINK_RUNTIME_DIR to a private directory",
        dir.display()
    ));
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => {
            return Err(Failure::config(
                format!("cannot create the runtime directory {}: {e}", dir.display()),
                fix,
            ))
        }
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Failure::config(format!("cannot read {}: {e}", dir.display()), fix.clone()))?;
    if !meta.is_dir() || meta.uid() != current_uid() {
        return Err(Failure::config(
            format!(
                "the runtime directory {} is not a directory owned by you ({}): another user could read or plant sockets there",
                dir.display(),
                foreign_directory(dir).unwrap_or_else(|| "it changed while checking".into())
            ),
            Some(format!(
                "have its owner or root remove {}, or set CLAWLINK_RUNTIME_DIR (or XDG_RUNTIME_DIR) to a private directory of yours",
                dir.display()
            )),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            Failure::config(
                format!("cannot make {} private: {e}", dir.display()),
                fix.clone(),
            )
        })?;
    }
    Ok(())
}

/// Binds the agent's socket for `profile`. Refuses when an agent already answers there; a
/// socket file left by an agent that died is replaced.
pub async fn bind(profile: &str) -> Result<(UnixListener, PathBuf), Failure> {
    let path = socket_path(profile);
    check_path_length(&path)?;
    ensure_private_dir(path.parent().expect("socket paths have a parent"))?;
    if path.exists() {
        match ask_at(&path, &Request::Status).await {
            Ok(response) => {
                let pid = response.result.get("pid").and_then(Value::as_u64);
                return Err(Failure::config(
                    format!(
                        "an agent for profile {profile:?} is already running{} (socket {})",
                        pid.map(|p| format!(" as pid {p}")).unwrap_or_default(),
                        path.display()
                    ),
                    Some(
                        "use `clawlink status` to see it, or stop it before starting another"
                            .into(),
                    ),
                ));
            }
            // A socket no agent answers on (one that was killed), or one that is not ours:
            // the directory is ours and private, so it can go.
            Err(_) => {
                tracing::info!(path = %path.display(), "removing a stale control socket");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        Failure::config(
            format!("cannot listen on {}: {e}", path.display()),
            Some("set CLAWLINK_RUNTIME_DIR to a writable private directory".into()),
        )
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Failure::config(format!("cannot chmod {}: {e}", path.display()), None))?;
    }
    Ok((listener, path))
}

/// Unix socket paths are limited to ~104–108 bytes; say so instead of failing obscurely.
fn check_path_length(path: &Path) -> Result<(), Failure> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() > 100 {
        return Err(Failure::config(
            format!(
                "the control socket path {} is too long for a Unix socket",
                path.display()
            ),
            Some("set CLAWLINK_RUNTIME_DIR to a shorter directory".into()),
        ));
    }
    Ok(())
}

/// Serves requests until the listener is dropped; `answer` computes each response.
pub async fn serve<F, Fut>(listener: UnixListener, answer: F)
where
    F: Fn(Request) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response> + Send,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, answer).await {
                tracing::debug!(error = %e, "control request failed");
            }
        });
    }
}

async fn handle<F, Fut>(stream: UnixStream, answer: F) -> io::Result<()>
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let peer = stream.peer_cred()?;
    if peer.uid() != current_uid() {
        tracing::warn!(
            uid = peer.uid(),
            "refused a control connection from another user"
        );
        return Ok(());
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request line"))??;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(request) => answer(request).await,
        Err(e) => Response::error(format!("bad control request: {e}"), None),
    };
    let mut out = serde_json::to_vec(&response).expect("responses serialise");
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Why asking the agent did not work.
#[derive(Debug)]
pub enum AskError {
    /// No agent listens for this profile.
    NoAgent,
    /// An agent is there but the exchange failed.
    Broken(String),
    /// What answers there cannot be trusted to be our agent: the directory or the socket
    /// belongs to another user (or others can write to it), or the listener runs as another
    /// user. Nothing was sent.
    Untrusted { message: String, fix: String },
}

/// Asks `profile`'s agent; `NoAgent` when none runs.
pub async fn ask(profile: &str, request: &Request) -> Result<Response, AskError> {
    ask_at(&socket_path(profile), request).await
}

async fn ask_at(path: &Path, request: &Request) -> Result<Response, AskError> {
    check_socket_owner(path)?;
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AskError::NoAgent)
        }
        Err(e) => return Err(AskError::Broken(format!("{}: {e}", path.display()))),
    };
    // The agent checks our UID; we check its: a socket file can be ours while the process
    // listening behind it is not (a listener handed over by another user).
    let peer = stream.peer_cred().map_err(|e| {
        AskError::Broken(format!("{}: cannot check its owner: {e}", path.display()))
    })?;
    if peer.uid() != current_uid() {
        return Err(AskError::Untrusted {
            message: format!(
                "the control socket {} is served by {}, not by you: it is not your agent, so nothing was sent to it",
                path.display(),
                describe_uid(peer.uid())
            ),
            fix: UNTRUSTED_FIX.into(),
        });
    }
    // Health refreshes and reconnects take as long as the gateway needs, within reason.
    let deadline = match request {
        Request::Status => IO_TIMEOUT,
        _ => Duration::from_secs(60),
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(request).expect("requests serialise");
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await?;
        Ok::<_, io::Error>(answer)
    };
    let answer = tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| AskError::Broken("the agent did not answer in time".into()))?
        .map_err(|e| AskError::Broken(e.to_string()))?;
    if answer.is_empty() {
        return Err(AskError::Broken(
            "the agent closed the connection without answering".into(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| AskError::Broken(format!("bad answer: {e}")))
}

const UNTRUSTED_FIX: &str = "set XDG_RUNTIME_DIR (or CLAWLINK_RUNTIME_DIR) to a private directory of yours, and have the owner of the socket's directory (or root) remove it";

/// Refuses a socket another user could have put there: its directory must be ours and
/// writable only by us, the socket ours too. A missing socket means no agent.
fn check_socket_owner(path: &Path) -> Result<(), AskError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = path.parent().unwrap_or(Path::new("/"));
    if let Some(reason) = foreign_directory(dir) {
        return Err(AskError::Untrusted {
            message: format!(
                "refusing the control socket {}: its directory {} cannot be trusted ({reason}); another user could have planted it",
                path.display(),
                dir.display()
            ),
            fix: UNTRUSTED_FIX.into(),
        });
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AskError::NoAgent),
        Err(e) => return Err(AskError::Broken(format!("{}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() || meta.uid() != current_uid() {
        return Err(AskError::Untrusted {
            message: format!(
                "refusing the control socket {}: it is {}",
                path.display(),
                if meta.file_type().is_socket() {
                    format!("owned by {}, not by you", describe_uid(meta.uid()))
                } else {
                    "not a socket".into()
                }
            ),
            fix: UNTRUSTED_FIX.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        let feature: Request =
            serde_json::from_str(r#"{"op":"feature","feature":"health","action":"refresh"}"#)
                .unwrap();
        assert!(matches!(feature, Request::Feature { ref action, .. } if action == "refresh"));
    }

    #[tokio::test]
    async fn a_request_round_trips_and_a_second_agent_is_refused() {
        let dir = std::env::temp_dir().join(format!("clawlink-ctl-{}", std::process::id()));
        let path = dir.join("p.sock");
        let _ = std::fs::remove_dir_all(&dir);
        ensure_private_dir(&dir).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve(listener, |request: Request| async move {
            Response::ok(serde_json::json!({"pid": 42, "echo": request}))
        }));
        let answer = ask_at(&path, &Request::Reconnect).await.unwrap();
        assert!(answer.ok);
        assert_eq!(answer.result["echo"]["op"], "reconnect");
        server.abort();
        let _ = server.await;
        // The listener is gone but the file stays: that is a stale socket, not an agent.
        assert!(matches!(
            ask_at(&path, &Request::Status).await,
            Err(AskError::NoAgent)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
