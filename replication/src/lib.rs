//! Sidereal replication: the authority on which shard owns which sector and entity.

pub mod authority;
pub mod mirror;

pub use authority::{Authority, AuthorityConfig, LinkError, LinkId, PutPlacementError};
pub use mirror::{EntityRecord, Mirror, Refusal};
