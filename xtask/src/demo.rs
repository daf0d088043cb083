//! `cargo xtask demo`: starts the real peers and shows the clawlink binary talking to
//! the real gateway (`status`, `call health`). The peers keep running afterwards.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::peer::{self, EnvFile, Layout};
use crate::util::{describe, run_command, say, workspace_root};

pub fn run() -> Result<()> {
    let root = workspace_root();
    let layout = Layout::from_env()?;
    let xtask = std::env::current_exe().context("locating the xtask executable")?;
    say("demo", "peer install");
    run_command(
        Command::new(&xtask)
            .args(["peer", "install"])
            .env("CLAWLINK_PEER_DIR", &layout.prefix),
    )?;
    say("demo", "peer start");
    peer::start_in_child_process(&layout)?;
    say("demo", "cargo build -p clawlink");
    run_command(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "-p", "clawlink"])
            .current_dir(&root),
    )?;

    let env = EnvFile::load(&layout.env_file())?;
    let url = env.require("OCPEER_GATEWAY_URL")?;
    let token_file = peer::write_token_file(&layout, &env, "demo-token")?;
    let clawlink = root.join("target/debug/clawlink");
    let mut failed = Vec::new();
    for args in [&["status"][..], &["call", "health"][..]] {
        let mut cmd = Command::new(&clawlink);
        cmd.arg("--url")
            .arg(url)
            .arg("--token-file")
            .arg(&token_file)
            .args(args);
        // The token is in the file, so the command line is safe to show.
        say("demo", format!("$ {}", describe(&cmd)));
        let status = cmd
            .status()
            .with_context(|| format!("running {}", clawlink.display()))?;
        say("demo", status.to_string());
        if !status.success() {
            failed.push(args.join(" "));
        }
    }
    say(
        "demo",
        format!(
            "the peers are still running (env: {}); stop them with `cargo xtask peer stop`",
            layout.env_file().display()
        ),
    );
    if !failed.is_empty() {
        bail!("clawlink failed: {}", failed.join(", "));
    }
    Ok(())
}
