//! Shared vocabulary of the Sidereal fleet: world geometry, ids, the shard-link protocol and
//! codec, load and placement types. No Kubernetes, no Bevy: plain data and pure functions.

pub mod angle;
pub mod codec;
pub mod control;
#[cfg(feature = "client")]
pub mod control_client;
pub mod gateway_link;
pub mod geometry;
pub mod handshake;
pub mod ids;
pub mod link_socket;
pub mod load;
pub mod login;
pub mod placement;
pub mod protocol;
pub mod sector_view;
pub mod stream;
pub mod stream_client;
pub mod varint;
pub mod wire_bytes;

#[cfg(feature = "client")]
pub use control_client::{ControlClient, ControlError};
pub use geometry::{Bounds, ParseSectorIdError, Point, SectorId, SectorIdError};
pub use ids::{EntityId, EntityKind, EntitySnapshot, EntityState, Epoch, ShardId};
pub use load::{Placement, SectorCounts, ShardLoadReport};
