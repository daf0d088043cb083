//! Numbers for people: ages of auth, heartbeats and pairing requests, and counts of things ("1 session", "2 sessions").

/// An age the way people say it: "45s", "12m", "3h 5m", "4d 2h".
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A count with its noun in the right number: "1 session", "0 sessions", "3 sessions".
/// `noun` is the singular; the plural adds an "s" (every noun we count takes one).
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::{age, count};

    #[test]
    fn counts_say_one_thing_and_many_things() {
        assert_eq!(count(1, "session"), "1 session");
        assert_eq!(count(0, "session"), "0 sessions");
        assert_eq!(count(12, "plugin error"), "12 plugin errors");
    }

    #[test]
    fn ages_use_the_two_largest_units_people_care_about() {
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(61_000), "1m");
        assert_eq!(age(3_900_000), "1h 5m");
        assert_eq!(age(4 * 86_400_000 + 7_200_000), "4d 2h");
    }
}
