//! One world (a namespace) as the operator sees it, and what each Sector's status should say:
//! plain functions over plain data, so the reconciler only observes and writes.

use std::collections::{BTreeMap, BTreeSet};

use sidereal_core::control::SectorLoadView;
use sidereal_core::{Placement, SectorId, ShardId};
use sidereal_crds::{SectorLoad, SectorPhase};

use crate::policy::Thresholds;

/// The sector tree of one world: roots have no ancestor among the Sectors; a Sector with all
/// four children present is split (inner), and its children carry on; the rest are leaves,
/// the only sectors simulated. A Sector under an ancestor that is not split (a child whose
/// siblings are missing) is stray: it is reported, not simulated, so the leaves always tile
/// the roots exactly.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SectorTree {
    pub roots: Vec<SectorId>,
    pub leaves: BTreeSet<SectorId>,
    pub stray: BTreeSet<SectorId>,
}

impl SectorTree {
    /// The tree of `sectors` (the ids of a namespace's Sector objects).
    pub fn of(sectors: &BTreeSet<SectorId>) -> Self {
        let split = |s: &SectorId| {
            s.children()
                .is_some_and(|c| c.iter().all(|k| sectors.contains(k)))
        };
        let mut tree = Self::default();
        for s in sectors {
            let mut ancestors = std::iter::successors(s.parent(), |a| a.parent())
                .filter(|a| sectors.contains(a))
                .peekable();
            if ancestors.peek().is_none() {
                tree.roots.push(*s);
            } else if !ancestors.all(|a| split(&a)) {
                tree.stray.insert(*s);
                continue;
            }
            if !split(s) {
                tree.leaves.insert(*s);
            }
        }
        tree
    }
}

/// Why a Sector is or is not simulated: the reason of its `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A leaf placed on a linked shard.
    Simulated,
    /// An inner node: its children are simulated instead.
    Split,
    /// Its `spec.pool` names no ShardPool in the namespace; it is left out of the world.
    PoolNotFound,
    /// The namespace has no replication to talk to (no `sidereal-control` Secret).
    NoReplication,
    /// The namespace's `sidereal-control` Secret cannot be used (a key missing, not UTF-8).
    BadControlSecret,
    /// No shard is linked to replication, so nothing can be placed.
    NoShards,
    /// Placed on a shard that is not linked right now; it will be re-homed.
    ShardDown,
    /// Not in replication's placement yet.
    NotPlaced,
    /// Under an ancestor whose four children are not all Sectors: not simulated.
    ParentNotSplit,
    /// Split, and its children are not all simulated yet (being placed, entities handed over).
    Splitting,
    /// Its four children were merged back into it, and it is not simulated yet.
    Merging,
}

impl Readiness {
    /// The condition's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Readiness::Simulated => "Simulated",
            Readiness::Split => "Split",
            Readiness::PoolNotFound => "PoolNotFound",
            Readiness::NoReplication => "NoReplication",
            Readiness::BadControlSecret => "BadControlSecret",
            Readiness::NoShards => "NoShards",
            Readiness::ShardDown => "ShardDown",
            Readiness::NotPlaced => "NotPlaced",
            Readiness::ParentNotSplit => "ParentNotSplit",
            Readiness::Splitting => "Splitting",
            Readiness::Merging => "Merging",
        }
    }

    /// Whether the `Ready` condition is true.
    pub fn ready(self) -> bool {
        matches!(self, Readiness::Simulated | Readiness::Split)
    }
}

/// What one Sector's status should say.
#[derive(Debug, Clone, PartialEq)]
pub struct SectorState {
    pub phase: SectorPhase,
    /// Names of the four children while split.
    pub children: Vec<String>,
    pub shard: Option<String>,
    pub load: Option<SectorLoad>,
    pub readiness: Readiness,
    pub message: String,
}

/// What replication told the operator this round.
#[derive(Debug, Clone, Default)]
pub struct ReplicationView {
    pub placement: Placement,
    pub connected: BTreeSet<ShardId>,
    pub load: BTreeMap<SectorId, SectorLoadView>,
}

/// The status of `sector` in `tree`, given whether its pool exists and what replication
/// reported (`None`: no replication reachable).
pub fn sector_state(
    sector: SectorId,
    tree: &SectorTree,
    pool_exists: bool,
    replication: Option<&ReplicationView>,
) -> SectorState {
    let state = |phase, readiness: Readiness, message: String| SectorState {
        phase,
        children: Vec::new(),
        shard: None,
        load: None,
        readiness,
        message,
    };
    if !pool_exists {
        return state(
            SectorPhase::Pending,
            Readiness::PoolNotFound,
            "spec.pool names no ShardPool in this namespace; create it or fix the name".into(),
        );
    }
    if tree.stray.contains(&sector) {
        return state(
            SectorPhase::Pending,
            Readiness::ParentNotSplit,
            "an ancestor's four children are not all Sectors, so this one is not simulated".into(),
        );
    }
    if !tree.leaves.contains(&sector) {
        let handing_over = replication.is_some_and(|r| children_pending(sector, tree, r));
        let mut split = if handing_over {
            state(
                SectorPhase::Splitting,
                Readiness::Splitting,
                "split: its children are being placed on shards and given its entities".into(),
            )
        } else {
            state(
                SectorPhase::Split,
                Readiness::Split,
                "split: its four children are simulated".into(),
            )
        };
        split.children = sector
            .children()
            .map(|c| c.iter().map(SectorId::name).collect())
            .unwrap_or_default();
        return split;
    }
    let Some(r) = replication else {
        return state(
            SectorPhase::Pending,
            Readiness::NoReplication,
            "no replication for this namespace: create the Secret sidereal-control with keys url and token".into(),
        );
    };
    let Some(shard) = r.placement.sectors.get(&sector) else {
        let (readiness, message) = if r.connected.is_empty() {
            (Readiness::NoShards, "no shard is linked to replication yet")
        } else {
            (Readiness::NotPlaced, "waiting for the next placement")
        };
        return state(SectorPhase::Pending, readiness, message.into());
    };
    let (readiness, message) = if r.connected.contains(shard) {
        (Readiness::Simulated, format!("simulated by {shard}"))
    } else {
        (
            Readiness::ShardDown,
            format!("placed on {shard}, which is not linked; it will be re-homed"),
        )
    };
    SectorState {
        children: Vec::new(),
        phase: if readiness.ready() {
            SectorPhase::Active
        } else {
            SectorPhase::Pending
        },
        shard: Some(shard.0.clone()),
        load: r.load.get(&sector).map(|l| SectorLoad {
            entities: i64::from(l.entities),
            players: i64::from(l.players),
            // Rounded to tenths of a millisecond: status is written only when it changes,
            // and the noise in the last digits is not a change.
            tick_p99_ms: (f64::from(l.tick_p99_ms) * 10.0).round() / 10.0,
        }),
        readiness,
        message,
    }
}

/// Whether `sector` is placed on a shard linked to replication.
pub fn simulated(sector: &SectorId, r: &ReplicationView) -> bool {
    r.placement
        .sectors
        .get(sector)
        .is_some_and(|shard| r.connected.contains(shard))
}

/// Whether some child of the split `sector` is a leaf not simulated yet.
fn children_pending(sector: SectorId, tree: &SectorTree, r: &ReplicationView) -> bool {
    sector.children().is_some_and(|c| {
        c.iter()
            .any(|k| tree.leaves.contains(k) && !simulated(k, r))
    })
}

/// Splits under way: split Sectors whose children are not all simulated yet. Derived from
/// the tree and replication alone, so an operator that restarts mid-split still counts them.
pub fn splits_under_way(tree: &SectorTree, r: &ReplicationView) -> BTreeSet<SectorId> {
    tree.leaves
        .iter()
        .filter(|l| !simulated(l, r) && !tree.roots.contains(l))
        .filter_map(|l| l.parent())
        .collect()
}

/// A Sector's state when the namespace's control Secret is unusable: says why, instead of
/// "no replication".
pub fn bad_secret(mut state: SectorState, problem: &str) -> SectorState {
    if state.readiness == Readiness::NoReplication {
        state.readiness = Readiness::BadControlSecret;
        state.message = problem.to_owned();
    }
    state
}

/// A merged parent's state while it waits for a shard: `Merging` rather than `Pending`.
pub fn merging(mut state: SectorState) -> SectorState {
    if state.phase == SectorPhase::Pending {
        state.phase = SectorPhase::Merging;
        state.readiness = Readiness::Merging;
        state.message = format!(
            "its four children were merged back into it; {}",
            state.message
        );
    }
    state
}

/// Whether a Sector's reported load moved enough to be worth a status write: the API server is
/// not a metrics pipeline (Prometheus has the exact figures). A figure must move by more than
/// 10% (30% for tick p99), more than a small floor, and more than a twentieth (a fifth for
/// tick p99) of the pool's split threshold: what the operator acts on sets the scale of what
/// is worth showing. Without this, a shard's tick jitter rewrites every Sector it simulates.
pub fn load_moved(old: &SectorLoad, new: &SectorLoad, split: &Thresholds) -> bool {
    let count = |a: i64, b: i64, threshold: u64| {
        let d = (a - b).abs();
        let floor = 5.max(i64::try_from(threshold / 20).unwrap_or(i64::MAX));
        d > floor && d * 10 > a.abs().max(b.abs())
    };
    let tick = {
        let d = (old.tick_p99_ms - new.tick_p99_ms).abs();
        d > 1.0_f64.max(split.tick_p99_ms / 5.0) && d > 0.3 * old.tick_p99_ms.max(new.tick_p99_ms)
    };
    count(old.entities, new.entities, split.entities)
        || count(old.players, new.players, split.players)
        || tick
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> BTreeSet<SectorId> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn roots_have_no_ancestor_split_sectors_have_all_four_children_the_rest_are_leaves() {
        let tree = SectorTree::of(&ids(&[
            "s2-x0-y0",
            "s1-x0-y0",
            "s1-x1-y0",
            "s1-x0-y1",
            "s1-x1-y1",
            "s2-xm1-y0",
            // One child of s2-xm1-y0 without its siblings, and its own child.
            "s1-xm2-y0",
            "s0-xm4-y0",
        ]));
        assert_eq!(
            tree.roots,
            vec!["s2-xm1-y0".parse().unwrap(), "s2-x0-y0".parse().unwrap()]
        );
        assert_eq!(
            tree.leaves,
            ids(&["s1-x0-y0", "s1-x1-y0", "s1-x0-y1", "s1-x1-y1", "s2-xm1-y0"])
        );
        assert_eq!(tree.stray, ids(&["s1-xm2-y0", "s0-xm4-y0"]));
        assert_eq!(SectorTree::of(&BTreeSet::new()), SectorTree::default());
    }

    #[test]
    fn only_a_meaningful_change_of_load_is_worth_a_status_write() {
        let load = |entities, players, tick_p99_ms| SectorLoad {
            entities,
            players,
            tick_p99_ms,
        };
        // Split at 1,000 entities, 40 players, 10 ms: floors of 50 entities, 5 players, 2 ms.
        let split = Thresholds {
            entities: 1_000,
            players: 40,
            tick_p99_ms: 10.0,
            sustain: std::time::Duration::from_secs(30),
        };
        let moved = |a: &SectorLoad, b: &SectorLoad| load_moved(a, b, &split);
        let base = load(100, 10, 5.0);
        for (new, expected) in [
            (load(104, 10, 5.0), false), // drift
            (load(100, 10, 5.9), false), // jitter under 1 ms
            (load(100, 12, 5.0), false), // +2 players
            (load(120, 10, 5.0), false), // +20%, but under a twentieth of the threshold
            (load(160, 10, 5.0), true),  // +60
            (load(100, 10, 9.0), true),  // tick +80%
            (load(100, 0, 5.0), true),   // ten players left
            (load(3000, 10, 5.0), true), // hot
        ] {
            assert_eq!(moved(&base, &new), expected, "{new:?}");
        }
        assert!(
            !moved(&load(1, 0, 0.4), &load(2, 0, 0.5)),
            "tiny sectors jitter"
        );
        assert!(!moved(&load(0, 0, 0.4), &load(3, 0, 0.4)), "a few drift in");
        assert!(moved(&load(0, 0, 0.4), &load(60, 0, 0.4)));
        // A shard's tick jitter under a fifth of the threshold rewrites nothing.
        assert!(!moved(&load(5, 0, 3.0), &load(5, 0, 4.9)));
    }

    #[test]
    fn status_says_why_a_sector_is_or_is_not_simulated() {
        let s: SectorId = "s2-x0-y0".parse().unwrap();
        let tree = SectorTree::of(&ids(&["s2-x0-y0"]));
        let mut r = ReplicationView::default();
        let reason = |pool, r: Option<&ReplicationView>| sector_state(s, &tree, pool, r).readiness;
        assert_eq!(reason(false, Some(&r)), Readiness::PoolNotFound);
        assert_eq!(reason(true, None), Readiness::NoReplication);
        let broken = bad_secret(sector_state(s, &tree, true, None), "no key \"token\"");
        assert_eq!(
            (broken.readiness, broken.message.as_str()),
            (Readiness::BadControlSecret, "no key \"token\"")
        );
        assert_eq!(reason(true, Some(&r)), Readiness::NoShards);
        r.connected.insert(ShardId::new("shard-0"));
        assert_eq!(reason(true, Some(&r)), Readiness::NotPlaced);
        r.placement.sectors.insert(s, ShardId::new("shard-1"));
        assert_eq!(reason(true, Some(&r)), Readiness::ShardDown);
        r.placement.sectors.insert(s, ShardId::new("shard-0"));
        r.load.insert(
            s,
            SectorLoadView {
                sector: s,
                shard: ShardId::new("shard-0"),
                entities: 42,
                players: 1,
                tick_p99_ms: 1.234_567,
            },
        );
        let active = sector_state(s, &tree, true, Some(&r));
        assert_eq!(
            (active.phase, active.shard.as_deref(), active.readiness),
            (SectorPhase::Active, Some("shard-0"), Readiness::Simulated)
        );
        assert_eq!(
            active.load,
            Some(SectorLoad {
                entities: 42,
                players: 1,
                tick_p99_ms: 1.2
            })
        );
        let family = ids(&["s2-x0-y0", "s1-x0-y0", "s1-x1-y0", "s1-x0-y1", "s1-x1-y1"]);
        let family = SectorTree::of(&family);
        // Children not placed yet: the split is under way.
        let splitting = sector_state(s, &family, true, Some(&r));
        assert_eq!(
            (splitting.phase, splitting.readiness.ready()),
            (SectorPhase::Splitting, false)
        );
        assert_eq!(splits_under_way(&family, &r), ids(&["s2-x0-y0"]));
        // All four simulated: split.
        for k in s.children().unwrap() {
            r.placement.sectors.insert(k, ShardId::new("shard-0"));
        }
        assert_eq!(
            sector_state(s, &family, true, Some(&r)).phase,
            SectorPhase::Split
        );
        assert!(splits_under_way(&family, &r).is_empty());
        // A root waiting for a shard is no split under way.
        let unplaced_root = SectorTree::of(&ids(&["s2-x1-y0"]));
        assert!(splits_under_way(&unplaced_root, &r).is_empty());
        // A merged parent waiting for a shard says so; once simulated, it is simply Active.
        let pending = sector_state("s2-x1-y0".parse().unwrap(), &unplaced_root, true, Some(&r));
        assert_eq!(merging(pending).phase, SectorPhase::Merging);
        assert_eq!(merging(active.clone()).phase, SectorPhase::Active);
        let lonely = SectorTree::of(&ids(&["s2-x0-y0", "s1-x0-y0"]));
        let child: SectorId = "s1-x0-y0".parse().unwrap();
        assert_eq!(
            sector_state(child, &lonely, true, Some(&r)).readiness,
            Readiness::ParentNotSplit
        );
        assert_eq!(
            sector_state(s, &lonely, true, Some(&r)).phase,
            SectorPhase::Active
        );
    }
}
