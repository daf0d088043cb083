//! `clawlink service install|status|uninstall` writes a systemd user unit that runs `clawlink up` without any secret, and degrades gracefully without a user manager.
//!
//! Every run gets a scratch HOME, XDG_CONFIG_HOME and an empty XDG_RUNTIME_DIR: no systemd
//! user manager is reachable through it, whatever machine runs the tests, so they never
//! touch the developer's own services and always exercise the "no manager" path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clawlink_tests::*;
use serde_json::Value;

/// A scratch home with a config file (in a directory whose name has a space) defining
/// profile `work` against the peer gateway; returns (home, config file).
fn home_with_profile(name: &str) -> (PathBuf, PathBuf) {
    let home = scratch_dir(name);
    let config_dir = home.join("my configs");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.join("clawlink.toml");
    std::fs::write(
        &config,
        format!(
            "[work.transports.direct_ws]\nurl = \"{}\"\n",
            Peers::get().gateway_url()
        ),
    )
    .unwrap();
    let runtime = home.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    (home, config)
}

/// Runs clawlink in `home` with the empty runtime dir (so no user manager answers).
fn run(home: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let runtime = home.join("run").display().to_string();
    let mut env = vec![("XDG_RUNTIME_DIR", runtime.as_str())];
    env.extend_from_slice(extra_env);
    clawlink_with_env(home, args, &env)
}

fn unit_path(home: &Path, profile: &str) -> PathBuf {
    home.join(format!("config/systemd/user/clawlink-{profile}.service"))
}

fn assert_ok(output: &Output, what: &str) -> (String, String) {
    let (stdout, stderr) = text(output);
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    (stdout, stderr)
}

fn json_of(output: &Output) -> Value {
    let (stdout, stderr) = text(output);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\nstdout: {stdout}\nstderr: {stderr}"))
}

/// `systemd-analyze --user verify` with the scratch XDG directories, when the tool exists.
fn verify_with_systemd_analyze(home: &Path, unit: &Path) {
    let tool = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
    let Some(tool) = tool else {
        eprintln!("systemd-analyze is not installed: unit verification not run");
        return;
    };
    let output = Command::new(tool)
        .args(["--user", "verify"])
        .arg(unit)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .expect("run systemd-analyze");
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "systemd-analyze verify refused the unit:\n{stdout}{stderr}\n{}",
        std::fs::read_to_string(unit).unwrap()
    );
    // Warnings (an ignored line, a bad URL) do not fail verify: they must not be there either.
    assert!(
        !stderr.contains("clawlink-"),
        "systemd-analyze warned about the unit:\n{stderr}"
    );
}

#[test]
fn install_writes_a_unit_that_runs_up_with_the_config_and_never_the_token() {
    let peers = Peers::get();
    let (home, config) = home_with_profile("service-install");
    let token = peers.var("OCPEER_GATEWAY_TOKEN");
    let token_file = secret_file(&home, "token", token);
    let (config_arg, token_arg) = (
        config.display().to_string(),
        token_file.display().to_string(),
    );
    let install_args = [
        "--config",
        config_arg.as_str(),
        "--profile",
        "work",
        "--token-file",
        token_arg.as_str(),
        "--url",
        peers.gateway_url(),
        "service",
        "install",
        "--no-start",
    ];
    let (stdout, _) = assert_ok(&run(&home, &install_args, &[]), "install");
    let unit = unit_path(&home, "work");
    assert!(
        stdout.contains(&format!("wrote {}", unit.display())),
        "{stdout}"
    );
    assert!(stdout.contains("--no-start"), "{stdout}");

    let text_of_unit = std::fs::read_to_string(&unit).expect("the unit file exists");
    let exe = std::fs::canonicalize(clawlink_bin()).unwrap();
    let expected_exec = format!(
        "ExecStart={} up --profile work --config \"{}\" --url {} --token-file {}",
        exe.display(),
        config.display(),
        peers.gateway_url(),
        token_file.display()
    );
    let lines: Vec<&str> = text_of_unit.lines().collect();
    for expected in [
        expected_exec.as_str(),
        "Type=exec",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=15",
        "WantedBy=default.target",
        &format!(
            "Environment=\"CLAWLINK_DATA_DIR={}\"",
            home.join("data").display()
        ),
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in\n{text_of_unit}"
        );
    }
    assert!(
        !text_of_unit.contains(token),
        "the token value is in the unit:\n{text_of_unit}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&unit).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
    verify_with_systemd_analyze(&home, &unit);

    // Installing again: same file, then a changed command line replaces it atomically.
    let (stdout, _) = assert_ok(&run(&home, &install_args, &[]), "re-install");
    assert!(stdout.contains("rewrote (unchanged)"), "{stdout}");
    let without_url: Vec<&str> = install_args
        .iter()
        .copied()
        .filter(|a| *a != "--url" && *a != peers.gateway_url())
        .collect();
    let (stdout, _) = assert_ok(&run(&home, &without_url, &[]), "changed re-install");
    assert!(stdout.contains("replaced the existing"), "{stdout}");
    let text_of_unit = std::fs::read_to_string(&unit).unwrap();
    assert!(!text_of_unit.contains("--url"), "{text_of_unit}");
    let leftovers: Vec<_> = std::fs::read_dir(unit.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");

    // status, in text and JSON.
    let status_args = [
        "--config",
        config_arg.as_str(),
        "--profile",
        "work",
        "service",
        "status",
    ];
    let (stdout, _) = assert_ok(&run(&home, &status_args, &[]), "status");
    assert!(
        stdout.contains(&format!(
            "installed: clawlink-work.service ({})",
            unit.display()
        )),
        "{stdout}"
    );
    let exec_line = text_of_unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    assert!(stdout.contains(exec_line), "{stdout}");
    assert!(
        stdout.contains("no systemd user manager is reachable"),
        "{stdout}"
    );
    let mut json_args = status_args.to_vec();
    json_args.insert(0, "--json");
    let status = json_of(&run(&home, &json_args, &[]));
    assert_eq!(status["installed"], true, "{status}");
    assert_eq!(status["manager"], "systemd");
    assert_eq!(status["executableExists"], true);
    assert_eq!(status["argv"][0], exe.display().to_string());
    assert_eq!(status["argv"][5], config_arg, "{status}");
    assert_eq!(status["state"]["available"], false, "{status}");

    // uninstall, twice.
    let uninstall_args = [
        "--config",
        config_arg.as_str(),
        "--profile",
        "work",
        "service",
        "uninstall",
    ];
    let (stdout, _) = assert_ok(&run(&home, &uninstall_args, &[]), "uninstall");
    assert!(
        stdout.contains(&format!("removed {}", unit.display())),
        "{stdout}"
    );
    assert!(!unit.exists());
    let (stdout, _) = assert_ok(&run(&home, &uninstall_args, &[]), "second uninstall");
    assert!(stdout.contains("no service is installed"), "{stdout}");
    let status = json_of(&run(&home, &json_args, &[]));
    assert_eq!(status["installed"], false, "{status}");
}

#[test]
fn a_token_in_the_environment_is_refused_and_nothing_is_written() {
    let (home, config) = home_with_profile("service-env-token");
    let config_arg = config.display().to_string();
    let secret = "env-token-that-must-stay-put";
    let args = [
        "--config",
        config_arg.as_str(),
        "--profile",
        "work",
        "service",
        "install",
        "--no-start",
    ];
    let output = run(&home, &args, &[("CLAWLINK_TOKEN", secret)]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("CLAWLINK_TOKEN is set"), "{stderr}");
    assert!(stderr.contains("nothing was installed"), "{stderr}");
    assert!(stderr.contains("--profile work auth set`"), "{stderr}");
    assert!(
        stderr.contains("mode 0600 and pass --token-file FILE"),
        "{stderr}"
    );
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    assert!(
        !home.join("config/systemd").exists(),
        "something was written"
    );

    let mut json_args = args.to_vec();
    json_args.insert(0, "--json");
    let output = run(&home, &json_args, &[("CLAWLINK_PASSWORD", secret)]);
    assert_eq!(output.status.code(), Some(2));
    let refusal = json_of(&output);
    assert_eq!(refusal["ok"], false);
    assert_eq!(refusal["error"]["layer"], "config");
    assert!(refusal["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CLAWLINK_PASSWORD"));
    assert!(!refusal.to_string().contains(secret));
    assert!(!home.join("config/systemd").exists());
}

#[test]
fn install_without_a_user_manager_writes_the_file_and_says_how_to_start_it() {
    let (home, config) = home_with_profile("service-no-manager");
    let config_arg = config.display().to_string();
    let args = [
        "--config",
        config_arg.as_str(),
        "--profile",
        "work",
        "service",
        "install",
    ];
    let (stdout, stderr) = assert_ok(&run(&home, &args, &[]), "install without --no-start");
    let unit = unit_path(&home, "work");
    assert!(unit.is_file(), "{stdout}{stderr}");
    assert!(
        stdout.contains("not started: no systemd user manager is reachable here"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "systemctl --user daemon-reload && systemctl --user enable --now clawlink-work.service"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("loginctl enable-linger"), "{stdout}");

    let mut json_args = args.to_vec();
    json_args.insert(0, "--json");
    let report = json_of(&run(&home, &json_args, &[]));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["file"], "unchanged");
    assert_eq!(report["started"], false);
    assert_eq!(report["managerAvailable"], false);
    assert!(report["reason"].as_str().is_some_and(|r| !r.is_empty()));

    // Uninstall also takes back an offline `enable` (the default.target.wants link).
    let uninstall = [
        "--config",
        config_arg.as_str(),
        "--profile",
        "work",
        "service",
        "uninstall",
    ];
    let (stdout, _) = assert_ok(&run(&home, &uninstall, &[]), "uninstall");
    assert!(stdout.contains("nothing to stop"), "{stdout}");
    assert!(!unit.exists());
    let wants = home.join("config/systemd/user/default.target.wants/clawlink-work.service");
    assert!(
        std::fs::symlink_metadata(&wants).is_err(),
        "{} left behind",
        wants.display()
    );
}

#[test]
fn a_profile_name_unfit_for_a_file_name_is_refused() {
    let home = scratch_dir("service-bad-name");
    let config = home.join("clawlink.toml");
    std::fs::write(&config, "[\"we ird\".client]\nrequest_timeout_ms = 5000\n").unwrap();
    let config_arg = config.display().to_string();
    let output = run(
        &home,
        &[
            "--config",
            &config_arg,
            "--profile",
            "we ird",
            "service",
            "install",
            "--no-start",
        ],
        &[],
    );
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("profile name \"we ird\" cannot be used in a service file name"),
        "{stderr}"
    );
    assert!(stderr.contains("letters, digits"), "{stderr}");
    assert!(!home.join("config/systemd").exists());
}
