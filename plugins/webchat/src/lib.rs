//! Feature plugin `webchat`: the gateway's chat over its WebSocket (history, send, streamed replies, abort) with an exactly-once outbox.

/// The name profiles use (`[features.webchat]`).
pub const NAME: &str = "webchat";
