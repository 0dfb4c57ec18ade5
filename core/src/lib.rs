//! Shared vocabulary of the Sidereal fleet: world geometry and the types that operator,
//! replication and shards agree on. No Kubernetes, no Bevy: plain data and pure functions.

pub mod geometry;

pub use geometry::{Bounds, ParseSectorIdError, Point, SectorId, SectorIdError};
