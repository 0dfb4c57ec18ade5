//! Players' commands on the way in, checked before they reach a shard: finite, in range, and
//! at a bounded rate per player. Pure decisions over plain numbers; the gate keeps the per-player
//! rate state and the counts `/metrics` exports.

use std::collections::BTreeMap;
use std::time::Instant;

use sidereal_core::protocol::PilotCommand;

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

/// A command with thrust and turn clamped into [-1, 1], and whether clamping was needed. NaN
/// and infinities are refused: clamping cannot say what they meant.
pub fn validate_input(command: PilotCommand) -> Result<(PilotCommand, bool), InputRefusal> {
    command.clamped().ok_or(InputRefusal::NonFinite)
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

    /// Admits (clamped into range) or refuses one command of `player`; counts it either way.
    pub fn admit(
        &mut self,
        player: u64,
        command: PilotCommand,
        now: Instant,
    ) -> Result<PilotCommand, InputRefusal> {
        let r = self
            .per_player
            .take(&player, now)
            .map_err(|_| InputRefusal::RateLimited)
            .and_then(|()| validate_input(command));
        match &r {
            Ok((_, true)) => self.count("clamped"),
            Ok(_) => self.count("accepted"),
            Err(e) => self.count(e.label()),
        }
        r.map(|(command, _)| command)
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

    fn command(thrust: f32, turn: f32) -> PilotCommand {
        PilotCommand {
            thrust,
            turn,
            fire: true,
        }
    }

    #[test]
    fn commands_are_clamped_into_range_and_non_finite_ones_refused() {
        assert_eq!(
            validate_input(command(0.5, -1.0)),
            Ok((command(0.5, -1.0), false))
        );
        assert_eq!(
            validate_input(command(7.0, -3.0)),
            Ok((command(1.0, -1.0), true)),
            "clamped, the trigger kept"
        );
        for (thrust, turn) in [
            (f32::NAN, 0.0),
            (0.0, f32::INFINITY),
            (f32::NEG_INFINITY, 0.0),
        ] {
            assert_eq!(
                validate_input(command(thrust, turn)),
                Err(InputRefusal::NonFinite)
            );
        }
    }

    #[test]
    fn a_flooding_player_is_limited_and_others_are_not() {
        let t0 = Instant::now();
        let mut gate = InputGate::new(30);
        let admitted = (0..1000)
            .filter(|_| gate.admit(1, command(1.0, 0.0), t0).is_ok())
            .count();
        assert_eq!(admitted, 30, "a second's worth at once, then nothing");
        assert_eq!(gate.counts()["rate_limited"], 970);
        assert!(
            gate.admit(2, command(1.0, 0.0), t0).is_ok(),
            "another player is not limited"
        );
        // At the tick rate, a steady pilot is never refused.
        let mut gate = InputGate::new(30);
        for i in 0..300u64 {
            let now = t0 + Duration::from_secs_f64(i as f64 / 30.0);
            assert!(gate.admit(1, command(1.0, 0.0), now).is_ok(), "command {i}");
        }
        gate.no_ship();
        assert_eq!(
            (gate.counts()["accepted"], gate.counts()["no_ship"]),
            (299, 1)
        );
    }
}
