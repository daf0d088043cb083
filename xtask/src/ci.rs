//! `cargo xtask ci`: the whole CI pipeline, fail-fast, with the peers stopped at the end
//! no matter what (also when tests fail or xtask panics).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::peer::Layout;
use crate::util::{run_command, say, secs, workspace_root};

pub fn run() -> Result<()> {
    let root = workspace_root();
    let layout = Layout::from_env()?;
    // Captured before `cargo build` may relink target/debug/xtask: afterwards
    // /proc/self/exe of this process could read "… (deleted)".
    let xtask = std::env::current_exe().context("locating the xtask executable")?;
    let mut steps = Steps::default();
    let result = run_steps(&mut steps, &root, &layout, &xtask);
    steps.print_summary();
    if result.is_ok() {
        say("ci", "all steps passed");
    }
    result
}

fn run_steps(steps: &mut Steps, root: &Path, layout: &Layout, xtask: &Path) -> Result<()> {
    steps.run("cargo fmt --check", || {
        run_command(cargo(root).args(["fmt", "--all", "--", "--check"]))
    })?;
    steps.run("cargo clippy", || {
        run_command(cargo(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    steps.run("cargo build", || {
        run_command(cargo(root).args(["build", "--workspace", "--bins"]))
    })?;
    // The smallest variants (`cargo xtask build --only transport-ws`, only SSH, only exec): code of
    // an optional plugin that is not gated behind its feature fails here, as an error or as
    // a warning (an import only that plugin's code uses). `cargo rustc` puts `-D warnings`
    // on the app crate alone, so the dependencies' check artifacts are reused, not rebuilt.
    for only in ["transport-ws", "transport-ssh", "transport-exec"] {
        steps.run(&format!("cargo check (smallest variant: {only})"), || {
            run_command(cargo(root).args([
                "rustc",
                "-p",
                "clawlink",
                "--bin",
                "clawlink",
                "--profile",
                "check",
                "--no-default-features",
                "--features",
                only,
                "--",
                "-D",
                "warnings",
            ]))
        })?;
    }
    steps.run("peer install", || {
        run_command(&mut peer(xtask, layout, "install"))
    })?;

    // From here on the peers must be stopped whatever happens.
    let guard = StopPeersOnDrop {
        xtask: xtask.to_path_buf(),
        layout: layout.clone(),
        armed: true,
    };
    let tested = steps
        .run("peer start", || {
            // stdout carries the secrets; CI logs must not.
            run_command(peer(xtask, layout, "start").stdout(std::process::Stdio::null()))
        })
        .and_then(|()| {
            steps.run("cargo test", || {
                run_command(
                    cargo(root)
                        // Every test binary runs even after a failure, so one CI log shows them all.
                        .args(["test", "--workspace", "--no-fail-fast"])
                        .env("CLAWLINK_PEER_ENV", layout.env_file())
                        .env("CLAWLINK_BIN", root.join("target/debug/clawlink")),
                )
            })
        })
        .and_then(|()| {
            // In-process playback exists only with the `sound` feature (ALSA, installed by
            // `peer install`): its unit tests play to ALSA's null device.
            steps.run("cargo test (notify with sound)", || {
                run_command(cargo(root).args([
                    "test",
                    "-p",
                    "clawlink-feature-notify",
                    "--features",
                    "sound",
                    "--lib",
                ]))
            })
        });
    let stopped = guard.stop_now(steps);
    tested?;
    stopped
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// `xtask peer <what>` in a child process (its daemons then outlive it cleanly).
fn peer(xtask: &Path, layout: &Layout, what: &str) -> Command {
    let mut cmd = Command::new(xtask);
    cmd.args(["peer", what])
        .env("CLAWLINK_PEER_DIR", &layout.prefix);
    cmd
}

/// Runs `peer stop` when dropped unless [`StopPeersOnDrop::stop_now`] already did.
struct StopPeersOnDrop {
    xtask: PathBuf,
    layout: Layout,
    armed: bool,
}

impl StopPeersOnDrop {
    fn stop_now(mut self, steps: &mut Steps) -> Result<()> {
        self.armed = false;
        steps.run("peer stop", || {
            run_command(&mut peer(&self.xtask, &self.layout, "stop"))
        })
    }
}

impl Drop for StopPeersOnDrop {
    fn drop(&mut self) {
        if self.armed {
            say("ci", "stopping the peers");
            let _ = peer(&self.xtask, &self.layout, "stop").status();
        }
    }
}

/// Step results, for the timing summary at the end.
#[derive(Default)]
struct Steps {
    done: Vec<(String, Duration, bool)>,
}

impl Steps {
    fn run(&mut self, name: &str, step: impl FnOnce() -> Result<()>) -> Result<()> {
        say("ci", format!("=== {name}"));
        let started = Instant::now();
        let result = step();
        let took = started.elapsed();
        self.done.push((name.to_string(), took, result.is_ok()));
        match &result {
            Ok(()) => say("ci", format!("=== {name}: ok in {}", secs(took))),
            Err(_) => say("ci", format!("=== {name}: FAILED after {}", secs(took))),
        }
        result.with_context(|| format!("ci step `{name}` failed"))
    }

    fn print_summary(&self) {
        eprintln!("[ci] summary:");
        for (name, took, ok) in &self.done {
            let verdict = if *ok { "ok" } else { "FAILED" };
            eprintln!("[ci]   {verdict:<6} {:>7}  {name}", secs(*took));
        }
    }
}
