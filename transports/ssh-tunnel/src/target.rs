//! The SSH target a user types: `user@host[:port]`, `[v6addr]:port`, `ssh://user@host:port`, or a `~/.ssh/config` alias.
//!
//! Same rules and messages as the macOS app (strip a pasted leading `ssh `, refuse
//! whitespace, control characters and a leading `-`, which would be read as an option), plus
//! what it lacks: bracketed IPv6 and `ssh://` URLs. The port is kept only when typed, so that
//! an alias's `Port` in `~/.ssh/config` is not silently overridden by a default 22.

use std::fmt;

/// A parsed SSH target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    /// A host name, an address (IPv6 without brackets) or a `~/.ssh/config` alias.
    pub host: String,
    /// Only when the user typed one.
    pub port: Option<u16>,
}

/// Why a target was refused; the text is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

fn refuse(message: &str) -> TargetError {
    TargetError(message.to_owned())
}

impl SshTarget {
    /// Parses what the user typed.
    pub fn parse(input: &str) -> Result<Self, TargetError> {
        let mut text = input.trim();
        if let Some(rest) = text.strip_prefix("ssh ") {
            text = rest.trim_start();
        }
        if text.is_empty() {
            return Err(refuse(
                "SSH target is empty; write it like user@host[:port]",
            ));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(match meant_target(input) {
                Some(meant) => TargetError(format!(
                    "SSH target cannot contain spaces; for `{}` write the target `{meant}`",
                    input.trim()
                )),
                None => refuse("SSH target cannot contain spaces"),
            });
        }
        if text.starts_with('-') {
            return Err(refuse("SSH target cannot start with '-'"));
        }
        let (text, from_url) = match text.strip_prefix("ssh://") {
            Some(rest) => (rest.trim_end_matches('/'), true),
            None => (text, false),
        };
        let (user, host_port) = match text.split_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, text),
        };
        let user = match user {
            Some("") | None => None,
            Some(u) if u.starts_with('-') => {
                return Err(refuse("SSH target cannot start with '-'"))
            }
            Some(u) => Some(u.to_owned()),
        };
        let (host, port) = split_host_port(host_port)?;
        if host.is_empty() || host.contains('@') || host.contains('/') {
            return Err(refuse("SSH target must look like user@host[:port]"));
        }
        if host.starts_with('-') {
            return Err(refuse("SSH target cannot start with '-'"));
        }
        if from_url && host.contains(':') && !host_port.starts_with('[') {
            return Err(refuse("SSH target must look like user@host[:port]"));
        }
        Ok(Self {
            user,
            host: host.to_owned(),
            port,
        })
    }

    /// The port to connect to when neither the target nor the SSH config names one.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(22)
    }
}

/// The target a pasted ssh command line meant: `ssh -p 28830 claw@host` and
/// `claw@host -p 22` give `claw@host:28830` and `claw@host:22` (`-l USER` is honoured).
/// `None` when the words hold anything else (other options, a remote command), which
/// cannot be written as a target.
fn meant_target(input: &str) -> Option<String> {
    let mut words = input.split_whitespace().peekable();
    if words.peek() == Some(&"ssh") {
        words.next();
    }
    let (mut port, mut user, mut destination) = (None, None, None);
    while let Some(word) = words.next() {
        match word {
            "-p" => port = Some(parse_port(words.next()?).ok()?),
            "-l" => user = Some(words.next()?),
            w if w.starts_with("-p") => port = Some(parse_port(&w[2..]).ok()?),
            w if w.starts_with("-l") => user = Some(&w[2..]),
            w if w.starts_with('-') || destination.is_some() => return None,
            w => destination = Some(w),
        }
    }
    // Only words without whitespace or control characters reach `parse` again.
    let destination = destination.filter(|d| !d.chars().any(char::is_control))?;
    let parsed = SshTarget::parse(destination).ok()?;
    let user = user.map(str::to_owned).or(parsed.user);
    let port = port.or(parsed.port);
    let host = if parsed.host.contains(':') {
        format!("[{}]", parsed.host)
    } else {
        parsed.host
    };
    Some(format!(
        "{}{host}{}",
        user.map(|u| format!("{u}@")).unwrap_or_default(),
        port.map(|p| format!(":{p}")).unwrap_or_default()
    ))
}

fn split_host_port(text: &str) -> Result<(&str, Option<u16>), TargetError> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| refuse("SSH target has an unclosed '[' around its IPv6 address"))?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(parse_port(port)?))),
                None => Err(refuse("SSH target must look like user@[v6addr]:port")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        // A bare IPv6 address: no port can be told apart, so none is taken.
        2.. => Ok((text, None)),
        1 => {
            let (host, port) = text.split_once(':').expect("one colon");
            if host.is_empty() {
                return Err(refuse("SSH target must look like user@host[:port]"));
            }
            Ok((host, Some(parse_port(port)?)))
        }
    }
}

fn parse_port(text: &str) -> Result<u16, TargetError> {
    match text.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(TargetError(format!(
            "SSH target port {text:?} is not a number from 1 to 65535"
        ))),
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.host),
            (false, Some(port)) => write!(f, "{}:{port}", self.host),
            // `[a:1]` written bare would read back as host `a`, port 1: a host with one colon
            // keeps its brackets (bare IPv6 addresses have two or more, and read back as is).
            (true, None) if self.host.matches(':').count() == 1 => write!(f, "[{}]", self.host),
            (_, None) => f.write_str(&self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> (Option<&'static str>, &'static str, Option<u16>) {
        let t = SshTarget::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        (
            t.user.map(|u| &*Box::leak(u.into_boxed_str())),
            Box::leak(t.host.into_boxed_str()),
            t.port,
        )
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(
            ok("claw@gw.example.com"),
            (Some("claw"), "gw.example.com", None)
        );
        assert_eq!(ok("claw@gw:2222"), (Some("claw"), "gw", Some(2222)));
        assert_eq!(
            ok("  ssh claw@10.0.0.5:22 "),
            (Some("claw"), "10.0.0.5", Some(22))
        );
        assert_eq!(ok("gateway-box"), (None, "gateway-box", None));
        assert_eq!(ok("[::1]:2222"), (None, "::1", Some(2222)));
        assert_eq!(ok("claw@[fe80::1]"), (Some("claw"), "fe80::1", None));
        assert_eq!(ok("fd00::5"), (None, "fd00::5", None));
        assert_eq!(ok("ssh://claw@gw:2200/"), (Some("claw"), "gw", Some(2200)));
        assert_eq!(ok("ssh://[::1]:22"), (None, "::1", Some(22)));
        assert_eq!(ok("@gw"), (None, "gw", None));
    }

    #[test]
    fn refused_forms_say_why() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("claw@gw -p 22", "cannot contain spaces"),
            ("claw@g\tw", "cannot contain spaces"),
            ("claw@g\u{7}w", "cannot contain spaces"),
            ("-oProxyCommand=touch /tmp/x", "cannot contain spaces"),
            ("-oProxyCommand=id", "cannot start with '-'"),
            ("claw@-oProxyCommand=id", "cannot start with '-'"),
            ("-l@gw", "cannot start with '-'"),
            ("claw@gw:0", "1 to 65535"),
            ("claw@gw:70000", "1 to 65535"),
            ("claw@gw:ssh", "1 to 65535"),
            ("claw@:22", "user@host"),
            ("claw@", "user@host"),
            ("a@b@c", "user@host"),
            ("claw@[::1", "unclosed"),
            ("ssh://claw@gw/path", "user@host"),
        ];
        for (input, needle) in cases {
            let err = SshTarget::parse(input).expect_err(input).to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn a_pasted_ssh_command_line_is_answered_with_the_target_it_meant() {
        let cases = [
            ("ssh -p 28830 claw@host", Some("claw@host:28830")),
            ("claw@host -p 22", Some("claw@host:22")),
            ("ssh -l claw -p2222 gw", Some("claw@gw:2222")),
            ("ssh -p 22 fd00::1", Some("[fd00::1]:22")),
            ("ssh claw@gw uptime", None),
            ("ssh -A claw@gw", None),
            ("-oProxyCommand=touch /tmp/x", None),
        ];
        for (input, meant) in cases {
            let err = SshTarget::parse(input).expect_err(input).to_string();
            assert!(err.contains("cannot contain spaces"), "{input:?}: {err}");
            match meant {
                Some(target) => {
                    assert!(err.contains(&format!("`{target}`")), "{input:?}: {err}");
                    assert!(SshTarget::parse(target).is_ok(), "{target}");
                }
                None => assert!(!err.contains("write the target"), "{input:?}: {err}"),
            }
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "claw@gw:2222",
            "gw",
            "claw@[::1]:22",
            "[fd00::1]:2200",
            "[a:1]",
        ] {
            assert_eq!(SshTarget::parse(input).unwrap().to_string(), input);
        }
    }
}
