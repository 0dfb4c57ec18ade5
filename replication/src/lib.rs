//! Sidereal replication: the authority on which shard owns which sector and entity, the shard
//! link server and the control API; and the gateway (`sidereal gateway`), the game port for
//! players. Folders: `authority/` (the control plane's decisions), `rules/` (players' rules),
//! `login/` (accounts' limits, passwords, tokens) are pure; `http/` is the HTTP face; the
//! files at the top are the I/O shell (links, game ports, the store, the server's state).

pub mod authority;
pub mod gateway;
pub mod gateway_link;
pub mod gateway_node;
pub mod http;
pub mod link_outbox;
pub mod link_settings;
pub mod login;
pub mod mirror;
pub mod players;
pub mod pod_role;
pub mod ports;
pub mod rules;
pub mod server;
pub mod state;
pub mod store;
pub mod store_follower;
pub mod tls;

pub use authority::{Authority, AuthorityConfig, LinkError, LinkId, PutPlacementError};
pub use login::LoginConfig;
pub use mirror::{EntityRecord, Mirror, Refusal};
pub use server::{ReplicationConfig, Running, StartError, start};
pub use state::Shared;
pub use store::{Store, StoreError};

#[cfg(test)]
pub(crate) mod test_support;
