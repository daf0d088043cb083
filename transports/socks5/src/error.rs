//! Every way a SOCKS5 connection can fail, each with the cause and the fix in its message and the ABI code that says whether retrying helps.

use std::io;
use std::path::PathBuf;

use clawlink_plugin_sdk::{ErrorCode, PluginError};

/// A failure of the `socks5` transport. No variant ever holds the password.
#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    /// A key the transport does not know (most likely a typo).
    #[error("unknown setting `{key}` for transport socks5 (known settings: {known})")]
    UnknownSetting {
        /// The key as written.
        key: String,
        /// The known keys, comma-separated.
        known: String,
    },
    /// A setting is missing or has a value the transport cannot use.
    #[error("setting `{key}` of transport socks5: {problem}")]
    BadSetting {
        /// The setting's key.
        key: &'static str,
        /// What is wrong and how to write it.
        problem: String,
    },
    /// The password file cannot be used (missing, not a regular file, not ours, bad content).
    #[error("password file {}: {problem}", path.display())]
    PasswordFile {
        /// The file as the settings name it.
        path: PathBuf,
        /// What is wrong and the fix.
        problem: String,
    },
    /// The password file is open to group or others: the password may have leaked.
    #[error(
        "password file {} is accessible to group or others (mode {mode:04o}): run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    PasswordFileMode {
        /// The file as the settings name it.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The proxy's host name did not resolve.
    #[error("cannot resolve the SOCKS5 proxy's host {host}: {source}")]
    Resolve {
        /// The proxy host as configured.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Nothing listens on the proxy's port.
    #[error("SOCKS5 proxy {proxy} refused the connection: is the proxy running (e.g. `ssh -D {port} -N <host>`)?")]
    ProxyRefused {
        /// The proxy as host:port.
        proxy: String,
        /// Its port, for the example command.
        port: u16,
    },
    /// A step took longer than `connect_timeout_ms` in all.
    #[error("SOCKS5 proxy {proxy}: no answer during {step} within {ms} ms (connect_timeout_ms): is the proxy up and reachable?")]
    Timeout {
        /// The proxy as host:port.
        proxy: String,
        /// What we were doing.
        step: &'static str,
        /// The configured limit.
        ms: u64,
    },
    /// Any other socket error talking to the proxy.
    #[error("SOCKS5 proxy {proxy}: {step} failed: {source}")]
    Io {
        /// The proxy as host:port.
        proxy: String,
        /// What we were doing.
        step: &'static str,
        /// The socket's error.
        source: io::Error,
    },
    /// The proxy hung up in the middle of a step.
    #[error("SOCKS5 proxy {proxy} closed the connection during {step}")]
    Closed {
        /// The proxy as host:port.
        proxy: String,
        /// What we were doing.
        step: &'static str,
    },
    /// The proxy hung up instead of answering CONNECT: how `ssh -D` reports a target it
    /// could not reach (it sends no failure reply).
    #[error("SOCKS5 proxy {proxy} closed the connection instead of answering CONNECT to {target}, as `ssh -D` does when it cannot reach the target: is the gateway running at {target} as the proxy's host sees it?")]
    ClosedOnConnect {
        /// The proxy as host:port.
        proxy: String,
        /// The target as host:port.
        target: String,
    },
    /// The proxy answered something that is not SOCKS5.
    #[error("{proxy} is not a SOCKS5 proxy (its first reply byte is 0x{version:02x}, not 0x05): check `proxy`; an HTTP proxy or a SOCKS4 one will not do")]
    NotSocks5 {
        /// The proxy as host:port.
        proxy: String,
        /// The version byte it sent.
        version: u8,
    },
    /// The proxy broke the protocol (a method we did not offer, a truncated reply, ...).
    #[error("SOCKS5 proxy {proxy} broke the protocol: {problem}")]
    Protocol {
        /// The proxy as host:port.
        proxy: String,
        /// What it did.
        problem: String,
    },
    /// The proxy wants authentication we do not have, or accepts none of our methods.
    #[error(
        "SOCKS5 proxy {proxy} accepts none of the offered authentication methods ({offered}){hint}"
    )]
    NoAcceptableMethod {
        /// The proxy as host:port.
        proxy: String,
        /// What we offered.
        offered: &'static str,
        /// The fix, starting with ": ".
        hint: &'static str,
    },
    /// The proxy refused our username and password (RFC 1929 status not 0).
    #[error("SOCKS5 proxy {proxy} refused username `{username}` (status 0x{status:02x}): check `username` and the password in {}", password_file.display())]
    AuthRefused {
        /// The proxy as host:port.
        proxy: String,
        /// The username we sent (not a secret).
        username: String,
        /// Where the password came from (the password itself is never shown).
        password_file: PathBuf,
        /// The status byte.
        status: u8,
    },
    /// The proxy answered our CONNECT with a failure code (RFC 1928 section 6).
    #[error("SOCKS5 proxy {proxy} could not connect to {target}: {meaning} (reply 0x{reply:02x}): {explanation}")]
    Reply {
        /// The proxy as host:port.
        proxy: String,
        /// The target as host:port.
        target: String,
        /// The reply code.
        reply: u8,
        /// The RFC's name for it.
        meaning: &'static str,
        /// The likely cause and fix.
        explanation: String,
    },
}

impl Socks5Error {
    /// Whether retrying can help, as the ABI code the host acts on.
    pub fn code(&self) -> ErrorCode {
        match self {
            Socks5Error::UnknownSetting { .. }
            | Socks5Error::BadSetting { .. }
            | Socks5Error::PasswordFile { .. }
            | Socks5Error::PasswordFileMode { .. } => ErrorCode::Config,
            Socks5Error::NoAcceptableMethod { .. } | Socks5Error::AuthRefused { .. } => {
                ErrorCode::Auth
            }
            // A NotSocks5 peer will not become one by retrying: `proxy` is wrong.
            Socks5Error::NotSocks5 { .. } => ErrorCode::Config,
            Socks5Error::Reply { reply, .. } => reply_code(*reply),
            Socks5Error::Resolve { .. }
            | Socks5Error::ProxyRefused { .. }
            | Socks5Error::Timeout { .. }
            | Socks5Error::Io { .. }
            | Socks5Error::Closed { .. }
            | Socks5Error::ClosedOnConnect { .. }
            | Socks5Error::Protocol { .. } => ErrorCode::Connect,
        }
    }
}

/// The ABI code of a CONNECT reply: the network may heal (retry); a ruleset refusal is the
/// proxy refusing us (like credentials, only an admin fixes it); an unsupported command or
/// address type never changes for this proxy.
fn reply_code(reply: u8) -> ErrorCode {
    match reply {
        0x02 => ErrorCode::Auth,
        0x07 | 0x08 => ErrorCode::Config,
        _ => ErrorCode::Connect,
    }
}

impl From<Socks5Error> for PluginError {
    fn from(error: Socks5Error) -> PluginError {
        PluginError::new(error.code(), error.to_string())
    }
}
