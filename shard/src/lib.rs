//! A Sidereal shard: a headless Bevy app that simulates the leaf sectors replication assigns
//! to it with avian2d physics, keeps read-only shadows of its neighbours' entities near its
//! borders, hands entities over when they leave its sectors, and reports its load.
//!
//! The app talks to replication only through [`link::ShardLink`] (two channels), so the same
//! app runs over TCP in production and over in-memory channels in tests.

pub mod components;
pub mod link;
pub mod load;
pub mod metrics;
pub mod ownership;
pub mod physics;
pub mod shadows;
pub mod simulation;
pub mod status;
pub mod stream_server;
pub mod streams;
pub mod tcp;

use std::time::Duration;

use bevy::app::{App, ScheduleRunnerPlugin};
use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;

pub use link::ShardLink;

/// How a shard runs.
#[derive(Debug, Clone, Resource)]
pub struct ShardConfig {
    /// The shard's name (its pod name under Kubernetes); labels its metrics.
    pub name: String,
    pub tick_hz: u32,
    /// Seed of the shard's own randomness (ship steering, firing).
    pub seed: u64,
    /// Ships fire a projectile about every this many ticks (0: never).
    pub fire_every_ticks: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            name: "shard".into(),
            tick_hz: 30,
            seed: 1,
            fire_every_ticks: 90,
        }
    }
}

/// How time advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Real time: the app runs its own loop, ticking at `tick_hz`.
    RealTime,
    /// Each `App::update` advances exactly one tick (tests, benchmarks, in-process fleets).
    Stepped,
}

/// Builds the shard app. With `Clock::Stepped`, call `app.update()` once per tick; with
/// `Clock::RealTime`, call `app.run()`.
pub fn build_app(config: ShardConfig, link: ShardLink, clock: Clock) -> App {
    let tick = Duration::from_secs_f64(1.0 / f64::from(config.tick_hz));
    let mut app = App::new();
    match clock {
        Clock::RealTime => {
            app.add_plugins(MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(tick / 4)));
        }
        Clock::Stepped => {
            app.add_plugins(MinimalPlugins.build().disable::<ScheduleRunnerPlugin>());
            app.insert_resource(TimeUpdateStrategy::ManualDuration(tick));
        }
    }
    app.add_plugins(physics::ShardPhysicsPlugin::new(tick))
        .insert_resource(metrics::ShardMetrics::new(&config.name))
        .insert_resource(config)
        .insert_resource(link)
        .add_plugins((
            link::LinkPlugin,
            ownership::OwnershipPlugin,
            simulation::SimulationPlugin,
            load::LoadPlugin,
            streams::SectorStreamsPlugin,
            shadows::ShadowsPlugin,
        ));
    if clock == Clock::Stepped {
        // Ready to `update()` by hand; a real-time app finishes its plugins in `run()`, so the
        // caller may still add some (status, metrics).
        app.finish();
        app.cleanup();
    }
    app
}
