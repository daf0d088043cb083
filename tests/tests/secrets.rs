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
