//! Game rules around the physics: ships steer and fire, projectiles age out, nothing leaves
//! the world. Physics itself is avian2d in `FixedPostUpdate`.

use avian2d::prelude::*;
use bevy::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sidereal_core::protocol::ShardMessage;
use sidereal_core::{EntityKind, EntitySnapshot, EntityState, Point};

use crate::ShardConfig;
use crate::components::{Owned, Pilot, TickSet, Ttl, body};
use crate::link::{Encoder, ShardLink, TickCount};
use crate::ownership::Ownership;

pub use sidereal_core::protocol::{
    SHIP_MAX_SPEED, SHIP_THRUST_PER_TICK, SHIP_TURN_RATE, steer_ship,
};
/// A piloted ship fires at most once per this many ticks while the trigger is held.
pub const PILOT_FIRE_EVERY_TICKS: u64 = 6;
pub const PROJECTILE_SPEED: f32 = 300.0;
pub const PROJECTILE_TTL_TICKS: u32 = 60;

#[derive(Resource)]
pub struct ShardRng(pub SmallRng);

pub struct SimulationPlugin;

impl Plugin for SimulationPlugin {
    fn build(&self, app: &mut App) {
        let seed = app.world().resource::<ShardConfig>().seed;
        app.insert_resource(ShardRng(SmallRng::seed_from_u64(seed)))
            .add_systems(
                FixedUpdate,
                (
                    steer_ships,
                    fire_projectiles,
                    age_projectiles,
                    keep_inside_world,
                )
                    .chain()
                    .in_set(TickSet::Act),
            );
    }
}

/// Piloted ships follow their pilot's command; other ships (not players') fly a small random
/// autopilot; a player's ship without a pilot drifts. Speed is capped either way.
fn steer_ships(
    mut rng: ResMut<ShardRng>,
    mut ships: Query<(
        &Owned,
        Option<&Pilot>,
        &Rotation,
        &mut LinearVelocity,
        &mut AngularVelocity,
    )>,
) {
    for (o, pilot, r, mut v, mut w) in &mut ships {
        if o.kind != EntityKind::Ship {
            continue;
        }
        match pilot {
            Some(Pilot(c)) => {
                let (vel, spin) = steer_ship(v.0.to_array(), r.as_radians(), c.thrust, c.turn);
                v.0 = Vec2::from_array(vel);
                w.0 = spin;
            }
            None if o.player => {}
            None => {
                let thrust =
                    Vec2::new(rng.0.random_range(-4.0..4.0), rng.0.random_range(-4.0..4.0));
                v.0 = (v.0 + thrust).clamp_length_max(SHIP_MAX_SPEED);
                w.0 = (w.0 + rng.0.random_range(-0.05..0.05)).clamp(-2.0, 2.0);
            }
        }
    }
}

fn fire_projectiles(
    mut commands: Commands,
    config: Res<ShardConfig>,
    tick: Res<TickCount>,
    link: Res<ShardLink>,
    mut own: ResMut<Ownership>,
    ships: Query<(
        &Owned,
        Option<&Pilot>,
        &Position,
        &Rotation,
        &LinearVelocity,
    )>,
) {
    let every = u64::from(config.fire_every_ticks);
    for (o, pilot, p, r, v) in &ships {
        let fires = match pilot {
            Some(Pilot(c)) => c.fire && (tick.0 + o.id.0).is_multiple_of(PILOT_FIRE_EVERY_TICKS),
            None => !o.player && every > 0 && (tick.0 + o.id.0).is_multiple_of(every),
        };
        if o.kind != EntityKind::Ship || !fires {
            continue;
        }
        let dir = Vec2::from_angle(r.as_radians());
        let pos = p.0 + dir * 6.0;
        if !own.owns_point(Point::new(pos.x.into(), pos.y.into())) {
            continue;
        }
        let Some(id) = own.mint() else { return };
        let state = EntityState {
            pos: pos.to_array(),
            vel: (v.0 + dir * PROJECTILE_SPEED).to_array(),
            angle: r.as_radians(),
            ang_vel: 0.0,
        };
        let snap = EntitySnapshot {
            id,
            kind: EntityKind::Projectile,
            state,
            ttl_ticks: Some(PROJECTILE_TTL_TICKS),
            player: false,
        };
        let e = commands
            .spawn((
                Owned {
                    id,
                    kind: EntityKind::Projectile,
                    epoch: 1,
                    player: false,
                },
                Ttl(PROJECTILE_TTL_TICKS),
                body(EntityKind::Projectile, &state),
            ))
            .id();
        own.entities.insert(id, e);
        // Replication records the spawn before it sees any update of it (same ordered link).
        link.send(ShardMessage::Spawned { snapshot: snap });
    }
}

fn age_projectiles(
    mut commands: Commands,
    link: Res<ShardLink>,
    mut own: ResMut<Ownership>,
    mut encoder: ResMut<Encoder>,
    mut q: Query<(Entity, &Owned, &Position, &mut Ttl)>,
) {
    for (e, o, p, mut ttl) in &mut q {
        ttl.0 = ttl.0.saturating_sub(1);
        if ttl.0 == 0 {
            own.entities.remove(&o.id);
            own.ended.push((o.id, o.epoch, [p.0.x, p.0.y]));
            encoder.0.forget(o.id);
            commands.entity(e).despawn();
            link.send(ShardMessage::Despawned {
                id: o.id,
                epoch: o.epoch,
            });
        }
    }
}

/// Reflects velocities that would carry an entity out of the world's root sectors.
fn keep_inside_world(
    own: Res<Ownership>,
    time: Res<Time<Fixed>>,
    mut q: Query<(&Position, &mut LinearVelocity), With<Owned>>,
) {
    if own.world.is_empty() {
        return;
    }
    let dt = time.timestep().as_secs_f32() * 2.0;
    for (p, mut v) in &mut q {
        let ahead = |d: Vec2| {
            let n = p.0 + d * dt;
            own.in_world(Point::new(n.x.into(), n.y.into()))
        };
        if !ahead(Vec2::new(v.0.x, 0.0)) {
            v.0.x = -v.0.x;
        }
        if !ahead(Vec2::new(0.0, v.0.y)) {
            v.0.y = -v.0.y;
        }
    }
}
