//! Desired placements: validation, generations, re-homing, and the archive when roots change.

use std::collections::HashMap;

use sidereal_core::placement;
use sidereal_core::{EntityId, EntityKind, EntitySnapshot, Placement, SectorId, ShardId};
use tracing::info;

use super::{Authority, MAX_GENERATION_JUMP, PutPlacementError};

impl Authority {
    /// Applies a whole desired placement. Idempotent: the same generation and contents again
    /// is a no-op. Leaves whose shard changes are handed over: a live old owner releases their
    /// entities itself; a dead one's entities are re-homed from the mirror.
    pub fn put_placement(&mut self, desired: Placement) -> Result<bool, PutPlacementError> {
        let result = self.apply_placement(desired);
        if let Err(PutPlacementError::Stale { .. } | PutPlacementError::Conflict(_)) = &result {
            self.counters.placement_conflicts += 1;
        }
        result
    }

    pub(super) fn apply_placement(
        &mut self,
        desired: Placement,
    ) -> Result<bool, PutPlacementError> {
        if let Some(waiting) = self.awaiting_shards() {
            return Err(PutPlacementError::TakingOver { waiting });
        }
        let current = self.placement.generation;
        if desired.generation < current {
            return Err(PutPlacementError::Stale {
                given: desired.generation,
                current,
            });
        }
        if desired.generation - current > MAX_GENERATION_JUMP {
            return Err(PutPlacementError::Jump {
                given: desired.generation,
                current,
            });
        }
        let world = desired.world.clone().unwrap_or_else(|| self.world.clone());
        if desired.generation == current && current != 0 {
            return if desired.sectors == self.placement.sectors && world == self.world {
                Ok(false)
            } else {
                Err(PutPlacementError::Conflict(current))
            };
        }
        placement::validate_world(&world)?;
        placement::validate(&desired.sectors, &world, &self.seen)?;
        self.placement = Placement {
            world: Some(world.clone()),
            ..desired
        };
        let (archived, restored) = if world != self.world {
            self.world = world;
            self.archive_and_restore()
        } else {
            (0, 0)
        };
        info!(
            generation = self.placement.generation,
            leaves = self.placement.sectors.len(),
            roots = self.world.len(),
            archived,
            restored,
            "placement applied"
        );
        // Tell every live shard its (possibly unchanged) set; shards ignore unchanged sets.
        let live: Vec<ShardId> = self.live.keys().cloned().collect();
        for shard in &live {
            self.send_assignment(shard);
        }
        // Entities of dead shards: the mirror is the snapshot.
        let mut by_target: HashMap<ShardId, Vec<EntityId>> = HashMap::new();
        for (id, r) in self.mirror.iter() {
            if !self.live.contains_key(&r.owner)
                && let Some(leaf) = self.leaf_of(&r.snapshot)
            {
                let target = &self.placement.sectors[&leaf];
                if self.live.contains_key(target) {
                    by_target.entry(target.clone()).or_default().push(*id);
                }
            }
        }
        for (target, ids) in by_target {
            self.readopt(&target, ids);
        }
        Ok(true)
    }

    /// After the roots changed: entities no root covers leave the simulation for the archive
    /// (projectiles, which live for seconds, simply end), and archived entities a root covers
    /// again come back, to be adopted by the owner of their leaf. (archived, restored)
    pub(super) fn archive_and_restore(&mut self) -> (usize, usize) {
        let inside = |world: &[SectorId], s: &EntitySnapshot| {
            SectorId::of_point(s.state.point(), 0)
                .is_ok_and(|cell| world.iter().any(|r| r.covers(&cell)))
        };
        let leaving: Vec<(EntityId, EntityKind)> = self
            .mirror
            .iter()
            .filter(|(_, r)| !inside(&self.world, &r.snapshot))
            .map(|(id, r)| (*id, r.snapshot.kind))
            .collect();
        let returning: Vec<EntityId> = self
            .mirror
            .archived()
            .filter(|(_, r)| inside(&self.world, &r.snapshot))
            .map(|(id, _)| *id)
            .collect();
        let mut archived = 0;
        for (id, kind) in leaving {
            if kind == EntityKind::Projectile {
                self.mirror.remove(id);
            } else if self.mirror.archive(id) {
                archived += 1;
            }
        }
        for id in &returning {
            self.mirror.unarchive(*id, ShardId::new("unplaced"));
        }
        self.counters.archived += archived as u64;
        self.counters.restored += returning.len() as u64;
        (archived, returning.len())
    }
}
