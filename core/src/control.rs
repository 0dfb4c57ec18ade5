//! Replication's control API on the wire: the typed views the server answers with and its
//! clients (`sidereal up`, the operator, tests) read, defined once. Every endpoint here but
//! the health ones needs `Authorization: Bearer <control token>`.

use serde::{Deserialize, Serialize};

use crate::geometry::SectorId;
use crate::ids::{EntityId, EntityKind, Epoch, ShardId};

/// Header value prefix of the control token.
pub const BEARER: &str = "Bearer ";

/// `GET /v1/load`: per-leaf load and per-shard tick times, as last reported by the shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadView {
    /// Generation of the placement the sector figures belong to.
    pub generation: u64,
    pub sectors: Vec<SectorLoadView>,
    pub shards: Vec<ShardLoadView>,
}

/// Load of one leaf, reported by the shard the applied placement gives it to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SectorLoadView {
    pub sector: SectorId,
    pub shard: ShardId,
    pub entities: u32,
    pub players: u32,
    /// p99 CPU time per tick of the shard simulating it, in milliseconds.
    pub tick_p99_ms: f32,
}

/// Tick times of one shard over its last ten seconds, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardLoadView {
    pub shard: ShardId,
    pub tick: u64,
    /// CPU time per tick: the work.
    pub tick_mean_ms: f32,
    pub tick_p99_ms: f32,
    /// Wall-clock time per tick: the work plus waiting for a core.
    pub tick_wall_mean_ms: f32,
    pub tick_wall_p99_ms: f32,
}

/// `PUT /v1/placement`'s answer when applied (or already applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutPlacementReply {
    pub generation: u64,
    /// False when this exact generation and contents were already applied.
    pub changed: bool,
}

/// `GET /v1/shards`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardsView {
    pub shards: Vec<ShardView>,
}

/// One shard replication has seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardView {
    pub shard: ShardId,
    /// Whether its link is up now.
    pub connected: bool,
    /// Leaves the applied placement gives it.
    pub sectors: usize,
    /// Entities the mirror says it owns.
    pub entities: usize,
    /// p99 CPU time per tick, once it has reported.
    pub tick_p99_ms: Option<f32>,
    /// Where it publishes its sector streams (`host:port`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// `GET /v1/entities[?owner=..][&sector=..]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitiesView {
    pub entities: Vec<EntityView>,
}

/// One entity of the mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityView {
    pub id: EntityId,
    pub kind: EntityKind,
    pub owner: ShardId,
    pub epoch: Epoch,
    pub in_transit: bool,
    pub version: u64,
    pub pos: [f32; 2],
    pub vel: [f32; 2],
}

/// `GET /v1/status`: the one-look summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub shards_connected: usize,
    /// Root sectors of the world.
    pub roots: usize,
    pub leaf_sectors: usize,
    pub entities: usize,
    /// Entities of removed roots, kept out of the simulation until their root returns.
    pub archived_entities: usize,
    /// Ships flown by players, as the shards count them.
    pub players: u32,
    /// Players connected to the game port now.
    #[serde(default)]
    pub players_connected: usize,
    pub placement_generation: u64,
    /// Seconds since the last successful checkpoint; none yet, or no store.
    pub last_checkpoint_age_seconds: Option<f64>,
    /// `postgres` or `sqlite`.
    pub store: Option<String>,
    pub store_healthy: bool,
    pub checkpoint_backlog: usize,
    pub uptime_seconds: u64,
}

/// Body of every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    pub error: String,
}
