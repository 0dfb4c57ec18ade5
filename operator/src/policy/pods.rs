//! How many shard pods a pool needs, and which idle pods may retire.

use std::collections::BTreeMap;
use std::time::Instant;

use sidereal_core::ShardId;

use super::PoolPolicy;

/// Shards needed for `leaves` leaves holding `entities` entities: enough for both the sector
/// and the entity capacity, plus the warm spares, within the pool's min and max.
pub fn desired_shards(leaves: usize, entities: u64, policy: &PoolPolicy) -> usize {
    let cap = policy.capacity;
    let for_sectors = leaves.div_ceil(cap.sectors.max(1));
    let for_entities = entities.div_ceil(cap.entities.max(1)) as usize;
    let busy = for_sectors.max(for_entities).max(usize::from(leaves > 0));
    (busy + policy.warm_spares).clamp(policy.min_shards, policy.max_shards.max(policy.min_shards))
}

/// One shard pod as the pool controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    pub shard: ShardId,
    /// Leaves the applied placement gives it.
    pub sectors: usize,
    /// Since when it has owned no sector (None while it owns some).
    pub idle_since: Option<Instant>,
}

/// The pods to delete now: only pods that own no sector and have been idle for the pool's
/// retire time, only as many as exceed `desired`, newest names last so the choice is stable.
/// A pod that still owns sectors is never chosen.
pub fn retirable(
    pods: &[PodState],
    desired: usize,
    policy: &PoolPolicy,
    now: Instant,
) -> Vec<ShardId> {
    let surplus = pods.len().saturating_sub(desired.max(policy.min_shards));
    let mut idle: BTreeMap<&ShardId, Instant> = BTreeMap::new();
    for p in pods {
        if p.sectors == 0
            && let Some(since) = p.idle_since
            && now.saturating_duration_since(since) >= policy.idle_retire
        {
            idle.insert(&p.shard, since);
        }
    }
    let mut chosen: Vec<(&ShardId, Instant)> = idle.into_iter().collect();
    // Longest idle first.
    chosen.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
    chosen
        .into_iter()
        .take(surplus)
        .map(|(s, _)| s.clone())
        .collect()
}
