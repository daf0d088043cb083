//! The `system.notify` node command's vocabulary, shared by the app's `notify` command (the caller) and the notify feature (the node): the command name, priorities and the node's error codes.
//!
//! It lives in core because both sides need it and the app builds `notify` whether or not
//! the notify feature crate is compiled in (`gateway-protocol.md` §4.16).

/// The node command a notification travels as.
pub const COMMAND: &str = "system.notify";

/// Error codes a node answers `system.notify` with (the official nodes' vocabulary).
pub mod codes {
    /// Bad parameters (empty notification, unknown priority, …).
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// No desktop notification service to deliver through.
    pub const NOTIFICATIONS_UNAVAILABLE: &str = "NOTIFICATIONS_UNAVAILABLE";
    /// The notification service refused us (permission denied).
    pub const NOT_AUTHORIZED: &str = "NOT_AUTHORIZED";
    /// The requested sound is neither a macOS system sound name nor in the sound theme.
    pub const UNKNOWN_SOUND: &str = "UNKNOWN_SOUND";
}

/// `priority`: how insistent the notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    Passive,
    /// The default, as on the macOS app.
    #[default]
    Active,
    TimeSensitive,
}

impl Priority {
    /// The wire names, in order of insistence.
    pub const NAMES: [&'static str; 3] = ["passive", "active", "timeSensitive"];

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "passive" => Some(Self::Passive),
            "active" => Some(Self::Active),
            "timeSensitive" => Some(Self::TimeSensitive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passive => "passive",
            Self::Active => "active",
            Self::TimeSensitive => "timeSensitive",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_itself() {
        for name in Priority::NAMES {
            assert_eq!(Priority::parse(name).map(Priority::as_str), Some(name));
        }
        assert_eq!(Priority::parse("urgent"), None);
        assert_eq!(Priority::default(), Priority::Active);
    }
}
