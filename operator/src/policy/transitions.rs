//! Which leaves split and which families merge, now. A leaf splits when it has been over a
//! split threshold for the whole sustain window; four sibling leaves merge when together they
//! have been under every merge threshold for theirs. Cooldowns, the concurrency cap and the
//! pool's lowest scale keep it from flapping or going too deep.

use std::collections::BTreeSet;
use std::time::Instant;

use sidereal_core::SectorId;

use super::PoolPolicy;
use super::history::LoadHistory;

/// A change of the sector tree the operator carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `sector` becomes an inner node; its four children become leaves.
    Split {
        sector: SectorId,
        children: [SectorId; 4],
    },
    /// The four `children` fold back into `parent`, which becomes a leaf again.
    Merge {
        parent: SectorId,
        children: [SectorId; 4],
    },
}

impl Transition {
    /// Every sector the transition touches (for cooldowns).
    pub fn sectors(&self) -> impl Iterator<Item = SectorId> {
        let (s, c) = match self {
            Transition::Split { sector, children } => (*sector, *children),
            Transition::Merge { parent, children } => (*parent, *children),
        };
        std::iter::once(s).chain(c)
    }
}

/// The transitions to start now. `roots` are the world's root sectors (never merged away),
/// `leaves` the current leaves, `in_flight` the transitions still under way.
pub fn decide(
    roots: &[SectorId],
    leaves: &BTreeSet<SectorId>,
    policy: &PoolPolicy,
    history: &LoadHistory,
    in_flight: usize,
    now: Instant,
) -> Vec<Transition> {
    let budget = policy.max_concurrent.saturating_sub(in_flight);
    if budget == 0 {
        return Vec::new();
    }
    // Splits first, the hottest (longest over) first: relief matters more than thrift.
    let mut splits: Vec<(std::time::Duration, Transition)> = leaves
        .iter()
        .filter(|l| l.scale > policy.min_scale)
        .filter(|l| history.cooled_down(l, policy, now))
        .filter_map(|l| {
            let hot = history.hot_for(l, policy, now)?;
            let children = l.children()?;
            (hot >= policy.split.sustain).then_some((
                hot,
                Transition::Split {
                    sector: *l,
                    children,
                },
            ))
        })
        .collect();
    splits.sort_by_key(|s| std::cmp::Reverse(s.0));

    let splitting: BTreeSet<SectorId> = splits
        .iter()
        .filter_map(|(_, t)| match t {
            Transition::Split { sector, .. } => Some(*sector),
            Transition::Merge { .. } => None,
        })
        .collect();
    let parents: BTreeSet<SectorId> = leaves.iter().filter_map(|l| l.parent()).collect();
    let mut merges: Vec<(std::time::Duration, Transition)> = parents
        .into_iter()
        // Never above a root: the world's edge stays where users put it.
        .filter(|p| roots.iter().any(|r| r.covers(p)))
        .filter_map(|p| {
            let children = p.children()?;
            if !children.iter().all(|c| leaves.contains(c)) {
                return None;
            }
            if children.iter().any(|c| splitting.contains(c)) {
                return None;
            }
            let all_cooled = history.cooled_down(&p, policy, now)
                && children.iter().all(|c| history.cooled_down(c, policy, now));
            let cold = history.cold_for(&p, now)?;
            (all_cooled && cold >= policy.merge.sustain).then_some((
                cold,
                Transition::Merge {
                    parent: p,
                    children,
                },
            ))
        })
        .collect();
    merges.sort_by_key(|m| std::cmp::Reverse(m.0));

    splits
        .into_iter()
        .chain(merges)
        .map(|(_, t)| t)
        .take(budget)
        .collect()
}
