//! Feature plugin `health`: polls and follows the gateway's health and reports it as the macOS app does.

/// The name profiles use (`[features.health]`).
pub const NAME: &str = "health";
