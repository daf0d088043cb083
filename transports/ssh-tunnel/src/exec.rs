//! Running commands on the gateway host: one properly quoted `sh -c '…'`, and the openclaw CLI resolution `clawlink test` relies on.
//!
//! OpenSSH joins a remote command's words with spaces and hands them to the user's *login*
//! shell (bash, zsh, fish…), which re-splits them. The macOS app's multi-line script lost its
//! PATH fix that way. We send exactly one word-safe command, `sh -c '<script>'`, so whatever
//! the login shell is, `/bin/sh` runs the whole script.

use std::time::Duration;

use clawlink_core::transport::{RemoteOutput, TransportError, TransportErrorKind};
use russh::ChannelMsg;

use crate::session::SshSession;

/// Exit code of the resolution script when something is missing (what shells use for
/// "command not found").
pub const NOT_FOUND: i32 = clawlink_core::transport::commands::NOT_FOUND;

/// Markers the script prints on stderr so that the caller can tell the 127 causes apart.
pub const MARK_NO_CLI: &str = "clawlink:no-cli";
pub const MARK_NO_PROJECT: &str = "clawlink:no-project-root";
pub const MARK_NO_NODE: &str = "clawlink:no-node";

/// Quotes `text` as one word for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Where to find the openclaw CLI on the remote host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliLocation {
    /// `project_root`: cd there first; missing is its own failure.
    pub project_root: Option<String>,
    /// `cli_path`: run this file (with node when it is a .js/.mjs/.cjs file).
    pub cli_path: Option<String>,
}

/// The script that finds and runs `openclaw ARGS`: PATH gets the usual install locations,
/// then `cli_path`, `openclaw` on PATH, `$project_root/openclaw.mjs`, `dist/index.js`.
/// Exit 127 with a marker line when the project root, node or the CLI is missing.
pub fn cli_script(location: &CliLocation, args: &[&str]) -> String {
    cli_script_with_prefix(location, args, USUAL_CLI_DIRS)
}

/// Where npm, pnpm and Homebrew put CLIs, searched before the non-interactive PATH.
pub const USUAL_CLI_DIRS: &str =
    "$HOME/.local/bin:$HOME/.npm-global/bin:$HOME/bin:/usr/local/bin:/opt/homebrew/bin:$HOME/Library/pnpm:$HOME/.local/share/pnpm";

fn cli_script_with_prefix(location: &CliLocation, args: &[&str], prefix: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let args = args.join(" ");
    let mut s = String::new();
    if !prefix.is_empty() {
        s.push_str(&format!("PATH=\"{prefix}:$PATH\"; export PATH; "));
    }
    // `[ -x ]` checks execute permission for this user, unlike a bare lookup.
    s.push_str("find_cmd() { IFS=:; for d in $PATH; do if [ -x \"$d/$1\" ] && [ -f \"$d/$1\" ]; then unset IFS; printf '%s\\n' \"$d/$1\"; return 0; fi; done; unset IFS; return 1; }; ");
    s.push_str(&format!(
        "need_node() {{ find_cmd node >/dev/null || {{ echo \"{MARK_NO_NODE}: node is not installed or not on PATH for non-interactive shells\" >&2; exit {NOT_FOUND}; }}; }}; "
    ));
    if let Some(root) = &location.project_root {
        let root = shell_quote(root);
        s.push_str(&format!(
            "cd {root} 2>/dev/null || {{ echo \"{MARK_NO_PROJECT}: project root not found: \"{root} >&2; exit {NOT_FOUND}; }}; "
        ));
    }
    if let Some(cli) = &location.cli_path {
        let quoted = shell_quote(cli);
        s.push_str(&format!(
            "if [ ! -f {quoted} ]; then echo \"{MARK_NO_CLI}: cli_path not found: \"{quoted} >&2; exit {NOT_FOUND}; fi; \
             case {quoted} in *.js|*.mjs|*.cjs) need_node; exec node {quoted} {args};; *) exec {quoted} {args};; esac"
        ));
        return s;
    }
    s.push_str(&format!(
        "if cli=$(find_cmd openclaw); then exec \"$cli\" {args}; fi; \
         for f in openclaw.mjs dist/index.js; do if [ -f \"$f\" ]; then need_node; exec node \"$f\" {args}; fi; done; \
         echo \"{MARK_NO_CLI}: the openclaw CLI is not on PATH for non-interactive shells\" >&2; exit {NOT_FOUND}"
    ));
    s
}

/// The one remote command line for `script`. `/bin/sh` by absolute path: the login shell's
/// PATH may be anything, but every POSIX host has it there.
pub fn sh_command(script: &str) -> String {
    format!("/bin/sh -c {}", shell_quote(script))
}

/// Runs `command` (already one shell-safe string) on the session, with a time limit.
pub async fn run(
    session: &SshSession,
    command: &str,
    limit: Duration,
) -> Result<RemoteOutput, TransportError> {
    let mut channel = session.session_channel().await?;
    channel.exec(true, command.as_bytes()).await.map_err(|e| {
        TransportError::new(
            TransportErrorKind::Remote,
            format!("cannot start the remote command: {e}"),
        )
    })?;
    let collect = async {
        let mut out = RemoteOutput {
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.exit_code = Some(exit_status as i32),
                _ => {}
            }
        }
        out
    };
    tokio::time::timeout(limit, collect).await.map_err(|_| {
        TransportError::new(
            TransportErrorKind::Remote,
            format!(
                "the remote command did not finish within {} s",
                limit.as_secs()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_any_text() {
        assert_eq!(shell_quote("status"), "status");
        assert_eq!(shell_quote("--json"), "--json");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    /// Runs the generated command through a real local `sh`, the way sshd hands it to a login
    /// shell (`$SHELL -c "<command>"`), to prove the quoting and the 127 paths.
    fn run_local(
        location: &CliLocation,
        path: &str,
        args: &[&str],
    ) -> (Option<i32>, String, String) {
        // No PATH prefix here: this machine may have an openclaw in /usr/local/bin.
        let command = sh_command(&cli_script_with_prefix(location, args, ""));
        // An absolute path: the child's PATH is the test's, which may not hold sh.
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .env("PATH", path)
            .env("HOME", "/nonexistent-home")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn missing_cli_project_root_and_node_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("clawlink-exec-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let (code, _, err) = run_local(&CliLocation::default(), "/usr/bin:/bin", &["--version"]);
        assert_eq!(code, Some(127));
        assert!(err.contains(MARK_NO_CLI), "{err}");

        let location = CliLocation {
            project_root: Some("/no/such dir".into()),
            cli_path: None,
        };
        let (code, _, err) = run_local(&location, "/usr/bin:/bin", &["--version"]);
        assert_eq!(code, Some(127));
        assert!(
            err.contains(MARK_NO_PROJECT) && err.contains("/no/such dir"),
            "{err}"
        );

        let js = dir.join("cli.mjs");
        std::fs::write(&js, "").unwrap();
        let location = CliLocation {
            project_root: None,
            cli_path: Some(js.display().to_string()),
        };
        let (code, _, err) = run_local(&location, "/nonexistent", &["--version"]);
        assert_eq!(code, Some(127));
        assert!(err.contains(MARK_NO_NODE), "{err}");

        // A fake CLI on PATH receives the arguments intact, quotes and all.
        let fake = dir.join("bin/openclaw");
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>' \"$a\"; done\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = format!("{}:/usr/bin:/bin", dir.join("bin").display());
        let (code, out, err) = run_local(
            &CliLocation::default(),
            &path,
            &["status", "--json", "it's a test"],
        );
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out, "<status><--json><it's a test>");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
