//! `health-rtt`: round trips of the gateway's `health` request on one persistent
//! WebSocket, timed inside this process (no process start-up in the numbers).
//!
//! Paths: (1) direct TCP to the gateway, (2) through `clawlink tunnel`'s local port, and,
//! for reference, (3) through OpenSSH's `ssh -N -L`. Each connects as the device-less
//! `cli`/`cli` operator with the shared token (accepted on loopback), sends one warm-up
//! request, then [`RUNS`] measured ones, one at a time.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::ws::{self, WsClient};
use super::{forward, unix_now, write_files, BenchContext, Stats, SummaryRow, WARMUP_RUNS};
use crate::util::say;

const RUNS: usize = 200;
/// One round trip (or the handshake) must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// All round trips of one path must finish within this.
const PATH_BUDGET: Duration = Duration::from_secs(60);

pub fn health_rtt(ctx: &BenchContext) -> Result<SummaryRow> {
    let gw_port = ctx.gateway_port()?;
    let token = ctx.token()?.to_string();

    let (direct, auth) = measure_path("direct", gw_port, &token)?;

    let tunnel = forward::clawlink_tunnel(ctx, gw_port, "clawlink-tunnel-gateway")?;
    let (through_clawlink, _) = measure_path("clawlink tunnel", tunnel.local_port, &token)?;
    let clawlink_command = tunnel.command.clone();
    let status = tunnel.guard.stop()?;
    if !status.success() {
        say(
            "bench",
            format!("note: clawlink tunnel ended with {status} on SIGTERM"),
        );
    }

    let ssh = forward::ssh_forward(ctx, gw_port, "ssh-forward-gateway-rtt")?;
    let (through_ssh, _) = measure_path("ssh -N -L", ssh.local_port, &token)?;
    let ssh_command = ssh.command.clone();
    ssh.guard.stop()?;

    let paths = [
        ("direct", &direct, format!("ws://127.0.0.1:{gw_port}")),
        ("clawlink_tunnel", &through_clawlink, clawlink_command),
        ("openssh_forward", &through_ssh, ssh_command),
    ];
    // Counts as floats (`1000.0`), as these reports have always had them.
    let mut json = json!({
        "benchmark": "health-rtt",
        "unix_time": unix_now() as f64,
        "unit": "ms",
        "round_trips": RUNS as f64,
        "warmup_round_trips": WARMUP_RUNS as f64,
        "connect": {
            "client": "cli/cli, no device identity, shared token",
            "auth": auth,
        },
    });
    for (key, stats, command) in &paths {
        json[*key] = json!({"via": command, "rtt_ms": stats.to_json(true)});
    }

    let auth_note = format!(
        "auth method {}, scopes {}",
        auth.get("method").and_then(Value::as_str).unwrap_or("?"),
        auth.get("scopes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut md = format!(
        "# health-rtt\n\n{RUNS} sequential `health` requests on one WebSocket per path after {WARMUP_RUNS} warm-up, \
         timed in-process from writing the request frame to reading its `res` (events skipped). \
         Device-less `cli`/`cli` connect with the shared token: accepted ({auth_note}).\n\n\
         | path | p50 ms | p99 ms | mean ms | min ms | max ms |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for (label, stats) in [
        ("direct TCP to the gateway", &direct),
        ("clawlink tunnel", &through_clawlink),
        ("ssh -N -L (reference)", &through_ssh),
    ] {
        let _ = writeln!(
            md,
            "| {label} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            stats.percentile(50.0),
            stats.percentile(99.0),
            stats.mean(),
            stats.min(),
            stats.max()
        );
    }
    for (key, _, command) in &paths {
        let _ = write!(md, "\n`{key}`: `{command}`\n");
    }
    write_files(ctx, "health-rtt", &json, &md)?;

    Ok(SummaryRow {
        result: format!(
            "p50/p99 ms: direct {:.2}/{:.2}, clawlink tunnel {:.2}/{:.2}, ssh -N -L {:.2}/{:.2} ({RUNS} round trips)",
            direct.percentile(50.0),
            direct.percentile(99.0),
            through_clawlink.percentile(50.0),
            through_clawlink.percentile(99.0),
            through_ssh.percentile(50.0),
            through_ssh.percentile(99.0)
        ),
        goal: "— (tunnel overhead over direct)".to_string(),
        met: None,
    })
}

/// Connects to 127.0.0.1:port, then times the round trips; returns them (ms) and hello's auth.
fn measure_path(label: &str, port: u16, token: &str) -> Result<(Stats, Value)> {
    let (mut client, auth) = ws::gateway_connect(port, token, REQUEST_TIMEOUT)
        .with_context(|| format!("{label}: gateway handshake via 127.0.0.1:{port}"))?;
    let result = round_trips(&mut client, label);
    client.close();
    let stats = result?;
    say(
        "bench",
        format!(
            "{label}: health p50 {:.3} ms, p99 {:.3} ms",
            stats.percentile(50.0),
            stats.percentile(99.0)
        ),
    );
    Ok((stats, auth))
}

fn round_trips(client: &mut WsClient, label: &str) -> Result<Stats> {
    let deadline = Instant::now() + PATH_BUDGET;
    let mut values = Vec::with_capacity(RUNS);
    for i in 0..WARMUP_RUNS + RUNS {
        if Instant::now() > deadline {
            bail!("{label}: {i} round trips did not fit in {PATH_BUDGET:?}");
        }
        let rtt = ws::health_round_trip(client, i, REQUEST_TIMEOUT)
            .with_context(|| format!("{label}: health request {i}"))?;
        if i >= WARMUP_RUNS {
            values.push(rtt.as_secs_f64() * 1000.0);
        }
    }
    Ok(Stats::new(values))
}
