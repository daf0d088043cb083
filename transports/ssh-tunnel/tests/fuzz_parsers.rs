//! Fixed-budget fuzzing of what users type and what known_hosts files hold: SSH targets, known_hosts lines, host-key pins. No panic, no hang, and what clawlink writes it reads back.

use std::path::Path;
use std::time::Duration;

use clawlink_fuzz_budget::{arbitrary, check, Arbitrary, Unstructured};
use clawlink_transport_ssh::known_hosts::{
    entry_line, fingerprint, host_key_name, parse_pin, KnownHosts, PublicKey, Verdict,
};
use clawlink_transport_ssh::target::SshTarget;
use russh::keys::ssh_key::public::{Ed25519PublicKey, KeyData};

const BUDGET: Duration = Duration::from_secs(3);

/// Text mostly made of the characters target and known_hosts syntax gives a meaning to, so
/// that cases hit the interesting branches instead of being refused as one odd word.
#[derive(Debug)]
struct Syntaxy(String);

impl<'a> Arbitrary<'a> for Syntaxy {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const PIECES: &[&str] = &[
            "a", "B", "1", "22", "65535", "70000", "0", ":", "::", "[", "]", "@", "-", "/", ".",
            " ", "\t", "ssh ", "ssh://", "-p", "-l", "*", "?", "!", ",", "|", "|1|", "#", "=", "é",
            "\u{0}", "\r",
        ];
        let len = u.int_in_range(0..=24)?;
        let mut text = String::new();
        for _ in 0..len {
            if u.ratio(1, 8)? {
                text.push(u.arbitrary::<char>()?);
            } else {
                text.push_str(u.choose(PIECES)?);
            }
        }
        Ok(Syntaxy(text))
    }
}

/// Text in the shape of a target (`[ssh://][user@][[]host[]][:port][/]`) from pieces of
/// target syntax, so cases reach the bracket, port and URL rules in combination.
#[derive(Debug)]
struct TargetShaped(String);

impl<'a> Arbitrary<'a> for TargetShaped {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const PARTS: &[&str] = &["a", "gw", "1", "fd00", "", "-", ".", "é", "@", "/"];
        let mut text = String::from(*u.choose(&["", "", "ssh ", "ssh://", " "])?);
        if u.arbitrary()? {
            text.push_str(u.choose(PARTS)?);
            text.push('@');
        }
        let bracketed = u.ratio(1, 3)?;
        if bracketed {
            text.push('[');
        }
        for i in 0..u.int_in_range(1..=4)? {
            if i > 0 {
                text.push(':');
            }
            text.push_str(u.choose(PARTS)?);
        }
        if bracketed && u.ratio(7, 8)? {
            text.push(']');
        }
        if u.arbitrary()? {
            let port = *u.choose(&["0", "1", "22", "65535", "65536", "x", ""])?;
            text.push(':');
            text.push_str(port);
        }
        if u.ratio(1, 6)? {
            text.push('/');
        }
        Ok(TargetShaped(text))
    }
}

fn assert_target_invariants(input: &str) {
    match SshTarget::parse(input) {
        Ok(target) => {
            assert!(!target.host.is_empty(), "{input:?} → {target:?}");
            assert!(!target.host.starts_with('-'), "{input:?} → {target:?}");
            let all = format!("{}{}", target.user.as_deref().unwrap_or(""), target.host);
            assert!(
                !all.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{input:?} → {target:?}"
            );
            let shown = target.to_string();
            assert_eq!(
                SshTarget::parse(&shown).as_ref(),
                Ok(&target),
                "{input:?} is shown as {shown:?}, which means something else"
            );
        }
        Err(err) => assert!(!err.to_string().is_empty(), "{input:?}"),
    }
}

#[test]
fn ssh_targets_from_arbitrary_text_never_panic_and_round_trip() {
    check("ssh target text", BUDGET, |input: String| {
        assert_target_invariants(&input)
    });
}

#[test]
fn ssh_targets_from_target_syntax_never_panic_and_round_trip() {
    check("ssh target syntax", BUDGET, |Syntaxy(input)| {
        assert_target_invariants(&input)
    });
}

#[test]
fn target_shaped_text_never_panics_and_round_trips() {
    check("ssh target shapes", BUDGET, |TargetShaped(input)| {
        assert_target_invariants(&input)
    });
}

/// An ed25519 key from arbitrary bytes: a valid encoding, whatever the bytes.
#[derive(Debug, Clone)]
struct ArbitraryKey(PublicKey);

impl<'a> Arbitrary<'a> for ArbitraryKey {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let bytes: [u8; 32] = u.arbitrary()?;
        Ok(ArbitraryKey(PublicKey::from(KeyData::Ed25519(
            Ed25519PublicKey(bytes),
        ))))
    }
}

const REAL_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMc0NhHJVrevyQ+EmUe75nQpR2ewanMrwk1lWdHhdTLL";

fn file() -> &'static Path {
    Path::new("/fuzz/known_hosts")
}

#[test]
fn known_hosts_from_arbitrary_text_never_panic() {
    check(
        "known_hosts text",
        BUDGET,
        |(text, host, port, ArbitraryKey(key)): (String, String, u16, ArbitraryKey)| {
            let known = KnownHosts::parse(&text, file());
            assert!(known.entries().len() + known.skipped().len() <= text.lines().count());
            assert!(known.skipped().iter().all(|s| !s.reason.is_empty()));
            let _ = known.check(&host, port, &key);
        },
    );
}

#[test]
fn known_hosts_lines_from_their_syntax_never_panic() {
    check(
        "known_hosts lines",
        BUDGET,
        |(marker, hosts, base64, host, port): (u8, Syntaxy, Option<Vec<u8>>, Syntaxy, u16)| {
            let marker = ["", "@revoked ", "@cert-authority ", "@other "][usize::from(marker % 4)];
            // Either a real key or arbitrary base64, so both the host patterns and the key
            // decoder get exercised.
            let key = match base64 {
                None => REAL_KEY.to_owned(),
                Some(bytes) => format!("ssh-ed25519 {}", base64_encode(&bytes)),
            };
            let line = format!("{marker}{} {key} comment", hosts.0);
            let known = KnownHosts::parse(&line, file());
            let real = PublicKey::from_openssh(REAL_KEY).unwrap();
            let _ = known.check(&host.0, port, &real);
            for entry in known.entries() {
                let _ = entry.matches(&host.0, port);
            }
        },
    );
}

#[test]
fn what_clawlink_appends_it_trusts_for_that_host_and_port_only() {
    check(
        "known_hosts round trip",
        BUDGET,
        |(host, port, other_port, ArbitraryKey(key), ArbitraryKey(other_key)): (
            String,
            u16,
            u16,
            ArbitraryKey,
            ArbitraryKey,
        )| {
            let Ok(line) = entry_line(&host, port, &key) else {
                return;
            };
            let known = KnownHosts::parse(&line, file());
            assert!(
                known.skipped().is_empty(),
                "{line:?}: {:?}",
                known.skipped()
            );
            assert_eq!(
                known.check(&host, port, &key),
                Verdict::Trusted {
                    file: file().into(),
                    line: 1
                },
                "{line:?}"
            );
            if host_key_name(&host, other_port) != host_key_name(&host, port) {
                assert_eq!(
                    known.check(&host, other_port, &key),
                    Verdict::Unknown,
                    "{line:?}"
                );
            }
            if other_key.key_data() != key.key_data() {
                assert!(
                    matches!(
                        known.check(&host, port, &other_key),
                        Verdict::Changed { .. }
                    ),
                    "{line:?}"
                );
            }
        },
    );
}

#[test]
fn pins_never_panic_and_normalise_to_a_fixed_point() {
    check(
        "host key pins",
        BUDGET,
        |(text, ArbitraryKey(key)): (String, ArbitraryKey)| {
            let pin = format!("SHA256:{text}");
            for candidate in [text.as_str(), pin.as_str()] {
                match parse_pin(candidate) {
                    Ok(normal) => {
                        assert!(normal.starts_with("SHA256:"), "{normal}");
                        assert_eq!(parse_pin(&normal).unwrap(), normal);
                    }
                    Err(err) => assert!(!err.to_string().is_empty()),
                }
            }
            let real = fingerprint(&key);
            assert_eq!(parse_pin(&real).unwrap(), real);
        },
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
