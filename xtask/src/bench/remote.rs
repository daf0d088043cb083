//! `test-remote`: `clawlink … test` against what a user would do with OpenSSH.
//!
//! * clawlink: `clawlink --ssh … --json test` (one SSH connection: handshake, remote
//!   `openclaw --version`, gateway handshake + `health` through a forwarded channel).
//! * seed: the seed project's check, `ssh … claw@127.0.0.1 openclaw status --json`.
//!   Goal: clawlink's median ≤ 1/20 of it.
//! * OpenSSH equivalent (no goal): `ssh … openclaw --version`, then `ssh -N -L` to the
//!   gateway plus `openclaw gateway call health --json` through it; the sum is timed.

use std::fmt::Write as _;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::{
    forward, measure, met, round3, round6, run_measured, unix_now, write_files, BenchContext,
    Stats, SummaryRow, COMMAND_TIMEOUT, TIME_GOAL_RATIO, WARMUP_RUNS,
};
use crate::util::{describe, say, tail};

const CLAWLINK_RUNS: usize = 10;
const SEED_RUNS: usize = 5;
const OPENSSH_RUNS: usize = 5;

pub fn test_remote(ctx: &BenchContext) -> Result<SummaryRow> {
    let gw_port = ctx.gateway_port()?;
    let clawlink = || {
        let mut cmd = ctx.clawlink_ssh_cmd(gw_port)?;
        cmd.arg("--token-file")
            .arg(&ctx.token_file)
            .args(["--json", "test"]);
        Ok(cmd)
    };
    let (ours, stdouts) = measure(ctx, "clawlink test", CLAWLINK_RUNS, &clawlink)?;
    let steps = step_breakdown(&stdouts)?;

    let seed = || {
        let mut cmd = ctx.ssh_cmd()?;
        cmd.arg(ctx.ssh_target()?)
            .args(["openclaw", "status", "--json"]);
        Ok(cmd)
    };
    let (seed_series, _) = measure(ctx, "ssh openclaw status --json", SEED_RUNS, &seed)?;

    let openssh = openssh_equivalent(ctx, gw_port)?;

    let ours_ms = ours.wall_stats();
    let seed_ms = seed_series.wall_stats();
    let ratio_seed = ours_ms.median() / seed_ms.median();
    let ratio_openssh = ours_ms.median() / openssh.total.median();
    let goal_met = ratio_seed <= TIME_GOAL_RATIO;

    // Counts as floats (`1.0`), as these reports have always had them.
    let json = json!({
        "benchmark": "test-remote",
        "unix_time": unix_now() as f64,
        "warmup_runs": WARMUP_RUNS as f64,
        "unit": "ms",
        "clawlink": {
            "command": ours.command,
            "wall_ms": ours_ms.to_json(false),
            "max_rss_mib": round3(ours.max_rss_mib()),
            "steps_ms": steps.to_json(),
        },
        "seed_status": {
            "command": seed_series.command,
            "wall_ms": seed_ms.to_json(false),
            "max_rss_mib": round3(seed_series.max_rss_mib()),
        },
        "openssh_equivalent": {
            "commands": openssh.commands,
            "wall_ms": openssh.total.to_json(false),
            "version_ms": openssh.version.to_json(false),
            "forward_up_ms": openssh.forward_up.to_json(false),
            "call_health_ms": openssh.call.to_json(false),
        },
        "goals": {
            "time_ratio_vs_seed": round6(ratio_seed),
            "time_goal": round6(TIME_GOAL_RATIO),
            "time_met": goal_met,
            "time_ratio_vs_openssh_equivalent": round6(ratio_openssh),
        },
    });

    let mut md = format!(
        "# test-remote\n\nWall time of a full connection test over SSH to the real sshd and gateway on 127.0.0.1; \
         each after {WARMUP_RUNS} warm-up run. \
         Max RSS is the local process only (clawlink, or the ssh client; not the remote openclaw).\n\n\
         | command | runs | median ms | min ms | max ms | max RSS MiB |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n"
    );
    let mut row = |label: &str, stats: &Stats, rss: Option<f64>| {
        let _ = writeln!(
            md,
            "| {label} | {} | {:.1} | {:.1} | {:.1} | {} |",
            stats.values.len(),
            stats.median(),
            stats.min(),
            stats.max(),
            rss.map_or_else(|| "—".to_string(), |r| format!("{r:.1}"))
        );
    };
    row("clawlink test", &ours_ms, Some(ours.max_rss_mib()));
    row(
        "seed: ssh openclaw status --json",
        &seed_ms,
        Some(seed_series.max_rss_mib()),
    );
    row(
        "OpenSSH equivalent (sum of the three below)",
        &openssh.total,
        None,
    );
    row("· ssh openclaw --version", &openssh.version, None);
    row("· ssh -N -L until listening", &openssh.forward_up, None);
    row(
        "· openclaw gateway call health through it",
        &openssh.call,
        None,
    );
    let _ = write!(
        md,
        "\n| goal | ratio | target | result |\n| --- | ---: | ---: | --- |\n\
         | clawlink / seed check (median) | {ratio_seed:.4} (1/{:.0}) | ≤ 1/20 | {} |\n\
         | clawlink / OpenSSH equivalent (median) | {ratio_openssh:.4} (1/{:.1}) | — | — |\n",
        1.0 / ratio_seed,
        met(goal_met),
        1.0 / ratio_openssh,
    );
    let _ = write!(
        md,
        "\nclawlink's own step times (`--json`, over the {} measured runs; steps may overlap, \
         so they need not add up to the wall time):\n\n\
         | step | median ms | min ms | max ms |\n| --- | ---: | ---: | ---: |\n",
        ours_ms.values.len()
    );
    for (name, stats) in &steps.entries {
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {:.1} | {:.1} |",
            stats.median(),
            stats.min(),
            stats.max()
        );
    }
    let _ = write!(
        md,
        "\n`clawlink test`: `{}`\n\n`seed`: `{}`\n",
        ours.command, seed_series.command
    );
    for command in &openssh.commands {
        let _ = write!(md, "\n`OpenSSH equivalent`: `{command}`\n");
    }
    write_files(ctx, "test-remote", &json, &md)?;

    Ok(SummaryRow {
        result: format!(
            "clawlink test {:.0} ms vs seed `ssh openclaw status --json` {:.0} ms vs OpenSSH equivalent {:.0} ms (medians)",
            ours_ms.median(),
            seed_ms.median(),
            openssh.total.median()
        ),
        goal: format!("≤ 1/20 of the seed check: 1/{:.0}", 1.0 / ratio_seed),
        met: Some(goal_met),
    })
}

/// Per-step times from `clawlink --json test`: each step's `ms` and every numeric field of
/// its `data` (e.g. `ssh.handshakeMs`, `gateway.healthMs`), in first-seen order.
struct Steps {
    entries: Vec<(String, Stats)>,
}

impl Steps {
    fn to_json(&self) -> Value {
        let steps: Map<String, Value> = self
            .entries
            .iter()
            .map(|(name, stats)| (name.clone(), stats.to_json(false)))
            .collect();
        Value::Object(steps)
    }
}

fn step_breakdown(stdouts: &[String]) -> Result<Steps> {
    let mut entries: Vec<(String, Stats)> = Vec::new();
    let mut push = |name: String, ms: f64| match entries.iter_mut().find(|(n, _)| *n == name) {
        Some((_, stats)) => stats.values.push(ms),
        None => entries.push((name, Stats::new(vec![ms]))),
    };
    for (run, stdout) in stdouts.iter().enumerate() {
        let report: Value = serde_json::from_str(stdout.trim())
            .with_context(|| format!("`clawlink --json test` run {run} printed no JSON"))?;
        if report.get("ok").and_then(Value::as_bool) != Some(true) {
            bail!(
                "`clawlink --json test` run {run} reported failure: {}",
                stdout.trim()
            );
        }
        for step in report
            .get("steps")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(name) = step.get("step").and_then(Value::as_str) else {
                continue;
            };
            if let Some(ms) = step.get("ms").and_then(Value::as_f64) {
                push(name.to_string(), ms);
            }
            for (key, value) in step
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if let Some(x) = value.as_f64() {
                    push(format!("{name}.{key}"), x);
                }
            }
        }
    }
    Ok(Steps { entries })
}

/// Timings of the OpenSSH way of doing what `clawlink test` does.
struct OpensshEquivalent {
    commands: Vec<String>,
    total: Stats,
    version: Stats,
    forward_up: Stats,
    call: Stats,
}

fn openssh_equivalent(ctx: &BenchContext, gw_port: u16) -> Result<OpensshEquivalent> {
    let mut result = OpensshEquivalent {
        commands: Vec::new(),
        total: Stats::new(Vec::new()),
        version: Stats::new(Vec::new()),
        forward_up: Stats::new(Vec::new()),
        call: Stats::new(Vec::new()),
    };
    for run_index in 0..WARMUP_RUNS + OPENSSH_RUNS {
        let run = openssh_equivalent_once(ctx, gw_port)
            .with_context(|| format!("OpenSSH equivalent, run {run_index}"))?;
        if run_index == 0 {
            say(
                "bench",
                format!("OpenSSH equivalent: $ {}", run.commands.join(" ; ")),
            );
            result.commands = run.commands;
        }
        if run_index >= WARMUP_RUNS {
            result.total.values.push(ms(run.total));
            result.version.values.push(ms(run.version));
            result.forward_up.values.push(ms(run.forward_up));
            result.call.values.push(ms(run.call));
        }
    }
    say(
        "bench",
        format!("OpenSSH equivalent: median {:.1} ms", result.total.median()),
    );
    Ok(result)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct OneRun {
    commands: Vec<String>,
    total: Duration,
    version: Duration,
    forward_up: Duration,
    call: Duration,
}

fn openssh_equivalent_once(ctx: &BenchContext, gw_port: u16) -> Result<OneRun> {
    let started = Instant::now();

    let mut version = ctx.ssh_cmd()?;
    version
        .arg(ctx.ssh_target()?)
        .args(["openclaw", "--version"]);
    let version_cmd = describe(&version);
    run_ok(ctx, "ssh-openclaw-version", &mut version)?;
    let version_done = started.elapsed();

    let fwd = forward::ssh_forward(ctx, gw_port, "ssh-forward-gateway")?;
    let forward_done = started.elapsed();

    let mut call = ctx.openclaw_call_health(fwd.local_port)?;
    let call_cmd = describe(&call);
    let call_result = run_ok(ctx, "openclaw-call-health-via-ssh", &mut call);
    let call_done = started.elapsed();
    let status = fwd.guard.stop()?;
    let total = started.elapsed();
    call_result?;
    if !status.success() && status.code() != Some(255) {
        // ssh exits 255 on SIGTERM; anything else is worth a note, not a failure.
        say("bench", format!("ssh -N -L ended with {status}"));
    }
    Ok(OneRun {
        commands: vec![version_cmd, fwd.command, call_cmd],
        total,
        version: version_done,
        forward_up: forward_done - version_done,
        call: call_done - forward_done,
    })
}

/// Runs a command with stdout/stderr in target/bench/logs; it must exit 0 in time.
fn run_ok(ctx: &BenchContext, name: &str, cmd: &mut std::process::Command) -> Result<()> {
    fs::create_dir_all(ctx.out_dir.join("logs"))?;
    let stderr_path = ctx.log_path(&format!("{name}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(ctx.log_path(&format!("{name}.stdout")))?)
        .stderr(fs::File::create(&stderr_path)?);
    let (_, exit) = run_measured(cmd, COMMAND_TIMEOUT)?;
    if exit != 0 {
        bail!(
            "`{}` exited with {exit}:\n{}",
            describe(cmd),
            tail(&stderr_path, 20)
        );
    }
    Ok(())
}
