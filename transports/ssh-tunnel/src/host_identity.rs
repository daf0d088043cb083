//! `clawlink ssh trust`: the SSH host key as the host-identity capability, remembered in known_hosts.

use async_trait::async_trait;
use clawlink_core::transport::{
    Destination, HostIdentity, PresentedIdentity, Remembered, Standing, TransportError,
    TransportErrorKind,
};
use serde_json::json;

use crate::known_hosts::{self, PublicKey, Verdict};
use crate::SshTunnel;

#[async_trait]
impl HostIdentity for SshTunnel {
    fn peer(&self) -> Result<String, TransportError> {
        let (resolved, _) = self.resolve()?;
        Ok(known_hosts::host_key_name(
            &resolved.host_name,
            resolved.port,
        ))
    }

    async fn presented(&self) -> Result<PresentedIdentity, TransportError> {
        let probe = self.probe_host_key().await?;
        let name = known_hosts::host_key_name(&probe.host, probe.port);
        let standing = match &probe.verdict {
            Verdict::Trusted { file, line } => Standing::AlreadyTrusted {
                message: format!(
                    "{name} is already trusted: {} ({}) at {}:{line}",
                    probe.fingerprint,
                    probe.algorithm,
                    file.display()
                ),
                detail: json!({"file": file, "line": line}),
            },
            Verdict::Revoked { file, line } => Standing::Refused(TransportError::new(
                TransportErrorKind::HostTrust,
                format!(
                    "the key {} of {name} is @revoked in {}:{line}; it cannot be trusted",
                    probe.fingerprint,
                    file.display()
                ),
            )),
            Verdict::Changed { known } => {
                let old: Vec<String> = known
                    .iter()
                    .map(|k| format!("{} at {}:{}", k.fingerprint, k.file.display(), k.line))
                    .collect();
                Standing::Refused(TransportError::new(
                    TransportErrorKind::HostTrust,
                    format!(
                        "HOST KEY CHANGED for {name}: it now presents {} ({}); known_hosts has {}. `ssh trust` does not overwrite a changed key",
                        probe.fingerprint,
                        probe.algorithm,
                        old.join(", ")
                    ),
                )
                .with_fix(format!(
                    "if the host was reinstalled, verify the new key out of band, remove the old one with `ssh-keygen -R '{name}'`, then run this again"
                )))
            }
            Verdict::Unknown => {
                let Some(file) = probe.write_file.clone() else {
                    return Err(TransportError::config("no known_hosts file to write to")
                        .with_fix("set known_hosts_file in the profile"));
                };
                Standing::Unknown {
                    destination: Destination::File(file),
                }
            }
        };
        let mut fields = serde_json::Map::new();
        fields.insert("host".into(), json!(name));
        fields.insert("fingerprint".into(), json!(probe.fingerprint));
        fields.insert("algorithm".into(), json!(probe.algorithm));
        Ok(PresentedIdentity {
            lines: vec![
                format!("{name} presents a {} key", probe.algorithm),
                format!("fingerprint {}", probe.fingerprint),
                "(compare with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` run on that host)"
                    .to_owned(),
            ],
            action: format!("trusting {name}"),
            peer: name,
            fields,
            standing,
            record: json!({
                "host": probe.host,
                "port": probe.port,
                "key": probe.key.to_openssh().map_err(|e| TransportError::new(TransportErrorKind::HostTrust, format!("cannot encode the host key: {e}")))?,
            })
            .to_string(),
        })
    }

    fn remember(&self, identity: &PresentedIdentity) -> Result<Remembered, TransportError> {
        let Standing::Unknown {
            destination: Destination::File(file),
        } = &identity.standing
        else {
            return Err(TransportError::new(
                TransportErrorKind::HostTrust,
                format!("{} is not a key `ssh trust` may add", identity.peer),
            ));
        };
        let unreadable = || TransportError::config("not a host key this transport presented");
        let record: serde_json::Value =
            serde_json::from_str(&identity.record).map_err(|_| unreadable())?;
        let (Some(host), Some(port), Some(key)) = (
            record["host"].as_str(),
            record["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
            record["key"].as_str(),
        ) else {
            return Err(unreadable());
        };
        let key = PublicKey::from_openssh(key).map_err(|_| unreadable())?;
        known_hosts::append(file, host, port, &key)
            .map_err(|e| TransportError::config(format!("cannot write {}: {e}", file.display())))?;
        Ok(Remembered::Stored { file: file.clone() })
    }
}
