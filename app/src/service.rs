//! `clawlink service install|uninstall|status`: the agent as a systemd user unit (Linux) or a launchd agent (macOS).
//!
//! The service runs `clawlink up --profile NAME` with the config file, the non-secret
//! connection flags and the state directories of the command line that installed it, and is
//! restarted when it fails. It never holds a secret: a `CLAWLINK_TOKEN`/`CLAWLINK_PASSWORD`
//! in the installer's environment is refused (a service cannot inherit it, and writing it into
//! the file would leak it), and `--token-file`/`--password-file` travel as paths. Both file
//! formats are built by pure functions, compiled and unit-tested on every platform; only the
//! calls to `systemctl`/`launchctl` differ by platform.
//!
//! This file holds the three commands and what they share; [`plan`] decides what the service
//! runs, [`systemd`] and [`launchd`] write (and read back) the two file formats, and
//! [`activation`] talks to `systemctl`/`launchctl`.

mod activation;
mod launchd;
mod plan;
mod systemd;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{json, Value};

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::settings::{self, expand_home, Settings};

use activation::{
    launchd_activate, launchd_deactivate, launchd_state, systemctl, systemd_activate,
    systemd_deactivate, systemd_state, Activation,
};
use launchd::{launchd_plist, plist_program_arguments};
use plan::{environment_notes, path_text, plan, validate_profile_name, Host};
use systemd::{exec_start, systemd_unit, systemd_words};

/// How long the agent gets to close its connections after SIGTERM before it is killed.
const STOP_TIMEOUT_S: u32 = 15;

/// `clawlink service install`.
pub async fn install(global: &GlobalArgs, settings: &Settings, no_start: bool) -> Result<()> {
    let manager = Manager::current()?;
    let host = Host::current()?;
    let spec = plan(global, &settings.profile_name, &settings.files, &host)?;
    let location = Location::of(manager, &spec.profile)?;
    let mut notes = environment_notes(settings);
    if global.config.is_none() {
        if let Some(file) = &spec.config {
            notes.push(format!(
                "the service reads {file} (--config), the ./{} this command read",
                settings::LOCAL_CONFIG_FILE
            ));
        }
    }
    let text = match manager {
        Manager::Systemd => systemd_unit(&spec),
        Manager::Launchd => {
            let log = location
                .log_file
                .as_deref()
                .expect("launchd has a log file");
            let log = path_text(log, "the log file")?;
            launchd_plist(&spec, &location.unit, &log)
        }
    };
    // Everything that can be refused has been checked: only now touch the disk.
    let outcome = write_service_file(&location.path, &text).map_err(|e| {
        Failure::config(
            format!("cannot write {}: {e}", location.path.display()),
            Some(format!(
                "make {} writable by you",
                location.path.parent().unwrap_or(Path::new("/")).display()
            )),
        )
    })?;
    if let Some(log) = &location.log_file {
        // launchd does not create the directories of StandardOutPath.
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::config(format!("cannot create {}: {e}", dir.display()), None)
            })?;
        }
    }
    let activation = if no_start {
        Activation::skipped_by_flag(manager, &location)
    } else {
        match manager {
            Manager::Systemd => systemd_activate(&location, outcome)?,
            Manager::Launchd => launchd_activate(&location)?,
        }
    };
    let command_line = match manager {
        Manager::Systemd => format!("ExecStart={}", exec_start(&spec.argv)),
        Manager::Launchd => format!("runs: {}", shell_command(&spec.argv)),
    };
    if global.json {
        let mut out = json!({
            "ok": true,
            "profile": spec.profile,
            "manager": manager.name(),
            "unit": location.unit,
            "path": location.path,
            "file": outcome.name(),
            "argv": spec.argv,
            "environment": spec.environment.iter().cloned().collect::<BTreeMap<_, _>>(),
            "workingDirectory": spec.working_directory,
            "notes": notes,
        });
        activation.extend_json(&mut out);
        println!("{out}");
    } else {
        let verb = match outcome {
            WriteOutcome::Created => "wrote",
            WriteOutcome::Replaced => "replaced the existing",
            WriteOutcome::Unchanged => "rewrote (unchanged)",
        };
        println!("{verb} {}", location.path.display());
        println!("  {command_line}");
        for note in &notes {
            eprintln!("clawlink: note: {note}");
        }
        for line in activation.lines() {
            println!("{line}");
        }
    }
    Ok(())
}

/// `clawlink service uninstall`.
pub async fn uninstall(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let manager = Manager::current()?;
    validate_profile_name(&settings.profile_name)?;
    let location = Location::of(manager, &settings.profile_name)?;
    if !location.path.exists() {
        let message = format!(
            "no service is installed for profile {:?} (no {})",
            settings.profile_name,
            location.path.display()
        );
        if global.json {
            println!(
                "{}",
                json!({"ok": true, "profile": settings.profile_name, "manager": manager.name(),
                       "path": location.path, "installed": false, "removed": false})
            );
        } else {
            println!("{message}");
        }
        return Ok(());
    }
    let stop = match manager {
        Manager::Systemd => systemd_deactivate(&location),
        Manager::Launchd => launchd_deactivate(&location),
    };
    std::fs::remove_file(&location.path).map_err(|e| {
        Failure::config(
            format!("cannot remove {}: {e}", location.path.display()),
            Some(format!(
                "remove it by hand: rm {}",
                shell_word(&location.path.display().to_string())
            )),
        )
    })?;
    if manager == Manager::Systemd && stop.manager_reachable {
        // Forget the removed unit now rather than at the next reload.
        let _ = systemctl(&["daemon-reload"]);
        let _ = systemctl(&["reset-failed", &location.unit]);
    }
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "profile": settings.profile_name, "manager": manager.name(),
                   "unit": location.unit, "path": location.path, "installed": true,
                   "removed": true, "stopped": stop.stopped, "managerAvailable": stop.manager_reachable,
                   "notes": stop.notes})
        );
    } else {
        if stop.stopped {
            println!(
                "stopped and disabled {} ({})",
                location.unit,
                manager.name()
            );
        }
        println!("removed {}", location.path.display());
        for note in &stop.notes {
            println!("{note}");
        }
    }
    Ok(())
}

/// `clawlink service status`.
pub async fn status(global: &GlobalArgs, settings: &Settings) -> Result<()> {
    let manager = Manager::current()?;
    validate_profile_name(&settings.profile_name)?;
    let profile = &settings.profile_name;
    let location = Location::of(manager, profile)?;
    let text = match std::fs::read_to_string(&location.path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Failure::config(
                format!("cannot read {}: {e}", location.path.display()),
                None,
            )
            .into())
        }
    };
    let Some(text) = text else {
        if global.json {
            println!(
                "{}",
                json!({"ok": true, "profile": profile, "manager": manager.name(),
                       "unit": location.unit, "path": location.path, "installed": false})
            );
        } else {
            println!(
                "not installed: no service for profile {profile:?} ({} does not exist)",
                location.path.display()
            );
            println!(
                "  install it with: {}",
                clawlink_command(
                    config_for_hints(global).as_deref(),
                    profile,
                    "service install"
                )
            );
        }
        return Ok(());
    };
    let (command_line, argv) = match manager {
        Manager::Systemd => {
            let line = text
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix("ExecStart="))
                .map(str::to_owned);
            let argv = line.as_deref().map(systemd_words).unwrap_or_default();
            (line.map(|l| format!("ExecStart={l}")), argv)
        }
        Manager::Launchd => {
            let argv = plist_program_arguments(&text);
            (Some(format!("runs: {}", shell_command(&argv))), argv)
        }
    };
    let executable_exists = argv.first().map(|exe| Path::new(exe).is_file());
    let live = match manager {
        Manager::Systemd => systemd_state(&location.unit),
        Manager::Launchd => launchd_state(&location.unit),
    };
    if global.json {
        println!(
            "{}",
            json!({"ok": true, "profile": profile, "manager": manager.name(),
                   "unit": location.unit, "path": location.path, "installed": true,
                   "execStart": command_line, "argv": argv,
                   "executableExists": executable_exists, "state": live})
        );
        return Ok(());
    }
    println!("installed: {} ({})", location.unit, location.path.display());
    if let Some(line) = &command_line {
        println!("  {line}");
    }
    if executable_exists == Some(false) {
        println!(
            "  warning: {} does not exist any more (clawlink moved or was removed); \
             run `{}` again",
            argv[0],
            clawlink_command(
                config_for_hints(global).as_deref(),
                profile,
                "service install"
            )
        );
    }
    match manager {
        Manager::Systemd => {
            if let Some(active) = live.get("active").and_then(Value::as_str) {
                println!("  active:  {active}");
            }
            if let Some(enabled) = live.get("enabled").and_then(Value::as_str) {
                println!("  enabled: {enabled}");
            }
            if let Some(reason) = live.get("reason").and_then(Value::as_str) {
                println!(
                    "  running state unknown: no systemd user manager is reachable ({reason})"
                );
            }
        }
        Manager::Launchd => {
            let loaded = live.get("loaded").and_then(Value::as_bool) == Some(true);
            println!("  loaded:  {}", if loaded { "yes" } else { "no" });
            if let Some(state) = live.get("state").and_then(Value::as_str) {
                println!("  state:   {state}");
            }
            if let Some(pid) = live.get("pid").and_then(Value::as_u64) {
                println!("  pid:     {pid}");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The service manager and where its files live
// ---------------------------------------------------------------------------------------

/// The service manager of this platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    fn current() -> Result<Self, Failure> {
        if cfg!(target_os = "macos") {
            Ok(Manager::Launchd)
        } else if cfg!(target_os = "linux") {
            Ok(Manager::Systemd)
        } else {
            Err(Failure::config(
                format!(
                    "`clawlink service` knows systemd (Linux) and launchd (macOS), not the service manager of {}",
                    std::env::consts::OS
                ),
                Some("have your service manager run `clawlink up --profile NAME`".into()),
            ))
        }
    }

    fn name(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd",
            Manager::Launchd => "launchd",
        }
    }
}

/// Where the service file of a profile lives and what the manager calls it.
struct Location {
    /// The systemd unit name or the launchd label.
    unit: String,
    path: PathBuf,
    /// launchd only: where the agent's output goes (systemd has the journal).
    log_file: Option<PathBuf>,
}

impl Location {
    fn of(manager: Manager, profile: &str) -> Result<Self, Failure> {
        let base = directories::BaseDirs::new().ok_or_else(|| {
            Failure::config(
                "cannot find your home directory for the service file",
                Some("set HOME".into()),
            )
        })?;
        Ok(match manager {
            Manager::Systemd => {
                let unit = format!("clawlink-{profile}.service");
                Location {
                    path: base.config_dir().join("systemd/user").join(&unit),
                    unit,
                    log_file: None,
                }
            }
            Manager::Launchd => {
                let label = format!("dev.clawlink.{profile}");
                let home = base.home_dir();
                Location {
                    path: home
                        .join("Library/LaunchAgents")
                        .join(format!("{label}.plist")),
                    unit: label,
                    log_file: Some(home.join(format!("Library/Logs/clawlink/{profile}.log"))),
                }
            }
        })
    }
}

/// A clawlink command line for the user to run with this profile (and config file).
fn clawlink_command(config: Option<&str>, profile: &str, rest: &str) -> String {
    let config = config
        .map(|c| format!("--config {} ", shell_word(c)))
        .unwrap_or_default();
    format!("clawlink {config}--profile {profile} {rest}")
}

/// The `--config` of this command line as an absolute path, for the commands we suggest.
fn config_for_hints(global: &GlobalArgs) -> Option<String> {
    global.config.as_ref().map(|config| {
        let config = expand_home(config);
        std::path::absolute(&config)
            .unwrap_or(config)
            .display()
            .to_string()
    })
}

/// Whether `arg` is made of characters neither a shell nor systemd gives a meaning to, so it
/// can stand unquoted in both.
pub(crate) fn is_plain_word(arg: &str) -> bool {
    !arg.is_empty()
        && arg.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '_' | '.' | ',' | ':' | '@' | '+' | '=' | '-')
        })
}

/// One argument for a POSIX shell, for commands shown to the user.
fn shell_word(arg: &str) -> String {
    if is_plain_word(arg) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn shell_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// The one side effect here: writing the service file (the manager is in `activation`)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOutcome {
    Created,
    Replaced,
    Unchanged,
}

impl WriteOutcome {
    fn name(self) -> &'static str {
        match self {
            WriteOutcome::Created => "created",
            WriteOutcome::Replaced => "replaced",
            WriteOutcome::Unchanged => "unchanged",
        }
    }
}

/// Writes the service file atomically (temporary file, then rename), mode 0644: the service
/// manager reads it, and it holds nothing private.
fn write_service_file(path: &Path, text: &str) -> std::io::Result<WriteOutcome> {
    let outcome = match std::fs::read_to_string(path) {
        Ok(old) if old == text => WriteOutcome::Unchanged,
        Ok(_) => WriteOutcome::Replaced,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => WriteOutcome::Created,
        // Unreadable but present: replacing it is still what the user asked for.
        Err(_) => WriteOutcome::Replaced,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("service");
    // A dot name that does not end in .service/.plist: no manager mistakes it for a unit.
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o644);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_report_created_replaced_unchanged() {
        let dir =
            std::env::temp_dir().join(format!("clawlink-service-write-{}", std::process::id()));
        let path = dir.join("sub/clawlink-x.service");
        assert_eq!(
            write_service_file(&path, "a\n").unwrap(),
            WriteOutcome::Created
        );
        assert_eq!(
            write_service_file(&path, "a\n").unwrap(),
            WriteOutcome::Unchanged
        );
        assert_eq!(
            write_service_file(&path, "b\n").unwrap(),
            WriteOutcome::Replaced
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shell_words_quote_for_display() {
        assert_eq!(shell_word("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
