//! `sidereal up`'s autoscaler: the operator's policy functions run against local processes.
//! Each round turns what replication reports (placement, load, links) into the leaves to
//! simulate (after this round's splits and merges), the shards to place them on, and the shard
//! processes to start or stop. No Kubernetes: the leaves live in replication's placement.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use sidereal_core::control::SectorLoadView;
use sidereal_core::{Placement, SectorId, ShardId};
use sidereal_operator::policy::history::LoadHistory;
use sidereal_operator::policy::pods::{PodState, desired_shards, plan_pods};
use sidereal_operator::policy::transitions::{Transition, decide};
use sidereal_operator::policy::{LeafLoad, PoolPolicy};

/// What one round decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// Every leaf to simulate, with its estimated entities (for bin-packing).
    pub leaves: BTreeMap<SectorId, u64>,
    /// Linked shards that may take leaves (draining ones excluded).
    pub placeable: Vec<ShardId>,
    /// Shard processes to start.
    pub start: usize,
    /// Shard processes to stop: they own nothing and have been idle long enough.
    pub stop: Vec<ShardId>,
    pub transitions: Vec<Transition>,
}

/// The autoscaler's memory between rounds.
pub struct Autoscaler {
    pub policy: PoolPolicy,
    history: LoadHistory,
    idle_since: HashMap<ShardId, Instant>,
}

impl Autoscaler {
    pub fn new(policy: PoolPolicy) -> Self {
        Self {
            policy,
            history: LoadHistory::default(),
            idle_since: HashMap::new(),
        }
    }

    /// One round over the applied placement, the load reports, the linked shards and the
    /// shard processes running, at `now`.
    pub fn round(
        &mut self,
        current: &Placement,
        load: &[SectorLoadView],
        connected: &BTreeSet<ShardId>,
        running: &[ShardId],
        now: Instant,
    ) -> Round {
        let roots = current.world.clone().unwrap_or_default();
        let mut leaves: BTreeSet<SectorId> = current.sectors.keys().copied().collect();
        let by_leaf: BTreeMap<SectorId, &SectorLoadView> =
            load.iter().map(|l| (l.sector, l)).collect();
        // Only fresh reports from the shard that simulates the leaf count.
        let reports: BTreeMap<SectorId, LeafLoad> = leaves
            .iter()
            .filter_map(|l| {
                let v = by_leaf.get(l)?;
                let shard = current.sectors.get(l)?;
                (v.shard == *shard && connected.contains(shard)).then_some((
                    *l,
                    LeafLoad {
                        entities: u64::from(v.entities),
                        players: u64::from(v.players),
                        tick_p99_ms: f64::from(v.tick_p99_ms),
                    },
                ))
            })
            .collect();
        self.history.observe(&leaves, &reports, &self.policy, now);
        let transitions = decide(&roots, &leaves, &self.policy, &self.history, 0, now);
        let entities_of = |s: &SectorId| by_leaf.get(s).map_or(0, |v| u64::from(v.entities));
        let mut estimate: BTreeMap<SectorId, u64> = BTreeMap::new();
        for t in &transitions {
            self.history.record_change(t.sectors(), now);
            match t {
                Transition::Split { sector, children } => {
                    leaves.remove(sector);
                    // A quarter each until the children report.
                    for c in children {
                        leaves.insert(*c);
                        estimate.insert(*c, entities_of(sector) / 4);
                    }
                }
                Transition::Merge { parent, children } => {
                    for c in children {
                        leaves.remove(c);
                    }
                    leaves.insert(*parent);
                    estimate.insert(*parent, children.iter().map(entities_of).sum());
                }
            }
        }
        let leaves: BTreeMap<SectorId, u64> = leaves
            .into_iter()
            .map(|l| {
                (
                    l,
                    estimate.get(&l).copied().unwrap_or_else(|| entities_of(&l)),
                )
            })
            .collect();
        let total: u64 = leaves.values().sum();
        let desired = desired_shards(leaves.len(), total, &self.policy);
        let mut owned: BTreeMap<&ShardId, usize> = BTreeMap::new();
        for s in current.sectors.values() {
            *owned.entry(s).or_default() += 1;
        }
        self.idle_since.retain(|s, _| running.contains(s));
        let states: Vec<PodState> = running
            .iter()
            .map(|s| {
                let sectors = owned.get(s).copied().unwrap_or(0);
                let idle_since = if sectors == 0 {
                    Some(*self.idle_since.entry(s.clone()).or_insert(now))
                } else {
                    self.idle_since.remove(s);
                    None
                };
                PodState {
                    shard: s.clone(),
                    sectors,
                    idle_since,
                    connected: connected.contains(s),
                    ended: false,
                    // `up` runs one binary: its shards never go out of date.
                    outdated: false,
                }
            })
            .collect();
        let plan = plan_pods(&states, Some(desired), &self.policy, now);
        let placeable = running
            .iter()
            .filter(|s| connected.contains(*s) && !plan.drain.contains(s))
            .cloned()
            .collect();
        Round {
            leaves,
            placeable,
            start: plan.create,
            stop: plan.retire,
            transitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> PoolPolicy {
        let mut p = PoolPolicy::default();
        p.split.entities = 300;
        p.split.sustain = Duration::from_secs(1);
        p.merge.entities = 100;
        p.merge.sustain = Duration::from_secs(1);
        p.cooldown = Duration::from_secs(1);
        p.capacity.sectors = 2;
        p.min_shards = 1;
        p.max_shards = 4;
        p.warm_spares = 0;
        p.idle_retire = Duration::from_secs(2);
        p
    }

    fn id(s: &str) -> SectorId {
        s.parse().unwrap()
    }

    fn load(p: &Placement, entities: &[(&str, u32)]) -> Vec<SectorLoadView> {
        entities
            .iter()
            .map(|(s, e)| SectorLoadView {
                sector: id(s),
                shard: p.sectors[&id(s)].clone(),
                entities: *e,
                players: 0,
                tick_p99_ms: 1.0,
            })
            .collect()
    }

    #[test]
    fn a_hot_root_splits_grows_the_fleet_then_merges_and_the_idle_shard_stops() {
        let mut scaler = Autoscaler::new(policy());
        let a = ShardId::new("shard-0");
        let root = id("s2-x0-y0");
        let mut placement = Placement {
            generation: 1,
            sectors: [(root, a.clone())].into(),
            world: Some(vec![root]),
        };
        let linked: BTreeSet<ShardId> = [a.clone()].into();
        let only_a = vec![a.clone()];
        let t0 = Instant::now();
        // Hot, but not for the whole window yet: nothing happens.
        let hot = load(&placement, &[("s2-x0-y0", 800)]);
        let r = scaler.round(&placement, &hot, &linked, &only_a, t0);
        assert!(r.transitions.is_empty());
        assert_eq!(r.start, 0);
        // Hot for the window: it splits into four leaves of ~200, which need two shards.
        let r = scaler.round(
            &placement,
            &hot,
            &linked,
            &only_a,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(r.transitions.len(), 1);
        assert_eq!(r.leaves.len(), 4);
        assert!(r.leaves.values().all(|e| *e == 200));
        assert_eq!(r.start, 1);
        assert_eq!(r.placeable, vec![a.clone()]);

        // The children on two shards, cold now: they merge back and the second shard, idle,
        // stops after the idle time (never while it owns a leaf).
        let b = ShardId::new("shard-1");
        let kids: Vec<SectorId> = root.children().unwrap().to_vec();
        placement.sectors = kids
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, if i < 2 { a.clone() } else { b.clone() }))
            .collect();
        let both: BTreeSet<ShardId> = [a.clone(), b.clone()].into();
        let running = [a.clone(), b.clone()];
        let cold: Vec<SectorLoadView> = kids
            .iter()
            .map(|k| SectorLoadView {
                sector: *k,
                shard: placement.sectors[k].clone(),
                entities: 10,
                players: 0,
                tick_p99_ms: 1.0,
            })
            .collect();
        let t1 = t0 + Duration::from_secs(10);
        let r = scaler.round(&placement, &cold, &both, &running, t1);
        assert!(r.transitions.is_empty(), "cold, but not for the window yet");
        assert!(r.stop.is_empty());
        let r = scaler.round(
            &placement,
            &cold,
            &both,
            &running,
            t1 + Duration::from_secs(2),
        );
        assert_eq!(r.leaves.keys().copied().collect::<Vec<_>>(), vec![root]);
        assert_eq!(r.leaves[&root], 40);
        assert!(r.stop.is_empty(), "shard-1 still owns two leaves");
        // The parent placed on shard-0; shard-1 owns nothing and drains...
        placement.sectors = [(root, a.clone())].into();
        let quiet = load(&placement, &[("s2-x0-y0", 40)]);
        let r = scaler.round(
            &placement,
            &quiet,
            &both,
            &running,
            t1 + Duration::from_secs(3),
        );
        assert_eq!(r.placeable, vec![a.clone()], "shard-1 drains");
        assert!(r.stop.is_empty());
        // ...and stops once idle for the idle time.
        let r = scaler.round(
            &placement,
            &quiet,
            &both,
            &running,
            t1 + Duration::from_secs(6),
        );
        assert_eq!(r.stop, vec![b]);
    }
}
