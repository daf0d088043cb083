//! Shared helpers for the real-peer integration tests: find the peers `cargo xtask peer start` brought up, run the clawlink binary, make scratch state.
//!
//! The peers (a real openclaw gateway with token auth, a second one with password auth, a
//! stub model, sshd) are started once per test run by `cargo xtask ci` and described in an
//! env file. A test never skips when they are missing: it fails and says how to start them.

pub mod agent;
pub mod compliance;
pub mod forwards;
pub mod netfault;
pub mod plugins;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clawlink_core::gateway::{
    ClientOptions, Credentials, DeviceIdentity, DeviceTokenStore, MemoryTokenStore,
};
use clawlink_core::transport::Transport;
use clawlink_transport_ws::{DirectWs, GatewayUrl};
use secrecy::SecretString;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The peers' description (KEY=VALUE lines written by `cargo xtask peer start`).
pub struct Peers {
    vars: HashMap<String, String>,
}

impl Peers {
    /// The running peers; panics with the command that starts them when there are none.
    pub fn get() -> &'static Peers {
        static PEERS: OnceLock<Peers> = OnceLock::new();
        PEERS.get_or_init(|| {
            let path = std::env::var_os("CLAWLINK_PEER_ENV")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target/peer/run/env"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "the real peers are not running ({}: {e}). Run the tests with `cargo xtask ci`, \
                     or start the peers first with `cargo xtask peer install && cargo xtask peer start`",
                    path.display()
                )
            });
            let vars = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            Peers { vars }
        })
    }

    /// One value of the env file; panics naming the key when absent.
    pub fn var(&self, key: &str) -> &str {
        self.vars.get(key).unwrap_or_else(|| {
            panic!("{key} missing from the peer env file; re-run `cargo xtask peer start`")
        })
    }

    pub fn gateway_url(&self) -> &str {
        self.var("OCPEER_GATEWAY_URL")
    }

    pub fn password_gateway_url(&self) -> &str {
        self.var("OCPEER_PW_GATEWAY_URL")
    }

    pub fn token(&self) -> SecretString {
        SecretString::from(self.var("OCPEER_GATEWAY_TOKEN").to_owned())
    }

    pub fn password(&self) -> SecretString {
        SecretString::from(self.var("OCPEER_PW_GATEWAY_PASSWORD").to_owned())
    }

    /// Runs `xtask peer <args>` (used to restart a gateway) without going through cargo,
    /// which would block on the build lock the running `cargo test` holds.
    pub fn xtask_peer(&self, args: &[&str]) -> Output {
        let output = Command::new(self.var("CLAWLINK_XTASK_BIN"))
            .arg("peer")
            .args(args)
            .output()
            .expect("run the xtask binary");
        assert!(
            output.status.success(),
            "xtask peer {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

/// A fresh, private scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target/test-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    dir
}

/// Writes a secret into a 0600 file in `dir` and returns its path.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// The global flags that reach the gateway at `url` with the main peer gateway's token (in
/// a 0600 file in `dir`, never in argv), after `--config CONFIG` when there is one.
pub fn token_flags(dir: &Path, config: Option<&Path>, url: &str) -> Vec<String> {
    let token = secret_file(dir, "token", Peers::get().var("OCPEER_GATEWAY_TOKEN"));
    let mut flags = Vec::new();
    if let Some(config) = config {
        flags.extend(["--config".into(), config.display().to_string()]);
    }
    flags.extend([
        "--url".into(),
        url.into(),
        "--token-file".into(),
        token.display().to_string(),
    ]);
    flags
}

/// A marker no other test (or earlier run) uses, to find a test's own messages in a shared
/// session or log.
pub fn unique_marker(label: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{label}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The text of a `chat.history` message: its string content, or its text parts joined.
pub fn message_text(message: &serde_json::Value) -> String {
    use serde_json::Value;
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The direct-ws transport to `url`.
pub fn direct(url: &str) -> Arc<dyn Transport> {
    Arc::new(
        DirectWs::new(
            GatewayUrl::parse(url).expect("valid url"),
            Duration::from_secs(5),
        )
        .expect("transport"),
    )
}

/// Operator options with a fresh device identity and an in-memory token store.
pub fn operator(credentials: Credentials) -> (ClientOptions, Arc<MemoryTokenStore>) {
    let store = Arc::new(MemoryTokenStore::default());
    let identity = Arc::new(DeviceIdentity::generate().expect("randomness"));
    let options = ClientOptions::operator(
        identity,
        credentials,
        store.clone() as Arc<dyn DeviceTokenStore>,
    );
    (options, store)
}

/// Token credentials for the main gateway.
pub fn token_credentials() -> Credentials {
    Credentials {
        token: Some(Peers::get().token()),
        password: None,
    }
}

/// The clawlink binary built by `cargo build` (`CLAWLINK_BIN` overrides).
pub fn clawlink_bin() -> PathBuf {
    let path = std::env::var_os("CLAWLINK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/clawlink"));
    assert!(
        path.is_file(),
        "{} does not exist: build it first (`cargo build -p clawlink`, which `cargo xtask ci` does)",
        path.display()
    );
    path
}

/// Runs clawlink with a private data dir, no user config, and `args`.
pub fn clawlink(data_dir: &Path, args: &[&str]) -> Output {
    clawlink_with_env(data_dir, args, &[])
}

/// Like [`clawlink`], with extra environment variables.
pub fn clawlink_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = clawlink_command(data_dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run clawlink")
}

/// The clawlink binary isolated in `data_dir`: its own data dir, config home, HOME and
/// working directory; no secrets, profile, log filter or session bus from our environment.
pub fn clawlink_command(data_dir: &Path) -> Command {
    isolate_clawlink(Command::new(clawlink_bin()), data_dir)
}

/// `cmd` (clawlink itself, or a wrapper such as `ip netns exec … clawlink`) isolated in
/// `data_dir` the way [`clawlink_command`] describes.
pub fn isolate_clawlink(mut cmd: Command, data_dir: &Path) -> Command {
    cmd.current_dir(data_dir)
        .env("CLAWLINK_DATA_DIR", data_dir.join("data"))
        .env("XDG_CONFIG_HOME", data_dir.join("config"))
        .env("HOME", data_dir)
        .env_remove("CLAWLINK_TOKEN")
        .env_remove("CLAWLINK_PASSWORD")
        .env_remove("CLAWLINK_PROFILE")
        .env_remove("RUST_LOG")
        // No session bus: a developer's own keyring must not feed these tests a secret.
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    cmd
}

/// stdout and stderr as text, for assertions and failure messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A scratch HOME whose `~/.ssh/known_hosts` trusts the peer sshd (a copy of the harness's
/// known_hosts file), for tests that use the SSH transport.
pub fn ssh_home(name: &str) -> PathBuf {
    let home = scratch_dir(name);
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::copy(
        Peers::get().var("OCPEER_SSH_KNOWN_HOSTS"),
        ssh.join("known_hosts"),
    )
    .unwrap();
    home
}

/// `user@127.0.0.1:PORT` of the peer sshd.
pub fn ssh_target(user: &str) -> String {
    let peers = Peers::get();
    format!(
        "{user}@{}:{}",
        peers.var("OCPEER_SSH_HOST"),
        peers.var("OCPEER_SSH_PORT")
    )
}

/// The main peer gateway's token in a 0600 file in `dir`, as the `--token-file` argument.
pub fn token_file(dir: &Path) -> String {
    secret_file(dir, "token", Peers::get().var("OCPEER_GATEWAY_TOKEN"))
        .display()
        .to_string()
}

/// Global flags followed by a command's words, as one argument list.
pub fn args_with<'a>(base: &'a [String], rest: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(rest.iter().copied())
        .collect()
}

/// The global flags that select the SSH transport to the peer gateway as `user`.
pub fn ssh_args(user: &str) -> Vec<String> {
    let peers = Peers::get();
    vec![
        "--ssh".into(),
        ssh_target(user),
        "--identity".into(),
        peers.var("OCPEER_SSH_KEY").into(),
        "--remote-port".into(),
        peers.var("OCPEER_GATEWAY_PORT").into(),
    ]
}

/// Runs clawlink with `HOME` = `home` (so `~/.ssh` is the scratch one).
pub fn clawlink_in_home(home: &Path, args: &[&str]) -> Output {
    clawlink_with_env(home, args, &[])
}

/// A process's argv from /proc (empty when it is gone or unreadable).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The exec transport's command to the peer gateway, like an OpenSSH ProxyCommand:
/// `ssh -W 127.0.0.1:%p` (the settings' `port`, or a forward's) through the peer sshd as the harness user, trusting
/// its host key through `known_hosts`, never prompting.
pub fn exec_ssh_command(known_hosts: &Path) -> Vec<String> {
    let peers = Peers::get();
    vec![
        "ssh".into(),
        "-W".into(),
        "127.0.0.1:%p".into(),
        "-p".into(),
        peers.var("OCPEER_SSH_PORT").into(),
        "-i".into(),
        peers.var("OCPEER_SSH_KEY").into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        format!(
            "{}@{}",
            peers.var("OCPEER_SSH_USER"),
            peers.var("OCPEER_SSH_HOST")
        ),
    ]
}

/// The exec transport's settings table that reaches the peer gateway through
/// [`exec_ssh_command`].
pub fn exec_settings(known_hosts: &Path) -> serde_json::Value {
    serde_json::json!({
        "command": exec_ssh_command(known_hosts),
        "port": Peers::get().var("OCPEER_GATEWAY_PORT").parse::<u16>().unwrap(),
    })
}
