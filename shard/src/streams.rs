//! Sector streams, the publishing end ([`sidereal_core::stream`]): every tick, each owned
//! sector that someone subscribed to is encoded once with the link codec and the same bytes go
//! to each of its subscribers; a subscriber that joins gets the sector's baselines as
//! keyframes. Subscribers come and go through [`StreamHub`] (fed by the TCP server,
//! `stream_server.rs`, or by a test), so the app never touches a socket.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use avian2d::prelude::*;
use bevy::prelude::*;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use rustc_hash::FxHashMap;
use sidereal_core::codec::{UpdateEncoder, batch_entries};
use sidereal_core::protocol::encode_frame;
use sidereal_core::stream::{Departure, PublisherMessage, SectorFrame, in_band};
use sidereal_core::{EntityId, EntityKind, EntityState, Epoch, Point, SectorId};
use tracing::{info, warn};

use crate::components::{Owned, TickSet, state_of};
use crate::link::TickCount;
use crate::metrics::ShardMetrics;
use crate::ownership::Ownership;

/// Encoded frames waiting for one subscriber's socket before it is taken for too slow.
pub const MAX_QUEUED_FRAMES: usize = 4096;

/// Bytes of one encoded message, shared by every subscriber it goes to.
pub type Frame = Arc<Vec<u8>>;

/// From the stream server to the app.
#[derive(Debug)]
pub enum HubEvent {
    Joined {
        subscriber: u64,
        name: String,
        frames: Sender<Frame>,
    },
    /// The whole set of sectors wanted from now on, whole or only their edges' `band`.
    Subscribe {
        subscriber: u64,
        sectors: Vec<SectorId>,
        band: Option<f32>,
    },
    Left {
        subscriber: u64,
    },
}

/// Where subscribers' arrivals, subscriptions and departures come in.
#[derive(Resource)]
pub struct StreamHub(pub Receiver<HubEvent>);

struct Subscriber {
    name: String,
    frames: Sender<Frame>,
    wanted: BTreeSet<SectorId>,
    /// Whole sectors (`None`) or the band near their edges, for all of them.
    band: Option<f32>,
    /// Sectors it has had an `opened` frame of and follows.
    open: BTreeSet<SectorId>,
}

impl Subscriber {
    /// The stream it takes `sector` from.
    fn key(&self, sector: SectorId) -> StreamKey {
        StreamKey {
            sector,
            band: self.band.map(f32::to_bits),
        }
    }
}

/// One stream a shard publishes: a whole sector, or the band within `band` units of its edges
/// (the bits of an `f32`, so keys order and compare exactly). Each is encoded once per tick,
/// whoever follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct StreamKey {
    sector: SectorId,
    band: Option<u32>,
}

impl StreamKey {
    fn band(&self) -> Option<f32> {
        self.band.map(f32::from_bits)
    }

    fn holds(&self, p: Point) -> bool {
        in_band(self.sector, self.band(), p)
    }

    /// Every key of `sector`, for range queries over maps keyed by it.
    fn all_of(sector: SectorId) -> std::ops::RangeInclusive<StreamKey> {
        StreamKey { sector, band: None }..=StreamKey {
            sector,
            band: Some(u32::MAX),
        }
    }
}

/// An entity in a sector's stream.
#[derive(Debug, Clone, Copy)]
struct Member {
    id: EntityId,
    epoch: Epoch,
    kind: EntityKind,
}

impl SectorStream {
    fn member(&self, id: EntityId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.members[i])
    }
}

/// One streamed sector: the shared encoder and who is in it.
#[derive(Default)]
struct SectorStream {
    encoder: UpdateEncoder,
    /// Who was in it last tick, sorted by id: each tick's batch (sorted too) is diffed against
    /// it in one pass.
    members: Vec<Member>,
}

/// Stream totals, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub subscribers: usize,
    pub streamed_sectors: usize,
    /// Sector frames encoded (each once, whatever the number of its subscribers).
    pub frames: u64,
    /// Bytes queued to subscribers, all of them together.
    pub bytes_sent: u64,
    /// Entity updates encoded in shared (not opening) frames.
    pub entity_updates: u64,
    /// Bytes of those updates' codec batches.
    pub update_bytes: u64,
    /// Subscribers dropped for not keeping up.
    pub dropped_slow: u64,
    /// Time spent publishing (sorting, diffing, encoding, queueing), all ticks together.
    pub publish_nanos: u64,
}

#[derive(Resource, Default)]
pub struct SectorStreams {
    subscribers: BTreeMap<u64, Subscriber>,
    sectors: BTreeMap<StreamKey, SectorStream>,
    /// What ended here in the last [`ENDED_MEMORY_TICKS`], with where.
    recently_ended: VecDeque<(u64, Departure, [f32; 2])>,
    pub stats: StreamStats,
}

/// Adds the publishing end; without a [`StreamHub`] resource nobody can subscribe.
pub struct SectorStreamsPlugin;

impl Plugin for SectorStreamsPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<SectorStreams>().add_systems(
            FixedLast,
            (
                take_subscriptions,
                publish_sector_streams,
                publish_stream_metrics,
            )
                .chain()
                .in_set(TickSet::Report),
        );
    }
}

fn publish_stream_metrics(
    streams: Res<SectorStreams>,
    metrics: Res<ShardMetrics>,
    mut last: Local<StreamStats>,
) {
    let s = streams.stats;
    metrics.stream_subscribers.set(s.subscribers as i64);
    metrics.stream_sectors.set(s.streamed_sectors as i64);
    metrics.stream_bytes.inc_by(s.bytes_sent - last.bytes_sent);
    metrics
        .stream_dropped
        .inc_by(s.dropped_slow - last.dropped_slow);
    *last = s;
}

/// Applies arrivals, subscription changes and departures, at the tick boundary.
fn take_subscriptions(hub: Option<Res<StreamHub>>, mut streams: ResMut<SectorStreams>) {
    let Some(hub) = hub else { return };
    while let Ok(event) = hub.0.try_recv() {
        match event {
            HubEvent::Joined {
                subscriber,
                name,
                frames,
            } => {
                info!(subscriber = %name, "sector stream subscriber joined");
                streams.subscribers.insert(
                    subscriber,
                    Subscriber {
                        name,
                        frames,
                        wanted: BTreeSet::new(),
                        band: None,
                        open: BTreeSet::new(),
                    },
                );
            }
            HubEvent::Subscribe {
                subscriber,
                sectors,
                band,
            } => {
                if let Some(s) = streams.subscribers.get_mut(&subscriber) {
                    if s.band != band {
                        // Another stream for every sector: each opens afresh.
                        s.band = band;
                        s.open.clear();
                    }
                    s.wanted = sectors.into_iter().collect();
                    // A sector no longer wanted needs a fresh opening if wanted again.
                    let wanted = &s.wanted;
                    s.open.retain(|x| wanted.contains(x));
                }
            }
            HubEvent::Left { subscriber } => {
                if let Some(s) = streams.subscribers.remove(&subscriber) {
                    info!(subscriber = %s.name, "sector stream subscriber left");
                }
            }
        }
    }
    streams.stats.subscribers = streams.subscribers.len();
}

type StreamedState<'a> = (
    &'a Owned,
    &'a Position,
    &'a Rotation,
    &'a LinearVelocity,
    &'a AngularVelocity,
);

/// This tick's entities of one streamed sector.
#[derive(Default)]
struct SectorBatch {
    /// As gathered; sorted by id in [`next_frame`].
    gathered: Vec<(EntityId, Epoch, EntityState, EntityKind)>,
    /// The encoder's input, in id order.
    entities: Vec<(EntityId, Epoch, EntityState)>,
}

/// Every tick: each wanted sector's frame, encoded once, to its subscribers; then a `Tick`.
fn publish_sector_streams(
    mut streams: ResMut<SectorStreams>,
    own: Res<Ownership>,
    tick: Res<TickCount>,
    owned: Query<StreamedState>,
    positions: Query<&Position, With<Owned>>,
    mut batches: Local<BTreeMap<StreamKey, SectorBatch>>,
) {
    let started = std::time::Instant::now();
    let streams = &mut *streams;
    remember_endings(&mut streams.recently_ended, &own, tick.0);
    if streams.subscribers.is_empty() {
        streams.sectors.clear();
        streams.stats.streamed_sectors = 0;
        return;
    }
    let wanted: BTreeSet<StreamKey> = streams
        .subscribers
        .values()
        .flat_map(|s| s.wanted.iter().map(|x| s.key(*x)))
        .filter(|k| own.sectors.contains(&k.sector))
        .collect();
    gather_batches(&own, &wanted, &owned, &mut batches);
    let departed: FxHashMap<EntityId, [f32; 2]> = own.departed.iter().copied().collect();
    let where_now = |id: EntityId| -> Option<[f32; 2]> {
        departed.get(&id).copied().or_else(|| {
            let e = own.entities.get(&id)?;
            positions.get(*e).ok().map(|p| [p.0.x, p.0.y])
        })
    };
    let ended = ended_unstreamed(&own, &wanted, &streams.sectors);
    let mut outgoing: Vec<(u64, Frame)> = Vec::new();
    for key in &wanted {
        let sector = &key.sector;
        let batch = batches
            .get_mut(key)
            .expect("gathered for every wanted stream");
        let stream = streams.sectors.entry(*key).or_default();
        let extra = ended.get(key).map_or(&[][..], Vec::as_slice);
        let frame = next_frame(stream, *sector, tick.0, batch, extra, where_now);
        streams.stats.frames += 1;
        streams.stats.update_bytes += frame.updates.len() as u64;
        streams.stats.entity_updates += batch_entries(&frame.updates);
        let shared =
            (!frame.is_empty()).then(|| Arc::new(encode_frame(&PublisherMessage::Sector(frame))));
        let mut opening: Option<Frame> = None;
        for (id, sub) in streams.subscribers.iter_mut() {
            if !sub.wanted.contains(sector) || sub.key(*sector) != *key {
                continue;
            }
            if sub.open.contains(sector) {
                if let Some(f) = &shared {
                    outgoing.push((*id, f.clone()));
                }
            } else {
                let ended = &streams.recently_ended;
                let f = opening.get_or_insert_with(|| {
                    Arc::new(encode_frame(&PublisherMessage::Sector(opening_frame(
                        stream, *key, tick.0, ended,
                    ))))
                });
                outgoing.push((*id, f.clone()));
                sub.open.insert(*sector);
            }
        }
    }
    close_unwanted_sectors(streams, &own, &wanted, tick.0, &where_now, &mut outgoing);
    for (id, sub) in &streams.subscribers {
        let unowned = sub
            .wanted
            .iter()
            .filter(|s| !own.sectors.contains(s))
            .copied()
            .collect();
        outgoing.push((
            *id,
            Arc::new(encode_frame(&PublisherMessage::Tick {
                tick: tick.0,
                unowned,
            })),
        ));
    }
    deliver(streams, outgoing);
    streams.stats.streamed_sectors = streams.sectors.len();
    streams.stats.publish_nanos += started.elapsed().as_nanos() as u64;
}

/// Entities that ended this tick without ever being in a stream (adopted and ended in one
/// tick), by the wanted sector they ended in: their departure is sent all the same.
fn ended_unstreamed(
    own: &Ownership,
    wanted: &BTreeSet<StreamKey>,
    sectors: &BTreeMap<StreamKey, SectorStream>,
) -> BTreeMap<StreamKey, Vec<Departure>> {
    let mut out: BTreeMap<StreamKey, Vec<Departure>> = BTreeMap::new();
    for &(id, epoch, pos) in &own.ended {
        let p = Point::new(pos[0].into(), pos[1].into());
        let Some(sector) = own.sector_of(p) else {
            continue;
        };
        for key in wanted.range(StreamKey::all_of(sector)) {
            let streamed = sectors.get(key).is_some_and(|s| s.member(id).is_some());
            if !streamed && key.holds(p) {
                out.entry(*key).or_default().push(Departure {
                    id,
                    epoch,
                    to: None,
                });
            }
        }
    }
    out
}

/// Sorts this tick's owned entities into the wanted streams' batches (a sector's whole stream
/// and its band streams each take those they hold).
fn gather_batches(
    own: &Ownership,
    wanted: &BTreeSet<StreamKey>,
    owned: &Query<StreamedState>,
    batches: &mut BTreeMap<StreamKey, SectorBatch>,
) {
    batches.retain(|k, _| wanted.contains(k));
    for k in wanted {
        batches.entry(*k).or_default().gathered.clear();
    }
    for (o, p, r, v, w) in owned.iter() {
        let at = Point::new(p.0.x.into(), p.0.y.into());
        let Some(sector) = own.sector_of(at) else {
            continue;
        };
        for (key, b) in batches.range_mut(StreamKey::all_of(sector)) {
            if key.holds(at) {
                b.gathered
                    .push((o.id, o.epoch, state_of(p, r, v, w), o.kind));
            }
        }
    }
}

/// The sector's frame for the subscribers that follow it: who entered, who left (and where to),
/// and the shared deltas.
fn next_frame(
    stream: &mut SectorStream,
    sector: SectorId,
    tick: u64,
    batch: &mut SectorBatch,
    ended: &[Departure],
    where_now: impl Fn(EntityId) -> Option<[f32; 2]>,
) -> SectorFrame {
    batch.gathered.sort_unstable_by_key(|g| g.0);
    batch.entities.clear();
    batch.entities.extend(
        batch
            .gathered
            .iter()
            .map(|&(id, epoch, state, _)| (id, epoch, state)),
    );
    let (mut entered, mut left) = (Vec::new(), Vec::new());
    let mut members = Vec::with_capacity(batch.gathered.len());
    let mut was = stream.members.iter().peekable();
    for &(id, epoch, _, kind) in &batch.gathered {
        // Members before this id are gone from the sector.
        while let Some(m) = was.next_if(|m| m.id < id) {
            left.push(Departure {
                id: m.id,
                epoch: m.epoch,
                to: where_now(m.id),
            });
        }
        match was.next_if(|m| m.id == id) {
            Some(m) if m.epoch == epoch => {}
            // Back at a newer epoch: its next update is a keyframe.
            Some(_) => {
                stream.encoder.forget(id);
                entered.push((id, kind));
            }
            None => entered.push((id, kind)),
        }
        members.push(Member { id, epoch, kind });
    }
    left.extend(was.map(|m| Departure {
        id: m.id,
        epoch: m.epoch,
        to: where_now(m.id),
    }));
    for d in &left {
        stream.encoder.forget(d.id);
    }
    left.extend_from_slice(ended);
    left.sort_unstable_by_key(|d| d.id);
    stream.members = members;
    let updates = stream
        .encoder
        .encode(tick, &mut batch.entities)
        .unwrap_or_default();
    SectorFrame {
        sector,
        tick,
        opened: false,
        entered,
        left,
        updates,
    }
}

/// How long a shard remembers what ended in it: a subscriber that moves its subscription
/// (a split, a moved sector) learns from the opening frame what ended in the meantime, instead
/// of waiting for it until its transit timeout.
pub const ENDED_MEMORY_TICKS: u64 = 150;

fn remember_endings(memory: &mut VecDeque<(u64, Departure, [f32; 2])>, own: &Ownership, tick: u64) {
    while memory
        .front()
        .is_some_and(|(t, ..)| t + ENDED_MEMORY_TICKS < tick)
    {
        memory.pop_front();
    }
    memory.extend(own.ended.iter().map(|&(id, epoch, pos)| {
        (
            tick,
            Departure {
                id,
                epoch,
                to: None,
            },
            pos,
        )
    }));
}

/// Everything in the sector as keyframes of what its followers hold, for a new follower, with
/// what ended in it lately (see [`ENDED_MEMORY_TICKS`]).
fn opening_frame(
    stream: &SectorStream,
    key: StreamKey,
    tick: u64,
    recently_ended: &VecDeque<(u64, Departure, [f32; 2])>,
) -> SectorFrame {
    let sector = key.sector;
    let bounds = sector.bounds();
    let left = recently_ended
        .iter()
        .filter(|(_, _, pos)| {
            let p = Point::new(pos[0].into(), pos[1].into());
            bounds.contains(p) && key.holds(p)
        })
        .map(|(_, d, _)| *d)
        .collect();
    let entered = stream.members.iter().map(|m| (m.id, m.kind)).collect();
    let updates = stream
        .encoder
        .keyframes(tick, |id| stream.member(id).map_or(0, |m| m.epoch))
        .unwrap_or_default();
    SectorFrame {
        sector,
        tick,
        opened: true,
        entered,
        left,
        updates,
    }
}

/// Streams of sectors nobody wants any more are dropped; a sector this shard lost (placement)
/// gets a last frame to its followers saying where each entity went.
fn close_unwanted_sectors(
    streams: &mut SectorStreams,
    own: &Ownership,
    wanted: &BTreeSet<StreamKey>,
    tick: u64,
    where_now: &impl Fn(EntityId) -> Option<[f32; 2]>,
    outgoing: &mut Vec<(u64, Frame)>,
) {
    let closing: Vec<StreamKey> = streams
        .sectors
        .keys()
        .filter(|k| !wanted.contains(k))
        .copied()
        .collect();
    for key in closing {
        let sector = key.sector;
        let stream = streams.sectors.remove(&key).expect("listed");
        let followers: Vec<u64> = streams
            .subscribers
            .iter()
            .filter(|(_, s)| s.open.contains(&sector) && s.key(sector) == key)
            .map(|(id, _)| *id)
            .collect();
        if !own.sectors.contains(&sector) && !followers.is_empty() {
            let left: Vec<Departure> = stream
                .members
                .iter()
                .map(|m| Departure {
                    id: m.id,
                    epoch: m.epoch,
                    to: where_now(m.id),
                })
                .collect();
            let last = SectorFrame {
                sector,
                tick,
                opened: false,
                entered: Vec::new(),
                left,
                updates: Vec::new(),
            };
            let f = Arc::new(encode_frame(&PublisherMessage::Sector(last)));
            outgoing.extend(followers.iter().map(|id| (*id, f.clone())));
        }
        for id in followers {
            if let Some(s) = streams.subscribers.get_mut(&id) {
                s.open.remove(&sector);
            }
        }
    }
}

/// Queues each frame for its subscriber; one that cannot take more is dropped (its socket
/// closes, it reconnects and starts afresh) rather than grow this shard's memory.
fn deliver(streams: &mut SectorStreams, outgoing: Vec<(u64, Frame)>) {
    let mut slow = BTreeSet::new();
    for (id, frame) in outgoing {
        if slow.contains(&id) {
            continue;
        }
        let Some(sub) = streams.subscribers.get(&id) else {
            continue;
        };
        let len = frame.len() as u64;
        match sub.frames.try_send(frame) {
            Ok(()) => streams.stats.bytes_sent += len,
            Err(TrySendError::Full(_)) => {
                warn!(subscriber = %sub.name, queued = MAX_QUEUED_FRAMES, "sector stream subscriber does not keep up; dropping it");
                streams.stats.dropped_slow += 1;
                slow.insert(id);
            }
            Err(TrySendError::Disconnected(_)) => {
                slow.insert(id);
            }
        }
    }
    for id in slow {
        streams.subscribers.remove(&id);
    }
}
