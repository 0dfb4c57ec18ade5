//! `Sector` and `ShardPool`: the custom resources users apply and the operator reconciles.
//!
//! Validation lives in the schema as CEL rules so the API server rejects nonsense at admission,
//! before any controller sees it. `render_crds()` is what `sidereal crdgen` prints; the YAML is
//! committed under `crds/generated/` and a test fails when it drifts from these types.

// kube derive attributes repeat `type_ = "integer"` across printer columns on purpose.
#![allow(clippy::duplicated_attributes)]

pub mod sector;
pub mod shardpool;

use kube::CustomResourceExt;

pub use sector::{Sector, SectorLoad, SectorPhase, SectorSpec, SectorStatus};
pub use shardpool::{
    ShardCapacity, ShardCounts, ShardPool, ShardPoolSpec, ShardPoolStatus, Thresholds,
};

/// API group of every Sidereal resource.
pub const GROUP: &str = "sidereal.dev";

/// The CRDs as one multi-document YAML stream, in a stable order.
pub fn render_crds() -> String {
    [render_crd::<Sector>(), render_crd::<ShardPool>()].join("---\n")
}

/// One CRD as YAML.
pub fn render_crd<K: CustomResourceExt>() -> String {
    serde_yaml::to_string(&K::crd()).expect("a CRD always serialises to YAML")
}

/// File names of the committed CRDs, relative to `crds/generated/`.
pub fn crd_files() -> [(&'static str, String); 2] {
    [
        ("sectors.sidereal.dev.yaml", render_crd::<Sector>()),
        ("shardpools.sidereal.dev.yaml", render_crd::<ShardPool>()),
    ]
}

#[cfg(test)]
mod tests;
