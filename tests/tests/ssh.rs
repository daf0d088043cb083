//! The ssh-tunnel transport and `clawlink test` / `tunnel` / `ssh trust` against a real OpenSSH sshd and the real gateway behind it.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawlink_core::gateway::GatewayClient;
use clawlink_core::prompt::NonInteractive;
use clawlink_core::transport::{Transport, TransportErrorKind};
use clawlink_tests::*;
use clawlink_transport_ssh::{SshSettings, SshTunnel};
use serde_json::{json, Value};

/// The JSON report of a `clawlink … --json test` that must have passed (the output is
/// shown when it did not).
fn passing_report(out: &std::process::Output) -> Value {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn test_is_green_for_a_user_with_the_cli() {
    let home = ssh_home("ssh-green");
    let token = token_file(&home);
    let base = ssh_args("claw");
    let out = clawlink_in_home(
        &home,
        &args_with(&base, &["--token-file", &token, "--json", "test"]),
    );
    let report = passing_report(&out);
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["ssh", "remote-cli", "gateway"]);
    let ssh = &report["steps"][0];
    assert!(
        ssh["data"]["auth"]
            .as_str()
            .unwrap()
            .contains("client_ed25519"),
        "{ssh}"
    );
    assert!(ssh["data"]["hostKey"]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    assert!(report["steps"][1]["detail"]
        .as_str()
        .unwrap()
        .contains("2026.9.6"));
    assert_eq!(report["steps"][2]["data"]["auth"], "token");

    // Human output: one line per step.
    let out = clawlink_in_home(&home, &args_with(&base, &["--token-file", &token, "test"]));
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    for step in ["ssh", "remote-cli", "gateway"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(step) && l.contains(" ok ")),
            "{stdout}"
        );
    }
}

#[test]
fn exit_127_names_the_missing_cli_and_does_not_hide_a_healthy_gateway() {
    let home = ssh_home("ssh-noclaw");
    let token = token_file(&home);
    let base = ssh_args("noclaw");
    let out = clawlink_in_home(
        &home,
        &args_with(&base, &["--token-file", &token, "--json", "test"]),
    );
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli = &report["steps"][1];
    assert_eq!(cli["ok"], false);
    let detail = cli["detail"].as_str().unwrap();
    assert!(
        detail.contains("exit 127") && detail.contains("not on PATH for non-interactive shells"),
        "{detail}"
    );
    let fix = cli["fix"].as_str().unwrap();
    assert!(
        fix.contains("/usr/local/bin") && fix.contains("cli_path"),
        "{fix}"
    );
    assert_eq!(
        report["steps"][2]["ok"], true,
        "the gateway step must still run: {report}"
    );

    // A missing project root is its own failure.
    let out = clawlink_in_home(
        &home,
        &args_with(
            &ssh_args("claw"),
            &[
                "--token-file",
                &token,
                "--project-root",
                "/no/such/dir",
                "--json",
                "test",
            ],
        ),
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let detail = report["steps"][1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("project root not found") && detail.contains("/no/such/dir"),
        "{detail}"
    );
}

#[test]
fn unknown_host_is_refused_with_its_fingerprint_then_trusted() {
    let home = scratch_dir("ssh-unknown");
    let token = token_file(&home);
    let base = ssh_args("claw");
    let out = clawlink_in_home(&home, &args_with(&base, &["--token-file", &token, "test"]));
    assert_eq!(out.status.code(), Some(1));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("is not a known host") && stdout.contains("SHA256:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("clawlink ssh trust claw@127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("ssh-keygen -R"),
        "wrong advice for a first-time host: {stdout}"
    );

    // Without a terminal and without --yes, trust refuses to guess.
    let out = clawlink_in_home(&home, &args_with(&base, &["ssh", "trust"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--yes"));

    let out = clawlink_in_home(
        &home,
        &args_with(&base, &["--json", "ssh", "trust", "--yes"]),
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let trust: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trust["status"], "added");
    let expected_fp = ssh_keygen_fingerprint(Peers::get().var("OCPEER_SSH_HOST_KEY_PUB"));
    assert_eq!(trust["fingerprint"], expected_fp.as_str());
    let known = std::fs::read_to_string(home.join(".ssh/known_hosts")).unwrap();
    assert!(
        known.starts_with(&format!(
            "[127.0.0.1]:{} ssh-ed25519 ",
            Peers::get().var("OCPEER_SSH_PORT")
        )),
        "{known}"
    );
    // OpenSSH itself accepts what we wrote.
    let status = Command::new("ssh-keygen")
        .args([
            "-F",
            &format!("[127.0.0.1]:{}", Peers::get().var("OCPEER_SSH_PORT")),
            "-f",
        ])
        .arg(home.join(".ssh/known_hosts"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let out = clawlink_in_home(&home, &args_with(&base, &["--token-file", &token, "test"]));
    assert!(out.status.success(), "{}", text(&out).0);
    let out = clawlink_in_home(
        &home,
        &args_with(&base, &["--json", "ssh", "trust", "--yes"]),
    );
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["status"], "already-trusted");
}

fn ssh_keygen_fingerprint(pub_file: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-lf", pub_file])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

#[test]
fn a_changed_host_key_is_refused_loudly_with_file_and_line() {
    let home = scratch_dir("ssh-changed");
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    // Another ed25519 key recorded for the same [host]:port, on line 2.
    let other = home.join("other_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let port = Peers::get().var("OCPEER_SSH_PORT");
    std::fs::write(
        ssh.join("known_hosts"),
        format!("# managed\n[127.0.0.1]:{port} {}\n", key.join(" ")),
    )
    .unwrap();
    let token = token_file(&home);
    let out = clawlink_in_home(
        &home,
        &args_with(&ssh_args("claw"), &["--token-file", &token, "test"]),
    );
    assert_eq!(out.status.code(), Some(1));
    let (stdout, _) = text(&out);
    assert!(stdout.contains("HOST KEY CHANGED"), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:2", ssh.join("known_hosts").display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&ssh_keygen_fingerprint(
            other.with_extension("pub").to_str().unwrap()
        )),
        "{stdout}"
    );
    // trust does not paper over a changed key.
    let out = clawlink_in_home(
        &home,
        &args_with(&ssh_args("claw"), &["ssh", "trust", "--yes"]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("HOST KEY CHANGED"));
}

#[test]
fn an_ssh_config_alias_supplies_hostname_port_user_and_identity() {
    let home = ssh_home("ssh-alias");
    let peers = Peers::get();
    std::fs::write(
        home.join(".ssh/config"),
        format!(
            "Host gateway-box\n  HostName {}\n  Port {}\n  User claw\n  IdentityFile {}\n  IdentitiesOnly yes\n\
             # What ssh would act on but the in-process client does not: `test` lists them all.\n\
             ForwardAgent yes\n  Compression yes\n  LocalForward 9999 127.0.0.1:1\n  Ciphers aes256-ctr\n  RemoteCommand echo hi\n",
            peers.var("OCPEER_SSH_HOST"),
            peers.var("OCPEER_SSH_PORT"),
            peers.var("OCPEER_SSH_KEY")
        ),
    )
    .unwrap();
    let token = token_file(&home);
    let out = clawlink_in_home(
        &home,
        &[
            "--ssh",
            "gateway-box",
            "--remote-port",
            peers.var("OCPEER_GATEWAY_PORT"),
            "--token-file",
            &token,
            "--json",
            "test",
        ],
    );
    let report = passing_report(&out);
    assert_eq!(
        report["steps"][0]["data"]["endpoint"],
        format!("claw@127.0.0.1:{}", peers.var("OCPEER_SSH_PORT"))
    );
    let ignored = [
        "ciphers",
        "compression",
        "forwardagent",
        "localforward",
        "remotecommand",
    ];
    assert_eq!(
        report["ignoredSshConfig"]["keywords"],
        json!(ignored),
        "{report}"
    );
    let out = clawlink_in_home(
        &home,
        &[
            "--ssh",
            "gateway-box",
            "--remote-port",
            peers.var("OCPEER_GATEWAY_PORT"),
            "--token-file",
            &token,
            "test",
        ],
    );
    let (stdout, _) = text(&out);
    let note = stdout
        .lines()
        .find(|l| l.starts_with("note: ~/.ssh/config"))
        .unwrap_or_else(|| panic!("no note about ignored keywords: {stdout}"));
    for keyword in ignored {
        assert!(note.contains(keyword), "{keyword}: {note}");
    }
    assert!(note.contains("backend = \"openssh\""), "{note}");
}

#[test]
fn injection_looking_targets_are_refused_before_any_connection() {
    let home = scratch_dir("ssh-inject");
    for (target, needle) in [
        ("-oProxyCommand=touch /tmp/pwned", "cannot contain spaces"),
        ("-oProxyCommand=id", "cannot start with '-'"),
        ("claw@host;id", ""),
        ("claw@host -p 22", "cannot contain spaces"),
        ("claw@host:99999", "1 to 65535"),
    ] {
        let flag = format!("--ssh={target}");
        let out = clawlink_in_home(&home, &[&flag, "config", "check"]);
        let (_, stderr) = text(&out);
        if needle.is_empty() {
            // A semicolon is a legal alias character for ssh_config; it must reach no shell.
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{target}: {stderr}");
        assert!(stderr.contains(needle), "{target}: {stderr}");
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());
    // The same refusal when the target comes from a config file.
    std::fs::write(
        home.join("clawlink.toml"),
        "[default]\nmode = \"remote\"\n[default.transports.ssh_tunnel]\ntarget = \"-oProxyCommand=id\"\n",
    )
    .unwrap();
    let out = clawlink_in_home(&home, &["test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("cannot start with '-'"),
        "{}",
        text(&out).1
    );
}

#[tokio::test]
async fn the_gateway_client_runs_over_the_ssh_transport() {
    let home = ssh_home("ssh-lib");
    let peers = Peers::get();
    let settings: SshSettings = serde_json::from_value(json!({
        "target": ssh_target("claw"),
        "identity_file": peers.var("OCPEER_SSH_KEY"),
        "remote_port": peers.var("OCPEER_GATEWAY_PORT").parse::<u16>().unwrap(),
        "known_hosts_file": home.join(".ssh/known_hosts"),
    }))
    .unwrap();
    let tunnel = Arc::new(SshTunnel::new(settings, Arc::new(NonInteractive)).unwrap());
    let (options, _) = operator(token_credentials());
    let client = GatewayClient::connect(tunnel.clone(), options)
        .await
        .expect("handshake through SSH");
    // Through a tunnel the gateway sees loopback: the device was paired silently.
    assert!(client.hello().unwrap().auth.device_token.is_some());
    let health = client.request("health", Value::Null).await.unwrap();
    assert_eq!(health["ok"], true);
    // Several sockets share one SSH session.
    let (options2, _) = operator(token_credentials());
    let second = GatewayClient::connect(tunnel.clone(), options2)
        .await
        .unwrap();
    assert_eq!(
        second.request("health", Value::Null).await.unwrap()["ok"],
        true
    );
    let out = tunnel
        .run_cli(&["--version"], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0));
    client.shutdown().await;
    second.shutdown().await;
    tunnel.close().await;

    // Nothing listens on the remote port: a Tunnel error that says so.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let settings: SshSettings = serde_json::from_value(json!({
        "target": ssh_target("claw"),
        "identity_file": peers.var("OCPEER_SSH_KEY"),
        "remote_port": closed_port,
        "known_hosts_file": home.join(".ssh/known_hosts"),
    }))
    .unwrap();
    let tunnel = SshTunnel::new(settings, Arc::new(NonInteractive)).unwrap();
    let err = tunnel.connect().await.unwrap_err();
    assert_eq!(err.kind, TransportErrorKind::Tunnel);
    assert!(err.message.contains("nothing listens there"), "{err:?}");
    tunnel.close().await;
}

#[test]
fn a_refused_key_is_an_auth_error_that_lists_what_was_tried() {
    let home = ssh_home("ssh-refused");
    let stranger = home.join("stranger");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(status.success());
    let peers = Peers::get();
    let out = clawlink_in_home(
        &home,
        &[
            "--ssh",
            &ssh_target("claw"),
            "--identity",
            stranger.to_str().unwrap(),
            "--remote-port",
            peers.var("OCPEER_GATEWAY_PORT"),
            "test",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("SSH authentication as claw") && stdout.contains("(refused)"),
        "{stdout}"
    );
    assert!(stdout.contains("authorized_keys"), "{stdout}");

    // An encrypted key without a passphrase is its own error, naming the non-interactive fix.
    let locked = home.join("locked");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "correct horse", "-f"])
        .arg(&locked)
        .status()
        .unwrap();
    assert!(status.success());
    let out = clawlink_in_home(
        &home,
        &[
            "--ssh",
            &ssh_target("claw"),
            "--identity",
            locked.to_str().unwrap(),
            "test",
        ],
    );
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("is encrypted") && stdout.contains("CLAWLINK_SSH_PASSPHRASE_FILE"),
        "{stdout}"
    );
}

#[test]
fn tunnel_serves_http_and_websocket_and_leaves_nothing_behind() {
    check_tunnel("russh");
}

#[test]
fn the_openssh_backend_passes_the_same_tunnel_test() {
    check_tunnel("openssh");
}

#[test]
fn the_openssh_backend_runs_clawlink_test_green() {
    let home = ssh_home("ssh-openssh-test");
    let token = token_file(&home);
    let out = clawlink_with_env(
        &home,
        &args_with(
            &ssh_args("claw"),
            &["--token-file", &token, "--json", "test"],
        ),
        &[("CLAWLINK_TRANSPORTS__SSH_TUNNEL__BACKEND", "openssh")],
    );
    let report = passing_report(&out);
    assert_eq!(report["steps"][0]["data"]["backend"], "openssh");
    assert_eq!(report["steps"][2]["ok"], true);
}

fn check_tunnel(backend: &str) {
    let home = ssh_home(&format!("ssh-tunnel-{backend}"));
    let token = token_file(&home);
    let base = ssh_args("claw");
    // Occupy a port so that the preferred one is taken and the fallback is exercised.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port().to_string();
    let mut child = Command::new(clawlink_bin())
        .args(args_with(
            &base,
            &["--local-port", &taken, "--json", "tunnel"],
        ))
        .current_dir(&home)
        .env("HOME", &home)
        .env("CLAWLINK_DATA_DIR", home.join("data"))
        .env("CLAWLINK_TRANSPORTS__SSH_TUNNEL__BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    while !line.ends_with('\n') && started.elapsed() < Duration::from_secs(30) {
        if stdout.read(&mut byte).unwrap() == 0 {
            break;
        }
        line.push(byte[0] as char);
    }
    let report: Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let forwards = report["forwards"].as_array().unwrap();
    let gateway = &forwards[0];
    assert_eq!(gateway["purpose"], "gateway");
    assert!(
        gateway["fallback"]
            .as_str()
            .unwrap()
            .contains("already in use"),
        "{gateway}"
    );
    let port = gateway["localPort"].as_u64().unwrap() as u16;
    assert_ne!(port.to_string(), taken);
    assert_eq!(forwards[1]["purpose"], "widget sandbox");
    assert_eq!(forwards[1]["localPort"].as_u64().unwrap() as u16, port + 1);
    let listen: Vec<&str> = gateway["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        listen
            .iter()
            .all(|a| a.starts_with("127.0.0.1:") || a.starts_with("[::1]:")),
        "{listen:?}"
    );

    // The openssh backend's ssh listens only on Unix sockets in a private directory that
    // clawlink relays to; its argv names no TCP port another user could bind first.
    let children = ssh_children(child.id());
    if backend == "openssh" {
        assert_eq!(children.len(), 1, "{children:?}");
        let sockets = unix_socket_forwards(&children[0].1);
        assert_eq!(sockets.len(), 2, "{children:?}");
        use std::os::unix::fs::PermissionsExt;
        let dir = std::path::Path::new(&sockets[0]).parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }

    // GET /health through the forward, on both loopback families.
    for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(
            body.starts_with("HTTP/1.1 200") && body.contains(r#""status":"live""#),
            "{addr}: {body}"
        );
    }
    // A full WebSocket + protocol handshake through the forward (another program's view).
    let out = clawlink(
        &home,
        &[
            "--url",
            &format!("ws://127.0.0.1:{port}"),
            "--token-file",
            &token,
            "call",
            "health",
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["ok"], true);

    // SIGTERM: the process exits 0 and both listeners are gone.
    let pid = child.id() as i32;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "tunnel did not exit cleanly"
    );
    for p in [port, port + 1] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still open"
        );
    }
    // No ssh child survives (the openssh backend's), nor its socket directory.
    for (pid, argv) in children {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        assert!(
            !alive || cmdline(pid) != argv,
            "ssh child {pid} left behind"
        );
        for socket in unix_socket_forwards(&argv) {
            let dir = std::path::Path::new(&socket)
                .parent()
                .unwrap()
                .to_path_buf();
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }
    drop(squatter);
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn proxy_jump_runs_natively_through_a_jump_host() {
    let home = ssh_home("ssh-jump");
    let peers = Peers::get();
    let (host, port, key) = (
        peers.var("OCPEER_SSH_HOST"),
        peers.var("OCPEER_SSH_PORT"),
        peers.var("OCPEER_SSH_KEY"),
    );
    // The jump host and the target are the same sshd: the second SSH connection runs inside
    // a direct-tcpip channel of the first, with no ssh process anywhere.
    std::fs::write(
        home.join(".ssh/config"),
        format!(
            "Host inner\n  HostName {host}\n  Port {port}\n  User claw\n  IdentityFile {key}\n  ProxyJump bastion\n\
             Host bastion\n  HostName {host}\n  Port {port}\n  User claw\n  IdentityFile {key}\n"
        ),
    )
    .unwrap();
    let token = token_file(&home);
    let out = clawlink_in_home(
        &home,
        &[
            "--ssh",
            "inner",
            "--remote-port",
            peers.var("OCPEER_GATEWAY_PORT"),
            "--token-file",
            &token,
            "--json",
            "test",
        ],
    );
    let report = passing_report(&out);
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true),
        "{report}"
    );
    // sshd logged two logins for this test's key: the jump and the target.
    let log =
        std::fs::read_to_string(std::path::Path::new(peers.var("OCPEER_LOG_DIR")).join("sshd.log"))
            .unwrap();
    assert!(log.matches("Accepted publickey for claw").count() >= 2);
}

#[test]
fn an_ssh_agent_key_is_used_when_no_identity_is_set() {
    let home = ssh_home("ssh-agent");
    let peers = Peers::get();
    let socket = home.join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !socket.exists() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(peers.var("OCPEER_SSH_KEY"))
        .env("SSH_AUTH_SOCK", &socket)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    let token = token_file(&home);
    let target = ssh_target("claw");
    let out = clawlink_with_env(
        &home,
        &[
            "--ssh",
            &target,
            "--remote-port",
            peers.var("OCPEER_GATEWAY_PORT"),
            "--token-file",
            &token,
            "--json",
            "test",
        ],
        &[("SSH_AUTH_SOCK", socket.to_str().unwrap())],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    let report = passing_report(&out);
    let auth = report["steps"][0]["data"]["auth"].as_str().unwrap();
    assert!(auth.starts_with("ssh-agent key"), "{auth}");
}

/// The ssh children of process `pid` (the openssh backend's `ssh -N -L`), with their argv.
fn ssh_children(pid: u32) -> Vec<(u32, Vec<String>)> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string(), "-x", "ssh"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .map(|child| (child, cmdline(child)))
        .collect()
}

/// The `-L` forward specs of an ssh argv; panics when one is a TCP port (`[addr:]port:…`),
/// which another local user could bind before ssh does. Returns the Unix socket paths.
fn unix_socket_forwards(argv: &[String]) -> Vec<String> {
    let specs: Vec<&String> = argv
        .windows(2)
        .filter(|w| w[0] == "-L")
        .map(|w| &w[1])
        .collect();
    assert!(!specs.is_empty(), "no -L in {argv:?}");
    specs
        .into_iter()
        .map(|spec| {
            assert!(
                spec.starts_with('/'),
                "a TCP port handed to ssh -L: {spec} ({argv:?})"
            );
            spec.split(':').next().unwrap().to_owned()
        })
        .collect()
}

/// Another local user (`noclaw`) watches /proc for the victim's `ssh -L`, binds every TCP
/// port it names before ssh does, relays to the real gateway and reads the frames the victim
/// sends. With a Unix socket in a 0700 directory there is nothing to bind and nothing to open:
/// the `connect` frame with the token never reaches them, and the test still passes through
/// the socket.
#[test]
fn another_local_user_cannot_intercept_the_openssh_forward() {
    let peers = Peers::get();
    let home = ssh_home("ssh-openssh-attack");
    let token = token_file(&home);
    let mut attacker = Command::new("setpriv")
        .args(["--reuid=noclaw", "--regid=noclaw", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ssh-forward-interceptor"))
        .env("CLAWLINK_ATTACK_MARKER", home.display().to_string())
        .env(
            "CLAWLINK_ATTACK_UPSTREAM",
            format!("127.0.0.1:{}", peers.var("OCPEER_GATEWAY_PORT")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut victim = clawlink_command(&home);
    victim
        .args(args_with(
            &ssh_args("claw"),
            &["--token-file", &token, "--json", "test"],
        ))
        .env("CLAWLINK_TRANSPORTS__SSH_TUNNEL__BACKEND", "openssh")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Three tries: the race the attacker runs is won or lost per connection.
    for _ in 0..3 {
        let out = victim.output().unwrap();
        let report = passing_report(&out);
        assert_eq!(report["steps"][2]["ok"], true, "{report}");
    }
    let _ = attacker.kill();
    let _ = attacker.wait();
    let mut seen = String::new();
    attacker
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let token_value = peers.var("OCPEER_GATEWAY_TOKEN");
    assert!(
        !seen.contains(token_value),
        "the token reached the other user: {}",
        seen.replace(token_value, "<the gateway token>")
    );
    assert!(
        !seen.contains("bound "),
        "the attacker bound a forward port: {seen}"
    );
    // The attacker did watch: it saw the victim's ssh (and found no port in it).
    let argv_lines: Vec<&str> = seen.lines().filter(|l| l.starts_with("ssh ")).collect();
    assert!(!argv_lines.is_empty(), "the attacker never saw ssh: {seen}");
    for line in &argv_lines {
        let argv: Vec<String> = serde_json::from_str(&line[4..]).unwrap();
        for socket in unix_socket_forwards(&argv) {
            assert!(
                seen.contains(&format!("socket {socket} refused")),
                "the attacker could open {socket}: {seen}"
            );
        }
    }
}
