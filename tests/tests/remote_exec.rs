//! `clawlink remote -- COMMAND` against the real sshd: the openclaw CLI resolution, exit statuses, stdin, a real PTY under `script`, the user without the CLI, both SSH backends.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use clawlink_tests::*;

/// `clawlink <ssh flags for user> remote <rest…>` in `home`, with extra environment.
fn remote(home: &Path, user: &str, rest: &[&str], env: &[(&str, &str)]) -> Output {
    let base = ssh_args(user);
    let mut args = args_with(&base, &["remote"]);
    args.extend_from_slice(rest);
    clawlink_with_env(home, &args, env)
}

const OPENSSH: [(&str, &str); 1] = [("CLAWLINK_TRANSPORTS__SSH_TUNNEL__BACKEND", "openssh")];

#[test]
fn openclaw_version_runs_through_the_cli_resolution_on_both_backends() {
    let home = ssh_home("remote-version");
    for env in [&[][..], &OPENSSH[..]] {
        let out = remote(&home, "claw", &["--", "openclaw", "--version"], env);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{env:?}: {stdout}\n{stderr}");
        assert!(
            stdout.starts_with("OpenClaw 2026.9.6"),
            "{env:?}: {stdout:?}"
        );
    }
}

#[test]
fn the_remote_exit_status_becomes_ours_and_words_stay_whole() {
    let home = ssh_home("remote-status");
    for env in [&[][..], &OPENSSH[..]] {
        let out = remote(&home, "claw", &["--", "sh", "-c", "exit 7"], env);
        assert_eq!(out.status.code(), Some(7), "{env:?}: {}", text(&out).1);
        // stdout and stderr stay apart without a terminal; an argument with spaces and
        // quotes arrives as one word.
        let out = remote(
            &home,
            "claw",
            &[
                "--",
                "sh",
                "-c",
                "printf '<%s>' \"$1\"; echo oops >&2",
                "sh",
                "it's one word",
            ],
            env,
        );
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{env:?}: {stderr}");
        assert_eq!(stdout, "<it's one word>", "{env:?}");
        assert_eq!(stderr, "oops\n", "{env:?}");
    }
    // One word is a shell command line.
    let out = remote(&home, "claw", &["--", "echo one | tr a-z A-Z; exit 3"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out).0, "ONE\n");
}

#[test]
fn stdin_is_forwarded_until_eof_without_a_terminal() {
    let home = ssh_home("remote-stdin");
    let base = ssh_args("claw");
    let mut child = Command::new(clawlink_bin())
        .args(args_with(
            &base,
            &["remote", "--", "sh", "-c", "tr a-z A-Z; tty || true"],
        ))
        .current_dir(&home)
        .env("CLAWLINK_DATA_DIR", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("HOME", &home)
        .env_remove("RUST_LOG")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "HELLO\nWORLD\nnot a tty\n");
}

#[test]
fn a_user_without_the_cli_gets_the_same_fix_as_clawlink_test() {
    let home = ssh_home("remote-noclaw");
    let out = remote(&home, "noclaw", &["--", "openclaw", "status"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(127), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "remote-cli: exit 127: the openclaw CLI is not on PATH for non-interactive shells"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("set cli_path (--cli-path)") && stderr.contains("/usr/local/bin/openclaw"),
        "{stderr}"
    );
    // The script's marker line is turned into that message, not shown raw.
    assert!(!stderr.contains("clawlink:no-cli"), "{stderr}");

    // A project root that does not exist has its own fix.
    let out = remote(
        &home,
        "claw",
        &[
            "--project-root",
            "/no/such/checkout",
            "--",
            "openclaw",
            "--version",
        ],
        &[],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(127), "{stderr}");
    assert!(
        stderr.contains("/no/such/checkout") && stderr.contains("--project-root"),
        "{stderr}"
    );
}

/// Runs `clawlink <ssh flags> remote <rest>` under util-linux `script`, which gives it a
/// terminal for stdin and stdout.
fn under_script(home: &Path, rest: &str, env: &[(&str, &str)]) -> Output {
    let base = ssh_args("claw");
    let command = format!(
        "{} {} remote {rest}",
        clawlink_bin().display(),
        base.join(" ")
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .current_dir(home)
        .env("CLAWLINK_DATA_DIR", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("HOME", home)
        .env_remove("RUST_LOG")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::null());
    for (k, v) in env {
        script.env(k, v);
    }
    script.output().expect("util-linux `script` is installed")
}

#[test]
fn a_terminal_gets_a_remote_pty_unless_t_is_given() {
    let home = ssh_home("remote-pty");
    for env in [&[][..], &OPENSSH[..]] {
        let out = under_script(&home, "-- tty", env);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{env:?}: {stdout}\n{stderr}");
        assert!(stdout.contains("/dev/pts/"), "{env:?}: {stdout:?}");

        // The PTY has a size and carries the status. `script` given no terminal has a 0×0
        // one: the system ssh passes that on, we fall back to 80×24.
        let out = under_script(&home, "-- sh -c 'stty size; exit 5'", env);
        let (stdout, _) = text(&out);
        assert_eq!(out.status.code(), Some(5), "{env:?}: {stdout:?}");
        let size: Vec<u32> = stdout
            .lines()
            .map(|l| l.trim_matches(|c: char| !c.is_ascii_digit()))
            .find_map(|l| {
                let words: Vec<u32> = l.split(' ').filter_map(|w| w.parse().ok()).collect();
                (words.len() == 2).then_some(words)
            })
            .unwrap_or_else(|| panic!("{env:?}: no rows and columns in {stdout:?}"));
        if env.is_empty() {
            assert_eq!(size, [24, 80], "{stdout:?}");
        }

        let out = under_script(&home, "-T -- tty", env);
        let (stdout, _) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {stdout:?}");
        assert!(stdout.contains("not a tty"), "{env:?}: {stdout:?}");
    }
}

#[test]
fn a_direct_profile_is_refused_naming_the_capability_and_who_offers_it() {
    let dir = scratch_dir("remote-direct");
    let out = clawlink(
        &dir,
        &["--url", Peers::get().gateway_url(), "remote", "--", "true"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "`clawlink remote` needs commands on the gateway host, which the direct-ws transport does not offer (offered by: ssh-tunnel)"
        ) && stderr.contains("transport = \"ssh-tunnel\""),
        "{stderr}"
    );
}
