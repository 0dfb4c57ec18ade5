//! Load that shards measure and report, and placement that replication applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::geometry::SectorId;
use crate::ids::ShardId;

/// Per-sector counts measured by the shard simulating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectorCounts {
    pub sector: SectorId,
    pub entities: u32,
    pub players: u32,
}

/// What a shard reports about once a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardLoadReport {
    pub tick: u64,
    pub tick_mean_ms: f32,
    pub tick_p99_ms: f32,
    pub sectors: Vec<SectorCounts>,
}

/// The whole desired placement: every leaf of the world and the shard simulating it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Placement {
    pub generation: u64,
    pub sectors: BTreeMap<SectorId, ShardId>,
}
