//! Voice Wake against the real gateway and stub model: the gateway's triggers (get, set/add/remove, live changes, the local mirror), the text path through stdin, trigger-only, push-to-talk `send`, the supervised recognizer command (which inherits no gateway secret), and real speech (espeak-ng) recognised by pocketsphinx.
//!
//! The trigger list is the gateway's global state, shared by every test here: tests that
//! change it hold the write side of [`TRIGGERS`] and restore the defaults; tests that need
//! the default "computer" trigger hold the read side.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clawlink_tests::agent::{agent_command, children_of, process_alive, run_beside, RunningAgent};
use clawlink_tests::*;
use serde_json::{json, Value};

static TRIGGERS: RwLock<()> = RwLock::new(());

const DEFAULTS: [&str; 3] = ["openclaw", "claude", "computer"];
const MAIN_SESSION: &str = "agent:main:main";

fn read_lock() -> std::sync::RwLockReadGuard<'static, ()> {
    TRIGGERS.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock() -> std::sync::RwLockWriteGuard<'static, ()> {
    TRIGGERS.write().unwrap_or_else(|e| e.into_inner())
}

/// A profile file for the test in `dir` with the voicewake settings `features` (TOML lines),
/// and the global flags that reach the main gateway with it.
fn setup(dir: &Path, url: &str, features: &str) -> Vec<String> {
    let config = dir.join("clawlink.toml");
    std::fs::write(
        &config,
        format!("[default.features.voicewake]\nenabled = true\n{features}\n"),
    )
    .unwrap();
    token_flags(dir, Some(&config), url)
}

/// A name for the hint line that only this test run uses, so its runs can be told apart in
/// the shared main session and the stub model's request log.
fn marker(test: &str) -> String {
    format!("vw{}{test}", std::process::id())
}

fn run(dir: &Path, args: &[String], command: &[&str]) -> Output {
    run_beside(dir, args, &[], command)
}

fn json_of(output: &Output) -> Value {
    let (stdout, stderr) = text(output);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\nstdout: {stdout}\nstderr: {stderr}"))
}

fn triggers_cli(dir: &Path, args: &[String], edit: &[&str]) -> (Vec<String>, Value) {
    let mut command = vec!["--json", "voicewake", "triggers"];
    command.extend_from_slice(edit);
    let out = run(dir, args, &command);
    assert!(out.status.success(), "triggers {edit:?}: {:?}", text(&out));
    let answer = json_of(&out);
    let list = answer["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (list, answer)
}

/// Puts the gateway's defaults back, even when the test failed half-way.
struct RestoreDefaults {
    dir: PathBuf,
    args: Vec<String>,
}

impl Drop for RestoreDefaults {
    fn drop(&mut self) {
        let out = run(
            &self.dir,
            &self.args,
            &["voicewake", "triggers", "--set", &DEFAULTS.join(",")],
        );
        if !out.status.success() && !std::thread::panicking() {
            panic!("could not restore the default triggers: {:?}", text(&out));
        }
    }
}

/// `clawlink voicewake listen --json …` with `lines` written to its stdin, `pause` apart;
/// returns its exit status and the JSON events it printed.
fn listen_stdin(
    dir: &Path,
    args: &[String],
    lines: &[&str],
    pause: Duration,
) -> (bool, Vec<Value>, String) {
    let mut child = agent_command(dir, &[])
        .args(args)
        .args(["--json", "voicewake", "listen", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start clawlink voicewake listen");
    {
        let mut stdin = child.stdin.take().unwrap();
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            writeln!(stdin, "{line}").unwrap();
            stdin.flush().unwrap();
        }
    }
    let output = wait_output(child, Duration::from_secs(120));
    let (stdout, stderr) = text(&output);
    let events = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\nstderr: {stderr}")))
        .collect();
    (output.status.success(), events, stderr)
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {:?}", text(&output));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The last state of each detection in a listen output.
fn detections(events: &[Value]) -> Vec<Value> {
    let mut last: Vec<Value> = Vec::new();
    for event in events.iter().filter(|e| e["event"] == "detection") {
        match last.iter_mut().find(|d| d["id"] == event["id"]) {
            Some(slot) => *slot = event.clone(),
            None => last.push(event.clone()),
        }
    }
    last
}

/// The stub model's requests whose newest user turn contains `needle`.
fn stub_requests_with(needle: &str) -> Vec<Value> {
    let log = Peers::get().var("OCPEER_STUB_LOG");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["last_user"].as_str().is_some_and(|u| u.contains(needle)))
        .collect()
}

/// User messages of the main session whose text contains `needle`.
fn main_session_user_messages_with(dir: &Path, args: &[String], needle: &str) -> Vec<Value> {
    let params = json!({"sessionKey": MAIN_SESSION, "limit": 200}).to_string();
    let out = run(dir, args, &["--json", "call", "chat.history", &params]);
    assert!(out.status.success(), "chat.history: {:?}", text(&out));
    let history = json_of(&out);
    let messages = history
        .pointer("/messages")
        .or_else(|| history.pointer("/result/messages"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    messages
        .into_iter()
        .filter(|m| m["role"] == "user" && m["content"].to_string().contains(needle))
        .collect()
}

fn hint(machine: &str) -> String {
    format!("User talked via voice recognition on {machine} - repeat prompt first")
}

fn voicewake_details(status: &Value) -> Value {
    status["features"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "voicewake"))
        .map(|f| f["details"].clone())
        .unwrap_or(Value::Null)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn triggers_are_the_gateways_and_round_trip_through_set_add_remove() {
    let _lock = write_lock();
    let dir = scratch_dir("vw-triggers");
    let args = setup(&dir, Peers::get().gateway_url(), "");
    let _restore = RestoreDefaults {
        dir: dir.clone(),
        args: args.clone(),
    };

    let (list, _) = triggers_cli(&dir, &args, &[]);
    assert_eq!(list, DEFAULTS, "the gateway's defaults");
    let (plain, _) = text(&run(&dir, &args, &["voicewake", "triggers"]));
    assert_eq!(plain.lines().collect::<Vec<_>>(), DEFAULTS);

    // The gateway trims; what is shown is what it returns.
    let (list, _) = triggers_cli(&dir, &args, &["--set", " jarvis ,computer"]);
    assert_eq!(list, ["jarvis", "computer"]);
    let (list, _) = triggers_cli(&dir, &args, &["--add", "Friday"]);
    assert_eq!(list, ["jarvis", "computer", "Friday"]);
    let (list, answer) = triggers_cli(&dir, &args, &["--add", "friday!"]);
    assert_eq!(list, ["jarvis", "computer", "Friday"]);
    assert!(answer["notes"].to_string().contains("already"), "{answer}");
    let (list, _) = triggers_cli(&dir, &args, &["--remove", "JARVIS"]);
    assert_eq!(list, ["computer", "Friday"]);

    let out = run(&dir, &args, &["voicewake", "triggers", "--remove", "hal"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("\"hal\" is not one of the gateway's triggers (computer, Friday)"),
        "{stderr}"
    );

    // An empty list makes the gateway fall back to its defaults, and we say so.
    let (list, answer) = triggers_cli(&dir, &args, &["--set", ""]);
    assert_eq!(list, DEFAULTS);
    assert!(answer["notes"].to_string().contains("defaults"), "{answer}");

    let out = run(&dir, &args, &["--json", "voicewake", "routes"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let routing = json_of(&out);
    assert!(routing["routes"].is_array(), "{routing}");
    assert!(routing["defaultTarget"].is_object(), "{routing}");
    let (routes, _) = text(&run(&dir, &args, &["voicewake", "routes"]));
    assert!(routes.starts_with("default: "), "{routes}");
}

/// A TCP relay to the gateway that the test can take away, to see the agent without it.
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: &str) -> Self {
        let target = target.trim_start_matches("ws://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, stop }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Closes the listening socket: nothing answers on the port any more.
    fn close(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn a_change_by_another_client_reaches_the_running_agent_and_is_mirrored_for_offline_use() {
    let _lock = write_lock();
    let dir = scratch_dir("vw-live");
    let relay = Relay::start(Peers::get().gateway_url());
    let args = setup(&dir, &relay.url(), "source = \"none\"");
    let direct = setup(&dir, Peers::get().gateway_url(), "source = \"none\"");
    let restore = RestoreDefaults {
        dir: dir.clone(),
        args: direct.clone(),
    };

    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for("triggers from the gateway", Duration::from_secs(30), |s| {
        voicewake_details(s)["triggersFrom"] == "gateway"
    });
    assert_eq!(strings(&voicewake_details(&status)["triggers"]), DEFAULTS);

    // Another client (its own connection) changes the global list.
    let custom = format!("jarvis {}", std::process::id());
    let (set, _) = triggers_cli(&dir, &direct, &["--set", &format!("computer,{custom}")]);
    assert_eq!(set, ["computer".to_owned(), custom.clone()]);
    let status = agent.wait_for(
        "the voicewake.changed event",
        Duration::from_secs(15),
        |s| strings(&voicewake_details(s)["triggers"]).contains(&custom),
    );
    assert_eq!(voicewake_details(&status)["triggersFrom"], "gateway");
    let (answer, _) = text(&agent.run(&["--json", "voicewake", "recent"]));
    let recent: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(
        strings(&recent["triggers"]),
        ["computer".to_owned(), custom.clone()]
    );

    // The mirror holds the gateway's list, per gateway.
    let mirror: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("data/voicewake/triggers.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        strings(&mirror["gateways"][relay.url().to_string()]["triggers"]),
        ["computer".to_owned(), custom.clone()],
        "{mirror:#}"
    );
    assert!(agent.terminate().success());

    // Without the gateway, a new agent detects with the mirrored list.
    relay.close();
    drop(restore);
    let mut offline = RunningAgent::start(&dir, &args, &[]);
    let status = offline.wait_for("triggers from the mirror", Duration::from_secs(20), |s| {
        voicewake_details(s)["triggersFrom"] == "mirror"
    });
    let details = voicewake_details(&status);
    assert_eq!(
        strings(&details["triggers"]),
        ["computer".to_owned(), custom]
    );
    let feature = status["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "voicewake")
        .unwrap();
    assert_eq!(feature["state"], "degraded", "{feature:#}");
    assert!(offline.terminate().success());
}

#[test]
fn a_spoken_command_on_stdin_becomes_one_agent_run_in_the_main_session() {
    let _lock = read_lock();
    let dir = scratch_dir("vw-stdin");
    let machine = marker("stdin");
    let args = setup(
        &dir,
        Peers::get().gateway_url(),
        &format!("machine_name = {machine:?}"),
    );

    let (ok, events, stderr) = listen_stdin(
        &dir,
        &args,
        &["Computer, what's the weather?"],
        Duration::ZERO,
    );
    assert!(ok, "listen failed: {events:#?}\n{stderr}");
    let found = detections(&events);
    assert_eq!(found.len(), 1, "{found:#?}");
    let d = &found[0];
    assert_eq!(d["trigger"], "computer", "{d:#}");
    assert_eq!(d["command"], "what's the weather?");
    assert_eq!(d["origin"], "stdin");
    assert_eq!(d["stage"], "ok", "{d:#}");
    assert_eq!(d["sessionKey"], MAIN_SESSION);
    // The app's "low", unless the session's model does not offer it (then said why).
    assert!(
        d["thinking"] == "low"
            || d["thinkingDropped"]
                .as_str()
                .is_some_and(|w| w.contains("\"low\"")),
        "{d:#}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "triggers" && e["from"] == "gateway"),
        "{events:#?}"
    );

    // Exactly one run, in the main session, with the hint line and the command.
    let messages = main_session_user_messages_with(&dir, &args, &hint(&machine));
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let content = messages[0]["content"].to_string();
    assert!(content.contains("what's the weather?"), "{content}");
    let requests = stub_requests_with(&hint(&machine));
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert!(requests[0]["last_user"]
        .as_str()
        .unwrap()
        .contains("what's the weather?"));
}

#[test]
fn text_without_a_trigger_is_not_forwarded() {
    let _lock = read_lock();
    let dir = scratch_dir("vw-notrigger");
    let machine = marker("notrigger");
    let args = setup(
        &dir,
        Peers::get().gateway_url(),
        &format!("machine_name = {machine:?}"),
    );
    let spoken = format!("what's the weather in {machine}? the computer is off");
    let (ok, events, stderr) = listen_stdin(&dir, &args, &[&spoken], Duration::ZERO);
    assert!(ok, "{stderr}");
    assert!(detections(&events).is_empty(), "{events:#?}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(stub_requests_with(&machine).is_empty());
    assert!(main_session_user_messages_with(&dir, &args, &machine).is_empty());
}

#[test]
fn trigger_only_takes_the_next_line_within_the_window_and_not_after_it() {
    let _lock = read_lock();
    let dir = scratch_dir("vw-window");
    let machine = marker("window");
    let args = setup(
        &dir,
        Peers::get().gateway_url(),
        &format!("machine_name = {machine:?}\ncommand_window_ms = 3000"),
    );

    let (ok, events, stderr) = listen_stdin(
        &dir,
        &args,
        &["Computer.", "turn on the kitchen lights"],
        Duration::from_millis(1200),
    );
    assert!(ok, "{stderr}");
    let found = detections(&events);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["trigger"], "computer");
    assert_eq!(found[0]["command"], "turn on the kitchen lights");
    assert_eq!(found[0]["heard"], "Computer. / turn on the kitchen lights");
    assert_eq!(found[0]["stage"], "ok", "{:#}", found[0]);
    assert!(events
        .iter()
        .any(|e| e["event"] == "detection" && e["stage"] == "awaiting-command"));
    let requests = stub_requests_with(&hint(&machine));
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert!(requests[0]["last_user"]
        .as_str()
        .unwrap()
        .contains("turn on the kitchen lights"));

    // Past the window the next line is just speech.
    let late = format!("too late {machine}");
    let args = setup(
        &dir,
        Peers::get().gateway_url(),
        &format!("machine_name = {machine:?}\ncommand_window_ms = 500"),
    );
    let (ok, events, stderr) =
        listen_stdin(&dir, &args, &["Claude", &late], Duration::from_millis(1500));
    assert!(ok, "{stderr}");
    let found = detections(&events);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["stage"], "no-command", "{:#}", found[0]);
    assert!(found[0]["summary"].as_str().unwrap().contains("500 ms"));
    assert!(stub_requests_with(&late).is_empty());
}

#[test]
fn send_forwards_one_transcript_through_the_agent_or_on_its_own() {
    let _lock = read_lock();
    let dir = scratch_dir("vw-send");
    let machine = marker("send");
    let args = setup(
        &dir,
        Peers::get().gateway_url(),
        &format!("machine_name = {machine:?}\nsource = \"none\""),
    );

    // No agent: a connection of its own.
    let out = run(
        &dir,
        &args,
        &["--json", "voicewake", "send", "Computer, ping one"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let d = json_of(&out);
    assert_eq!(
        (d["trigger"].as_str(), d["command"].as_str()),
        (Some("computer"), Some("ping one"))
    );
    assert_eq!(d["stage"], "ok", "{d:#}");
    assert_eq!(d["sessionKey"], MAIN_SESSION);

    // An empty command is refused before anything is sent.
    let out = run(&dir, &args, &["voicewake", "send", "computer"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("nothing after the trigger"));

    // With an agent running the feature, through its control socket.
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    agent.wait_for("voicewake running", Duration::from_secs(30), |s| {
        voicewake_details(s)["triggersFrom"] == "gateway"
    });
    let out = agent.run(&["voicewake", "send", "--trigger", "claude", "ping two"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let (line, _) = text(&out);
    assert!(
        line.starts_with("ok \"ping two\" (trigger \"claude\")"),
        "{line}"
    );
    let (answer, _) = text(&agent.run(&["--json", "voicewake", "recent"]));
    let recent: Value = serde_json::from_str(answer.trim()).unwrap();
    let sent = recent["detections"].as_array().unwrap();
    assert!(
        sent.iter()
            .any(|d| d["origin"] == "send" && d["command"] == "ping two" && d["stage"] == "ok"),
        "{recent:#}"
    );
    assert!(agent.terminate().success());

    let requests = stub_requests_with(&hint(&machine));
    assert_eq!(requests.len(), 2, "{requests:#?}");
}

#[test]
fn the_recognizer_command_is_supervised_and_never_left_behind() {
    let _lock = read_lock();
    let dir = scratch_dir("vw-supervise");
    // A recognizer that fails at once: restarted with backoff, its stderr kept.
    let args = setup(
        &dir,
        Peers::get().gateway_url(),
        "source = \"command\"\ncommand = [\"sh\", \"-c\", \"echo 'no trigger in this line'; echo 'mic unplugged' >&2; exit 3\"]",
    );
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for("two starts", Duration::from_secs(20), |s| {
        voicewake_details(s)["source"]["starts"].as_u64() >= Some(2)
    });
    let source = &voicewake_details(&status)["source"];
    assert_eq!(source["lastExit"], "exit code 3", "{source:#}");
    assert!(
        source["stderrTail"].to_string().contains("mic unplugged"),
        "{source:#}"
    );
    assert!(voicewake_details(&status)["stats"]["withoutTrigger"].as_u64() >= Some(1));
    assert!(agent.terminate().success());

    // A long-running recognizer with a child of its own: both go when the agent stops.
    let dir = scratch_dir("vw-supervise-stop");
    let args = setup(
        &dir,
        Peers::get().gateway_url(),
        "source = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 300 & echo $CLAWLINK_VOICEWAKE_TRIGGERS >&2; wait\"]",
    );
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for("the recognizer running", Duration::from_secs(20), |s| {
        let source = &voicewake_details(s)["source"];
        source["state"] == "running" && source["stderrTail"].to_string().contains("computer")
    });
    let pid = voicewake_details(&status)["source"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let grandchildren = children_of(pid);
    assert!(!grandchildren.is_empty(), "sleep runs under the recognizer");
    assert!(agent.terminate().success());
    for process in std::iter::once(pid).chain(grandchildren) {
        assert!(
            !process_alive(process),
            "process {process} outlived the agent"
        );
    }
}

#[test]
fn the_gateway_token_from_the_environment_reaches_no_child() {
    let _lock = read_lock();
    let dir = scratch_dir("vw-child-env");
    let dump = dir.join("recognizer.env");
    let config = dir.join("clawlink.toml");
    let command = json!(["sh", "-c", format!("env > '{}'", dump.display())]);
    std::fs::write(
        &config,
        format!(
            "[default.features.voicewake]\nenabled = true\nsource = \"command\"\nrestart = \"never\"\ncommand = {command}\n"
        ),
    )
    .unwrap();
    // The token only in the environment: no --token-file, no auth.token_file.
    let token = Peers::get().var("OCPEER_GATEWAY_TOKEN").to_owned();
    let args: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--url".into(),
        Peers::get().gateway_url().into(),
    ];
    let mut agent = RunningAgent::start(&dir, &args, &[("CLAWLINK_TOKEN".into(), token.clone())]);
    // Connected (so the agent authenticated with the token it took from the environment)
    // and the recognizer ran to its end.
    let status = agent.wait_for(
        "connected, the recognizer ended",
        Duration::from_secs(30),
        |s| {
            s["connection"]["phase"] == "connected"
                && voicewake_details(s)["source"]["state"] == "ended"
        },
    );
    assert_eq!(
        voicewake_details(&status)["source"]["lastExit"],
        "exit code 0"
    );
    let environment = std::fs::read_to_string(&dump).unwrap();
    assert!(
        environment.contains("CLAWLINK_VOICEWAKE_TRIGGERS="),
        "not the recognizer's environment: {environment}"
    );
    assert!(
        !environment.contains(&token) && !environment.contains("CLAWLINK_TOKEN="),
        "the recognizer inherited the gateway token"
    );
    assert!(agent.terminate().success(), "{}", agent.output("up.err"));
}

/// Where `cargo xtask peer install` puts the recognizer launcher.
fn recognizer() -> PathBuf {
    let path = PathBuf::from(Peers::get().var("CLAWLINK_PEER_DIR")).join("bin/ocpeer-recognize");
    assert!(
        path.is_file(),
        "the offline recognizer is not installed ({} is missing): run `cargo xtask peer install` \
         (it installs pocketsphinx from PyPI into target/peer/voice)",
        path.display()
    );
    path
}

fn synthesise(dir: &Path, words: &str) -> PathBuf {
    let wav = dir.join("speech.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "130", "-w"])
        .arg(&wav)
        .arg(words)
        .status()
        .unwrap_or_else(|e| panic!("espeak-ng cannot run ({e}): run `cargo xtask peer install` (it installs Debian's espeak-ng)"));
    assert!(status.success(), "espeak-ng failed");
    wav
}

#[test]
fn real_speech_is_recognised_by_pocketsphinx_and_forwarded() {
    let _lock = read_lock();
    let dir = scratch_dir("vw-audio");
    let machine = marker("audio");
    let recognizer = recognizer();
    let wav = synthesise(&dir, "computer, open the pod bay doors");
    // The recognizer gets the gateway's triggers from the agent (CLAWLINK_VOICEWAKE_TRIGGERS)
    // and a few expected commands for its grammar; it decodes the file and exits 0.
    let command = json!([
        recognizer,
        "--json",
        "--phrase",
        "open the pod bay doors",
        "--phrase",
        "what's the weather",
        "--phrase",
        "turn off the lights",
        wav,
    ]);
    let args = setup(
        &dir,
        Peers::get().gateway_url(),
        &format!("machine_name = {machine:?}\nsource = \"command\"\nrestart = \"never\"\ncommand = {command}"),
    );
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for(
        "the spoken command forwarded",
        Duration::from_secs(90),
        |s| {
            voicewake_details(s)["recent"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|d| d["stage"] == "ok" || d["stage"] == "error")
            })
        },
    );
    let details = voicewake_details(&status);
    let d = details["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["stage"] == "ok" || d["stage"] == "error")
        .unwrap()
        .clone();
    assert_eq!(d["origin"], "command");
    assert_eq!(
        d["trigger"], "computer",
        "the trigger must be recognised: {d:#}"
    );
    assert!(!d["command"].as_str().unwrap_or("").is_empty(), "{d:#}");
    assert_eq!(d["stage"], "ok", "{d:#}");
    assert_eq!(details["source"]["state"], "ended", "{details:#}");
    assert_eq!(details["source"]["lastExit"], "exit code 0");

    let requests = stub_requests_with(&hint(&machine));
    assert_eq!(requests.len(), 1, "{requests:#?}");
    // The recogniser's words (errors tolerated) after the hint line.
    let heard = d["command"].as_str().unwrap();
    assert!(requests[0]["last_user"].as_str().unwrap().contains(heard));
    assert!(
        children_of(agent.pid()).is_empty(),
        "the finished recognizer was reaped"
    );
    assert!(agent.terminate().success());
}
