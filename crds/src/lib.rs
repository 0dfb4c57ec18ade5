//! `Sector` and `ShardPool`: the custom resources users apply and the operator reconciles.
//!
//! Validation lives in the schema as CEL rules so the API server rejects nonsense at admission,
//! before any controller sees it. `render_crds()` is what `sidereal crdgen` prints; the YAML is
//! committed under `crds/generated/` and a test fails when it drifts from these types.

// kube derive attributes repeat `type_ = "integer"` across printer columns on purpose.
#![allow(clippy::duplicated_attributes)]

pub mod reference;
pub mod sector;
pub mod shardpool;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use sector::{Sector, SectorLoad, SectorPhase, SectorSpec, SectorStatus};
pub use shardpool::{
    ShardCapacity, ShardCounts, ShardPool, ShardPoolSpec, ShardPoolStatus, Thresholds,
};

/// API group of every Sidereal resource.
pub const GROUP: &str = "sidereal.dev";

/// Both CRDs as the API server should receive them.
pub fn crds() -> [CustomResourceDefinition; 2] {
    [sector::crd(), ShardPool::crd()]
}

/// The CRDs as one multi-document YAML stream, in a stable order.
pub fn render_crds() -> String {
    crds().iter().map(to_yaml).collect::<Vec<_>>().join("---\n")
}

fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CRD always serialises to YAML")
}

/// Words that YAML 1.1 readers (kubectl's, PyYAML) resolve to booleans or null. serde_yaml
/// writes YAML 1.2, where they are plain strings, so none may appear as a key or a value in
/// anything we generate or ask users to write: the two dialects would read different objects.
pub const YAML11_SPECIAL_WORDS: [&str; 25] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
];

/// File names of the committed CRDs, relative to `crds/generated/`, with their YAML.
pub fn crd_files() -> [(&'static str, String); 2] {
    let [sector, pool] = crds();
    [
        ("sectors.sidereal.dev.yaml", to_yaml(&sector)),
        ("shardpools.sidereal.dev.yaml", to_yaml(&pool)),
    ]
}

#[cfg(test)]
mod tests;
