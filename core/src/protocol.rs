//! The shard link: messages between a shard and replication, and their framing.
//!
//! A frame is a little-endian `u32` payload length followed by a postcard-encoded message.
//! Replication opens with a `Challenge`; the first frame from a shard must be `Hello`, with its
//! proof of the shared secret ([`crate::handshake`]); replication answers `Welcome` with its own
//! proof, or `Rejected` and closes. Entity updates ride inside `Updates` as the compact batch of [`crate::codec`].
//! Anything malformed, oversized or out of protocol closes that one link.
//!
//! Senders never write a frame over the limit: a message carrying a list (an `Adopt` for a
//! restored world, a big shard's `Released`) goes out as several messages of the same kind
//! ([`ReplicationMessage::split`], [`ShardMessage::split`]); `Shadows` parts share their tick
//! and together form that tick's set.

use serde::{Deserialize, Serialize};

use crate::geometry::SectorId;
use crate::handshake::{Nonce, Proof, SHARD_LINK};
use crate::ids::{EntityId, EntitySnapshot, Epoch, ShardId};
use crate::load::ShardLoadReport;

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 8;
/// Largest frame either side accepts by default (`--max-frame-bytes`).
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// The smallest frame limit allowed: a few hundred entries per part.
pub const MIN_FRAME_BYTES: usize = 16 << 10;
/// Largest frame accepted before the handshake: a `Hello` is a few dozen bytes, and an
/// unauthenticated peer must not make replication buffer more.
pub const MAX_HELLO_FRAME_BYTES: usize = 1024;
/// An upper bound on one list entry's encoded size in any message that [`ReplicationMessage::split`]
/// or [`ShardMessage::split`] cuts (an `Adoption` is at most 52 bytes: varints at their longest).
pub const MAX_ENTRY_BYTES: usize = 64;

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

/// What a pilot asks of its ship for a tick: thrust along the heading and turn rate, each in
/// [-1, 1], and the trigger. The one command type from client to shard: the client sends it as
/// lightyear's native input (redundantly, one per tick), the gateway checks it
/// ([`PilotCommand::clamped`], rate limits) and forwards it, the authority routes it with the
/// ship's id ([`ShipControl`]) to whichever shard simulates the ship, and the shard flies it
/// with [`steer_ship`] (as the client's prediction does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "bevy", derive(bevy::reflect::Reflect))]
pub struct PilotCommand {
    pub thrust: f32,
    pub turn: f32,
    pub fire: bool,
}

impl PilotCommand {
    /// This command with thrust and turn clamped into [-1, 1], and whether clamping was needed;
    /// `None` for NaN or infinities (clamping cannot say what they meant).
    pub fn clamped(self) -> Option<(Self, bool)> {
        if !self.thrust.is_finite() || !self.turn.is_finite() {
            return None;
        }
        let c = PilotCommand {
            thrust: self.thrust.clamp(-1.0, 1.0),
            turn: self.turn.clamp(-1.0, 1.0),
            fire: self.fire,
        };
        Some((c, c != self))
    }
}

/// A command carries no entity reference (lightyear's inputs must say so).
#[cfg(feature = "bevy")]
impl bevy::ecs::entity::MapEntities for PilotCommand {
    fn map_entities<M: bevy::ecs::entity::EntityMapper>(&mut self, _: &mut M) {}
}

/// A checked command for one ship, as the authority routes it to the ship's shard. Held there
/// until the next one replaces it, and sent along with the ship on every handover.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShipControl {
    pub ship: EntityId,
    pub command: PilotCommand,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardMessage {
    /// The answer to replication's `Challenge`: the shard's own nonce and its proof of the
    /// secret over both nonces and its name.
    Hello {
        protocol: u32,
        shard: ShardId,
        nonce: Nonce,
        proof: Proof,
        /// Where the shard publishes its sector streams (`stream.rs`), if it does.
        stream: Option<String>,
        /// The shard kept simulating through a lost link (a takeover, a network cut) and has
        /// entities of its own: it sends them in `Resume` next, and replication must not hand
        /// it the stored copies.
        resuming: bool,
    },
    /// After a resuming `Hello`'s `Welcome` (the first message on that link, tagged with its
    /// incarnation): every entity the shard simulates, and every one it handed over that no
    /// new owner confirmed, each at its epoch. Sent in parts; `last` ends it.
    Resume {
        incarnation: u32,
        owned: Vec<(EntitySnapshot, Epoch)>,
        handed_over: Vec<(EntitySnapshot, Epoch)>,
        last: bool,
    },
    /// Compact batch of changed entities (see `codec`).
    Updates(#[serde(with = "crate::wire_bytes")] Vec<u8>),
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
    /// Every owned entity's state for replication's checkpoint `round` went out before this
    /// (the `Updates` ahead of it on the link), answering `Report { round }`.
    Reported {
        round: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicationMessage {
    /// The first message on every link: the protocol replication speaks and a fresh nonce the
    /// shard's `Hello` must prove the secret over.
    Challenge {
        protocol: u32,
        nonce: Nonce,
    },
    /// Handshake accepted. `incarnation` prefixes the entity ids this shard mints; `proof`
    /// shows the shard that this is the replication that knows the secret.
    Welcome {
        incarnation: u32,
        tick_hz: u32,
        proof: Proof,
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
    /// These entities are not this shard's: the authority refused their spawn (the shard's
    /// view of its sectors was stale) or does not know them. Stop simulating them, with no
    /// handover, and confirm each with `Despawned`.
    Disown {
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
    /// Where this shard takes its shadows from itself, instead of `Shadows`: the leaves other
    /// shards own within `margin` of its own, and where those shards publish their sector
    /// streams. Sent when every linked shard publishes streams; replaces the previous
    /// `Neighbours` (and any `Shadows`); repeated twice a second, so it also keeps the link
    /// alive. `report_every`: send entity updates every this many ticks (1: every tick; 0: only
    /// when a `Report` asks, when replication needs the state only for checkpoints). A `Shadows`
    /// message means every tick again.
    Neighbours {
        generation: u64,
        margin: f32,
        report_every: u32,
        sectors: Vec<(SectorId, ShardId)>,
        streams: Vec<(ShardId, String)>,
    },
    /// Send the state of every owned entity that changed since last sent, now (on the next
    /// tick), then `Reported { round }`: replication is about to checkpoint. Shards that report
    /// every tick answer it the same way.
    Report {
        round: u64,
    },
}

impl ShardMessage {
    /// The `Hello` of shard `shard` answering `challenge`, with its own fresh `nonce`.
    pub fn hello(secret: &str, challenge: &Nonce, shard: ShardId, nonce: Nonce) -> Self {
        let proof = SHARD_LINK.hello(secret, challenge, &nonce, &shard.0);
        ShardMessage::Hello {
            protocol: PROTOCOL_VERSION,
            shard,
            nonce,
            proof,
            stream: None,
            resuming: false,
        }
    }

    /// This `Hello` saying whether the shard resumes with entities of its own.
    pub fn resuming(mut self, resume: bool) -> Self {
        if let ShardMessage::Hello { resuming, .. } = &mut self {
            *resuming = resume;
        }
        self
    }

    /// This `Hello` announcing that the shard publishes its sector streams at `addr`.
    pub fn publishing(mut self, addr: Option<String>) -> Self {
        if let ShardMessage::Hello { stream, .. } = &mut self {
            *stream = addr;
        }
        self
    }
}

/// How many list entries (or entity updates) one frame may carry so that it encodes within
/// `max_frame` bytes.
pub fn entries_per_frame(max_frame: usize) -> usize {
    // The message's own tag, tick or generation and list length take well under 64 bytes.
    (max_frame.saturating_sub(64) / MAX_ENTRY_BYTES).max(1)
}

/// `list` cut into parts of at most `per` entries (one empty part for an empty list).
fn parts<T>(list: Vec<T>, per: usize) -> Vec<Vec<T>> {
    if list.len() <= per {
        return vec![list];
    }
    let mut out = Vec::with_capacity(list.len().div_ceil(per));
    let mut it = list.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(per).collect());
    }
    out
}

impl ReplicationMessage {
    /// This message as one or more messages, each of which encodes within `max_frame` bytes.
    /// A receiver applying the parts in order gets what the whole would have done: `Adopt`,
    /// `Forget` and `Controls` act entry by entry, and `Shadows` parts share their tick.
    pub fn split(self, max_frame: usize) -> Vec<ReplicationMessage> {
        let per = entries_per_frame(max_frame);
        match self {
            ReplicationMessage::Adopt { entities } if entities.len() > per => parts(entities, per)
                .into_iter()
                .map(|entities| ReplicationMessage::Adopt { entities })
                .collect(),
            ReplicationMessage::Forget { ids } if ids.len() > per => parts(ids, per)
                .into_iter()
                .map(|ids| ReplicationMessage::Forget { ids })
                .collect(),
            ReplicationMessage::Disown { ids } if ids.len() > per => parts(ids, per)
                .into_iter()
                .map(|ids| ReplicationMessage::Disown { ids })
                .collect(),
            ReplicationMessage::Controls { controls } if controls.len() > per => {
                parts(controls, per)
                    .into_iter()
                    .map(|controls| ReplicationMessage::Controls { controls })
                    .collect()
            }
            ReplicationMessage::Shadows { tick, shadows } if shadows.len() > per => {
                parts(shadows, per)
                    .into_iter()
                    .map(|shadows| ReplicationMessage::Shadows { tick, shadows })
                    .collect()
            }
            other => vec![other],
        }
    }
}

impl ShardMessage {
    /// This message as one or more messages, each of which encodes within `max_frame` bytes
    /// (see [`ReplicationMessage::split`]). `Updates` is one codec batch and is not cut here:
    /// the shard encodes at most [`entries_per_frame`] entities per batch instead.
    pub fn split(self, max_frame: usize) -> Vec<ShardMessage> {
        let per = entries_per_frame(max_frame);
        match self {
            ShardMessage::Released {
                generation,
                entities,
            } if entities.len() > per => parts(entities, per)
                .into_iter()
                .map(|entities| ShardMessage::Released {
                    generation,
                    entities,
                })
                .collect(),
            ShardMessage::Adopted { ids } if ids.len() > per => parts(ids, per)
                .into_iter()
                .map(|ids| ShardMessage::Adopted { ids })
                .collect(),
            ShardMessage::Resume {
                incarnation,
                owned,
                handed_over,
                last,
            } if owned.len() + handed_over.len() > per => {
                // The owned entities first, then the handed-over ones; `last` on the final part.
                let mut out: Vec<ShardMessage> = parts(owned, per)
                    .into_iter()
                    .map(|owned| ShardMessage::Resume {
                        incarnation,
                        owned,
                        handed_over: Vec::new(),
                        last: false,
                    })
                    .collect();
                if !handed_over.is_empty() {
                    out.extend(parts(handed_over, per).into_iter().map(|handed_over| {
                        ShardMessage::Resume {
                            incarnation,
                            owned: Vec::new(),
                            handed_over,
                            last: false,
                        }
                    }));
                }
                if let Some(ShardMessage::Resume { last: l, .. }) = out.last_mut() {
                    *l = last;
                }
                out
            }
            other => vec![other],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    Oversized { len: usize, limit: usize },
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
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    limit: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::with_limit(MAX_FRAME_BYTES)
    }
}

impl FrameReader {
    /// A reader that refuses frames over `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
        }
    }

    /// Changes the largest frame accepted from here on (raised after a handshake).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one has arrived.
    pub fn next_frame<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > self.limit {
            return Err(FrameError::Oversized {
                len,
                limit: self.limit,
            });
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
            ShardMessage::hello(
                "a-long-enough-secret",
                &[7; 32],
                ShardId::new("shard-0"),
                [9; 32],
            ),
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
            Err(FrameError::Oversized { .. })
        ));
        let mut r = FrameReader::default();
        r.push(&[3, 0, 0, 0, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.next_frame::<ShardMessage>(),
            Err(FrameError::Malformed(_))
        ));
    }

    fn biggest_snapshot(n: u64) -> EntitySnapshot {
        EntitySnapshot {
            id: EntityId(u64::MAX - n),
            kind: EntityKind::Projectile,
            state: EntityState {
                pos: [f32::MAX; 2],
                vel: [f32::MIN; 2],
                angle: f32::MAX,
                ang_vel: f32::MAX,
            },
            ttl_ticks: Some(u32::MAX),
            player: true,
        }
    }

    #[test]
    fn no_list_entry_encodes_over_the_bound_the_splitter_assumes() {
        let s = biggest_snapshot(0);
        let entry_sizes = [
            postcard::to_allocvec(&Adoption {
                snapshot: s,
                epoch: u64::MAX,
            })
            .unwrap()
            .len(),
            postcard::to_allocvec(&(s, u64::MAX)).unwrap().len(),
            postcard::to_allocvec(&Shadow { snapshot: s })
                .unwrap()
                .len(),
            postcard::to_allocvec(&(EntityId(u64::MAX), u64::MAX))
                .unwrap()
                .len(),
            postcard::to_allocvec(&ShipControl {
                ship: EntityId(u64::MAX),
                command: PilotCommand {
                    thrust: 1.0,
                    turn: -1.0,
                    fire: true,
                },
            })
            .unwrap()
            .len(),
        ];
        for n in entry_sizes {
            assert!(n <= MAX_ENTRY_BYTES, "an entry of {n} bytes");
        }
    }

    /// A restore or a rehome of a big shard: ~370k entities is more than one 16 MiB frame holds
    /// at the largest entry size. Every part fits, every reader takes it, nothing is lost.
    #[test]
    fn an_adopt_and_a_release_of_400k_entities_go_out_as_frames_within_the_limit() {
        let n = 400_000u64;
        let adopt = ReplicationMessage::Adopt {
            entities: (0..n)
                .map(|i| Adoption {
                    snapshot: biggest_snapshot(i),
                    epoch: u64::MAX - i,
                })
                .collect(),
        };
        assert!(
            encode_frame(&adopt).len() > MAX_FRAME_BYTES,
            "the whole message would not fit one frame"
        );
        let released = ShardMessage::Released {
            generation: 7,
            entities: (0..n)
                .map(|i| (biggest_snapshot(i), u64::MAX - i))
                .collect(),
        };
        let mut reader = FrameReader::default();
        let parts = adopt.clone().split(MAX_FRAME_BYTES);
        assert!(parts.len() > 1);
        let mut got = Vec::new();
        for p in parts {
            let frame = encode_frame(&p);
            assert!(frame.len() - 4 <= MAX_FRAME_BYTES);
            reader.push(&frame);
            match reader.next_frame::<ReplicationMessage>().unwrap().unwrap() {
                ReplicationMessage::Adopt { entities } => got.extend(entities),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ReplicationMessage::Adopt { entities: got }, adopt);

        let mut ids = Vec::new();
        for p in released.split(MAX_FRAME_BYTES) {
            let frame = encode_frame(&p);
            assert!(frame.len() - 4 <= MAX_FRAME_BYTES);
            reader.push(&frame);
            match reader.next_frame::<ShardMessage>().unwrap().unwrap() {
                ShardMessage::Released {
                    generation,
                    entities,
                } => {
                    assert_eq!(generation, 7);
                    ids.extend(entities.into_iter().map(|(s, _)| s.id));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ids.len(), n as usize);
        assert!(ids.windows(2).all(|w| w[0] != w[1]));
    }

    /// A resuming shard's whole world goes out in parts within the frame limit, owned entities
    /// before handed-over ones, every part tagged with the link's incarnation, and only the
    /// final part says `last`.
    #[test]
    fn a_resume_goes_out_in_parts_with_last_only_on_the_final_one() {
        let owned: Vec<_> = (0..900u64).map(|i| (biggest_snapshot(i), i)).collect();
        let handed: Vec<_> = (900..1000u64).map(|i| (biggest_snapshot(i), i)).collect();
        let parts = ShardMessage::Resume {
            incarnation: 5,
            owned: owned.clone(),
            handed_over: handed.clone(),
            last: true,
        }
        .split(MIN_FRAME_BYTES);
        assert!(parts.len() >= 4, "{} parts", parts.len());
        let (mut got_owned, mut got_handed, mut lasts) = (Vec::new(), Vec::new(), Vec::new());
        for p in parts {
            assert!(encode_frame(&p).len() - 4 <= MIN_FRAME_BYTES);
            match p {
                ShardMessage::Resume {
                    incarnation,
                    owned,
                    handed_over,
                    last,
                } => {
                    assert_eq!(incarnation, 5);
                    assert!(handed_over.is_empty() || got_owned.len() == 900);
                    got_owned.extend(owned);
                    got_handed.extend(handed_over);
                    lasts.push(last);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((got_owned, got_handed), (owned, handed));
        assert_eq!(lasts.iter().filter(|l| **l).count(), 1);
        assert_eq!(lasts.last(), Some(&true));
        // A small one stays whole.
        let small = ShardMessage::Resume {
            incarnation: 1,
            owned: Vec::new(),
            handed_over: Vec::new(),
            last: true,
        };
        assert_eq!(small.clone().split(MIN_FRAME_BYTES), vec![small]);
    }

    #[test]
    fn shadows_parts_share_their_tick_and_small_messages_stay_whole() {
        let shadows: Vec<Shadow> = (0..1000)
            .map(|i| Shadow {
                snapshot: biggest_snapshot(i),
            })
            .collect();
        let parts = ReplicationMessage::Shadows {
            tick: 9,
            shadows: shadows.clone(),
        }
        .split(MIN_FRAME_BYTES);
        assert!(parts.len() >= 4);
        let mut joined = Vec::new();
        for p in parts {
            assert!(encode_frame(&p).len() - 4 <= MIN_FRAME_BYTES);
            let ReplicationMessage::Shadows { tick, shadows } = p else {
                panic!("a Shadows part")
            };
            assert_eq!(tick, 9);
            joined.extend(shadows);
        }
        assert_eq!(joined, shadows);
        let empty = ReplicationMessage::Shadows {
            tick: 1,
            shadows: vec![],
        };
        assert_eq!(empty.clone().split(MIN_FRAME_BYTES), vec![empty]);
    }

    #[test]
    fn before_the_handshake_a_frame_over_a_kibibyte_is_refused() {
        let mut r = FrameReader::with_limit(MAX_HELLO_FRAME_BYTES);
        r.push(&(2000u32).to_le_bytes());
        assert!(matches!(
            r.next_frame::<ShardMessage>(),
            Err(FrameError::Oversized {
                len: 2000,
                limit: 1024
            })
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
