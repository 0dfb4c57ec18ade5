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

pub struct StreamWatcher {
    /// Its subscriber number at every shard.
    id: u64,
    /// Whole sectors, or only the band near their edges.
    band: Option<f32>,
    pub view: SectorView,
    /// Per fleet shard slot: the frames it sends this watcher (`None`: not joined, or dead).
    joined: Vec<Option<Receiver<Frame>>>,
    start: Instant,
    /// Bytes of every frame received, and entity updates in shared frames.
    pub bytes: u64,
    pub frames: u64,
    /// Every entity the view has held: once shown, an entity the mirror has must stay shown.
    shown: BTreeSet<EntityId>,
    /// The leaves subscribed last time.
    leaves: Vec<SectorId>,
}

impl StreamWatcher {
    pub fn new() -> Self {
        Self {
            id: 1,
            band: None,
            view: SectorView::default(),
            joined: Vec::new(),
            start: Instant::now(),
            bytes: 0,
            frames: 0,
            shown: BTreeSet::new(),
            leaves: Vec::new(),
        }
    }

    /// A watcher (another subscriber) of only the entities within `band` of each sector's
    /// edges, as a shard following its neighbours subscribes.
    pub fn of_band(band: f32) -> Self {
        Self {
            id: 2,
            band: Some(band),
            ..Self::new()
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
        // Sectors gone from placement (split, merged): what their streams showed waits in
        // transit for the next stream to show it (a real subscriber does the same when the
        // shard says it let the sector go; a band may never show it again).
        let now = self.now(fleet);
        for gone in self.leaves.iter().filter(|s| !leaves.contains(s)) {
            for (i, joined) in self.joined.iter().enumerate() {
                if joined.is_some() {
                    self.view.sector_moved(i as u64 + 1, *gone, now);
                }
            }
        }
        self.leaves = leaves.clone();
        self.joined.resize_with(fleet.shards.len(), || None);
        for (i, s) in fleet.shards.iter().enumerate() {
            let Some(s) = s else { continue };
            if self.joined[i].is_none() {
                let (frames, rx) = crossbeam_channel::bounded(MAX_QUEUED_FRAMES);
                let _ = s.streams.send(HubEvent::Joined {
                    subscriber: self.id,
                    name: format!("watcher-{}", self.id),
                    frames,
                });
                self.joined[i] = Some(rx);
            }
            let _ = s.streams.send(HubEvent::Subscribe {
                subscriber: self.id,
                sectors: leaves.clone(),
                band: self.band,
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

impl StreamWatcher {
    /// For a band watcher: what it holds from a stream is in the mirror at the very same state
    /// and within the band of its leaf's edges, and every entity the mirror has settled (owned
    /// by a live shard, not in transit) within the band is held from a stream. Entities within
    /// a hair of the band's inner line may go either way (the shard decides on its unquantized
    /// position).
    pub fn check_band_against_mirror(&self, fleet: &Fleet) -> Result<(), String> {
        let band = self.band.expect("a band watcher");
        let mirror = fleet.authority.mirror();
        let placement = fleet.authority.placement();
        let depth = |pos: [f32; 2]| -> Option<f64> {
            let p = sidereal_core::Point::new(pos[0].into(), pos[1].into());
            let b = placement
                .sectors
                .keys()
                .map(|s| s.bounds())
                .find(|b| b.contains(p))?;
            Some(
                (p.x - b.min.x)
                    .min(b.max.x - p.x)
                    .min(p.y - b.min.y)
                    .min(b.max.y - p.y),
            )
        };
        let hair = 0.1;
        for e in self.view.iter() {
            if !matches!(e.source, Source::Stream { .. }) {
                continue;
            }
            let r = mirror.get(e.id).ok_or_else(|| {
                format!(
                    "tick {}: {} streamed but not in the mirror",
                    fleet.tick, e.id
                )
            })?;
            let (a, b) = (e.state().pos, r.snapshot.state.pos);
            if !r.in_transit && (a[0] - b[0]).hypot(a[1] - b[1]) > 0.05 {
                return Err(format!(
                    "tick {}: {} at {a:?} in the band view ({:?}, epoch {}, its tick {}), {b:?} in the mirror (owner {}, epoch {})",
                    fleet.tick, e.id, e.source, e.epoch, e.tick, r.owner, r.epoch
                ));
            }
            if depth(a).is_some_and(|d| d > f64::from(band) + hair) {
                return Err(format!(
                    "tick {}: {} at {a:?} is streamed but {:.1} units inside its leaf",
                    fleet.tick,
                    e.id,
                    depth(a).unwrap()
                ));
            }
        }
        let live = fleet.authority.live_shards();
        for (id, r) in mirror.iter() {
            let settled = !r.in_transit && live.contains(&r.owner);
            let in_band = depth(r.snapshot.state.pos).is_some_and(|d| d < f64::from(band) - hair);
            let streamed = self
                .view
                .get(*id)
                .is_some_and(|e| matches!(e.source, Source::Stream { .. }));
            if settled && in_band && !streamed {
                return Err(format!(
                    "tick {}: {id} lies in the band at {:?} but is not streamed",
                    fleet.tick, r.snapshot.state.pos
                ));
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
