//! The replication authority: shard links, the entity mirror and the placement table, as a
//! plain state machine. It takes shard messages and placement requests, and queues messages
//! for shards; the I/O shell (TCP server, in-process harness) moves bytes. Everything here is
//! deterministic and testable without sockets.

use std::collections::{BTreeMap, BTreeSet};

use sidereal_core::codec::UpdateDecoder;
use sidereal_core::handshake::Nonce;
use sidereal_core::placement::{PlacementError, leaf_covering};
use sidereal_core::protocol::{PROTOCOL_VERSION, ReplicationMessage, ShardMessage, ShipControl};
use sidereal_core::{
    EntityId, EntitySnapshot, Epoch, Placement, SectorId, ShardId, ShardLoadReport,
};
use tracing::warn;

use crate::mirror::{Mirror, Refusal};

mod handover;
mod handshake;
mod placement;
mod players;
mod reports;
mod resume;
mod shadows;
mod updates;

pub(crate) use handshake::constant_time_eq;
pub use players::spawn_point;
pub use resume::TakeoverOutcome;
pub use shadows::{neighbours_of, shadows_by_shard};

pub type LinkId = u64;

/// Settings of the authority.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// Root sectors of the world; placements must tile them.
    pub world: Vec<SectorId>,
    /// Shared secret shards present in their handshake.
    pub secret: String,
    pub tick_hz: u32,
    /// Shards keep read-only shadows of neighbours' entities this close to their borders.
    pub shadow_margin: f64,
}

/// Why a link is closed. The shell logs it and drops the connection; nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("first message must be Hello")]
    NoHello,
    #[error("protocol version {got} is not supported (this replication speaks {PROTOCOL_VERSION})")]
    WrongVersion { got: u32 },
    #[error(
        "wrong shard secret from {shard}: its proof does not match this connection's challenge"
    )]
    WrongSecret { shard: ShardId },
    #[error("invalid shard name {0:?}")]
    BadName(String),
    #[error("shard name {0:?} is reserved (it means no shard)")]
    ReservedName(String),
    #[error("shard {0} is already connected")]
    AlreadyConnected(ShardId),
    /// Every incarnation reserved in the store is taken; the next checkpoint reserves more.
    #[error("no link incarnation is reserved in the store yet; retry in a second")]
    NoIncarnation,
    #[error("second Hello on an established link")]
    DuplicateHello,
    #[error("malformed update batch: {0}")]
    Codec(#[from] sidereal_core::codec::CodecError),
    #[error("frame error: {0}")]
    Frame(String),
}

/// Every `reason` label of `sidereal_links_rejected_total`: the authority's refusals
/// ([`LinkError::label`]) and the I/O shell's (`handshake_timeout`, `handshake_limit`).
pub const LINK_REJECTION_REASONS: [&str; 12] = [
    "no_hello",
    "wrong_version",
    "wrong_secret",
    "bad_name",
    "reserved_name",
    "already_connected",
    "no_incarnation",
    "duplicate_hello",
    "malformed_update",
    "malformed_frame",
    "handshake_timeout",
    "handshake_limit",
];

/// Every `reason` label of `sidereal_links_dropped_total`: links closed because the shard went
/// silent for the link timeout, or stopped taking what was sent (queue full, a write stalled).
pub const LINK_DROP_REASONS: [&str; 3] = ["silent", "backlog", "write_stalled"];

impl LinkError {
    /// Short, stable name of the failure for `sidereal_links_rejected_total{reason=...}`.
    pub fn label(&self) -> &'static str {
        match self {
            LinkError::NoHello => "no_hello",
            LinkError::WrongVersion { .. } => "wrong_version",
            LinkError::WrongSecret { .. } => "wrong_secret",
            LinkError::BadName(_) => "bad_name",
            LinkError::ReservedName(_) => "reserved_name",
            LinkError::AlreadyConnected(_) => "already_connected",
            LinkError::NoIncarnation => "no_incarnation",
            LinkError::DuplicateHello => "duplicate_hello",
            LinkError::Codec(_) => "malformed_update",
            LinkError::Frame(_) => "malformed_frame",
        }
    }
}

/// The most a placement's generation may move ahead of the current one in one write.
pub const MAX_GENERATION_JUMP: u64 = 1_000_000;

/// Why a desired placement was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutPlacementError {
    #[error("generation {given} is stale: the current generation is {current}")]
    Stale { given: u64, current: u64 },
    #[error("generation {0} was already applied with different contents")]
    Conflict(u64),
    /// A writer that skips generations by more than this is broken (or hostile): after
    /// `u64::MAX` no placement could ever follow.
    #[error(
        "generation {given} jumps more than {MAX_GENERATION_JUMP} past the current generation {current}; write current + 1"
    )]
    Jump { given: u64, current: u64 },
    #[error(transparent)]
    Invalid(#[from] PlacementError),
    /// A new leader waits for the shards of the stored placement to link again; moving their
    /// leaves now would take the entities they simulated since the checkpoint from them.
    #[error(
        "taking over: waiting for shards {} to link again (or the takeover grace to run out); retry shortly",
        waiting.iter().map(|s| s.0.as_str()).collect::<Vec<_>>().join(", ")
    )]
    TakingOver { waiting: Vec<ShardId> },
}

#[derive(Debug)]
struct Link {
    /// The nonce this link's `Hello` must prove the secret over.
    challenge: Nonce,
    shard: Option<ShardId>,
    incarnation: u32,
    decoder: UpdateDecoder,
    /// Linked with `Hello { resuming: true }` and its `Resume` not finished yet.
    resuming: bool,
    /// The entities this link's `Resume` kept so far.
    resumed: std::collections::HashSet<EntityId>,
}

/// Counters the metrics endpoint exports.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub updates_applied: u64,
    pub updates_refused: u64,
    pub handovers: u64,
    pub spawns: u64,
    pub despawns: u64,
    pub refusals: u64,
    /// Placement writes refused because another writer got there first (409: a stale
    /// generation, or the current one with other contents).
    pub placement_conflicts: u64,
    /// Entities taken out of the world with their root, and brought back with it.
    pub archived: u64,
    pub restored: u64,
    /// Shards that linked again and kept their entities, and how many entities they kept.
    pub resumes: u64,
    pub resumed_entities: u64,
    /// Links closed for bad input (handshake refused, malformed data), by reason label. A
    /// link that merely closes or breaks (a killed shard) is not counted.
    pub links_rejected: BTreeMap<&'static str, u64>,
    /// Links closed because the shard stopped answering or could not keep up, by reason.
    pub links_dropped: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// Counts one link closed for bad input.
    pub fn link_rejected(&mut self, reason: &'static str) {
        *self.links_rejected.entry(reason).or_default() += 1;
    }

    /// Counts one link dropped as dead or too slow.
    pub fn link_dropped(&mut self, reason: &'static str) {
        *self.links_dropped.entry(reason).or_default() += 1;
    }

    /// All links closed for bad input.
    pub fn links_rejected_total(&self) -> u64 {
        self.links_rejected.values().sum()
    }
}

pub struct Authority {
    config: AuthorityConfig,
    placement: Placement,
    links: BTreeMap<LinkId, Link>,
    /// Live shards and their links.
    live: BTreeMap<ShardId, LinkId>,
    /// Every shard ever connected, to tell "dead" from "unknown".
    seen: BTreeSet<ShardId>,
    /// Where each shard that said so publishes its sector streams (as of its last `Hello`).
    streams: BTreeMap<ShardId, String>,
    /// The placement generation and live streams shards were last told as their neighbours
    /// (`None` while the authority computes shadows itself).
    neighbours_told: Option<(u64, Vec<(ShardId, String)>)>,
    /// How often shards that shadow themselves report entity updates, in ticks (0: only when
    /// asked, before each checkpoint).
    report_every: u32,
    /// The last checkpoint round shards were asked to report for, and what each answered.
    report_round: u64,
    reported: BTreeMap<ShardId, u64>,
    mirror: Mirror,
    /// The world's roots now: the configured ones until a placement brings its own.
    world: Vec<SectorId>,
    next_link: LinkId,
    next_incarnation: u32,
    /// Incarnation and last counter of ids the authority mints itself (players' ships).
    own_ids: Option<(u32, u64)>,
    /// Connected players and their ships.
    players: BTreeMap<u64, EntityId>,
    /// Each piloted ship's latest command: it goes with the ship to every new owner.
    controls: BTreeMap<EntityId, ShipControl>,
    outbox: Vec<(LinkId, ReplicationMessage)>,
    load: BTreeMap<ShardId, ShardLoadReport>,
    /// A new leader's wait for the stored placement's shards (see `resume.rs`).
    takeover: Option<resume::Takeover>,
    takeover_outcome: Option<TakeoverOutcome>,
    /// Incarnations below this are reserved in the store; none at or above it is handed out
    /// (a leader that took over starts above every one a former leader may have used).
    incarnation_limit: u32,
    pub counters: Counters,
}

impl Authority {
    pub fn new(config: AuthorityConfig) -> Self {
        Self {
            world: config.world.clone(),
            placement: Placement {
                world: Some(config.world.clone()),
                ..Placement::default()
            },
            config,
            links: BTreeMap::new(),
            live: BTreeMap::new(),
            seen: BTreeSet::new(),
            streams: BTreeMap::new(),
            neighbours_told: None,
            report_every: 1,
            report_round: 0,
            reported: BTreeMap::new(),
            mirror: Mirror::default(),
            next_link: 1,
            next_incarnation: 1,
            own_ids: None,
            players: BTreeMap::new(),
            controls: BTreeMap::new(),
            outbox: Vec::new(),
            load: BTreeMap::new(),
            takeover: None,
            takeover_outcome: None,
            incarnation_limit: u32::MAX,
            counters: Counters::default(),
        }
    }

    /// The world's root sectors now.
    pub fn world(&self) -> &[SectorId] {
        &self.world
    }

    pub fn config(&self) -> &AuthorityConfig {
        &self.config
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn live_shards(&self) -> BTreeSet<ShardId> {
        self.live.keys().cloned().collect()
    }

    pub fn known_shards(&self) -> &BTreeSet<ShardId> {
        &self.seen
    }

    /// Where shards publish their sector streams, as they said when they linked.
    pub fn stream_addresses(&self) -> &BTreeMap<ShardId, String> {
        &self.streams
    }

    pub fn load(&self) -> &BTreeMap<ShardId, ShardLoadReport> {
        &self.load
    }

    /// Entity ids are minted with incarnations above everything already in the mirror
    /// (restored worlds keep their ids unique).
    pub fn reserve_incarnations_above(&mut self, incarnation: u32) {
        self.next_incarnation = self.next_incarnation.max(incarnation.saturating_add(1));
    }

    /// The next incarnation a link or this authority's own ids would get.
    pub fn next_incarnation(&self) -> u32 {
        self.next_incarnation
    }

    /// Incarnations from `limit` on are not reserved in the store: links that would need one
    /// are refused (and retry) until the shell reserves more.
    pub fn set_incarnation_limit(&mut self, limit: u32) {
        self.incarnation_limit = limit;
    }

    pub fn incarnation_limit(&self) -> u32 {
        self.incarnation_limit
    }

    pub fn take_outbox(&mut self) -> Vec<(LinkId, ReplicationMessage)> {
        std::mem::take(&mut self.outbox)
    }

    fn send_to(&mut self, shard: &ShardId, msg: ReplicationMessage) {
        if let Some(link) = self.live.get(shard) {
            self.outbox.push((*link, msg));
        }
    }

    /// A new link, challenged with `challenge` (a fresh nonce: the shell draws it, so this
    /// stays deterministic). The `Challenge` is the first message queued for it.
    pub fn connect(&mut self, challenge: Nonce) -> LinkId {
        let id = self.next_link;
        self.next_link += 1;
        self.outbox.push((
            id,
            ReplicationMessage::Challenge {
                protocol: PROTOCOL_VERSION,
                nonce: challenge,
            },
        ));
        self.links.insert(
            id,
            Link {
                challenge,
                shard: None,
                incarnation: 0,
                decoder: UpdateDecoder::default(),
                resuming: false,
                resumed: Default::default(),
            },
        );
        id
    }

    /// The link is gone (closed, reset, or closed by us). Its shard becomes dead; its
    /// entities stay in the mirror, owned by it, until a placement re-homes them.
    pub fn disconnect(&mut self, link: LinkId) {
        if let Some(Link {
            shard: Some(shard), ..
        }) = self.links.remove(&link)
        {
            self.live.remove(&shard);
            self.load.remove(&shard);
            self.reported.remove(&shard);
            warn!(%shard, "shard link closed; its sectors wait for the next placement");
        }
    }

    pub fn shard_of(&self, link: LinkId) -> Option<&ShardId> {
        self.links.get(&link).and_then(|l| l.shard.as_ref())
    }

    /// Handles one message from a link. An error means: close this link (and call
    /// `disconnect`); the rest of the fleet is unaffected.
    pub fn on_message(&mut self, link: LinkId, msg: ShardMessage) -> Result<(), LinkError> {
        let result = self.handle(link, msg);
        if let Err(e) = &result {
            self.counters.link_rejected(e.label());
        }
        result
    }

    fn handle(&mut self, link: LinkId, msg: ShardMessage) -> Result<(), LinkError> {
        let Some(state) = self.links.get(&link) else {
            return Ok(());
        };
        let Some(shard) = state.shard.clone() else {
            return self.hello(link, msg);
        };
        match msg {
            ShardMessage::Hello { .. } => return Err(LinkError::DuplicateHello),
            ShardMessage::Updates(bytes) => self.updates(link, &shard, &bytes)?,
            ShardMessage::Spawned { snapshot } => self.spawned(link, &shard, snapshot),
            // A ghost the shard dropped on our `Disown`: nothing to remove, but its baseline
            // on this link can go now that no update of it will follow.
            ShardMessage::Despawned { id, .. } if !self.mirror.contains(id) => {
                self.forget_on_link(link, id);
            }
            ShardMessage::Despawned { id, epoch } => {
                match self.mirror.check_owner(id, &shard, Some(epoch)) {
                    Ok(_) => {
                        self.mirror.remove(id);
                        self.forget_on_link(link, id);
                        self.counters.despawns += 1;
                    }
                    Err(r) => self.refuse(&shard, "despawn", r),
                }
            }
            ShardMessage::HandoverOut { snapshot, epoch } => {
                self.handover_out(link, &shard, snapshot, epoch)
            }
            ShardMessage::Adopted { ids } => self.adopted(&shard, &ids),
            ShardMessage::Resume {
                incarnation: _,
                owned,
                handed_over,
                last,
            } => self.resume(link, &shard, owned, handed_over, last),
            ShardMessage::Released {
                generation: _,
                entities,
            } => {
                for (snapshot, epoch) in entities {
                    // Released because its root left the world: it is archived already, and
                    // the shard may drop the copy it keeps until a release is confirmed.
                    if self.mirror.is_archived(snapshot.id) {
                        self.forget_on_link(link, snapshot.id);
                        self.send_to(
                            &shard,
                            ReplicationMessage::Forget {
                                ids: vec![snapshot.id],
                            },
                        );
                        continue;
                    }
                    self.handover_out(link, &shard, snapshot, epoch);
                }
            }
            ShardMessage::Load(report) => {
                self.load.insert(shard, report);
            }
            ShardMessage::Reported { round } => {
                self.reported.insert(shard, round);
            }
        }
        Ok(())
    }

    fn refuse(&mut self, shard: &ShardId, what: &str, r: Refusal) {
        self.counters.refusals += 1;
        if should_log(self.counters.refusals) {
            warn!(%shard, what, reason = %r, refusals = self.counters.refusals, "refused (logged: the first 20, then every 1000th)");
        }
    }

    fn forget_on_link(&mut self, link: LinkId, id: EntityId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.decoder.forget(id);
        }
    }

    fn leaf_of(&self, snapshot: &EntitySnapshot) -> Option<SectorId> {
        let s = SectorId::of_point(snapshot.state.point(), 0).ok()?;
        leaf_covering(&self.placement.sectors, s)
    }

    /// Highest incarnation among entity ids in the mirror.
    pub fn max_incarnation(&self) -> u32 {
        self.mirror
            .iter()
            .chain(self.mirror.archived())
            .map(|(id, _)| (id.0 >> EntityId::COUNTER_BITS) as u32)
            .max()
            .unwrap_or(0)
    }

    /// Adds a new entity owned by `owner` (usually a placeholder that is not live, so the next
    /// placement or the shard owning its leaf adopts it). It is dirty until checkpointed.
    pub fn restore_entity(&mut self, snapshot: EntitySnapshot, owner: ShardId) -> bool {
        self.mirror.insert_new(snapshot, owner)
    }

    /// Loads an entity from the store at its stored epoch and version, with no live owner.
    pub fn load_entity(&mut self, snapshot: EntitySnapshot, epoch: Epoch, version: u64) {
        self.mirror
            .insert_restored(snapshot, ShardId::new("unplaced"), epoch, version);
    }

    /// Takes the placement loaded from the store as the current one, with its world if it
    /// carries one. Its shards are not live yet; each gets its leaves (and the entities in
    /// them) when it links.
    pub fn load_placement(&mut self, mut p: Placement) {
        match &p.world {
            Some(world) => self.world = world.clone(),
            None => p.world = Some(self.world.clone()),
        }
        self.placement = p;
        self.seen.extend(self.placement.sectors.values().cloned());
    }

    pub fn mirror_mut(&mut self) -> &mut Mirror {
        &mut self.mirror
    }
}

/// Whether the `n`th refusal is logged: a shard with a stale view can be refused every tick,
/// and the counter (`sidereal_refusals_total`) already says how often.
pub(crate) fn should_log(n: u64) -> bool {
    n <= 20 || n.is_multiple_of(1000)
}

impl Mirror {
    fn check_owner_unchecked(&mut self, id: EntityId) -> &mut crate::mirror::EntityRecord {
        self.get_mut(id).expect("caller checked existence")
    }
}

#[cfg(test)]
mod tests;
