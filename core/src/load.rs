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

/// What a shard reports about once a second. Tick times are over its last ten seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardLoadReport {
    pub tick: u64,
    /// Mean CPU time of the simulation thread per tick: the work, what scaling acts on.
    pub tick_mean_ms: f32,
    /// p99 CPU time per tick.
    pub tick_p99_ms: f32,
    /// Mean wall-clock time per tick: the work plus waiting for a core.
    pub tick_wall_mean_ms: f32,
    /// p99 wall-clock time per tick.
    pub tick_wall_p99_ms: f32,
    pub sectors: Vec<SectorCounts>,
}

/// The whole desired placement: every leaf of the world and the shard simulating it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Placement {
    pub generation: u64,
    pub sectors: BTreeMap<SectorId, ShardId>,
    /// The world's root sectors. In a write, `None` keeps the current roots (a fleet whose
    /// world is a command-line flag); replication always answers with them. A root left out of
    /// a write is archived with its entities; written again, it comes back as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<Vec<SectorId>>,
}
