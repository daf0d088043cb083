//! `CLAWLINK_TOKEN` / `CLAWLINK_PASSWORD`: read once at start-up into memory and removed from
//! the process environment, so that no child (the browser, ssh, the recognizer, chime
//! commands, lsof, systemctl, a shell) inherits them, wherever it is spawned, now or later.

use std::sync::OnceLock;

use secrecy::SecretString;

/// The environment variable holding the gateway token.
pub const TOKEN: &str = "CLAWLINK_TOKEN";
/// The environment variable holding the gateway password.
pub const PASSWORD: &str = "CLAWLINK_PASSWORD";

/// What the environment held at start-up (empty values count as unset).
#[derive(Default)]
struct Captured {
    token: Option<SecretString>,
    password: Option<SecretString>,
}

static CAPTURED: OnceLock<Captured> = OnceLock::new();

/// Moves the secret variables from the environment into memory. Call first thing in `main`,
/// while the process has one thread: changing the environment races with any other thread
/// reading it (which is why Rust 2024 calls `remove_var` unsafe).
pub fn take_from_environment() {
    let take = |name: &str| {
        let value = std::env::var_os(name)?;
        std::env::remove_var(name);
        // A value that is not UTF-8 cannot be a gateway secret (the protocol is JSON); it is
        // treated as unset, as `std::env::var` did before.
        value
            .into_string()
            .ok()
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
    };
    let captured = Captured {
        token: take(TOKEN),
        password: take(PASSWORD),
    };
    let _ = CAPTURED.set(captured);
}

/// The value `name` (`TOKEN` or `PASSWORD`) had at start-up, when it was set and not empty.
pub fn get(name: &str) -> Option<&'static SecretString> {
    let captured = CAPTURED.get()?;
    match name {
        TOKEN => captured.token.as_ref(),
        PASSWORD => captured.password.as_ref(),
        _ => None,
    }
}
