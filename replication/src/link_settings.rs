//! How the authority's links (to shards and to gateways) are kept honest.

use std::time::Duration;

use sidereal_core::link_socket::DEFAULT_LINK_TIMEOUT;
use sidereal_core::protocol::MAX_FRAME_BYTES;

/// A shard must say Hello within this long after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections still in their handshake, at most; more are closed as soon as they are
/// accepted, so unauthenticated peers cannot hold unbounded sockets and buffers.
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 64;

/// How shard links are kept honest.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    /// A linked shard silent this long (no load report, no update) is closed as dead, and a
    /// write that does not complete within it closes the link as stalled.
    pub timeout: Duration,
    /// Largest frame sent or accepted once linked; bigger messages are sent in parts.
    pub max_frame_bytes: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_LINK_TIMEOUT,
            max_frame_bytes: MAX_FRAME_BYTES,
        }
    }
}
