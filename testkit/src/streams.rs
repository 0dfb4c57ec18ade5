//! A sector-stream subscriber for the in-process fleet: it joins every shard's hub, wants every
//! leaf of the placement everywhere (a shard serves what it owns of that), merges the frames in
//! a [`SectorView`] and compares the view with the authority's mirror after each tick.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use sidereal_core::protocol::FrameReader;
use sidereal_core::sector_view::{SectorView, Source};
use sidereal_core::stream::PublisherMessage;
use sidereal_core::{EntityId, SectorId};
use sidereal_shard::streams::{Frame, HubEvent, MAX_QUEUED_FRAMES};

use crate::fleet::{Fleet, TICK_HZ};

const SUBSCRIBER: u64 = 1;

pub struct StreamWatcher {
    pub view: SectorView,
    /// Per fleet shard slot: the frames it sends this watcher (`None`: not joined, or dead).
    joined: Vec<Option<Receiver<Frame>>>,
    start: Instant,
    /// Bytes of every frame received, and entity updates in shared frames.
    pub bytes: u64,
    pub frames: u64,
    /// Every entity the view has held: once shown, an entity the mirror has must stay shown.
    shown: BTreeSet<EntityId>,
}

impl StreamWatcher {
    pub fn new() -> Self {
        Self {
            view: SectorView::default(),
            joined: Vec::new(),
            start: Instant::now(),
            bytes: 0,
            frames: 0,
            shown: BTreeSet::new(),
        }
    }

    /// The fleet's tick as a clock, for the view's transit timeout.
    fn now(&self, fleet: &Fleet) -> Instant {
        self.start + Duration::from_secs_f64(fleet.tick as f64 / f64::from(TICK_HZ))
    }

    /// Joins shards not joined yet and tells every shard the placement's leaves; call after
    /// each placement.
    pub fn subscribe(&mut self, fleet: &Fleet) {
        let leaves: Vec<SectorId> = fleet
            .authority
            .placement()
            .sectors
            .keys()
            .copied()
            .collect();
        self.joined.resize_with(fleet.shards.len(), || None);
        for (i, s) in fleet.shards.iter().enumerate() {
            let Some(s) = s else { continue };
            if self.joined[i].is_none() {
                let (frames, rx) = crossbeam_channel::bounded(MAX_QUEUED_FRAMES);
                let _ = s.streams.send(HubEvent::Joined {
                    subscriber: SUBSCRIBER,
                    name: "watcher".into(),
                    frames,
                });
                self.joined[i] = Some(rx);
            }
            let _ = s.streams.send(HubEvent::Subscribe {
                subscriber: SUBSCRIBER,
                sectors: leaves.clone(),
            });
        }
    }

    /// Applies every frame the shards sent; a dead shard's connection is lost.
    pub fn pump(&mut self, fleet: &Fleet) -> Result<(), String> {
        let now = self.now(fleet);
        for i in 0..self.joined.len() {
            let Some(rx) = &self.joined[i] else { continue };
            let conn = i as u64 + 1;
            let frames: Vec<Frame> = rx.try_iter().collect();
            for bytes in frames {
                self.bytes += bytes.len() as u64;
                let mut reader = FrameReader::default();
                reader.push(&bytes);
                let msg = reader
                    .next_frame::<PublisherMessage>()
                    .map_err(|e| e.to_string())?
                    .ok_or("a whole frame")?;
                if let PublisherMessage::Sector(f) = msg {
                    self.frames += 1;
                    self.view
                        .apply(conn, &f, now)
                        .map_err(|e| format!("tick {}: shard {i}: {e}", fleet.tick))?;
                }
            }
            if fleet.shards[i].is_none() {
                self.joined[i] = None;
                self.view.connection_lost(conn, now);
            }
        }
        self.view.expire(now);
        self.shown.extend(self.view.iter().map(|e| e.id));
        Ok(())
    }

    /// The view holds exactly the mirror's entities, each once, and those it gets from a stream
    /// at the very state the mirror has (the same quantized update of the same tick). The one
    /// exception: an entity not yet adopted by its first owner (seeded, restored) that no
    /// stream has shown yet.
    pub fn check_against_mirror(&self, fleet: &Fleet) -> Result<(), String> {
        let mirror = fleet.authority.mirror();
        let held: BTreeSet<EntityId> = self.view.iter().map(|e| e.id).collect();
        let known: BTreeSet<EntityId> = mirror.iter().map(|(id, _)| *id).collect();
        let missing = known
            .difference(&held)
            .find(|id| self.shown.contains(id) || mirror.get(**id).is_some_and(|r| !r.in_transit));
        if let Some(id) = missing {
            return Err(format!(
                "tick {}: {id} is in the mirror ({:?}) but not in the view",
                fleet.tick,
                mirror.get(*id).map(|r| (&r.owner, r.in_transit))
            ));
        }
        if let Some(id) = held.difference(&known).next() {
            return Err(format!(
                "tick {}: {id} is in the view ({:?}) but not in the mirror",
                fleet.tick,
                self.view.get(*id)
            ));
        }
        for e in self.view.iter() {
            let r = mirror.get(e.id).expect("same sets");
            if matches!(e.source, Source::Stream { .. }) && !r.in_transit {
                let (a, b) = (e.state().pos, r.snapshot.state.pos);
                let d = (a[0] - b[0]).hypot(a[1] - b[1]);
                if d > 0.05 || e.epoch != r.epoch {
                    return Err(format!(
                        "tick {}: {} in the view at {a:?} epoch {}, in the mirror at {b:?} epoch {}",
                        fleet.tick, e.id, e.epoch, r.epoch
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Default for StreamWatcher {
    fn default() -> Self {
        Self::new()
    }
}
