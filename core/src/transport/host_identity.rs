//! The host-identity capability: what a transport's peer presents (an SSH host key, a TLS
//! certificate), whether it is trusted already, and how to remember it (`ssh trust`, `tls trust`).
//!
//! The app runs one flow for every transport offering it: show [`PresentedIdentity`], ask,
//! then [`HostIdentity::remember`]. Where the identity is remembered differs: a transport
//! with its own trust store (known_hosts) writes it itself; one whose trust is a pin in the
//! profile hands the app a [`Remembered::ProfilePatch`] to write into the config file.

use std::path::PathBuf;

use async_trait::async_trait;

use super::TransportError;

/// Checking and remembering the identity of the peer a transport connects to.
#[async_trait]
pub trait HostIdentity: Send + Sync {
    /// The peer whose identity is checked, as users read it (`wss://gw.example:443/`),
    /// without touching the network. Fails when the transport has no identity to check
    /// there (a plaintext `ws://` URL), before anything is sent.
    fn peer(&self) -> Result<String, TransportError>;

    /// Fetches the identity the peer presents now, without authenticating, and what the
    /// local trust store says about it.
    async fn presented(&self) -> Result<PresentedIdentity, TransportError>;

    /// Remembers `identity` (returned by [`HostIdentity::presented`] of this transport) as
    /// trusted. Called only after the user agreed.
    fn remember(&self, identity: &PresentedIdentity) -> Result<Remembered, TransportError>;
}

/// What the peer presented.
#[derive(Debug, Clone)]
pub struct PresentedIdentity {
    /// The peer, as [`HostIdentity::peer`] names it.
    pub peer: String,
    /// What accepting it does, for the consent question's messages (`trusting gw.example`).
    pub action: String,
    /// Lines for the text output: what the user compares out of band, and how.
    pub lines: Vec<String>,
    /// The same facts for `--json`, in the order they are printed.
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub standing: Standing,
    /// The transport's own record of what was seen (e.g. the key in OpenSSH format), read
    /// back by `remember`; opaque to the app.
    pub record: String,
}

/// What the local trust store says about a presented identity.
#[derive(Debug, Clone)]
pub enum Standing {
    /// Trusted already; `message` says where, `detail` the same for `--json`.
    AlreadyTrusted {
        message: String,
        detail: serde_json::Value,
    },
    /// Must not be trusted (a revoked key, or a changed one the user has to remove first).
    Refused(TransportError),
    /// Not known: the user may choose to trust it, and [`HostIdentity::remember`] would
    /// record it in `destination`.
    Unknown { destination: Destination },
}

/// Where a remembered identity goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A file the transport writes itself (known_hosts).
    File(PathBuf),
    /// The profile's settings table of this transport, written by the app.
    Profile,
}

/// What [`HostIdentity::remember`] did, or asks the app to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remembered {
    /// Written by the transport to `file`.
    Stored { file: PathBuf },
    /// Set `key` (a dotted path in the transport's settings table, `tls.spki_sha256`) to
    /// `value` and delete the keys in `remove`, which the new value supersedes.
    ProfilePatch {
        key: String,
        value: String,
        remove: Vec<String>,
    },
}
