//! A subscriber's merged view of the sector streams it follows ([`crate::stream`]): plain data,
//! no sockets, so the rules that keep it right across handovers are tested in microseconds.
//!
//! The rules:
//! - An entity is held once, by id, with the epoch and the stream (connection, sector) it came
//!   from last. An update at an older epoch than the one held is refused (a late frame of a
//!   previous owner); an equal or newer one replaces what is held and moves its source.
//! - A departure acts only on an entity still held from the stream that reports it (it may have
//!   shown up elsewhere already). An entity that ended is removed; one that moved on (another
//!   sector, another owner, a placement change) stays, at its last state and *in transit*, until
//!   its next stream shows it or `transit_timeout` passes, unless where it went is outside what
//!   the subscriber wants. So an entity crossing between shards is neither shown twice nor lost
//!   for the ticks between the old owner letting go and the new one adopting it.
//! - When a sector's stream ends because the sector moved (placement) or its shard died, its
//!   entities go in transit the same way: the next owner's stream brings them back at a newer
//!   epoch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::codec::{CodecError, Quantized, UpdateDecoder};
use crate::geometry::{Bounds, SectorId};
use crate::ids::{EntityId, EntityKind, EntityState, Epoch};
use crate::stream::SectorFrame;

/// Names one connection to one shard (the subscriber numbers them).
pub type ConnId = u64;

/// Where an entity's state comes from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stream {
        conn: ConnId,
        sector: SectorId,
    },
    /// Left its stream alive; waiting for the next one to show it.
    InTransit {
        since: Instant,
    },
}

/// One entity as the subscriber holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewedEntity {
    pub id: EntityId,
    pub kind: EntityKind,
    pub epoch: Epoch,
    pub state: Quantized,
    /// The publishing shard's tick of the last update.
    pub tick: u64,
    pub source: Source,
}

impl ViewedEntity {
    pub fn state(&self) -> EntityState {
        self.state.to_state()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ViewError {
    #[error("bad update batch: {0}")]
    Codec(#[from] CodecError),
    #[error("update for {0}, which never entered this sector's stream")]
    UnknownEntity(EntityId),
}

/// What the view did, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewStats {
    pub frames: u64,
    pub update_bytes: u64,
    pub entity_updates: u64,
    /// Updates refused for carrying an older epoch than the one held.
    pub stale_refused: u64,
    /// Entities that waited in transit longer than the timeout and were dropped.
    pub expired: u64,
    /// Of those, ships and asteroids (not projectiles, which live for seconds).
    pub expired_lasting: u64,
}

/// Per (connection, sector): the codec's baselines and the kinds of the entities in it.
#[derive(Debug, Default)]
struct StreamState {
    decoder: UpdateDecoder,
    kinds: FxHashMap<EntityId, EntityKind>,
}

#[derive(Debug)]
pub struct SectorView {
    entities: FxHashMap<EntityId, ViewedEntity>,
    streams: HashMap<(ConnId, SectorId), StreamState>,
    /// Areas the subscriber wants; `None`: everywhere.
    wanted: Option<Vec<Bounds>>,
    pub transit_timeout: Duration,
    pub stats: ViewStats,
}

/// Long enough for a dead shard's sectors to be re-homed (link timeout, then a placement).
pub const DEFAULT_TRANSIT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for SectorView {
    fn default() -> Self {
        Self::new(DEFAULT_TRANSIT_TIMEOUT)
    }
}

impl SectorView {
    pub fn new(transit_timeout: Duration) -> Self {
        Self {
            entities: FxHashMap::default(),
            streams: HashMap::new(),
            wanted: None,
            transit_timeout,
            stats: ViewStats::default(),
        }
    }

    /// The areas the subscriber wants (`None`: everywhere): an entity that moves out of them
    /// is dropped rather than waited for.
    pub fn set_wanted(&mut self, areas: Option<Vec<Bounds>>) {
        self.wanted = areas;
    }

    fn wants(&self, pos: [f32; 2]) -> bool {
        let p = crate::Point::new(pos[0].into(), pos[1].into());
        self.wanted
            .as_ref()
            .is_none_or(|areas| areas.iter().any(|b| b.contains(p)))
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub fn get(&self, id: EntityId) -> Option<&ViewedEntity> {
        self.entities.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ViewedEntity> {
        self.entities.values()
    }

    /// Entities waiting in transit now.
    pub fn in_transit(&self) -> usize {
        self.entities
            .values()
            .filter(|e| matches!(e.source, Source::InTransit { .. }))
            .count()
    }

    /// Applies one sector frame from connection `conn`. A frame that does not decode, or updates
    /// an entity that never entered, changes no entity; the caller drops the connection (the
    /// shard broke protocol), which puts what it streamed in transit.
    pub fn apply(
        &mut self,
        conn: ConnId,
        frame: &SectorFrame,
        now: Instant,
    ) -> Result<(), ViewError> {
        let key = (conn, frame.sector);
        let here = Source::Stream {
            conn,
            sector: frame.sector,
        };
        let mut stream = if frame.opened {
            StreamState::default()
        } else {
            self.streams.remove(&key).unwrap_or_default()
        };
        for d in &frame.left {
            stream.decoder.forget(d.id);
            stream.kinds.remove(&d.id);
        }
        stream.kinds.extend(frame.entered.iter().copied());
        let decoded = if frame.updates.is_empty() {
            Vec::new()
        } else {
            match stream.decoder.decode(&frame.updates) {
                Ok((_, updates)) => updates,
                Err(e) => {
                    // Unchanged: put the stream back as it was (bar the departures, which the
                    // caller's disconnect supersedes).
                    self.streams.insert(key, stream);
                    return Err(e.into());
                }
            }
        };
        if let Some(u) = decoded.iter().find(|u| !stream.kinds.contains_key(&u.id)) {
            return Err(ViewError::UnknownEntity(u.id));
        }
        self.stats.frames += 1;
        self.stats.update_bytes += frame.updates.len() as u64;
        self.stats.entity_updates += decoded.len() as u64;
        if frame.opened {
            // A fresh snapshot of the sector: what this stream held and no longer shows moved
            // on while the stream was down (or never was: the timeout takes care of it).
            self.detach(|s| s == here, now);
        }
        for d in &frame.left {
            let applies = self.entities.get(&d.id).is_some_and(|e| {
                e.source == here
                    // It ended on the owner it was on its way to, before that owner streamed it.
                    || (d.to.is_none()
                        && matches!(e.source, Source::InTransit { .. })
                        && d.epoch >= e.epoch)
            });
            if !applies {
                continue;
            }
            match d.to {
                Some(to) if self.wants(to) => {
                    if let Some(e) = self.entities.get_mut(&d.id) {
                        e.source = Source::InTransit { since: now };
                    }
                }
                _ => {
                    self.entities.remove(&d.id);
                }
            }
        }
        let tick = frame.tick;
        for u in decoded {
            let kind = stream.kinds[&u.id];
            match self.entities.get_mut(&u.id) {
                Some(e) if u.epoch < e.epoch => self.stats.stale_refused += 1,
                Some(e) => {
                    *e = ViewedEntity {
                        id: u.id,
                        kind,
                        epoch: u.epoch,
                        state: u.state,
                        tick,
                        source: here,
                    };
                }
                None => {
                    self.entities.insert(
                        u.id,
                        ViewedEntity {
                            id: u.id,
                            kind,
                            epoch: u.epoch,
                            state: u.state,
                            tick,
                            source: here,
                        },
                    );
                }
            }
        }
        self.streams.insert(key, stream);
        Ok(())
    }

    /// Every entity whose source matches goes in transit.
    fn detach(&mut self, from: impl Fn(Source) -> bool, now: Instant) {
        for e in self.entities.values_mut() {
            if from(e.source) {
                e.source = Source::InTransit { since: now };
            }
        }
    }

    /// The sector's stream on `conn` ended but the sector is still wanted (it moved to another
    /// shard, or the shard stopped owning it): its entities wait for the next owner's stream.
    pub fn sector_moved(&mut self, conn: ConnId, sector: SectorId, now: Instant) {
        self.streams.remove(&(conn, sector));
        let here = Source::Stream { conn, sector };
        self.detach(|s| s == here, now);
    }

    /// The sector is no longer wanted: its entities go.
    pub fn sector_dropped(&mut self, conn: ConnId, sector: SectorId) {
        self.streams.remove(&(conn, sector));
        let here = Source::Stream { conn, sector };
        self.entities.retain(|_, e| e.source != here);
    }

    /// The connection is gone (the shard died or stopped answering): everything it streamed
    /// waits for the sectors' next owners.
    pub fn connection_lost(&mut self, conn: ConnId, now: Instant) {
        self.streams.retain(|(c, _), _| *c != conn);
        self.detach(
            |s| matches!(s, Source::Stream { conn: c, .. } if c == conn),
            now,
        );
    }

    /// Drops what waited in transit longer than the timeout; how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = self.transit_timeout;
        let (mut expired, mut lasting) = (0, 0);
        self.entities.retain(|_, e| match e.source {
            Source::InTransit { since } if now.saturating_duration_since(since) >= timeout => {
                expired += 1;
                lasting += u64::from(e.kind != EntityKind::Projectile);
                false
            }
            _ => true,
        });
        self.stats.expired += expired as u64;
        self.stats.expired_lasting += lasting;
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::UpdateEncoder;
    use crate::stream::Departure;

    const A: ConnId = 1;
    const B: ConnId = 2;

    fn sector(x: i64) -> SectorId {
        SectorId::new(0, x, 0).unwrap()
    }

    fn state(x: f32) -> EntityState {
        EntityState {
            pos: [x, 10.0],
            vel: [5.0, 0.0],
            angle: 0.0,
            ang_vel: 0.0,
        }
    }

    /// One publisher's sector stream, as a shard would encode it.
    struct Pub {
        sector: SectorId,
        enc: UpdateEncoder,
        members: Vec<EntityId>,
    }

    impl Pub {
        fn new(x: i64) -> Self {
            Self {
                sector: sector(x),
                enc: UpdateEncoder::default(),
                members: Vec::new(),
            }
        }

        /// This tick's frame: `now` is every (id, epoch, x) in the sector.
        fn frame(
            &mut self,
            tick: u64,
            now: &[(u64, Epoch, f32)],
            left: &[Departure],
        ) -> SectorFrame {
            for d in left {
                self.enc.forget(d.id);
            }
            let entered = now
                .iter()
                .map(|&(id, ..)| EntityId(id))
                .filter(|id| !self.members.contains(id))
                .map(|id| (id, EntityKind::Asteroid))
                .collect();
            self.members = now.iter().map(|&(id, ..)| EntityId(id)).collect();
            let mut batch: Vec<_> = now
                .iter()
                .map(|&(id, epoch, x)| (EntityId(id), epoch, state(x)))
                .collect();
            SectorFrame {
                sector: self.sector,
                tick,
                opened: tick == 1,
                entered,
                left: left.to_vec(),
                updates: self.enc.encode(tick, &mut batch).unwrap_or_default(),
            }
        }
    }

    fn moved(id: u64, x: f32) -> Departure {
        Departure {
            id: EntityId(id),
            epoch: 1,
            to: Some([x, 10.0]),
        }
    }

    fn ended(id: u64, epoch: Epoch) -> Departure {
        Departure {
            id: EntityId(id),
            epoch,
            to: None,
        }
    }

    #[test]
    fn an_entity_that_ends_on_its_new_owner_before_being_streamed_stops_being_waited_for() {
        let t0 = Instant::now();
        let mut view = SectorView::default();
        let (mut a, mut b) = (Pub::new(0), Pub::new(1));
        view.apply(A, &a.frame(1, &[(7, 1, 990.0)], &[]), t0)
            .unwrap();
        view.apply(B, &b.frame(1, &[], &[]), t0).unwrap();
        view.apply(A, &a.frame(2, &[], &[moved(7, 1001.0)]), t0)
            .unwrap();
        assert_eq!(view.in_transit(), 1);
        // An ending at an older epoch than held is someone else's news.
        view.apply(B, &b.frame(3, &[], &[ended(7, 0)]), t0).unwrap();
        assert_eq!(view.in_transit(), 1);
        view.apply(B, &b.frame(4, &[], &[ended(7, 2)]), t0).unwrap();
        assert!(view.is_empty(), "no ghost waits for the timeout");
    }

    #[test]
    fn an_entity_handed_between_shards_is_held_once_and_never_missing() {
        let t0 = Instant::now();
        let mut view = SectorView::default();
        let (mut a, mut b) = (Pub::new(0), Pub::new(1));
        view.apply(A, &a.frame(1, &[(7, 1, 990.0), (8, 1, 500.0)], &[]), t0)
            .unwrap();
        view.apply(B, &b.frame(1, &[], &[]), t0).unwrap();
        assert_eq!(view.len(), 2);
        // Tick 2: shard A hands 7 over (it crossed into B's sector); B has not adopted it yet.
        view.apply(A, &a.frame(2, &[(8, 1, 501.0)], &[moved(7, 1001.0)]), t0)
            .unwrap();
        let seven = view.get(EntityId(7)).unwrap();
        assert!(
            matches!(seven.source, Source::InTransit { .. }),
            "held in transit, not lost"
        );
        // Tick 4: B adopted it at epoch 2.
        view.apply(B, &b.frame(4, &[(7, 2, 1010.0)], &[]), t0)
            .unwrap();
        let seven = view.get(EntityId(7)).unwrap();
        assert_eq!(
            (seven.epoch, seven.source),
            (
                2,
                Source::Stream {
                    conn: B,
                    sector: sector(1)
                }
            )
        );
        assert_eq!(view.len(), 2, "one copy");
    }

    #[test]
    fn a_late_frame_of_the_previous_owner_cannot_bring_back_an_old_epoch() {
        let t0 = Instant::now();
        let mut view = SectorView::default();
        let (mut a, mut b) = (Pub::new(0), Pub::new(1));
        // B's adoption arrives before A's last frames (two connections, no order between them).
        view.apply(B, &b.frame(1, &[(7, 2, 1010.0)], &[]), t0)
            .unwrap();
        view.apply(A, &a.frame(1, &[(7, 1, 990.0)], &[]), t0)
            .unwrap();
        assert_eq!(view.stats.stale_refused, 1);
        view.apply(A, &a.frame(2, &[], &[moved(7, 1001.0)]), t0)
            .unwrap();
        let seven = view.get(EntityId(7)).unwrap();
        assert_eq!(seven.epoch, 2);
        assert_eq!(
            seven.source,
            Source::Stream {
                conn: B,
                sector: sector(1)
            },
            "A's departure is not B's"
        );
        assert!((seven.state().pos[0] - 1010.0).abs() < 0.1);
    }

    #[test]
    fn moving_between_two_sectors_of_one_shard_keeps_the_entity_in_either_order() {
        let t0 = Instant::now();
        for entered_first in [false, true] {
            let mut view = SectorView::default();
            let (mut s0, mut s1) = (Pub::new(0), Pub::new(1));
            view.apply(A, &s0.frame(1, &[(7, 3, 990.0)], &[]), t0)
                .unwrap();
            view.apply(A, &s1.frame(1, &[], &[]), t0).unwrap();
            let left = s0.frame(2, &[], &[moved(7, 1001.0)]);
            let entered = s1.frame(2, &[(7, 3, 1001.0)], &[]);
            let order = if entered_first {
                [&entered, &left]
            } else {
                [&left, &entered]
            };
            for f in order {
                view.apply(A, f, t0).unwrap();
            }
            let seven = view.get(EntityId(7)).expect("still there");
            assert_eq!(
                seven.source,
                Source::Stream {
                    conn: A,
                    sector: sector(1)
                }
            );
        }
    }

    #[test]
    fn ended_and_unwanted_entities_go_and_a_transit_too_long_expires() {
        let t0 = Instant::now();
        let mut view = SectorView::new(Duration::from_secs(2));
        view.set_wanted(Some(vec![sector(0).bounds(), sector(1).bounds()]));
        let mut a = Pub::new(0);
        view.apply(
            A,
            &a.frame(1, &[(1, 1, 10.0), (2, 1, 20.0), (3, 1, 30.0)], &[]),
            t0,
        )
        .unwrap();
        let frame = a.frame(
            2,
            &[],
            &[
                ended(1, 1),
                moved(2, -5.0),   // into an unwanted sector
                moved(3, 1005.0), // into a wanted one
            ],
        );
        view.apply(A, &frame, t0).unwrap();
        assert_eq!(
            view.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![EntityId(3)]
        );
        assert_eq!(view.expire(t0 + Duration::from_secs(1)), 0);
        assert_eq!(view.expire(t0 + Duration::from_secs(3)), 1);
        assert!(view.is_empty());
    }

    #[test]
    fn a_lost_shard_or_a_moved_sector_leaves_its_entities_waiting_and_a_dropped_one_removes_them() {
        let t0 = Instant::now();
        let mut view = SectorView::default();
        let (mut a, mut b) = (Pub::new(0), Pub::new(1));
        view.apply(A, &a.frame(1, &[(1, 1, 10.0)], &[]), t0)
            .unwrap();
        view.apply(A, &b.frame(1, &[(2, 1, 1010.0)], &[]), t0)
            .unwrap();
        view.connection_lost(A, t0);
        assert_eq!(view.in_transit(), 2);
        // The sectors' new owner opens them with the entities at newer epochs.
        let mut a2 = Pub::new(0);
        view.apply(B, &a2.frame(1, &[(1, 2, 11.0)], &[]), t0)
            .unwrap();
        assert_eq!(view.in_transit(), 1);
        view.sector_moved(B, sector(0), t0);
        assert_eq!(view.in_transit(), 2);
        let mut b2 = Pub::new(1);
        view.apply(B, &b2.frame(1, &[(2, 2, 1011.0)], &[]), t0)
            .unwrap();
        view.sector_dropped(B, sector(1));
        assert!(view.get(EntityId(2)).is_none());
        assert_eq!(view.len(), 1);
    }

    #[test]
    fn a_broken_frame_changes_nothing_and_an_update_without_entry_is_refused() {
        let t0 = Instant::now();
        let mut view = SectorView::default();
        let mut a = Pub::new(0);
        view.apply(A, &a.frame(1, &[(1, 1, 10.0)], &[]), t0)
            .unwrap();
        let mut bad = a.frame(2, &[(1, 1, 50.0)], &[]);
        bad.updates.truncate(bad.updates.len() - 1);
        assert!(matches!(view.apply(A, &bad, t0), Err(ViewError::Codec(_))));
        assert!((view.get(EntityId(1)).unwrap().state().pos[0] - 10.0).abs() < 0.1);
        // A keyframe for an id the frame does not say entered.
        let mut other = Pub::new(0);
        let mut stray = other.frame(1, &[(9, 1, 1.0)], &[]);
        stray.entered.clear();
        assert_eq!(
            view.apply(B, &stray, t0),
            Err(ViewError::UnknownEntity(EntityId(9)))
        );
        assert!(view.get(EntityId(9)).is_none());
    }
}
