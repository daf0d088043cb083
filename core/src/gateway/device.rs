//! The device identity: an Ed25519 key whose signature over the challenge proves who is connecting.
//!
//! The gateway pairs *devices*, not connections: the device id (hex SHA-256 of the raw public
//! key) is what it approves, and the device token it issues is bound to it. So the key is
//! generated once and kept (the app stores the 32-byte seed in a 0600 file). The signed
//! payload is the protocol's v3 string; one byte of difference and the gateway answers
//! "device signature invalid".

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

/// An Ed25519 device key and its derived public identifiers.
pub struct DeviceIdentity {
    key: SigningKey,
    id: String,
    public_key: String,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// The identity for a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let raw_public = key.verifying_key().to_bytes();
        Self {
            id: hex::encode(Sha256::digest(raw_public)),
            public_key: URL_SAFE_NO_PAD.encode(raw_public),
            key,
        }
    }

    /// A new random identity.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(Self::from_seed(seed))
    }

    /// The seed, for the app to persist. Treat it as a secret.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// `device.id`: lowercase hex SHA-256 of the raw public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `device.publicKey`: the raw 32-byte key, base64url without padding.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// `device.signature` over `payload`: Ed25519, base64url without padding.
    pub fn sign(&self, payload: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).to_bytes())
    }
}

/// The fields the v3 device signature covers, in the exact form they are sent.
#[derive(Debug, Clone, Copy)]
pub struct SignedFields<'a> {
    pub device_id: &'a str,
    pub client_id: &'a str,
    pub client_mode: &'a str,
    pub role: &'a str,
    /// In the order sent in `connect.scopes`: reordering breaks the signature.
    pub scopes: &'a [String],
    /// The challenge's `ts`.
    pub signed_at: u64,
    /// What goes in the token slot: `auth.token`, else `auth.deviceToken`, else "".
    pub token: &'a str,
    pub nonce: &'a str,
    pub platform: &'a str,
    pub device_family: &'a str,
}

/// The v3 payload string:
/// `v3|deviceId|clientId|clientMode|role|scopes|signedAt|token|nonce|platform|deviceFamily`,
/// with platform and family trimmed and lower-cased on ASCII only (as the gateway does).
pub fn v3_payload(f: &SignedFields<'_>) -> String {
    format!(
        "v3|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        f.device_id,
        f.client_id,
        f.client_mode,
        f.role,
        f.scopes.join(","),
        f.signed_at,
        f.token,
        f.nonce,
        normalize_metadata(f.platform),
        normalize_metadata(f.device_family),
    )
}

fn normalize_metadata(value: &str) -> String {
    value.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's test vector, verified against the gateway's own verifier.
    #[test]
    fn reference_vector_signs_identically() {
        let identity = DeviceIdentity::from_seed([7u8; 32]);
        assert_eq!(
            identity.public_key(),
            "6kpsY-KcUgq-9VB7Ey7F-ZVHdq6-vnuSQh7qaRRG0iw"
        );
        assert_eq!(
            identity.id(),
            "fe812c12f3ab4ce6ac5db69ac352f906cb1b11ef43fb33e252ef7ff552263889"
        );
        let scopes = ["operator.read".to_string(), "operator.write".to_string()];
        let payload = v3_payload(&SignedFields {
            device_id: identity.id(),
            client_id: "openclaw-linux",
            client_mode: "ui",
            role: "operator",
            scopes: &scopes,
            signed_at: 1_795_530_938_660,
            token: "testtoken123",
            nonce: "8683506a-c9f2-4182-a339-13d7797f9a48",
            platform: "linux",
            device_family: "linux",
        });
        assert_eq!(
            payload,
            "v3|fe812c12f3ab4ce6ac5db69ac352f906cb1b11ef43fb33e252ef7ff552263889|openclaw-linux|ui|operator|operator.read,operator.write|1795530938660|testtoken123|8683506a-c9f2-4182-a339-13d7797f9a48|linux|linux"
        );
        assert_eq!(
            identity.sign(&payload),
            "1cGwonImgoR23pYkGjpYjjncuN7AfgWJ6NG7dP1nkYnAhbA0XHfsJdZbVld1tjQx6Wm0JnrqXpWjR5tSPlSwAg"
        );
    }

    /// The upstream repository's vector: trimming and ASCII lower-casing of the metadata.
    #[test]
    fn metadata_is_trimmed_and_lowercased() {
        let scopes = ["operator.admin".to_string(), "operator.read".to_string()];
        let payload = v3_payload(&SignedFields {
            device_id: "dev-1",
            client_id: "openclaw-macos",
            client_mode: "ui",
            role: "operator",
            scopes: &scopes,
            signed_at: 1_700_000_000_000,
            token: "tok-123",
            nonce: "nonce-abc",
            platform: "  IOS  ",
            device_family: "  iPhone  ",
        });
        assert_eq!(
            payload,
            "v3|dev-1|openclaw-macos|ui|operator|operator.admin,operator.read|1700000000000|tok-123|nonce-abc|ios|iphone"
        );
    }

    #[test]
    fn generated_identities_differ_and_roundtrip_their_seed() {
        let a = DeviceIdentity::generate().unwrap();
        let b = DeviceIdentity::generate().unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(DeviceIdentity::from_seed(a.seed()).id(), a.id());
        assert_eq!(a.id().len(), 64);
        assert!(!format!("{a:?}").contains(&hex::encode(a.seed())));
    }
}
