//! `cargo xtask ci`: the whole CI pipeline, fail-fast, with the peers stopped at the end
//! no matter what (also when tests fail or xtask panics).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::peer::{EnvFile, Layout};
use crate::util::{output_with_timeout, run_command, say, secs, workspace_root, write_file_mode};

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
            // Each build variant, built as `cargo xtask build --variant` builds it, must start,
            // register what it links and reach the real gateway, so that none can rot. The
            // default one first: it is the binary the tests just used.
            for name in ["default", "minimal", "full"] {
                steps.run(&format!("variant {name}: build and smoke"), || {
                    let features = crate::build::variant_features(name)?;
                    let binary = crate::build::build(&features, false, Some(name))?;
                    smoke_variant(&binary, layout, name)
                })?;
            }
            Ok(())
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

/// A variant's smoke test against the running peers: `status` through direct-ws with the
/// main gateway's token (from a 0600 file, never argv), and `transports` listing what the
/// variant links (minimal: direct-ws alone).
fn smoke_variant(binary: &Path, layout: &Layout, name: &str) -> Result<()> {
    let env = EnvFile::load(&layout.env_file())?;
    let url = env.require("OCPEER_GATEWAY_URL")?;
    let dir = workspace_root().join("target/variants/smoke").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    crate::util::set_mode(&dir, 0o700)?;
    let token = dir.join("token");
    write_file_mode(
        &token,
        env.require("OCPEER_GATEWAY_TOKEN")?.as_bytes(),
        0o600,
    )?;
    let run = |args: &[&str]| -> Result<std::process::Output> {
        let mut cmd = Command::new(binary);
        cmd.current_dir(&dir)
            .env("HOME", &dir)
            .env("CLAWLINK_DATA_DIR", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env_remove("CLAWLINK_TOKEN")
            .env_remove("CLAWLINK_PASSWORD")
            .env_remove("CLAWLINK_PROFILE")
            .args(args);
        output_with_timeout(&mut cmd, Duration::from_secs(60))
    };
    let token = token.display().to_string();
    let status = run(&["--url", url, "--token-file", &token, "status"])?;
    anyhow::ensure!(
        status.status.success(),
        "variant {name}: `clawlink status` failed: {}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    let listing = run(&["--json", "transports"])?;
    let list: serde_json::Value = serde_json::from_slice(&listing.stdout)
        .with_context(|| format!("variant {name}: `transports --json` is not JSON"))?;
    let names: Vec<&str> = list
        .as_array()
        .context("`transports --json` is an array")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    let expected_ssh = name != "minimal";
    anyhow::ensure!(
        names.contains(&"direct-ws") && names.contains(&"ssh-tunnel") == expected_ssh,
        "variant {name} links transports {names:?}"
    );
    say(
        "variant",
        format!("{name}: status ok, transports {}", names.join(", ")),
    );
    Ok(())
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
