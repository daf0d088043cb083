//! Noticing a dead path in seconds: when the gateway has been quiet, a WebSocket ping probes the path, and a probe unanswered for longer than the measured round trip allows declares it dead.
//!
//! The gateway sends a `tick` every 30 s; waiting for two missed ticks (the reference
//! client's rule) notices a silent black hole after a minute, and SSH's keepalives
//! (15 s × 3) after 45 s. Traffic already proves the path alive, so probes go out only after
//! [`LivenessPolicy::probe_after`] of silence; each pong is a round-trip sample, smoothed
//! like TCP's (RFC 6298), and a probe may stay unanswered for a few smoothed round trips,
//! never less than [`LivenessPolicy::min_probe_timeout`]: a slow but live path (300 ms, 1 %
//! loss: a lost segment costs one TCP retransmission, well under a second) is never taken
//! for a dead one. Pure state, driven by the caller's clock, so every rule is a unit test.

use std::time::{Duration, Instant};

/// How quickly silence is probed and how long a probe may stay unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessPolicy {
    /// Silence after which a ping probes the path.
    pub probe_after: Duration,
    /// The least time a probe may wait for any frame before the path is declared dead.
    pub min_probe_timeout: Duration,
    /// The most time, however slow the measured round trip.
    pub max_probe_timeout: Duration,
}

impl Default for LivenessPolicy {
    /// A dead path is noticed within 1 s + 3 s on a fast link (the goal: ≤ 5 s),
    /// at the cost of one small ping per second of silence.
    fn default() -> Self {
        Self {
            probe_after: Duration::from_secs(1),
            min_probe_timeout: Duration::from_secs(3),
            max_probe_timeout: Duration::from_secs(30),
        }
    }
}

/// What the caller should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing until [`Liveness::next_check`].
    Nothing,
    /// Send a ping with this payload (its pong is matched by it).
    Probe([u8; 8]),
    /// The path is dead: nothing came for `silent`, a probe waited `probe_waited`.
    Dead {
        silent: Duration,
        probe_waited: Duration,
    },
}

/// The liveness of one connection.
#[derive(Debug, Clone)]
pub struct Liveness {
    policy: LivenessPolicy,
    last_heard: Instant,
    /// The outstanding probe: its number and when it went out.
    probe: Option<(u64, Instant)>,
    probes_sent: u64,
    /// Smoothed round trip and its variation (RFC 6298), once a pong was timed.
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Liveness {
    /// A connection that was just heard from (the handshake's last frame) at `now`.
    pub fn new(policy: LivenessPolicy, now: Instant) -> Self {
        Self {
            policy,
            last_heard: now,
            probe: None,
            probes_sent: 0,
            srtt: None,
            rttvar: Duration::ZERO,
        }
    }

    /// Any frame arrived: the path is alive; an outstanding probe is answered by it.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.probe = None;
    }

    /// A pong arrived with `payload`: alive, and a round-trip sample when it answers the
    /// outstanding probe (a pong to an older probe, or the gateway's own, is only life).
    pub fn pong(&mut self, payload: &[u8], now: Instant) {
        if let Some((number, sent)) = self.probe {
            if payload == number.to_be_bytes() {
                self.sample(now.saturating_duration_since(sent));
            }
        }
        self.heard(now);
    }

    /// RFC 6298's smoothing: SRTT ← 7/8 SRTT + 1/8 R, RTTVAR ← 3/4 RTTVAR + 1/4 |SRTT − R|.
    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let deviation = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + deviation) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// Makes the next [`poll`](Self::poll) send a probe at once (unless one is out): the
    /// network changed, so the path may be gone however recently it spoke.
    pub fn probe_now(&mut self, now: Instant) {
        if self.probe.is_none() {
            self.last_heard = self
                .last_heard
                .min(now.checked_sub(self.policy.probe_after).unwrap_or(now));
        }
    }

    /// How long the outstanding probe has waited at `now` (zero when none is out).
    pub fn probe_outstanding_for(&self, now: Instant) -> Duration {
        self.probe.map_or(Duration::ZERO, |(_, sent)| {
            now.saturating_duration_since(sent)
        })
    }

    /// The smoothed round trip, once one was measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// How long a probe may stay unanswered: four retransmission timeouts' worth of the
    /// measured path (SRTT + 4·RTTVAR each), within the policy's bounds.
    pub fn probe_timeout(&self) -> Duration {
        let measured = self
            .srtt
            .map_or(Duration::ZERO, |srtt| (srtt + self.rttvar * 4) * 4);
        measured.clamp(self.policy.min_probe_timeout, self.policy.max_probe_timeout)
    }

    /// When [`poll`](Self::poll) has something to say next (half-way through a probe's
    /// time too, so that the caller can show the wait).
    pub fn next_check(&self, now: Instant) -> Instant {
        match self.probe {
            Some((_, sent)) if self.probe_outstanding_for(now) < self.probe_timeout() / 2 => {
                sent + self.probe_timeout() / 2
            }
            Some((_, sent)) => sent + self.probe_timeout(),
            None => self.last_heard + self.policy.probe_after,
        }
    }

    /// What is due at `now`: a probe after enough silence, the verdict once a probe went
    /// unanswered too long, or nothing.
    pub fn poll(&mut self, now: Instant) -> Due {
        match self.probe {
            Some((_, sent)) => {
                let waited = now.saturating_duration_since(sent);
                if waited >= self.probe_timeout() {
                    Due::Dead {
                        silent: now.saturating_duration_since(self.last_heard),
                        probe_waited: waited,
                    }
                } else {
                    Due::Nothing
                }
            }
            None if now.saturating_duration_since(self.last_heard) >= self.policy.probe_after => {
                self.probes_sent += 1;
                self.probe = Some((self.probes_sent, now));
                Due::Probe(self.probes_sent.to_be_bytes())
            }
            None => Due::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn probe(live: &mut Liveness, at: Instant) -> [u8; 8] {
        match live.poll(at) {
            Due::Probe(payload) => payload,
            other => panic!("expected a probe at {at:?}, got {other:?}"),
        }
    }

    #[test]
    fn traffic_means_no_probe_and_silence_means_one() {
        let start = Instant::now();
        let mut live = Liveness::new(LivenessPolicy::default(), start);
        assert_eq!(live.poll(start + 999 * MS), Due::Nothing);
        live.heard(start + 900 * MS);
        assert_eq!(live.poll(start + 1800 * MS), Due::Nothing);
        assert_eq!(live.next_check(start + 1800 * MS), start + 1900 * MS);
        probe(&mut live, start + 1900 * MS);
        // One probe at a time.
        assert_eq!(live.poll(start + 2000 * MS), Due::Nothing);
    }

    #[test]
    fn a_black_hole_is_declared_dead_within_five_seconds_on_a_fast_path() {
        let start = Instant::now();
        let mut live = Liveness::new(LivenessPolicy::default(), start);
        // A healthy loopback-like path: 1 ms round trips.
        let mut now = start;
        for _ in 0..5 {
            now += 1000 * MS;
            let payload = probe(&mut live, now);
            live.pong(&payload, now + MS);
            now += MS;
        }
        assert_eq!(live.probe_timeout(), Duration::from_secs(3));
        // The cut: nothing more comes. Poll as the caller would, at next_check.
        let cut = now;
        let mut verdict = None;
        let mut at = cut;
        for _ in 0..10 {
            at = live.next_check(at);
            match live.poll(at) {
                Due::Dead { silent, .. } => {
                    verdict = Some((at, silent));
                    break;
                }
                Due::Probe(_) | Due::Nothing => {}
            }
        }
        let (at, silent) = verdict.expect("declared dead");
        assert!(at - cut <= Duration::from_secs(5), "{:?}", at - cut);
        assert_eq!(silent, at - cut);
    }

    #[test]
    fn a_slow_lossy_path_gets_time_in_proportion() {
        let start = Instant::now();
        let mut live = Liveness::new(LivenessPolicy::default(), start);
        let mut now = start;
        // 300 ms round trips, one of them doubled by a retransmission.
        for rtt in [300, 310, 290, 600, 300, 305] {
            now += 1000 * MS;
            let payload = probe(&mut live, now);
            now += rtt * MS;
            live.pong(&payload, now);
        }
        let srtt = live.rtt().unwrap();
        assert!(srtt > 280 * MS && srtt < 400 * MS, "{srtt:?}");
        // A pong delayed by another retransmission (~ 1 s) is still in time.
        assert!(live.probe_timeout() >= Duration::from_secs(3));
        // On a 2 s satellite path the timeout grows past the minimum.
        let mut slow = Liveness::new(LivenessPolicy::default(), start);
        let payload = probe(&mut slow, start + 1000 * MS);
        slow.pong(&payload, start + 3000 * MS);
        assert!(
            slow.probe_timeout() > Duration::from_secs(10),
            "{:?}",
            slow.probe_timeout()
        );
        assert!(slow.probe_timeout() <= Duration::from_secs(30));
    }

    #[test]
    fn only_the_matching_pong_is_a_sample_but_any_frame_is_life() {
        let start = Instant::now();
        let mut live = Liveness::new(LivenessPolicy::default(), start);
        let _ = probe(&mut live, start + 1000 * MS);
        // The gateway's own pong (empty payload) answers nothing but proves life.
        live.pong(&[], start + 1001 * MS);
        assert_eq!(live.rtt(), None);
        assert_eq!(live.poll(start + 1500 * MS), Due::Nothing);
        let payload = probe(&mut live, start + 2001 * MS);
        // An event arriving first answers the probe; its late pong is no sample.
        live.heard(start + 2002 * MS);
        live.pong(&payload, start + 2500 * MS);
        assert_eq!(live.rtt(), None);
    }
}
