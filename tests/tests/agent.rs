//! `clawlink up` against the real gateway, over direct and over SSH: green health, `status` answered by the agent through its socket, `reconnect`, `health`, and a clean SIGTERM.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use clawlink_tests::agent::{children_of, process_alive, run_beside, RunningAgent};
use clawlink_tests::*;
use serde_json::Value;

/// A profile file enabling the health feature with a short period (the default is 60 s).
fn health_config(dir: &Path, extra: &str) -> String {
    let path = dir.join("clawlink.toml");
    std::fs::write(
        &path,
        format!("[default.features.health]\ninterval_secs = 2\n{extra}"),
    )
    .unwrap();
    path.display().to_string()
}

fn direct_args(dir: &Path, config: &str) -> Vec<String> {
    token_flags(dir, Some(Path::new(config)), Peers::get().gateway_url())
}

fn ssh_agent_args(dir: &Path, config: &str) -> Vec<String> {
    let peers = Peers::get();
    let token = secret_file(dir, "token", peers.var("OCPEER_GATEWAY_TOKEN"));
    let mut args = vec![
        "--config".into(),
        config.into(),
        "--token-file".into(),
        token.display().to_string(),
    ];
    args.extend(ssh_args(peers.var("OCPEER_SSH_USER")));
    args
}

fn is_green(status: &Value) -> bool {
    status["connection"]["phase"] == "connected" && status["health"]["state"] == "ok"
}

#[test]
fn up_over_direct_reaches_green_and_answers_through_its_socket() {
    let dir = scratch_dir("agent-direct");
    let config = health_config(&dir, "");
    let args = direct_args(&dir, &config);

    // No agent yet: `status` connects on its own.
    let (one_shot, err) = text(&run_beside(&dir, &args, &[], &["--json", "status"]));
    let one_shot: Value = serde_json::from_str(one_shot.trim()).expect(&err);
    assert_eq!(one_shot["source"], "one-shot", "{one_shot:#}");

    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for("green", Duration::from_secs(30), is_green);
    assert_eq!(status["pid"], agent.pid());
    assert_eq!(status["transport"]["name"], "direct-ws");
    assert_eq!(status["health"]["color"], "green");
    assert!(status["health"]["pingMs"].is_u64(), "{status:#}");
    assert_eq!(status["protocol"], 4);
    let features = status["features"].as_array().unwrap();
    assert!(
        features
            .iter()
            .any(|f| f["name"] == "health" && f["state"] == "running"),
        "{features:?}"
    );

    // The text form says where the answer came from.
    let (text_status, _) = text(&agent.run(&["status"]));
    assert!(text_status.contains("Agent     running"), "{text_status}");
    assert!(text_status.contains("Health    ok"), "{text_status}");

    // On-demand health goes through the agent's feature and exits 0 when green.
    let health = agent.run(&["--json", "health"]);
    let (out, err) = text(&health);
    assert!(health.status.success(), "{out}\n{err}");
    let health: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(health["state"], "ok");

    // A second agent for the same profile is refused, naming the first.
    let second = agent.run(&["up"]);
    let (_, err) = text(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("already running as pid {}", agent.pid())),
        "{err}"
    );

    // `reconnect` gives a fresh connection (a new generation) and comes back green.
    let before = status["connection"]["generation"].as_u64().unwrap();
    let reconnect = agent.run(&["--json", "reconnect"]);
    let (out, err) = text(&reconnect);
    assert!(reconnect.status.success(), "{out}\n{err}");
    let reconnect: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(reconnect["generation"].as_u64().unwrap() > before);
    agent.wait_for("green again", Duration::from_secs(30), is_green);

    let socket = dir.join("run/default.sock");
    assert!(socket.exists());
    let exit = agent.terminate();
    assert!(exit.success(), "exit {exit:?}: {}", agent.output("up.err"));
    assert!(!socket.exists(), "the control socket outlived the agent");
    assert!(agent.output("up.out").contains("agent stopped"));
    // With the agent gone, `status` is a one-shot again.
    assert_eq!(agent.status()["source"], "one-shot");
}

#[test]
fn up_over_ssh_serves_local_forwards_and_leaves_nothing_behind() {
    let dir = ssh_home("agent-ssh");
    let config = health_config(&dir, "");
    let args = ssh_agent_args(&dir, &config);
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for("green", Duration::from_secs(30), is_green);
    assert_eq!(status["transport"]["name"], "ssh-tunnel");
    assert_eq!(status["transport"]["loopbackToGateway"], true);
    let endpoints = status["transport"]["localEndpoints"].as_array().unwrap();
    assert!(
        endpoints.iter().any(|e| e["purpose"] == "gateway"),
        "{endpoints:?}"
    );
    let local = endpoints
        .iter()
        .find(|e| e["purpose"] == "gateway")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();

    // Other programs reach the gateway through the agent's forward.
    let token = dir.join("token").display().to_string();
    let through = clawlink(
        &dir,
        &["--url", &local, "--token-file", &token, "call", "health"],
    );
    let (out, err) = text(&through);
    assert!(through.status.success(), "{out}\n{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["ok"], true);

    // The in-process SSH backend runs no child process at all.
    assert_eq!(children_of(agent.pid()), Vec::<u32>::new());
    let port = local
        .trim_start_matches("ws://127.0.0.1:")
        .trim_end_matches('/')
        .parse::<u16>()
        .unwrap();
    let exit = agent.terminate();
    assert!(exit.success(), "exit {exit:?}: {}", agent.output("up.err"));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still listens after the agent stopped"
    );
}

#[test]
fn openssh_backend_children_end_with_the_agent() {
    let dir = ssh_home("agent-openssh");
    let config = health_config(
        &dir,
        "[default.transports.ssh_tunnel]\nbackend = \"openssh\"\n",
    );
    let args = ssh_agent_args(&dir, &config);
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    agent.wait_for("green", Duration::from_secs(30), is_green);
    let children = children_of(agent.pid());
    assert!(
        !children.is_empty(),
        "the openssh backend should run ssh as a child"
    );
    let exit = agent.terminate();
    assert!(exit.success(), "exit {exit:?}: {}", agent.output("up.err"));
    std::thread::sleep(Duration::from_millis(200));
    for child in children {
        assert!(
            !process_alive(child),
            "ssh child {child} outlived the agent"
        );
    }
}

#[test]
fn disabled_features_do_not_start_and_say_so() {
    let dir = scratch_dir("agent-disabled");
    let config = dir.join("clawlink.toml");
    std::fs::write(&config, "[default.features.health]\nenabled = false\n").unwrap();
    let config = config.display().to_string();
    let args = direct_args(&dir, &config);
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for("connected", Duration::from_secs(30), |s| {
        s["connection"]["phase"] == "connected"
    });
    assert!(status["health"].is_null(), "{status:#}");
    let health = status["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "health")
        .cloned()
        .unwrap();
    assert_eq!(health["enabled"], false);
    assert_eq!(health["state"], "disabled");
    let (features, _) = text(&agent.run(&["features"]));
    assert!(features.contains("health"), "{features}");
    assert!(features.contains("disabled"), "{features}");
    // Asking a feature that does not run says how to enable it.
    let refresh = agent.run(&["health"]);
    let (_, err) = text(&refresh);
    assert_eq!(refresh.status.code(), Some(1), "{err}");
    assert!(err.contains("enabled = true"), "{err}");
    assert!(agent.terminate().success());
}
