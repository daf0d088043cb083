//! The chaos run: forced cuts of mixed kinds under a running agent (`clawlink up` over SSH to the real sshd and gateway) while a message goes out through its webchat outbox every few hundred ms; counted from the real gateway's `chat.history`: nothing lost, nothing sent twice, every cut recovered without help, with detection and time-to-healthy per kind of cut.
//!
//! Two runs: cuts of the connection (TCP reset, sshd session killed, gateway restart), and
//! faults of the path with the agent in a network namespace (black hole, link down, address
//! change, 30 % loss, and 1 % loss that must not be taken for a dead path).
//!
//! Its own test binary: it restarts the shared gateway and kills sshd sessions. The short
//! run (the default, in CI) makes [`SHORT_CUTS_PER_KIND`] cuts of each kind; `cargo xtask
//! chaos` sets `CLAWLINK_CHAOS_CUTS` to the full run's 100 (spread over the kinds). Results
//! go to `target/chaos/<run>.json`, `<run>.md` and `summary.md` (`CLAWLINK_CHAOS_OUT`
//! overrides).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawlink_tests::agent::RunningAgent;
use clawlink_tests::netfault::{FaultNet, Netem};
use clawlink_tests::*;
use serde_json::{json, Value};

/// The two runs take turns: one restarts the gateway, which the other would count as a cut.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    cut: &'static str,
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
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cuts_per_kind = std::env::var("CLAWLINK_CHAOS_CUTS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .map(|total| total.div_ceil(5))
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
    let sender = Sender::start(&socket, "chaos");

    let mut measured = Vec::new();
    for cut in plan {
        let generation = settle_before_a_cut(&socket);
        let started = Instant::now();
        cut.apply();
        let (noticed_ms, healthy) =
            wait_recovered(&socket, generation, started, cut.name(), &|| {
                agent.output("up.err")
            });
        let healthy_ms = started.elapsed().as_millis() as u64;
        eprintln!("{}: healthy after {healthy_ms} ms", cut.name());
        measured.push(Measured {
            cut: cut.name(),
            noticed_ms,
            healthy_ms,
            record: healthy["last_recovery"].clone(),
        });
    }
    let (sent, lost, twice) = sender.finish(&socket, &home);
    agent.terminate();
    let report = write_report(
        "chaos",
        "under `clawlink up` over SSH (the real sshd and gateway)",
        "from the cut",
        &measured,
        &sent,
        lost.len(),
        twice.len(),
    );
    eprintln!("{report}");
    assert_delivered_once(&sent, &lost, &twice, measured.len());
}

/// Faults of the path itself, with the agent in a network namespace of its own (the fault
/// harness): a silent black hole, the link down, an address change, high loss; and 1 %
/// loss, which must not be taken for a dead path. For the first three, "healthy" counts
/// from the moment the path is back.
#[test]
fn path_faults_are_noticed_in_seconds_and_left_within_a_second_of_the_path_returning() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rounds = std::env::var("CLAWLINK_CHAOS_CUTS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .map(|total| total.div_ceil(5))
        .unwrap_or(SHORT_CUTS_PER_KIND);
    let net = FaultNet::create("chaos-path");
    let home = net.ssh_home("chaos-path");
    let run_dir = home.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let token = token_file(&home);
    let mut args = net.ssh_args("claw");
    args.extend(["--token-file".into(), token]);
    let log = std::fs::File::create(home.join("up.err")).unwrap();
    let mut agent = net.clawlink_command(&home);
    agent
        .env("CLAWLINK_RUNTIME_DIR", &run_dir)
        // up.err is read only when the run fails: make it worth reading.
        .env(
            "RUST_LOG",
            "clawlink_core=debug,clawlink=debug,clawlink_transport_ssh=debug",
        )
        .args(&args)
        .arg("up")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let mut agent = Reaped(agent.spawn().expect("start clawlink up in the namespace"));
    let socket = run_dir.join("default.sock");
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no control socket: {}",
            up_err(&home)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_connected(&socket);
    let sender = Sender::start(&socket, "chaos-path");

    let mut measured = Vec::new();
    for _ in 0..rounds {
        for fault in [
            PathFault::BlackHole,
            PathFault::LinkDown,
            PathFault::AddressChange,
        ] {
            let generation = settle_before_a_cut(&socket);
            let cut_at = Instant::now();
            fault.apply(&net, true);
            // Hold the fault until the agent declared the connection lost (at most 15 s),
            // then give the path back.
            let mut noticed_ms = None;
            while cut_at.elapsed() < Duration::from_secs(15) {
                let now = connection(&socket);
                if !now["last_error"].is_null()
                    || now["generation"].as_u64().unwrap_or(0) > generation
                {
                    noticed_ms = Some(cut_at.elapsed().as_millis() as u64);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(500));
            let restored_at = Instant::now();
            fault.apply(&net, false);
            let (_, healthy) =
                wait_recovered(&socket, generation, restored_at, fault.name(), &|| {
                    up_err(&home)
                });
            let healthy_ms = restored_at.elapsed().as_millis() as u64;
            eprintln!("{}: noticed after {noticed_ms:?} ms, healthy {healthy_ms} ms after the path returned", fault.name());
            measured.push(Measured {
                cut: fault.name(),
                noticed_ms,
                healthy_ms,
                record: healthy["last_recovery"].clone(),
            });
        }
    }
    // 1 % loss for 20 s on a live path: no reconnect (no false alarm).
    let generation = settle_before_a_cut(&socket);
    net.netem(Netem {
        loss_percent: 1.0,
        ..Netem::default()
    })
    .expect("1 % loss");
    std::thread::sleep(Duration::from_secs(20));
    let during = connection(&socket);
    net.clear_netem().unwrap();
    assert_eq!(
        during["generation"].as_u64(),
        Some(generation),
        "1 % loss was taken for a dead path: {during}"
    );
    // 30 % loss for 10 s: whatever happens, the agent is healthy again after it.
    net.netem(Netem {
        loss_percent: 30.0,
        ..Netem::default()
    })
    .expect("30 % loss");
    std::thread::sleep(Duration::from_secs(10));
    net.clear_netem().unwrap();
    wait_connected(&socket);

    let (sent, lost, twice) = sender.finish(&socket, &home);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status();
    let _ = agent.0.wait();
    let report = write_report(
        "chaos-path",
        "of the path under `clawlink up` over SSH in a network namespace (the fault harness), 1 % loss for 20 s without a reconnect",
        "from the path's return",
        &measured,
        &sent,
        lost.len(),
        twice.len(),
    );
    eprintln!("{report}");
    assert_delivered_once(&sent, &lost, &twice, 1);
    for m in &measured {
        let noticed = m.noticed_ms.unwrap_or(u64::MAX);
        assert!(
            noticed <= 5_000,
            "{}: noticed after {noticed} ms (goal: 5 s)",
            m.cut
        );
    }
}

/// A path fault the harness applies and lifts.
#[derive(Debug, Clone, Copy)]
enum PathFault {
    BlackHole,
    LinkDown,
    AddressChange,
}

impl PathFault {
    fn name(self) -> &'static str {
        match self {
            PathFault::BlackHole => "black-hole",
            PathFault::LinkDown => "link-down",
            PathFault::AddressChange => "address-change",
        }
    }

    /// `on`: the fault begins; otherwise the path comes back.
    fn apply(self, net: &FaultNet, on: bool) {
        match self {
            PathFault::BlackHole => net.black_hole(on).unwrap(),
            PathFault::LinkDown => net.link(!on).unwrap(),
            // The old address's connections die silently (the server's answers go to an
            // address nobody has); a new address is there at once.
            PathFault::AddressChange if on => {
                net.black_hole(true).unwrap();
                net.change_client_address().unwrap();
            }
            PathFault::AddressChange => net.black_hole(false).unwrap(),
        }
    }
}

/// Kills the child when dropped (a failing test leaves no agent behind).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn up_err(home: &Path) -> String {
    std::fs::read_to_string(home.join("up.err")).unwrap_or_default()
}

/// Waits for a connected agent, lets a few messages flow, and returns its generation.
fn settle_before_a_cut(socket: &Path) -> u64 {
    wait_connected(socket);
    std::thread::sleep(Duration::from_millis(1500));
    wait_connected(socket)
}

/// Polls until the agent is connected on a connection newer than `generation`; when it
/// first looked cut (from `since`), and its connection state once healthy.
fn wait_recovered(
    socket: &Path,
    generation: u64,
    since: Instant,
    what: &str,
    output: &dyn Fn() -> String,
) -> (Option<u64>, Value) {
    let mut noticed_ms = None;
    loop {
        assert!(
            since.elapsed() < RECOVERY_LIMIT,
            "{what}: not recovered within {RECOVERY_LIMIT:?}: {}\n{}",
            connection(socket),
            output()
        );
        let now = connection(socket);
        let newer = now["generation"].as_u64().unwrap_or(0) > generation;
        if noticed_ms.is_none() && (newer || now["phase"] != "connected") {
            noticed_ms = Some(since.elapsed().as_millis() as u64);
        }
        if newer && now["phase"] == "connected" {
            return (noticed_ms, now);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the agent is connected; its generation.
fn wait_connected(socket: &Path) -> u64 {
    let started = Instant::now();
    loop {
        let now = connection(socket);
        if now["phase"] == "connected" {
            return now["generation"].as_u64().unwrap_or(0);
        }
        assert!(started.elapsed() < RECOVERY_LIMIT, "not connected: {now}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A message every [`SEND_EVERY`] through the agent's webchat `send`, on a thread.
struct Sender {
    sent: Arc<Mutex<Sent>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sender {
    fn start(socket: &Path, label: &str) -> Self {
        let run_id = unique_marker(label);
        let sent = Arc::new(Mutex::new(Sent::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sent, stop, socket) = (sent.clone(), stop.clone(), socket.to_path_buf());
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
        Self { sent, stop, thread }
    }

    /// Stops sending, waits until the outbox is empty (everything in a transcript), and
    /// counts each message in the gateway's history: (sent, lost, sent twice).
    fn finish(self, socket: &Path, home: &Path) -> (Sent, Vec<String>, Vec<(String, usize)>) {
        std::thread::sleep(Duration::from_secs(2));
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the sender thread");
        let drained = Instant::now();
        loop {
            let outbox = control(
                socket,
                &json!({"op": "feature", "feature": "webchat", "action": "outbox"}),
            );
            let pending = outbox["result"]["pending"].as_array().map_or(0, Vec::len);
            if pending == 0 {
                break;
            }
            assert!(
                drained.elapsed() < Duration::from_secs(180),
                "{pending} messages still in the outbox: {outbox}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let sent = std::mem::take(&mut *self.sent.lock().unwrap());
        let counts = count_in_history(home, &sent);
        let lost = sent
            .accepted
            .keys()
            .filter(|m| !counts.contains_key(*m))
            .cloned()
            .collect();
        let twice = counts.into_iter().filter(|(_, n)| *n > 1).collect();
        (sent, lost, twice)
    }
}

fn assert_delivered_once(sent: &Sent, lost: &[String], twice: &[(String, usize)], at_least: usize) {
    assert!(
        sent.refused.is_empty(),
        "the agent refused messages: {:?}",
        sent.refused
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert!(sent.accepted.len() >= at_least, "too few messages went out");
}

/// How often each marker appears among the user messages of the sessions it was sent to,
/// read from the main gateway directly (root namespace, token from a 0600 file).
fn count_in_history(home: &Path, sent: &Sent) -> BTreeMap<String, usize> {
    let token = token_file(home);
    let url = Peers::get().gateway_url().to_owned();
    let sessions: std::collections::BTreeSet<&String> = sent.accepted.values().collect();
    let mut counts = BTreeMap::new();
    for session in sessions {
        let params = json!({"sessionKey": session, "limit": 200}).to_string();
        let out = clawlink(
            home,
            &[
                "--url",
                &url,
                "--token-file",
                &token,
                "call",
                "chat.history",
                &params,
            ],
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "chat.history {session}: {stderr}");
        let history: Value = serde_json::from_str(&stdout).unwrap();
        for message in history["messages"].as_array().into_iter().flatten() {
            if message["role"] != "user" {
                continue;
            }
            // Messages sent while a reply runs may reach the model together, in one user
            // turn: count every marker in it.
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

/// Writes `<name>.json` and `<name>.md` under target/chaos, and the run's section of
/// `summary.md`; the markdown.
fn write_report(
    name: &str,
    what: &str,
    healthy_from: &str,
    measured: &[Measured],
    sent: &Sent,
    lost: usize,
    twice: usize,
) -> String {
    let out = std::env::var_os("CLAWLINK_CHAOS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/chaos"));
    std::fs::create_dir_all(&out).unwrap();
    let mut kinds: BTreeMap<&str, Vec<&Measured>> = BTreeMap::new();
    for m in measured {
        kinds.entry(m.cut).or_default().push(m);
    }
    let mut md = format!(
        "## {name}\n\n{} cuts {what}, a message every {} ms through the agent's webchat outbox: {} sent, \
         **{lost} lost, {twice} sent twice** (counted in the gateway's chat.history).\n\n\
         | cut | count | noticed p50 / p99 ms | healthy ({healthy_from}) p50 / p99 ms |\n| --- | ---: | ---: | ---: |\n",
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
            "| {cut} | {} | {n50} / {n99} | {h50} / {h99} |\n",
            runs.len()
        ));
        per_kind.insert(
            (*cut).into(),
            json!({
                "count": runs.len(),
                "noticed_ms": {"p50": n50, "p99": n99},
                "healthy_ms": {"p50": h50, "p99": h99, "from": healthy_from},
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
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join(format!("{name}.md")), &md).unwrap();
    // summary.md: every run's section, in a fixed order, whichever ran last.
    let sections: Vec<String> = ["chaos", "chaos-path"]
        .iter()
        .filter_map(|n| std::fs::read_to_string(out.join(format!("{n}.md"))).ok())
        .collect();
    std::fs::write(
        out.join("summary.md"),
        format!("# chaos (`cargo xtask chaos`)\n\n{}", sections.join("\n")),
    )
    .unwrap();
    md
}
