//! `clawlink auth set` with a real Secret Service (GNOME Keyring on a private D-Bus session bus), then a real gateway connection that takes its token from there.

use std::process::Command;

use clawlink_tests::*;

#[test]
fn a_token_stored_with_auth_set_connects_without_any_file_or_variable() {
    let peers = Peers::get();
    let home = scratch_dir("keyring");
    std::fs::create_dir_all(home.join(".local/share/keyrings")).unwrap();
    // One private session bus with an unlocked keyring; the token travels by environment
    // variable into the pipe, never through argv.
    let script = r#"
        printf 'test-keyring-password' | gnome-keyring-daemon --unlock --components=secrets --daemonize >/dev/null 2>&1 || exit 90
        printf '%s\n' "$GATEWAY_TOKEN" | "$CLAWLINK" auth set || exit 91
        "$CLAWLINK" auth status || exit 92
        "$CLAWLINK" --url "$GATEWAY_URL" --json status || exit 93
        "$CLAWLINK" --url "$GATEWAY_URL" config show || exit 94
        "$CLAWLINK" auth clear || exit 95
        # A fresh data dir (no device token from the first connection): no secret left.
        CLAWLINK_DATA_DIR="$HOME/data2" "$CLAWLINK" --url "$GATEWAY_URL" status && exit 96
        exit 0
    "#;
    let out = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", script])
        .current_dir(&home)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("CLAWLINK_DATA_DIR", home.join("data"))
        .env("CLAWLINK", clawlink_bin())
        .env("GATEWAY_URL", peers.gateway_url())
        .env("GATEWAY_TOKEN", peers.var("OCPEER_GATEWAY_TOKEN"))
        .output()
        .expect("dbus-run-session (Debian package dbus) must be installed by `cargo xtask peer install`");
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("stored the gateway token for profile default in the OS keyring"),
        "{stdout}"
    );
    assert!(
        stdout.contains("token     OS keyring (clawlink, default/token)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""server":{"#) && stdout.contains(r#""method":"token""#),
        "{stdout}"
    );
    assert!(stdout.contains("= ***    # OS keyring"), "{stdout}");
    assert!(
        !stdout.contains(peers.var("OCPEER_GATEWAY_TOKEN")),
        "the token leaked"
    );
    assert!(
        !stderr.contains(peers.var("OCPEER_GATEWAY_TOKEN")),
        "the token leaked"
    );
    // After `auth clear` the last status fails for want of a token.
    assert!(
        stderr.contains("AUTH_TOKEN_MISSING") || stderr.contains("token missing"),
        "{stderr}"
    );
}

#[test]
fn auth_set_without_a_keyring_says_so_before_asking_for_the_secret() {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = scratch_dir("keyring-missing");
    // No session bus at all (clawlink_command removes it), and standard input kept open: a
    // clawlink that reads the secret first would wait here for it.
    let mut child = clawlink_command(&dir)
        .args(["auth", "set"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin_held_open = child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = status.expect("auth set waited for a secret it could not store");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("keyring is not available"), "{stderr}");
}
