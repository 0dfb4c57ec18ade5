//! The `ShardPool` resource: how shard pods look and when the fleet grows, splits and merges.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pool of shard pods and the scaling policy of the sectors placed on it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "sidereal.dev",
    version = "v1alpha1",
    kind = "ShardPool",
    namespaced,
    status = "ShardPoolStatus",
    derive = "PartialEq",
    shortname = "sp",
    category = "sidereal",
    doc = "Shard pods and the split/merge policy of the sectors placed on them.",
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.shards.min"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.shards.max"),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".status.shards"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.ready"),
    printcolumn(name = "Leaves", type_ = "integer", json_path = ".status.leaves"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.merge.entities < self.split.entities").message("merge.entities must be below split.entities, or sectors would split and merge in a loop"))]
#[x_kube(validation = Rule::new("self.merge.players < self.split.players").message("merge.players must be below split.players, or sectors would split and merge in a loop"))]
#[x_kube(validation = Rule::new("self.merge.tickP99Ms < self.split.tickP99Ms").message("merge.tickP99Ms must be below split.tickP99Ms, or sectors would split and merge in a loop"))]
#[serde(rename_all = "camelCase")]
pub struct ShardPoolSpec {
    /// Pod template of a shard. The operator adds the shard's identity, the replication address
    /// and the shard secret. Kept as given; the API server validates it when pods are created.
    #[serde(default)]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub template: PodTemplateSpec,
    #[serde(default)]
    pub capacity: ShardCapacity,
    #[serde(default)]
    pub shards: ShardCounts,
    /// A leaf splits when any of these is exceeded for `sustainSeconds`.
    #[serde(default = "Thresholds::default_split")]
    pub split: Thresholds,
    /// Four sibling leaves merge when together they stay below all of these for `sustainSeconds`.
    #[serde(default = "Thresholds::default_merge")]
    pub merge: Thresholds,
    /// Minimum time between two transitions of the same sector.
    #[serde(default = "default_cooldown_seconds")]
    #[x_kube(validation = Rule::new("self > 0").message("cooldownSeconds must be positive"))]
    pub cooldown_seconds: i32,
    /// At most this many splits, merges and moves in flight at once.
    #[serde(default = "default_max_concurrent_transitions")]
    #[x_kube(validation = Rule::new("self > 0").message("maxConcurrentTransitions must be positive"))]
    pub max_concurrent_transitions: i32,
    /// Sectors never split below this scale.
    #[serde(default)]
    #[schemars(range(min = 0, max = 40))]
    pub min_scale: i32,
    /// How long a shard may take to hand its sectors over before it is stopped anyway.
    #[serde(default = "default_drain_timeout_seconds")]
    #[x_kube(validation = Rule::new("self > 0").message("drainTimeoutSeconds must be positive"))]
    pub drain_timeout_seconds: i32,
    /// An empty shard is retired after being idle this long (beyond the warm spares).
    #[serde(default = "default_idle_retire_seconds")]
    #[x_kube(validation = Rule::new("self > 0").message("idleRetireSeconds must be positive"))]
    pub idle_retire_seconds: i32,
}

/// What one shard pod is sized for.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShardCapacity {
    /// Leaf sectors placed on one shard at most.
    #[x_kube(validation = Rule::new("self > 0").message("capacity.sectors must be positive"))]
    pub sectors: i32,
    /// Entities one shard is expected to simulate at most.
    #[x_kube(validation = Rule::new("self > 0").message("capacity.entities must be positive"))]
    pub entities: i64,
}

impl Default for ShardCapacity {
    fn default() -> Self {
        Self {
            sectors: 16,
            entities: 20_000,
        }
    }
}

/// Bounds on the number of shard pods.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("shards.min must not exceed shards.max"))]
#[x_kube(validation = Rule::new("self.warmSpares <= self.max").message("shards.warmSpares must not exceed shards.max"))]
#[serde(rename_all = "camelCase")]
pub struct ShardCounts {
    #[schemars(range(min = 0))]
    pub min: i32,
    #[x_kube(validation = Rule::new("self > 0").message("shards.max must be positive"))]
    pub max: i32,
    /// Idle shards kept running so a split does not wait for a pod to start.
    #[schemars(range(min = 0))]
    pub warm_spares: i32,
}

impl Default for ShardCounts {
    fn default() -> Self {
        Self {
            min: 1,
            max: 8,
            warm_spares: 1,
        }
    }
}

/// Load thresholds with the time they must hold before the operator acts.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    #[schemars(range(min = 0))]
    pub entities: i64,
    #[schemars(range(min = 0))]
    pub players: i64,
    /// Shard tick time p99 in milliseconds.
    #[x_kube(validation = Rule::new("self >= 0.0").message("tickP99Ms must not be negative"))]
    pub tick_p99_ms: f64,
    /// How long the condition must hold, in seconds.
    #[x_kube(validation = Rule::new("self > 0").message("sustainSeconds must be positive"))]
    pub sustain_seconds: i32,
}

impl Thresholds {
    pub fn default_split() -> Self {
        Self {
            entities: 5_000,
            players: 200,
            tick_p99_ms: 25.0,
            sustain_seconds: 30,
        }
    }

    pub fn default_merge() -> Self {
        Self {
            entities: 1_000,
            players: 40,
            tick_p99_ms: 8.0,
            sustain_seconds: 120,
        }
    }
}

fn default_cooldown_seconds() -> i32 {
    120
}
fn default_max_concurrent_transitions() -> i32 {
    2
}
fn default_drain_timeout_seconds() -> i32 {
    60
}
fn default_idle_retire_seconds() -> i32 {
    300
}

#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShardPoolStatus {
    /// Shard pods that exist.
    #[serde(default)]
    pub shards: i32,
    /// Shard pods that are ready and linked to replication.
    #[serde(default)]
    pub ready: i32,
    /// Leaf sectors placed on this pool.
    #[serde(default)]
    pub leaves: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The pod template is kept opaque in the CRD: embedding the full Pod schema would make the CRD
/// hundreds of kilobytes (too big for client-side apply's annotation).
fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Pod template of a shard (core/v1 PodTemplateSpec)."
    })
}
