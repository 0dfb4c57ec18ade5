//! The operator's decisions as plain functions over plain data: no Kubernetes, no tokio, no
//! `Instant::now()` (the clock is passed in). The controllers feed them what they observed
//! and carry out what they return.
//!
//! - [`history`]: load observations folded into "hot since" / "cold since" per leaf.
//! - [`transitions`]: which leaves split and which families of four merge, now.
//! - [`placement`]: which shard simulates each leaf, moving as few as possible.
//! - [`pods`]: how many shard pods the pool needs, and which idle ones may retire.

pub mod history;
pub mod placement;
pub mod pods;
pub mod transitions;

use std::time::Duration;

/// Limits a leaf's load is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub entities: u64,
    pub players: u64,
    pub tick_p99_ms: f64,
    /// How long the condition must hold before the operator acts.
    pub sustain: Duration,
}

/// What one shard is sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub sectors: usize,
    pub entities: u64,
}

/// A pool's scaling policy, as the policy functions read it (converted from the ShardPool
/// spec by the controller).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPolicy {
    pub split: Thresholds,
    pub merge: Thresholds,
    /// Minimum time between two transitions touching the same sector.
    pub cooldown: Duration,
    /// Splits and merges in flight at once, at most.
    pub max_concurrent: usize,
    /// Sectors never split below this scale.
    pub min_scale: u8,
    pub capacity: Capacity,
    pub min_shards: usize,
    pub max_shards: usize,
    pub warm_spares: usize,
    /// An empty shard beyond the warm spares retires after being idle this long.
    pub idle_retire: Duration,
    /// A leaf whose shard has not reported for this long is not acted on (its data is stale).
    pub stale_after: Duration,
}

impl Default for PoolPolicy {
    /// The ShardPool defaults.
    fn default() -> Self {
        Self {
            split: Thresholds {
                entities: 5_000,
                players: 200,
                tick_p99_ms: 25.0,
                sustain: Duration::from_secs(30),
            },
            merge: Thresholds {
                entities: 1_000,
                players: 40,
                tick_p99_ms: 8.0,
                sustain: Duration::from_secs(120),
            },
            cooldown: Duration::from_secs(120),
            max_concurrent: 2,
            min_scale: 0,
            capacity: Capacity {
                sectors: 16,
                entities: 20_000,
            },
            min_shards: 1,
            max_shards: 8,
            warm_spares: 1,
            idle_retire: Duration::from_secs(300),
            stale_after: Duration::from_secs(10),
        }
    }
}

/// The load of one leaf as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LeafLoad {
    pub entities: u64,
    pub players: u64,
    /// p99 CPU time per tick of the shard simulating it.
    pub tick_p99_ms: f64,
}

impl LeafLoad {
    /// Over any split threshold.
    pub fn is_hot(&self, t: &Thresholds) -> bool {
        self.entities > t.entities || self.players > t.players || self.tick_p99_ms > t.tick_p99_ms
    }

    /// Under every merge threshold.
    pub fn is_cold(&self, t: &Thresholds) -> bool {
        self.entities < t.entities && self.players < t.players && self.tick_p99_ms < t.tick_p99_ms
    }

    /// Four siblings as one sector: counts add up, the tick is the worst of them.
    pub fn combined(loads: &[LeafLoad]) -> LeafLoad {
        LeafLoad {
            entities: loads.iter().map(|l| l.entities).sum(),
            players: loads.iter().map(|l| l.players).sum(),
            tick_p99_ms: loads.iter().map(|l| l.tick_p99_ms).fold(0.0, f64::max),
        }
    }
}

#[cfg(test)]
mod tests;
