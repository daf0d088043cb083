//! `wss://` against real gateways: the gateway's own self-signed certificate (`gateway.tls.enabled`), and one signed by a private CA.

use std::path::Path;
use std::process::Command;

use clawlink_tests::*;
use serde_json::Value;

/// SHA-256 fingerprints of a PEM certificate as openssl computes them: (leaf, spki), lowercase hex.
fn openssl_fingerprints(cert: &str) -> (String, String) {
    let out = Command::new("openssl")
        .args(["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let leaf = text
        .split('=')
        .nth(1)
        .unwrap()
        .trim()
        .replace(':', "")
        .to_lowercase();
    let spki = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {cert} -noout -pubkey | openssl pkey -pubin -outform der | sha256sum"
        ))
        .output()
        .unwrap();
    let spki = String::from_utf8_lossy(&spki.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    (leaf, spki)
}

fn setup(name: &str) -> (std::path::PathBuf, String) {
    let dir = scratch_dir(name);
    let token = secret_file(&dir, "token", Peers::get().var("OCPEER_GATEWAY_TOKEN"))
        .display()
        .to_string();
    (dir, token)
}

fn write_config(dir: &Path, tls_table: &str) -> String {
    let file = dir.join("clawlink.toml");
    std::fs::write(
        &file,
        format!("[default.transports.direct_ws.tls]\n{tls_table}\n"),
    )
    .unwrap();
    file.display().to_string()
}

#[test]
fn a_self_signed_gateway_is_refused_without_a_pin_and_the_message_shows_its_fingerprints() {
    let peers = Peers::get();
    let (dir, token) = setup("tls-refused");
    let (leaf, spki) = openssl_fingerprints(peers.var("OCPEER_TLS_CERT"));
    let out = clawlink(
        &dir,
        &[
            "--url",
            peers.var("OCPEER_TLS_GATEWAY_URL"),
            "--token-file",
            &token,
            "status",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert!(stderr.starts_with("clawlink: tls: "), "{stderr}");
    assert!(stderr.contains("not trusted"), "{stderr}");
    assert!(stderr.contains(&format!("leaf sha256:{leaf}")), "{stderr}");
    assert!(stderr.contains(&format!("spki sha256:{spki}")), "{stderr}");
    assert!(
        stderr.contains("clawlink tls trust wss://127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn a_leaf_pin_in_any_accepted_format_connects() {
    let peers = Peers::get();
    let (dir, token) = setup("tls-leaf");
    let (leaf, _) = openssl_fingerprints(peers.var("OCPEER_TLS_CERT"));
    // openssl's own uppercase colon form with the sha256: prefix.
    let colons: Vec<String> = leaf
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    write_config(
        &dir,
        &format!("fingerprint = \"sha256:{}\"", colons.join(":")),
    );
    let out = clawlink(
        &dir,
        &[
            "--url",
            peers.var("OCPEER_TLS_GATEWAY_URL"),
            "--token-file",
            &token,
            "--json",
            "status",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["server"]["version"], "2026.9.6");
    assert!(status["gateway"]["url"]
        .as_str()
        .unwrap()
        .starts_with("wss://"));
}

#[test]
fn an_spki_pin_connects_and_a_wrong_pin_is_refused_with_both_fingerprints() {
    let peers = Peers::get();
    let (dir, token) = setup("tls-spki");
    let (leaf, spki) = openssl_fingerprints(peers.var("OCPEER_TLS_CERT"));
    let url = peers.var("OCPEER_TLS_GATEWAY_URL");
    write_config(&dir, &format!("spki_sha256 = \"{spki}\""));
    let out = clawlink(
        &dir,
        &["--url", url, "--token-file", &token, "call", "health"],
    );
    assert!(out.status.success(), "{}", text(&out).1);

    let wrong = "0".repeat(64);
    write_config(&dir, &format!("fingerprint = \"{wrong}\""));
    let out = clawlink(&dir, &["--url", url, "--token-file", &token, "status"]);
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("pin mismatch"), "{stderr}");
    assert!(
        stderr.contains(&format!("expected leaf sha256:{wrong}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("observed leaf sha256:{leaf}")),
        "{stderr}"
    );

    // A pin on plaintext ws:// is a configuration error (exit 2), before any connection.
    let out = clawlink(
        &dir,
        &[
            "--url",
            peers.gateway_url(),
            "--token-file",
            &token,
            "status",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("no certificate to check"),
        "{}",
        text(&out).1
    );
}

#[test]
fn tls_trust_pins_the_key_in_the_profile_and_then_connects() {
    let peers = Peers::get();
    let (dir, token) = setup("tls-trust");
    let (_, spki) = openssl_fingerprints(peers.var("OCPEER_TLS_CERT"));
    let config = dir.join("clawlink.toml");
    std::fs::write(&config, "# my profiles\n[default]\nmode = \"local\"\n").unwrap();
    let url = peers.var("OCPEER_TLS_GATEWAY_URL");
    let out = clawlink(&dir, &["--json", "tls", "trust", url]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "must not pin without --yes or a terminal"
    );
    let out = clawlink(&dir, &["--json", "tls", "trust", url, "--yes"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["spkiSha256"], spki.as_str());
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.starts_with("# my profiles"), "{written}");
    assert!(written.contains(&spki), "{written}");
    // No --url now: the profile holds the URL and the pin.
    let out = clawlink(&dir, &["--token-file", &token, "status"]);
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn tls_trust_never_changes_where_another_profile_connects() {
    let peers = Peers::get();
    let (dir, token) = setup("tls-trust-profiles");
    let config = dir.join("clawlink.toml");
    let original = "[default]\nmode = \"local\"\n\n[work]\nmode = \"remote\"\n\
                    [work.transports.ssh_tunnel]\ntarget = \"claw@127.0.0.1:28830\"\n";
    std::fs::write(&config, original).unwrap();
    let url = peers.var("OCPEER_TLS_GATEWAY_URL");
    // No --profile, and no profile connects there: ask which, write nothing.
    let out = clawlink(&dir, &["tls", "trust", url, "--yes"]);
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--profile NAME"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);

    // For [default], named: [work] still goes through SSH afterwards.
    let out = clawlink(
        &dir,
        &["--profile", "default", "tls", "trust", url, "--yes"],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let out = clawlink(&dir, &["--profile", "work", "--json", "config", "show"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["transport"], "ssh-tunnel", "{shown}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("mode = \"local\""), "{written}");
    let out = clawlink(&dir, &["--token-file", &token, "status"]);
    assert!(out.status.success(), "{}", text(&out).1);

    // A profile that selects SSH but carries its own direct-ws settings is warned about.
    std::fs::write(
        &config,
        format!("{original}[work.transports.direct_ws]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let out = clawlink(&dir, &["--profile", "work", "config", "check"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("config ok"), "{stdout}");
    assert!(
        stderr.contains("warning:") && stderr.contains("[work.transports.direct_ws]"),
        "{stderr}"
    );
}

#[test]
fn a_private_ca_file_is_enough_without_any_pin() {
    let peers = Peers::get();
    let (dir, token) = setup("tls-ca");
    let url = peers.var("OCPEER_TLSCA_GATEWAY_URL");
    let out = clawlink(&dir, &["--url", url, "--token-file", &token, "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("not trusted"), "{}", text(&out).1);
    write_config(
        &dir,
        &format!("ca_file = \"{}\"", peers.var("OCPEER_TLSCA_CA_CERT")),
    );
    let out = clawlink(
        &dir,
        &["--url", url, "--token-file", &token, "--json", "status"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["health"]["ok"], true);
}
