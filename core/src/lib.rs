//! clawlink-core: the registries, traits, gateway client and config model every clawlink crate shares.
//!
//! Architecture invariant: this crate knows nothing of SSH, QUIC, TLS, figment, clap or the
//! terminal (beyond [`text`], which only filters strings that some crate will show there).
//! Transports hand it a byte stream; the app hands it settings as JSON values and secrets as
//! [`secrecy::SecretString`]. It does not read configuration files or the environment.

pub mod config;
pub mod feature;
pub mod gateway;
pub mod notify;
pub mod ownership;
pub mod prompt;
pub mod registry;
pub mod text;
pub mod time;
pub mod transport;

pub use secrecy::{ExposeSecret, SecretString};

/// Re-exported so plugin crates can `submit!` descriptors without naming inventory themselves.
pub use inventory;
