//! Configuration as a new user (and a second local user) meets it: whose config files are read, parse errors, one validation for every command.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use clawlink_tests::*;

/// Runs `sh -c script` as the harness's second, unprivileged local user, with `$CONTENT`.
fn as_noclaw(script: &str, dir: &Path, content: &str) {
    let status = Command::new("setpriv")
        .args([
            "--reuid=noclaw",
            "--regid=noclaw",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(dir)
        .env("CONTENT", content)
        .status()
        .expect("setpriv (util-linux) runs commands as the harness user noclaw");
    assert!(status.success(), "as noclaw: {script}");
}

const PLANTED: &str = "[default.transports.direct_ws]\nurl = \"ws://127.0.0.1:9\"\n";

#[test]
fn a_config_file_another_user_could_write_is_refused_with_the_reason_and_the_fix() {
    let dir = scratch_dir("config-trust");
    // A shared directory like /tmp: everyone may create files, the sticky bit protects them.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The second user plants ./clawlink.toml, pointing the transport at their own server.
    as_noclaw(
        "umask 022; printf '%s' \"$CONTENT\" > clawlink.toml",
        &shared,
        PLANTED,
    );
    let run = |cwd: &Path, args: &[&str]| {
        let mut cmd = clawlink_command(&dir);
        cmd.current_dir(cwd).args(args);
        cmd.output().unwrap()
    };
    for args in [&["config", "show"][..], &["status"], &["config", "check"]] {
        let out = run(&shared, args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(!stdout.contains("127.0.0.1:9"), "{stdout}");
        assert!(stderr.contains("owned by another user"), "{stderr}");
        assert!(stderr.contains("noclaw"), "{stderr}");
        assert!(stderr.contains("--config"), "the fix: {stderr}");
    }
    // Named with --config, the same file is refused for the same reason.
    let planted = shared.join("clawlink.toml");
    let out = run(
        &dir,
        &["--config", planted.to_str().unwrap(), "config", "show"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);

    // Our own file, but writable by others (as ssh says: bad permissions).
    let mine = dir.join("mine");
    std::fs::create_dir(&mine).unwrap();
    let file = mine.join("clawlink.toml");
    std::fs::write(&file, PLANTED).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run(&mine, &["config", "show"]);
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("0666"), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod go-w {}", file.display())),
        "{stderr}"
    );

    // The user's own config file is held to the same rule.
    let user_config = dir.join("config/clawlink/config.toml");
    std::fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    std::fs::write(&user_config, "[default]\nmode = \"local\"\n").unwrap();
    std::fs::set_permissions(&user_config, std::fs::Permissions::from_mode(0o620)).unwrap();
    let out = run(&dir, &["config", "show"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    std::fs::set_permissions(&user_config, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Properly owned and 0644: read as before.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&mine, &["config", "show"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ws://127.0.0.1:9"), "{stdout}");
}

#[test]
fn a_syntax_error_is_reported_with_file_line_and_column_even_with_a_profile() {
    let dir = scratch_dir("config-syntax");
    let user_config = dir.join("config/clawlink/config.toml");
    std::fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    // A trailing comma after a value.
    std::fs::write(
        &user_config,
        "[default]\nmode = \"local\"\n\n[work]\nmode = \"remote\",\n",
    )
    .unwrap();
    for args in [
        &["--profile", "work", "config", "show"][..],
        &["config", "show"],
    ] {
        let out = clawlink(&dir, args);
        let stderr = text(&out).1;
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(!stderr.contains("does not exist"), "{stderr}");
        assert!(
            stderr.contains(&user_config.display().to_string()),
            "{stderr}"
        );
        assert!(stderr.contains("line 5, column 16"), "{stderr}");
    }
}

#[test]
fn every_command_refuses_the_same_typos_and_says_what_was_meant() {
    let dir = scratch_dir("config-typos");
    let config = dir.join("clawlink.toml");
    let cases = [
        (
            "[default.features.health]\nintervl_secs = 30\n",
            "intervl_secs",
            "interval_secs",
        ),
        (
            "[default.features.helth]\nenabled = true\n",
            "helth",
            "features.health",
        ),
        (
            "[default.transports.ssh_tunnel]\ntaget = \"claw@host\"\n",
            "taget",
            "`target`",
        ),
    ];
    for (text_of_file, typo, meant) in cases {
        std::fs::write(&config, text_of_file).unwrap();
        for args in [
            &["config", "check"][..],
            &["config", "show"],
            &["status"],
            &["features"],
        ] {
            let out = clawlink(&dir, args);
            let stderr = text(&out).1;
            assert_eq!(out.status.code(), Some(2), "{args:?} with {typo}: {stderr}");
            assert!(stderr.contains(typo), "{args:?}: {stderr}");
            assert!(stderr.contains(meant), "{args:?}: {stderr}");
        }
    }
    std::fs::remove_file(&config).unwrap();
    // A misspelt variable is refused rather than ignored.
    let out = clawlink_with_env(
        &dir,
        &["config", "show"],
        &[("CLAWLINK_TRANSPOTS__DIRECT_WS__URL", "ws://127.0.0.1:9")],
    );
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CLAWLINK_TRANSPORTS__DIRECT_WS__URL"),
        "{stderr}"
    );
    // A bad value names the variable and the key.
    let out = clawlink_with_env(
        &dir,
        &["config", "show"],
        &[("CLAWLINK_TRANSPORTS__SSH_TUNNEL__REMOTE_PORT", "abc")],
    );
    let stderr = text(&out).1;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CLAWLINK_TRANSPORTS__SSH_TUNNEL__REMOTE_PORT"),
        "{stderr}"
    );
    assert!(stderr.contains("remote_port"), "{stderr}");
}
