//! `clawlink nodes` and `clawlink notify` as an operator against the real gateway: the peers' fake macOS node, plus short-lived fake nodes for pairing (pending, approve, reject), permissions, ambiguity and a disconnected node.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clawlink_tests::*;
use serde_json::Value;

/// One test at a time: the gateway drops a node's `node.invoke.result` ("node pairing
/// changed before request dispatch") when its pairing store is written at that moment, and
/// the pairing test writes it.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The global flags that reach the main peer gateway with its token.
fn direct(dir: &Path) -> Vec<String> {
    token_flags(dir, None, Peers::get().gateway_url())
}

/// Runs `clawlink <global> <args>` in `dir`.
fn run(dir: &Path, global: &[String], args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = global.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    clawlink(dir, &all)
}

/// Runs it, asserting success; answers stdout.
fn ok(dir: &Path, global: &[String], args: &[&str]) -> String {
    let out = run(dir, global, args);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "clawlink {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

fn json(dir: &Path, global: &[String], args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let stdout = ok(dir, global, &all);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

fn fake_mac_id() -> &'static str {
    Peers::get().var("OCPEER_FAKE_NODE_ID")
}

/// One node of `--json nodes list`.
fn listed(dir: &Path, global: &[String], id: &str) -> Option<Value> {
    json(dir, global, &["nodes", "list"])["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == id)
        .cloned()
}

/// A fake node of our own (the peers' script), killed on drop.
struct FakeNode {
    child: Child,
    id: String,
    log: PathBuf,
}

impl FakeNode {
    fn start(dir: &Path, tag: &str, name: &str, permissions: &str) -> Self {
        let peers = Peers::get();
        let stdout = dir.join(format!("{tag}.out"));
        let log = dir.join(format!("{tag}-invokes.jsonl"));
        let child = Command::new(peers.var("OCPEER_NODE_BIN"))
            .arg(workspace_root().join("xtask/peer/fake_node.mjs"))
            .args([
                "--url",
                peers.gateway_url(),
                "--name",
                name,
                "--permissions",
                permissions,
            ])
            .arg("--key")
            .arg(dir.join(format!("{tag}-key.pem")))
            .arg("--log")
            .arg(&log)
            .env("FAKE_NODE_TOKEN", peers.var("OCPEER_GATEWAY_TOKEN"))
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a fake node");
        let started = Instant::now();
        let id = loop {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(id) = text.lines().find_map(|l| l.strip_prefix("NODE_ID=")) {
                break id.trim().to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "fake node {name} did not connect:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Self { child, id, log }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The params of every invoke it logged.
    fn invokes(&self) -> Vec<Value> {
        let file = std::fs::File::open(&self.log).unwrap();
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter(|v| v["event"] == "invoke")
            .collect()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 250 ms until it answers `Some`, or panics with `what` after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < limit, "not {what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn list_and_describe_show_the_fake_mac_with_its_permissions() {
    let _serial = serial();
    let dir = scratch_dir("nodes-list");
    let global = direct(&dir);
    let id = fake_mac_id();

    let table = ok(&dir, &global, &["nodes", "list"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("fake-mac "))
        .unwrap_or_else(|| panic!("no fake-mac row:\n{table}"));
    assert!(line.contains(&id[..12]), "{line}");
    assert!(line.contains("macos"), "{line}");
    assert!(line.contains("connected · paired · approved"), "{line}");
    assert!(line.contains("system.notify"), "{line}");

    let node = listed(&dir, &global, id).expect("the fake mac in --json nodes list");
    assert_eq!(node["connected"], true);
    assert_eq!(node["platform"], "macos");
    assert!(node["commands"]
        .as_array()
        .unwrap()
        .contains(&Value::from("system.notify")));

    // describe resolves a display name and an id prefix alike, and shows each permission
    // as the gateway reports it (granted / denied; unknown when not reported).
    let described = json(&dir, &global, &["nodes", "describe", &id[..10]]);
    assert_eq!(described["nodeId"], id);
    let text = ok(&dir, &global, &["nodes", "describe", "fake-mac"]);
    assert!(text.contains(&format!("ID        {id}")), "{text}");
    assert!(text.contains("Client    openclaw-macos/node"), "{text}");
    assert!(
        text.contains("Commands  device.info, system.notify"),
        "{text}"
    );
    let permissions = described["permissions"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if permissions.is_empty() {
        assert!(
            text.contains("(the node reports no permission map)"),
            "{text}"
        );
        assert!(line.contains("unknown (not reported)"), "{line}");
    }
    for (key, granted) in &permissions {
        let state = if granted == true { "granted" } else { "denied" };
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(key.as_str()) && l.ends_with(state)),
            "{key} should be {state}:\n{text}"
        );
        assert!(line.contains(&format!("{key} {state}")), "{line}");
    }
    assert!(text.contains("  microphone         unknown"), "{text}");
}

#[test]
fn notify_reaches_the_fake_mac_with_title_body_and_sound() {
    let _serial = serial();
    let dir = scratch_dir("nodes-notify");
    let global = direct(&dir);
    let title = format!("Ping {}", std::process::id());
    let out = ok(
        &dir,
        &global,
        &[
            "notify",
            "--node",
            "fake-mac",
            "--title",
            &title,
            "--body",
            "from clawlink",
            "--sound",
            "Glass",
            "--priority",
            "timeSensitive",
        ],
    );
    assert_eq!(out.trim(), "notify ok");

    let log = Peers::get().var("OCPEER_FAKE_NODE_LOG");
    let invoke = eventually("logged by the fake node", Duration::from_secs(5), || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "invoke" && v["params"]["title"] == title.as_str())
    });
    assert_eq!(invoke["command"], "system.notify");
    assert_eq!(invoke["params"]["body"], "from clawlink");
    assert_eq!(invoke["params"]["sound"], "Glass");
    assert_eq!(invoke["params"]["priority"], "timeSensitive");
    assert_eq!(invoke["params"]["delivery"], "system");

    // --json gives the gateway's invoke result.
    let result = json(
        &dir,
        &global,
        &[
            "notify",
            "--node",
            fake_mac_id(),
            "--body",
            "json",
            "--delivery",
            "auto",
        ],
    );
    assert_eq!(result["ok"], true);
    assert_eq!(result["nodeId"], fake_mac_id());
    assert_eq!(result["command"], "system.notify");
}

#[test]
fn unknown_nodes_requests_and_empty_notifications_are_refused() {
    let _serial = serial();
    let dir = scratch_dir("nodes-refused");
    let global = direct(&dir);

    let out = run(
        &dir,
        &global,
        &["notify", "--node", "no-such-node-anywhere", "--title", "x"],
    );
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown node: no-such-node-anywhere (known: "),
        "{err}"
    );
    assert!(err.contains("fake-mac"), "{err}");
    assert!(err.contains("clawlink nodes list"), "{err}");

    let out = run(
        &dir,
        &global,
        &["notify", "--node", "fake-mac", "--title", "  "],
    );
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs a title or a body"), "{err}");

    let out = run(
        &dir,
        &global,
        &["nodes", "describe", "no-such-node-anywhere"],
    );
    assert_eq!(out.status.code(), Some(2));

    let out = run(&dir, &global, &["nodes", "approve", "not-a-request"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown node pairing request \"not-a-request\""),
        "{err}"
    );
    assert!(err.contains("clawlink nodes pending"), "{err}");

    let out = run(
        &dir,
        &global,
        &[
            "--json",
            "notify",
            "--node",
            "no-such-node-anywhere",
            "--body",
            "x",
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["layer"], "node");
}

/// The pending request of `node_id` in `--json nodes pending`, once it shows.
fn pending_request(dir: &Path, global: &[String], node_id: &str) -> String {
    eventually("pending", Duration::from_secs(15), || {
        json(dir, global, &["nodes", "pending"])
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["nodeId"] == node_id)
            .and_then(|p| p["requestId"].as_str().map(str::to_owned))
    })
}

#[test]
fn pairing_permissions_ambiguity_and_a_disconnected_node() {
    let _serial = serial();
    let dir = scratch_dir("nodes-pairing");
    let global = direct(&dir);
    let name = format!("clawlink-nodes-test-{}", std::process::id());
    let mut mac = FakeNode::start(&dir, "a", &name, "notifications=true,screenRecording=false");
    let mut twin = FakeNode::start(&dir, "b", &name, "");

    // Both surfaces wait for an operator.
    let mac_request = pending_request(&dir, &global, &mac.id);
    let twin_request = pending_request(&dir, &global, &twin.id);
    let table = ok(&dir, &global, &["nodes", "pending"]);
    assert!(
        table.contains(&mac_request) && table.contains(&name),
        "{table}"
    );
    let listing = ok(&dir, &global, &["nodes", "list"]);
    assert!(
        listing.contains(&format!(
            "Approval pending for {name}: run `clawlink nodes approve "
        )),
        "{listing}"
    );

    // Reject one.
    let out = ok(&dir, &global, &["nodes", "reject", &twin_request]);
    assert!(
        out.starts_with(&format!("rejected {twin_request} for {name}")),
        "{out}"
    );
    let still: Vec<Value> = json(&dir, &global, &["nodes", "pending"])
        .as_array()
        .unwrap()
        .clone();
    assert!(!still
        .iter()
        .any(|p| p["requestId"] == twin_request.as_str()));

    // Two connected nodes answer to the name: ambiguous, with both ids.
    let out = run(&dir, &global, &["notify", "--node", &name, "--title", "x"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("ambiguous node: {name} (matches: ")),
        "{err}"
    );
    assert!(err.contains(&mac.id) && err.contains(&twin.id), "{err}");
    twin.stop();

    // Approve the other; its surface becomes effective with its permissions.
    let out = ok(&dir, &global, &["nodes", "approve", &mac_request]);
    assert!(
        out.starts_with(&format!("approved {mac_request} for {name}")),
        "{out}"
    );
    assert!(out.contains("system.notify"), "{out}");
    eventually("approved", Duration::from_secs(20), || {
        let node = json(&dir, &global, &["nodes", "describe", &mac.id]);
        (node["approvalState"] == "approved"
            && node["commands"]
                .as_array()
                .is_some_and(|c| c.contains(&Value::from("system.notify"))))
        .then_some(())
    });
    let listing = ok(&dir, &global, &["nodes", "list"]);
    let row = listing
        .lines()
        .find(|l| l.starts_with(&name) && l.contains(&mac.id[..12]))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        row.contains("notifications granted, screenRecording denied"),
        "{row}"
    );
    // The disconnected twin no longer competes for the name.
    let described = ok(&dir, &global, &["nodes", "describe", &name]);
    assert!(
        described.contains(&format!("ID        {}", mac.id)),
        "{described}"
    );
    assert!(
        described.contains("  notifications      granted"),
        "{described}"
    );
    assert!(
        described.contains("  screenRecording    denied"),
        "{described}"
    );
    assert!(
        described.contains("  camera             unknown"),
        "{described}"
    );

    let out = ok(
        &dir,
        &global,
        &[
            "notify", "--node", &name, "--title", "Hello", "--body", "node", "--sound", "Ping",
        ],
    );
    assert_eq!(out.trim(), "notify ok");
    let invokes = mac.invokes();
    let params = &invokes.last().expect("the node logged the invoke")["params"];
    assert_eq!(
        (
            params["title"].as_str(),
            params["body"].as_str(),
            params["sound"].as_str()
        ),
        (Some("Hello"), Some("node"), Some("Ping"))
    );

    // Gone: the gateway says it is not connected, and clawlink says what to do.
    mac.stop();
    eventually("disconnected", Duration::from_secs(10), || {
        (listed(&dir, &global, &mac.id)?["connected"] == false).then_some(())
    });
    let out = run(
        &dir,
        &global,
        &["notify", "--node", &mac.id, "--title", "x"],
    );
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("node {name} ({}) is not connected", &mac.id[..12])),
        "{err}"
    );
    assert!(err.contains("fix: start it"), "{err}");

    // Leave the shared gateway as we found it (best effort: removal is not under test).
    for id in [&mac.id, &twin.id] {
        let params = format!(r#"{{"nodeId":"{id}"}}"#);
        let _ = run(&dir, &global, &["call", "node.pair.remove", &params]);
    }
}
