//! A running agent while the real gateway stops and starts again: it turns red/orange within one health period and green again on its own. Its own test binary, because it stops the shared gateway.

use std::time::{Duration, Instant};

use clawlink_tests::agent::RunningAgent;
use clawlink_tests::*;
use serde_json::Value;

#[test]
fn agent_follows_the_gateway_down_and_back_up() {
    let peers = Peers::get();
    let dir = scratch_dir("agent-restart");
    let config = dir.join("clawlink.toml");
    // One health period of 3 s: the state must change within it.
    std::fs::write(&config, "[default.features.health]\ninterval_secs = 3\n").unwrap();
    let args = token_flags(&dir, Some(&config), peers.gateway_url());
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let green = |s: &Value| s["connection"]["phase"] == "connected" && s["health"]["state"] == "ok";
    agent.wait_for("green", Duration::from_secs(30), green);

    let stopped = peers.xtask_peer(&["stop-gateway", "main"]);
    assert!(stopped.status.success(), "{:?}", text(&stopped));
    let down_at = Instant::now();
    let status = agent.wait_for("red or orange", Duration::from_secs(3 + 5), |s| {
        s["health"]["color"] == "orange" || s["health"]["color"] == "red"
    });
    let noticed = down_at.elapsed();
    assert_ne!(status["health"]["state"], "ok", "{status:#}");
    assert_ne!(status["connection"]["phase"], "connected", "{status:#}");
    // The status says what went wrong, not just a colour.
    let summary = status["health"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("degraded") || summary.contains("failed") || summary.contains("lost"),
        "{status:#}"
    );
    eprintln!("while down: {summary} / {}", status["health"]["detail"]);

    let started = peers.xtask_peer(&["start-gateway", "main"]);
    assert!(started.status.success(), "{:?}", text(&started));
    let up_at = Instant::now();
    let status = agent.wait_for("green again", Duration::from_secs(120), green);
    let recovered = up_at.elapsed();
    assert_eq!(status["pid"], agent.pid(), "the same agent recovered");
    assert!(status["connection"]["generation"].as_u64().unwrap() >= 2);
    eprintln!(
        "noticed the stop after {:.1} s; green {:.1} s after the gateway was started again",
        noticed.as_secs_f64(),
        recovered.as_secs_f64()
    );
    assert!(agent.terminate().success());
}
