//! The chaos run: forced cuts of mixed kinds under a running agent (`clawlink up` over SSH to the real sshd and gateway) while a message goes out through its webchat outbox every few hundred ms; counted from the real gateway's `chat.history`: nothing lost, nothing sent twice, every cut recovered without help, with detection and time-to-healthy per kind of cut.
//!
//! Its own test binary: it restarts the shared gateway and kills sshd sessions. The short
//! run (the default, in CI) makes [`SHORT_CUTS_PER_KIND`] cuts of each kind; `cargo xtask
//! chaos` sets `CLAWLINK_CHAOS_CUTS` to the full run's 100. Results go to
//! `target/chaos/chaos.json` and `summary.md` (`CLAWLINK_CHAOS_OUT` overrides).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawlink_tests::agent::RunningAgent;
use clawlink_tests::*;
use serde_json::{json, Value};

/// Cuts of each kind in the short run.
const SHORT_CUTS_PER_KIND: usize = 2;
/// Gateway restarts take ~45 s each: the short run makes one, the full run at least five.
const SHORT_RESTARTS: usize = 1;
const FULL_RESTARTS: usize = 5;
/// A message every this often while the cuts happen.
const SEND_EVERY: Duration = Duration::from_millis(300);
/// Messages per chat session (the history the count reads stays well under its 200 cap).
const MESSAGES_PER_SESSION: usize = 40;
/// The longest any one cut may take to be recovered (a gateway restart included).
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

/// One kind of forced cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cut {
    /// The agent's TCP connection to sshd is reset (`ss -K`: an RST to the server, an abort here).
    TcpReset,
    /// The server side of the SSH session is killed (the host's sshd child dies).
    SshdKilled,
    /// The gateway process restarts.
    GatewayRestart,
}

impl Cut {
    fn name(self) -> &'static str {
        match self {
            Cut::TcpReset => "tcp-reset",
            Cut::SshdKilled => "sshd-session-killed",
            Cut::GatewayRestart => "gateway-restart",
        }
    }

    fn apply(self) {
        let peers = Peers::get();
        match self {
            Cut::TcpReset => {
                let port = peers.var("OCPEER_SSH_PORT");
                let out = Command::new("ss")
                    .args(["-K", "dst", "127.0.0.1", "dport", "=", &format!(":{port}")])
                    .output()
                    .expect("run ss");
                assert!(out.status.success(), "ss -K: {:?}", text(&out));
            }
            Cut::SshdKilled => {
                for pid in sshd_sessions() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
            Cut::GatewayRestart => {
                peers.xtask_peer(&["restart-gateway", "main"]);
            }
        }
    }
}

/// The per-connection sshd processes (children of the listening sshd and theirs).
fn sshd_sessions() -> Vec<i32> {
    let pids_file = Path::new(Peers::get().var("OCPEER_LOG_DIR")).join("pids");
    let text = std::fs::read_to_string(pids_file).unwrap();
    let listener: i32 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("sshd ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("sshd in the pids file");
    let mut found = Vec::new();
    let mut frontier = vec![listener];
    while let Some(pid) = frontier.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
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

/// One request to the agent's control socket, one JSON answer (bounded in time).
fn control(socket: &Path, request: &Value) -> Value {
    let mut stream = UnixStream::connect(socket).expect("the agent's control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    writeln!(stream, "{request}").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("control answer {line:?}: {e}"))
}

/// The connection part of the agent's status.
fn connection(socket: &Path) -> Value {
    control(socket, &json!({"op": "status"}))["result"]["connection"].clone()
}

/// What one cut measured.
#[derive(Debug, Clone)]
struct Measured {
    cut: Cut,
    /// From the cut to the agent noticing (its state no longer connected), when seen.
    noticed_ms: Option<u64>,
    /// From the cut to connected again on a newer connection.
    healthy_ms: u64,
    /// The agent's own record: silence before a dead-path verdict, notice to healthy.
    record: Value,
}

/// The messages sent so far: marker → session key, and the ones the agent refused.
#[derive(Default)]
struct Sent {
    accepted: BTreeMap<String, String>,
    refused: Vec<String>,
}

#[test]
fn cuts_of_every_kind_lose_nothing_and_send_nothing_twice() {
    let cuts_per_kind = std::env::var("CLAWLINK_CHAOS_CUTS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .map(|total| total.div_ceil(3))
        .unwrap_or(SHORT_CUTS_PER_KIND);
    let restarts = if cuts_per_kind > SHORT_CUTS_PER_KIND {
        cuts_per_kind.max(FULL_RESTARTS)
    } else {
        SHORT_RESTARTS
    };
    let mut plan = Vec::new();
    for round in 0..cuts_per_kind.max(restarts) {
        if round < cuts_per_kind {
            plan.push(Cut::TcpReset);
            plan.push(Cut::SshdKilled);
        }
        if round < restarts {
            plan.push(Cut::GatewayRestart);
        }
    }

    let home = ssh_home("chaos");
    std::fs::create_dir_all(home.join("run")).unwrap();
    let token = token_file(&home);
    let mut args = ssh_args("claw");
    args.extend(["--token-file".into(), token]);
    let mut agent = RunningAgent::start(&home, &args, &[]);
    let status = agent.wait_for("connected", Duration::from_secs(60), |s| {
        s["connection"]["phase"] == "connected"
    });
    let socket = PathBuf::from(
        status["socket"]
            .as_str()
            .expect("the agent names its socket"),
    );

    // The sender: a message every SEND_EVERY through the agent's webchat `send`.
    let run_id = unique_marker("chaos");
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (sent, stop, socket, run_id) =
            (sent.clone(), stop.clone(), socket.clone(), run_id.clone());
        std::thread::spawn(move || {
            // Bounded: an hour of messages at most.
            for n in 0..12_000usize {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let session = format!("agent:main:{run_id}-{}", n / MESSAGES_PER_SESSION);
                let marker = format!("{run_id}-m{n}");
                let answer = control(
                    &socket,
                    &json!({"op": "feature", "feature": "webchat", "action": "send",
                            "args": {"message": format!("chaos {marker}"), "sessionKey": session}}),
                );
                let mut sent = sent.lock().unwrap();
                if answer["ok"] == true {
                    sent.accepted.insert(marker, session);
                } else {
                    sent.refused.push(format!("{marker}: {answer}"));
                }
                drop(sent);
                std::thread::sleep(SEND_EVERY);
            }
        })
    };

    let mut measured = Vec::new();
    for cut in plan {
        // Each cut starts from a healthy agent with a few messages flowing.
        let before = wait_connected(&socket, None);
        std::thread::sleep(Duration::from_millis(1500));
        let generation = connection(&socket)["generation"].as_u64().unwrap_or(before);
        let started = Instant::now();
        cut.apply();
        let mut noticed_ms = None;
        let healthy = loop {
            assert!(
                started.elapsed() < RECOVERY_LIMIT,
                "{}: not recovered within {RECOVERY_LIMIT:?}: {}\n{}",
                cut.name(),
                connection(&socket),
                agent.output("up.err")
            );
            let now = connection(&socket);
            let newer = now["generation"].as_u64().unwrap_or(0) > generation;
            if noticed_ms.is_none() && (newer || now["phase"] != "connected") {
                noticed_ms = Some(started.elapsed().as_millis() as u64);
            }
            if newer && now["phase"] == "connected" {
                break now;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let healthy_ms = started.elapsed().as_millis() as u64;
        eprintln!("{}: healthy after {healthy_ms} ms", cut.name());
        measured.push(Measured {
            cut,
            noticed_ms,
            healthy_ms,
            record: healthy["last_recovery"].clone(),
        });
    }

    // Let the last messages go out, then count.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let drained = Instant::now();
    loop {
        let outbox = control(
            &socket,
            &json!({"op": "feature", "feature": "webchat", "action": "outbox"}),
        );
        let pending = outbox["result"]["pending"].as_array().map_or(0, Vec::len);
        if pending == 0 {
            break;
        }
        assert!(
            drained.elapsed() < Duration::from_secs(120),
            "{pending} messages still in the outbox: {outbox}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    // Accepted is not yet in the history: messages sent while a reply runs wait in the
    // gateway's queue for their turn. Wait (bounded) until every one has had it.
    let counting = Instant::now();
    let counts = loop {
        let counts = count_in_history(&agent, &sent);
        let all_there = sent.accepted.keys().all(|m| counts.contains_key(m));
        if all_there || counting.elapsed() > Duration::from_secs(120) {
            break counts;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let lost: Vec<&String> = sent
        .accepted
        .keys()
        .filter(|m| counts.get(*m).copied().unwrap_or(0) == 0)
        .collect();
    let twice: Vec<(&String, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(m, n)| (m, *n))
        .collect();
    agent.terminate();

    let report = write_report(&measured, &sent, lost.len(), twice.len());
    eprintln!("{report}");
    assert!(
        sent.refused.is_empty(),
        "the agent refused messages: {:?}",
        sent.refused
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert!(
        sent.accepted.len() >= measured.len(),
        "too few messages went out"
    );
}

/// Waits until the agent is connected; its generation.
fn wait_connected(socket: &Path, newer_than: Option<u64>) -> u64 {
    let started = Instant::now();
    loop {
        let now = connection(socket);
        let generation = now["generation"].as_u64().unwrap_or(0);
        if now["phase"] == "connected" && newer_than.is_none_or(|g| generation > g) {
            return generation;
        }
        assert!(started.elapsed() < RECOVERY_LIMIT, "not connected: {now}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often each marker appears among the user messages of the sessions it was sent to.
fn count_in_history(agent: &RunningAgent, sent: &Sent) -> BTreeMap<String, usize> {
    let sessions: std::collections::BTreeSet<&String> = sent.accepted.values().collect();
    let mut counts = BTreeMap::new();
    for session in sessions {
        let params = json!({"sessionKey": session, "limit": 200}).to_string();
        let out = agent.run(&["call", "chat.history", &params]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "chat.history {session}: {stderr}");
        let history: Value = serde_json::from_str(&stdout).unwrap();
        for message in history["messages"].as_array().into_iter().flatten() {
            if message["role"] != "user" {
                continue;
            }
            // Messages sent while a reply runs reach the model together, in one user turn
            // (the gateway's queue collects them): count every marker in it.
            let said = message_text(message);
            for marker in said
                .split_whitespace()
                .filter(|w| sent.accepted.contains_key(*w))
            {
                *counts.entry(marker.to_owned()).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// p50 and p99 (nearest rank) of `values`, in ms.
fn percentiles(values: &mut [u64]) -> (u64, u64) {
    values.sort_unstable();
    let rank =
        |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    (rank(0.50), rank(0.99))
}

/// Writes `chaos.json` and `summary.md`; the markdown.
fn write_report(measured: &[Measured], sent: &Sent, lost: usize, twice: usize) -> String {
    let out = std::env::var_os("CLAWLINK_CHAOS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/chaos"));
    std::fs::create_dir_all(&out).unwrap();
    let mut kinds: BTreeMap<Cut, Vec<&Measured>> = BTreeMap::new();
    for m in measured {
        kinds.entry(m.cut).or_default().push(m);
    }
    let mut md = format!(
        "# chaos\n\n{} cuts under `clawlink up` over SSH (the real sshd and gateway), a message every {} ms through \
         the agent's webchat outbox: {} sent, **{lost} lost, {twice} sent twice** (counted in the gateway's \
         chat.history).\n\n| cut | count | noticed p50 / p99 ms | healthy p50 / p99 ms |\n| --- | ---: | ---: | ---: |\n",
        measured.len(),
        SEND_EVERY.as_millis(),
        sent.accepted.len()
    );
    let mut per_kind = serde_json::Map::new();
    for (cut, runs) in &kinds {
        let mut healthy: Vec<u64> = runs.iter().map(|m| m.healthy_ms).collect();
        let mut noticed: Vec<u64> = runs.iter().filter_map(|m| m.noticed_ms).collect();
        let (h50, h99) = percentiles(&mut healthy);
        let (n50, n99) = if noticed.is_empty() {
            (0, 0)
        } else {
            percentiles(&mut noticed)
        };
        md.push_str(&format!(
            "| {} | {} | {n50} / {n99} | {h50} / {h99} |\n",
            cut.name(),
            runs.len()
        ));
        per_kind.insert(
            cut.name().into(),
            json!({
                "count": runs.len(),
                "noticed_ms": {"p50": n50, "p99": n99},
                "healthy_ms": {"p50": h50, "p99": h99},
                "records": runs.iter().map(|m| m.record.clone()).collect::<Vec<_>>(),
            }),
        );
    }
    let json = json!({
        "cuts": measured.len(),
        "messages": sent.accepted.len(),
        "lost": lost,
        "sent_twice": twice,
        "refused": sent.refused.len(),
        "per_kind": per_kind,
    });
    std::fs::write(
        out.join("chaos.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("summary.md"), &md).unwrap();
    md
}
