//! `clawlink logs` and `clawlink channels status|login|logout` against the real gateway (which has no WhatsApp configured): tail, follow, the channel table, and the gateway's errors with their fixes.

use std::io::BufRead;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use clawlink_tests::*;
use serde_json::Value;

/// `--url <gateway> --token-file <file>` for the main gateway, with the token in `dir`.
fn direct_args(dir: &Path) -> Vec<String> {
    token_flags(dir, None, Peers::get().gateway_url())
}

#[test]
fn logs_prints_the_last_lines_of_the_real_gateway_log() {
    let dir = scratch_dir("logs-tail");
    let base = direct_args(&dir);
    let out = clawlink(&dir, &args_with(&base, &["logs", "--lines", "5"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    // Readable: "2026-… 12:34:56.789+00:00 info  gateway/ws message", not raw JSON.
    for line in &lines {
        assert!(!line.starts_with('{'), "raw JSON in text output: {line}");
        let level = line.split_whitespace().nth(2).unwrap_or("");
        assert!(
            ["trace", "debug", "info", "warn", "error", "fatal"].contains(&level),
            "no level in {line:?}"
        );
    }

    // --json: the gateway's own records, one per line, each one a line of its log file.
    let out = clawlink(&dir, &args_with(&base, &["--json", "logs", "-n", "3"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let log = std::fs::read_to_string(Peers::get().var("OCPEER_GATEWAY_LOG")).unwrap();
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len(), 3, "{stdout}");
    for record in &records {
        let time = record["time"].as_str().expect("a time field");
        assert!(log.contains(time), "{time} is not in the gateway log");
        assert!(record["_meta"]["logLevelName"].is_string(), "{record}");
    }
}

/// Makes the gateway write a line carrying `marker`: a connection with a wrong token, whose
/// client display name the gateway logs with the refusal.
fn trigger_log_line(dir: &Path, marker: &str) {
    let bad = secret_file(dir, "bad-token", "not-the-gateway-token");
    let out = clawlink_with_env(
        dir,
        &[
            "--url",
            Peers::get().gateway_url(),
            "--token-file",
            &bad.display().to_string(),
            "call",
            "health",
        ],
        &[
            ("CLAWLINK_CLIENT__DISPLAY_NAME", marker),
            (
                "CLAWLINK_DATA_DIR",
                &dir.join("trigger-data").display().to_string(),
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "the bad token was accepted?");
}

/// A running `clawlink logs --follow --lines 0` and the lines it printed so far.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(dir: &Path, url: &str) -> Self {
        let token = secret_file(dir, "token", Peers::get().var("OCPEER_GATEWAY_TOKEN"));
        let mut child = Command::new(clawlink_bin())
            .args(["--url", url, "--token-file"])
            .arg(&token)
            .args(["logs", "--follow", "--lines", "0"])
            .current_dir(dir)
            .env("CLAWLINK_DATA_DIR", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("HOME", dir)
            .env_remove("CLAWLINK_TOKEN")
            .env_remove("RUST_LOG")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
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

    /// Collects output for `time`.
    fn collect(&mut self, time: Duration) {
        let until = Instant::now() + time;
        while let Ok(line) = self
            .lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    /// The follow has no "ready" signal: triggers a fresh `{run}-N` marker every few seconds
    /// until one shows up (all of them are written after the follow started), within `limit`.
    fn wait_for_marker(&mut self, dir: &Path, run: &str, limit: Duration) {
        let started = Instant::now();
        let mut n = 0;
        while !self
            .seen
            .iter()
            .any(|l| l.contains(&format!("client={run}-")))
        {
            assert!(
                started.elapsed() < limit,
                "no {run} line within {limit:?}; got: {:#?}",
                self.seen
            );
            n += 1;
            trigger_log_line(dir, &format!("{run}-{n}"));
            self.collect(Duration::from_secs(3));
        }
    }

    /// How many printed lines are the refusal carrying exactly `marker`.
    fn count(&self, marker: &str) -> usize {
        let needle = format!("client={marker} ");
        self.seen
            .iter()
            .filter(|l| l.contains(&needle) && l.contains("unauthorized"))
            .count()
    }

    /// SIGTERM; returns the exit code, which must come within 5 s.
    fn terminate(mut self) -> Option<i32> {
        let stopped = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if stopped.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                panic!("logs -f did not end within 5 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn logs_follow_shows_new_lines_once_and_ends_cleanly_on_sigterm() {
    let dir = scratch_dir("logs-follow");
    let mut follower = Follower::start(&dir, Peers::get().gateway_url());
    let run = format!("clawlink-follow-{}", std::process::id());
    follower.wait_for_marker(&dir, &run, Duration::from_secs(30));
    // Two more after the first one showed: each appears exactly once (no duplicates,
    // nothing skipped), as a readable warning line.
    for n in 1..=2 {
        trigger_log_line(&dir, &format!("{run}-after-{n}"));
    }
    follower.collect(Duration::from_secs(4));
    for n in 1..=2 {
        let marker = format!("{run}-after-{n}");
        assert_eq!(follower.count(&marker), 1, "{marker}: {:#?}", follower.seen);
    }
    assert!(follower
        .seen
        .iter()
        .filter(|l| l.contains(&run))
        .all(|l| l.contains(" warn ") && !l.starts_with('{')));
    assert_eq!(follower.terminate(), Some(0));
}

/// A TCP relay to the gateway whose connections can be cut, and which can play dead
/// (accept and drop) for a while: a network outage between clawlink and the gateway.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (relay_down, relay_open) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if relay_down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut open = relay_open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, down, open }
    }

    /// Cuts every relayed connection and refuses new ones until `restore`.
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[test]
fn logs_follow_survives_an_outage_without_losing_or_repeating_lines() {
    let dir = scratch_dir("logs-outage");
    let gateway_port: u16 = Peers::get().var("OCPEER_GATEWAY_PORT").parse().unwrap();
    let relay = Relay::start(gateway_port);
    let mut follower = Follower::start(&dir, &format!("ws://127.0.0.1:{}", relay.port));
    let run = format!("clawlink-outage-{}", std::process::id());
    follower.wait_for_marker(&dir, &format!("{run}-before"), Duration::from_secs(30));

    // The connection drops; while it is down the gateway writes a line (the trigger goes
    // straight to the gateway, not through the relay).
    relay.cut();
    std::thread::sleep(Duration::from_secs(2));
    trigger_log_line(&dir, &format!("{run}-during"));
    follower.collect(Duration::from_secs(2));
    assert_eq!(
        follower.count(&format!("{run}-during")),
        0,
        "printed while disconnected?"
    );
    relay.restore();

    // Back: the line written during the outage shows up (nothing lost), once, and so do new
    // ones; the follow never gave up.
    let started = Instant::now();
    while follower.count(&format!("{run}-during")) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "the line written during the outage never showed: {:#?}",
            follower.seen
        );
        follower.collect(Duration::from_secs(1));
    }
    trigger_log_line(&dir, &format!("{run}-after"));
    follower.collect(Duration::from_secs(4));
    assert_eq!(
        follower.count(&format!("{run}-during")),
        1,
        "{:#?}",
        follower.seen
    );
    assert_eq!(
        follower.count(&format!("{run}-after")),
        1,
        "{:#?}",
        follower.seen
    );
    assert_eq!(follower.terminate(), Some(0));
}

#[test]
fn channels_status_reflects_the_gateways_answer() {
    let dir = scratch_dir("channels-status");
    let base = direct_args(&dir);
    let gateway = clawlink(&dir, &args_with(&base, &["call", "channels.status", "{}"]));
    assert!(gateway.status.success(), "{}", text(&gateway).1);
    let gateway: Value = serde_json::from_slice(&gateway.stdout).unwrap();

    let out = clawlink(&dir, &args_with(&base, &["--json", "channels", "status"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["status"]["channels"], gateway["channels"]);
    assert_eq!(report["status"]["channelOrder"], gateway["channelOrder"]);
    let rows = report["channels"].as_array().unwrap();
    let order = gateway["channelOrder"].as_array().unwrap();
    assert!(rows.len() >= order.len(), "{report}");
    for channel in order {
        assert!(
            rows.iter().any(|r| r["channel"] == *channel),
            "{channel} missing: {report}"
        );
    }

    let out = clawlink(&dir, &args_with(&base, &["channels", "status", "--probe"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    if order.is_empty() {
        assert!(
            stdout.contains("No channels on this gateway")
                && stdout.contains("openclaw channels add --channel whatsapp"),
            "{stdout}"
        );
    } else {
        assert!(stdout.starts_with("CHANNEL"), "{stdout}");
    }
}

#[test]
fn channels_login_without_whatsapp_gives_the_gateways_error_and_the_fix() {
    let dir = scratch_dir("channels-login");
    let base = direct_args(&dir);
    let png = dir.join("qr.png");
    let png = png.display().to_string();
    let out = clawlink(
        &dir,
        &args_with(&base, &["channels", "login", "--png", &png]),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("WhatsApp is not configured on the gateway")
            && stderr.contains("web login provider is not available"),
        "{stderr}"
    );
    assert!(
        stderr.contains("openclaw plugins install @openclaw/whatsapp")
            && stderr.contains("openclaw channels add --channel whatsapp"),
        "{stderr}"
    );
    assert!(!Path::new(&png).exists(), "no QR code, no PNG");

    let out = clawlink(&dir, &args_with(&base, &["--json", "channels", "login"]));
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(report["error"]["fix"]
        .as_str()
        .unwrap()
        .contains("@openclaw/whatsapp"));

    // The same over SSH: the login always happens on the gateway host.
    let home = ssh_home("channels-login-ssh");
    let token = secret_file(&home, "token", Peers::get().var("OCPEER_GATEWAY_TOKEN"));
    let ssh = ssh_args("claw");
    let token = token.display().to_string();
    let out = clawlink_in_home(
        &home,
        &args_with(&ssh, &["--token-file", &token, "channels", "login"]),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("WhatsApp is not configured on the gateway"),
        "{stderr}"
    );
}

#[test]
fn channels_logout_of_an_unknown_channel_names_it_and_the_fix() {
    let dir = scratch_dir("channels-logout");
    let base = direct_args(&dir);
    let out = clawlink(&dir, &args_with(&base, &["channels", "logout"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the gateway has no channel \"whatsapp\"")
            && stderr.contains("@openclaw/whatsapp"),
        "{stderr}"
    );
    let out = clawlink(
        &dir,
        &args_with(&base, &["channels", "logout", "--channel", "nosuch"]),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("clawlink channels status"), "{stderr}");
}
