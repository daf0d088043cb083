//! clawlink as a gateway node (feature `notify`) against the real gateway: `clawlink up` self-approves its `system.notify` surface, the real openclaw CLI lists and notifies it, a recording org.freedesktop.Notifications server on a private session bus receives summary, body (markup escaped), urgency and the sound hints; without a server the node says so and fails fast.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clawlink_tests::agent::RunningAgent;
use clawlink_tests::*;
use serde_json::Value;
use zbus::zvariant::{OwnedValue, Value as Variant};

/// One test at a time: each starts a node whose self-approval writes the gateway's pairing
/// store, and the gateway drops a node's invoke result when that store is written meanwhile.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A private `dbus-daemon --session`, stopped on drop.
struct SessionBus {
    child: Child,
    address: String,
}

impl SessionBus {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", dir.join("bus").display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "dbus-daemon (package dbus-daemon) must be installed: `cargo xtask peer install`",
            );
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Self { child, address }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the recording server was asked to show.
#[derive(Debug, Clone)]
struct Shown {
    app: String,
    summary: String,
    body: String,
    urgency: Option<u8>,
    sound_name: Option<String>,
    sound_file: Option<String>,
    suppress_sound: Option<bool>,
}

struct Recorder {
    shown: Arc<Mutex<Vec<Shown>>>,
}

fn text_hint(hints: &HashMap<String, OwnedValue>, key: &str) -> Option<String> {
    match hints.get(key).map(|v| &**v) {
        Some(Variant::Str(s)) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let urgency = match hints.get("urgency").map(|v| &**v) {
            Some(Variant::U8(level)) => Some(*level),
            _ => None,
        };
        let suppress_sound = match hints.get("suppress-sound").map(|v| &**v) {
            Some(Variant::Bool(b)) => Some(*b),
            _ => None,
        };
        let mut shown = self.shown.lock().unwrap();
        shown.push(Shown {
            app: app_name,
            summary,
            body,
            urgency,
            sound_name: text_hint(&hints, "sound-name"),
            sound_file: text_hint(&hints, "sound-file"),
            suppress_sound,
        });
        shown.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        // body-markup: the server reads bodies as markup, as GNOME Shell, KDE and dunst do.
        vec!["body".into(), "body-markup".into(), "sound".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "clawlink-test-server".into(),
            "clawlink tests".into(),
            "1.0".into(),
            "1.2".into(),
        )
    }

    fn close_notification(&self, _id: u32) {}
}

/// A notification server on `address` (its own thread and runtime), recording each call.
struct NotificationServer {
    shown: Arc<Mutex<Vec<Shown>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotificationServer {
    fn start(address: &str) -> Self {
        let shown = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let recorder = Recorder {
            shown: shown.clone(),
        };
        let address = address.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let connection = zbus::connection::Builder::address(address.as_str())
                    .and_then(|b| b.serve_at("/org/freedesktop/Notifications", recorder))
                    .and_then(|b| b.name("org.freedesktop.Notifications"))
                    .map(|b| b.build());
                let connection = match connection {
                    Ok(building) => building.await,
                    Err(e) => Err(e),
                };
                match connection {
                    Ok(connection) => {
                        ready_tx.send(Ok(())).unwrap();
                        let _ = stopped.await;
                        drop(connection);
                    }
                    Err(e) => ready_tx.send(Err(e.to_string())).unwrap(),
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the notification server starts")
            .expect("the notification server owns its name");
        Self {
            shown,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The notification with this summary, once it arrives.
    fn wait_for(&self, summary: &str) -> Shown {
        let started = Instant::now();
        loop {
            if let Some(found) = self
                .shown
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.summary == summary)
            {
                return found.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no notification {summary:?}; shown: {:?}",
                self.shown.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NotificationServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The real openclaw CLI as the peers run it: an empty HOME, the gateway port and token from
/// the environment. Retries the gateway's transient "before dispatch" refusals (its pairing
/// store busy), which never reached the node.
fn openclaw(dir: &Path, args: &[&str]) -> Output {
    let peers = Peers::get();
    let home = dir.join("openclaw-home");
    std::fs::create_dir_all(&home).unwrap();
    for attempt in 1..=3 {
        let output = Command::new(peers.var("OCPEER_OPENCLAW_BIN"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", &home)
            .env("OPENCLAW_GATEWAY_PORT", peers.var("OCPEER_GATEWAY_PORT"))
            .env("OPENCLAW_GATEWAY_TOKEN", peers.var("OCPEER_GATEWAY_TOKEN"))
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("DO_NOT_TRACK", "1")
            .current_dir(&home)
            .output()
            .expect("run the openclaw CLI");
        let (_, stderr) = text(&output);
        if output.status.success() || attempt == 3 || !stderr.contains("before dispatch") {
            return output;
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// `clawlink up` with the notify feature on, on `bus`.
fn node_agent(dir: &Path, bus: &SessionBus, display_name: &str) -> RunningAgent {
    let peers = Peers::get();
    let config = dir.join("clawlink.toml");
    std::fs::write(
        &config,
        format!("[default.features.notify]\nenabled = true\ndisplay_name = \"{display_name}\"\n"),
    )
    .unwrap();
    let args = token_flags(dir, Some(&config), peers.gateway_url());
    RunningAgent::start(
        dir,
        &args,
        &[("DBUS_SESSION_BUS_ADDRESS".into(), bus.address.clone())],
    )
}

/// The notify feature's status details once its node is connected with system.notify
/// approved.
fn ready_node(agent: &RunningAgent) -> Value {
    let status = agent.wait_for("a ready notify node", Duration::from_secs(60), |s| {
        notify_details(s).is_some_and(|d| {
            d["connected"] == true
                && d["approval"] == "approved"
                && d["commands"]
                    .as_array()
                    .is_some_and(|c| c.contains(&Value::from("system.notify")))
        })
    });
    notify_details(&status).unwrap().clone()
}

fn notify_details(status: &Value) -> Option<&Value> {
    status["features"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == "notify")
        .map(|f| &f["details"])
}

#[test]
fn clawlink_up_as_a_node_shows_notifications_with_sound() {
    let _serial = serial();
    let dir = scratch_dir("notify-node");
    let bus = SessionBus::start(&dir);
    let server = NotificationServer::start(&bus.address);
    let name = format!("notify-test-{}", std::process::id());
    let mut agent = node_agent(&dir, &bus, &name);

    let details = ready_node(&agent);
    let node_id = details["nodeId"].as_str().unwrap().to_owned();
    assert_eq!(details["permissions"]["notifications"], true, "{details:#}");
    assert!(
        details["notifications"]["server"]
            .as_str()
            .is_some_and(|s| s.starts_with("clawlink-test-server 1.0")),
        "{details:#}"
    );
    // The agent approved its own surface: one request, its own.
    assert!(
        !details["selfApproved"].as_array().unwrap().is_empty(),
        "{details:#}"
    );

    // The real CLI sees it, paired, connected, with system.notify and its permission.
    let out = openclaw(&dir, &["nodes", "list", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "openclaw nodes list: {stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let entry = listed["paired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == node_id.as_str())
        .unwrap_or_else(|| panic!("node {node_id} missing from openclaw nodes list: {listed:#}"))
        .clone();
    assert_eq!(entry["connected"], true, "{entry:#}");
    assert_eq!(entry["displayName"], name.as_str());
    assert_eq!(entry["clientMode"], "node");
    assert!(entry["commands"]
        .as_array()
        .unwrap()
        .contains(&Value::from("system.notify")));
    assert_eq!(entry["permissions"]["notifications"], true, "{entry:#}");

    // The seed's command, through the real CLI, with a macOS sound name.
    let out = openclaw(
        &dir,
        &[
            "nodes", "notify", "--node", &name, "--title", "T", "--body", "B", "--sound", "Glass",
            "--json",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "openclaw nodes notify: {stderr}\n{stdout}"
    );
    let result: Value = serde_json::from_str(&stdout).unwrap();
    let payload = &result["payload"];
    assert_eq!(payload["delivery"], "system", "{result:#}");
    assert_eq!(payload["urgency"], "normal");
    let sound = &payload["sound"];
    assert_eq!(sound["systemName"], "Glass", "{sound:#}");
    assert_eq!(sound["name"], "message-new-instant");
    let file = sound["file"].as_str().expect("Glass resolved to a file");
    assert!(
        file.ends_with("/sounds/freedesktop/stereo/message-new-instant.oga"),
        "{file}"
    );
    assert!(Path::new(file).is_file());
    assert!(
        sound["decoded"]["durationMs"].as_u64().unwrap() > 100,
        "{sound:#}"
    );
    assert!(sound["decoded"]["sampleRate"].as_u64().unwrap() >= 8000);

    let shown = server.wait_for("T");
    assert_eq!(shown.app, "clawlink");
    assert_eq!(shown.body, "B");
    assert_eq!(shown.urgency, Some(1));
    assert_eq!(shown.sound_name.as_deref(), Some("message-new-instant"));
    assert_eq!(shown.sound_file.as_deref(), Some(file));
    // The service plays the sound exactly when clawlink did not.
    let played = sound["played"] == true;
    assert_eq!(shown.suppress_sound.unwrap_or(false), played, "{sound:#}");

    // clawlink's own notify: priority → urgency, no sound asked → no sound hints.
    let out = agent.run(&[
        "notify",
        "--node",
        &node_id[..12],
        "--title",
        "Urgent",
        "--priority",
        "timeSensitive",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "notify ok");
    let urgent = server.wait_for("Urgent");
    assert_eq!(urgent.urgency, Some(2));
    assert_eq!((urgent.sound_name, urgent.sound_file), (None, None));
    let out = agent.run(&[
        "notify",
        "--node",
        &name,
        "--body",
        "quiet",
        "--priority",
        "passive",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    // A notification without a title shows its body as the summary.
    assert_eq!(server.wait_for("quiet").urgency, Some(0));

    // The sender's markup reaches a markup server as text: it is shown, not obeyed.
    let out = agent.run(&[
        "notify",
        "--node",
        &name,
        "--title",
        "Markup",
        "--body",
        r#"<a href="https://evil.example">your bank</a> & <b>more</b>"#,
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        server.wait_for("Markup").body,
        r#"&lt;a href="https://evil.example"&gt;your bank&lt;/a&gt; &amp; &lt;b&gt;more&lt;/b&gt;"#
    );

    // An unknown sound is refused by the node, which lists the names it knows.
    let out = agent.run(&[
        "notify", "--node", &name, "--title", "x", "--sound", "Trombone",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("answered UNKNOWN_SOUND: sound \"Trombone\" is unknown here"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Glass") && stderr.contains("message-new-instant"),
        "{stderr}"
    );

    // Blank title and body are refused by the node itself (the CLI checks them too).
    let params = format!(
        r#"{{"nodeId":"{node_id}","command":"system.notify","params":{{"title":"  ","body":""}},"idempotencyKey":"blank-{}"}}"#,
        std::process::id()
    );
    let out = agent.run(&["call", "node.invoke", &params]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("INVALID_REQUEST: empty notification"),
        "{stderr}"
    );
    assert!(!server
        .shown
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.summary.trim().is_empty()));

    let exit = agent.terminate();
    assert!(exit.success(), "{}", agent.output("up.err"));
}

#[test]
fn without_a_notification_server_the_node_says_so_and_fails_fast() {
    let _serial = serial();
    let dir = scratch_dir("notify-no-server");
    let bus = SessionBus::start(&dir);
    let name = format!("notify-test-silent-{}", std::process::id());
    let mut agent = node_agent(&dir, &bus, &name);

    let details = ready_node(&agent);
    let node_id = details["nodeId"].as_str().unwrap().to_owned();
    assert_eq!(
        details["permissions"]["notifications"], false,
        "{details:#}"
    );
    assert_eq!(details["notifications"]["available"], false);
    assert!(
        details["notifications"]["reason"]
            .as_str()
            .unwrap()
            .contains("no notification server on the session bus"),
        "{details:#}"
    );

    // Operators see it in the permission map.
    let described = agent.run(&["--json", "nodes", "describe", &node_id]);
    let described: Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(
        described["permissions"]["notifications"], false,
        "{described:#}"
    );
    let table = text(&agent.run(&["nodes", "list"])).0;
    let row = table
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("notifications denied"), "{row}");

    // An invoke fails at once with the node's code, not after the invoke timeout.
    let started = Instant::now();
    let out = agent.run(&["notify", "--node", &name, "--title", "nobody listens"]);
    let took = started.elapsed();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("answered NOTIFICATIONS_UNAVAILABLE: no notification server"),
        "{stderr}"
    );
    assert!(stderr.contains("--delivery auto"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // delivery auto falls back to the agent's console.
    let out = agent.run(&[
        "--json",
        "notify",
        "--node",
        &name,
        "--title",
        "console",
        "--delivery",
        "auto",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["payload"]["delivery"], "overlay");
    let started = Instant::now();
    while !agent
        .output("up.err")
        .contains("clawlink notification [normal]: console")
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            agent.output("up.err")
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let exit = agent.terminate();
    assert!(exit.success(), "{}", agent.output("up.err"));
}
