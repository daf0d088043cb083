//! The command line as a Unix tool: output piped into a reader that leaves early (`| head`), usage errors under `--json`, `--version`, targets pasted from an ssh command line.

use std::process::Stdio;

use clawlink_tests::*;

#[test]
fn a_reader_that_leaves_early_ends_the_listing_quietly() {
    let dir = scratch_dir("cli-sigpipe");
    let mut child = clawlink_command(&dir)
        .arg("features")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the first line is written.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            // 13 = SIGPIPE
            output.status.success() || output.status.signal() == Some(13),
            "{:?}: {stderr}",
            output.status
        );
    }
}

#[test]
fn usage_errors_under_json_print_the_json_error_object() {
    let dir = scratch_dir("cli-json-usage");
    for args in [
        &["--json", "frobnicate"][..],
        &["--json", "status", "--no-such-flag"],
        &["call", "--json"],
    ] {
        let out = clawlink(&dir, args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let error: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{args:?}: no JSON on stdout ({e}): {stdout:?}"));
        assert_eq!(error["ok"], false);
        assert_eq!(error["error"]["layer"], "config");
        assert!(
            error["error"]["message"].as_str().unwrap().len() > 5,
            "{error}"
        );
        assert!(error["error"]["fix"].is_string(), "{error}");
        // The human text still goes to stderr.
        assert!(stderr.contains("error:"), "{stderr}");
    }
    let out = clawlink(&dir, &["--json", "call"]);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("<METHOD>"),
        "{error}"
    );
}

#[test]
fn version_names_the_commit_the_protocol_and_the_plugins() {
    let dir = scratch_dir("cli-version");
    let out = clawlink(&dir, &["--version"]);
    let stdout = text(&out).0;
    assert!(out.status.success());
    let commit_line = stdout
        .lines()
        .find(|l| l.starts_with("commit:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // Built from a git checkout (as these tests always are): an abbreviated commit hash.
    // The binary may come from another checkout (CLAWLINK_BIN), so its value is not compared.
    let built = commit_line.trim_start_matches("commit:").trim();
    assert!(
        built.len() == 12 && built.chars().all(|c| c.is_ascii_hexdigit()),
        "{stdout}"
    );
    assert!(stdout.contains("protocol:   4"), "{stdout}");
    assert!(
        stdout.contains("transports: direct-ws, exec, ssh-tunnel"),
        "{stdout}"
    );
    assert!(
        stdout.contains("features:   health, notify, voicewake, webchat"),
        "{stdout}"
    );
    // -V stays one line.
    let out = clawlink(&dir, &["-V"]);
    assert_eq!(text(&out).0.lines().count(), 1, "{}", text(&out).0);
}

#[test]
fn a_target_pasted_from_an_ssh_command_line_is_a_config_error_that_offers_the_target() {
    let dir = scratch_dir("cli-ssh-target");
    for (args, meant) in [
        (
            &["ssh", "trust", "claw@host -p 22", "--json"][..],
            "claw@host:22",
        ),
        (
            &["--ssh", "ssh -p 28830 claw@host", "test", "--json"],
            "claw@host:28830",
        ),
    ] {
        let out = clawlink(&dir, args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        let error: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(error["error"]["layer"], "config", "{error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(meant),
            "{error}"
        );
    }
}
