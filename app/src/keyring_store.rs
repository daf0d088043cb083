//! Gateway secrets in the OS keyring (Secret Service on Linux, Keychain on macOS), for `clawlink auth set|status|clear`.
//!
//! The keyring is the last place the credential lookup tries (after a flag's file, the
//! environment and the profile's files), and only when none of those named a secret, so a
//! machine without a keyring daemon pays nothing. Entries are keyed by profile:
//! service `clawlink`, user `<profile>/token` or `<profile>/password`.

use secrecy::{ExposeSecret, SecretString};

use crate::failure::Failure;

const SERVICE: &str = "clawlink";

/// Which secret of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    Token,
    Password,
}

impl SecretKind {
    pub fn name(self) -> &'static str {
        match self {
            SecretKind::Token => "token",
            SecretKind::Password => "password",
        }
    }
}

fn entry(profile: &str, kind: SecretKind) -> Result<keyring::Entry, keyring::Error> {
    keyring::Entry::new(SERVICE, &format!("{profile}/{}", kind.name()))
}

/// The keyring's "user" field for this secret (shown by `auth status`).
pub fn label(profile: &str, kind: SecretKind) -> String {
    format!("OS keyring ({SERVICE}, {profile}/{})", kind.name())
}

fn unavailable(e: &keyring::Error) -> Failure {
    Failure::config(
        format!("the OS keyring is not available: {e}"),
        Some(
            "on Linux a Secret Service must run on the session bus (GNOME Keyring, KeePassXC); \
             or keep the secret in a 0600 file named by auth.token_file / auth.password_file"
                .into(),
        ),
    )
}

/// Reads a secret; `Ok(None)` when there is none or no keyring at all (logged at debug).
pub async fn get(profile: &str, kind: SecretKind) -> Option<SecretString> {
    let profile = profile.to_owned();
    let result = tokio::task::spawn_blocking(move || entry(&profile, kind)?.get_password()).await;
    match result {
        Ok(Ok(secret)) => Some(SecretString::from(secret)),
        Ok(Err(keyring::Error::NoEntry)) => None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no OS keyring secret");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "keyring lookup task failed");
            None
        }
    }
}

/// Whether the keyring can be used at all, asked before the user types a secret: a lookup
/// that finds the entry or finds none proves a keyring answers; anything else (no Secret
/// Service on the bus, a locked-out Keychain) is the failure `set` would end with.
pub async fn check_available(profile: &str, kind: SecretKind) -> Result<(), Failure> {
    let profile = profile.to_owned();
    let result = tokio::task::spawn_blocking(move || entry(&profile, kind)?.get_password())
        .await
        .map_err(|e| Failure::config(format!("keyring task failed: {e}"), None))?;
    match result {
        Ok(_) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(unavailable(&e)),
    }
}

/// Stores a secret.
pub async fn set(profile: &str, kind: SecretKind, secret: SecretString) -> Result<(), Failure> {
    let profile = profile.to_owned();
    tokio::task::spawn_blocking(move || entry(&profile, kind)?.set_password(secret.expose_secret()))
        .await
        .map_err(|e| Failure::config(format!("keyring task failed: {e}"), None))?
        .map_err(|e| unavailable(&e))
}

/// Deletes a secret; true when one was there.
pub async fn clear(profile: &str, kind: SecretKind) -> Result<bool, Failure> {
    let profile = profile.to_owned();
    let result = tokio::task::spawn_blocking(move || entry(&profile, kind)?.delete_credential())
        .await
        .map_err(|e| Failure::config(format!("keyring task failed: {e}"), None))?;
    match result {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(unavailable(&e)),
    }
}
