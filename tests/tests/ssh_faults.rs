//! SSH fault injection against the real sshd: the server side of a live session is killed under a connected gateway client. Its own test binary, because it kills every sshd session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clawlink_core::gateway::{Backoff, GatewayClient, Phase};
use clawlink_core::prompt::NonInteractive;
use clawlink_core::transport::Transport;
use clawlink_tests::*;
use clawlink_transport_ssh::{SshSettings, SshTunnel};
use serde_json::{json, Value};

/// Held by each test for its whole run: one kills every sshd session, which must not hit
/// the other's reconnected session (cargo runs a binary's tests in parallel).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// PIDs of every per-connection sshd process: the children of the harness's listening sshd
/// (the privileged monitors) and their children (the unprivileged processes that hold the
/// sockets; killing only the monitor leaves those, and the session, alive).
fn sshd_sessions() -> Vec<i32> {
    let pids_file = std::path::Path::new(Peers::get().var("OCPEER_LOG_DIR")).join("pids");
    let text = std::fs::read_to_string(&pids_file).unwrap();
    let listener: i32 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("sshd ")
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .expect("sshd in the pids file");
    let mut found = Vec::new();
    let mut frontier = vec![listener];
    while let Some(pid) = frontier.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks {
            let list =
                std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
            for child in list
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// A supervised gateway client through an SSH tunnel to `target` (the peer gateway's port),
/// with fast keepalive and a short reconnect backoff so faults show quickly.
async fn client_over_ssh(
    target: String,
    home: &std::path::Path,
    keepalive_s: u64,
) -> (Arc<SshTunnel>, GatewayClient) {
    let peers = Peers::get();
    let settings: SshSettings = serde_json::from_value(json!({
        "target": target,
        "identity_file": peers.var("OCPEER_SSH_KEY"),
        "remote_port": peers.var("OCPEER_GATEWAY_PORT").parse::<u16>().unwrap(),
        "known_hosts_file": home.join(".ssh/known_hosts"),
        "keepalive_interval_s": keepalive_s,
        "keepalive_count": 2,
    }))
    .unwrap();
    let tunnel = Arc::new(SshTunnel::new(settings, Arc::new(NonInteractive)).unwrap());
    let (mut options, _) = operator(token_credentials());
    options.backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        jitter: 0.2,
    };
    let client = GatewayClient::start(tunnel.clone(), options);
    client
        .wait_connected(Duration::from_secs(30))
        .await
        .expect("connected through SSH");
    (tunnel, client)
}

#[tokio::test]
async fn killing_the_server_side_of_the_ssh_session_is_survived() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let home = ssh_home("ssh-fault");
    let (tunnel, client) = client_over_ssh(ssh_target("claw"), &home, 2).await;
    assert!(!sshd_sessions().is_empty(), "no sshd session process found");

    let killed_at = Instant::now();
    for pid in sshd_sessions() {
        // SIGKILL: the server side vanishes without a goodbye, like a crashed host.
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
    }
    let mut state = client.state();
    let recovered = tokio::time::timeout(Duration::from_secs(60), async {
        let mut saw_degraded = false;
        loop {
            {
                let s = state.borrow_and_update();
                if matches!(s.phase, Phase::Degraded { .. }) {
                    saw_degraded = true;
                }
                if s.phase == Phase::Connected && s.generation >= 2 {
                    return saw_degraded;
                }
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("no reconnection within 60 s of killing the SSH session");
    assert!(recovered, "the loss was not reported as Degraded");
    let health = client.request("health", Value::Null).await.unwrap();
    assert_eq!(health["ok"], true);
    eprintln!(
        "recovered {:.2} s after the sshd session was killed",
        killed_at.elapsed().as_secs_f64()
    );
    client.shutdown().await;
    tunnel.close().await;
}

/// A TCP proxy to `upstream` that can freeze every connection it carries (bytes stop
/// flowing both ways, sockets stay open: a dead network path, not a closed one).
struct StallProxy {
    port: u16,
    freeze: Arc<tokio::sync::Notify>,
}

impl StallProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let freeze = Arc::new(tokio::sync::Notify::new());
        let frozen = freeze.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = frozen.notified() => {
                            // Hold both sockets open and silent for a long while.
                            tokio::time::sleep(Duration::from_secs(300)).await;
                        }
                    }
                });
            }
        });
        Self { port, freeze }
    }

    fn freeze_existing(&self) {
        self.freeze.notify_waiters();
    }
}

#[tokio::test]
async fn a_stalled_path_is_detected_by_ssh_keepalive_and_restored() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let home = ssh_home("ssh-stall");
    let peers = Peers::get();
    let upstream: std::net::SocketAddr = format!(
        "{}:{}",
        peers.var("OCPEER_SSH_HOST"),
        peers.var("OCPEER_SSH_PORT")
    )
    .parse()
    .unwrap();
    let proxy = StallProxy::start(upstream).await;
    // The proxy presents the same host key under its own [127.0.0.1]:port name.
    let host_key = std::fs::read_to_string(peers.var("OCPEER_SSH_HOST_KEY_PUB")).unwrap();
    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    std::fs::write(
        home.join(".ssh/known_hosts"),
        format!("[127.0.0.1]:{} {}\n", proxy.port, key.join(" ")),
    )
    .unwrap();
    let (tunnel, client) =
        client_over_ssh(format!("claw@127.0.0.1:{}", proxy.port), &home, 1).await;

    let frozen_at = Instant::now();
    proxy.freeze_existing();
    let mut state = client.state();
    let recovered = tokio::time::timeout(Duration::from_secs(45), async {
        loop {
            {
                let s = state.borrow_and_update();
                if s.phase == Phase::Connected && s.generation >= 2 {
                    return;
                }
            }
            state.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "a frozen path was not noticed within 45 s (state: {})",
        client.state().borrow().label()
    );
    let took = frozen_at.elapsed();
    assert_eq!(
        client.request("health", Value::Null).await.unwrap()["ok"],
        true
    );
    eprintln!(
        "stalled path detected and restored in {:.2} s",
        took.as_secs_f64()
    );
    // Keepalive 1 s × 2: well under the 60 s the gateway's tick watchdog alone would take.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    client.shutdown().await;
    tunnel.close().await;
}
