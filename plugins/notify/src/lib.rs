//! Feature plugin `notify`: a second gateway connection with role `node` that answers `system.notify` with a desktop notification and a sound.

/// The name profiles use (`[features.notify]`).
pub const NAME: &str = "notify";
