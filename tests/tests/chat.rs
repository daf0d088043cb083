//! `clawlink chat` against the real gateway and its stub model: one-shot replies (text, `--json`, stdin), the history after a second invocation, abort by Ctrl-C, the outbox, and exactly-once delivery when an in-process proxy in front of sshd cuts the SSH connection mid-exchange.
//!
//! The tests share the running gateway, so each one talks in a session of its own (or, for
//! the main session, looks only for its own marker text).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawlink_tests::*;
use serde_json::{json, Value};

/// A session key of this test only.
fn session_for(marker: &str) -> String {
    format!("agent:main:{marker}")
}

/// `--url` and `--token-file` of the peer gateway (the token in a 0600 file in `dir`).
fn direct_args(dir: &Path) -> Vec<String> {
    token_flags(dir, None, Peers::get().gateway_url())
}

fn run(dir: &Path, base: &[String], extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    clawlink(dir, &args)
}

/// The JSON lines of a `--json` run.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The `chat` event payloads of a `--json` run with this state.
fn chat_events<'a>(lines: &'a [Value], state: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["event"] == "chat" && l["payload"]["state"] == state)
        .map(|l| &l["payload"])
        .collect()
}

/// The last line of a `--json` run (`event: done`).
fn done_line(lines: &[Value]) -> &Value {
    let last = lines.last().expect("no JSON lines");
    assert_eq!(last["event"], "done", "the last line is not `done`: {last}");
    last
}

/// `chat.history` of `session` (the newest 200 messages), through the CLI.
fn history(dir: &Path, base: &[String], session: &str) -> Value {
    let params = json!({"sessionKey": session, "limit": 200}).to_string();
    let out = run(dir, base, &["call", "chat.history", &params]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "chat.history failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("chat.history: {e}\n{stdout}"))
}

/// What a session's history holds of one message: its user turns (by idempotency key and
/// by text) and the assistant replies (by run id and by the echoed text).
#[derive(Debug, Default)]
struct Tally {
    user_by_key: usize,
    user_by_text: usize,
    replies_by_run: usize,
    replies_by_text: usize,
    reply_texts: Vec<String>,
    aborted_replies: usize,
}

fn tally(history: &Value, key: &str, marker: &str) -> Tally {
    let mut t = Tally::default();
    let user_key = format!("{key}:user");
    for m in history["messages"].as_array().expect("messages") {
        let text = message_text(m);
        let idempotency = m["idempotencyKey"]
            .as_str()
            .or(m["__openclaw"]["idempotencyKey"].as_str());
        match m["role"].as_str() {
            Some("user") => {
                t.user_by_key += usize::from(idempotency == Some(user_key.as_str()));
                t.user_by_text += usize::from(text.contains(marker));
            }
            Some("assistant") => {
                if m["__openclaw"]["runId"].as_str() == Some(key) {
                    t.replies_by_run += 1;
                    t.aborted_replies += usize::from(m["openclawAbort"]["aborted"] == true);
                    t.reply_texts.push(text.clone());
                }
                t.replies_by_text += usize::from(text.contains(marker));
            }
            _ => {}
        }
    }
    t
}

/// The idempotency key a `--json` run used (its `queued` line).
fn key_of(lines: &[Value]) -> String {
    lines
        .iter()
        .find(|l| l["event"] == "queued")
        .and_then(|l| l["idempotencyKey"].as_str())
        .expect("a `queued` line with the idempotency key")
        .to_owned()
}

#[test]
fn one_shot_prints_the_stub_models_reply() {
    let dir = scratch_dir("chat-one-shot");
    let base = direct_args(&dir);
    let mark = unique_marker("oneshot");
    let session = session_for(&mark);
    let out = run(
        &dir,
        &base,
        &[
            "chat",
            "--session",
            &session,
            "-m",
            &format!("hello {mark}"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    // The stub echoes the prompt: "stub reply: <what the model saw, ending in our text>".
    assert!(stdout.starts_with("stub reply: "), "{stdout}");
    assert!(stdout.contains(&format!("hello {mark}")), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "one reply line: {stdout}");
}

#[test]
fn json_prints_event_lines_with_deltas_and_a_final() {
    let dir = scratch_dir("chat-json");
    let base = direct_args(&dir);
    let mark = unique_marker("json");
    let session = session_for(&mark);
    let out = run(
        &dir,
        &base,
        &["--json", "chat", "--session", &session, "-m", &mark],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let lines = json_lines(&stdout);
    let key = key_of(&lines);
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    for expected in ["queued", "send", "ack", "chat", "done"] {
        assert!(events.contains(&expected), "no {expected}: {events:?}");
    }
    let deltas = chat_events(&lines, "delta");
    let finals = chat_events(&lines, "final");
    assert!(!deltas.is_empty(), "no delta event: {stdout}");
    assert_eq!(finals.len(), 1, "one final event: {stdout}");
    for payload in deltas.iter().chain(&finals) {
        assert_eq!(payload["runId"], key.as_str(), "{payload}");
        assert_eq!(payload["sessionKey"], session.as_str(), "{payload}");
    }
    let done = done_line(&lines);
    assert_eq!(done["state"], "final", "{done}");
    assert_eq!(done["runId"], key.as_str());
    // The run ended on its final event, not on a catch-up read of the history.
    assert_eq!(done["fromHistory"], false, "{done}");
    let reply = done["text"].as_str().unwrap();
    assert!(
        reply.starts_with("stub reply: ") && reply.contains(&mark),
        "{reply}"
    );
    let final_text = message_text(&finals[0]["message"]);
    assert_eq!(final_text, reply, "the final event carries the whole reply");
}

#[test]
fn text_on_stdin_is_sent_like_dash_m() {
    let dir = scratch_dir("chat-stdin");
    let base = direct_args(&dir);
    let mark = unique_marker("stdin");
    let session = session_for(&mark);
    let mut child = clawlink_command(&dir)
        .args(&base)
        .args(["chat", "--session", &session])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("piped {mark}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(stdout.starts_with("stub reply: "), "{stdout}");
    assert!(stdout.contains(&format!("piped {mark}")), "{stdout}");
    let history = history(&dir, &base, &session);
    let users: Vec<String> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(message_text)
        .collect();
    // The trailing newline of the pipe is not part of the message.
    assert_eq!(users, vec![format!("piped {mark}")]);
}

#[test]
fn the_main_session_is_the_default_and_its_history_shows_the_exchange_once() {
    let dir = scratch_dir("chat-main");
    let base = direct_args(&dir);
    let first_mark = unique_marker("main-first");
    let out = run(&dir, &base, &["--json", "chat", "-m", &first_mark]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let first = json_lines(&stdout);
    let first_key = key_of(&first);
    // No --session: the gateway's main session, canonicalised (hello-ok sessionDefaults).
    let session = done_line(&first)["sessionKey"].as_str().unwrap().to_owned();
    assert_eq!(session, "agent:main:main");
    let send = first.iter().find(|l| l["event"] == "send").unwrap();
    assert_eq!(send["sessionKey"], "agent:main:main", "{send}");

    // A second invocation, with the alias `main`, lands in the same session.
    let second_mark = unique_marker("main-second");
    let out = run(
        &dir,
        &base,
        &["--json", "chat", "--session", "main", "-m", &second_mark],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let second = json_lines(&stdout);
    assert_eq!(done_line(&second)["sessionKey"], "agent:main:main");

    let history = history(&dir, &base, &session);
    let first_tally = tally(&history, &first_key, &first_mark);
    assert_eq!(
        (first_tally.user_by_key, first_tally.user_by_text),
        (1, 1),
        "the first message once: {first_tally:?}"
    );
    assert_eq!(
        (first_tally.replies_by_run, first_tally.replies_by_text),
        (1, 1),
        "its reply once: {first_tally:?}"
    );
    assert_eq!(
        first_tally.reply_texts[0],
        done_line(&first)["text"].as_str().unwrap(),
        "the history holds the reply that was printed"
    );
    let second_tally = tally(&history, &key_of(&second), &second_mark);
    assert_eq!(
        (second_tally.user_by_key, second_tally.replies_by_run),
        (1, 1)
    );
}

#[test]
fn a_second_invocation_sees_the_first_exchange_once_in_the_history() {
    let dir = scratch_dir("chat-history");
    let base = direct_args(&dir);
    let mark = unique_marker("history");
    let session = session_for(&mark);
    let first_text = format!("first {mark}");
    let out = run(
        &dir,
        &base,
        &["--json", "chat", "--session", &session, "-m", &first_text],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let first = json_lines(&stdout);
    let first_key = key_of(&first);
    let first_reply = done_line(&first)["text"].as_str().unwrap().to_owned();

    let out = run(
        &dir,
        &base,
        &[
            "chat",
            "--session",
            &session,
            "-m",
            &format!("second {mark}"),
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));

    let history = history(&dir, &base, &session);
    let roles: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user", "assistant"],
        "{history:#}"
    );
    let first_tally = tally(&history, &first_key, &format!("first {mark}"));
    assert_eq!(first_tally.user_by_key, 1, "{first_tally:?}");
    assert_eq!(first_tally.user_by_text, 1, "{first_tally:?}");
    assert_eq!(first_tally.replies_by_run, 1, "{first_tally:?}");
    assert_eq!(first_tally.reply_texts, vec![first_reply]);
    let texts: Vec<String> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(message_text)
        .collect();
    assert_eq!(texts[0], first_text);
    assert_eq!(texts[2], format!("second {mark}"));
}

/// A `clawlink` run whose stdout lines arrive on a channel while it runs.
struct Streaming {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr_file: PathBuf,
}

impl Streaming {
    fn start(mut cmd: Command, stderr_file: PathBuf) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .expect("start clawlink");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr_file,
        }
    }

    /// Reads lines until one satisfies `wanted`; `None` on EOF or after `limit`.
    fn wait_for(&mut self, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Ok(value) = serde_json::from_str::<Value>(&line) {
                        if wanted(&value) {
                            return Some(value);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Waits (at most `limit`) for the exit; every stdout line as JSON, stderr as text.
    fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<Value>, String) {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "clawlink did not exit within {limit:?}\nstdout so far:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF: take what is left.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let lines = json_lines(&self.seen.join("\n"));
        let stderr = std::fs::read_to_string(&self.stderr_file).unwrap_or_default();
        (status, lines, stderr)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[test]
fn ctrl_c_during_a_slow_reply_aborts_it() {
    let dir = scratch_dir("chat-abort");
    let base = direct_args(&dir);
    let mark = unique_marker("abort");
    let session = session_for(&mark);
    // 24 chunks, 400 ms apart: about ten seconds of reply to interrupt.
    let message = format!("{mark} stub:slow");
    let mut cmd = clawlink_command(&dir);
    cmd.args(&base)
        .args(["--json", "chat", "--session", &session, "-m", &message]);
    let mut chat = Streaming::start(cmd, dir.join("chat.err"));
    let delta = chat.wait_for(Duration::from_secs(60), |l| {
        l["event"] == "chat" && l["payload"]["state"] == "delta"
    });
    assert!(delta.is_some(), "no delta within 60 s: {:?}", chat.seen);
    let interrupted_at = Instant::now();
    signal(chat.child.id(), "INT");
    let (status, lines, stderr) = chat.finish(Duration::from_secs(30));
    let took = interrupted_at.elapsed();

    assert_eq!(status.code(), Some(1), "exit: {status:?}\n{stderr}");
    assert!(stderr.contains("aborted"), "{stderr}");
    assert!(
        lines.iter().any(|l| l["event"] == "abort"),
        "no abort line: {lines:?}"
    );
    let aborted = chat_events(&lines, "aborted");
    assert_eq!(aborted.len(), 1, "one aborted event: {lines:?}");
    assert!(chat_events(&lines, "final").is_empty(), "{lines:?}");
    let done = done_line(&lines);
    assert_eq!(done["state"], "aborted", "{done}");
    let partial = done["text"].as_str().unwrap();
    assert!(
        partial.starts_with("stub") && !partial.contains(&mark),
        "only part of the reply came: {partial}"
    );
    // The abort ended the run long before the ~10 s the slow reply takes.
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let history = history(&dir, &base, &session);
    let t = tally(&history, &key_of(&lines), &mark);
    assert_eq!(t.user_by_key, 1, "{t:?}");
    assert!(t.replies_by_run <= 1, "{t:?}");
    assert_eq!(t.aborted_replies, t.replies_by_run, "{t:?}\n{history:#}");
    eprintln!(
        "aborted {:.2} s after SIGINT: {partial:?}",
        took.as_secs_f64()
    );
}

#[test]
fn the_outbox_keeps_an_undelivered_message_and_is_empty_after_success() {
    let dir = scratch_dir("chat-outbox");
    let base = direct_args(&dir);
    let mark = unique_marker("outbox");
    let session = session_for(&mark);
    let out = run(&dir, &base, &["chat", "--session", &session, "-m", &mark]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run(&dir, &base, &["--json", "chat", "--outbox"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let listing: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listing["pending"], json!([]), "{listing:#}");
    assert_eq!(listing["gateway"], Peers::get().gateway_url());
    let out = run(&dir, &base, &["chat", "--outbox"]);
    assert!(
        text(&out).0.contains("the outbox is empty"),
        "{:?}",
        text(&out)
    );

    // A gateway that is not there: the message stays in the outbox (for that gateway
    // only), and the listing shows it.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let token = dir.join("token").display().to_string();
    let dead = vec![
        "--url".to_owned(),
        dead_url.clone(),
        "--token-file".to_owned(),
        token,
    ];
    let stranded = format!("stranded {mark}");
    let out = run(
        &dir,
        &dead,
        &[
            "chat",
            "--timeout",
            "2",
            "--session",
            &session,
            "-m",
            &stranded,
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let out = run(&dir, &dead, &["--json", "chat", "--outbox"]);
    let listing: Value = serde_json::from_str(&text(&out).0).unwrap();
    let pending = listing["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{listing:#}");
    assert_eq!(pending[0]["preview"], stranded.as_str());
    assert_eq!(pending[0]["sessionKey"], session.as_str());
    assert_eq!(pending[0]["gateway"], dead_url.as_str());
    // The real gateway's outbox is still empty: entries belong to their gateway.
    let out = run(&dir, &base, &["--json", "chat", "--outbox"]);
    let listing: Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(listing["pending"], json!([]), "{listing:#}");

    // A stranded message can be discarded: by (the start of) its key, or all of them —
    // `all` only with --yes where there is no terminal to ask on.
    let key = pending[0]["idempotencyKey"].as_str().unwrap().to_owned();
    let out = run(
        &dir,
        &dead,
        &["chat", "--outbox", "--discard", "no-such-key"],
    );
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let out = run(&dir, &dead, &["chat", "--outbox", "--discard", &key[..8]]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("discarded {key}")), "{stdout}");
    let again = format!("again {mark}");
    for message in [&again, &stranded] {
        let out = run(&dir, &dead, &["chat", "--timeout", "2", "-m", message]);
        assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    }
    let out = run(&dir, &dead, &["chat", "--outbox", "--discard", "all"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    let out = run(
        &dir,
        &dead,
        &["--json", "chat", "--outbox", "--discard", "all", "--yes"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let discarded: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        discarded["discarded"].as_array().unwrap().len(),
        2,
        "{discarded:#}"
    );
    let out = run(&dir, &dead, &["--json", "chat", "--outbox"]);
    let listing: Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(listing["pending"], json!([]), "{listing:#}");
}

/// `--url` of a loopback port nobody listens on (refused at once), with the token flag.
fn refused_gateway(dir: &Path) -> Vec<String> {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    token_flags(dir, None, &url)
}

/// The exit status of `child` within `limit` (killed and failed otherwise).
fn exit_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_one_shot_to_a_refused_port_says_why_without_waiting_out_its_timeout() {
    let dir = scratch_dir("chat-refused");
    let dead = refused_gateway(&dir);
    let mark = unique_marker("refused");
    let stderr_file = dir.join("chat.err");
    // The default --timeout: minutes. A refused port is reported long before that.
    let mut child = clawlink_command(&dir)
        .args(&dead)
        .args(["chat", "-m", &mark])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let status = exit_within(
        &mut child,
        Duration::from_secs(60),
        "chat -m to a refused port",
    );
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("connect: cannot reach the gateway") && stderr.contains("refused"),
        "the layer and the reason: {stderr}"
    );
    assert!(stderr.contains("waits in the outbox"), "{stderr}");
    // --json says so for each attempt.
    let out = run(&dir, &dead, &["--json", "chat", "-m", &mark]);
    let lines = json_lines(&text(&out).0);
    assert!(
        lines.iter().any(|l| l["event"] == "waiting"
            && l["attempt"] == 1
            && l["reason"].as_str().unwrap_or("").contains("refused")),
        "{lines:?}"
    );
}

#[test]
fn a_timeout_names_the_seconds_it_was_given() {
    let dir = scratch_dir("chat-silent");
    // Accepts TCP (the kernel does) and never answers the WebSocket handshake.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let args = token_flags(&dir, None, &url);
    let out = run(
        &dir,
        &args,
        &["chat", "--timeout", "3", "-m", "anyone there?"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("within 3 s"), "{stderr}");
    drop(silent);
}

/// A TCP proxy in front of the peer sshd that can drop every connection it carries at once
/// (the SSH session dies as if the network went away).
struct CuttingProxy {
    port: u16,
    live: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicU64>,
}

impl CuttingProxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let (live_for_loop, accepted_for_loop) = (live.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                accepted_for_loop.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut live = live_for_loop.lock().unwrap();
                    live.push(client.try_clone().unwrap());
                    live.push(server.try_clone().unwrap());
                }
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        Self {
            port,
            live,
            accepted,
        }
    }

    /// Drops every connection now (both directions, both sides); how many were open.
    fn cut(&self) -> usize {
        let mut live = self.live.lock().unwrap();
        let open = live
            .chunks(2)
            .filter(|pair| pair[0].peer_addr().is_ok())
            .count();
        for stream in live.iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        live.clear();
        open
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// When a round cuts the connection.
#[derive(Debug, Clone, Copy)]
enum CutAt {
    /// As `chat.send` goes out, or a few milliseconds later (before the gateway got it,
    /// or after it got it but before its acknowledgement came back).
    Send(u64),
    /// Right after the acknowledgement, before any of the reply.
    Ack,
    /// In the middle of the streamed reply.
    Delta,
}

#[test]
fn a_cut_ssh_connection_loses_nothing_and_duplicates_nothing() {
    const ROUNDS: usize = 20;
    let peers = Peers::get();
    let home = ssh_home("chat-fault");
    let proxy = CuttingProxy::start(format!(
        "{}:{}",
        peers.var("OCPEER_SSH_HOST"),
        peers.var("OCPEER_SSH_PORT")
    ));
    // The proxy's address must be a known host too: the same host key as the sshd's.
    let known = std::fs::read_to_string(home.join(".ssh/known_hosts")).unwrap();
    let key = known
        .lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.split_once(' '))
        .map(|(_, key)| key.to_owned())
        .unwrap();
    std::fs::write(
        home.join(".ssh/known_hosts"),
        format!("{known}[127.0.0.1]:{} {key}\n", proxy.port),
    )
    .unwrap();
    let token = secret_file(&home, "token", peers.var("OCPEER_GATEWAY_TOKEN"));
    let ssh = vec![
        "--ssh".to_owned(),
        format!("{}@127.0.0.1:{}", peers.var("OCPEER_SSH_USER"), proxy.port),
        "--identity".into(),
        peers.var("OCPEER_SSH_KEY").into(),
        "--remote-port".into(),
        peers.var("OCPEER_GATEWAY_PORT").into(),
        "--token-file".into(),
        token.display().to_string(),
    ];
    // History reads go straight to the gateway, not through the proxy.
    let direct = direct_args(&home);

    let started = Instant::now();
    let (mut reconnects, mut retries, mut duplicates, mut cuts) = (0usize, 0usize, 0usize, 0usize);
    // Acknowledgements saying the gateway already had the message (the cut lost its first
    // acknowledgement): the re-send was deduplicated.
    let mut in_flight = 0usize;
    let mut statuses = Vec::new();
    for round in 0..ROUNDS {
        let cut_at = [
            CutAt::Send((round as u64 / 3 % 4) * 5),
            CutAt::Ack,
            CutAt::Delta,
        ][round % 3];
        let mark = unique_marker(&format!("fault{round}"));
        let session = session_for(&mark);
        let message = format!("{mark} stub:slow:50");
        let mut cmd = clawlink_command(&home);
        cmd.args(&ssh).args([
            "--json",
            "chat",
            "--timeout",
            "90",
            "--session",
            &session,
            "-m",
            &message,
        ]);
        let mut chat = Streaming::start(cmd, home.join(format!("round{round}.err")));
        let trigger = chat.wait_for(Duration::from_secs(60), |l| match cut_at {
            CutAt::Send(_) => l["event"] == "send",
            CutAt::Ack => l["event"] == "ack",
            CutAt::Delta => l["event"] == "chat" && l["payload"]["state"] == "delta",
        });
        assert!(
            trigger.is_some(),
            "round {round}: no {cut_at:?} line\n{}",
            chat.seen.join("\n")
        );
        if let CutAt::Send(delay_ms) = cut_at {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        let dropped = proxy.cut();
        assert!(dropped >= 1, "round {round}: nothing to cut");
        cuts += dropped;
        let (status, lines, stderr) = chat.finish(Duration::from_secs(100));
        assert!(
            status.success(),
            "round {round} ({cut_at:?}): exit {status:?}\n{stderr}\n{lines:#?}"
        );
        let done = done_line(&lines);
        assert_eq!(done["state"], "final", "round {round}: {done}");
        let reply = done["text"].as_str().unwrap();
        assert!(
            reply.starts_with("stub reply: ") && reply.contains(&mark),
            "round {round}: the whole reply: {reply}"
        );
        let round_retries = lines.iter().filter(|l| l["event"] == "retry").count();
        let round_reconnects = lines.iter().filter(|l| l["event"] == "reconnected").count();
        assert!(
            round_retries + round_reconnects >= 1,
            "round {round} ({cut_at:?}): the cut went unnoticed: {lines:#?}"
        );
        retries += round_retries;
        reconnects += round_reconnects;
        let acks: Vec<&str> = lines
            .iter()
            .filter(|l| l["event"] == "ack")
            .filter_map(|l| l["status"].as_str())
            .collect();
        in_flight += acks.iter().filter(|s| **s == "in_flight").count();
        statuses.push(format!("{cut_at:?}:{}", acks.join("/")));
        // Leftovers of this round (its connection after the cut) are not the next one's.
        proxy.cut();

        // The gateway may still be writing the transcript when the final event is out.
        let key = key_of(&lines);
        let t = wait_for_tally(&home, &direct, &session, &key, &mark);
        duplicates += t.user_by_text.saturating_sub(1) + t.replies_by_text.saturating_sub(1);
        assert_eq!(
            (t.user_by_key, t.user_by_text),
            (1, 1),
            "round {round} ({cut_at:?}): the user message exactly once: {t:?}"
        );
        assert_eq!(
            (t.replies_by_run, t.replies_by_text),
            (1, 1),
            "round {round} ({cut_at:?}): exactly one reply: {t:?}"
        );
        assert_eq!(t.reply_texts, vec![reply.to_owned()], "round {round}");
    }
    let elapsed = started.elapsed();
    eprintln!(
        "fault test over SSH: {ROUNDS} rounds in {:.1} s; connections cut: {cuts}; SSH connections opened: {}; \
         re-sends after a cut (retry): {retries}, of which the gateway already had {in_flight} (in_flight); \
         reconnects while following (reconnected): {reconnects}; duplicates: {duplicates}; \
         acknowledgements per round: {statuses:?}",
        elapsed.as_secs_f64(),
        proxy.accepted.load(Ordering::Relaxed),
    );
    assert_eq!(duplicates, 0);
    assert!(
        proxy.accepted.load(Ordering::Relaxed) >= 2 * ROUNDS as u64,
        "every round connected again after its cut"
    );
    assert_eq!(cuts, ROUNDS, "one live connection cut per round");
}

/// Reads the history until the message's user turn and one reply are in (at most 10 s),
/// then returns the tally (which the caller checks exactly).
fn wait_for_tally(dir: &Path, base: &[String], session: &str, key: &str, mark: &str) -> Tally {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let t = tally(&history(dir, base, session), key, mark);
        if (t.user_by_key >= 1 && t.replies_by_run >= 1) || Instant::now() > until {
            return t;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `clawlink <args>` on a pseudo-terminal (util-linux `script`), isolated like
/// [`clawlink_command`]: what it prints arrives on a channel, keystrokes go to its stdin.
fn on_a_terminal(dir: &Path, args: &[String]) -> (Child, Receiver<String>) {
    let isolated = clawlink_command(dir);
    let mut line = shell_quote(&clawlink_bin().display().to_string());
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in isolated.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let mut child = cmd.spawn().expect("run script(1)");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, output) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    (child, output)
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Collects terminal output into `seen` until it contains `wanted` (at most `limit`).
fn read_until(output: &Receiver<String>, seen: &mut String, wanted: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while !seen.contains(wanted) {
        match output.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(chunk) => seen.push_str(&chunk),
            Err(_) => return false,
        }
    }
    true
}

#[test]
fn the_interactive_chat_paints_the_history_streams_the_reply_and_quits() {
    let dir = scratch_dir("chat-interactive");
    let base = direct_args(&dir);
    let mark = unique_marker("interactive");
    let session = session_for(&mark);
    // Something to paint first.
    let earlier = format!("earlier {mark}");
    let out = run(
        &dir,
        &base,
        &["chat", "--session", &session, "-m", &earlier],
    );
    assert!(out.status.success(), "{:?}", text(&out));

    let mut args = base.clone();
    args.extend(["chat".to_owned(), "--session".to_owned(), session.clone()]);
    let (mut child, output) = on_a_terminal(&dir, &args);
    let mut seen = String::new();
    let ready = read_until(
        &output,
        &mut seen,
        "/help for commands",
        Duration::from_secs(60),
    );
    assert!(ready, "no prompt:\n{seen}");
    assert!(
        seen.contains(&earlier),
        "the history is painted first:\n{seen}"
    );
    let typed = format!("typed {mark}");
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(format!("{typed}\r").as_bytes()).unwrap();
    stdin.flush().unwrap();
    // The reply echoes what was typed, after the painted history and the typed line.
    let before_reply = seen.len();
    let replied = read_until(
        &output,
        &mut seen,
        &format!("``` {typed}"),
        Duration::from_secs(60),
    );
    assert!(replied, "no reply:\n{seen}");
    assert!(seen[before_reply..].contains("stub reply: "), "{seen}");
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"/quit\r").unwrap();
    stdin.flush().unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("/quit did not end the chat:\n{seen}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{seen}");

    let history = history(&dir, &base, &session);
    let users: Vec<String> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(message_text)
        .collect();
    assert_eq!(users, vec![earlier, typed.clone()], "{history:#}");
    let t = tally(&history, "", &typed);
    assert_eq!((t.user_by_text, t.replies_by_text), (1, 1), "{t:?}");
}

#[test]
fn keys_typed_while_connecting_are_not_sent_and_quit_works_while_a_message_waits() {
    let dir = scratch_dir("chat-typed-early");
    let mut args = refused_gateway(&dir);
    args.push("chat".into());
    let (mut child, output) = on_a_terminal(&dir, &args);
    let mut seen = String::new();
    assert!(
        read_until(&output, &mut seen, "connecting to", Duration::from_secs(30)),
        "{seen}"
    );
    // A shell command typed into the wait, as if the chat had been given up on.
    let early = unique_marker("typed-early");
    let stdin = child.stdin.as_mut().unwrap();
    stdin
        .write_all(format!("echo {early}\r").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    assert!(
        read_until(
            &output,
            &mut seen,
            "/help for commands",
            Duration::from_secs(60)
        ),
        "no prompt:\n{seen}"
    );
    assert!(
        seen.contains("attempt 1 failed: cannot reach the gateway") && seen.contains("retrying in"),
        "each failed attempt says why:\n{seen}"
    );
    assert!(
        !seen.contains(&early),
        "the early keys were echoed:\n{seen}"
    );
    let typed = unique_marker("typed-late");
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(format!("{typed}\r").as_bytes()).unwrap();
    stdin.flush().unwrap();
    assert!(
        read_until(
            &output,
            &mut seen,
            "waiting for the gateway",
            Duration::from_secs(30)
        ),
        "{seen}"
    );
    // The message waits for the gateway: /quit still leaves.
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"/quit\r").unwrap();
    stdin.flush().unwrap();
    let status = exit_within(
        &mut child,
        Duration::from_secs(20),
        "/quit while a message waits",
    );
    assert!(status.success(), "{status:?}\n{seen}");

    let dead: Vec<String> = args[..args.len() - 1].to_vec();
    let out = run(&dir, &dead, &["--json", "chat", "--outbox"]);
    let listing: Value = serde_json::from_str(&text(&out).0).unwrap();
    let previews: Vec<&str> = listing["pending"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["preview"].as_str())
        .collect();
    assert_eq!(previews, vec![typed.as_str()], "{listing:#}");
}
