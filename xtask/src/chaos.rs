//! `cargo xtask chaos [CUTS]`: the full chaos run (default 100 cuts) of `tests/tests/chaos.rs` against the running peers; figures in `target/chaos/summary.md`.
//!
//! The same test binary runs a short version in every `cargo test` (CI); this only asks it
//! for the full count and prints its summary.

use anyhow::{bail, Context, Result};

use crate::peer::{self, Layout};
use crate::util::{run_command, say, workspace_root};

/// The full run's number of cuts (the figure).
const FULL_CUTS: usize = 100;

pub fn run(args: &[&str]) -> Result<()> {
    let cuts = match args {
        [] => FULL_CUTS,
        [n] => n
            .parse()
            .with_context(|| format!("usage: cargo xtask chaos [CUTS]; {n:?} is not a number"))?,
        _ => bail!("usage: cargo xtask chaos [CUTS]"),
    };
    let root = workspace_root();
    let layout = Layout::from_env()?;
    peer::ensure_started(&layout)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    say("chaos", "cargo build -p clawlink");
    run_command(
        std::process::Command::new(&cargo)
            .args(["build", "-p", "clawlink"])
            .current_dir(&root),
    )?;
    say(
        "chaos",
        format!("{cuts} cuts; this takes a while (gateway restarts ~45 s each)"),
    );
    run_command(
        std::process::Command::new(&cargo)
            .args([
                "test",
                "-p",
                "clawlink-tests",
                "--test",
                "chaos",
                "--",
                "--nocapture",
            ])
            .env("CLAWLINK_CHAOS_CUTS", cuts.to_string())
            .env("CLAWLINK_PEER_ENV", layout.env_file())
            .env("CLAWLINK_BIN", root.join("target/debug/clawlink"))
            .current_dir(&root),
    )?;
    let summary = root.join("target/chaos/summary.md");
    print!(
        "\n{}",
        std::fs::read_to_string(&summary).unwrap_or_default()
    );
    say("chaos", format!("summary in {}", summary.display()));
    Ok(())
}
