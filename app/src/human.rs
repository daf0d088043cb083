//! Numbers for people: ages of auth, heartbeats and pairing requests.

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

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_use_the_two_largest_units_people_care_about() {
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(61_000), "1m");
        assert_eq!(age(3_900_000), "1h 5m");
        assert_eq!(age(4 * 86_400_000 + 7_200_000), "4d 2h");
    }
}
