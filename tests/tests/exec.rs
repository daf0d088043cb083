//! The `exec` transport end to end against the real peers: a profile whose command is `ssh -W` through the peer sshd reaches the gateway; a command that dies or does not exist fails with a clear one-line error; no command outlives clawlink, however it ends; clawlink's secrets never reach the command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clawlink_tests::agent::{children_of, process_alive, RunningAgent};
use clawlink_tests::*;
use serde_json::{json, Value};

/// A config file in `dir` whose default profile selects the exec transport with `settings`.
fn exec_config(dir: &Path, name: &str, settings: Value) -> PathBuf {
    let config = json!({
        "default": {
            "mode": "remote",
            "transport": "exec",
            "transports": { "exec": settings },
        }
    });
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    path
}

/// `--config CONFIG --token-file TOKEN` for the exec profile that reaches the peer gateway
/// through `ssh -W`, with a HOME whose known_hosts trusts the peer sshd.
fn ssh_exec_args(dir: &Path) -> Vec<String> {
    let config = exec_config(
        dir,
        "exec-ssh",
        exec_settings(&dir.join(".ssh/known_hosts")),
    );
    vec![
        "--config".into(),
        config.display().to_string(),
        "--token-file".into(),
        token_file(dir),
    ]
}

/// Runs clawlink with `args` in `dir`, bounded: a hung command fails the test instead of
/// hanging it.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = clawlink_command(dir);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("clawlink {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code(), stdout, stderr)
}

#[test]
fn a_profile_with_an_ssh_w_command_reaches_the_gateway() {
    let dir = ssh_home("exec-status");
    let args = ssh_exec_args(&dir);

    let (code, stdout, stderr) = run(&dir, &args_with(&args, &["call", "health"]), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let health: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(health["ok"], true, "{health}");

    let (code, stdout, stderr) = run(&dir, &args_with(&args, &["--json", "status"]), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let status: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(status["ok"], true, "{status:#}");
    assert_eq!(status["gateway"]["transport"], "exec", "{status:#}");
    assert!(
        status["gateway"]["url"]
            .as_str()
            .is_some_and(|d| d.contains("ssh -W 127.0.0.1:")),
        "{status:#}"
    );

    // The human form too, and the doctor, which checks the transport as a whole.
    let (code, stdout, stderr) = run(&dir, &args_with(&args, &["status"]), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("(exec)"), "{stdout}");
    let (code, stdout, stderr) = run(&dir, &args_with(&args, &["doctor"]), &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("exec opened a stream"), "{stdout}");
}

#[test]
fn a_command_that_exits_at_once_says_its_status_and_stderr() {
    let dir = scratch_dir("exec-dies");
    let config = exec_config(
        &dir,
        "dies",
        json!({"command": ["sh", "-c", "echo boom >&2; exit 3"]}),
    );
    let token = token_file(&dir);
    for command in [&["status"][..], &["call", "health"]] {
        let args = [
            &["--config", config.to_str().unwrap(), "--token-file", &token][..],
            command,
        ]
        .concat();
        let (code, _, stderr) = run(&dir, &args, &[]);
        assert_eq!(code, Some(1), "{command:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        for needle in ["tunnel:", "`sh -c", "exit status: 3", "boom", "fix:"] {
            assert!(stderr.contains(needle), "{command:?}: {needle}: {stderr}");
        }
    }
}

#[test]
fn a_missing_program_is_a_config_error_naming_it_and_path() {
    let dir = scratch_dir("exec-missing");
    let config = exec_config(
        &dir,
        "missing",
        json!({"command": ["clawlink-test-no-such-proxy", "%h", "%p"]}),
    );
    let token = token_file(&dir);
    let (code, _, stderr) = run(
        &dir,
        &[
            "--config",
            config.to_str().unwrap(),
            "--token-file",
            &token,
            "call",
            "health",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    for needle in ["config:", "`clawlink-test-no-such-proxy`", "PATH", "fix:"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

#[test]
fn the_command_never_sees_clawlinks_secrets() {
    let dir = scratch_dir("exec-env");
    let seen = dir.join("child-env");
    let config = exec_config(
        &dir,
        "env",
        json!({
            "command": ["sh", "-c", format!("env > '{}'; exit 3", seen.display())],
            "env": {"EXEC_TEST_EXTRA": "given"},
        }),
    );
    let (code, _, stderr) = run(
        &dir,
        &["--config", config.to_str().unwrap(), "call", "health"],
        &[
            ("CLAWLINK_TOKEN", "secret-token-value"),
            ("CLAWLINK_PASSWORD", "secret-password-value"),
            ("CLAWLINK_GATEWAY_TOKEN_EXTRA", "secret-extra-value"),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("secret-"), "{stderr}");
    let env = std::fs::read_to_string(&seen).expect("the command ran");
    assert!(env.contains("EXEC_TEST_EXTRA=given"), "{env}");
    assert!(env.contains("PATH="), "{env}");
    assert!(
        !env.contains("secret-"),
        "a secret reached the command:\n{env}"
    );
    for line in env.lines() {
        let name = line
            .split('=')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        assert!(
            !(name.starts_with("CLAWLINK_")
                && (name.contains("TOKEN") || name.contains("PASSWORD"))),
            "{name} reached the command"
        );
    }
}

/// The `ssh -W` children of `pid` (the exec transport's commands).
fn ssh_w_children(pid: u32) -> Vec<u32> {
    children_of(pid)
        .into_iter()
        .filter(|child| {
            let argv = cmdline(*child);
            argv.first().is_some_and(|p| p.ends_with("ssh")) && argv.iter().any(|a| a == "-W")
        })
        .collect()
}

fn all_gone_within(pids: &[u32], limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if pids.iter().all(|p| !process_alive(*p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `clawlink up` with the exec profile, connected, and its `ssh -W` children.
fn agent_with_children(name: &str) -> (RunningAgent, Vec<u32>) {
    let dir = ssh_home(name);
    let args = ssh_exec_args(&dir);
    let agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for("connected", Duration::from_secs(30), |s| {
        s["connection"]["phase"] == "connected"
    });
    assert_eq!(status["transport"]["name"], "exec", "{status:#}");
    let children = ssh_w_children(agent.pid());
    assert!(
        !children.is_empty(),
        "no ssh -W child of the agent; up.err: {}",
        agent.output("up.err")
    );
    // Its own process group, so that killing it reaches whatever it started.
    for child in &children {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        assert_eq!(fields[2], child.to_string(), "pgid of {child}: {stat}");
    }
    (agent, children)
}

#[test]
fn no_command_outlives_an_agent_stopped_with_sigterm() {
    let (mut agent, children) = agent_with_children("exec-sigterm");
    let exit = agent.terminate();
    assert!(exit.success(), "exit {exit:?}: {}", agent.output("up.err"));
    assert!(
        all_gone_within(&children, Duration::from_secs(5)),
        "ssh -W children {children:?} outlived the agent"
    );
}

#[test]
fn no_command_outlives_an_agent_killed_with_sigkill() {
    let (mut agent, children) = agent_with_children("exec-sigkill");
    let status = Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = agent.child.wait();
    // No code of ours runs after SIGKILL: the kernel's parent-death signal ends them.
    assert!(
        all_gone_within(&children, Duration::from_secs(5)),
        "ssh -W children {children:?} outlived a SIGKILLed agent"
    );
}

/// `ssh -W` also ends when its input closes; a command that ignores its input (here one
/// that never answers) shows that the kernel itself ends it when clawlink is SIGKILLed
/// (PR_SET_PDEATHSIG), whatever thread of clawlink spawned it.
#[test]
fn a_command_that_ignores_its_input_dies_with_a_sigkilled_agent() {
    let dir = scratch_dir("exec-pdeathsig");
    let config = exec_config(
        &dir,
        "silent",
        json!({"command": ["sleep", "120"], "connect_timeout_ms": 60000}),
    );
    let args = vec![
        "--config".to_owned(),
        config.display().to_string(),
        "--token-file".to_owned(),
        token_file(&dir),
    ];
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let started = Instant::now();
    let sleeper = loop {
        let found: Vec<u32> = children_of(agent.pid())
            .into_iter()
            .filter(|c| cmdline(*c).first().is_some_and(|p| p == "sleep"))
            .collect();
        if let Some(pid) = found.first() {
            break *pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the agent started no command; up.err: {}",
            agent.output("up.err")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = Command::new("kill")
        .args(["-KILL", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = agent.child.wait();
    assert!(
        all_gone_within(&[sleeper], Duration::from_secs(5)),
        "the command {sleeper} outlived a SIGKILLed agent"
    );
}
