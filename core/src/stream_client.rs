//! The subscriber's end of the sector streams: one connection per shard that owns a wanted
//! sector, following placement, feeding a [`SectorView`].
//!
//! [`SectorFeed::follow`] takes the placement (leaf to shard), where each shard publishes, and
//! the areas wanted; it opens and closes connections and (re)sends each shard the whole set of
//! sectors wanted from it. When a sector moves, it is subscribed at the new owner at once and
//! let go at the old one once that says it no longer owns it (make before break); its entities
//! wait in transit in the view until the new owner's stream brings them back at their new
//! epochs. [`SectorFeed::pump`] applies what arrived. Each connection
//! runs on two threads of its own (read, write); the feed itself is driven by its owner.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::geometry::{Bounds, SectorId};
use crate::handshake::fresh_nonce;
use crate::ids::ShardId;
use crate::link_socket::{self, DEFAULT_LINK_TIMEOUT};
use crate::protocol::{FrameReader, MAX_FRAME_BYTES, MAX_HELLO_FRAME_BYTES, encode_frame};
use crate::sector_view::{ConnId, SectorView};
use crate::stream::{
    PublisherMessage, STREAM_LINK, STREAM_PROTOCOL_VERSION, SectorFrame, SubscriberMessage,
};

/// How a feed's connections behave.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Silence for this long (a shard sends a `Tick` every tick) ends a connection.
    pub timeout: Duration,
    pub max_frame_bytes: usize,
    /// Only the entities within this many units of each followed sector's edges (a shard
    /// following its neighbours for its shadows); `None`: whole sectors.
    pub band: Option<f32>,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_LINK_TIMEOUT,
            max_frame_bytes: MAX_FRAME_BYTES,
            band: None,
        }
    }
}

enum Event {
    Frame(SectorFrame),
    /// A tick ended; the wanted sectors the shard does not own.
    Tick(Vec<SectorId>),
    Closed(String),
}

struct Conn {
    id: ConnId,
    addr: String,
    /// The sectors placement gives this shard that are wanted.
    subscribed: BTreeSet<SectorId>,
    /// Sectors placement took from this shard, still subscribed until it says it let go.
    lingering: BTreeSet<SectorId>,
    /// Sectors newly subscribed here whose opening frame has not come yet: frames of theirs
    /// sent before the shard took the subscription (deltas of an earlier one) are ignored.
    awaiting_open: BTreeSet<SectorId>,
    /// Subscription sets for the writer thread; dropping it closes the connection.
    to_shard: Sender<Vec<SectorId>>,
}

impl Conn {
    /// The whole set to subscribe to at this shard.
    fn wants(&self) -> Vec<SectorId> {
        self.subscribed.union(&self.lingering).copied().collect()
    }
}

/// What a feed has done, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    pub connects: u64,
    pub disconnects: u64,
    pub ticks: u64,
    /// Bytes of frames received.
    pub bytes: u64,
    /// Frames of sectors let go, or of an earlier subscription of a sector subscribed again
    /// before its new opening frame, dropped unread.
    pub ignored_frames: u64,
}

pub struct SectorFeed {
    name: String,
    secret: String,
    options: FeedOptions,
    next_conn: ConnId,
    conns: HashMap<ShardId, Conn>,
    events: Receiver<(ConnId, Event, usize)>,
    events_tx: Sender<(ConnId, Event, usize)>,
    pub view: SectorView,
    pub stats: FeedStats,
    /// Shards whose last connection closed: not dialled again before the instant, and the
    /// back-off that doubles while their connections keep failing (reset by a `Tick`).
    retry: HashMap<ShardId, (Instant, Duration)>,
}

/// The first wait before dialling a shard again after its connection closed, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

fn overlaps(a: &Bounds, b: &Bounds) -> bool {
    a.min.x < b.max.x && b.min.x < a.max.x && a.min.y < b.max.y && b.min.y < a.max.y
}

impl SectorFeed {
    /// A feed that names itself `name` to shards and proves `secret` (the fleet's shard secret).
    pub fn new(name: &str, secret: &str, options: FeedOptions) -> Self {
        let (events_tx, events) = mpsc::channel();
        Self {
            name: name.to_owned(),
            secret: secret.to_owned(),
            options,
            next_conn: 1,
            conns: HashMap::new(),
            events,
            events_tx,
            view: SectorView::default(),
            stats: FeedStats::default(),
            retry: HashMap::new(),
        }
    }

    /// Shards connected (or connecting) now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Follows `placement` (every leaf to its shard) and `streams` (where each shard
    /// publishes): subscribes to the leaves that overlap `areas` (`None`: every leaf) at their
    /// owners. Make before break: a sector that left a shard in placement (moved, split,
    /// merged) stays subscribed there until that shard's `Tick` says it no longer owns it, so
    /// its last frame (where each entity went) and anything that ended there meanwhile arrive;
    /// its new owner is subscribed at once and serves it from the tick it owns it.
    pub fn follow(
        &mut self,
        placement: &BTreeMap<SectorId, ShardId>,
        streams: &HashMap<ShardId, String>,
        areas: Option<&[Bounds]>,
        now: Instant,
    ) {
        self.view.set_wanted(areas.map(<[Bounds]>::to_vec));
        let area_wanted =
            |s: &SectorId| areas.is_none_or(|a| a.iter().any(|b| overlaps(b, &s.bounds())));
        let mut desired: BTreeMap<ShardId, BTreeSet<SectorId>> = BTreeMap::new();
        for (s, shard) in placement.iter().filter(|(s, _)| area_wanted(s)) {
            desired.entry(shard.clone()).or_default().insert(*s);
        }
        // Connections to shards gone from the streams (dead, or publishing elsewhere after a
        // restart), or with nothing wanted or lingering.
        let stale: Vec<ShardId> = self
            .conns
            .iter()
            .filter(|(shard, c)| {
                streams.get(*shard) != Some(&c.addr)
                    || (!desired.contains_key(*shard) && c.lingering.is_empty())
            })
            .map(|(shard, _)| shard.clone())
            .collect();
        for shard in stale {
            self.close(&shard, now);
        }
        for (shard, c) in self.conns.iter_mut() {
            let now_wanted = desired.remove(shard).unwrap_or_default();
            let fresh: Vec<SectorId> = now_wanted
                .iter()
                .filter(|s| !c.subscribed.contains(s) && !c.lingering.contains(s))
                .copied()
                .collect();
            let gone: Vec<SectorId> = c.subscribed.difference(&now_wanted).copied().collect();
            for s in gone {
                if area_wanted(&s) {
                    c.lingering.insert(s);
                } else {
                    self.view.sector_dropped(c.id, s);
                }
            }
            c.lingering
                .retain(|s| !now_wanted.contains(s) && area_wanted(s));
            c.awaiting_open.extend(fresh);
            let held: BTreeSet<SectorId> = now_wanted.union(&c.lingering).copied().collect();
            c.awaiting_open.retain(|s| held.contains(s));
            if c.subscribed != now_wanted {
                c.subscribed = now_wanted;
                let _ = c.to_shard.send(c.wants());
            }
        }
        for (shard, sectors) in desired {
            let Some(addr) = streams.get(&shard) else {
                continue;
            };
            if self.retry.get(&shard).is_some_and(|(at, _)| now < *at) {
                continue;
            }
            let id = self.next_conn;
            self.next_conn += 1;
            let (to_shard, from_feed) = mpsc::channel();
            let _ = to_shard.send(sectors.iter().copied().collect());
            self.stats.connects += 1;
            spawn_connection(
                id,
                addr.clone(),
                self.name.clone(),
                self.secret.clone(),
                self.options,
                from_feed,
                self.events_tx.clone(),
            );
            self.conns.insert(
                shard,
                Conn {
                    id,
                    addr: addr.clone(),
                    awaiting_open: sectors.clone(),
                    subscribed: sectors,
                    lingering: BTreeSet::new(),
                    to_shard,
                },
            );
        }
    }

    /// A shard's tick ended: lingering sectors it no longer owns are let go (their last frame
    /// came before this), their entities left in the view waiting for their next stream.
    fn on_tick(&mut self, shard: &ShardId, unowned: &[SectorId], now: Instant) {
        let Some(c) = self.conns.get_mut(shard) else {
            return;
        };
        let released: Vec<SectorId> = unowned
            .iter()
            .filter(|s| c.lingering.contains(s))
            .copied()
            .collect();
        if released.is_empty() {
            return;
        }
        for s in &released {
            c.lingering.remove(s);
            self.view.sector_moved(c.id, *s, now);
        }
        let _ = c.to_shard.send(c.wants());
    }

    /// Applies everything received so far; frames of connections already closed are dropped.
    /// How many frames were applied.
    pub fn pump(&mut self, now: Instant) -> usize {
        let mut applied = 0;
        while let Ok((conn, event, bytes)) = self.events.try_recv() {
            let Some(shard) = self
                .conns
                .iter()
                .find(|(_, c)| c.id == conn)
                .map(|(s, _)| s.clone())
            else {
                continue;
            };
            self.stats.bytes += bytes as u64;
            match event {
                Event::Frame(frame) if !self.expects(&shard, &frame) => {
                    self.stats.ignored_frames += 1;
                }
                Event::Frame(frame) => match self.view.apply(conn, &frame, now) {
                    Ok(()) => applied += 1,
                    Err(e) => {
                        warn!(%shard, error = %e, "bad sector frame; dropping the connection");
                        self.close(&shard, now);
                    }
                },
                Event::Tick(unowned) => {
                    self.stats.ticks += 1;
                    self.retry.remove(&shard);
                    self.on_tick(&shard, &unowned, now);
                }
                Event::Closed(reason) => {
                    debug!(%shard, reason, "sector stream closed");
                    self.close(&shard, now);
                    // Dial it again later, later each time it fails (a wrong secret, a shard
                    // that is going away), not on every `follow`.
                    let wait = self
                        .retry
                        .get(&shard)
                        .map_or(RETRY_FIRST, |(_, w)| (*w * 2).min(RETRY_MAX));
                    self.retry.insert(shard, (now + wait, wait));
                }
            }
        }
        self.view.expire(now);
        applied
    }

    /// Whether `frame` belongs to what this feed follows at `shard` now: not a frame of a
    /// sector it let go, nor one sent for an earlier subscription of a sector it subscribed
    /// to again (its deltas answer a decoder this feed no longer has) before the new opening.
    fn expects(&mut self, shard: &ShardId, frame: &SectorFrame) -> bool {
        let Some(c) = self.conns.get_mut(shard) else {
            return false;
        };
        if !c.subscribed.contains(&frame.sector) && !c.lingering.contains(&frame.sector) {
            return false;
        }
        if c.awaiting_open.contains(&frame.sector) {
            if !frame.opened {
                return false;
            }
            c.awaiting_open.remove(&frame.sector);
        }
        true
    }

    /// Follows sectors whole (`None`) or only the band near their edges from now on.
    /// Connections made for another band close (their entities wait in transit) and the next
    /// [`SectorFeed::follow`] makes them again.
    pub fn set_band(&mut self, band: Option<f32>, now: Instant) {
        if self.options.band == band {
            return;
        }
        self.options.band = band;
        let shards: Vec<ShardId> = self.conns.keys().cloned().collect();
        for shard in shards {
            self.close(&shard, now);
        }
    }

    fn close(&mut self, shard: &ShardId, now: Instant) {
        if let Some(c) = self.conns.remove(shard) {
            self.stats.disconnects += 1;
            self.view.connection_lost(c.id, now);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the shard closed the connection")]
    Closed,
    #[error("bad frame: {0}")]
    Frame(String),
    #[error("the shard refused: {0}")]
    Rejected(String),
    #[error("the shard speaks stream protocol {0}, this subscriber {STREAM_PROTOCOL_VERSION}")]
    Version(u32),
    #[error("the shard could not prove it knows the secret")]
    Impostor,
    #[error("unexpected message during the handshake")]
    Unexpected,
}

fn read_message(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    buf: &mut [u8],
) -> Result<(PublisherMessage, usize), HandshakeError> {
    loop {
        let before = reader.buffered();
        match reader.next_frame::<PublisherMessage>() {
            Ok(Some(m)) => return Ok((m, before - reader.buffered())),
            Ok(None) => {}
            Err(e) => return Err(HandshakeError::Frame(e.to_string())),
        }
        let n = stream.read(buf)?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        reader.push(&buf[..n]);
    }
}

fn handshake(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    name: &str,
    secret: &str,
) -> Result<ShardId, HandshakeError> {
    let mut buf = [0u8; 1024];
    let challenge = match read_message(stream, reader, &mut buf)?.0 {
        PublisherMessage::Challenge { protocol, nonce } if protocol == STREAM_PROTOCOL_VERSION => {
            nonce
        }
        PublisherMessage::Challenge { protocol, .. } => {
            return Err(HandshakeError::Version(protocol));
        }
        _ => return Err(HandshakeError::Unexpected),
    };
    let nonce = fresh_nonce();
    let hello = SubscriberMessage::Hello {
        protocol: STREAM_PROTOCOL_VERSION,
        subscriber: name.to_owned(),
        nonce,
        proof: STREAM_LINK.hello(secret, &challenge, &nonce, name),
    };
    stream.write_all(&encode_frame(&hello))?;
    match read_message(stream, reader, &mut buf)?.0 {
        PublisherMessage::Welcome { shard, proof, .. } => {
            if STREAM_LINK.verify_welcome(secret, &challenge, &nonce, name, &proof) {
                Ok(shard)
            } else {
                Err(HandshakeError::Impostor)
            }
        }
        PublisherMessage::Rejected { reason } => Err(HandshakeError::Rejected(reason)),
        _ => Err(HandshakeError::Unexpected),
    }
}

/// Connects, authenticates and then bridges the socket: subscription sets out, frames in.
fn spawn_connection(
    id: ConnId,
    addr: String,
    name: String,
    secret: String,
    options: FeedOptions,
    subscriptions: Receiver<Vec<SectorId>>,
    events: Sender<(ConnId, Event, usize)>,
) {
    let spawned = std::thread::Builder::new()
        .name("stream-read".into())
        .spawn(move || {
            let reason =
                match run_connection(id, &addr, &name, &secret, options, subscriptions, &events) {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e,
                };
            let _ = events.send((id, Event::Closed(reason), 0));
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start a sector stream thread");
    }
}

fn run_connection(
    id: ConnId,
    addr: &str,
    name: &str,
    secret: &str,
    options: FeedOptions,
    subscriptions: Receiver<Vec<SectorId>>,
    events: &Sender<(ConnId, Event, usize)>,
) -> Result<(), String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let io = |e: std::io::Error| e.to_string();
    link_socket::harden(&stream, options.timeout).map_err(io)?;
    stream.set_read_timeout(Some(options.timeout)).map_err(io)?;
    stream
        .set_write_timeout(Some(options.timeout))
        .map_err(io)?;
    let mut reader = FrameReader::with_limit(MAX_HELLO_FRAME_BYTES);
    handshake(&mut stream, &mut reader, name, secret).map_err(|e| e.to_string())?;
    reader.set_limit(options.max_frame_bytes);
    let mut writer = stream.try_clone().map_err(io)?;
    std::thread::Builder::new()
        .name("stream-write".into())
        .spawn(move || {
            while let Ok(mut sectors) = subscriptions.recv() {
                // Only the newest set matters.
                while let Ok(newer) = subscriptions.try_recv() {
                    sectors = newer;
                }
                let msg = SubscriberMessage::Subscribe {
                    sectors,
                    band: options.band,
                };
                if writer.write_all(&encode_frame(&msg)).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Both);
        })
        .map_err(io)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        loop {
            let before = reader.buffered();
            match reader.next_frame::<PublisherMessage>() {
                Ok(Some(m)) => {
                    let size = before - reader.buffered();
                    let event = match m {
                        PublisherMessage::Sector(f) => Event::Frame(f),
                        PublisherMessage::Tick { unowned, .. } => Event::Tick(unowned),
                        _ => return Err("unexpected message after the handshake".into()),
                    };
                    if events.send((id, event, size)).is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(format!("bad frame: {e}")),
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("the shard closed the stream".into()),
            Ok(n) => reader.push(&buf[..n]),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}
