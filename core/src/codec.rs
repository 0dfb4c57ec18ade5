//! Compact, delta-encoded entity updates for the shard link.
//!
//! State is quantized (positions to 1/64 unit, velocities to 1/16 unit/s, angles to 1/65536
//! turn, angular velocity to 1/256 rad/s). Each link keeps a baseline per entity on both ends;
//! an update carries only the fields that changed, as zig-zag varint deltas from the baseline.
//! The first update of an entity on a link is a keyframe with absolute values and the owner's
//! epoch. A batch is: `tick, count, entries` where entries are sorted by id and each starts with
//! the id's delta from the previous one, so a dense batch spends about one byte per id.

use rustc_hash::FxHashMap;
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
        let q64 = |v: f32, k: f32| round_to_i64(f64::from(v) * f64::from(k));
        let q32 = |v: f32, k: f32| {
            round_to_i64(f64::from(v * k)).clamp(i32::MIN.into(), i32::MAX.into()) as i32
        };
        let turns = round_to_i64(f64::from(s.angle * ANGLE_SCALE));
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

/// `x.round() as i64` (half away from zero, saturating), without the library call that
/// `f64::round` is on x86-64's baseline: six per entity per tick on a shard. Exact: `x` minus
/// its truncation is exact for every finite `x`.
pub fn round_to_i64(x: f64) -> i64 {
    let t = x as i64;
    let frac = x - t as f64;
    if frac >= 0.5 {
        t.saturating_add(1)
    } else if frac <= -0.5 {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// How many entries an encoded batch holds (its second varint; 0 if unreadable), for
/// statistics: no decoding, no baselines.
pub fn batch_entries(bytes: &[u8]) -> u64 {
    let mut at = 0;
    varint::read(bytes, &mut at)
        .and_then(|_| varint::read(bytes, &mut at))
        .unwrap_or(0)
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
    /// What the receiver holds, sorted by id. A batch (sorted too) is merged with it in one
    /// sequential pass: a shard sends nearly every entity every tick, and a hash map probed in
    /// id order missed the cache on most of them. `None`: forgotten, dropped by the next merge.
    baseline: Vec<(EntityId, Option<Quantized>)>,
    /// The previous baseline's allocation, reused by the next merge.
    spare: Vec<(EntityId, Option<Quantized>)>,
}

impl UpdateEncoder {
    /// Encodes the entities whose quantized state changed since they were last sent. `updates`
    /// is sorted by id in place. Returns `None` when nothing changed. Non-finite states are
    /// skipped (the simulation must never produce them; the receiver would refuse them), and
    /// an id given twice is sent once.
    pub fn encode(
        &mut self,
        tick: u64,
        updates: &mut [(EntityId, Epoch, EntityState)],
    ) -> Option<Vec<u8>> {
        updates.sort_unstable_by_key(|u| u.0);
        let old = std::mem::take(&mut self.baseline);
        let mut merged = std::mem::take(&mut self.spare);
        merged.clear();
        merged.reserve(old.len() + updates.len());
        let mut body = Vec::with_capacity(updates.len() * 8);
        let mut count = 0u64;
        // The last id written (ids on the wire are deltas from it) and the last id seen (a
        // repeat of it is dropped, whether or not it was written).
        let mut prev: Option<u64> = None;
        let mut seen: Option<EntityId> = None;
        let mut at = 0;
        for (id, epoch, state) in updates.iter() {
            if seen == Some(*id) {
                continue;
            }
            seen = Some(*id);
            // Entities not in this batch keep their baselines.
            while at < old.len() && old[at].0 < *id {
                if old[at].1.is_some() {
                    merged.push(old[at]);
                }
                at += 1;
            }
            let base = match old.get(at) {
                Some(&(b, q)) if b == *id => {
                    at += 1;
                    q
                }
                _ => None,
            };
            let Some(q) = Quantized::from_state(state) else {
                if let Some(b) = base {
                    merged.push((*id, Some(b)));
                }
                continue;
            };
            merged.push((*id, Some(q)));
            if base == Some(q) {
                continue;
            }
            put_varint(&mut body, id.0 - prev.unwrap_or(0));
            prev = Some(id.0);
            count += 1;
            write_entry(&mut body, *epoch, q, base);
        }
        merged.extend(old[at..].iter().filter(|(_, q)| q.is_some()));
        self.baseline = merged;
        self.spare = old;
        batch(tick, count, &body)
    }

    /// A batch of keyframes of everything the receivers hold now (the baselines, exactly as
    /// last sent), for a receiver joining a stream that others already follow: decoded, it
    /// leaves the joiner with the same baselines as theirs, so the next [`Self::encode`] serves
    /// everyone alike. `epoch_of` gives each entity's epoch. `None` when the stream is empty.
    pub fn keyframes(&self, tick: u64, epoch_of: impl Fn(EntityId) -> Epoch) -> Option<Vec<u8>> {
        let mut body = Vec::with_capacity(self.baseline.len() * 16);
        let (mut count, mut prev) = (0u64, 0u64);
        for (id, q) in &self.baseline {
            let Some(q) = q else { continue };
            put_varint(&mut body, id.0 - prev);
            prev = id.0;
            count += 1;
            write_entry(&mut body, epoch_of(*id), *q, None);
        }
        batch(tick, count, &body)
    }

    /// The entity left this link (handed over or despawned): the next send is a keyframe.
    pub fn forget(&mut self, id: EntityId) {
        if let Ok(i) = self.baseline.binary_search_by_key(&id, |(b, _)| *b) {
            self.baseline[i].1 = None;
        }
    }

    /// Entities the receiver holds a baseline for.
    pub fn len(&self) -> usize {
        self.baseline.iter().filter(|(_, q)| q.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A batch: `tick, count`, then the entries; `None` without entries.
fn batch(tick: u64, count: u64, body: &[u8]) -> Option<Vec<u8>> {
    if count == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    put_varint(&mut out, tick);
    put_varint(&mut out, count);
    out.extend_from_slice(body);
    Some(out)
}

/// One entry after its id: a keyframe (flags, epoch, absolute values) without a baseline, else
/// the flags of the fields that changed and their deltas.
fn write_entry(body: &mut Vec<u8>, epoch: Epoch, q: Quantized, base: Option<Quantized>) {
    let Some(b) = base else {
        body.push(F_KEYFRAME);
        put_varint(body, epoch);
        put_varint(body, zigzag(q.pos[0]));
        put_varint(body, zigzag(q.pos[1]));
        put_varint(body, zigzag(q.vel[0].into()));
        put_varint(body, zigzag(q.vel[1].into()));
        put_varint(body, q.angle.into());
        put_varint(body, zigzag(q.ang_vel.into()));
        return;
    };
    let flag_at = body.len();
    body.push(0);
    let mut flags = 0;
    if q.pos != b.pos {
        flags |= F_POS;
        put_varint(body, zigzag(q.pos[0].wrapping_sub(b.pos[0])));
        put_varint(body, zigzag(q.pos[1].wrapping_sub(b.pos[1])));
    }
    if q.vel != b.vel {
        flags |= F_VEL;
        put_varint(body, zigzag(i64::from(q.vel[0]) - i64::from(b.vel[0])));
        put_varint(body, zigzag(i64::from(q.vel[1]) - i64::from(b.vel[1])));
    }
    if q.angle != b.angle {
        flags |= F_ANGLE;
        put_varint(
            body,
            zigzag(i64::from(q.angle.wrapping_sub(b.angle) as i16)),
        );
    }
    if q.ang_vel != b.ang_vel {
        flags |= F_ANG_VEL;
        put_varint(body, zigzag(i64::from(q.ang_vel) - i64::from(b.ang_vel)));
    }
    body[flag_at] = flags;
}

/// Receiver side of one link.
#[derive(Debug, Default)]
pub struct UpdateDecoder {
    // Ids come from an authenticated shard, not from players: a fast integer hash.
    baseline: FxHashMap<EntityId, (Epoch, Quantized)>,
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
        // Ids are strictly increasing, so a batch names each entity once: its entries are
        // staged in order and applied only when the whole batch decoded.
        let mut staged: Vec<(EntityId, (Epoch, Quantized))> = Vec::with_capacity(out.capacity());
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
                let (epoch, mut q) = self
                    .baseline
                    .get(&id)
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
            staged.push((id, (epoch, q)));
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
    fn a_joiner_given_the_keyframes_decodes_the_shared_deltas_like_everyone_else() {
        let mut enc = UpdateEncoder::default();
        let (mut early, mut joiner) = (UpdateDecoder::default(), UpdateDecoder::default());
        let batch = |t: f32| -> Vec<_> {
            (0..50u64)
                .map(|i| {
                    (
                        EntityId(10 + i * 7),
                        3 + i % 2,
                        state(i as f32 + t, t * 2.0),
                    )
                })
                .collect()
        };
        early
            .decode(&enc.encode(1, &mut batch(0.0)).unwrap())
            .unwrap();
        early
            .decode(&enc.encode(2, &mut batch(1.5)).unwrap())
            .unwrap();
        // A forgotten entity is not in the keyframes.
        enc.forget(EntityId(10));
        early.forget(EntityId(10));
        let keys = enc.keyframes(2, |id| 3 + (id.0 - 10) / 7 % 2).unwrap();
        let (tick, got) = joiner.decode(&keys).unwrap();
        assert_eq!((tick, got.len()), (2, 49));
        assert!(got.iter().all(|u| u.epoch == 3 + (u.id.0 - 10) / 7 % 2));
        let deltas = enc.encode(3, &mut batch(4.0)).unwrap();
        let (_, a) = early.decode(&deltas).unwrap();
        let (_, b) = joiner.decode(&deltas).unwrap();
        assert_eq!(
            a, b,
            "the joiner decodes the shared deltas exactly as an early receiver"
        );
        assert_eq!(a.len(), 50);
        assert!(UpdateEncoder::default().keyframes(1, |_| 0).is_none());
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
    fn rounding_matches_the_standard_library_everywhere_it_is_hard() {
        let hard = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.499_999_999_999_999_94,
            -0.499_999_999_999_999_94,
            4_503_599_627_370_495.5,
            9_007_199_254_740_993.0,
            1e18,
            -1e18,
            9.3e18,
            -9.3e18,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
        ];
        for x in hard {
            assert_eq!(round_to_i64(x), x.round() as i64, "{x}");
        }
        let mut x = -1000.0f64;
        while x < 1000.0 {
            assert_eq!(round_to_i64(x), x.round() as i64, "{x}");
            x += 0.015_625 / 3.0;
        }
    }

    #[test]
    fn forgotten_and_absent_entities_keep_the_right_baselines() {
        let s = |x: f32| EntityState {
            pos: [x, 0.0],
            vel: [0.0, 0.0],
            angle: 0.0,
            ang_vel: 0.0,
        };
        let (mut enc, mut dec) = (UpdateEncoder::default(), UpdateDecoder::default());
        let mut batch = vec![
            (EntityId(9), 1, s(9.0)),
            (EntityId(3), 1, s(3.0)),
            (EntityId(5), 1, s(5.0)),
        ];
        dec.decode(&enc.encode(1, &mut batch).unwrap()).unwrap();
        assert_eq!(enc.len(), 3);
        // 5 leaves the link; 3 is not in the next batch at all; 9 moves; 7 is new.
        enc.forget(EntityId(5));
        dec.forget(EntityId(5));
        let mut batch = vec![(EntityId(9), 1, s(10.0)), (EntityId(7), 1, s(7.0))];
        let (_, got) = dec.decode(&enc.encode(2, &mut batch).unwrap()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(enc.len(), 3, "3, 7 and 9");
        // 3 kept its baseline (a delta decodes), 5 comes back as a keyframe (it was forgotten),
        // and an id given twice is sent once.
        let mut batch = vec![
            (EntityId(3), 1, s(4.0)),
            (EntityId(5), 2, s(6.0)),
            (EntityId(5), 2, s(6.0)),
        ];
        let (_, got) = dec.decode(&enc.encode(3, &mut batch).unwrap()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].state.pos[0], 4 * 64);
        assert_eq!((got[1].id, got[1].epoch), (EntityId(5), 2));
        assert_eq!(enc.len(), 4);
        // A repeat of an entity that did not change is dropped too: no second baseline, no
        // keyframe.
        let mut batch = vec![
            (EntityId(3), 1, s(4.0)),
            (EntityId(3), 1, s(4.0)),
            (EntityId(9), 1, s(11.0)),
        ];
        let (_, got) = dec.decode(&enc.encode(4, &mut batch).unwrap()).unwrap();
        assert_eq!(got.iter().map(|u| u.id).collect::<Vec<_>>(), [EntityId(9)]);
        assert_eq!(enc.len(), 4);
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
