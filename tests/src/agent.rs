//! Drives a real `clawlink up` process for the agent tests: start it, ask it through `clawlink status`, stop it with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{clawlink_command, text};

/// A running `clawlink up` with its own data, config and runtime directories.
pub struct RunningAgent {
    pub child: Child,
    pub dir: PathBuf,
    /// The global flags (connection, profile, config) every command of this test repeats.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The environment that isolates one agent test: data dir, runtime dir (the control
/// socket), HOME (for `~/.ssh`), no secrets or profile from the developer's shell.
pub fn agent_command(dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = clawlink_command(dir);
    cmd.env("CLAWLINK_RUNTIME_DIR", dir.join("run"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `clawlink <args> <command>` in the isolated environment of `dir` (with or without
/// an agent there).
pub fn run_beside(
    dir: &Path,
    args: &[String],
    env: &[(String, String)],
    command: &[&str],
) -> std::process::Output {
    agent_command(dir, env)
        .args(args)
        .args(command)
        .output()
        .expect("run clawlink")
}

impl RunningAgent {
    /// Starts `clawlink <args> up` in `dir` (stdout and stderr to files there).
    pub fn start(dir: &Path, args: &[String], env: &[(String, String)]) -> Self {
        let stdout = std::fs::File::create(dir.join("up.out")).unwrap();
        let stderr = std::fs::File::create(dir.join("up.err")).unwrap();
        let child = agent_command(dir, env)
            .args(args)
            .arg("up")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start clawlink up");
        Self {
            child,
            dir: dir.to_path_buf(),
            args: args.to_vec(),
            env: env.to_vec(),
        }
    }

    /// Runs another clawlink command with the same flags and environment.
    pub fn run(&self, command: &[&str]) -> std::process::Output {
        run_beside(&self.dir, &self.args, &self.env, command)
    }

    /// `clawlink status --json`, parsed.
    pub fn status(&self) -> Value {
        let out = self.run(&["--json", "status"]);
        let (stdout, stderr) = text(&out);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("status --json: {e}\nstdout: {stdout}\nstderr: {stderr}"))
    }

    /// Polls the agent's status until `done` holds; panics with the last status and the
    /// agent's output after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        let mut last = Value::Null;
        while started.elapsed() < timeout {
            let out = self.run(&["--json", "status"]);
            if let Ok(status) = serde_json::from_slice::<Value>(&out.stdout) {
                if status["source"] == "agent" && done(&status) {
                    return status;
                }
                last = status;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "agent: not {what} after {timeout:?}\nlast status: {last:#}\nup.out: {}\nup.err: {}",
            self.output("up.out"),
            self.output("up.err")
        );
    }

    /// What the agent printed so far (`up.out` or `up.err`).
    pub fn output(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (at most 20 s) for the agent to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!(
                    "the agent did not exit within 20 s of SIGTERM\nup.err: {}",
                    self.output("up.err")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The PIDs whose parent is `pid` (Linux /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields follow the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    children
}

/// Whether a process with this PID exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z") | None
        ),
        Err(_) => false,
    }
}
