//! Compact, delta-encoded entity updates for the shard link.
//!
//! State is quantized (positions to 1/64 unit, velocities to 1/16 unit/s, angles to 1/65536
//! turn, angular velocity to 1/256 rad/s). Each link keeps a baseline per entity on both ends;
//! an update carries only the fields that changed, as zig-zag varint deltas from the baseline.
//! The first update of an entity on a link is a keyframe with absolute values and the owner's
//! epoch. A batch is: `tick, count, entries` where entries are sorted by id and each starts with
//! the id's delta from the previous one, so a dense batch spends about one byte per id.

use std::collections::HashMap;
use std::f32::consts::TAU;

use crate::ids::{EntityId, EntityState, Epoch};
use crate::varint::{self, put as put_varint, unzigzag, zigzag};

pub const POS_SCALE: f32 = 64.0;
pub const VEL_SCALE: f32 = 16.0;
pub const ANGLE_SCALE: f32 = 65536.0 / TAU;
pub const ANG_VEL_SCALE: f32 = 256.0;
/// More entries than this in one batch is a protocol violation.
pub const MAX_BATCH_ENTRIES: u64 = 1 << 20;

const F_POS: u8 = 1;
const F_VEL: u8 = 2;
const F_ANGLE: u8 = 4;
const F_ANG_VEL: u8 = 8;
const F_KEYFRAME: u8 = 0x80;
const F_KNOWN: u8 = F_POS | F_VEL | F_ANGLE | F_ANG_VEL | F_KEYFRAME;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("batch truncated: needed more bytes at offset {0}")]
    Truncated(usize),
    #[error("varint at offset {0} is longer than 10 bytes or overflows")]
    BadVarint(usize),
    #[error("batch claims {0} entries, more than the limit of {MAX_BATCH_ENTRIES}")]
    TooManyEntries(u64),
    #[error("entity id overflows after delta at offset {0}")]
    IdOverflow(usize),
    #[error("entity ids not strictly increasing at offset {0}")]
    IdsNotSorted(usize),
    #[error("unknown field flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("delta update for {0} which has no keyframe on this link")]
    NoBaseline(EntityId),
    #[error("field value out of range for {0}")]
    OutOfRange(EntityId),
    #[error("{0} trailing bytes after the batch")]
    TrailingBytes(usize),
    #[error("state of {0} is not finite")]
    NotFinite(EntityId),
}

/// Quantized state: what both ends of a link agree an entity looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quantized {
    pub pos: [i64; 2],
    pub vel: [i32; 2],
    pub angle: u16,
    pub ang_vel: i32,
}

impl Quantized {
    pub fn from_state(s: &EntityState) -> Option<Self> {
        if !s.is_finite() {
            return None;
        }
        let q64 = |v: f32, k: f32| (f64::from(v) * f64::from(k)).round() as i64;
        let q32 = |v: f32, k: f32| (v * k).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32;
        let turns = (s.angle * ANGLE_SCALE).round() as i64;
        Some(Self {
            pos: [q64(s.pos[0], POS_SCALE), q64(s.pos[1], POS_SCALE)],
            vel: [q32(s.vel[0], VEL_SCALE), q32(s.vel[1], VEL_SCALE)],
            angle: turns.rem_euclid(65536) as u16,
            ang_vel: q32(s.ang_vel, ANG_VEL_SCALE),
        })
    }

    pub fn to_state(&self) -> EntityState {
        let angle = f32::from(self.angle) / ANGLE_SCALE;
        EntityState {
            pos: [
                (self.pos[0] as f64 / f64::from(POS_SCALE)) as f32,
                (self.pos[1] as f64 / f64::from(POS_SCALE)) as f32,
            ],
            vel: [
                self.vel[0] as f32 / VEL_SCALE,
                self.vel[1] as f32 / VEL_SCALE,
            ],
            angle: if angle > std::f32::consts::PI {
                angle - TAU
            } else {
                angle
            },
            ang_vel: self.ang_vel as f32 / ANG_VEL_SCALE,
        }
    }
}

/// One decoded update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedUpdate {
    pub id: EntityId,
    /// Epoch the sender held when it keyframed this entity on the link.
    pub epoch: Epoch,
    pub state: Quantized,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or(CodecError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.at;
        varint::read(self.buf, &mut self.at).map_err(|e| match e {
            varint::VarintError::Truncated => CodecError::Truncated(self.at),
            varint::VarintError::Overflow => CodecError::BadVarint(start),
        })
    }

    fn signed(&mut self) -> Result<i64, CodecError> {
        Ok(unzigzag(self.varint()?))
    }
}

/// Sender side: remembers what the receiver has, sends only what changed.
#[derive(Debug, Default)]
pub struct UpdateEncoder {
    baseline: HashMap<EntityId, Quantized>,
}

impl UpdateEncoder {
    /// Encodes the entities whose quantized state changed since they were last sent. `updates`
    /// is sorted by id in place. Returns `None` when nothing changed. Non-finite states are
    /// skipped (the simulation must never produce them; the receiver would refuse them).
    pub fn encode(
        &mut self,
        tick: u64,
        updates: &mut [(EntityId, Epoch, EntityState)],
    ) -> Option<Vec<u8>> {
        updates.sort_unstable_by_key(|u| u.0);
        let mut body = Vec::with_capacity(updates.len() * 8);
        let mut count = 0u64;
        let mut prev = 0u64;
        for (id, epoch, state) in updates.iter() {
            let Some(q) = Quantized::from_state(state) else {
                continue;
            };
            let base = self.baseline.get(id).copied();
            if base == Some(q) {
                continue;
            }
            put_varint(&mut body, id.0 - prev);
            prev = id.0;
            count += 1;
            match base {
                None => {
                    body.push(F_KEYFRAME);
                    put_varint(&mut body, *epoch);
                    put_varint(&mut body, zigzag(q.pos[0]));
                    put_varint(&mut body, zigzag(q.pos[1]));
                    put_varint(&mut body, zigzag(q.vel[0].into()));
                    put_varint(&mut body, zigzag(q.vel[1].into()));
                    put_varint(&mut body, q.angle.into());
                    put_varint(&mut body, zigzag(q.ang_vel.into()));
                }
                Some(b) => {
                    let flag_at = body.len();
                    body.push(0);
                    let mut flags = 0;
                    if q.pos != b.pos {
                        flags |= F_POS;
                        put_varint(&mut body, zigzag(q.pos[0].wrapping_sub(b.pos[0])));
                        put_varint(&mut body, zigzag(q.pos[1].wrapping_sub(b.pos[1])));
                    }
                    if q.vel != b.vel {
                        flags |= F_VEL;
                        put_varint(&mut body, zigzag(i64::from(q.vel[0]) - i64::from(b.vel[0])));
                        put_varint(&mut body, zigzag(i64::from(q.vel[1]) - i64::from(b.vel[1])));
                    }
                    if q.angle != b.angle {
                        flags |= F_ANGLE;
                        put_varint(
                            &mut body,
                            zigzag(i64::from(q.angle.wrapping_sub(b.angle) as i16)),
                        );
                    }
                    if q.ang_vel != b.ang_vel {
                        flags |= F_ANG_VEL;
                        put_varint(
                            &mut body,
                            zigzag(i64::from(q.ang_vel) - i64::from(b.ang_vel)),
                        );
                    }
                    body[flag_at] = flags;
                }
            }
            self.baseline.insert(*id, q);
        }
        if count == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        put_varint(&mut out, tick);
        put_varint(&mut out, count);
        out.extend_from_slice(&body);
        Some(out)
    }

    /// The entity left this link (handed over or despawned): the next send is a keyframe.
    pub fn forget(&mut self, id: EntityId) {
        self.baseline.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.baseline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.baseline.is_empty()
    }
}

/// Receiver side of one link.
#[derive(Debug, Default)]
pub struct UpdateDecoder {
    baseline: HashMap<EntityId, (Epoch, Quantized)>,
}

impl UpdateDecoder {
    /// Decodes a batch. All or nothing: on error the baselines are unchanged.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<(u64, Vec<DecodedUpdate>), CodecError> {
        let mut r = Reader { buf: bytes, at: 0 };
        let tick = r.varint()?;
        let count = r.varint()?;
        if count > MAX_BATCH_ENTRIES {
            return Err(CodecError::TooManyEntries(count));
        }
        // Each entry needs at least two bytes; a lying count cannot make us allocate much.
        let mut out = Vec::with_capacity((count as usize).min(bytes.len() / 2));
        let mut staged: HashMap<EntityId, (Epoch, Quantized)> = HashMap::new();
        let mut prev: Option<u64> = None;
        for _ in 0..count {
            let at = r.at;
            let delta = r.varint()?;
            let raw = prev
                .unwrap_or(0)
                .checked_add(delta)
                .ok_or(CodecError::IdOverflow(at))?;
            if prev.is_some() && delta == 0 {
                return Err(CodecError::IdsNotSorted(at));
            }
            prev = Some(raw);
            let id = EntityId(raw);
            let flags = r.byte()?;
            if flags & !F_KNOWN != 0 {
                return Err(CodecError::UnknownFlags(flags));
            }
            let range = |v: i64| i32::try_from(v).map_err(|_| CodecError::OutOfRange(id));
            let (epoch, q) = if flags & F_KEYFRAME != 0 {
                let epoch = r.varint()?;
                let q = Quantized {
                    pos: [r.signed()?, r.signed()?],
                    vel: [range(r.signed()?)?, range(r.signed()?)?],
                    angle: u16::try_from(r.varint()?).map_err(|_| CodecError::OutOfRange(id))?,
                    ang_vel: range(r.signed()?)?,
                };
                (epoch, q)
            } else {
                let (epoch, mut q) = staged
                    .get(&id)
                    .or_else(|| self.baseline.get(&id))
                    .copied()
                    .ok_or(CodecError::NoBaseline(id))?;
                if flags & F_POS != 0 {
                    q.pos[0] = q.pos[0].wrapping_add(r.signed()?);
                    q.pos[1] = q.pos[1].wrapping_add(r.signed()?);
                }
                if flags & F_VEL != 0 {
                    q.vel[0] = range(i64::from(q.vel[0]) + r.signed()?.clamp(-(1 << 40), 1 << 40))?;
                    q.vel[1] = range(i64::from(q.vel[1]) + r.signed()?.clamp(-(1 << 40), 1 << 40))?;
                }
                if flags & F_ANGLE != 0 {
                    let d = i16::try_from(r.signed()?).map_err(|_| CodecError::OutOfRange(id))?;
                    q.angle = q.angle.wrapping_add(d as u16);
                }
                if flags & F_ANG_VEL != 0 {
                    q.ang_vel =
                        range(i64::from(q.ang_vel) + r.signed()?.clamp(-(1 << 40), 1 << 40))?;
                }
                (epoch, q)
            };
            if !q.to_state().is_finite() {
                return Err(CodecError::NotFinite(id));
            }
            staged.insert(id, (epoch, q));
            out.push(DecodedUpdate {
                id,
                epoch,
                state: q,
            });
        }
        if r.at != bytes.len() {
            return Err(CodecError::TrailingBytes(bytes.len() - r.at));
        }
        self.baseline.extend(staged);
        Ok((tick, out))
    }

    pub fn forget(&mut self, id: EntityId) {
        self.baseline.remove(&id);
    }

    /// Whether `id` has a baseline on this link.
    pub fn knows(&self, id: EntityId) -> bool {
        self.baseline.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(x: f32, y: f32) -> EntityState {
        EntityState {
            pos: [x, y],
            vel: [3.0, -1.5],
            angle: 0.25,
            ang_vel: 0.1,
        }
    }

    #[test]
    fn keyframe_then_deltas_round_trip_within_quantization() {
        let (mut enc, mut dec) = (UpdateEncoder::default(), UpdateDecoder::default());
        let mut batch: Vec<_> = (0..100u64)
            .map(|i| {
                (
                    EntityId(1000 + i * 3),
                    7,
                    state(i as f32 * 10.0, -(i as f32)),
                )
            })
            .collect();
        let bytes = enc.encode(1, &mut batch).unwrap();
        let (tick, got) = dec.decode(&bytes).unwrap();
        assert_eq!((tick, got.len()), (1, 100));
        assert!(got.iter().all(|u| u.epoch == 7));
        for tick in 2..40 {
            for u in &mut batch {
                u.2.pos[0] += u.2.vel[0] / 30.0;
                u.2.pos[1] += u.2.vel[1] / 30.0;
                u.2.angle = (u.2.angle + u.2.ang_vel / 30.0 + std::f32::consts::PI).rem_euclid(TAU)
                    - std::f32::consts::PI;
            }
            let bytes = enc.encode(tick, &mut batch).unwrap();
            let (_, got) = dec.decode(&bytes).unwrap();
            for (u, (_, _, s)) in got.iter().zip(&batch) {
                let back = u.state.to_state();
                assert!((back.pos[0] - s.pos[0]).abs() <= 0.5 / POS_SCALE + 1e-3);
                assert!((back.pos[1] - s.pos[1]).abs() <= 0.5 / POS_SCALE + 1e-3);
            }
            let per_entity = bytes.len() as f64 / got.len() as f64;
            assert!(per_entity <= 12.0, "{per_entity} bytes per update");
        }
    }

    #[test]
    fn unchanged_entities_are_not_sent() {
        let mut enc = UpdateEncoder::default();
        let mut batch = vec![(EntityId(1), 1, state(0.0, 0.0))];
        assert!(enc.encode(1, &mut batch).is_some());
        assert!(enc.encode(2, &mut batch).is_none());
        enc.forget(EntityId(1));
        assert!(
            enc.encode(3, &mut batch).is_some(),
            "a forgotten entity is keyframed again"
        );
    }

    #[test]
    fn delta_without_keyframe_is_refused_and_leaves_state_untouched() {
        let (mut enc, mut dec) = (UpdateEncoder::default(), UpdateDecoder::default());
        let mut batch = vec![(EntityId(5), 1, state(0.0, 0.0))];
        enc.encode(1, &mut batch).unwrap();
        batch[0].2.pos[0] = 10.0;
        let delta = enc.encode(2, &mut batch).unwrap();
        assert_eq!(dec.decode(&delta), Err(CodecError::NoBaseline(EntityId(5))));
    }

    #[test]
    fn non_finite_state_is_never_encoded() {
        let mut enc = UpdateEncoder::default();
        let mut batch = vec![(
            EntityId(1),
            1,
            EntityState {
                pos: [f32::NAN, 0.0],
                ..Default::default()
            },
        )];
        assert!(enc.encode(1, &mut batch).is_none());
    }

    #[test]
    fn hostile_batches_are_errors() {
        let mut dec = UpdateDecoder::default();
        assert_eq!(dec.decode(&[]), Err(CodecError::Truncated(0)));
        assert!(matches!(
            dec.decode(&[
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ]),
            Err(CodecError::BadVarint(_))
        ));
        assert!(matches!(
            dec.decode(&[1, 0xff, 0xff, 0xff, 0x7f]),
            Err(CodecError::TooManyEntries(_))
        ));
        assert!(matches!(
            dec.decode(&[1, 1, 5, 0x40]),
            Err(CodecError::UnknownFlags(0x40))
        ));
        assert!(matches!(
            dec.decode(&[1, 0, 9]),
            Err(CodecError::TrailingBytes(1))
        ));
        // Two entries with the same id.
        assert!(matches!(
            dec.decode(&[1, 2, 5, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]),
            Err(CodecError::IdsNotSorted(_))
        ));
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut dec = UpdateDecoder::default();
            let _ = dec.decode(&bytes);
        }

        #[test]
        fn decoder_never_panics_after_a_valid_keyframe(tail in proptest::collection::vec(any::<u8>(), 0..128)) {
            let (mut enc, mut dec) = (UpdateEncoder::default(), UpdateDecoder::default());
            let mut batch = vec![(EntityId(42), 3, state(1.0, 2.0))];
            dec.decode(&enc.encode(1, &mut batch).unwrap()).unwrap();
            let mut bytes = vec![2, 1, 42];
            bytes.extend(tail);
            let _ = dec.decode(&bytes);
        }

        #[test]
        fn any_finite_state_round_trips(x in -1e6f32..1e6, y in -1e6f32..1e6, vx in -1e4f32..1e4, vy in -1e4f32..1e4, a in -3.1f32..3.1, w in -100f32..100.0, id in 0u64..u64::MAX / 2, epoch in any::<u64>()) {
            let (mut enc, mut dec) = (UpdateEncoder::default(), UpdateDecoder::default());
            let s = EntityState { pos: [x, y], vel: [vx, vy], angle: a, ang_vel: w };
            let (_, got) = dec.decode(&enc.encode(9, &mut [(EntityId(id), epoch, s)]).unwrap()).unwrap();
            prop_assert_eq!(got[0].id, EntityId(id));
            prop_assert_eq!(got[0].epoch, epoch);
            prop_assert_eq!(got[0].state, Quantized::from_state(&s).unwrap());
            let back = got[0].state.to_state();
            prop_assert!((back.pos[0] - x).abs() <= x.abs() * 1e-6 + 0.02);
            prop_assert!((back.vel[1] - vy).abs() <= 0.04);
            let da = (back.angle - a).abs();
            prop_assert!(da < 1e-3 || (TAU - da) < 1e-3);
        }
    }
}
