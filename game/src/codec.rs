//! The state codec of the client link: world updates quantized and delta-encoded.
//!
//! Each update is encoded against the newest update the client has acknowledged (its
//! *baseline*). Both sides hold each entity as last sent (its *anchor*, with the tick it was sent
//! at) and predict it forward from there with its own velocity and spin, in integers, so they
//! agree to the bit. An entity within [`TOLERANCE_STEPS`] of that prediction, at the same
//! velocity and spin, costs nothing: both sides keep the anchor, so rounding never compounds.
//! One that differs more costs only its residuals from the prediction, as zigzag varints, and
//! becomes the new anchor. Entities new to the client are sent whole; entities gone from
//! view are listed by id. Without a usable baseline (first update, acks lost for [`HISTORY`]
//! ticks) the update is sent whole.
//!
//! Pure: no I/O, no clocks. [`StateEncoder`] keeps the server's side of one player's stream,
//! [`StateDecoder`] the client's.

use std::collections::VecDeque;
use std::f32::consts::TAU;

use sidereal_core::varint::{self, VarintError, put as put_varint, unzigzag, zigzag};

use crate::{SeenEntity, WorldUpdate};

/// Position quantum: 1/16 world unit.
pub const POS_STEPS_PER_UNIT: f32 = 16.0;
/// Velocity quantum: 1/64 world unit per second.
pub const VEL_STEPS_PER_UNIT: f32 = 64.0;
/// Heading quantum: a turn in 4096 steps (0.088 degrees).
pub const ANGLE_STEPS: u32 = 4096;
/// Spin quantum: 1/16 heading step per second.
pub const SPIN_STEPS_PER_ANGLE_STEP: f32 = 16.0;
/// How far (position or heading steps) a client's prediction may be from the truth before the
/// encoder sends a correction.
pub const TOLERANCE_STEPS: i64 = 1;
/// Updates the encoder remembers as possible baselines (about a second at 30 Hz).
pub const HISTORY: usize = 32;
/// Most entities one update may carry; more is refused as malformed.
pub const MAX_ENTITIES: usize = 1 << 16;

const FIELD_PX: u8 = 1;
const FIELD_PY: u8 = 1 << 1;
const FIELD_VX: u8 = 1 << 2;
const FIELD_VY: u8 = 1 << 3;
const FIELD_ANGLE: u8 = 1 << 4;
const FIELD_SPIN: u8 = 1 << 5;
const NEW_ENTITY: u8 = 1 << 6;
const KNOWN_BITS: u8 =
    FIELD_PX | FIELD_PY | FIELD_VX | FIELD_VY | FIELD_ANGLE | FIELD_SPIN | NEW_ENTITY;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("update truncated at byte {0}")]
    Truncated(usize),
    #[error("varint at byte {0} is too long")]
    VarintOverflow(usize),
    #[error("{0} bytes left over after the update")]
    TrailingBytes(usize),
    #[error("baseline tick {0} is not held (too old or never received)")]
    MissingBaseline(u64),
    #[error("baseline age {age} is not below tick {tick}")]
    BadBaselineAge { tick: u64, age: u64 },
    #[error("entity ids are not strictly ascending")]
    Unordered,
    #[error("{0} entities is more than the {MAX_ENTITIES} allowed")]
    TooMany(u64),
    #[error("entity {0} is changed or removed but not in the baseline")]
    NotInBaseline(u64),
    #[error("entity {0} is both changed and removed")]
    ChangedAndRemoved(u64),
    #[error("unknown field bits {0:#04x}")]
    BadMask(u8),
    #[error("a value of entity {0} is out of range")]
    OutOfRange(u64),
}

/// One entity as it goes on the wire: integers in the quanta above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuantizedEntity {
    pub id: u64,
    pub kind: u8,
    pub pos: [i32; 2],
    pub vel: [i32; 2],
    /// In [0, ANGLE_STEPS).
    pub angle: u16,
    pub spin: i32,
    /// The tick these values are of; later ticks predict from them.
    pub at: u64,
}

impl QuantizedEntity {
    pub fn quantize(at: u64, e: &SeenEntity) -> Self {
        let angle = if e.angle.is_finite() {
            let turns = e.angle.rem_euclid(TAU) / TAU;
            ((turns * ANGLE_STEPS as f32).round() as u32 % ANGLE_STEPS) as u16
        } else {
            0
        };
        Self {
            id: e.id,
            kind: e.kind,
            pos: e.pos.map(|v| steps(v, POS_STEPS_PER_UNIT)),
            vel: e.vel.map(|v| steps(v, VEL_STEPS_PER_UNIT)),
            angle,
            spin: steps(e.spin, SPIN_STEPS_PER_RADIAN),
            at,
        }
    }

    /// The entity as of its own tick (predict it first for another).
    pub fn dequantize(&self) -> SeenEntity {
        SeenEntity {
            id: self.id,
            kind: self.kind,
            pos: self.pos.map(|v| v as f32 / POS_STEPS_PER_UNIT),
            vel: self.vel.map(|v| v as f32 / VEL_STEPS_PER_UNIT),
            angle: f32::from(self.angle) / ANGLE_STEPS as f32 * TAU,
            spin: self.spin as f32 / SPIN_STEPS_PER_RADIAN,
        }
    }

    /// This entity at `tick` if it keeps its velocity and spin. Integer arithmetic, so encoder
    /// and decoder get the same answer on every machine.
    pub fn predicted(&self, tick: u64, tick_hz: u32) -> Self {
        let ticks = tick.saturating_sub(self.at).min(u64::from(u32::MAX)) as i64;
        let hz = i64::from(tick_hz.max(1));
        let per_pos = (VEL_STEPS_PER_UNIT / POS_STEPS_PER_UNIT) as i64 * hz;
        let moved = |vel: i32| div_round(i64::from(vel) * ticks, per_pos);
        let pos = [0, 1].map(|i| saturate(i64::from(self.pos[i]) + moved(self.vel[i])));
        let turned = div_round(
            i64::from(self.spin) * ticks,
            SPIN_STEPS_PER_ANGLE_STEP as i64 * hz,
        );
        let angle = (i64::from(self.angle) + turned).rem_euclid(i64::from(ANGLE_STEPS)) as u16;
        Self {
            pos,
            angle,
            at: tick,
            ..*self
        }
    }

    /// Close enough to `predicted` (of the same tick) that the client may keep the prediction.
    fn near(&self, predicted: &Self) -> bool {
        let close = |a: i32, b: i32| (i64::from(a) - i64::from(b)).abs() <= TOLERANCE_STEPS;
        self.kind == predicted.kind
            && self.vel == predicted.vel
            && self.spin == predicted.spin
            && close(self.pos[0], predicted.pos[0])
            && close(self.pos[1], predicted.pos[1])
            && angle_residual(self.angle, predicted.angle).abs() <= TOLERANCE_STEPS
    }
}

const SPIN_STEPS_PER_RADIAN: f32 = SPIN_STEPS_PER_ANGLE_STEP * ANGLE_STEPS as f32 / TAU;

/// A whole update, entities ascending by id, each as last sent (predict to `tick` to see it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub tick: u64,
    pub entities: Vec<QuantizedEntity>,
}

impl Snapshot {
    /// Quantizes `entities`, sorted by id; of repeated ids the first is kept.
    pub fn quantize(tick: u64, entities: &[SeenEntity]) -> Self {
        let mut entities: Vec<QuantizedEntity> = entities
            .iter()
            .map(|e| QuantizedEntity::quantize(tick, e))
            .collect();
        entities.sort_by_key(|e| e.id);
        entities.dedup_by_key(|e| e.id);
        Self { tick, entities }
    }

    pub fn to_update(&self, tick_hz: u32) -> WorldUpdate {
        WorldUpdate {
            tick: self.tick,
            entities: self
                .entities
                .iter()
                .map(|e| e.predicted(self.tick, tick_hz).dequantize())
                .collect(),
        }
    }
}

/// Encodes `current` (every entity at its tick) against `baseline` (used only if older), or
/// whole without one, and returns what the decoder will make of it: `current`, except entities
/// left to their prediction, which keep their anchor.
pub fn encode(
    current: &Snapshot,
    baseline: Option<&Snapshot>,
    tick_hz: u32,
    out: &mut Vec<u8>,
) -> Snapshot {
    put_varint(out, current.tick);
    let Some(base) = baseline.filter(|b| b.tick < current.tick) else {
        put_varint(out, 0);
        put_varint(out, 0);
        put_varint(out, current.entities.len() as u64);
        let mut previous = None;
        for e in &current.entities {
            put_entity(out, &mut previous, e, None);
        }
        return current.clone();
    };
    put_varint(out, current.tick - base.tick);

    // One merge of two sorted lists finds the removed, the changed and the new.
    let mut decoded = Vec::with_capacity(current.entities.len());
    let mut removed = Vec::new();
    let mut changed: Vec<(&QuantizedEntity, Option<QuantizedEntity>)> = Vec::new();
    let (mut b, mut c) = (0, 0);
    loop {
        match (base.entities.get(b), current.entities.get(c)) {
            (Some(o), Some(n)) if o.id == n.id => {
                let predicted = o.predicted(current.tick, tick_hz);
                if n.near(&predicted) {
                    decoded.push(*o);
                } else {
                    changed.push((n, (n.kind == o.kind).then_some(predicted)));
                    decoded.push(*n);
                }
                b += 1;
                c += 1;
            }
            (Some(o), n) if n.is_none_or(|n| o.id < n.id) => {
                removed.push(o.id);
                b += 1;
            }
            (_, Some(n)) => {
                changed.push((n, None));
                decoded.push(*n);
                c += 1;
            }
            _ => break,
        }
    }
    put_varint(out, removed.len() as u64);
    let mut previous = None;
    for id in removed {
        put_id(out, &mut previous, id);
    }
    put_varint(out, changed.len() as u64);
    let mut previous = None;
    for (e, reference) in changed {
        put_entity(out, &mut previous, e, reference.as_ref());
    }
    Snapshot {
        tick: current.tick,
        entities: decoded,
    }
}

/// Decodes an update; `baseline(tick)` gives the snapshots held.
pub fn decode<'a>(
    bytes: &[u8],
    tick_hz: u32,
    baseline: impl FnOnce(u64) -> Option<&'a Snapshot>,
) -> Result<Snapshot, CodecError> {
    let mut r = Reader { bytes, at: 0 };
    let tick = r.varint()?;
    let age = r.varint()?;
    let base = if age == 0 {
        None
    } else {
        let base_tick = tick
            .checked_sub(age)
            .ok_or(CodecError::BadBaselineAge { tick, age })?;
        Some(baseline(base_tick).ok_or(CodecError::MissingBaseline(base_tick))?)
    };
    let removed_count = r.count()?;
    let mut removed = Vec::with_capacity(removed_count);
    let mut previous = None;
    for _ in 0..removed_count {
        removed.push(r.id(&mut previous)?);
    }
    let changed_count = r.count()?;
    let base_entities = base.map_or(&[][..], |b| &b.entities[..]);
    let mut entities = Vec::with_capacity(base_entities.len() + changed_count);
    // Baseline entities not changed are dropped if removed, else kept as they were.
    let keep = |o: &QuantizedEntity, gone: &mut usize, out: &mut Vec<QuantizedEntity>| {
        if removed.get(*gone) == Some(&o.id) {
            *gone += 1;
        } else {
            out.push(*o);
        }
    };
    let (mut b, mut gone) = (0, 0);
    let mut previous = None;
    for _ in 0..changed_count {
        let id = r.id(&mut previous)?;
        while let Some(o) = base_entities.get(b).filter(|o| o.id < id) {
            keep(o, &mut gone, &mut entities);
            b += 1;
        }
        let in_base = base_entities.get(b).filter(|o| o.id == id);
        if in_base.is_some() {
            b += 1;
            if removed.get(gone) == Some(&id) {
                return Err(CodecError::ChangedAndRemoved(id));
            }
        }
        let predicted = in_base.map(|o| o.predicted(tick, tick_hz));
        entities.push(r.entity(id, tick, predicted)?);
    }
    for o in &base_entities[b..] {
        keep(o, &mut gone, &mut entities);
    }
    if let Some(id) = removed.get(gone) {
        return Err(CodecError::NotInBaseline(*id));
    }
    if entities.len() > MAX_ENTITIES {
        return Err(CodecError::TooMany(entities.len() as u64));
    }
    if r.at != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - r.at));
    }
    Ok(Snapshot { tick, entities })
}

/// The server's side of one player's state stream.
#[derive(Debug)]
pub struct StateEncoder {
    tick_hz: u32,
    /// What the client holds (or will) after each update sent, oldest first.
    sent: VecDeque<Snapshot>,
    acked: Option<u64>,
}

impl StateEncoder {
    pub fn new(tick_hz: u32) -> Self {
        Self {
            tick_hz,
            sent: VecDeque::with_capacity(HISTORY),
            acked: None,
        }
    }

    /// The client decoded the update of `tick`: later updates may be encoded against it.
    pub fn acknowledge(&mut self, tick: u64) {
        if self.acked.is_none_or(|a| a < tick) && self.sent.iter().any(|s| s.tick == tick) {
            self.acked = Some(tick);
            // Older updates can never be a baseline again.
            while self.sent.front().is_some_and(|s| s.tick < tick) {
                self.sent.pop_front();
            }
        }
    }

    /// Encodes this tick's view for the player. Ticks must increase; a repeated or older one is
    /// sent whole.
    pub fn encode(&mut self, tick: u64, entities: &[SeenEntity]) -> Vec<u8> {
        self.encode_snapshot(Snapshot::quantize(tick, entities))
    }

    /// [`StateEncoder::encode`] of a view already quantized at its tick and in id order (a
    /// server quantizes each entity once per tick and hands every player its share). Ids must
    /// be strictly ascending.
    pub fn encode_snapshot(&mut self, current: Snapshot) -> Vec<u8> {
        debug_assert!(
            current.entities.windows(2).all(|w| w[0].id < w[1].id),
            "a view in strictly ascending id order"
        );
        let tick = current.tick;
        let entities = &current.entities;
        let newer = self.sent.back().is_none_or(|s| s.tick < tick);
        let baseline = self
            .acked
            .filter(|_| newer)
            .and_then(|a| self.sent.iter().find(|s| s.tick == a));
        let mut out = Vec::with_capacity(16 + entities.len() * 4);
        let decoded = encode(&current, baseline, self.tick_hz, &mut out);
        if newer {
            if self.sent.len() == HISTORY {
                self.sent.pop_front();
            }
            self.sent.push_back(decoded);
        }
        out
    }
}

/// The client's side: the updates it has decoded, as baselines for the next ones.
#[derive(Debug)]
pub struct StateDecoder {
    tick_hz: u32,
    received: VecDeque<Snapshot>,
}

impl StateDecoder {
    pub fn new(tick_hz: u32) -> Self {
        Self {
            tick_hz,
            received: VecDeque::with_capacity(2 * HISTORY),
        }
    }

    /// Decodes an update. Returns `Ok(None)` for one not newer than the newest decoded (it
    /// arrived late, and is of no use). The caller acknowledges the tick of what it gets.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Option<&Snapshot>, CodecError> {
        let snapshot = decode(bytes, self.tick_hz, |t| {
            self.received.iter().rev().find(|s| s.tick == t)
        })?;
        if self
            .received
            .back()
            .is_some_and(|s| s.tick >= snapshot.tick)
        {
            return Ok(None);
        }
        if self.received.len() == 2 * HISTORY {
            self.received.pop_front();
        }
        self.received.push_back(snapshot);
        Ok(self.received.back())
    }
}

fn steps(v: f32, per_unit: f32) -> i32 {
    if v.is_finite() {
        // `as` saturates at the i32 range.
        (v * per_unit).round() as i32
    } else {
        0
    }
}

fn saturate(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `n / d` rounded half away from zero (`d > 0`).
fn div_round(n: i64, d: i64) -> i64 {
    if n >= 0 {
        (n + d / 2) / d
    } else {
        -((-n + d / 2) / d)
    }
}

/// Ids ascend: the first as is, then each as its distance from the one before.
fn put_id(out: &mut Vec<u8>, previous: &mut Option<u64>, id: u64) {
    put_varint(out, previous.map_or(id, |p| id - p));
    *previous = Some(id);
}

fn put_entity(
    out: &mut Vec<u8>,
    previous: &mut Option<u64>,
    e: &QuantizedEntity,
    reference: Option<&QuantizedEntity>,
) {
    put_id(out, previous, e.id);
    let zero = QuantizedEntity::default();
    let r = reference.unwrap_or(&zero);
    let residuals = [
        (FIELD_PX, i64::from(e.pos[0]) - i64::from(r.pos[0])),
        (FIELD_PY, i64::from(e.pos[1]) - i64::from(r.pos[1])),
        (FIELD_VX, i64::from(e.vel[0]) - i64::from(r.vel[0])),
        (FIELD_VY, i64::from(e.vel[1]) - i64::from(r.vel[1])),
        (FIELD_ANGLE, angle_residual(e.angle, r.angle)),
        (FIELD_SPIN, i64::from(e.spin) - i64::from(r.spin)),
    ];
    let mut mask = if reference.is_none() { NEW_ENTITY } else { 0 };
    for (bit, residual) in residuals {
        if residual != 0 {
            mask |= bit;
        }
    }
    out.push(mask);
    if reference.is_none() {
        out.push(e.kind);
    }
    for (bit, residual) in residuals {
        if mask & bit != 0 {
            put_varint(out, zigzag(residual));
        }
    }
}

/// The shorter way round from `from` to `to`, in steps.
fn angle_residual(to: u16, from: u16) -> i64 {
    let steps = i64::from(ANGLE_STEPS);
    let d = (i64::from(to) - i64::from(from)).rem_euclid(steps);
    if d >= steps / 2 { d - steps } else { d }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(CodecError::Truncated(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.at;
        varint::read(self.bytes, &mut self.at).map_err(|e| match e {
            VarintError::Truncated => CodecError::Truncated(self.at),
            VarintError::Overflow => CodecError::VarintOverflow(start),
        })
    }

    /// A count of entries, each at least one byte: more than the bytes left is malformed, and
    /// refusing it here keeps a forged count from allocating.
    fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        if n > MAX_ENTITIES as u64 {
            return Err(CodecError::TooMany(n));
        }
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(CodecError::Truncated(self.bytes.len()));
        }
        Ok(n as usize)
    }

    fn id(&mut self, previous: &mut Option<u64>) -> Result<u64, CodecError> {
        let v = self.varint()?;
        let id = match *previous {
            None => v,
            Some(_) if v == 0 => return Err(CodecError::Unordered),
            Some(p) => p.checked_add(v).ok_or(CodecError::Unordered)?,
        };
        *previous = Some(id);
        Ok(id)
    }

    fn entity(
        &mut self,
        id: u64,
        tick: u64,
        predicted: Option<QuantizedEntity>,
    ) -> Result<QuantizedEntity, CodecError> {
        let mask = self.byte()?;
        if mask & !KNOWN_BITS != 0 {
            return Err(CodecError::BadMask(mask));
        }
        let reference = if mask & NEW_ENTITY != 0 {
            QuantizedEntity {
                kind: self.byte()?,
                ..QuantizedEntity::default()
            }
        } else {
            predicted.ok_or(CodecError::NotInBaseline(id))?
        };
        let mut field = |bit: u8, base: i64| -> Result<i64, CodecError> {
            if mask & bit == 0 {
                return Ok(base);
            }
            let residual = unzigzag(self.varint()?);
            base.checked_add(residual).ok_or(CodecError::OutOfRange(id))
        };
        let small = |v: i64| i32::try_from(v).map_err(|_| CodecError::OutOfRange(id));
        let px = small(field(FIELD_PX, i64::from(reference.pos[0]))?)?;
        let py = small(field(FIELD_PY, i64::from(reference.pos[1]))?)?;
        let vx = small(field(FIELD_VX, i64::from(reference.vel[0]))?)?;
        let vy = small(field(FIELD_VY, i64::from(reference.vel[1]))?)?;
        let angle = field(FIELD_ANGLE, i64::from(reference.angle))?;
        let spin = small(field(FIELD_SPIN, i64::from(reference.spin))?)?;
        Ok(QuantizedEntity {
            id,
            kind: reference.kind,
            pos: [px, py],
            vel: [vx, vy],
            angle: angle.rem_euclid(i64::from(ANGLE_STEPS)) as u16,
            spin,
            at: tick,
        })
    }
}

#[cfg(test)]
mod tests;
