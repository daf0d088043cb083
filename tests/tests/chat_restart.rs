//! Messages typed while the real gateway is down are delivered exactly once when it comes back: by a `clawlink chat -m` that keeps waiting, and by a running agent's webchat feature from the outbox. Its own test binary, because it stops the shared gateway.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clawlink_tests::agent::{agent_command, run_beside, RunningAgent};
use clawlink_tests::*;
use serde_json::{json, Value};

/// Starts the gateway again when dropped, unless the test already did: a failing test must
/// not leave the shared gateway down for the binaries after it.
struct GatewayDown {
    restarted: bool,
}

impl GatewayDown {
    fn stop() -> Self {
        let stopped = Peers::get().xtask_peer(&["stop-gateway", "main"]);
        assert!(stopped.status.success(), "{:?}", text(&stopped));
        Self { restarted: false }
    }

    fn start_again(&mut self) {
        let started = Peers::get().xtask_peer(&["start-gateway", "main"]);
        assert!(started.status.success(), "{:?}", text(&started));
        self.restarted = true;
    }
}

impl Drop for GatewayDown {
    fn drop(&mut self) {
        if !self.restarted {
            // No assert here: a panic while unwinding would abort and hide the first one.
            let _ = std::process::Command::new(Peers::get().var("CLAWLINK_XTASK_BIN"))
                .args(["peer", "start-gateway", "main"])
                .status();
        }
    }
}

fn webchat(status: &Value) -> Value {
    status["features"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "webchat"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// (user messages, assistant replies) of `session` that contain `mark`.
fn count_in_history(
    dir: &Path,
    args: &[String],
    session: &str,
    mark: &str,
) -> (usize, usize, Value) {
    let params = json!({"sessionKey": session, "limit": 200}).to_string();
    let out = run_beside(dir, args, &[], &["call", "chat.history", &params]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "chat.history: {stderr}");
    let history: Value = serde_json::from_str(&stdout).unwrap();
    let count = |role: &str| {
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == role && message_text(m).contains(mark))
            .count()
    };
    (count("user"), count("assistant"), history)
}

/// Polls the history until the message and its reply are there (at most `limit`), then
/// returns the counts for an exact check.
fn wait_for_exchange(
    dir: &Path,
    args: &[String],
    session: &str,
    mark: &str,
    limit: Duration,
) -> (usize, usize, Value) {
    let until = Instant::now() + limit;
    loop {
        let found = count_in_history(dir, args, session, mark);
        if (found.0 >= 1 && found.1 >= 1) || Instant::now() > until {
            return found;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A `clawlink --json chat` left running; its stdout lines arrive on a channel.
struct Waiter {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Waiter {
    fn start(dir: &Path, args: &[String], chat: &[&str]) -> Self {
        let mut child = agent_command(dir, &[])
            .args(args)
            .arg("--json")
            .arg("chat")
            .args(chat)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("waiter.err")).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn take_lines(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(serde_json::from_str(&line).expect(&line));
        }
    }

    fn has(&mut self, event: &str) -> bool {
        self.take_lines();
        self.seen.iter().any(|l| l["event"] == event)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn messages_typed_while_the_gateway_is_down_are_delivered_once_when_it_is_back() {
    let peers = Peers::get();
    let dir = scratch_dir("chat-restart");
    let token = secret_file(&dir, "token", peers.var("OCPEER_GATEWAY_TOKEN"));
    let args: Vec<String> = vec![
        "--url".into(),
        peers.gateway_url().into(),
        "--token-file".into(),
        token.display().to_string(),
    ];
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    agent.wait_for(
        "connected with webchat running",
        Duration::from_secs(30),
        |s| s["connection"]["phase"] == "connected" && webchat(s)["state"] == "running",
    );

    let mut gateway = GatewayDown::stop();
    agent.wait_for("disconnected", Duration::from_secs(30), |s| {
        s["connection"]["phase"] != "connected"
    });

    // 1. A one-shot that keeps waiting, with a data directory of its own (else it would
    //    also deliver the agent's outbox once connected, as the next `clawlink chat` does).
    let waiter_dir = scratch_dir("chat-restart-waiter");
    let waiting_mark = unique_marker("waiting");
    let waiting_session = format!("agent:main:{waiting_mark}");
    let mut waiter = Waiter::start(
        &waiter_dir,
        &args,
        &[
            "--timeout",
            "240",
            "--session",
            &waiting_session,
            "-m",
            &waiting_mark,
        ],
    );

    // 2. A one-shot that gives up: its message stays in the outbox for the agent.
    let queued_mark = unique_marker("queued");
    let queued_session = format!("agent:main:{queued_mark}");
    let out = run_beside(
        &dir,
        &args,
        &[],
        &[
            "chat",
            "--timeout",
            "3",
            "--session",
            &queued_session,
            "-m",
            &queued_mark,
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("outbox"),
        "says where the message is: {stderr}"
    );

    let listing: Value = serde_json::from_str(
        &text(&run_beside(
            &dir,
            &args,
            &[],
            &["--json", "chat", "--outbox"],
        ))
        .0,
    )
    .unwrap();
    let previews: Vec<&str> = listing["pending"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["preview"].as_str())
        .collect();
    assert_eq!(previews, [queued_mark.as_str()], "{listing:#}");
    let until = Instant::now() + Duration::from_secs(20);
    while !waiter.has("queued") {
        assert!(
            Instant::now() < until,
            "the waiter queued nothing: {:?}",
            waiter.seen
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let waiter_listing: Value = serde_json::from_str(
        &text(&run_beside(
            &waiter_dir,
            &args,
            &[],
            &["--json", "chat", "--outbox"],
        ))
        .0,
    )
    .unwrap();
    assert_eq!(
        waiter_listing["pending"][0]["preview"],
        waiting_mark.as_str(),
        "the waiting message is on disk before it is sent: {waiter_listing:#}"
    );
    let status = agent.wait_for("seeing the waiting message", Duration::from_secs(20), |s| {
        webchat(s)["details"]["pending"] == 1
    });
    eprintln!("while down: {}", webchat(&status)["summary"]);
    assert!(
        waiter.has("waiting"),
        "the waiter says it waits: {:?}",
        waiter.seen
    );
    assert!(
        !waiter.has("ack"),
        "acknowledged while the gateway is down?"
    );

    gateway.start_again();
    let up_at = Instant::now();

    // The waiter delivers its own message and prints the reply.
    let until = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = waiter.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the waiter did not finish: {:?}", {
            waiter.take_lines();
            &waiter.seen
        });
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(200));
    waiter.take_lines();
    let waiter_err = std::fs::read_to_string(waiter_dir.join("waiter.err")).unwrap_or_default();
    assert!(
        status.success(),
        "waiter: {status:?}\n{waiter_err}\n{:#?}",
        waiter.seen
    );
    let done = waiter.seen.last().unwrap();
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["state"], "final", "{done}");
    assert!(
        done["text"].as_str().unwrap().contains(&waiting_mark),
        "{done}"
    );
    let waiter_took = up_at.elapsed();
    let acks = waiter.seen.iter().filter(|l| l["event"] == "ack").count();
    assert_eq!(acks, 1, "one acknowledgement: {:#?}", waiter.seen);

    // The agent delivers the queued one: exactly one delivery (the waiter's was claimed).
    let status = agent.wait_for("the outbox delivered", Duration::from_secs(120), |s| {
        let details = &webchat(s)["details"];
        s["connection"]["phase"] == "connected"
            && details["pending"] == 0
            && details["delivered"].as_u64() >= Some(1)
    });
    let agent_took = up_at.elapsed();
    assert_eq!(webchat(&status)["details"]["delivered"], 1, "{status:#}");
    let listing: Value = serde_json::from_str(
        &text(&run_beside(
            &dir,
            &args,
            &[],
            &["--json", "chat", "--outbox"],
        ))
        .0,
    )
    .unwrap();
    assert_eq!(listing["pending"], json!([]), "{listing:#}");

    for (session, mark) in [
        (&waiting_session, &waiting_mark),
        (&queued_session, &queued_mark),
    ] {
        let (users, replies, history) =
            wait_for_exchange(&dir, &args, session, mark, Duration::from_secs(60));
        assert_eq!(
            (users, replies),
            (1, 1),
            "{mark}: the message and its reply exactly once\n{history:#}"
        );
    }
    eprintln!(
        "after the gateway came back: the waiting one-shot finished in {:.1} s, the agent drained the outbox in {:.1} s",
        waiter_took.as_secs_f64(),
        agent_took.as_secs_f64()
    );
    assert!(agent.terminate().success());
}
