//! The physics engine as a shard configures it: avian2d with only what a space scene uses, sized
//! for it. The fleet benchmark steps bare avian2d with this very plugin, so the ratio it prints
//! compares a shard with the best this engine does on the same bodies, not with its defaults.

use std::time::Duration;

use avian2d::collider_tree::{ColliderTreeOptimization, TreeOptimizationMode};
use avian2d::dynamics::solver::islands::{IslandPlugin, IslandSleepingPlugin};
use avian2d::physics_transform::PhysicsTransformConfig;
use avian2d::prelude::*;
use bevy::prelude::*;

/// How avian is set up for a shard's scene. `Default` is what shards run; the fleet benchmark
/// steps other settings on the same bodies to show what each one is worth.
#[derive(Debug, Clone)]
pub struct PhysicsSettings {
    /// Bodies are 1 to 16 units across (projectiles to asteroids) and fly up to 40 units a
    /// second: avian scales its tolerances and its broad phase's AABB margin (`0.05 x` this) by
    /// it. With avian's default of 1, every drifting body left its tree leaf every tick.
    pub length_unit: f32,
    /// Integration substeps per tick. Contacts here are sparse and slow next to the 30 Hz tick.
    pub substeps: u32,
    /// Islands and sleeping. Nothing in space rests (no damping, asteroids drift forever), so
    /// by default islands would be bookkeeping for bodies that never sleep.
    pub sleeping: bool,
    /// How the broad phase's collider tree is kept optimised each step.
    pub tree: TreeOptimizationMode,
    /// avian's own defaults for everything above and for the `Transform` sync, the tree's
    /// optimisation (copied, on async tasks): the "before" baseline of the benchmark.
    pub avian_defaults: bool,
}

impl Default for PhysicsSettings {
    fn default() -> Self {
        Self {
            length_unit: 10.0,
            substeps: 4,
            sleeping: false,
            tree: TreeOptimizationMode::default(),
            avian_defaults: false,
        }
    }
}

impl PhysicsSettings {
    /// avian2d as it comes (only gravity and interpolation off, as a headless game needs).
    pub fn avian_defaults() -> Self {
        Self {
            length_unit: 1.0,
            substeps: 6,
            sleeping: true,
            tree: TreeOptimizationMode::default(),
            avian_defaults: true,
        }
    }
}

/// avian2d in `FixedPostUpdate` at the shard's tick, configured for a shard's scene:
/// - no gravity, no interpolation (nothing renders);
/// - `Position` and `Rotation` are the truth: no `Transform` to `Position` sync and no
///   propagation before the step (`Position` to `Transform` stays: avian derives a collider's
///   transform, and from it the body's mass, from it);
/// - [`PhysicsSettings`]: length unit, substeps, no islands or sleeping;
/// - the collider tree optimised in place on the simulation thread (a shard makes no spatial
///   queries during the step, and runs on one core).
pub struct ShardPhysicsPlugin {
    pub tick: Duration,
    pub settings: PhysicsSettings,
}

impl ShardPhysicsPlugin {
    pub fn new(tick: Duration) -> Self {
        Self {
            tick,
            settings: PhysicsSettings::default(),
        }
    }
}

impl Plugin for ShardPhysicsPlugin {
    fn build(&self, app: &mut App) {
        let s = &self.settings;
        if !s.avian_defaults {
            // Read by avian's plugins as they build: insert first.
            app.insert_resource(PhysicsTransformConfig {
                propagate_before_physics: false,
                transform_to_position: false,
                position_to_transform: true,
                transform_to_collider_scale: false,
            });
        }
        let mut plugins = PhysicsPlugins::default()
            .with_length_unit(s.length_unit)
            .build()
            .disable::<PhysicsInterpolationPlugin>();
        if !s.sleeping {
            plugins = plugins
                .disable::<IslandSleepingPlugin>()
                .disable::<IslandPlugin>();
        }
        app.add_plugins(plugins)
            .insert_resource(Gravity(Vec2::ZERO))
            .insert_resource(SubstepCount(s.substeps))
            .insert_resource(Time::<Fixed>::from_duration(self.tick));
        if !s.avian_defaults {
            app.insert_resource(ColliderTreeOptimization {
                optimization_mode: s.tree,
                optimize_in_place: true,
                use_async_tasks: false,
            });
        }
    }
}

/// An app with the shard's physics and nothing else, stepped by hand (each `update` is one fixed
/// tick): the fleet benchmark's bare-avian baseline and the physics tests.
pub fn stepped_physics_app(tick: Duration, settings: PhysicsSettings) -> App {
    let mut app = App::new();
    app.add_plugins(
        MinimalPlugins
            .build()
            .disable::<bevy::app::ScheduleRunnerPlugin>(),
    )
    .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(tick))
    .add_plugins(ShardPhysicsPlugin { tick, settings });
    app.finish();
    app.cleanup();
    app
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::body;
    use sidereal_core::{EntityKind, EntityState};

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
        let mut app = stepped_physics_app(
            Duration::from_secs_f64(1.0 / 30.0),
            PhysicsSettings::default(),
        );
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
