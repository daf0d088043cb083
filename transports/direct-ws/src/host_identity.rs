//! `clawlink tls trust`: a wss:// gateway's certificate as the host-identity capability, remembered as a public-key pin in the profile.
//!
//! The pin is the SPKI one (`tls.spki_sha256`): it survives certificate renewal as long as
//! the gateway keeps its key, which leaf pins do not (openclaw #150152).

use async_trait::async_trait;
use clawlink_core::transport::{
    Destination, HostIdentity, PresentedIdentity, Remembered, Standing, TransportError,
};
use serde_json::json;

use crate::tls::{colon_hex, hex};
use crate::DirectWs;

#[async_trait]
impl HostIdentity for DirectWs {
    fn peer(&self) -> Result<String, TransportError> {
        if !self.url.tls {
            return Err(TransportError::config(format!(
                "{} is not a wss:// URL; there is no certificate to trust",
                self.url.to_url()
            )));
        }
        Ok(self.url.to_url())
    }

    async fn presented(&self) -> Result<PresentedIdentity, TransportError> {
        let url = self.peer()?;
        let seen = self.probe_certificate().await?;
        let Some(spki) = seen.spki else {
            return Err(TransportError::config(
                "the certificate's public key could not be extracted; pin the leaf instead (tls.fingerprint)",
            )
            .with_fix(format!("tls.fingerprint = \"sha256:{}\"", hex(&seen.leaf))));
        };
        let mut fields = serde_json::Map::new();
        fields.insert("url".into(), json!(url));
        fields.insert("leafSha256".into(), json!(hex(&seen.leaf)));
        fields.insert("spkiSha256".into(), json!(hex(&spki)));
        Ok(PresentedIdentity {
            lines: vec![
                format!("{url} presents a certificate with"),
                format!("  leaf sha256 {}", colon_hex(&seen.leaf)),
                format!("  spki sha256 {}", colon_hex(&spki)),
                "(on the gateway host: `openssl x509 -in ~/.openclaw/gateway/tls/gateway-cert.pem -noout -fingerprint -sha256` shows the leaf one)".to_owned(),
            ],
            action: "pinning the certificate's key".to_owned(),
            peer: url,
            fields,
            // A pin is whatever the profile says; `tls trust` always offers to (re)write it.
            standing: Standing::Unknown {
                destination: Destination::Profile,
            },
            record: hex(&spki),
        })
    }

    fn remember(&self, identity: &PresentedIdentity) -> Result<Remembered, TransportError> {
        Ok(Remembered::ProfilePatch {
            key: "tls.spki_sha256".into(),
            value: identity.record.clone(),
            // A leaf pin next to the key pin would break at the next renewal.
            remove: vec!["tls.fingerprint".into()],
        })
    }
}
