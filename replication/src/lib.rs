//! Sidereal replication: the authority on which shard owns which sector and entity, the shard
//! link server and the control API.

pub mod api;
pub mod authority;
pub mod chat;
pub mod controls;
pub mod gateway;
pub mod gateway_link;
pub mod gateway_login;
pub mod gateway_node;
pub mod gateway_registry;
pub mod interest;
pub mod link_outbox;
pub mod link_settings;
pub mod login;
pub mod login_http;
pub mod map;
pub mod metrics;
pub mod mirror;
pub mod players;
pub mod ports;
pub mod server;
pub mod sessions;
pub mod state;
pub mod store;
pub mod tls;

pub use authority::{Authority, AuthorityConfig, LinkError, LinkId, PutPlacementError};
pub use login::LoginConfig;
pub use mirror::{EntityRecord, Mirror, Refusal};
pub use server::{ReplicationConfig, Running, StartError, start};
pub use state::Shared;
pub use store::{Store, StoreError};

#[cfg(test)]
pub(crate) mod test_support;
