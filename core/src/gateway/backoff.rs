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
    /// 0.5 s → ×2 → 5 s, plus ±20 % jitter. The reference client caps at 30 s, which sleeps
    /// through a restored network for up to half a minute (the macOS app's users report
    /// 30–60 s of failed reconnects after resume); a remote control should be back within
    /// seconds of its path. A gateway that stays down costs one attempt per ~5 s, and the
    /// jitter still spreads a crowd of clients over a second.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
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
        let ms: Vec<u128> = (0..6).map(|a| b.delay_with(a, 0.5).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(b.delay_with(1000, 0.5), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_bounds_and_under_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay_with(0, 0.0), Duration::from_millis(400));
        assert_eq!(b.delay_with(0, 1.0), Duration::from_millis(600));
        assert_eq!(b.delay_with(10, 1.0), Duration::from_secs(5));
        for attempt in 0..10 {
            let d = b.delay(attempt);
            assert!(d <= b.max, "{d:?}");
            assert!(d >= b.initial.mul_f64(0.8).min(b.max.mul_f64(0.8)), "{d:?}");
        }
    }
}
