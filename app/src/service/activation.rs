//! Starting, stopping and asking about the installed service: `systemctl --user` and `launchctl`, each call with a deadline.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::plan::path_text;
use super::{shell_word, Location, Manager, WriteOutcome};
use crate::failure::Failure;

/// The longest a `systemctl`/`launchctl` call may take (a restart waits for the old agent to
/// stop, up to `STOP_TIMEOUT_S`); a stuck service manager must not hang the CLI.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a manager tool printed.
pub(super) struct ToolRun {
    success: bool,
    stdout: String,
    stderr: String,
}

impl ToolRun {
    /// The first line of stderr, which is where systemctl and launchctl say what went wrong.
    fn reason(&self) -> String {
        self.stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no error message")
            .to_owned()
    }
}

/// Runs a service-manager tool with a deadline. (A blocking call: this one-shot command has
/// nothing else to do meanwhile.)
fn run_tool(program: &str, args: &[&str]) -> std::io::Result<ToolRun> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "`{program} {}` did not finish within {} s",
                    args.join(" "),
                    TOOL_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect =
        |handle: Option<JoinHandle<String>>| handle.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(ToolRun {
        success: status.success(),
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// What happened after the file was written.
pub(super) struct Activation {
    enabled: bool,
    started: bool,
    /// `None` when the manager was not asked (`--no-start`).
    manager_available: Option<bool>,
    reason: Option<String>,
    lines: Vec<String>,
}

impl Activation {
    pub(super) fn skipped_by_flag(manager: Manager, location: &Location) -> Self {
        let how = match manager {
            Manager::Systemd => format!(
                "systemctl --user daemon-reload && systemctl --user enable --now {}",
                location.unit
            ),
            Manager::Launchd => format!(
                "launchctl bootstrap gui/{} {}",
                current_uid(),
                shell_word(&location.path.display().to_string())
            ),
        };
        Activation {
            enabled: false,
            started: false,
            manager_available: None,
            reason: None,
            lines: vec![format!("not started (--no-start); to start it: {how}")],
        }
    }

    pub(super) fn lines(&self) -> &[String] {
        &self.lines
    }

    pub(super) fn extend_json(&self, out: &mut Value) {
        out["enabled"] = json!(self.enabled);
        out["started"] = json!(self.started);
        out["managerAvailable"] = json!(self.manager_available);
        out["reason"] = json!(self.reason);
        out["hint"] = json!(self.lines);
    }
}

pub(super) fn systemctl(args: &[&str]) -> std::io::Result<ToolRun> {
    let mut full = vec!["--user"];
    full.extend_from_slice(args);
    run_tool("systemctl", &full)
}

/// Whether a systemd user manager answers; the error says why not (no user bus, root in a
/// container, no systemctl at all).
fn systemd_reachable() -> Result<(), String> {
    match systemctl(&["show", "--property=Version"]) {
        Ok(run) if run.success => Ok(()),
        Ok(run) => Err(run.reason()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("systemctl is not installed".to_owned())
        }
        Err(e) => Err(e.to_string()),
    }
}

pub(super) fn systemd_activate(
    location: &Location,
    outcome: WriteOutcome,
) -> Result<Activation, Failure> {
    let unit = location.unit.as_str();
    let start_by_hand =
        format!("systemctl --user daemon-reload && systemctl --user enable --now {unit}");
    if let Err(reason) = systemd_reachable() {
        // `enable` works on the files alone: the service then starts with the user manager.
        let enabled = systemctl(&["enable", unit]).is_ok_and(|run| run.success);
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "$USER".to_owned());
        let mut lines = vec![format!(
            "not started: no systemd user manager is reachable here ({reason}); the unit file is written{}",
            if enabled {
                " and enabled, so it starts with your user manager"
            } else {
                ""
            }
        )];
        lines.push(format!(
            "  to start it from a login session: {start_by_hand}"
        ));
        lines.push(format!(
            "  to keep it running without a login session (at boot, after logout): loginctl enable-linger {user}"
        ));
        return Ok(Activation {
            enabled,
            started: false,
            manager_available: Some(false),
            reason: Some(reason),
            lines,
        });
    }
    // `restart` rather than `enable --now`: a re-install must replace a running agent with the
    // new command line; an unchanged file only needs the agent running.
    let start = if outcome == WriteOutcome::Unchanged {
        "start"
    } else {
        "restart"
    };
    for args in [
        vec!["daemon-reload"],
        vec!["enable", unit],
        vec![start, unit],
    ] {
        let failed = match systemctl(&args) {
            Ok(run) if run.success => None,
            Ok(run) => Some(run.reason()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = failed {
            return Err(service_failure(
                format!(
                    "the unit file {} is written, but `systemctl --user {}` failed: {reason}",
                    location.path.display(),
                    args.join(" ")
                ),
                format!(
                    "see `systemctl --user status {unit}` and `journalctl --user -u {unit}`, then: {start_by_hand}"
                ),
            ));
        }
    }
    Ok(Activation {
        enabled: true,
        started: true,
        manager_available: Some(true),
        reason: None,
        lines: vec![
            format!("enabled and {start}ed {unit}"),
            format!("  follow it with: journalctl --user -u {unit} -f"),
        ],
    })
}

/// The result of stopping a service before its file is removed.
pub(super) struct Deactivation {
    pub(super) stopped: bool,
    pub(super) manager_reachable: bool,
    pub(super) notes: Vec<String>,
}

pub(super) fn systemd_deactivate(location: &Location) -> Deactivation {
    let unit = location.unit.as_str();
    match systemd_reachable() {
        Ok(()) => match systemctl(&["disable", "--now", unit]) {
            Ok(run) if run.success => Deactivation {
                stopped: true,
                manager_reachable: true,
                notes: Vec::new(),
            },
            failed => {
                let reason = failed.map_or_else(|e| e.to_string(), |run| run.reason());
                Deactivation {
                    stopped: false,
                    manager_reachable: true,
                    notes: vec![format!(
                        "warning: `systemctl --user disable --now {unit}` failed ({reason}); check `systemctl --user status {unit}`"
                    )],
                }
            }
        },
        Err(reason) => {
            // Without a manager nothing runs; `disable` still removes the enablement links.
            let _ = systemctl(&["disable", unit]);
            Deactivation {
                stopped: false,
                manager_reachable: false,
                notes: vec![format!(
                    "no systemd user manager is reachable here ({reason}), so there was nothing to stop"
                )],
            }
        }
    }
}

/// `is-active`/`is-enabled` of the unit (`is-enabled` works without a manager, on the files).
pub(super) fn systemd_state(unit: &str) -> Value {
    let ask = |verb: &str| {
        systemctl(&[verb, unit])
            .ok()
            .map(|run| run.stdout.trim().to_owned())
            .filter(|answer| !answer.is_empty())
    };
    let mut state = json!({"enabled": ask("is-enabled")});
    match systemd_reachable() {
        Ok(()) => {
            state["available"] = json!(true);
            state["active"] = json!(ask("is-active"));
        }
        Err(reason) => {
            state["available"] = json!(false);
            state["active"] = Value::Null;
            state["reason"] = json!(reason);
        }
    }
    state
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn launchctl(args: &[&str]) -> std::io::Result<ToolRun> {
    run_tool("launchctl", args)
}

pub(super) fn launchd_activate(location: &Location) -> Result<Activation, Failure> {
    let domain = format!("gui/{}", current_uid());
    let target = format!("{domain}/{}", location.unit);
    let path = path_text(&location.path, "the service file")?;
    // A loaded agent keeps its old definition: unload it first (fails harmlessly when it is
    // not loaded), and clear a `launchctl disable` that would make bootstrap refuse.
    let _ = launchctl(&["bootout", &target]);
    let _ = launchctl(&["enable", &target]);
    let failed = match launchctl(&["bootstrap", &domain, &path]) {
        Ok(run) if run.success => None,
        Ok(run) => Some(run.reason()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(reason) = failed {
        return Err(service_failure(
            format!(
                "the agent file {path} is written, but `launchctl bootstrap {domain}` failed: {reason}"
            ),
            format!(
                "launchd loads it at your next login; to load it now, from a session logged in \
                 to the desktop: launchctl bootstrap {domain} {}",
                shell_word(&path)
            ),
        ));
    }
    Ok(Activation {
        enabled: true,
        started: true,
        manager_available: Some(true),
        reason: None,
        lines: vec![
            format!("loaded {} into {domain}", location.unit),
            format!(
                "  its output goes to {}",
                location
                    .log_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        ],
    })
}

pub(super) fn launchd_deactivate(location: &Location) -> Deactivation {
    let target = format!("gui/{}/{}", current_uid(), location.unit);
    // bootout fails when the agent is not loaded, which is the state we want anyway.
    let stopped = launchctl(&["bootout", &target]).is_ok_and(|run| run.success);
    Deactivation {
        stopped,
        manager_reachable: true,
        notes: Vec::new(),
    }
}

/// `launchctl print` of the agent: loaded or not, its state and pid.
pub(super) fn launchd_state(label: &str) -> Value {
    let target = format!("gui/{}/{label}", current_uid());
    match launchctl(&["print", &target]) {
        Ok(run) if run.success => {
            let field = |name: &str| {
                run.stdout.lines().find_map(|line| {
                    line.trim()
                        .strip_prefix(name)
                        .and_then(|rest| rest.trim_start().strip_prefix('='))
                        .map(|value| value.trim().to_owned())
                })
            };
            json!({
                "available": true,
                "loaded": true,
                "state": field("state"),
                "pid": field("pid").and_then(|p| p.parse::<u64>().ok()),
            })
        }
        Ok(_) => json!({"available": true, "loaded": false}),
        Err(e) => json!({"available": false, "loaded": false, "reason": e.to_string()}),
    }
}

/// A failure of the service manager (exit 1: the file is fine, the manager said no).
fn service_failure(message: String, fix: String) -> Failure {
    Failure {
        json: json!({"layer": "service", "message": message, "fix": fix}),
        layer: "service".into(),
        message,
        fix: Some(fix),
        exit_code: 1,
    }
}
