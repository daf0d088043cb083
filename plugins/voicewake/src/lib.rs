//! Feature plugin `voicewake`: trigger phrases shared with the gateway, transcripts from a pluggable recognizer, commands forwarded to the gateway's `agent`.

/// The name profiles use (`[features.voicewake]`).
pub const NAME: &str = "voicewake";
