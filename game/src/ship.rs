//! The player's own ship and what it sees of others, as lightyear's prediction and interpolation
//! handle them: the pilot's command ([`PilotCommand`], a native lightyear input), the ship's motion
//! ([`ShipPose`], replicated to its pilot alone and predicted there) and another entity's motion
//! ([`RemotePose`], interpolated between the decoded world updates). Pure functions over plain
//! data: [`fly`] is the motion both ends run, [`lerp_remote`] the interpolation.

use bevy::prelude::*;
use serde::{Deserialize, Serialize};
pub use sidereal_core::protocol::PilotCommand;
use sidereal_core::protocol::{SHIP_MAX_SPEED, SHIP_THRUST_PER_TICK, SHIP_TURN_RATE, steer_ship};

/// A piloted ship's motion. The gateway replicates it, from the shard's authoritative state, to
/// the ship's pilot only; the pilot's client predicts it with [`fly`] and rolls back when the
/// server disagrees by more than [`pose_differs`] allows.
#[derive(Component, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct ShipPose {
    pub pos: [f32; 2],
    pub vel: [f32; 2],
    pub angle: f32,
    /// Radians per second.
    pub spin: f32,
}

/// Another entity's motion as a player sees it: samples from the world updates, interpolated by
/// lightyear between the two around the interpolation time.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq)]
pub struct RemotePose {
    pub pos: [f32; 2],
    pub vel: [f32; 2],
    pub angle: f32,
}

/// One tick of a piloted ship: the pilot's command sets velocity and spin
/// ([`steer_ship`], exactly as the shard does), then the ship moves by them.
pub fn fly(pose: ShipPose, pilot: Option<PilotCommand>, dt: f32) -> ShipPose {
    let (vel, spin) = match pilot.and_then(PilotCommand::clamped) {
        Some((p, _)) => steer_ship(pose.vel, pose.angle, p.thrust, p.turn),
        // A ship nobody pilots (yet), or a command that is not a number, drifts on, as on the
        // shard.
        None => (pose.vel, pose.spin),
    };
    ShipPose {
        pos: [pose.pos[0] + vel[0] * dt, pose.pos[1] + vel[1] * dt],
        vel,
        angle: wrap_angle(pose.angle + spin * dt),
        spin,
    }
}

/// How far a prediction may be off before the client rolls back and replays: one tick of motion
/// at full speed and rudder. The fleet's ticks and the gateway's are not phase-locked, so the
/// state a client is sent for a tick may be the shard's tick before or after; within that the
/// difference is timing, not a misprediction.
pub fn pose_differs(confirmed: &ShipPose, predicted: &ShipPose) -> bool {
    const DT: f32 = 1.0 / 30.0;
    const POS: f32 = SHIP_MAX_SPEED * DT + 0.5;
    const VEL: f32 = SHIP_THRUST_PER_TICK + 0.5;
    const ANGLE: f32 = SHIP_TURN_RATE * DT + 0.02;
    const SPIN: f32 = 0.05;
    let d = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
    !(d(confirmed.pos, predicted.pos) <= POS
        && d(confirmed.vel, predicted.vel) <= VEL
        && angle_between(confirmed.angle, predicted.angle).abs() <= ANGLE
        && (confirmed.spin - predicted.spin).abs() <= SPIN)
}

/// Linear interpolation from `a` to `b` at `t` in [0, 1], the short way round for the heading.
pub fn lerp_remote(a: RemotePose, b: RemotePose, t: f32) -> RemotePose {
    let lerp = |x: f32, y: f32| x + (y - x) * t;
    RemotePose {
        pos: [lerp(a.pos[0], b.pos[0]), lerp(a.pos[1], b.pos[1])],
        vel: [lerp(a.vel[0], b.vel[0]), lerp(a.vel[1], b.vel[1])],
        angle: wrap_angle(a.angle + angle_between(b.angle, a.angle) * t),
    }
}

/// `a - b` in (-pi, pi].
pub fn angle_between(a: f32, b: f32) -> f32 {
    wrap_angle(a - b)
}

/// `angle` in (-pi, pi].
pub fn wrap_angle(angle: f32) -> f32 {
    use std::f32::consts::{PI, TAU};
    let a = (angle + PI).rem_euclid(TAU) - PI;
    if a <= -PI { a + TAU } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DT: f32 = 1.0 / 30.0;

    #[test]
    fn full_thrust_accelerates_along_the_heading_up_to_the_cap() {
        let mut pose = ShipPose {
            angle: std::f32::consts::FRAC_PI_2,
            ..Default::default()
        };
        let thrust = PilotCommand {
            thrust: 1.0,
            ..Default::default()
        };
        for _ in 0..100 {
            pose = fly(pose, Some(thrust), DT);
        }
        let speed = pose.vel[0].hypot(pose.vel[1]);
        assert!((speed - SHIP_MAX_SPEED).abs() < 1e-3, "{pose:?}");
        assert!(pose.vel[0].abs() < 1e-3 && pose.pos[1] > 100.0, "{pose:?}");
    }

    #[test]
    fn the_rudder_sets_spin_and_an_unpiloted_ship_drifts() {
        let turning = fly(
            ShipPose::default(),
            Some(PilotCommand {
                turn: -1.0,
                ..Default::default()
            }),
            DT,
        );
        assert_eq!(turning.spin, -SHIP_TURN_RATE);
        assert!((turning.angle + SHIP_TURN_RATE * DT).abs() < 1e-6);
        let drifting = fly(turning, None, DT);
        assert_eq!(drifting.spin, turning.spin);
        // Bad commands are clamped or ignored, as replication does.
        let wild = PilotCommand {
            thrust: f32::NAN,
            turn: 9.0,
            fire: false,
        };
        assert_eq!(fly(turning, Some(wild), DT), drifting);
        let clamped = fly(
            ShipPose::default(),
            Some(PilotCommand {
                turn: 9.0,
                ..Default::default()
            }),
            DT,
        );
        assert_eq!(clamped.spin, SHIP_TURN_RATE);
    }

    #[test]
    fn poses_differ_beyond_the_tolerance_only() {
        let a = ShipPose {
            pos: [10.0, 10.0],
            vel: [5.0, 0.0],
            angle: std::f32::consts::PI - 0.01,
            spin: 0.0,
        };
        let mut b = a;
        b.pos[0] += 3.0;
        // Across the +-pi seam the headings are close.
        b.angle = -std::f32::consts::PI + 0.01;
        assert!(!pose_differs(&a, &b));
        b.pos[0] += 2.0;
        assert!(pose_differs(&a, &b));
        let mut c = a;
        c.spin = 2.0;
        assert!(pose_differs(&a, &c));
        let mut n = a;
        n.pos[1] = f32::NAN;
        assert!(pose_differs(&a, &n), "NaN is never close");
    }

    #[test]
    fn interpolation_takes_the_short_way_round() {
        let a = RemotePose {
            pos: [0.0, 0.0],
            vel: [10.0, 0.0],
            angle: 3.0,
        };
        let b = RemotePose {
            pos: [10.0, -4.0],
            vel: [20.0, 0.0],
            angle: -3.0,
        };
        let mid = lerp_remote(a, b, 0.5);
        assert_eq!(mid.pos, [5.0, -2.0]);
        assert_eq!(mid.vel, [15.0, 0.0]);
        // 3.0 to -3.0 is 0.28 rad through pi, not 6 rad through 0.
        assert!(mid.angle.abs() > 3.1, "{mid:?}");
        let start = lerp_remote(a, b, 0.0);
        assert_eq!((start.pos, start.vel), (a.pos, a.vel));
        assert!(angle_between(start.angle, a.angle).abs() < 1e-5);
        let end = lerp_remote(a, b, 1.0);
        assert!(angle_between(end.angle, b.angle).abs() < 1e-5);
    }
}
