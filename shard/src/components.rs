//! Components and the system sets that order a tick.

use avian2d::prelude::*;
use bevy::prelude::*;
use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState, Epoch};

/// An entity this shard owns and simulates.
#[derive(Component, Debug, Clone, Copy)]
pub struct Owned {
    pub id: EntityId,
    pub kind: EntityKind,
    pub epoch: Epoch,
    pub player: bool,
}

/// A player's latest command for this ship (from replication), applied every tick until the
/// next one replaces it.
#[derive(Component, Debug, Clone, Copy)]
pub struct Pilot(pub sidereal_core::protocol::PilotCommand);

/// Ticks left to live.
#[derive(Component, Debug, Clone, Copy)]
pub struct Ttl(pub u32);

/// A read-only copy of a neighbour's entity near this shard's border.
#[derive(Component, Debug, Clone, Copy)]
pub struct ShadowOf(pub EntityId);

/// Order of work inside one fixed tick. Physics runs between `Act` and `Settle` (avian runs in
/// `FixedPostUpdate`).
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub enum TickSet {
    /// Apply what replication sent: placement, adoptions, shadows.
    Receive,
    /// Steering, firing, ageing: the game rules.
    Act,
    /// After physics: hand over entities that left, then report.
    Settle,
    Report,
}

pub fn radius_of(kind: EntityKind) -> f32 {
    match kind {
        EntityKind::Ship => 4.0,
        EntityKind::Asteroid => 8.0,
        EntityKind::Projectile => 0.5,
    }
}

/// Physics bundle for an owned entity at `state`.
pub fn body(kind: EntityKind, state: &EntityState) -> impl Bundle {
    (
        RigidBody::Dynamic,
        Collider::circle(radius_of(kind)),
        Position(Vec2::from(state.pos)),
        Rotation::radians(state.angle),
        LinearVelocity(Vec2::from(state.vel)),
        AngularVelocity(state.ang_vel),
    )
}

/// Reads the simulated state back from avian's components.
pub fn state_of(
    pos: &Position,
    rot: &Rotation,
    vel: &LinearVelocity,
    ang: &AngularVelocity,
) -> EntityState {
    EntityState {
        pos: pos.0.to_array(),
        vel: vel.0.to_array(),
        // No libm `atan2`: this runs for every moving entity every tick.
        angle: sidereal_core::angle::heading(rot.sin, rot.cos),
        ang_vel: ang.0,
    }
}

pub fn snapshot(owned: &Owned, state: EntityState, ttl: Option<&Ttl>) -> EntitySnapshot {
    EntitySnapshot {
        id: owned.id,
        kind: owned.kind,
        state,
        ttl_ticks: ttl.map(|t| t.0),
        player: owned.player,
    }
}
