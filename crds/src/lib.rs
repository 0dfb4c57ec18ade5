//! `Sector` and `ShardPool`: the custom resources users apply and the operator reconciles.
//!
//! Validation lives in the schema as CEL rules so the API server rejects nonsense at admission,
//! before any controller sees it. `render_crds()` is what `sidereal crdgen` prints; the YAML is
//! committed under `crds/generated/` and a test fails when it drifts from these types.

// kube derive attributes repeat `type_ = "integer"` across printer columns on purpose.
#![allow(clippy::duplicated_attributes)]

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
    let yaml = serde_yaml::to_string(crd).expect("a CRD always serialises to YAML");
    quote_yaml11_booleans(&yaml)
}

/// serde_yaml writes YAML 1.2, where a bare `y` is a string; YAML 1.1 readers (PyYAML, older
/// Go YAML) read it as `true`. Quote such keys and list items (our `y` field) for every reader.
fn quote_yaml11_booleans(yaml: &str) -> String {
    const WORDS: [&str; 4] = ["y", "Y", "n", "N"];
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.lines() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let (dash, rest) = body.strip_prefix("- ").map_or(("", body), |r| ("- ", r));
        let (word, tail) = rest
            .split_once(':')
            .map_or((rest, None), |(w, t)| (w, Some(t)));
        if WORDS.contains(&word) && tail.is_none_or(|t| t.is_empty() || t.starts_with(' ')) {
            out.push_str(&format!(
                "{indent}{dash}'{word}'{}",
                tail.map(|t| format!(":{t}")).unwrap_or_default()
            ));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

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
