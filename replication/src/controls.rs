//! Players' commands on the way in, checked before they reach a shard: finite, in range, and
//! at a bounded rate per player. Pure decisions over plain numbers; the gate keeps the per-player
//! rate state and the counts `/metrics` exports.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::login::limits::RateLimiter;

/// Every `result` label of `sidereal_inputs_total`.
pub const INPUT_RESULTS: [&str; 5] = [
    "accepted",
    "clamped",
    "non_finite",
    "rate_limited",
    "no_ship",
];

/// Why a command was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InputRefusal {
    #[error("thrust or turn is not a finite number")]
    NonFinite,
    #[error("more commands than one per tick")]
    RateLimited,
    #[error("the player has no ship in the world")]
    NoShip,
}

impl InputRefusal {
    pub fn label(&self) -> &'static str {
        match self {
            InputRefusal::NonFinite => "non_finite",
            InputRefusal::RateLimited => "rate_limited",
            InputRefusal::NoShip => "no_ship",
        }
    }
}

/// A command's thrust and turn, each clamped into [-1, 1], and whether clamping was needed.
/// NaN and infinities are refused: clamping cannot say what they meant.
pub fn validate_input(thrust: f32, turn: f32) -> Result<(f32, f32, bool), InputRefusal> {
    if !thrust.is_finite() || !turn.is_finite() {
        return Err(InputRefusal::NonFinite);
    }
    let (t, r) = (thrust.clamp(-1.0, 1.0), turn.clamp(-1.0, 1.0));
    Ok((t, r, t != thrust || r != turn))
}

/// Per-player rate limits and the counts of what came in.
#[derive(Debug)]
pub struct InputGate {
    per_player: RateLimiter<u64>,
    counts: BTreeMap<&'static str, u64>,
}

impl InputGate {
    /// One command per tick on average (with half as much again for jitter), bursts of a
    /// second's worth.
    pub fn new(tick_hz: u32) -> Self {
        let hz = f64::from(tick_hz.max(1));
        Self {
            per_player: RateLimiter::new(hz * 1.5, tick_hz.max(1), 100_000),
            counts: INPUT_RESULTS.iter().map(|r| (*r, 0)).collect(),
        }
    }

    /// Admits or refuses one command of `player`; counts it either way.
    pub fn admit(
        &mut self,
        player: u64,
        thrust: f32,
        turn: f32,
        now: Instant,
    ) -> Result<(f32, f32, bool), InputRefusal> {
        let r = self
            .per_player
            .take(&player, now)
            .map_err(|_| InputRefusal::RateLimited)
            .and_then(|()| validate_input(thrust, turn));
        match &r {
            Ok((.., true)) => self.count("clamped"),
            Ok(_) => self.count("accepted"),
            Err(e) => self.count(e.label()),
        }
        r
    }

    /// Counts an admitted command that found no ship (it was counted as accepted).
    pub fn no_ship(&mut self) {
        self.count("no_ship");
        for label in ["accepted", "clamped"] {
            if let Some(n) = self.counts.get_mut(label)
                && *n > 0
            {
                *n -= 1;
                break;
            }
        }
    }

    fn count(&mut self, label: &'static str) {
        *self.counts.entry(label).or_default() += 1;
    }

    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn commands_are_clamped_into_range_and_non_finite_ones_refused() {
        assert_eq!(validate_input(0.5, -1.0), Ok((0.5, -1.0, false)));
        assert_eq!(validate_input(7.0, -3.0), Ok((1.0, -1.0, true)));
        assert_eq!(validate_input(f32::NAN, 0.0), Err(InputRefusal::NonFinite));
        assert_eq!(
            validate_input(0.0, f32::INFINITY),
            Err(InputRefusal::NonFinite)
        );
        assert_eq!(
            validate_input(f32::NEG_INFINITY, 0.0),
            Err(InputRefusal::NonFinite)
        );
    }

    #[test]
    fn a_flooding_player_is_limited_and_others_are_not() {
        let t0 = Instant::now();
        let mut gate = InputGate::new(30);
        let admitted = (0..1000)
            .filter(|_| gate.admit(1, 1.0, 0.0, t0).is_ok())
            .count();
        assert_eq!(admitted, 30, "a second's worth at once, then nothing");
        assert_eq!(gate.counts()["rate_limited"], 970);
        assert!(
            gate.admit(2, 1.0, 0.0, t0).is_ok(),
            "another player is not limited"
        );
        // At the tick rate, a steady pilot is never refused.
        let mut gate = InputGate::new(30);
        for i in 0..300u64 {
            let now = t0 + Duration::from_secs_f64(i as f64 / 30.0);
            assert!(gate.admit(1, 1.0, 0.0, now).is_ok(), "command {i}");
        }
        gate.no_ship();
        assert_eq!(
            (gate.counts()["accepted"], gate.counts()["no_ship"]),
            (299, 1)
        );
    }
}
