//! How many shard pods a pool needs, which to start, drain and retire.

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
    /// Replication reports its link up (only then can it take sectors).
    pub connected: bool,
    /// Its process ended (pod phase Failed or Succeeded): it will never link again.
    pub ended: bool,
    /// Made from an older template than the pool's (an upgrade changed it): replaced, one
    /// pod at a time, by draining it once a pod of the new template is linked to take over.
    pub outdated: bool,
}

/// What the pool controller does to its pods this round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodPlan {
    /// New pods to create.
    pub create: usize,
    /// Pods whose process ended: deleted, and replaced by `create`.
    pub replace: Vec<ShardId>,
    /// Pods beyond the desired count: no new sectors go to them, theirs move off.
    pub drain: Vec<ShardId>,
    /// Drained pods that own nothing and have been idle for the pool's retire time: deleted.
    pub retire: Vec<ShardId>,
}

/// Whether to start one pod beyond `desired` to roll an outdated one: while any live pod is
/// outdated, the pool holds no more than `desired` pods, and every pod of the new template has
/// linked (so one outdated pod drains at a time, onto a pod that is up). The surplus this makes
/// drains the outdated pod first.
fn surge(live: &[&PodState], desired: usize) -> bool {
    live.iter().any(|p| p.outdated)
        && live.len() <= desired
        && live.iter().filter(|p| !p.outdated).all(|p| p.connected)
}

/// The plan for `pods` when the pool needs `desired` of them. Pods that ended are replaced;
/// missing pods are created up to `desired` (never beyond the pool's max, but for the one pod a
/// roll adds while it replaces an outdated one); the surplus
/// drains, outdated pods first (a template changed: each is replaced by a new pod before it
/// drains, one at a time), then pods that never linked, then those owning the fewest sectors;
/// a drained pod
/// retires only once it owns no sector and has been idle for the retire time. A pod that still
/// owns sectors is never deleted, whatever the count says. Deterministic for the same input.
///
/// `desired` is `None` while the pool's leaves are unknown (an operator just started or just
/// elected, before its first world sync): then pods are only replaced or created up to the
/// pool's minimum, never drained or retired, since "no leaves known" is not "no load".
pub fn plan_pods(
    pods: &[PodState],
    desired: Option<usize>,
    policy: &PoolPolicy,
    now: Instant,
) -> PodPlan {
    let Some(desired) = desired else {
        let mut plan = plan_pods(pods, Some(0), policy, now);
        plan.drain.clear();
        plan.retire.clear();
        return plan;
    };
    let desired = desired.clamp(policy.min_shards, policy.max_shards.max(policy.min_shards));
    let replace: Vec<ShardId> = pods
        .iter()
        .filter(|p| p.ended)
        .map(|p| p.shard.clone())
        .collect();
    let mut live: Vec<&PodState> = pods.iter().filter(|p| !p.ended).collect();
    let create = desired.saturating_sub(live.len()) + usize::from(surge(&live, desired));
    // While a roll's new pod is still linking, nothing drains: the outdated pod it replaces
    // would only hand its sectors to other old pods.
    let rolling = live.iter().any(|p| p.outdated);
    let new_ones_up = live.iter().filter(|p| !p.outdated).all(|p| p.connected);
    let surplus = match rolling && !new_ones_up {
        false => live.len().saturating_sub(desired),
        true => 0,
    };
    // Cheapest to lose first: outdated, never linked, then fewest sectors, then idle longest.
    live.sort_by(|a, b| {
        (!a.outdated, a.connected, a.sectors, a.idle_since.is_none())
            .cmp(&(!b.outdated, b.connected, b.sectors, b.idle_since.is_none()))
            .then(a.idle_since.cmp(&b.idle_since))
            .then(a.shard.cmp(&b.shard))
    });
    let drain: Vec<&PodState> = live.into_iter().take(surplus).collect();
    // An outdated pod goes as soon as it owns nothing: the idle time guards against load
    // flapping, not against a template change.
    let retire = drain
        .iter()
        .filter(|p| {
            p.sectors == 0
                && p.idle_since.is_some_and(|since| {
                    p.outdated || now.saturating_duration_since(since) >= policy.idle_retire
                })
        })
        .map(|p| p.shard.clone())
        .collect();
    PodPlan {
        create,
        replace,
        drain: drain.into_iter().map(|p| p.shard.clone()).collect(),
        retire,
    }
}
