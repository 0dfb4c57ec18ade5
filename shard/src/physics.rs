//! The physics engine as a shard configures it: avian2d with only what a space scene uses, sized
//! for it. The fleet benchmark steps bare avian2d with this very plugin, so the ratio it prints
//! compares a shard with the best this engine does on the same bodies, not with its defaults.

use std::time::Duration;

use avian2d::collider_tree::ColliderTreeOptimization;
use avian2d::dynamics::solver::islands::{IslandPlugin, IslandSleepingPlugin};
use avian2d::physics_transform::PhysicsTransformConfig;
use avian2d::prelude::*;
use bevy::prelude::*;

/// Bodies are 1 to 16 units across (projectiles to asteroids) and fly up to 40 units a second:
/// avian scales its tolerances and its broad phase's AABB margin by this, so a margin of
/// `0.05 * LENGTH_UNIT` lets a drifting body go a few ticks before its tree leaf must move.
pub const LENGTH_UNIT: f32 = 10.0;

/// Integration substeps per tick. Contacts here are sparse and slow next to the 30 Hz tick;
/// avian's default of 6 buys stiffness this scene does not use (measured: docs/benchmarks.md).
pub const SUBSTEPS: u32 = 4;

/// avian2d in `FixedPostUpdate` at the shard's tick, configured for a shard's scene:
/// - no gravity, no interpolation (nothing renders);
/// - no `Transform` sync: shards read and write `Position` and `Rotation` only;
/// - no islands or sleeping: nothing in space rests (no damping, asteroids drift forever), so
///   islands would be bookkeeping for bodies that never sleep;
/// - the broad phase's tree optimised in place on the simulation thread (a shard makes no
///   spatial queries during the step, and runs on one core).
pub struct ShardPhysicsPlugin {
    pub tick: Duration,
}

impl Plugin for ShardPhysicsPlugin {
    fn build(&self, app: &mut App) {
        // Read by avian's plugins as they build: insert first.
        app.insert_resource(PhysicsTransformConfig {
            propagate_before_physics: false,
            transform_to_position: false,
            position_to_transform: true,
            transform_to_collider_scale: false,
        });
        app.add_plugins(
            PhysicsPlugins::default()
                .with_length_unit(LENGTH_UNIT)
                .build()
                .disable::<PhysicsInterpolationPlugin>()
                .disable::<IslandSleepingPlugin>()
                .disable::<IslandPlugin>(),
        )
        .insert_resource(Gravity(Vec2::ZERO))
        .insert_resource(SubstepCount(SUBSTEPS))
        .insert_resource(ColliderTreeOptimization {
            optimize_in_place: true,
            use_async_tasks: false,
            ..default()
        })
        .insert_resource(Time::<Fixed>::from_duration(self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::body;
    use sidereal_core::{EntityKind, EntityState};

    fn physics_app() -> App {
        let tick = Duration::from_secs_f64(1.0 / 30.0);
        let mut app = App::new();
        app.add_plugins(
            MinimalPlugins
                .build()
                .disable::<bevy::app::ScheduleRunnerPlugin>(),
        )
        .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(tick))
        .add_plugins(ShardPhysicsPlugin { tick });
        app.finish();
        app.cleanup();
        app
    }

    fn asteroid(x: f32, vx: f32) -> EntityState {
        EntityState {
            pos: [x, 0.0],
            vel: [vx, 0.0],
            angle: 0.0,
            ang_vel: 0.0,
        }
    }

    /// The tuned engine still collides: two asteroids flying at each other never pass through
    /// or sink into each other, and a lone body drifts exactly at its velocity.
    #[test]
    fn bodies_collide_and_drift_under_the_shards_configuration() {
        let mut app = physics_app();
        let left = app
            .world_mut()
            .spawn(body(EntityKind::Asteroid, &asteroid(-20.0, 30.0)))
            .id();
        let right = app
            .world_mut()
            .spawn(body(EntityKind::Asteroid, &asteroid(20.0, -30.0)))
            .id();
        let lone = app
            .world_mut()
            .spawn(body(EntityKind::Ship, &asteroid(1000.0, 12.0)))
            .id();
        let x = |app: &App, e: Entity| app.world().get::<Position>(e).unwrap().0.x;
        // Without contact they would cross at 0.67 s and be 40 units past each other at 2 s.
        for _ in 0..60 {
            app.update();
            let gap = x(&app, right) - x(&app, left);
            assert!(gap > 16.0 - 0.5, "asteroids (radius 8) overlap: gap {gap}");
        }
        assert!(
            x(&app, left) < 0.0 && x(&app, right) > 0.0,
            "they passed through"
        );
        let drift = x(&app, lone) - 1000.0;
        let secs = app.world().resource::<Time<Fixed>>().elapsed_secs();
        assert!(secs > 1.9, "{secs} s simulated");
        assert!(
            (drift - 12.0 * secs).abs() < 0.01,
            "{secs} s at 12 units/s: moved {drift}"
        );
    }
}
