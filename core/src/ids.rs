//! Identities of things in the fleet.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A world entity, unique for the life of the world. Shards mint ids without a round trip:
/// the high 24 bits are the shard's link incarnation (unique, handed out by replication at
/// handshake), the low 40 bits a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntityId(pub u64);

impl EntityId {
    pub const COUNTER_BITS: u32 = 40;

    pub fn minted(incarnation: u32, counter: u64) -> Self {
        Self(
            (u64::from(incarnation) << Self::COUNTER_BITS)
                | (counter & ((1 << Self::COUNTER_BITS) - 1)),
        )
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// A shard's name (its pod name under Kubernetes, `shard-N` under `sidereal up`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub String);

impl ShardId {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ownership generation of one entity: bumped on every handover, so a message carrying an
/// older epoch comes from a previous owner and is refused.
pub type Epoch = u64;

/// What an entity is; decides its physics and lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum EntityKind {
    /// Player-controllable rigid body.
    Ship = 0,
    /// Large, mostly drifting body.
    Asteroid = 1,
    /// Short-lived, fast body.
    Projectile = 2,
}

/// Full-precision kinematic state, as simulated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct EntityState {
    pub pos: [f32; 2],
    pub vel: [f32; 2],
    /// Radians in (-pi, pi].
    pub angle: f32,
    pub ang_vel: f32,
}

impl EntityState {
    pub fn is_finite(&self) -> bool {
        self.pos
            .iter()
            .chain(&self.vel)
            .chain([&self.angle, &self.ang_vel])
            .all(|v| v.is_finite())
    }

    pub fn point(&self) -> crate::Point {
        crate::Point::new(f64::from(self.pos[0]), f64::from(self.pos[1]))
    }
}

/// An entity as handed between owners: everything needed to simulate it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EntitySnapshot {
    pub id: EntityId,
    pub kind: EntityKind,
    pub state: EntityState,
    /// Ticks left to live (projectiles); `None` lives forever.
    pub ttl_ticks: Option<u32>,
    /// Controlled by a player (counted as a player in load reports).
    pub player: bool,
}
