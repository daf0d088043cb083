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
    // The drop the user asked for is shown as such, not as a fault.
    let shown = agent.output("up.out");
    assert!(
        shown.contains("reconnecting (requested by clawlink reconnect)"),
        "{shown}"
    );
    assert!(!shown.contains("connection lost"), "{shown}");
    let logged = agent.output("up.err");
    assert!(!logged.contains("connection lost"), "{logged}");

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

/// Polls `done` every 50 ms for at most `limit`; whether it came true.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn up_piped_into_head_stops_cleanly_and_a_killed_agents_socket_is_replaced() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = scratch_dir("agent-pipe");
    let config = health_config(&dir, "");
    let args = direct_args(&dir, &config);
    let socket = dir.join("run/default.sock");

    // `clawlink up | head -2`: read two lines, then stop reading.
    let mut up = clawlink_tests::agent::agent_command(&dir, &[])
        .args(&args)
        .arg("up")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        lines.next().expect("a line from up").unwrap();
    }
    assert!(socket.exists(), "the agent serves its socket");
    drop(lines);
    let mut exit = None;
    assert!(
        eventually(Duration::from_secs(20), || {
            exit = up.try_wait().unwrap();
            exit.is_some()
        }),
        "the agent kept running after its reader went away"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut stderr).unwrap();
    let exit = exit.unwrap();
    assert!(exit.success(), "exit {exit:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!socket.exists(), "the control socket outlived the agent");

    // A SIGKILLed agent leaves its socket behind; the next `up` replaces it.
    let mut killed = RunningAgent::start(&dir, &args, &[]);
    killed.wait_for("connected", Duration::from_secs(30), |s| {
        s["connection"]["phase"] == "connected"
    });
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    assert!(socket.exists(), "SIGKILL leaves the socket file");
    let mut next = RunningAgent::start(&dir, &args, &[]);
    let status = next.wait_for("connected", Duration::from_secs(30), |s| {
        s["connection"]["phase"] == "connected"
    });
    assert_eq!(status["pid"], next.pid(), "{status:#}");
    assert!(next.terminate().success());
}

#[test]
fn an_agent_started_with_flags_answers_plain_status_and_health() {
    let dir = scratch_dir("agent-flags");
    let config = health_config(&dir, "");
    let args = direct_args(&dir, &config);
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    agent.wait_for("green", Duration::from_secs(30), is_green);
    let plain: Vec<String> = vec!["--config".into(), config.clone()];

    // No connection flags: the profile's agent answers, and says it is the one.
    let (out, err) = text(&run_beside(&dir, &plain, &[], &["--json", "status"]));
    let status: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(status["source"], "agent", "{status:#}");
    assert_eq!(status["pid"], agent.pid());
    let (out, _) = text(&run_beside(&dir, &plain, &[], &["status"]));
    assert!(
        out.contains(&format!("Agent     running (pid {}", agent.pid())),
        "{out}"
    );
    let health = run_beside(&dir, &plain, &[], &["--json", "health"]);
    let (out, err) = text(&health);
    // Exit 1 is a real answer too: the real gateway reports itself degraded while the
    // machine's CPU is saturated ("event loop degraded (cpu)"), which this test does not
    // control. What it checks is who answered.
    assert!(matches!(health.status.code(), Some(0 | 1)), "{out}\n{err}");
    let health: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(health["source"], "agent", "{health:#}");
    assert_eq!(health["agent"]["pid"], agent.pid());
    let (out, _) = text(&run_beside(&dir, &plain, &[], &["health"]));
    assert!(
        out.contains(&format!("answered by the agent (pid {}", agent.pid())),
        "{out}"
    );

    // Flags naming another gateway are obeyed: that is not the agent's.
    let elsewhere = run_beside(
        &dir,
        &plain,
        &[],
        &["--url", "ws://127.0.0.1:9", "--json", "status"],
    );
    let (out, err) = text(&elsewhere);
    assert!(!elsewhere.status.success(), "{out}\n{err}");
    assert!(!out.contains("\"source\":\"agent\""), "{out}");
    assert!(agent.terminate().success());
}

#[test]
fn up_says_when_its_forward_moves_to_another_port() {
    let dir = ssh_home("agent-port-taken");
    let config = health_config(&dir, "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut args = ssh_agent_args(&dir, &config);
    args.extend(["--local-port".into(), port.to_string()]);
    let mut agent = RunningAgent::start(&dir, &args, &[]);
    let status = agent.wait_for("green", Duration::from_secs(30), is_green);
    let fallback = &status["portFallbacks"][0];
    assert_eq!(fallback["purpose"], "gateway", "{status:#}");
    assert_eq!(fallback["preferredPort"], port);
    let moved = fallback["localPort"].as_u64().unwrap();
    assert_ne!(moved, u64::from(port));
    let url = format!("ws://127.0.0.1:{moved}");
    assert!(
        status["transport"]["localEndpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["url"] == url.as_str()),
        "{status:#}"
    );
    let note = format!(
        "note: 127.0.0.1:{port} is already in use; the gateway forward uses port {moved} instead"
    );
    assert!(
        agent.output("up.out").contains(&note),
        "{}",
        agent.output("up.out")
    );
    // `status` shows the URL that works.
    let (out, _) = text(&agent.run(&["status"]));
    assert!(out.contains(&url), "{out}");
    assert!(agent.terminate().success());
    drop(taken);
}

/// The harness's second local user, who plays the attacker.
const OTHER_USER: &str = "noclaw";

/// Runs `program args` as [`OTHER_USER`] (the tests run as root).
fn as_other_user(program: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        &format!("--reuid={OTHER_USER}"),
        &format!("--regid={OTHER_USER}"),
        "--clear-groups",
    ])
    .arg(program)
    .args(args);
    cmd
}

/// A scratch directory under /tmp (the sticky, world-writable place the fallback runtime
/// directory lives in) that both users can create entries in.
fn shared_tmp(name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new("/tmp").join(format!("clawlink-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// `clawlink --url ws://127.0.0.1:9 up` as the other user, with its control socket in
/// `runtime_dir`; waits until the socket is there.
fn other_users_agent(tmp: &Path, runtime_dir: &Path) -> std::process::Child {
    let home = tmp.join("other-home");
    let status = as_other_user(Path::new("/bin/mkdir"), &["-p", home.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let child = as_other_user(&clawlink_bin(), &["--url", "ws://127.0.0.1:9", "up"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env("CLAWLINK_DATA_DIR", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("CLAWLINK_RUNTIME_DIR", runtime_dir)
        .current_dir(&home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the other user's agent");
    let socket = runtime_dir.join("default.sock");
    assert!(
        eventually(Duration::from_secs(20), || socket.exists()),
        "the other user's agent made no socket at {}",
        socket.display()
    );
    child
}

fn assert_running_as_root() {
    let id = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "0",
        "this test plays two local users: run it as root (the harness does)"
    );
}

#[test]
fn a_runtime_directory_planted_by_another_user_is_neither_trusted_nor_blocking() {
    assert_running_as_root();
    let tmp = shared_tmp("planted");
    // The other user makes the victim's fallback directory first and serves a socket there.
    let planted = tmp.join("clawlink-0");
    let mut other = other_users_agent(&tmp, &planted);

    let dir = scratch_dir("agent-planted");
    let config = health_config(&dir, "");
    let args = direct_args(&dir, &config);
    let victim = |command: &[&str]| {
        clawlink_command(&dir)
            .env("TMPDIR", &tmp)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("CLAWLINK_RUNTIME_DIR")
            .args(&args)
            .args(command)
            .output()
            .unwrap()
    };
    // The clients do not talk to it, and say why and what to do.
    let reconnect = victim(&["reconnect"]);
    let (_, err) = text(&reconnect);
    assert_eq!(reconnect.status.code(), Some(1), "{err}");
    assert!(err.contains("no agent is running"), "{err}");
    assert!(
        err.contains(&format!("not using {}", planted.display()))
            && err.contains(&format!("({OTHER_USER}), not to you"))
            && err.contains("XDG_RUNTIME_DIR"),
        "{err}"
    );
    let (out, err) = text(&victim(&["--json", "status"]));
    let status: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(status["source"], "one-shot", "{status:#}");

    // `up` is not blocked: it runs in a private place the clients find too.
    let mut up = clawlink_command(&dir)
        .env("TMPDIR", &tmp)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("CLAWLINK_RUNTIME_DIR")
        .args(&args)
        .arg("up")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut answered = Value::Null;
    let found = eventually(Duration::from_secs(30), || {
        let out = victim(&["--json", "status"]);
        answered = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        answered["source"] == "agent"
    });
    assert!(found, "the victim's own agent was not found: {answered:#}");
    assert_eq!(answered["pid"], up.id());
    assert!(
        answered["socket"]
            .as_str()
            .unwrap()
            .starts_with(dir.join("data").to_str().unwrap()),
        "{answered:#}"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status();
    let _ = up.wait();
    let _ = other.kill();
    let _ = other.wait();
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_socket_served_by_another_user_is_refused_by_its_peer_uid() {
    use std::os::unix::fs::PermissionsExt;
    assert_running_as_root();
    let tmp = shared_tmp("peer-uid");
    let theirs = tmp.join("other-run");
    let mut other = other_users_agent(&tmp, &theirs);
    // The victim's own private runtime directory, holding a socket file that is the
    // victim's by owner but served by the other user's process (moved and chowned in).
    let ours = tmp.join("victim-run");
    std::fs::create_dir(&ours).unwrap();
    std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = ours.join("default.sock");
    std::fs::rename(theirs.join("default.sock"), &socket).unwrap();
    std::os::unix::fs::chown(&socket, Some(0), Some(0)).unwrap();

    let dir = scratch_dir("agent-peer-uid");
    let config = health_config(&dir, "");
    let args = direct_args(&dir, &config);
    let runtime = ours.display().to_string();
    let env = [("CLAWLINK_RUNTIME_DIR".to_owned(), runtime)];
    let reconnect = run_beside(&dir, &args, &env, &["reconnect"]);
    let (_, err) = text(&reconnect);
    assert_eq!(reconnect.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("({OTHER_USER}), not by you")) && err.contains("nothing was sent"),
        "{err}"
    );
    // `up` replaces it (the directory is the victim's) instead of being blocked.
    let mut agent = RunningAgent::start(&dir, &args, &env);
    let status = agent.wait_for("connected", Duration::from_secs(30), |s| {
        s["connection"]["phase"] == "connected"
    });
    assert_eq!(status["pid"], agent.pid());
    assert!(agent.terminate().success());
    let _ = other.kill();
    let _ = other.wait();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `text` without its ANSI escape sequences (CSI `ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn the_status_line_fits_a_narrow_terminal_and_never_shares_a_row_with_a_log_line() {
    const COLUMNS: usize = 60;
    let dir = scratch_dir("agent-tty");
    let config = health_config(&dir, "");
    let args = direct_args(&dir, &config);
    let transcript = dir.join("pty.out");
    // `script` gives the agent a terminal of COLUMNS columns; -v makes it log while it runs.
    let shell = format!(
        "stty cols {COLUMNS}; exec {} {} -v up",
        clawlink_bin().display(),
        args.join(" ")
    );
    // The agent's isolated environment, for `script` to pass on.
    let isolated = clawlink_tests::agent::agent_command(&dir, &[]);
    let mut script = std::process::Command::new("script");
    for (key, value) in isolated.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    let mut script = script
        .current_dir(&dir)
        .args(["-qfec", &shell])
        .arg(&transcript)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_of = |command: &[&str]| run_beside(&dir, &args, &[], command);
    let mut status = Value::Null;
    assert!(
        eventually(Duration::from_secs(30), || {
            status = serde_json::from_slice(&status_of(&["--json", "status"]).stdout)
                .unwrap_or(Value::Null);
            is_green(&status)
        }),
        "not green: {status:#}"
    );
    assert!(status_of(&["reconnect"]).status.success());
    assert!(eventually(Duration::from_secs(30), || {
        serde_json::from_slice::<Value>(&status_of(&["--json", "status"]).stdout).is_ok_and(|s| {
            is_green(&s) && s["connection"]["generation"] != status["connection"]["generation"]
        })
    }));
    let pid = status["pid"].as_u64().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        eventually(Duration::from_secs(20), || script
            .try_wait()
            .unwrap()
            .is_some()),
        "the agent under script did not stop"
    );

    let shown = String::from_utf8_lossy(&std::fs::read(&transcript).unwrap()).into_owned();
    let mut frames = 0;
    for row in shown.split('\n') {
        for segment in row.split("\r\x1b[2K") {
            let plain = strip_ansi(segment);
            let plain = plain.trim_end_matches('\r');
            if !plain.contains(" · ws://") {
                continue;
            }
            frames += 1;
            assert!(
                plain.chars().count() < COLUMNS,
                "a status frame wider than the terminal ({} columns): {plain:?}",
                plain.chars().count()
            );
            assert!(
                !plain.contains(" INFO ") && !plain.contains(" WARN "),
                "a log line shares a row with the status line: {plain:?}"
            );
        }
    }
    assert!(frames > 0, "no status frame in the transcript:\n{shown}");
    assert!(
        shown.contains("reconnecting (requested by clawlink reconnect)"),
        "{shown}"
    );
}
