//! Port forwards under test: `clawlink tunnel` (over any transport) and OpenSSH's `ssh -N -L`,
//! each started in a [`ChildGuard`] and ready (listening) when returned.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::procs::{self, ChildGuard};
use super::BenchContext;
use crate::util::{describe, say};

/// How long a forwarder may take to connect, authenticate and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running forwarder and the local port that reaches `remote_port` on the SSH host.
pub struct Forward {
    pub guard: ChildGuard,
    pub local_port: u16,
    pub command: String,
}

/// `clawlink --ssh … --remote-port RP --local-port LP --json tunnel`. LP is a port that was
/// free a moment ago; clawlink picks another if it is taken, so the port comes from its
/// JSON line (`forwards[purpose=gateway].localPort`).
pub fn clawlink_tunnel(ctx: &BenchContext, remote_port: u16, name: &str) -> Result<Forward> {
    let preferred = procs::free_port()?;
    let mut cmd = ctx.clawlink_ssh_cmd(remote_port)?;
    cmd.arg("--local-port").arg(preferred.to_string());
    tunnel_from(ctx, cmd, preferred, name)
}

/// `cmd --json tunnel` (`cmd` selects the transport and its settings, which prefer local
/// port `preferred`), ready when returned.
pub fn tunnel_from(
    ctx: &BenchContext,
    mut cmd: std::process::Command,
    preferred: u16,
    name: &str,
) -> Result<Forward> {
    cmd.args(["--json", "tunnel"]).stdout(Stdio::piped());
    let command = describe(&cmd);
    say("bench", format!("{name}: $ {command}"));
    std::fs::create_dir_all(ctx.out_dir.join("logs"))?;
    let mut guard = ChildGuard::spawn(name, &mut cmd, &ctx.log_path(&format!("{name}.stderr")))?;
    let line = procs::first_stdout_line(&mut guard, READY_TIMEOUT)?;
    let report: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("clawlink tunnel printed {:?}, not JSON", line.trim()))?;
    if report.get("ok").and_then(Value::as_bool) != Some(true) {
        bail!("clawlink tunnel reported failure: {}", line.trim());
    }
    let local_port = report
        .get("forwards")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .find(|f| f.get("purpose").and_then(Value::as_str) == Some("gateway"))
        .and_then(|f| f.get("localPort"))
        .and_then(Value::as_f64)
        .and_then(|p| u16::try_from(p as i64).ok())
        .with_context(|| format!("no gateway forward in {}", line.trim()))?;
    if local_port != preferred {
        say(
            "bench",
            format!("{name}: 127.0.0.1:{preferred} was taken, clawlink uses {local_port}"),
        );
    }
    procs::wait_listening(local_port, &mut guard, READY_TIMEOUT)?;
    Ok(Forward {
        guard,
        local_port,
        command,
    })
}

/// `ssh -o ExitOnForwardFailure=yes … -N -L 127.0.0.1:FREE:127.0.0.1:RP claw@127.0.0.1`.
pub fn ssh_forward(ctx: &BenchContext, remote_port: u16, name: &str) -> Result<Forward> {
    let local_port = procs::free_port()?;
    let mut cmd = ctx.ssh_cmd()?;
    cmd.args(["-o", "ExitOnForwardFailure=yes", "-N", "-L"])
        .arg(format!("127.0.0.1:{local_port}:127.0.0.1:{remote_port}"))
        .arg(ctx.ssh_target()?)
        .stdout(Stdio::null());
    let command = describe(&cmd);
    std::fs::create_dir_all(ctx.out_dir.join("logs"))?;
    let mut guard = ChildGuard::spawn(name, &mut cmd, &ctx.log_path(&format!("{name}.stderr")))?;
    procs::wait_listening(local_port, &mut guard, READY_TIMEOUT)?;
    Ok(Forward {
        guard,
        local_port,
        command,
    })
}
