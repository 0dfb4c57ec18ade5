//! The gateway link: how a `sidereal gateway` process (players' sessions, interest, encoding,
//! chat) and the authority talk. The state stream does not cross it (gateways subscribe to the
//! shards' sector streams, [`crate::stream`]); only what must be decided in one place does:
//! who plays where, commands for ships, chat between gateways, and where the sectors are.
//!
//! One TCP connection per gateway, framed like the shard link. The authority opens with a
//! `Challenge`; the gateway proves the fleet's secret in `Hello` (an HMAC over both nonces and
//! its name, [`gateway_proof`]) and says which game addresses it serves (they go into the
//! connect tokens of the players the login sends there); the authority proves the secret back
//! in `Welcome` ([`authority_proof`]). Then:
//!
//! - the gateway reports players joining and leaving, their commands, and each admitted line
//!   of chat (with where the speaker's ship was); it sends `Alive` every second so the
//!   authority can tell a dead gateway from a quiet one;
//! - the authority sends placement and the shards' stream addresses whenever they change,
//!   where its players' ships are (a few times a second: what a gateway follows before the
//!   sector streams show the ship), chat said on other gateways, and `Superseded` when one of
//!   its players connected on another gateway.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::geometry::SectorId;
use crate::handshake::{LinkProofs, Nonce, Proof};
use crate::ids::{EntityId, ShardId};
use crate::protocol::PilotCommand;

/// Bumped on any incompatible change of the messages below.
pub const GATEWAY_LINK_VERSION: u32 = 3;
/// Game addresses one gateway may announce per transport.
pub const MAX_GATEWAY_ADDRESSES: usize = 8;
/// A gateway that sends nothing for this long is taken for dead (it sends `Alive` every
/// second).
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Gateway to authority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GatewayMessage {
    Hello {
        protocol: u32,
        gateway: String,
        nonce: Nonce,
        proof: Proof,
        /// Game addresses (UDP) players are told to use for this gateway.
        udp: Vec<SocketAddr>,
        /// The same over WebSocket.
        websocket: Vec<SocketAddr>,
    },
    /// A player's session on this gateway is up.
    Joined { player_id: u64, ship: EntityId },
    /// The player's current session on this gateway ended.
    Left { player_id: u64 },
    /// A player's command, checked by the gateway's input gate (the authority checks it again:
    /// a gateway is trusted with the secret, not with the numbers).
    Input {
        player_id: u64,
        command: PilotCommand,
    },
    /// A line of chat a player on this gateway said (admitted by the gateway's chat gate); the
    /// gateway has delivered it to its own players already.
    Chat(ChatLine),
    /// Nothing else to say this second.
    Alive,
    /// A registration (`register`) or login a player sent this gateway from `client`, passed
    /// on as it came (the JSON body, at most `MAX_LOGIN_BODY_BYTES`): the authority answers it
    /// as its own login endpoint would, with `LoginAnswer { request }`.
    Login {
        request: u64,
        client: std::net::IpAddr,
        register: bool,
        #[serde(with = "crate::wire_bytes")]
        body: Vec<u8>,
    },
}

/// Authority to gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuthorityMessage {
    Challenge {
        protocol: u32,
        nonce: Nonce,
    },
    Welcome {
        proof: Proof,
    },
    Rejected {
        reason: String,
    },
    /// Every leaf with its shard, and where each live shard publishes its sector streams.
    Placement {
        generation: u64,
        sectors: Vec<(SectorId, ShardId)>,
        streams: Vec<(ShardId, String)>,
    },
    /// Where the authority last knew this gateway's players' ships (player, position).
    Ships {
        ships: Vec<(u64, [f32; 2])>,
    },
    /// A line said on another gateway.
    Chat(ChatLine),
    /// The player connected on another gateway: its session here ends quietly (its `Left`
    /// would be ignored).
    Superseded {
        player_id: u64,
    },
    /// A login minted `session` (netcode's client id in its token) for `player_id` from
    /// `address`: the gateway admits its connection against the player's and the address's
    /// session limits. Sent to every gateway, before the login is answered.
    Minted {
        session: u64,
        player_id: u64,
        address: std::net::IpAddr,
    },
    /// The answer to this gateway's `Login { request }`: the HTTP status, `Retry-After`
    /// seconds if any, and the JSON body, for the gateway to give the player as they are.
    LoginAnswer {
        request: u64,
        status: u16,
        retry_after: Option<u32>,
        #[serde(with = "crate::wire_bytes")]
        body: Vec<u8>,
    },
}

/// One admitted line of chat and where it was said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatLine {
    pub player_id: u64,
    pub ship: u64,
    pub at: [f32; 2],
    pub text: String,
}

/// The gateway link's proofs: a gateway says hello, the authority welcomes it.
pub const GATEWAY_LINK: LinkProofs =
    LinkProofs::new(b"sidereal gateway hello v1", b"sidereal gateway welcome v1");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{SHARD_LINK, fresh_nonce};
    use crate::stream::STREAM_LINK;

    // Here rather than in `handshake`, which knows none of the links that use it: every
    // link's proofs, checked against each other.
    #[test]
    fn each_side_verifies_the_others_proof_and_nothing_else() {
        let (c, n, s) = (fresh_nonce(), fresh_nonce(), "a-long-enough-secret");
        assert_ne!(c, n, "nonces are fresh");
        let links = [SHARD_LINK, GATEWAY_LINK, STREAM_LINK];
        for (i, link) in links.iter().enumerate() {
            let hello = link.hello(s, &c, &n, "peer-0");
            assert!(link.verify_hello(s, &c, &n, "peer-0", &hello));
            // Another secret, another challenge (a replay), another name: refused.
            assert!(!link.verify_hello("another-long-secret!", &c, &n, "peer-0", &hello));
            assert!(!link.verify_hello(s, &fresh_nonce(), &n, "peer-0", &hello));
            assert!(!link.verify_hello(s, &c, &n, "peer-1", &hello));
            // Neither side's proof can be reflected to the other.
            assert!(!link.verify_welcome(s, &c, &n, "peer-0", &hello));
            let welcome = link.welcome(s, &c, &n, "peer-0");
            assert!(link.verify_welcome(s, &c, &n, "peer-0", &welcome));
            assert!(!link.verify_hello(s, &c, &n, "peer-0", &welcome));
            // No proof made for one link works on another.
            for (j, other) in links.iter().enumerate() {
                if i != j {
                    assert!(
                        !other.verify_hello(s, &c, &n, "peer-0", &hello),
                        "{i} on {j}"
                    );
                    assert!(!other.verify_welcome(s, &c, &n, "peer-0", &welcome));
                }
            }
        }
    }

    #[test]
    fn messages_survive_the_wire() {
        let line = GatewayMessage::Chat(ChatLine {
            player_id: 7,
            ship: 9,
            at: [1.5, -2.0],
            text: "o7".into(),
        });
        let hello = GatewayMessage::Hello {
            protocol: GATEWAY_LINK_VERSION,
            gateway: "gw-0".into(),
            nonce: fresh_nonce(),
            proof: [3; 32],
            udp: vec!["10.0.0.1:7702".parse().unwrap()],
            websocket: vec!["[::1]:7703".parse().unwrap()],
        };
        for m in [line, hello] {
            let bytes = postcard::to_stdvec(&m).unwrap();
            assert_eq!(postcard::from_bytes::<GatewayMessage>(&bytes).unwrap(), m);
        }
        let placement = AuthorityMessage::Placement {
            generation: 4,
            sectors: vec![("s2-x0-y0".parse().unwrap(), ShardId::new("shard-0"))],
            streams: vec![(ShardId::new("shard-0"), "127.0.0.1:7704".into())],
        };
        let bytes = postcard::to_stdvec(&placement).unwrap();
        assert_eq!(
            postcard::from_bytes::<AuthorityMessage>(&bytes).unwrap(),
            placement
        );
    }
}
