//! `agent-idle-rss`: the resident memory of `clawlink up` (health feature on, SSH transport, loopback forwards open) after it has idled for five minutes.
//!
//! The agent is what users leave running all day, so its footprint is the one that counts;
//! the openclaw CLI needs about 220 MiB for a single call. RSS is read from
//! `/proc/<pid>/status` (VmRSS, VmHWM) every [`SAMPLE_EVERY`]; the idle period is
//! `CLAWLINK_BENCH_IDLE_SECS` seconds (default 300) so that a developer can try it quickly.

use std::fmt::Write as _;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::procs::ChildGuard;
use super::{round3, unix_now, write_files, BenchContext, SummaryRow};
use crate::util::say;

/// Goal from the issue: at most this much resident memory after the idle period.
const GOAL_MIB: f64 = 20.0;
const DEFAULT_IDLE: Duration = Duration::from_secs(300);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

pub fn agent_idle_rss(ctx: &BenchContext) -> Result<SummaryRow> {
    let idle = std::env::var("CLAWLINK_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_IDLE, Duration::from_secs);
    let runtime = ctx.scratch.join("run-idle");
    let _ = fs::remove_dir_all(&runtime);
    let mut up = ctx.clawlink_ssh_cmd(ctx.gateway_port()?)?;
    up.arg("--token-file")
        .arg(&ctx.token_file)
        .env("CLAWLINK_RUNTIME_DIR", &runtime)
        .arg("up")
        .stdout(Stdio::null());
    let command = "clawlink --ssh … --token-file … up (health every 60 s)".to_string();
    let mut agent = ChildGuard::spawn("clawlink-up", &mut up, &ctx.log_path("agent-idle.err"))?;
    let pid = agent.pid();

    let started = Instant::now();
    loop {
        agent.ensure_running()?;
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the agent was not green within 60 s: {}",
                agent.stderr_tail()
            );
        }
        // The same connection flags as the agent's: `status` asks the agent only when it
        // reaches the same gateway.
        let status = ctx
            .clawlink_ssh_cmd(ctx.gateway_port()?)?
            .arg("--token-file")
            .arg(&ctx.token_file)
            .env("CLAWLINK_RUNTIME_DIR", &runtime)
            .args(["--json", "status"])
            .output()
            .context("clawlink status")?;
        let text = String::from_utf8_lossy(&status.stdout);
        if text.contains("\"source\":\"agent\"") && text.contains("\"state\":\"ok\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let green_after = started.elapsed();
    say(
        "bench",
        format!(
            "agent green after {:.1} s; idling {} s",
            green_after.as_secs_f64(),
            idle.as_secs()
        ),
    );

    let idle_start = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    loop {
        agent.ensure_running()?;
        let (rss, _) = memory_kib(pid)?;
        samples.push((idle_start.elapsed().as_secs_f64(), rss as f64 / 1024.0));
        if idle_start.elapsed() >= idle {
            break;
        }
        std::thread::sleep(SAMPLE_EVERY.min(idle.saturating_sub(idle_start.elapsed())));
    }
    let (final_kib, peak_kib) = memory_kib(pid)?;
    let exit = agent.stop()?;
    let final_mib = final_kib as f64 / 1024.0;
    let peak_mib = peak_kib as f64 / 1024.0;
    let met = final_mib <= GOAL_MIB;

    let samples_json: Vec<_> = samples
        .iter()
        .map(|&(t, mib)| json!({"t_s": round3(t), "mib": round3(mib)}))
        .collect();
    // Counts as floats (`300.0`), as these reports have always had them.
    let json = json!({
        "benchmark": "agent-idle-rss",
        "unix_time": unix_now() as f64,
        "command": command,
        "idle_secs": idle.as_secs() as f64,
        "green_after_s": round3(green_after.as_secs_f64()),
        "rss_mib_after_idle": round3(final_mib),
        "peak_rss_mib": round3(peak_mib),
        "rss_mib_samples": samples_json,
        "goal_mib": GOAL_MIB,
        "met": met,
        "exit_on_sigterm": exit.to_string(),
    });
    let mut md = String::new();
    let _ = writeln!(md, "# agent-idle-rss\n");
    let _ = writeln!(
        md,
        "`clawlink up` over the SSH transport (in-process russh, gateway and widget-sandbox forwards open), \
         health feature on (every 60 s), idle for {} s after turning green ({:.1} s after start).\n",
        idle.as_secs(),
        green_after.as_secs_f64()
    );
    let _ = writeln!(md, "| measure | MiB |\n| --- | ---: |");
    let _ = writeln!(md, "| RSS after idling | {final_mib:.1} |");
    let _ = writeln!(md, "| peak RSS (VmHWM) | {peak_mib:.1} |");
    let _ = writeln!(
        md,
        "\nGoal: ≤ {GOAL_MIB} MiB after idling (the openclaw CLI uses ~220 MiB for one call): {}.",
        if met { "met" } else { "NOT met" }
    );
    let _ = writeln!(md, "Stopped with SIGTERM: {exit}.");
    write_files(ctx, "agent-idle-rss", &json, &md)?;
    Ok(SummaryRow {
        result: format!(
            "{final_mib:.1} MiB RSS after {} s idle (peak {peak_mib:.1} MiB)",
            idle.as_secs()
        ),
        goal: format!("≤ {GOAL_MIB} MiB"),
        met: Some(met),
    })
}

/// (VmRSS, VmHWM) of `pid` in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{name} missing in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
