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
            position_to_transform: false,
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
