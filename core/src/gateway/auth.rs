//! Gateway credentials and the store of device tokens the gateway issues, and how the two combine in `connect.auth`.
//!
//! Precedence, as the protocol reference describes: a configured shared token goes in
//! `auth.token`; without one, the stored device token for this gateway goes in
//! `auth.deviceToken`; a configured password goes in `auth.password`. Whatever ends up in the
//! token slot is what the device signature covers.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};

use super::protocol::AuthParams;

/// The shared secret(s) the user configured for a gateway.
#[derive(Clone, Default)]
pub struct Credentials {
    pub token: Option<SecretString>,
    pub password: Option<SecretString>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Credentials {
    /// Whether any shared secret is configured.
    pub fn has_shared_secret(&self) -> bool {
        self.token.is_some() || self.password.is_some()
    }
}

/// Where device tokens live between runs (the app keeps them in a 0600 file).
///
/// Keys are opaque strings built by [`device_token_key`]; implementations must not log values.
pub trait DeviceTokenStore: Send + Sync {
    fn load(&self, key: &str) -> Option<SecretString>;
    /// Persists a token; failing to persist is reported but does not fail the connection.
    fn save(&self, key: &str, token: &SecretString) -> Result<(), String>;
    fn forget(&self, key: &str) -> Result<(), String>;
}

/// The store key of a device token: per gateway, device and role, as the gateway issues them.
pub fn device_token_key(gateway_key: &str, device_id: &str, role: &str) -> String {
    format!("{gateway_key}|{device_id}|{role}")
}

/// A store that forgets everything at exit (tests, `--no-state`).
#[derive(Default)]
pub struct MemoryTokenStore {
    tokens: Mutex<HashMap<String, String>>,
}

impl DeviceTokenStore for MemoryTokenStore {
    fn load(&self, key: &str) -> Option<SecretString> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(key).cloned().map(SecretString::from)
    }

    fn save(&self, key: &str, token: &SecretString) -> Result<(), String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(key.to_owned(), token.expose_secret().to_owned());
        Ok(())
    }

    fn forget(&self, key: &str) -> Result<(), String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(key);
        Ok(())
    }
}

/// How one connect attempt authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPlan {
    /// The configured secrets, plus the stored device token when no shared token is set.
    Configured,
    /// Only the stored device token (a retry after the gateway refused the shared token).
    DeviceTokenOnly,
    /// The configured secrets without any stored device token (after the gateway refused it).
    WithoutDeviceToken,
}

/// The `connect.auth` object for `plan`, and the token the signature must cover.
pub fn build_auth(
    plan: AuthPlan,
    credentials: &Credentials,
    stored_device_token: Option<&SecretString>,
) -> (AuthParams, String) {
    let expose = |s: &SecretString| s.expose_secret().to_owned();
    let mut params = AuthParams::default();
    match plan {
        AuthPlan::DeviceTokenOnly => {
            params.device_token = stored_device_token.map(expose);
        }
        AuthPlan::Configured | AuthPlan::WithoutDeviceToken => {
            if let Some(token) = &credentials.token {
                params.token = Some(expose(token));
            } else if plan == AuthPlan::Configured {
                params.device_token = stored_device_token.map(expose);
            }
            params.password = credentials.password.as_ref().map(expose);
        }
    }
    let signed = params
        .token
        .clone()
        .or_else(|| params.device_token.clone())
        .unwrap_or_default();
    (params, signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn shared_token_wins_and_is_signed() {
        let creds = Credentials {
            token: Some(secret("shared")),
            password: None,
        };
        let (params, signed) = build_auth(AuthPlan::Configured, &creds, Some(&secret("dev")));
        assert_eq!(params.token.as_deref(), Some("shared"));
        assert_eq!(params.device_token, None);
        assert_eq!(signed, "shared");
    }

    #[test]
    fn device_token_is_used_without_shared_token() {
        let creds = Credentials::default();
        let (params, signed) = build_auth(AuthPlan::Configured, &creds, Some(&secret("dev")));
        assert_eq!(params.device_token.as_deref(), Some("dev"));
        assert_eq!(signed, "dev");
    }

    #[test]
    fn password_travels_beside_the_device_token_and_is_never_signed() {
        let creds = Credentials {
            token: None,
            password: Some(secret("pw")),
        };
        let (params, signed) = build_auth(AuthPlan::Configured, &creds, Some(&secret("dev")));
        assert_eq!(params.password.as_deref(), Some("pw"));
        assert_eq!(params.device_token.as_deref(), Some("dev"));
        assert_eq!(signed, "dev");
        let (params, signed) =
            build_auth(AuthPlan::WithoutDeviceToken, &creds, Some(&secret("dev")));
        assert_eq!(params.device_token, None);
        assert_eq!(signed, "");
    }

    #[test]
    fn retry_plan_sends_only_the_device_token() {
        let creds = Credentials {
            token: Some(secret("wrong")),
            password: None,
        };
        let (params, signed) = build_auth(AuthPlan::DeviceTokenOnly, &creds, Some(&secret("dev")));
        assert_eq!(params.token, None);
        assert_eq!(params.device_token.as_deref(), Some("dev"));
        assert_eq!(signed, "dev");
    }

    #[test]
    fn memory_store_roundtrips() {
        let store = MemoryTokenStore::default();
        let key = device_token_key("ws://h:1", "dev", "operator");
        assert!(store.load(&key).is_none());
        store.save(&key, &secret("t")).unwrap();
        assert_eq!(store.load(&key).unwrap().expose_secret(), "t");
        store.forget(&key).unwrap();
        assert!(store.load(&key).is_none());
    }
}
