//! State updates and spawns from a shard, checked against the mirror's owners and epochs.

use std::collections::BTreeMap;

use sidereal_core::codec::POS_SCALE;
use sidereal_core::protocol::ReplicationMessage;
use sidereal_core::{EntityId, EntitySnapshot, EntityState, SectorId, ShardId};
use tracing::warn;

use super::{Authority, LinkError, LinkId};
use crate::mirror::Refusal;

impl Authority {
    pub(super) fn updates(
        &mut self,
        link: LinkId,
        shard: &ShardId,
        bytes: &[u8],
    ) -> Result<(), LinkError> {
        let l = self.links.get_mut(&link).expect("live link");
        let (_tick, decoded) = l.decoder.decode(bytes)?;
        let mut forget: Vec<(ShardId, EntityId)> = Vec::new();
        let mut unknown: Vec<EntityId> = Vec::new();
        for u in decoded {
            // Its root just left the world; the shard has not applied that placement yet.
            // The archive keeps the state it was archived with.
            if self.mirror.is_archived(u.id) {
                continue;
            }
            // An update from the new owner at the current epoch proves the adoption as well
            // as `Adopted` does: an entity whose `Adopted` went missing (or was refused as
            // stale in a crossing) does not stay in transit, simulated by nobody, forever.
            let adopted = self
                .mirror
                .get(u.id)
                .is_some_and(|r| r.in_transit && &r.owner == shard && r.epoch == u.epoch);
            if adopted {
                let r = self.mirror.check_owner_unchecked(u.id);
                r.in_transit = false;
                if let Some(prev) = r.previous_owner.take()
                    && &prev != shard
                {
                    forget.push((prev, u.id));
                }
            }
            let mut state = u.state.to_state();
            keep_inside_the_edge(&mut state, &self.world);
            match self.mirror.check_owner(u.id, shard, Some(u.epoch)) {
                Ok(r) => {
                    r.snapshot.state = state;
                    r.version += 1;
                    self.mirror.touch(u.id);
                    self.counters.updates_applied += 1;
                }
                Err(r) => {
                    self.counters.updates_refused += 1;
                    if matches!(r, Refusal::Unknown { .. }) {
                        unknown.push(u.id);
                    }
                    self.refuse(shard, "update", r);
                }
            }
        }
        let mut by_shard: BTreeMap<ShardId, Vec<EntityId>> = BTreeMap::new();
        for (prev, id) in forget {
            by_shard.entry(prev).or_default().push(id);
        }
        for (prev, ids) in by_shard {
            self.send_to(&prev, ReplicationMessage::Forget { ids });
        }
        // An entity nobody knows (a refused spawn) is a ghost: the shard must stop flying it.
        if !unknown.is_empty() {
            self.outbox
                .push((link, ReplicationMessage::Disown { ids: unknown }));
        }
        Ok(())
    }

    pub(super) fn spawned(&mut self, link: LinkId, shard: &ShardId, snapshot: EntitySnapshot) {
        let incarnation = self.links[&link].incarnation;
        let why = if (snapshot.id.0 >> EntityId::COUNTER_BITS) as u32 != incarnation {
            Some(format!(
                "{} was not minted by this link (incarnation {incarnation})",
                snapshot.id
            ))
        } else if !snapshot.state.is_finite() {
            Some(format!("{} has a non-finite state", snapshot.id))
        } else if self.mirror.contains(snapshot.id) {
            Some(format!("{} already exists", snapshot.id))
        } else {
            match self.leaf_of(&snapshot) {
                Some(leaf) if &self.placement.sectors[&leaf] == shard => None,
                Some(leaf) => Some(format!(
                    "{} spawned in {leaf}, which {shard} does not own",
                    snapshot.id
                )),
                None => Some(format!("{} spawned outside the world", snapshot.id)),
            }
        };
        match why {
            Some(reason) => {
                self.counters.refusals += 1;
                if super::should_log(self.counters.refusals) {
                    warn!(%shard, %reason, refusals = self.counters.refusals, "spawn refused; the shard is told to drop it");
                }
                // Told, the shard drops it instead of flying a ghost into real entities.
                self.outbox.push((
                    link,
                    ReplicationMessage::Disown {
                        ids: vec![snapshot.id],
                    },
                ));
            }
            None => {
                self.mirror.insert_new(snapshot, shard.clone());
                self.counters.spawns += 1;
            }
        }
    }
}

/// Positions travel rounded to 1/64 unit and a root's bounds are half-open, so an entity a hair
/// inside a root's top or right edge arrives exactly on it: outside the world, where a restart
/// would archive it and no leaf would take it back. Pull such a position back inside by one
/// step of the wire's resolution; anything further out is the handover's to clamp.
fn keep_inside_the_edge(state: &mut EntityState, world: &[SectorId]) {
    let p = state.point();
    if world.iter().any(|r| r.contains(p)) {
        return;
    }
    let step = 1.0 / f64::from(POS_SCALE);
    let Some(b) = world
        .iter()
        .map(SectorId::bounds)
        .find(|b| (b.min.x..=b.max.x).contains(&p.x) && (b.min.y..=b.max.y).contains(&p.y))
    else {
        return;
    };
    let below = |edge: f64| {
        // The largest f32 below the edge by at least one step (f32 is coarse far out).
        let mut v = (edge - step) as f32;
        while f64::from(v) >= edge {
            v = v.next_down();
        }
        v
    };
    if p.x >= b.max.x {
        state.pos[0] = below(b.max.x);
    }
    if p.y >= b.max.y {
        state.pos[1] = below(b.max.y);
    }
}
