//! Load observations folded into what the policy needs: since when each leaf has been hot,
//! since when each family of four siblings has been cold, and when each sector last changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sidereal_core::SectorId;

use super::{LeafLoad, PoolPolicy};

#[derive(Debug, Clone, Copy, PartialEq)]
struct LeafTrack {
    last: LeafLoad,
    seen: Instant,
    hot_since: Option<Instant>,
}

/// What the operator remembers of a world's load between reconciles.
#[derive(Debug, Clone, Default)]
pub struct LoadHistory {
    leaves: BTreeMap<SectorId, LeafTrack>,
    /// Families (by parent) whose four children were together under the merge thresholds.
    cold_families: BTreeMap<SectorId, Instant>,
    /// When a sector was last split, merged or created: the start of its cooldown.
    changed: BTreeMap<SectorId, Instant>,
}

impl LoadHistory {
    /// Folds in one round of reports. `reports` holds the leaves whose shard reported fresh
    /// load this round; a leaf missing from it keeps its last report, which goes stale.
    pub fn observe(
        &mut self,
        leaves: &BTreeSet<SectorId>,
        reports: &BTreeMap<SectorId, LeafLoad>,
        policy: &PoolPolicy,
        now: Instant,
    ) {
        self.leaves.retain(|s, _| leaves.contains(s));
        for (sector, load) in reports {
            if !leaves.contains(sector) {
                continue;
            }
            let hot = load.is_hot(&policy.split);
            let track = self.leaves.entry(*sector).or_insert(LeafTrack {
                last: *load,
                seen: now,
                hot_since: None,
            });
            // A gap in the reports breaks a streak: nobody knows what happened meanwhile.
            let continuous = now.saturating_duration_since(track.seen) <= policy.stale_after;
            track.hot_since = match (hot, track.hot_since) {
                (true, Some(since)) if continuous => Some(since),
                (true, _) => Some(now),
                (false, _) => None,
            };
            track.last = *load;
            track.seen = now;
        }
        // Families: all four children leaves with fresh reports, combined under merge.
        let parents: BTreeSet<SectorId> = leaves.iter().filter_map(|l| l.parent()).collect();
        let mut cold = BTreeMap::new();
        for parent in parents {
            let Some(children) = parent.children() else {
                continue;
            };
            let loads: Option<Vec<LeafLoad>> = children
                .iter()
                .map(|c| self.fresh(c, policy, now).filter(|_| leaves.contains(c)))
                .collect();
            let Some(loads) = loads else { continue };
            if LeafLoad::combined(&loads).is_cold(&policy.merge) {
                let since = self.cold_families.get(&parent).copied().unwrap_or(now);
                cold.insert(parent, since);
            }
        }
        self.cold_families = cold;
    }

    /// The last report of `sector` if it is not stale.
    pub fn fresh(&self, sector: &SectorId, policy: &PoolPolicy, now: Instant) -> Option<LeafLoad> {
        self.leaves
            .get(sector)
            .filter(|t| now.saturating_duration_since(t.seen) <= policy.stale_after)
            .map(|t| t.last)
    }

    /// The last report of `sector`, however old.
    pub fn last(&self, sector: &SectorId) -> Option<LeafLoad> {
        self.leaves.get(sector).map(|t| t.last)
    }

    /// How long `sector` has been continuously over a split threshold (fresh reports only).
    pub fn hot_for(
        &self,
        sector: &SectorId,
        policy: &PoolPolicy,
        now: Instant,
    ) -> Option<Duration> {
        let t = self.leaves.get(sector)?;
        if now.saturating_duration_since(t.seen) > policy.stale_after {
            return None;
        }
        t.hot_since.map(|s| now.saturating_duration_since(s))
    }

    /// How long the four children of `parent` have together been under the merge thresholds.
    pub fn cold_for(&self, parent: &SectorId, now: Instant) -> Option<Duration> {
        self.cold_families
            .get(parent)
            .map(|s| now.saturating_duration_since(*s))
    }

    /// Records that `sectors` changed now (split, merged or created): their cooldown starts.
    pub fn record_change(&mut self, sectors: impl IntoIterator<Item = SectorId>, now: Instant) {
        for s in sectors {
            self.changed.insert(s, now);
            self.leaves.remove(&s);
        }
    }

    /// Whether `sector` is out of its cooldown.
    pub fn cooled_down(&self, sector: &SectorId, policy: &PoolPolicy, now: Instant) -> bool {
        self.changed
            .get(sector)
            .is_none_or(|t| now.saturating_duration_since(*t) >= policy.cooldown)
    }
}
