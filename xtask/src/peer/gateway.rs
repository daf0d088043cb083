//! The OpenClaw gateway instances: config, launch as user claw under the DNS
//! guard, readiness, and stopping/starting one while keeping its state.

use std::fs;
use std::os::unix::fs::chown;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procs::{self, PidEntry};
use super::{users, EnvFile, Gateway, Layout, USER_WITH_OPENCLAW};
use crate::http::{get_status, port_listening};
use crate::util::{detach, say, secs, set_mode, tail, write_file_mode};

/// How long one gateway may take to answer `GET /readyz` with 200 (it usually needs 15-25 s).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How a client authenticates to a gateway instance.
pub enum Auth {
    Token(String),
    Password(String),
}

impl Auth {
    fn config_json(&self) -> String {
        // Both secrets are hex, so they need no JSON escaping.
        match self {
            Auth::Token(token) => format!(r#"{{ "mode": "token", "token": "{token}" }}"#),
            Auth::Password(password) => {
                format!(r#"{{ "mode": "password", "password": "{password}" }}"#)
            }
        }
    }
}

/// Environment of every openclaw process run as claw (gateways and CLI calls alike).
/// The state dir is passed explicitly so the `pw` instance never touches `main`'s.
pub fn claw_env(layout: &Layout, gateway: Gateway) -> Vec<(String, String)> {
    let home = layout.home(USER_WITH_OPENCLAW);
    let node_bin_dir = layout.node_dir().join("bin");
    let pairs: [(&str, String); 15] = [
        ("HOME", home.display().to_string()),
        ("USER", USER_WITH_OPENCLAW.into()),
        ("LOGNAME", USER_WITH_OPENCLAW.into()),
        ("SHELL", "/bin/bash".into()),
        ("LANG", "C.UTF-8".into()),
        (
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", node_bin_dir.display()),
        ),
        (
            "OPENCLAW_STATE_DIR",
            layout.state_dir(gateway).display().to_string(),
        ),
        (
            "OPENCLAW_CONFIG_PATH",
            layout.config_path(gateway).display().to_string(),
        ),
        // The "embedding preset" plus everything that would phone home.
        ("OPENCLAW_DISABLE_BONJOUR", "1".into()),
        ("OPENCLAW_NO_RESPAWN", "1".into()),
        ("OPENCLAW_EXEC_SHELL_SNAPSHOT", "0".into()),
        ("OPENCLAW_SKIP_CHANNELS", "1".into()),
        ("OPENCLAW_OFFLINE", "1".into()),
        ("OPENCLAW_NO_AUTO_UPDATE", "1".into()),
        ("DO_NOT_TRACK", "1".into()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// `ocpeer-offline setpriv … <program>` as claw with the claw env and a clean environment:
/// no DNS query can leave loopback, and nothing of ours (secrets included) leaks in.
pub fn as_claw_offline(layout: &Layout, gateway: Gateway) -> Command {
    let mut cmd = Command::new(layout.offline_guard());
    cmd.args([
        "setpriv",
        &format!("--reuid={USER_WITH_OPENCLAW}"),
        &format!("--regid={USER_WITH_OPENCLAW}"),
        "--init-groups",
    ])
    .env_clear()
    .envs(claw_env(layout, gateway))
    // claw must be able to read its cwd, or Node fails in process.cwd().
    .current_dir(layout.home(USER_WITH_OPENCLAW));
    cmd
}

/// The openclaw CLI as claw against `gateway`'s state (reads the secret from its config).
pub fn openclaw_cli(layout: &Layout, gateway: Gateway) -> Command {
    let mut cmd = as_claw_offline(layout, gateway);
    cmd.arg(layout.node_bin()).arg(layout.openclaw_mjs());
    cmd
}

/// Wipes (when `fresh`) and recreates the state dir, and writes the recipe's config:
/// stub model provider, heartbeat off, mDNS/update/telemetry/catalog off, loopback bind.
pub fn prepare_state(
    layout: &Layout,
    gateway: Gateway,
    port: u16,
    auth: &Auth,
    stub_port: u16,
    fresh: bool,
) -> Result<()> {
    let state = layout.state_dir(gateway);
    if fresh && state.exists() {
        fs::remove_dir_all(&state).with_context(|| format!("wiping {}", state.display()))?;
    }
    let claw = users::lookup(USER_WITH_OPENCLAW)
        .context("user claw missing: run `cargo xtask peer install` first")?;
    fs::create_dir_all(&state)?;
    chown(&state, Some(claw.uid), Some(claw.gid))?;
    set_mode(&state, 0o700)?;
    let config = format!(
        r#"{{
  "gateway": {{
    "mode": "local",
    "port": {port},
    "bind": "loopback",
    "auth": {auth},
    "tailscale": {{ "mode": "off" }},
    "nodes": {{ "pairing": {{ "sshVerify": false }} }}{tls}
  }},
  "update": {{ "checkOnStart": false }},
  "telemetry": {{ "enabled": false }},
  "discovery": {{ "mdns": {{ "mode": "off" }} }},
  "logging": {{ "file": "{log}" }},
  "models": {{
    "mode": "merge",
    "catalogRefresh": {{ "enabled": false }},
    "providers": {{
      "stub": {{
        "baseUrl": "http://127.0.0.1:{stub_port}/v1",
        "apiKey": "stub-key",
        "api": "openai-completions",
        "models": [
          {{ "id": "stub-model", "name": "Stub Model", "reasoning": false, "input": ["text"],
            "cost": {{ "input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0 }},
            "contextWindow": 128000, "maxTokens": 4096 }}
        ]
      }}
    }}
  }},
  "agents": {{ "defaults": {{ "model": {{ "primary": "stub/stub-model" }}, "heartbeat": {{ "every": "0m" }} }} }}
}}
"#,
        auth = auth.config_json(),
        log = layout.gateway_json_log(gateway).display(),
        tls = tls_config(layout, gateway)?,
    );
    let path = layout.config_path(gateway);
    write_file_mode(&path, config.as_bytes(), 0o600)?;
    chown(&path, Some(claw.uid), Some(claw.gid))?;
    Ok(())
}

/// The `gateway.tls` block: the gateway's own self-signed certificate for `tls`, a private
/// CA's certificate (made here with openssl) for `tlsca`.
fn tls_config(layout: &Layout, gateway: Gateway) -> Result<String> {
    match gateway {
        Gateway::Main | Gateway::Pw => Ok(String::new()),
        Gateway::Tls => Ok(r#",
    "tls": { "enabled": true, "autoGenerate": true }"#
            .to_string()),
        Gateway::TlsCa => {
            let pki = super::pki::ensure_private_ca(layout)?;
            Ok(format!(
                r#",
    "tls": {{ "enabled": true, "autoGenerate": false, "certPath": "{}", "keyPath": "{}" }}"#,
                pki.server_cert.display(),
                pki.server_key.display()
            ))
        }
    }
}

/// Launches the gateway in the background and records its PID (the wrappers all exec,
/// so it is the gateway process itself). `truncate_log` starts a new console log;
/// a restart appends so the earlier run stays readable.
pub fn spawn(layout: &Layout, gateway: Gateway, port: u16, truncate_log: bool) -> Result<PidEntry> {
    let log_path = layout.gateway_console_log(gateway);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(!truncate_log)
        .write(true)
        .truncate(truncate_log)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = openclaw_cli(layout, gateway);
    cmd.args(["gateway", "run", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = detach(&mut cmd)
        .spawn()
        .with_context(|| format!("starting gateway {}", gateway.name()))?;
    let entry = PidEntry::for_pid(gateway.pid_name(), child.id());
    procs::record(&layout.pids_file(), entry.clone())?;
    say(
        "peer",
        format!(
            "gateway {} pid {} starting on 127.0.0.1:{port}",
            gateway.name(),
            entry.pid
        ),
    );
    Ok(entry)
}

/// A gateway that was launched and has not answered `/readyz` yet.
pub struct Launch {
    pub gateway: Gateway,
    pub entry: PidEntry,
    pub port: u16,
}

/// Polls every launched gateway until all answer `GET /readyz` with 200. Fails as soon
/// as one exits or times out, showing the last 30 lines of its log.
pub fn wait_ready(layout: &Layout, launches: &[Launch]) -> Result<()> {
    let started = Instant::now();
    let mut pending: Vec<&Launch> = launches.iter().collect();
    while !pending.is_empty() {
        let mut still_pending = Vec::new();
        for launch in pending {
            let name = launch.gateway.name();
            let ready = if launch.gateway.tls() {
                super::pki::https_ready(launch.port)
            } else {
                get_status(launch.port, "/readyz", Duration::from_secs(2)) == Some(200)
            };
            if ready {
                say(
                    "peer",
                    format!(
                        "gateway {name} ready on {}://127.0.0.1:{} after {}",
                        if launch.gateway.tls() { "wss" } else { "ws" },
                        launch.port,
                        secs(started.elapsed())
                    ),
                );
                continue;
            }
            let failure = if !launch.entry.alive() {
                Some("exited".to_string())
            } else if started.elapsed() > READY_TIMEOUT {
                Some(format!("not ready after {}", secs(READY_TIMEOUT)))
            } else {
                None
            };
            if let Some(failure) = failure {
                let log = layout.gateway_console_log(launch.gateway);
                eprintln!("--- last 30 lines of {} ---", log.display());
                eprintln!("{}", tail(&log, 30));
                bail!("gateway {name} (pid {}) {failure}", launch.entry.pid);
            }
            still_pending.push(launch);
        }
        pending = still_pending;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    Ok(())
}

/// `peer stop-gateway NAME`: stops just that gateway; its state dir, port and secret stay.
pub fn stop_one(layout: &Layout, gateway: Gateway) -> Result<()> {
    super::require_root("stop-gateway")?;
    let entries = procs::read_pids(&layout.pids_file());
    match entries.iter().find(|e| e.name == gateway.pid_name()) {
        Some(entry) if entry.alive() => {
            let started = Instant::now();
            procs::stop_entries(std::slice::from_ref(entry), "peer");
            say(
                "peer",
                format!(
                    "gateway {} stopped in {}",
                    gateway.name(),
                    secs(started.elapsed())
                ),
            );
        }
        _ => say(
            "peer",
            format!("gateway {} was not running", gateway.name()),
        ),
    }
    procs::forget(&layout.pids_file(), gateway.pid_name())
}

/// `peer start-gateway NAME`: starts it again on the same port with the kept state and
/// secret, waits for readiness and updates the pids and env files.
pub fn start_one(layout: &Layout, gateway: Gateway) -> Result<()> {
    super::require_root("start-gateway")?;
    let env_path = layout.env_file();
    let mut env = EnvFile::load(&env_path).context("the peers were never started")?;
    let port: u16 = env
        .require(gateway.port_key())?
        .parse()
        .context("bad port in env file")?;
    if !layout.config_path(gateway).exists() {
        bail!(
            "{} is missing: run `cargo xtask peer start` instead",
            layout.config_path(gateway).display()
        );
    }
    let recorded = procs::read_pids(&layout.pids_file())
        .into_iter()
        .find(|e| e.name == gateway.pid_name() && e.alive());
    let entry = match recorded {
        Some(entry) => {
            say(
                "peer",
                format!(
                    "gateway {} already running (pid {})",
                    gateway.name(),
                    entry.pid
                ),
            );
            entry
        }
        None => {
            wait_port_free(port)?;
            spawn(layout, gateway, port, false)?
        }
    };
    let launch = Launch {
        gateway,
        entry,
        port,
    };
    wait_ready(layout, std::slice::from_ref(&launch))?;
    env.set(gateway.pid_key(), launch.entry.pid.to_string());
    env.save(&env_path)
}

/// A gateway that just exited may leave its port busy for a moment.
fn wait_port_free(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while port_listening(port) {
        if Instant::now() > deadline {
            bail!("127.0.0.1:{port} is still in use by something else");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// True if the env file's gateway answers `/readyz` (used by bench to decide whether to start).
pub fn main_gateway_answers(env_file: &Path) -> bool {
    EnvFile::load(env_file)
        .ok()
        .and_then(|env| env.get(Gateway::Main.port_key())?.parse::<u16>().ok())
        .is_some_and(|port| get_status(port, "/readyz", Duration::from_secs(2)) == Some(200))
}
