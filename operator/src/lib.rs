//! The Sidereal operator: from the load shards measure, it splits hot sectors, merges cold
//! siblings, places leaves on shards and sizes the shard pool.
//!
//! [`policy`] holds every decision as a pure function and [`world`] what a namespace's Sectors
//! mean; the controllers around them ([`controller`] for Sectors, [`shardpool`] for the shard
//! pods of each pool) only observe and act.

pub mod context;
pub mod controller;
pub mod leader;
pub mod objects;
pub mod policy;
pub mod pool;
pub mod report;
pub mod shardpool;
pub mod world;

pub use context::Context;

/// Everything a reconcile can fail on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("replication's control API: {0}")]
    Control(#[from] sidereal_core::ControlError),
    #[error("Secret {namespace}/{name} is malformed: {reason}")]
    BadControlSecret {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("{0} has no namespace")]
    NotNamespaced(String),
}

impl Error {
    /// Short, stable name for `sidereal_operator_reconcile_errors_total{error=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Control(e) => e.label(),
            Error::BadControlSecret { .. } => "bad_control_secret",
            Error::NotNamespaced(_) => "not_namespaced",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
