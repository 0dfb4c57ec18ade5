//! Input-to-state latency, measured by the client alone. A pilot's turn command sets its ship's
//! spin to `turn x SHIP_TURN_RATE` on the shard that flies it, and the spin comes back in the
//! world updates. So: note when the commanded turn changes, and when an update first shows the
//! new spin. That interval holds the whole path: client to gateway, rate limit, authority,
//! shard link, the shard's fixed tick, the update back, the mirror, the views and the codec.

use std::time::{Duration, Instant};

use sidereal_core::protocol::SHIP_TURN_RATE;

/// A change of turn smaller than this is not probed (its spin is too close to the old one).
const MIN_CHANGE: f32 = 0.25;
/// Spin within this of the expected one counts as arrived (quantization is far finer).
const SPIN_TOLERANCE: f32 = 0.05;

/// One turn command's trip, with where the ship was when it was sent and when it showed (so a
/// test can tell which trips spanned a handover).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySample {
    pub latency: Duration,
    pub from: [f32; 2],
    pub to: [f32; 2],
}

#[derive(Debug, Default)]
pub struct TurnProbe {
    last_turn: f32,
    /// Expected spin, when sent, where the ship was.
    pending: Option<(f32, Instant, [f32; 2])>,
    samples: Vec<LatencySample>,
}

impl TurnProbe {
    /// The pilot sends `turn` at `now`. A change starts a probe (replacing one still open: a
    /// command overtaken before it showed is not a sample).
    pub fn commanded(&mut self, turn: f32, now: Instant, at: [f32; 2]) {
        if (turn - self.last_turn).abs() > MIN_CHANGE {
            self.pending = Some((turn.clamp(-1.0, 1.0) * SHIP_TURN_RATE, now, at));
        }
        self.last_turn = turn;
    }

    /// An update shows the ship at `at` spinning at `spin` at `now`; returns the latency if
    /// that closes the open probe.
    pub fn observed(&mut self, spin: f32, now: Instant, at: [f32; 2]) -> Option<Duration> {
        let (expected, sent, from) = self.pending?;
        if (spin - expected).abs() > SPIN_TOLERANCE {
            return None;
        }
        self.pending = None;
        let latency = now.saturating_duration_since(sent);
        self.samples.push(LatencySample {
            latency,
            from,
            to: at,
        });
        Some(latency)
    }

    pub fn samples(&self) -> &[LatencySample] {
        &self.samples
    }

    pub fn latencies(&self) -> Vec<Duration> {
        self.samples.iter().map(|s| s.latency).collect()
    }
}

/// The `q` quantile (0..=1) of `samples`, nearest rank; `None` without samples.
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_closes_when_the_commanded_spin_shows() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = TurnProbe::default();
        const A: [f32; 2] = [0.0, 0.0];
        const B: [f32; 2] = [1.0, 2.0];
        p.commanded(0.0, t0, A);
        assert_eq!(p.observed(0.0, ms(10), B), None, "no change, no probe");
        p.commanded(0.6, ms(100), A);
        p.commanded(0.6, ms(133), A);
        assert_eq!(p.observed(0.0, ms(150), B), None, "the old spin");
        assert_eq!(p.observed(1.2, ms(180), B), Some(Duration::from_millis(80)));
        assert_eq!(p.observed(1.2, ms(210), B), None, "closed once");
        // Overtaken: only the newest change is timed.
        p.commanded(-0.6, ms(300), A);
        p.commanded(0.0, ms(320), A);
        assert_eq!(p.observed(-1.2, ms(340), B), None);
        assert_eq!(p.observed(0.0, ms(390), B), Some(Duration::from_millis(70)));
        // A small change is not probed.
        p.commanded(0.1, ms(400), A);
        assert_eq!(p.observed(0.2, ms(450), B), None);
        assert_eq!(p.latencies().len(), 2);
        assert_eq!(p.samples()[0].to, [1.0, 2.0]);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&s, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&s, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&s, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&s[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
