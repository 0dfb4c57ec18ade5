//! Which shard simulates each leaf: bin-packing by measured load under the pool's per-shard
//! capacity, moving as few leaves as possible. A leaf stays where it is unless its shard is
//! gone or over capacity; new leaves (a split's children, a merge's parent, a new root) go to
//! the shard with the most room.

use std::collections::BTreeMap;

use sidereal_core::{SectorId, ShardId};

use super::Capacity;

#[derive(Debug, Default, Clone, Copy)]
struct Bin {
    sectors: usize,
    entities: u64,
}

impl Bin {
    fn fits(&self, entities: u64, cap: &Capacity) -> bool {
        self.sectors < cap.sectors && self.entities + entities <= cap.entities
    }
}

/// The desired placement of `leaves` (with their estimated entity counts) onto `shards` (those
/// ready to take sectors), given the `current` one. Every leaf gets a shard when there is at
/// least one; a leaf that fits nowhere goes to the emptiest shard (over capacity beats
/// unsimulated). Deterministic: the same input gives the same output.
pub fn assign(
    leaves: &BTreeMap<SectorId, u64>,
    current: &BTreeMap<SectorId, ShardId>,
    shards: &[ShardId],
    capacity: Capacity,
) -> BTreeMap<SectorId, ShardId> {
    let mut out = BTreeMap::new();
    if shards.is_empty() {
        return out;
    }
    let mut bins: BTreeMap<&ShardId, Bin> = shards.iter().map(|s| (s, Bin::default())).collect();
    // Keep what can stay, biggest first so that an over-full shard sheds its small leaves.
    let mut staying: Vec<(SectorId, u64, &ShardId)> = leaves
        .iter()
        .filter_map(|(l, e)| {
            let s = current.get(l)?;
            bins.contains_key(s).then_some((*l, *e, s))
        })
        .collect();
    staying.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (leaf, entities, shard) in staying {
        let bin = bins.get_mut(shard).expect("checked");
        // The first leaf always stays: a shard alone over capacity has nowhere better to go.
        if bin.sectors == 0 || bin.fits(entities, &capacity) {
            bin.sectors += 1;
            bin.entities += entities;
            out.insert(leaf, shard.clone());
        }
    }
    // Everything else (shed, on a shard that is gone, or new) needs a home.
    let mut homeless: Vec<(SectorId, u64)> = leaves
        .iter()
        .filter(|(l, _)| !out.contains_key(*l))
        .map(|(l, e)| (*l, *e))
        .collect();
    // Biggest first into the bin with the most room (first-fit decreasing, by free room).
    homeless.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (leaf, entities) in homeless {
        let roomiest = |fitting: bool| {
            bins.iter()
                .filter(|(_, b)| !fitting || b.fits(entities, &capacity))
                .min_by_key(|(s, b)| (b.entities, b.sectors, **s))
                .map(|(s, _)| (*s).clone())
        };
        let shard = roomiest(true)
            .or_else(|| roomiest(false))
            .expect("at least one shard");
        let bin = bins.get_mut(&shard).expect("exists");
        bin.sectors += 1;
        bin.entities += entities;
        out.insert(leaf, shard);
    }
    out
}

/// Leaves whose shard differs between two placements (what a change costs in handovers).
pub fn moved(before: &BTreeMap<SectorId, ShardId>, after: &BTreeMap<SectorId, ShardId>) -> usize {
    after
        .iter()
        .filter(|(l, s)| before.get(*l).is_some_and(|b| b != *s))
        .count()
}
