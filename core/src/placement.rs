//! Pure placement decisions: is a desired placement valid for the world, and how to build
//! the common ones (an even start, a split, a merge, re-homing a dead shard's leaves).

use std::collections::{BTreeMap, BTreeSet};

use crate::geometry::SectorId;
use crate::ids::ShardId;
use crate::load::Placement;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("sector {0} is not a valid sector id")]
    InvalidSector(SectorId),
    #[error("sectors {0} and {1} overlap: {0} contains {1}; a placement lists leaves only")]
    Overlap(SectorId, SectorId),
    #[error("sector {0} is outside the world (roots: {1})")]
    OutsideWorld(SectorId, String),
    #[error(
        "the leaves under root {0} do not cover it: a placement must list every leaf of the world"
    )]
    Incomplete(SectorId),
    #[error("sector {sector} is placed on unknown shard {shard} (connected: {known})")]
    UnknownShard {
        sector: SectorId,
        shard: ShardId,
        known: String,
    },
    #[error("split of {0} is impossible: it is at scale 0 or not a leaf of the placement")]
    CannotSplit(SectorId),
    #[error("merge into {0} is impossible: its four children are not all leaves of the placement")]
    CannotMerge(SectorId),
    #[error("roots {0} and {1} overlap: {0} contains {1}; roots must be disjoint")]
    RootsOverlap(SectorId, SectorId),
}

/// Checks that `roots` can be a world: each valid, no two overlapping. No roots at all is a
/// world whose every entity is archived (its last root Sector was deleted).
pub fn validate_world(roots: &[SectorId]) -> Result<(), PlacementError> {
    for (i, a) in roots.iter().enumerate() {
        if !a.is_valid() {
            return Err(PlacementError::InvalidSector(*a));
        }
        for b in &roots[i + 1..] {
            if a.covers(b) {
                return Err(PlacementError::RootsOverlap(*a, *b));
            }
            if b.covers(a) {
                return Err(PlacementError::RootsOverlap(*b, *a));
            }
        }
    }
    Ok(())
}

fn names(ids: &[SectorId]) -> String {
    ids.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Area of a sector in scale-0 cells (4^scale), exact for every scale up to 40.
fn cells(s: &SectorId) -> u128 {
    1u128 << (2 * u32::from(s.scale))
}

/// Checks that `sectors` are leaves that tile `world` exactly (no overlap, nothing missing,
/// nothing outside) and that every shard named is in `known_shards`.
pub fn validate(
    sectors: &BTreeMap<SectorId, ShardId>,
    world: &[SectorId],
    known_shards: &BTreeSet<ShardId>,
) -> Result<(), PlacementError> {
    let mut per_root: BTreeMap<SectorId, u128> = BTreeMap::new();
    for (leaf, shard) in sectors {
        if !leaf.is_valid() {
            return Err(PlacementError::InvalidSector(*leaf));
        }
        let mut up = leaf.parent();
        while let Some(a) = up {
            if sectors.contains_key(&a) {
                return Err(PlacementError::Overlap(a, *leaf));
            }
            up = a.parent();
        }
        let root = world
            .iter()
            .find(|r| r.covers(leaf))
            .ok_or_else(|| PlacementError::OutsideWorld(*leaf, names(world)))?;
        *per_root.entry(*root).or_default() += cells(leaf);
        if !known_shards.contains(shard) {
            return Err(PlacementError::UnknownShard {
                sector: *leaf,
                shard: shard.clone(),
                known: known_shards
                    .iter()
                    .map(|s| s.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    for root in world {
        if per_root.get(root).copied().unwrap_or(0) != cells(root) {
            return Err(PlacementError::Incomplete(*root));
        }
    }
    Ok(())
}

/// The leaf of `sectors` that contains `s` (itself or an ancestor), if any.
pub fn leaf_covering(sectors: &BTreeMap<SectorId, ShardId>, s: SectorId) -> Option<SectorId> {
    let mut cur = Some(s);
    while let Some(c) = cur {
        if sectors.contains_key(&c) {
            return Some(c);
        }
        cur = c.parent();
    }
    None
}

/// An initial placement: the world's roots split until there are at least `2 * shards.len()`
/// leaves (or scale 0), dealt round-robin so neighbouring leaves land on different shards.
pub fn even(world: &[SectorId], shards: &[ShardId], generation: u64) -> Placement {
    let mut leaves: Vec<SectorId> = world.to_vec();
    while leaves.len() < 2 * shards.len() {
        let Some(i) = leaves.iter().position(|l| l.scale > 0) else {
            break;
        };
        let l = leaves.remove(i);
        leaves.extend(l.children().expect("scale > 0"));
    }
    leaves.sort();
    let sectors = leaves
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, shards[i % shards.len()].clone()))
        .collect();
    Placement {
        generation,
        sectors,
        world: None,
    }
}

/// Splits leaf `s` into its four children, placed on `shards[i]` (child order as
/// `SectorId::children`).
pub fn split(
    p: &Placement,
    s: SectorId,
    shards: [ShardId; 4],
) -> Result<Placement, PlacementError> {
    let children = s.children().ok_or(PlacementError::CannotSplit(s))?;
    let mut next = p.clone();
    next.sectors
        .remove(&s)
        .ok_or(PlacementError::CannotSplit(s))?;
    next.sectors.extend(children.into_iter().zip(shards));
    next.generation += 1;
    Ok(next)
}

/// Merges the four child leaves of `parent` back into it, on `shard`.
pub fn merge(p: &Placement, parent: SectorId, shard: ShardId) -> Result<Placement, PlacementError> {
    let children = parent
        .children()
        .ok_or(PlacementError::CannotMerge(parent))?;
    if !children.iter().all(|c| p.sectors.contains_key(c)) {
        return Err(PlacementError::CannotMerge(parent));
    }
    let mut next = p.clone();
    for c in children {
        next.sectors.remove(&c);
    }
    next.sectors.insert(parent, shard);
    next.generation += 1;
    Ok(next)
}

/// Moves every leaf of a shard not in `live` to the live shard with the fewest leaves.
pub fn rehome(p: &Placement, live: &BTreeSet<ShardId>) -> Option<Placement> {
    if live.is_empty() {
        return None;
    }
    let mut next = p.clone();
    let mut counts: BTreeMap<ShardId, usize> = live.iter().map(|s| (s.clone(), 0)).collect();
    for shard in p.sectors.values() {
        if let Some(c) = counts.get_mut(shard) {
            *c += 1;
        }
    }
    let mut changed = false;
    for (_, shard) in next.sectors.iter_mut() {
        if !live.contains(shard) {
            let (target, c) = counts
                .iter_mut()
                .min_by_key(|(s, c)| (**c, (*s).clone()))
                .expect("live is not empty");
            *shard = target.clone();
            *c += 1;
            changed = true;
        }
    }
    changed.then(|| {
        next.generation += 1;
        next
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(n: usize) -> ShardId {
        ShardId::new(format!("shard-{n}"))
    }

    fn world() -> Vec<SectorId> {
        vec![
            SectorId::new(2, 0, 0).unwrap(),
            SectorId::new(2, -1, 0).unwrap(),
        ]
    }

    fn known(n: usize) -> BTreeSet<ShardId> {
        (0..n).map(shard).collect()
    }

    #[test]
    fn a_world_is_disjoint_valid_roots() {
        let s = |t: &str| t.parse::<SectorId>().unwrap();
        validate_world(&world()).unwrap();
        validate_world(&[s("s0-xm5-y3")]).unwrap();
        validate_world(&[]).unwrap();
        assert_eq!(
            validate_world(&[s("s2-x0-y0"), s("s0-x3-y1")]),
            Err(PlacementError::RootsOverlap(s("s2-x0-y0"), s("s0-x3-y1")))
        );
        assert_eq!(
            validate_world(&[s("s0-x3-y1"), s("s2-x0-y0")]),
            Err(PlacementError::RootsOverlap(s("s2-x0-y0"), s("s0-x3-y1")))
        );
        assert!(matches!(
            validate_world(&[s("s1-x0-y0"), s("s1-x0-y0")]),
            Err(PlacementError::RootsOverlap(..))
        ));
    }

    #[test]
    fn even_placement_tiles_the_world_and_uses_every_shard() {
        let p = even(&world(), &[shard(0), shard(1), shard(2)], 1);
        validate(&p.sectors, &world(), &known(3)).unwrap();
        assert!(p.sectors.len() >= 6);
        let used: BTreeSet<_> = p.sectors.values().cloned().collect();
        assert_eq!(used, known(3));
    }

    #[test]
    fn split_then_merge_round_trips() {
        let p = even(&world(), &[shard(0), shard(1)], 1);
        let leaf = *p.sectors.keys().next().unwrap();
        let s = split(&p, leaf, [shard(0), shard(1), shard(0), shard(1)]).unwrap();
        validate(&s.sectors, &world(), &known(2)).unwrap();
        assert_eq!(s.generation, 2);
        let m = merge(&s, leaf, shard(1)).unwrap();
        validate(&m.sectors, &world(), &known(2)).unwrap();
        assert_eq!(m.sectors.len(), p.sectors.len());
        assert!(matches!(
            merge(&m, leaf, shard(0)),
            Err(PlacementError::CannotMerge(_))
        ));
    }

    #[test]
    fn invalid_placements_are_explained() {
        let w = world();
        let p = even(&w, &[shard(0)], 1);
        let leaf = *p.sectors.keys().next().unwrap();
        let mut overlap = p.sectors.clone();
        overlap.insert(leaf.children().unwrap()[0], shard(0));
        assert!(matches!(
            validate(&overlap, &w, &known(1)),
            Err(PlacementError::Overlap(..))
        ));
        let mut missing = p.sectors.clone();
        missing.remove(&leaf);
        assert!(matches!(
            validate(&missing, &w, &known(1)),
            Err(PlacementError::Incomplete(_))
        ));
        let mut outside = p.sectors.clone();
        outside.insert(SectorId::new(0, 100, 100).unwrap(), shard(0));
        assert!(matches!(
            validate(&outside, &w, &known(1)),
            Err(PlacementError::OutsideWorld(..))
        ));
        let mut unknown = p.sectors.clone();
        unknown.insert(leaf, shard(9));
        let e = validate(&unknown, &w, &known(1)).unwrap_err();
        assert!(e.to_string().contains("unknown shard shard-9"), "{e}");
    }

    #[test]
    fn rehome_moves_only_dead_shards_leaves() {
        let p = even(&world(), &[shard(0), shard(1), shard(2)], 4);
        let live: BTreeSet<_> = [shard(0), shard(2)].into();
        let r = rehome(&p, &live).unwrap();
        assert_eq!(r.generation, 5);
        assert!(r.sectors.values().all(|s| live.contains(s)));
        for (leaf, s) in &p.sectors {
            if live.contains(s) {
                assert_eq!(&r.sectors[leaf], s);
            }
        }
        assert_eq!(
            rehome(&r, &live),
            None,
            "nothing to do is no new generation"
        );
    }

    #[test]
    fn leaf_covering_finds_ancestors() {
        let p = even(&world(), &[shard(0)], 1);
        let leaf = *p.sectors.keys().next().unwrap();
        let deep = SectorId::of_point(leaf.center(), 0).unwrap();
        assert_eq!(leaf_covering(&p.sectors, deep), Some(leaf));
        assert_eq!(
            leaf_covering(&p.sectors, SectorId::new(0, 1 << 20, 0).unwrap()),
            None
        );
    }
}
