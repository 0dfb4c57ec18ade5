//! Builders the unit tests of several modules share.

use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState};

/// A still asteroid at (x, y).
pub fn asteroid_at(id: EntityId, x: f32, y: f32) -> EntitySnapshot {
    EntitySnapshot {
        id,
        kind: EntityKind::Asteroid,
        state: EntityState {
            pos: [x, y],
            ..Default::default()
        },
        ttl_ticks: None,
        player: false,
    }
}
