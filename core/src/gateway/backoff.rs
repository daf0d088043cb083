//! Capped, jittered exponential backoff for reconnects.
//!
//! Jitter matters when many agents lose the same gateway at once (a restart): without it they
//! all come back in the same millisecond and hit the pre-auth connection limit together.

use std::time::Duration;

/// Reconnect delays: `initial × 2^attempt`, capped at `max`, each scaled by a random factor in
/// `[1 - jitter, 1 + jitter]` (never above `max`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Fraction of the delay to randomize, 0.0–1.0.
    pub jitter: f64,
}

impl Default for Backoff {
    /// The reference client's 1 s → ×2 → 30 s, plus ±20 % jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based), using `unit` ∈ [0, 1) as the random
    /// draw so that tests can pin it.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(factor.max(0.0)).min(self.max)
    }

    /// The delay before retry number `attempt`, with a fresh random draw.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, random_unit())
    }
}

fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        let secs: Vec<u64> = (0..7).map(|a| b.delay_with(a, 0.5).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.delay_with(1000, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_bounds_and_under_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay_with(0, 0.0), Duration::from_millis(800));
        assert_eq!(b.delay_with(0, 1.0), Duration::from_millis(1200));
        assert_eq!(b.delay_with(10, 1.0), Duration::from_secs(30));
        for attempt in 0..10 {
            let d = b.delay(attempt);
            assert!(d <= b.max, "{d:?}");
            assert!(d >= b.initial.mul_f64(0.8).min(b.max.mul_f64(0.8)), "{d:?}");
        }
    }
}
