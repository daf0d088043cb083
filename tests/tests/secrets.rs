//! Secrets never reach stdout, stderr or logs, even at trace level, over every transport.

use clawlink_tests::*;

#[test]
fn token_and_password_never_appear_in_any_output_at_trace_level() {
    let peers = Peers::get();
    let home = ssh_home("secrets");
    let token = peers.var("OCPEER_GATEWAY_TOKEN");
    let password = peers.var("OCPEER_PW_GATEWAY_PASSWORD");
    let token_file = secret_file(&home, "token", token).display().to_string();
    let password_file = secret_file(&home, "password", password)
        .display()
        .to_string();
    let ssh = ssh_args("claw");
    let ssh: Vec<&str> = ssh.iter().map(String::as_str).collect();
    let mut runs: Vec<Vec<&str>> = vec![
        vec![
            "-vvv",
            "--url",
            peers.gateway_url(),
            "--token-file",
            &token_file,
            "status",
        ],
        vec![
            "-vvv",
            "--url",
            peers.gateway_url(),
            "--token-file",
            &token_file,
            "--json",
            "call",
            "health",
        ],
        vec![
            "-vvv",
            "--url",
            peers.password_gateway_url(),
            "--password-file",
            &password_file,
            "status",
        ],
        vec![
            "-vvv",
            "--log-format",
            "json",
            "--url",
            peers.gateway_url(),
            "--token-file",
            &token_file,
            "status",
        ],
        vec![
            "-vvv",
            "--url",
            peers.gateway_url(),
            "--token-file",
            &token_file,
            "config",
            "show",
        ],
        vec![
            "-vvv",
            "--url",
            peers.gateway_url(),
            "--token-file",
            &token_file,
            "--json",
            "config",
            "show",
        ],
    ];
    let mut over_ssh = ssh.clone();
    over_ssh.extend(["-vvv", "--token-file", &token_file, "test"]);
    runs.push(over_ssh);
    // Failures are where secrets tend to leak into messages.
    let wrong = secret_file(&home, "wrong", "wrong-secret-value")
        .display()
        .to_string();
    runs.push(vec![
        "-vvv",
        "--url",
        peers.gateway_url(),
        "--token-file",
        &wrong,
        "status",
    ]);
    runs.push(vec![
        "-vvv",
        "--url",
        peers.password_gateway_url(),
        "--password-file",
        &wrong,
        "status",
    ]);
    for args in &runs {
        let out = clawlink_with_env(&home, args, &[("RUST_LOG", "trace")]);
        let (stdout, stderr) = text(&out);
        // Every connecting command logs plenty at trace; config show connects nowhere.
        if !args.contains(&"config") {
            assert!(
                stderr.len() > 200,
                "trace output expected for {args:?}: {stderr}"
            );
        }
        for secret in [token, password, "wrong-secret-value"] {
            assert!(!stdout.contains(secret), "secret in stdout of {args:?}");
            assert!(!stderr.contains(secret), "secret in stderr of {args:?}");
        }
    }
    // Environment-provided secrets are masked in config show too.
    let out = clawlink_with_env(
        &home,
        &["--url", peers.gateway_url(), "config", "show"],
        &[("CLAWLINK_TOKEN", token)],
    );
    let (stdout, _) = text(&out);
    assert!(stdout.contains("***") && !stdout.contains(token));
}

/// A module-specific RUST_LOG directive is more specific than any cap added to the same
/// filter, so the cap on the crates that log whole frames must hold on its own: neither the
/// shared token in the `connect` frame nor the device token in hello-ok may reach stderr.
#[test]
fn module_specific_log_directives_cannot_lift_the_frame_logging_cap() {
    let peers = Peers::get();
    let home = ssh_home("secrets-module-directives");
    let token = peers.var("OCPEER_GATEWAY_TOKEN");
    let token_file = secret_file(&home, "token", token).display().to_string();
    let direct = [
        "--url",
        peers.gateway_url(),
        "--token-file",
        &token_file,
        "status",
    ];
    let ssh = ssh_args("claw");
    let over_ssh = args_with(&ssh, &["--token-file", &token_file, "status"]);
    let runs: [(&[&str], &str); 3] = [
        (&direct, "tungstenite::protocol=trace"),
        (
            &direct,
            "clawlink=trace,tungstenite::protocol::frame=trace,tokio_tungstenite::compat=trace",
        ),
        (
            &over_ssh,
            "clawlink=trace,russh::client=trace,russh::channels=trace",
        ),
    ];
    for (args, filter) in runs {
        let out = clawlink_with_env(&home, args, &[("RUST_LOG", filter)]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stderr}");
        // The device tokens the gateway issued in hello-ok, as clawlink stored them.
        let stored: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(home.join("data/device-tokens.json")).unwrap(),
        )
        .unwrap();
        let device_tokens: Vec<&str> = stored
            .as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(!device_tokens.is_empty(), "no device token stored");
        for secret in std::iter::once(token).chain(device_tokens) {
            assert!(
                !stdout.contains(secret),
                "secret in stdout with RUST_LOG={filter}"
            );
            assert!(
                !stderr.contains(secret),
                "secret in stderr with RUST_LOG={filter}"
            );
        }
    }
}

/// A data directory another local user owns (e.g. pointed at by a shared
/// CLAWLINK_DATA_DIR): its owner could read or swap the device key and tokens, so clawlink
/// refuses it before writing anything there.
#[test]
fn a_data_directory_of_another_local_user_is_refused() {
    let peers = Peers::get();
    let home = scratch_dir("secrets-foreign-data-dir");
    let token_file = secret_file(&home, "token", peers.var("OCPEER_GATEWAY_TOKEN"))
        .display()
        .to_string();
    let shared = std::env::temp_dir().join(format!("clawlink-foreign-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&shared);
    let made = std::process::Command::new("setpriv")
        .args([
            "--reuid=noclaw",
            "--regid=noclaw",
            "--clear-groups",
            "mkdir",
            "-m",
            "0755",
        ])
        .arg(&shared)
        .status()
        .unwrap();
    assert!(
        made.success(),
        "noclaw could not create {}",
        shared.display()
    );
    let out = clawlink_with_env(
        &home,
        &[
            "--url",
            peers.gateway_url(),
            "--token-file",
            &token_file,
            "status",
        ],
        &[("CLAWLINK_DATA_DIR", shared.to_str().unwrap())],
    );
    let (_, stderr) = text(&out);
    let written: Vec<_> = std::fs::read_dir(&shared).unwrap().flatten().collect();
    let _ = std::fs::remove_dir_all(&shared);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("belongs to another user"), "{stderr}");
    assert!(stderr.contains("CLAWLINK_DATA_DIR"), "{stderr}");
    assert!(written.is_empty(), "clawlink wrote into it: {written:?}");
}
