//! The systemd user unit of `clawlink service`: written from a plan, and its `ExecStart=` read back for `status`.

use super::plan::ServiceSpec;
use super::{clawlink_command, STOP_TIMEOUT_S};

/// Seconds between a failure and the restart (systemd `RestartSec`).
const RESTART_DELAY_S: u32 = 5;
/// A service that fails this many times within `START_LIMIT_INTERVAL_S` is left stopped:
/// whatever makes it fail that fast (a port in use, a wrong key) needs a human.
const START_LIMIT_BURST: u32 = 5;
const START_LIMIT_INTERVAL_S: u32 = 300;
/// Where the unit's `Documentation=` points besides the repository.
const OPENCLAW_DOCS: &str = "https://docs.openclaw.ai";
/// The exit status of configuration errors (see `failure.rs`): restarting cannot fix them.
const CONFIG_EXIT_STATUS: u8 = 2;

/// The systemd user unit.
pub(super) fn systemd_unit(spec: &ServiceSpec) -> String {
    let profile = &spec.profile;
    let mut lines = vec![
        format!(
            "# clawlink agent for profile {profile}, written by `clawlink service install` (clawlink {}).",
            env!("CARGO_PKG_VERSION")
        ),
        format!(
            "# Run that command again to change it; `{}` removes it.",
            clawlink_command(spec.config.as_deref(), profile, "service uninstall")
        ),
        "# No secret is kept here: the agent reads the gateway token or password from a 0600 file or the OS keyring.".to_owned(),
        String::new(),
        "[Unit]".to_owned(),
        format!("Description=clawlink agent: OpenClaw gateway remote control, profile {profile}"),
    ];
    // The project's repository when the build knows it; the OpenClaw documentation (which
    // the README points to) in any case, for the gateway this agent drives.
    let repository = option_env!("CARGO_PKG_REPOSITORY").filter(|r| !r.is_empty());
    lines.push(format!(
        "Documentation={}{OPENCLAW_DOCS}",
        repository.map(|r| format!("{r} ")).unwrap_or_default()
    ));
    lines.extend([
        format!("StartLimitIntervalSec={START_LIMIT_INTERVAL_S}"),
        format!("StartLimitBurst={START_LIMIT_BURST}"),
        String::new(),
        "[Service]".to_owned(),
        "Type=exec".to_owned(),
        format!("ExecStart={}", exec_start(&spec.argv)),
    ]);
    for (name, value) in &spec.environment {
        lines.push(format!(
            "Environment={}",
            systemd_quoted(&format!("{name}={value}"), false)
        ));
    }
    if let Some(dir) = &spec.working_directory {
        // Not unquoted by systemd; only specifiers need escaping.
        lines.push(format!("WorkingDirectory={}", dir.replace('%', "%%")));
    }
    lines.extend([
        "Restart=on-failure".to_owned(),
        format!("RestartSec={RESTART_DELAY_S}"),
        "# Exit status 2 is a configuration error: restarting cannot fix it.".to_owned(),
        format!("RestartPreventExitStatus={CONFIG_EXIT_STATUS}"),
        "KillSignal=SIGTERM".to_owned(),
        format!("TimeoutStopSec={STOP_TIMEOUT_S}"),
        format!("SyslogIdentifier=clawlink-{profile}"),
        String::new(),
        "[Install]".to_owned(),
        "WantedBy=default.target".to_owned(),
    ]);
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The value of `ExecStart=`: every argument as one systemd word.
pub(super) fn exec_start(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| systemd_word(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One argument of an `ExecStart=` line (systemd.service "Command lines"): left bare when
/// it is made of harmless characters, else double-quoted with C escapes. `%` (specifiers)
/// and `$` (variable expansion) are doubled in either case.
fn systemd_word(arg: &str) -> String {
    if super::is_plain_word(arg) {
        arg.to_owned()
    } else {
        systemd_quoted(arg, true)
    }
}

/// `text` in double quotes for a systemd setting that unquotes and C-unescapes its value;
/// `dollar` doubles `$` where the setting expands variables (command lines).
fn systemd_quoted(text: &str, dollar: bool) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' if dollar => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits an `ExecStart=` value back into arguments (for `status`): the inverse of
/// [`exec_start`], and good enough for hand-edited lines.
pub(super) fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            if quote.is_none() && c.is_whitespace() {
                break;
            }
            chars.next();
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some('u') => {
                        let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                        if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            word.push(c);
                        }
                    }
                    Some(other) => word.push(other),
                    None => {}
                },
                (_, '$') if chars.peek() == Some(&'$') => {
                    chars.next();
                    word.push('$');
                }
                (_, '%') if chars.peek() == Some(&'%') => {
                    chars.next();
                    word.push('%');
                }
                (_, c) => word.push(c),
            }
        }
        words.push(word);
    }
    // Executable prefixes (`-`, `@`, `:`, `+`, `!`) are not part of the path.
    if let Some(first) = words.first_mut() {
        let path = first
            .trim_start_matches(['-', '@', ':', '+', '!'])
            .to_owned();
        *first = path;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::plan::test_spec as spec;

    #[test]
    fn systemd_words_are_bare_or_quoted_and_escaped() {
        assert_eq!(systemd_word("/usr/bin/clawlink"), "/usr/bin/clawlink");
        assert_eq!(systemd_word("--profile"), "--profile");
        assert_eq!(systemd_word("ws://127.0.0.1:18789"), "ws://127.0.0.1:18789");
        assert_eq!(systemd_word("/a b/c"), "\"/a b/c\"");
        assert_eq!(systemd_word(""), "\"\"");
        assert_eq!(systemd_word("50%"), "\"50%%\"");
        assert_eq!(systemd_word("$HOME"), "\"$$HOME\"");
        assert_eq!(systemd_word(r#"say "hi" \ ok"#), r#""say \"hi\" \\ ok""#);
        assert_eq!(systemd_word(";"), "\";\"");
        assert_eq!(systemd_word("it's"), "\"it's\"");
        assert_eq!(systemd_quoted("A=$x 1%", false), "\"A=$x 1%%\"");
    }

    #[test]
    fn exec_start_round_trips_through_the_parser() {
        let argv: Vec<String> = [
            "/opt/claw link/clawlink",
            "up",
            "--profile",
            "work",
            "--config",
            "/home/ann/it's \"mine\"/50% $HOME\\x.toml",
            "",
            "tab\there",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(systemd_words(&exec_start(&argv)), argv);
        assert_eq!(
            systemd_words("-/usr/bin/clawlink up 'a b'"),
            vec!["/usr/bin/clawlink", "up", "a b"]
        );
    }

    #[test]
    fn the_unit_has_restart_policy_environment_and_install_section() {
        let unit = systemd_unit(&spec(&[
            "/opt/claw link/clawlink",
            "up",
            "--profile",
            "work",
        ]));
        let lines: Vec<&str> = unit.lines().collect();
        for expected in [
            "[Unit]",
            "Description=clawlink agent: OpenClaw gateway remote control, profile work",
            "StartLimitIntervalSec=300",
            "StartLimitBurst=5",
            "[Service]",
            "Type=exec",
            "ExecStart=\"/opt/claw link/clawlink\" up --profile work",
            "Environment=\"CLAWLINK_DATA_DIR=/data/50%% & <more>\"",
            "WorkingDirectory=/home/ann/my project",
            "Restart=on-failure",
            "RestartSec=5",
            "RestartPreventExitStatus=2",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=15",
            "[Install]",
            "WantedBy=default.target",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{unit}");
        }
        assert!(lines
            .iter()
            .any(|l| l.starts_with("Documentation=https://")));
        assert!(
            unit.contains(
                "`clawlink --config '/home/ann/my configs/c.toml' --profile work service uninstall` removes it"
            ),
            "{unit}"
        );
        assert!(!unit.contains("--log-format"));
    }
}
