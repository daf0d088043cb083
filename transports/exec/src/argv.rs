//! The command's argument vector as the user wrote it, with ssh's ProxyCommand tokens (`%h`, `%p`, `%r`, `%%`) expanded; pure, so every rule is a unit test.
//!
//! There is no shell here: each element is one argument, so a host name or user with a
//! space or a `;` stays one argument and can never become a second command. Whoever needs
//! a shell writes `["sh", "-c", "…"]` and owns its quoting.

use clawlink_core::transport::TransportError;

/// What the tokens stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens<'a> {
    /// `%h`: the gateway host as the far end of the command sees it.
    pub host: &'a str,
    /// `%p`: the gateway port.
    pub port: u16,
    /// `%r`: the remote user, when the settings name one.
    pub user: Option<&'a str>,
}

/// `template` with every token expanded. An unknown token, a lone `%` at the end, or `%r`
/// without a user is a configuration error naming the element and the fix.
pub fn expand(template: &[String], tokens: &Tokens<'_>) -> Result<Vec<String>, TransportError> {
    if template
        .first()
        .is_none_or(|program| program.trim().is_empty())
    {
        return Err(TransportError::config(
            "transports.exec.command is empty: it must name the program to run",
        )
        .with_fix(
            "write the argument vector, e.g. command = [\"ssh\", \"-W\", \"127.0.0.1:18789\", \"gw-host\"]",
        ));
    }
    template
        .iter()
        .enumerate()
        .map(|(index, element)| expand_one(index, element, tokens))
        .collect()
}

fn expand_one(index: usize, element: &str, tokens: &Tokens<'_>) -> Result<String, TransportError> {
    let mut out = String::with_capacity(element.len());
    let mut chars = element.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(tokens.host),
            Some('p') => out.push_str(&tokens.port.to_string()),
            Some('r') => match tokens.user {
                Some(user) => out.push_str(user),
                None => {
                    return Err(TransportError::config(format!(
                        "transports.exec.command[{index}] uses %r (the remote user), but no user is set"
                    ))
                    .with_fix(
                        "set user = \"…\" in the profile's transports.exec table, or write the user into the command",
                    ))
                }
            },
            other => {
                let token = other.map(|c| format!("%{c}")).unwrap_or_else(|| "%".into());
                return Err(TransportError::config(format!(
                    "transports.exec.command[{index}] has {token:?}, which is not a known token"
                ))
                .with_fix("the tokens are %h (host), %p (port), %r (user); write %% for a literal %"));
            }
        }
    }
    Ok(out)
}

/// How an argument vector reads in a status line or an error: words with spaces, quotes
/// or nothing at all in single quotes (not a shell command line: nothing runs it).
pub fn display(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            if !word.is_empty()
                && !word
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '\'' | '"' | '\\'))
            {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const TOKENS: Tokens<'static> = Tokens {
        host: "127.0.0.1",
        port: 18789,
        user: Some("claw"),
    };

    #[test]
    fn tokens_expand_inside_and_as_whole_words() {
        let argv = expand(
            &words(&["ssh", "-W", "%h:%p", "-l", "%r", "100%%", "%r@gw"]),
            &TOKENS,
        )
        .unwrap();
        assert_eq!(
            argv,
            [
                "ssh",
                "-W",
                "127.0.0.1:18789",
                "-l",
                "claw",
                "100%",
                "claw@gw"
            ]
        );
    }

    #[test]
    fn a_value_with_shell_characters_stays_one_argument() {
        let tokens = Tokens {
            host: "gw; rm -rf ~",
            port: 1,
            user: None,
        };
        let argv = expand(&words(&["nc", "%h", "%p"]), &tokens).unwrap();
        assert_eq!(argv, ["nc", "gw; rm -rf ~", "1"]);
    }

    #[test]
    fn bad_templates_are_config_errors_with_a_fix() {
        let no_user = Tokens {
            user: None,
            ..TOKENS
        };
        let cases: &[(&[&str], &Tokens<'_>, &str, &str)] = &[
            (&[], &TOKENS, "empty", "command = ["),
            (&["  "], &TOKENS, "empty", "command = ["),
            (&["ssh", "%r@gw"], &no_user, "command[1] uses %r", "user ="),
            (&["nc", "%x"], &TOKENS, "\"%x\"", "%%"),
            (&["nc", "50%"], &TOKENS, "\"%\"", "%%"),
        ];
        for (template, tokens, needle, fix) in cases {
            let error = expand(&words(template), tokens).unwrap_err();
            assert_eq!(
                error.kind,
                clawlink_core::transport::TransportErrorKind::Config
            );
            assert!(error.message.contains(needle), "{template:?}: {error:?}");
            assert!(
                error.fix.as_deref().is_some_and(|f| f.contains(fix)),
                "{template:?}: {error:?}"
            );
        }
    }

    #[test]
    fn display_quotes_only_what_needs_it() {
        assert_eq!(
            display(&words(&["sh", "-c", "echo 'hi' >&2", ""])),
            r#"sh -c 'echo '\''hi'\'' >&2' ''"#
        );
    }
}
