//! Host-key policy: decides whether to trust the key a server presents, and says exactly why not.
//!
//! `strict` (the default, like `StrictHostKeyChecking=yes`) trusts only keys already in
//! known_hosts; `accept-new` also records a first-time host; `openssh` follows the user's
//! `StrictHostKeyChecking`; a pinned `SHA256:…` fingerprint trusts exactly that key. An
//! unknown host is never confused with a changed key: the first gets its fingerprint and the
//! `clawlink ssh trust` command, the second a loud refusal with old and new fingerprints and
//! the file:line to fix (the macOS app told first-time users to run `ssh-keygen -R`, #68274).

use std::path::PathBuf;
use std::sync::Arc;

use clawlink_core::prompt::{Confirmation, Prompter};
use clawlink_core::transport::{TransportError, TransportErrorKind};
use serde::{Deserialize, Deserializer};

use crate::known_hosts::{self, KnownHosts, PublicKey, Verdict};

/// How host keys are trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostKeyPolicy {
    #[default]
    Strict,
    AcceptNew,
    /// Follow `StrictHostKeyChecking` from `~/.ssh/config`.
    OpenSsh,
    /// Trust exactly the key with this `SHA256:` fingerprint.
    Pinned(String),
}

impl HostKeyPolicy {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "strict" | "yes" => Ok(Self::Strict),
            "accept-new" => Ok(Self::AcceptNew),
            "openssh" => Ok(Self::OpenSsh),
            pin if pin.starts_with("SHA256:") => known_hosts::parse_pin(pin)
                .map(Self::Pinned)
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "host_key_policy {other:?} is not one of strict, accept-new, openssh or a SHA256:… fingerprint"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for HostKeyPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How a host key came to be trusted, for `clawlink test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    pub fingerprint: String,
    pub how: String,
}

/// Everything the check needs; one per connection attempt.
#[derive(Clone)]
pub struct HostKeyCheck {
    pub policy: HostKeyPolicy,
    pub user_files: Vec<PathBuf>,
    pub global_files: Vec<PathBuf>,
    /// `StrictHostKeyChecking` from the SSH config, for the `openssh` policy.
    pub openssh_setting: Option<String>,
    /// What the user types to reach this host, for the trust command in messages.
    pub target_display: String,
    pub prompter: Arc<dyn Prompter>,
}

impl HostKeyCheck {
    /// Where a newly trusted key is written: the first user known_hosts file.
    pub fn write_file(&self) -> Option<&PathBuf> {
        self.user_files.first()
    }

    fn effective_policy(&self) -> HostKeyPolicy {
        match (
            &self.policy,
            self.openssh_setting.as_deref().map(str::to_ascii_lowercase),
        ) {
            (HostKeyPolicy::OpenSsh, Some(v)) if v == "accept-new" || v == "no" || v == "off" => {
                HostKeyPolicy::AcceptNew
            }
            (HostKeyPolicy::OpenSsh, _) => HostKeyPolicy::Strict,
            (other, _) => other.clone(),
        }
    }

    /// Decides about `key`, presented by `host:port`. May append to known_hosts
    /// (`accept-new`, or an interactive "yes").
    pub async fn decide(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> Result<Trusted, TransportError> {
        let fingerprint = known_hosts::fingerprint(key);
        let algorithm = key.algorithm().to_string();
        let name = known_hosts::host_key_name(host, port);
        let policy = self.effective_policy();
        if let HostKeyPolicy::Pinned(pin) = &policy {
            return if *pin == fingerprint {
                Ok(Trusted {
                    fingerprint,
                    how: "pinned fingerprint".into(),
                })
            } else {
                Err(TransportError::new(
                    TransportErrorKind::HostTrust,
                    format!(
                        "host key of {name} is {fingerprint} ({algorithm}), not the pinned {pin}"
                    ),
                )
                .with_fix(
                    "if the host was reinstalled, verify the new key and update host_key_policy",
                ))
            };
        }
        let files: Vec<PathBuf> = self
            .user_files
            .iter()
            .chain(&self.global_files)
            .cloned()
            .collect();
        let known = KnownHosts::load(&files).map_err(|e| {
            TransportError::new(
                TransportErrorKind::HostTrust,
                format!("cannot read known_hosts: {e}"),
            )
        })?;
        match known.check(host, port, key) {
            Verdict::Trusted { file, line } => Ok(Trusted {
                fingerprint,
                how: format!("known_hosts {}:{line}", file.display()),
            }),
            Verdict::Revoked { file, line } => Err(TransportError::new(
                TransportErrorKind::HostTrust,
                format!(
                    "host key {fingerprint} ({algorithm}) of {name} is marked @revoked in {}:{line}; refusing to connect",
                    file.display()
                ),
            )
            .with_fix("the key was revoked on purpose: check with the host's administrator")),
            Verdict::Changed { known } => {
                let old: Vec<String> = known
                    .iter()
                    .map(|k| format!("{} ({}) at {}:{}", k.fingerprint, k.algorithm, k.file.display(), k.line))
                    .collect();
                // A different key *type* is often a host that offers several keys, not an
                // attacker: say so, since `ssh-keygen -R` would also drop the valid one.
                let other_type_only = known.iter().all(|k| k.algorithm != algorithm);
                let type_note = if other_type_only {
                    format!(
                        " (known_hosts only lists {} keys for this host; this server negotiated {algorithm})",
                        known.iter().map(|k| k.algorithm.as_str()).collect::<Vec<_>>().join("/")
                    )
                } else {
                    String::new()
                };
                let remove = known
                    .first()
                    .map(|k| format!("ssh-keygen -R '{name}' -f {}", k.file.display()))
                    .unwrap_or_else(|| format!("ssh-keygen -R '{name}'"));
                Err(TransportError::new(
                    TransportErrorKind::HostTrust,
                    format!(
                        "HOST KEY CHANGED for {name}: the server presents {fingerprint} ({algorithm}), \
                         known_hosts has {}{type_note}. Someone may be intercepting the connection; refusing to connect",
                        old.join(", ")
                    ),
                )
                .with_fix(format!(
                    "if the host was legitimately reinstalled, verify the new key out of band, then run \
                     `{remove}` and `clawlink ssh trust {}`",
                    self.target_display
                )))
            }
            Verdict::Unknown => self.unknown_host(host, port, key, fingerprint, algorithm, policy).await,
        }
    }

    async fn unknown_host(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
        fingerprint: String,
        algorithm: String,
        policy: HostKeyPolicy,
    ) -> Result<Trusted, TransportError> {
        let name = known_hosts::host_key_name(host, port);
        let record = |how: &str| -> Result<Trusted, TransportError> {
            let file = self.write_file().ok_or_else(|| {
                TransportError::new(
                    TransportErrorKind::HostTrust,
                    "no known_hosts file to record the key in",
                )
            })?;
            known_hosts::append(file, host, port, key).map_err(|e| {
                TransportError::new(
                    TransportErrorKind::HostTrust,
                    format!(
                        "cannot add the host key of {name} to {}: {e}",
                        file.display()
                    ),
                )
            })?;
            Ok(Trusted {
                fingerprint: fingerprint.clone(),
                how: format!("{how}, added to {}", file.display()),
            })
        };
        if policy == HostKeyPolicy::AcceptNew {
            tracing::warn!(host = %name, %fingerprint, "first connection: recording the host key (accept-new)");
            return record("new host accepted (accept-new)");
        }
        if self.prompter.is_interactive() {
            let question = Confirmation {
                question: format!("Trust the host key of {name} and add it to known_hosts?"),
                details: vec![
                    format!("{name} presents an unknown {algorithm} key"),
                    format!("fingerprint {fingerprint}"),
                    "compare it with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` run on that host"
                        .into(),
                ],
            };
            if self.prompter.confirm(&question).await {
                return record("trusted by the user");
            }
        }
        Err(TransportError::new(
            TransportErrorKind::HostTrust,
            format!("{name} is not a known host: it presents {fingerprint} ({algorithm}), which no known_hosts file lists"),
        )
        .with_fix(format!(
            "verify that fingerprint on the host (`ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub`), then run \
             `clawlink ssh trust {}`",
            short_algorithm(&algorithm),
            self.target_display
        )))
    }
}

fn short_algorithm(algorithm: &str) -> &str {
    match algorithm {
        a if a.contains("ed25519") => "ed25519",
        a if a.contains("ecdsa") => "ecdsa",
        a if a.contains("rsa") => "rsa",
        _ => "*",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_refuse_nonsense() {
        assert_eq!(
            HostKeyPolicy::parse("strict").unwrap(),
            HostKeyPolicy::Strict
        );
        assert_eq!(
            HostKeyPolicy::parse("accept-new").unwrap(),
            HostKeyPolicy::AcceptNew
        );
        assert_eq!(
            HostKeyPolicy::parse("openssh").unwrap(),
            HostKeyPolicy::OpenSsh
        );
        assert!(HostKeyPolicy::parse("maybe")
            .unwrap_err()
            .contains("strict, accept-new"));
    }
}
