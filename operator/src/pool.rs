//! A ShardPool's spec as the policy reads it.

use std::time::Duration;

use sidereal_crds::ShardPoolSpec;

use crate::policy::{Capacity, PoolPolicy, Thresholds};

/// Reports older than this are stale: the policy does not act on them.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn thresholds(t: &sidereal_crds::shardpool::Thresholds) -> Thresholds {
    Thresholds {
        entities: u64::try_from(t.entities).unwrap_or(0),
        players: u64::try_from(t.players).unwrap_or(0),
        tick_p99_ms: t.tick_p99_ms.max(0.0),
        sustain: secs(t.sustain_seconds),
    }
}

/// The policy of a pool (admission has checked the numbers; negatives read as zero anyway).
pub fn policy_of(spec: &ShardPoolSpec) -> PoolPolicy {
    PoolPolicy {
        split: thresholds(&spec.split),
        merge: thresholds(&spec.merge),
        cooldown: secs(spec.cooldown_seconds),
        max_concurrent: usize::try_from(spec.max_concurrent_transitions).unwrap_or(1),
        min_scale: u8::try_from(spec.min_scale.clamp(0, 40)).unwrap_or(0),
        capacity: Capacity {
            sectors: usize::try_from(spec.capacity.sectors).unwrap_or(1).max(1),
            entities: u64::try_from(spec.capacity.entities).unwrap_or(1).max(1),
        },
        min_shards: usize::try_from(spec.shards.min).unwrap_or(0),
        max_shards: usize::try_from(spec.shards.max).unwrap_or(0),
        warm_spares: usize::try_from(spec.shards.warm_spares).unwrap_or(0),
        idle_retire: secs(spec.idle_retire_seconds),
        stale_after: STALE_AFTER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_of_the_crd_are_the_defaults_of_the_policy() {
        let spec: ShardPoolSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(policy_of(&spec), PoolPolicy::default());
    }
}
