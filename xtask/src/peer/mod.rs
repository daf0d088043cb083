//! `cargo xtask peer …`: real peers for clawlink's tests (OpenClaw Gateway,
//! OpenSSH, a stub model and a fake macOS node), all on 127.0.0.1.
//!
//! Ported from the shell recipe in shared/peer; everything lives under one
//! prefix (default `<workspace>/target/peer`, override with CLAWLINK_PEER_DIR).

mod envfile;
mod gateway;
mod install;
mod pki;
mod procs;
mod start;
mod users;
mod voice;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

pub use envfile::EnvFile;

pub const NODE_VERSION: &str = "24.21.0";
pub const OPENCLAW_VERSION: &str = "2026.9.6";
/// Has `openclaw` on its PATH over SSH.
pub const USER_WITH_OPENCLAW: &str = "claw";
/// Its non-interactive SSH PATH lacks /usr/local/bin, so `openclaw` exits 127.
pub const USER_WITHOUT_OPENCLAW: &str = "noclaw";

pub fn dispatch(args: &[&str]) -> Result<()> {
    match args {
        ["install"] => install::install(&Layout::from_env()?),
        ["start"] => start::start(&Layout::from_env()?),
        ["stop"] => start::stop(&Layout::from_env()?),
        ["env"] => {
            let layout = Layout::from_env()?;
            let text = std::fs::read_to_string(layout.env_file()).with_context(|| {
                format!(
                    "reading {} (run `cargo xtask peer start` first)",
                    layout.env_file().display()
                )
            })?;
            print!("{text}");
            Ok(())
        }
        ["stop-gateway", name] => gateway::stop_one(&Layout::from_env()?, Gateway::parse(name)?),
        ["start-gateway", name] => {
            gateway::start_one(&Layout::from_env()?, Gateway::parse(name)?)
        }
        ["restart-gateway", name] => {
            let layout = Layout::from_env()?;
            let gateway = Gateway::parse(name)?;
            gateway::stop_one(&layout, gateway)?;
            gateway::start_one(&layout, gateway)
        }
        _ => bail!(
            "usage: cargo xtask peer install|start|stop|env|stop-gateway NAME|start-gateway NAME|restart-gateway NAME"
        ),
    }
}

/// Runs `peer start` in a child xtask process. Used by ci/demo/bench so the daemons'
/// parent exits at once (they are re-parented instead of lingering as our zombies
/// when a test restarts a gateway) and so the secrets on its stdout go nowhere.
pub fn start_in_child_process(layout: &Layout) -> Result<()> {
    let exe = std::env::current_exe().context("locating the xtask executable")?;
    crate::util::run_command(
        std::process::Command::new(exe)
            .args(["peer", "start"])
            .env("CLAWLINK_PEER_DIR", &layout.prefix)
            .stdout(std::process::Stdio::null()),
    )
}

/// Starts the peers (installing first) unless the env file's main gateway already answers.
pub fn ensure_started(layout: &Layout) -> Result<()> {
    if gateway::main_gateway_answers(&layout.env_file()) {
        return Ok(());
    }
    crate::util::say("peer", "peers not running: installing and starting them");
    let exe = std::env::current_exe().context("locating the xtask executable")?;
    crate::util::run_command(
        std::process::Command::new(exe)
            .args(["peer", "install"])
            .env("CLAWLINK_PEER_DIR", &layout.prefix),
    )?;
    start_in_child_process(layout)
}

/// Writes the main gateway's token to `<run>/<name>` (mode 0600) for `--token-file`,
/// which keeps it out of clawlink's argv.
pub fn write_token_file(layout: &Layout, env: &EnvFile, name: &str) -> Result<PathBuf> {
    let path = layout.run_dir().join(name);
    let token = env.require("OCPEER_GATEWAY_TOKEN")?;
    crate::util::write_file_mode(&path, token.as_bytes(), 0o600)?;
    Ok(path)
}

/// The gateway instances `peer start` runs, all as user claw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gateway {
    /// Token auth, claw's default state dir (so `ssh claw@… openclaw …` finds it).
    Main,
    /// Password auth, a state dir of its own.
    Pw,
    /// Token auth over TLS with the certificate the gateway generates itself (self-signed).
    Tls,
    /// Token auth over TLS with a certificate signed by a private CA that xtask generates.
    TlsCa,
}

impl Gateway {
    pub fn parse(name: &str) -> Result<Gateway> {
        match name {
            "main" => Ok(Gateway::Main),
            "pw" => Ok(Gateway::Pw),
            "tls" => Ok(Gateway::Tls),
            "tlsca" => Ok(Gateway::TlsCa),
            other => bail!("unknown gateway {other:?} (expected main, pw, tls or tlsca)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Gateway::Main => "main",
            Gateway::Pw => "pw",
            Gateway::Tls => "tls",
            Gateway::TlsCa => "tlsca",
        }
    }

    /// Name of its line in the pids file.
    pub fn pid_name(self) -> &'static str {
        match self {
            Gateway::Main => "gateway-main",
            Gateway::Pw => "gateway-pw",
            Gateway::Tls => "gateway-tls",
            Gateway::TlsCa => "gateway-tlsca",
        }
    }

    fn state_dir_name(self) -> &'static str {
        match self {
            Gateway::Main => ".openclaw",
            Gateway::Pw => ".openclaw-pw",
            Gateway::Tls => ".openclaw-tls",
            Gateway::TlsCa => ".openclaw-tlsca",
        }
    }

    pub fn port_key(self) -> &'static str {
        match self {
            Gateway::Main => "OCPEER_GATEWAY_PORT",
            Gateway::Pw => "OCPEER_PW_GATEWAY_PORT",
            Gateway::Tls => "OCPEER_TLS_GATEWAY_PORT",
            Gateway::TlsCa => "OCPEER_TLSCA_GATEWAY_PORT",
        }
    }

    pub fn pid_key(self) -> &'static str {
        match self {
            Gateway::Main => "OCPEER_GATEWAY_PID",
            Gateway::Pw => "OCPEER_PW_GATEWAY_PID",
            Gateway::Tls => "OCPEER_TLS_GATEWAY_PID",
            Gateway::TlsCa => "OCPEER_TLSCA_GATEWAY_PID",
        }
    }

    /// Whether it serves HTTPS/WSS.
    pub fn tls(self) -> bool {
        matches!(self, Gateway::Tls | Gateway::TlsCa)
    }
}

/// Every path of the harness, derived from the prefix.
#[derive(Clone, Debug)]
pub struct Layout {
    pub prefix: PathBuf,
}

impl Layout {
    pub fn from_env() -> Result<Layout> {
        let prefix = match std::env::var_os("CLAWLINK_PEER_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => crate::util::workspace_root().join("target").join("peer"),
        };
        // Absolute, because the paths end up in configs read by other users' processes.
        let prefix = if prefix.is_absolute() {
            prefix
        } else {
            std::env::current_dir()?.join(prefix)
        };
        Ok(Layout { prefix })
    }

    pub fn node_dir(&self) -> PathBuf {
        self.prefix.join("node")
    }
    pub fn node_bin(&self) -> PathBuf {
        self.node_dir().join("bin").join("node")
    }
    pub fn openclaw_root(&self) -> PathBuf {
        self.prefix.join("lib/node_modules/openclaw")
    }
    pub fn openclaw_mjs(&self) -> PathBuf {
        self.openclaw_root().join("openclaw.mjs")
    }
    pub fn bin_dir(&self) -> PathBuf {
        self.prefix.join("bin")
    }
    /// The CLI launcher that always uses the private Node.
    pub fn openclaw_wrapper(&self) -> PathBuf {
        self.bin_dir().join("openclaw-peer")
    }
    /// The DNS guard: runs a command with /etc/resolv.conf pointing at 127.0.0.1.
    pub fn offline_guard(&self) -> PathBuf {
        self.bin_dir().join("ocpeer-offline")
    }
    pub fn etc_dir(&self) -> PathBuf {
        self.prefix.join("etc")
    }
    pub fn home_root(&self) -> PathBuf {
        self.prefix.join("home")
    }
    pub fn home(&self, user: &str) -> PathBuf {
        self.home_root().join(user)
    }
    pub fn state_dir(&self, gateway: Gateway) -> PathBuf {
        self.home(USER_WITH_OPENCLAW).join(gateway.state_dir_name())
    }
    pub fn config_path(&self, gateway: Gateway) -> PathBuf {
        self.state_dir(gateway).join("openclaw.json")
    }
    /// The gateway's own JSON log (`logging.file` in its config).
    pub fn gateway_json_log(&self, gateway: Gateway) -> PathBuf {
        self.state_dir(gateway).join("logs").join("gateway.log")
    }
    pub fn ssh_dir(&self) -> PathBuf {
        self.prefix.join("ssh")
    }
    pub fn host_key(&self) -> PathBuf {
        self.ssh_dir().join("ssh_host_ed25519_key")
    }
    pub fn host_key_pub(&self) -> PathBuf {
        self.ssh_dir().join("ssh_host_ed25519_key.pub")
    }
    pub fn client_key(&self) -> PathBuf {
        self.ssh_dir().join("client_ed25519")
    }
    pub fn authorized_keys_dir(&self) -> PathBuf {
        self.ssh_dir().join("authorized_keys")
    }
    pub fn sshd_config(&self) -> PathBuf {
        self.ssh_dir().join("sshd_config")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.prefix.join("run")
    }
    pub fn pids_file(&self) -> PathBuf {
        self.run_dir().join("pids")
    }
    pub fn env_file(&self) -> PathBuf {
        self.run_dir().join("env")
    }
    /// Where the gateway's stdout/stderr go (its JSON log is [`Layout::gateway_json_log`]).
    pub fn gateway_console_log(&self, gateway: Gateway) -> PathBuf {
        self.run_dir()
            .join(format!("gateway-{}.log", gateway.name()))
    }
}

/// Scripts the project carries (copies of the shared recipe's), run from the source tree.
pub fn script(name: &str) -> PathBuf {
    crate::util::xtask_dir().join("peer").join(name)
}

pub fn require_root(what: &str) -> Result<()> {
    if !crate::util::is_root() {
        bail!("`cargo xtask peer {what}` must run as root (it uses useradd, setpriv, unshare and mount)");
    }
    Ok(())
}
