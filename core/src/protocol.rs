//! The shard link: messages between a shard and replication, and their framing.
//!
//! A frame is a little-endian `u32` payload length followed by a postcard-encoded message.
//! The first frame from a shard must be `Hello`; replication answers `Welcome` or `Rejected`
//! and closes. Entity updates ride inside `Updates` as the compact batch of [`crate::codec`].
//! Anything malformed, oversized or out of protocol closes that one link.

use serde::{Deserialize, Serialize};

use crate::geometry::SectorId;
use crate::ids::{EntityId, EntitySnapshot, Epoch, ShardId};
use crate::load::ShardLoadReport;

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest frame either side accepts (a full handover of a crowded sector fits easily).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// An entity moving to a new owner: the snapshot and the epoch the new owner holds it at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adoption {
    pub snapshot: EntitySnapshot,
    pub epoch: Epoch,
}

/// Read-only copy of a neighbour's entity near a border.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    pub snapshot: EntitySnapshot,
}

/// How ships handle, for the shards that fly them and the clients that predict them.
pub const SHIP_MAX_SPEED: f32 = 120.0;
/// Speed a full-thrust pilot adds per tick.
pub const SHIP_THRUST_PER_TICK: f32 = 4.0;
/// Spin at full rudder (radians/s): a ship's spin is its pilot's turn times this.
pub const SHIP_TURN_RATE: f32 = 2.0;

/// A piloted ship's velocity and spin after one tick of its pilot's `thrust` and `turn` (each
/// in [-1, 1]): thrust along the heading `angle`, speed capped at [`SHIP_MAX_SPEED`], spin set
/// by the rudder. Shards apply it before physics moves the ship; clients predicting their own
/// ship apply the very same function, so both agree.
pub fn steer_ship(vel: [f32; 2], angle: f32, thrust: f32, turn: f32) -> ([f32; 2], f32) {
    let (sin, cos) = angle.sin_cos();
    let v = [
        vel[0] + cos * thrust * SHIP_THRUST_PER_TICK,
        vel[1] + sin * thrust * SHIP_THRUST_PER_TICK,
    ];
    let speed_sq = v[0] * v[0] + v[1] * v[1];
    let v = if speed_sq > SHIP_MAX_SPEED * SHIP_MAX_SPEED {
        let k = SHIP_MAX_SPEED / speed_sq.sqrt();
        [v[0] * k, v[1] * k]
    } else {
        v
    };
    (v, turn * SHIP_TURN_RATE)
}

/// A pilot's command for one ship, validated by replication: thrust along the ship's heading
/// and turn rate, each in [-1, 1], and whether to fire. Held until the next one replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShipControl {
    pub ship: EntityId,
    pub thrust: f32,
    pub turn: f32,
    pub fire: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardMessage {
    Hello {
        protocol: u32,
        shard: ShardId,
        secret: String,
    },
    /// Compact batch of changed entities (see `codec`).
    Updates(Vec<u8>),
    /// A new entity the shard created in one of its sectors.
    Spawned {
        snapshot: EntitySnapshot,
    },
    Despawned {
        id: EntityId,
        epoch: Epoch,
    },
    /// The entity crossed into a sector this shard does not own; it stopped simulating it.
    HandoverOut {
        snapshot: EntitySnapshot,
        epoch: Epoch,
    },
    /// The shard now simulates these adopted entities (at the epochs it was given).
    Adopted {
        ids: Vec<(EntityId, Epoch)>,
    },
    /// The shard lost these sectors by placement and stopped simulating their entities.
    Released {
        generation: u64,
        entities: Vec<(EntitySnapshot, Epoch)>,
    },
    Load(ShardLoadReport),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicationMessage {
    /// Handshake accepted. `incarnation` prefixes the entity ids this shard mints.
    Welcome {
        incarnation: u32,
        tick_hz: u32,
    },
    Rejected {
        reason: String,
    },
    /// The full set of leaves this shard simulates from now on, and the world's roots (beyond
    /// which nothing may go).
    Assign {
        generation: u64,
        sectors: Vec<SectorId>,
        world: Vec<SectorId>,
    },
    /// Start simulating these entities.
    Adopt {
        entities: Vec<Adoption>,
    },
    /// The new owner has these entities: drop the copies kept since handing them over.
    Forget {
        ids: Vec<EntityId>,
    },
    /// Neighbours' entities within the shadow margin of this shard's sectors, replacing the
    /// previous set.
    Shadows {
        tick: u64,
        shadows: Vec<Shadow>,
    },
    /// Pilots' commands for ships this shard simulates (or is about to: an `Adopt` of the ship
    /// comes first on the link).
    Controls {
        controls: Vec<ShipControl>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    Oversized(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes one message as a frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    let payload = postcard::to_extend(msg, Vec::new()).expect("messages always serialise");
    out[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Incremental frame splitter over a byte stream.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one has arrived.
    pub fn next_frame<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::Oversized(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = postcard::from_bytes(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        Ok(Some(msg?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EntityKind, EntityState};
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_across_arbitrary_splits() {
        let msgs = vec![
            ShardMessage::Hello {
                protocol: PROTOCOL_VERSION,
                shard: ShardId::new("shard-0"),
                secret: "s".into(),
            },
            ShardMessage::Updates(vec![1, 2, 3]),
            ShardMessage::HandoverOut {
                snapshot: EntitySnapshot {
                    id: EntityId(9),
                    kind: EntityKind::Ship,
                    state: EntityState::default(),
                    ttl_ticks: None,
                    player: true,
                },
                epoch: 4,
            },
        ];
        let bytes: Vec<u8> = msgs.iter().flat_map(encode_frame).collect();
        for chunk in [1, 3, 7, bytes.len()] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for c in bytes.chunks(chunk) {
                r.push(c);
                while let Some(m) = r.next_frame::<ShardMessage>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut r = FrameReader::default();
        r.push(&u32::MAX.to_le_bytes());
        assert!(matches!(
            r.next_frame::<ShardMessage>(),
            Err(FrameError::Oversized(_))
        ));
        let mut r = FrameReader::default();
        r.push(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.next_frame::<ShardMessage>(),
            Err(FrameError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut r = FrameReader::default();
            r.push(&bytes);
            for _ in 0..8 {
                match r.next_frame::<ShardMessage>() { Ok(Some(_)) => {}, _ => break }
            }
            let mut r = FrameReader::default();
            r.push(&bytes);
            let _ = r.next_frame::<ReplicationMessage>();
        }
    }
}
