//! Shadows: each shard's read-only copies of other owners' entities near its sectors' borders.
//!
//! When every linked shard publishes sector streams, shards shadow themselves: each is told its
//! neighbours (the leaves other shards own within the margin of its own, and where they
//! publish) and subscribes to their streams, so the authority does no per-entity work for
//! shadows at all. Otherwise (a shard with `--stream off`) the authority computes every
//! shard's shadows from its mirror each tick, as before: a pure function over the placement and
//! the mirror.

use std::collections::{BTreeMap, BTreeSet};

use sidereal_core::protocol::{ReplicationMessage, Shadow};
use sidereal_core::{Bounds, Placement, SectorId, ShardId};

use super::Authority;
use crate::mirror::Mirror;

/// For each of `shards`, the entities other shards own within `margin` of any of its leaves
/// (each entity once per shard, however many of its leaves it is near). Shards with no
/// shadows get an empty list, so they learn that their old shadows are gone.
pub fn shadows_by_shard<'a>(
    placement: &Placement,
    mirror: &Mirror,
    shards: impl IntoIterator<Item = &'a ShardId>,
    margin: f64,
) -> BTreeMap<ShardId, Vec<Shadow>> {
    let mut per_shard: BTreeMap<ShardId, Vec<Shadow>> = shards
        .into_iter()
        .map(|s| (s.clone(), Vec::new()))
        .collect();
    let bounds: Vec<(Bounds, &ShardId)> = placement
        .sectors
        .iter()
        .map(|(leaf, shard)| (leaf.bounds(), shard))
        .collect();
    for (_, r) in mirror.iter() {
        let p = r.snapshot.state.point();
        for (b, shard) in &bounds {
            if *shard != &r.owner
                && b.distance_to(p) <= margin
                && let Some(v) = per_shard.get_mut(*shard)
                && v.last().is_none_or(|s| s.snapshot.id != r.snapshot.id)
            {
                v.push(Shadow {
                    snapshot: r.snapshot,
                });
            }
        }
    }
    per_shard
}

/// Whether two rectangles come within `margin` of each other (touching counts).
fn within(a: &Bounds, b: &Bounds, margin: f64) -> bool {
    let dx = (a.min.x - b.max.x).max(b.min.x - a.max.x).max(0.0);
    let dy = (a.min.y - b.max.y).max(b.min.y - a.max.y).max(0.0);
    dx * dx + dy * dy <= margin * margin
}

/// The leaves other shards own within `margin` of any leaf `shard` owns: where it subscribes
/// for its shadows.
pub fn neighbours_of(
    placement: &Placement,
    shard: &ShardId,
    margin: f64,
) -> Vec<(SectorId, ShardId)> {
    let own: Vec<Bounds> = placement
        .sectors
        .iter()
        .filter(|(_, s)| *s == shard)
        .map(|(leaf, _)| leaf.bounds())
        .collect();
    placement
        .sectors
        .iter()
        .filter(|(leaf, s)| {
            *s != shard && {
                let b = leaf.bounds();
                own.iter().any(|o| within(o, &b, margin))
            }
        })
        .map(|(leaf, s)| (*leaf, s.clone()))
        .collect()
}

/// How often shards that shadow themselves are told their neighbours again (it also keeps
/// their links alive), in seconds.
const NEIGHBOURS_EVERY_SECS: f64 = 0.5;

impl Authority {
    /// Whether shards take their shadows from their neighbours' streams: only when every
    /// live shard publishes streams (a shard that does not would be invisible to them).
    pub fn shards_shadow_themselves(&self) -> bool {
        !self.live.is_empty() && self.live.keys().all(|s| self.streams.contains_key(s))
    }

    /// Queues each live shard's shadows for this tick, or, when shards shadow themselves,
    /// their neighbours whenever placement or the streams changed and twice a second.
    pub fn send_shadows(&mut self, tick: u64) {
        if self.shards_shadow_themselves() {
            self.send_neighbours(tick);
            return;
        }
        self.neighbours_told = None;
        let per_shard = shadows_by_shard(
            &self.placement,
            &self.mirror,
            self.live.keys(),
            self.config.shadow_margin,
        );
        for (shard, shadows) in per_shard {
            self.send_to(&shard, ReplicationMessage::Shadows { tick, shadows });
        }
    }

    fn send_neighbours(&mut self, tick: u64) {
        let streams: Vec<(ShardId, String)> = self
            .live
            .keys()
            .filter_map(|s| self.streams.get(s).map(|a| (s.clone(), a.clone())))
            .collect();
        let key = (self.placement.generation, streams);
        let every = ((f64::from(self.config.tick_hz) * NEIGHBOURS_EVERY_SECS) as u64).max(1);
        if self.neighbours_told.as_ref() == Some(&key) && !tick.is_multiple_of(every) {
            return;
        }
        let shards: Vec<ShardId> = self.live.keys().cloned().collect();
        for shard in shards {
            let sectors = neighbours_of(&self.placement, &shard, self.config.shadow_margin);
            let named: BTreeSet<&ShardId> = sectors.iter().map(|(_, s)| s).collect();
            let streams = key
                .1
                .iter()
                .filter(|(s, _)| named.contains(s))
                .cloned()
                .collect();
            self.send_to(
                &shard,
                ReplicationMessage::Neighbours {
                    generation: key.0,
                    margin: self.config.shadow_margin as f32,
                    report_every: self.report_every,
                    sectors,
                    streams,
                },
            );
        }
        self.neighbours_told = Some(key);
    }
}

#[cfg(test)]
mod tests {
    use sidereal_core::{EntityId, EntitySnapshot};

    use super::*;
    use crate::test_support::asteroid_at;

    fn at(n: u64, x: f32, y: f32) -> EntitySnapshot {
        asteroid_at(EntityId::minted(1, n), x, y)
    }

    #[test]
    fn a_shard_sees_only_other_owners_entities_within_the_margin_of_its_leaves() {
        let root = SectorId::new(1, 0, 0).unwrap();
        let [west, east] = {
            let b = root.bounds();
            let mid = (b.min.x + b.max.x) / 2.0;
            let cells: Vec<SectorId> = root.children().unwrap().to_vec();
            let w: Vec<SectorId> = cells
                .iter()
                .copied()
                .filter(|c| c.bounds().max.x <= mid)
                .collect();
            let e: Vec<SectorId> = cells
                .iter()
                .copied()
                .filter(|c| c.bounds().min.x >= mid)
                .collect();
            [w, e]
        };
        let (a, b) = (ShardId::new("a"), ShardId::new("b"));
        let mut placement = Placement::default();
        for leaf in &west {
            placement.sectors.insert(*leaf, a.clone());
        }
        for leaf in &east {
            placement.sectors.insert(*leaf, b.clone());
        }
        let mid = ((root.bounds().min.x + root.bounds().max.x) / 2.0) as f32;
        // A quarter of the way up: far from the leaves' shared horizontal edge.
        let y = (root.bounds().min.y + root.edge() / 4.0) as f32;
        let mut mirror = Mirror::default();
        // b's entity 10 units east of the border, and one 500 units east; a's entity 20 west.
        mirror.insert_new(at(1, mid + 10.0, y), b.clone());
        mirror.insert_new(at(2, mid + 500.0, y), b.clone());
        mirror.insert_new(at(3, mid - 20.0, y), a.clone());
        let shadows = shadows_by_shard(&placement, &mirror, [&a, &b], 50.0);
        let ids = |s: &ShardId| -> Vec<u64> {
            shadows[s]
                .iter()
                .map(|s| s.snapshot.id.0 & 0xffff)
                .collect()
        };
        assert_eq!(
            ids(&a),
            vec![1],
            "a shadows b's entity near the border, once"
        );
        assert_eq!(ids(&b), vec![3]);
        let none = shadows_by_shard(&placement, &mirror, [&a, &b], 5.0);
        assert!(
            none.values().all(Vec::is_empty),
            "nothing within 5 units of a foreign leaf"
        );
    }
}
