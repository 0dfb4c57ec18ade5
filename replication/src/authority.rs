//! The replication authority: shard links, the entity mirror and the placement table, as a
//! plain state machine. It takes shard messages and placement requests, and queues messages
//! for shards; the I/O shell (TCP server, in-process harness) moves bytes. Everything here is
//! deterministic and testable without sockets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sidereal_core::codec::UpdateDecoder;
use sidereal_core::placement::{self, PlacementError, leaf_covering};
use sidereal_core::protocol::{
    Adoption, PROTOCOL_VERSION, ReplicationMessage, Shadow, ShardMessage,
};
use sidereal_core::{
    EntityId, EntityKind, EntitySnapshot, Epoch, Placement, SectorId, ShardId, ShardLoadReport,
};
use tracing::{info, warn};

use crate::mirror::{Mirror, Refusal};

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
    #[error("wrong shard secret from {shard}")]
    WrongSecret { shard: ShardId },
    #[error("invalid shard name {0:?}")]
    BadName(String),
    #[error("shard {0} is already connected")]
    AlreadyConnected(ShardId),
    #[error("second Hello on an established link")]
    DuplicateHello,
    #[error("malformed update batch: {0}")]
    Codec(#[from] sidereal_core::codec::CodecError),
    #[error("frame error: {0}")]
    Frame(String),
}

/// Every `reason` label of `sidereal_links_rejected_total`: the authority's refusals
/// ([`LinkError::label`]) and the I/O shell's (`handshake_timeout`).
pub const LINK_REJECTION_REASONS: [&str; 9] = [
    "no_hello",
    "wrong_version",
    "wrong_secret",
    "bad_name",
    "already_connected",
    "duplicate_hello",
    "malformed_update",
    "malformed_frame",
    "handshake_timeout",
];

impl LinkError {
    /// Short, stable name of the failure for `sidereal_links_rejected_total{reason=...}`.
    pub fn label(&self) -> &'static str {
        match self {
            LinkError::NoHello => "no_hello",
            LinkError::WrongVersion { .. } => "wrong_version",
            LinkError::WrongSecret { .. } => "wrong_secret",
            LinkError::BadName(_) => "bad_name",
            LinkError::AlreadyConnected(_) => "already_connected",
            LinkError::DuplicateHello => "duplicate_hello",
            LinkError::Codec(_) => "malformed_update",
            LinkError::Frame(_) => "malformed_frame",
        }
    }
}

/// Why a desired placement was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutPlacementError {
    #[error("generation {given} is stale: the current generation is {current}")]
    Stale { given: u64, current: u64 },
    #[error("generation {0} was already applied with different contents")]
    Conflict(u64),
    #[error(transparent)]
    Invalid(#[from] PlacementError),
}

#[derive(Debug)]
struct Link {
    shard: Option<ShardId>,
    incarnation: u32,
    decoder: UpdateDecoder,
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
    /// Links closed for bad input (handshake refused, malformed data), by reason label. A
    /// link that merely closes or breaks (a killed shard) is not counted.
    pub links_rejected: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// Counts one link closed for bad input.
    pub fn link_rejected(&mut self, reason: &'static str) {
        *self.links_rejected.entry(reason).or_default() += 1;
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
    mirror: Mirror,
    /// The world's roots now: the configured ones until a placement brings its own.
    world: Vec<SectorId>,
    next_link: LinkId,
    next_incarnation: u32,
    outbox: Vec<(LinkId, ReplicationMessage)>,
    load: BTreeMap<ShardId, ShardLoadReport>,
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
            mirror: Mirror::default(),
            next_link: 1,
            next_incarnation: 1,
            outbox: Vec::new(),
            load: BTreeMap::new(),
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

    pub fn load(&self) -> &BTreeMap<ShardId, ShardLoadReport> {
        &self.load
    }

    /// Entity ids are minted with incarnations above everything already in the mirror
    /// (restored worlds keep their ids unique).
    pub fn reserve_incarnations_above(&mut self, incarnation: u32) {
        self.next_incarnation = self.next_incarnation.max(incarnation + 1);
    }

    pub fn take_outbox(&mut self) -> Vec<(LinkId, ReplicationMessage)> {
        std::mem::take(&mut self.outbox)
    }

    fn send_to(&mut self, shard: &ShardId, msg: ReplicationMessage) {
        if let Some(link) = self.live.get(shard) {
            self.outbox.push((*link, msg));
        }
    }

    pub fn connect(&mut self) -> LinkId {
        let id = self.next_link;
        self.next_link += 1;
        self.links.insert(
            id,
            Link {
                shard: None,
                incarnation: 0,
                decoder: UpdateDecoder::default(),
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
            return match msg {
                ShardMessage::Hello {
                    protocol,
                    shard,
                    secret,
                } => self.hello(link, protocol, shard, &secret),
                _ => Err(LinkError::NoHello),
            };
        };
        match msg {
            ShardMessage::Hello { .. } => return Err(LinkError::DuplicateHello),
            ShardMessage::Updates(bytes) => self.updates(link, &shard, &bytes)?,
            ShardMessage::Spawned { snapshot } => self.spawned(link, &shard, snapshot),
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
            ShardMessage::Released {
                generation: _,
                entities,
            } => {
                for (snapshot, epoch) in entities {
                    // Released because its root left the world: it is archived already.
                    if self.mirror.is_archived(snapshot.id) {
                        self.forget_on_link(link, snapshot.id);
                        continue;
                    }
                    self.handover_out(link, &shard, snapshot, epoch);
                }
            }
            ShardMessage::Load(report) => {
                self.load.insert(shard, report);
            }
        }
        Ok(())
    }

    fn hello(
        &mut self,
        link: LinkId,
        protocol: u32,
        shard: ShardId,
        secret: &str,
    ) -> Result<(), LinkError> {
        let result = if protocol != PROTOCOL_VERSION {
            Err(LinkError::WrongVersion { got: protocol })
        } else if !constant_time_eq(secret.as_bytes(), self.config.secret.as_bytes()) {
            Err(LinkError::WrongSecret {
                shard: shard.clone(),
            })
        } else if shard.0.is_empty()
            || shard.0.len() > 63
            || !shard
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            Err(LinkError::BadName(shard.0.clone()))
        } else if self.live.contains_key(&shard) {
            Err(LinkError::AlreadyConnected(shard.clone()))
        } else {
            Ok(())
        };
        if let Err(e) = result {
            self.outbox.push((
                link,
                ReplicationMessage::Rejected {
                    reason: e.to_string(),
                },
            ));
            return Err(e);
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let l = self.links.get_mut(&link).expect("checked by caller");
        l.shard = Some(shard.clone());
        l.incarnation = incarnation;
        self.live.insert(shard.clone(), link);
        self.seen.insert(shard.clone());
        info!(%shard, incarnation, "shard linked");
        self.outbox.push((
            link,
            ReplicationMessage::Welcome {
                incarnation,
                tick_hz: self.config.tick_hz,
            },
        ));
        self.send_assignment(&shard);
        // A shard that comes back (restarted pod) gets back whatever the mirror says it owns,
        // and whatever lies in its leaves with no live owner (a restored world, a dead shard).
        let mine: Vec<EntityId> = self
            .mirror
            .iter()
            .filter(|(_, r)| {
                r.owner == shard
                    || (!self.live.contains_key(&r.owner)
                        && self
                            .leaf_of(&r.snapshot)
                            .is_some_and(|l| self.placement.sectors[&l] == shard))
            })
            .map(|(id, _)| *id)
            .collect();
        self.readopt(&shard, mine);
        Ok(())
    }

    fn send_assignment(&mut self, shard: &ShardId) {
        let sectors: Vec<SectorId> = self
            .placement
            .sectors
            .iter()
            .filter(|(_, s)| *s == shard)
            .map(|(l, _)| *l)
            .collect();
        let msg = ReplicationMessage::Assign {
            generation: self.placement.generation,
            sectors,
            world: self.world.clone(),
        };
        self.send_to(shard, msg);
    }

    /// Hands `ids` (from the mirror's state) to `to` at a new epoch.
    fn readopt(&mut self, to: &ShardId, ids: Vec<EntityId>) {
        let mut adopt = Vec::new();
        for id in ids {
            let Some(r) = self.mirror.get(id) else {
                continue;
            };
            let snapshot = r.snapshot;
            if let Some(epoch) = self.mirror.hand_over(id, snapshot, to.clone()) {
                adopt.push(Adoption { snapshot, epoch });
            }
        }
        if !adopt.is_empty() {
            self.send_to(to, ReplicationMessage::Adopt { entities: adopt });
        }
    }

    fn refuse(&mut self, shard: &ShardId, what: &str, r: Refusal) {
        self.counters.refusals += 1;
        warn!(%shard, what, reason = %r, "refused");
    }

    fn forget_on_link(&mut self, link: LinkId, id: EntityId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.decoder.forget(id);
        }
    }

    fn updates(&mut self, link: LinkId, shard: &ShardId, bytes: &[u8]) -> Result<(), LinkError> {
        let l = self.links.get_mut(&link).expect("live link");
        let (_tick, decoded) = l.decoder.decode(bytes)?;
        let mut forget: Vec<(ShardId, EntityId)> = Vec::new();
        for u in decoded {
            // Its root just left the world; the shard has not applied that placement yet.
            // The archive keeps the state it was archived with.
            if self.mirror.is_archived(u.id) {
                continue;
            }
            // An update from the new owner at the current epoch proves the adoption as well
            // as `Adopted` does: an entity whose `Adopted` went missing (or was refused as
            // stale in a crossing) does not stay in transit, simulated by nobody, forever.
            let adopted = self
                .mirror
                .get(u.id)
                .is_some_and(|r| r.in_transit && &r.owner == shard && r.epoch == u.epoch);
            if adopted {
                let r = self.mirror.check_owner_unchecked(u.id);
                r.in_transit = false;
                if let Some(prev) = r.previous_owner.take()
                    && &prev != shard
                {
                    forget.push((prev, u.id));
                }
            }
            match self.mirror.check_owner(u.id, shard, Some(u.epoch)) {
                Ok(r) => {
                    r.snapshot.state = u.state.to_state();
                    r.version += 1;
                    self.mirror.touch(u.id);
                    self.counters.updates_applied += 1;
                }
                Err(r) => {
                    self.counters.updates_refused += 1;
                    self.refuse(shard, "update", r);
                }
            }
        }
        let mut by_shard: BTreeMap<ShardId, Vec<EntityId>> = BTreeMap::new();
        for (prev, id) in forget {
            by_shard.entry(prev).or_default().push(id);
        }
        for (prev, ids) in by_shard {
            self.send_to(&prev, ReplicationMessage::Forget { ids });
        }
        Ok(())
    }

    fn leaf_of(&self, snapshot: &EntitySnapshot) -> Option<SectorId> {
        let s = SectorId::of_point(snapshot.state.point(), 0).ok()?;
        leaf_covering(&self.placement.sectors, s)
    }

    fn spawned(&mut self, link: LinkId, shard: &ShardId, snapshot: EntitySnapshot) {
        let incarnation = self.links[&link].incarnation;
        let why = if (snapshot.id.0 >> EntityId::COUNTER_BITS) as u32 != incarnation {
            Some(format!(
                "{} was not minted by this link (incarnation {incarnation})",
                snapshot.id
            ))
        } else if !snapshot.state.is_finite() {
            Some(format!("{} has a non-finite state", snapshot.id))
        } else if self.mirror.contains(snapshot.id) {
            Some(format!("{} already exists", snapshot.id))
        } else {
            match self.leaf_of(&snapshot) {
                Some(leaf) if &self.placement.sectors[&leaf] == shard => None,
                Some(leaf) => Some(format!(
                    "{} spawned in {leaf}, which {shard} does not own",
                    snapshot.id
                )),
                None => Some(format!("{} spawned outside the world", snapshot.id)),
            }
        };
        match why {
            Some(reason) => {
                self.counters.refusals += 1;
                warn!(%shard, %reason, "spawn refused");
            }
            None => {
                self.mirror.insert_new(snapshot, shard.clone());
                self.counters.spawns += 1;
            }
        }
    }

    fn handover_out(
        &mut self,
        link: LinkId,
        shard: &ShardId,
        snapshot: EntitySnapshot,
        epoch: Epoch,
    ) {
        if let Err(r) = self.mirror.check_owner(snapshot.id, shard, Some(epoch)) {
            return self.refuse(shard, "handover", r);
        }
        if !snapshot.state.is_finite() {
            self.counters.refusals += 1;
            warn!(%shard, id = %snapshot.id, "handover with non-finite state refused; the mirror keeps the last good state");
            let last = self.mirror.get(snapshot.id).expect("checked").snapshot;
            return self.handover_to_leaf_owner(link, shard, last);
        }
        self.handover_to_leaf_owner(link, shard, snapshot);
    }

    fn handover_to_leaf_owner(
        &mut self,
        link: LinkId,
        from: &ShardId,
        mut snapshot: EntitySnapshot,
    ) {
        self.forget_on_link(link, snapshot.id);
        if self.leaf_of(&snapshot).is_none() {
            // It left the world (a collision pushed it past the edge): put it back just inside,
            // moving inwards. Handing it back unchanged would bounce it between owners forever.
            clamp_into_world(&mut snapshot, &self.world);
        }
        let to = self
            .leaf_of(&snapshot)
            .map(|l| self.placement.sectors[&l].clone())
            .unwrap_or_else(|| from.clone());
        let epoch = self
            .mirror
            .hand_over(snapshot.id, snapshot, to.clone())
            .expect("checked owner");
        self.counters.handovers += 1;
        self.send_to(
            &to,
            ReplicationMessage::Adopt {
                entities: vec![Adoption { snapshot, epoch }],
            },
        );
    }

    fn adopted(&mut self, shard: &ShardId, ids: &[(EntityId, Epoch)]) {
        let mut forget: BTreeMap<ShardId, Vec<EntityId>> = BTreeMap::new();
        for &(id, epoch) in ids {
            let Some(r) = self.mirror.get(id) else {
                continue;
            };
            if &r.owner != shard || r.epoch != epoch {
                let reason = Refusal::StaleEpoch {
                    id,
                    got: epoch,
                    current: r.epoch,
                };
                self.refuse(shard, "adoption", reason);
                continue;
            }
            let r = self.mirror.check_owner_unchecked(id);
            r.in_transit = false;
            if let Some(prev) = r.previous_owner.take()
                && &prev != shard
            {
                forget.entry(prev).or_default().push(id);
            }
        }
        for (prev, ids) in forget {
            self.send_to(&prev, ReplicationMessage::Forget { ids });
        }
    }

    /// Applies a whole desired placement. Idempotent: the same generation and contents again
    /// is a no-op. Leaves whose shard changes are handed over: a live old owner releases their
    /// entities itself; a dead one's entities are re-homed from the mirror.
    pub fn put_placement(&mut self, desired: Placement) -> Result<bool, PutPlacementError> {
        let result = self.apply_placement(desired);
        if let Err(PutPlacementError::Stale { .. } | PutPlacementError::Conflict(_)) = &result {
            self.counters.placement_conflicts += 1;
        }
        result
    }

    fn apply_placement(&mut self, desired: Placement) -> Result<bool, PutPlacementError> {
        let current = self.placement.generation;
        if desired.generation < current {
            return Err(PutPlacementError::Stale {
                given: desired.generation,
                current,
            });
        }
        let world = desired.world.clone().unwrap_or_else(|| self.world.clone());
        if desired.generation == current && current != 0 {
            return if desired.sectors == self.placement.sectors && world == self.world {
                Ok(false)
            } else {
                Err(PutPlacementError::Conflict(current))
            };
        }
        placement::validate_world(&world)?;
        placement::validate(&desired.sectors, &world, &self.seen)?;
        self.placement = Placement {
            world: Some(world.clone()),
            ..desired
        };
        let (archived, restored) = if world != self.world {
            self.world = world;
            self.archive_and_restore()
        } else {
            (0, 0)
        };
        info!(
            generation = self.placement.generation,
            leaves = self.placement.sectors.len(),
            roots = self.world.len(),
            archived,
            restored,
            "placement applied"
        );
        // Tell every live shard its (possibly unchanged) set; shards ignore unchanged sets.
        let live: Vec<ShardId> = self.live.keys().cloned().collect();
        for shard in &live {
            self.send_assignment(shard);
        }
        // Entities of dead shards: the mirror is the snapshot.
        let mut by_target: HashMap<ShardId, Vec<EntityId>> = HashMap::new();
        for (id, r) in self.mirror.iter() {
            if !self.live.contains_key(&r.owner)
                && let Some(leaf) = self.leaf_of(&r.snapshot)
            {
                let target = &self.placement.sectors[&leaf];
                if self.live.contains_key(target) {
                    by_target.entry(target.clone()).or_default().push(*id);
                }
            }
        }
        for (target, ids) in by_target {
            self.readopt(&target, ids);
        }
        Ok(true)
    }

    /// After the roots changed: entities no root covers leave the simulation for the archive
    /// (projectiles, which live for seconds, simply end), and archived entities a root covers
    /// again come back, to be adopted by the owner of their leaf. (archived, restored)
    fn archive_and_restore(&mut self) -> (usize, usize) {
        let inside = |world: &[SectorId], s: &EntitySnapshot| {
            SectorId::of_point(s.state.point(), 0)
                .is_ok_and(|cell| world.iter().any(|r| r.covers(&cell)))
        };
        let leaving: Vec<(EntityId, EntityKind)> = self
            .mirror
            .iter()
            .filter(|(_, r)| !inside(&self.world, &r.snapshot))
            .map(|(id, r)| (*id, r.snapshot.kind))
            .collect();
        let returning: Vec<EntityId> = self
            .mirror
            .archived()
            .filter(|(_, r)| inside(&self.world, &r.snapshot))
            .map(|(id, _)| *id)
            .collect();
        let mut archived = 0;
        for (id, kind) in leaving {
            if kind == EntityKind::Projectile {
                self.mirror.remove(id);
            } else if self.mirror.archive(id) {
                archived += 1;
            }
        }
        for id in &returning {
            self.mirror.unarchive(*id, ShardId::new("unplaced"));
        }
        self.counters.archived += archived as u64;
        self.counters.restored += returning.len() as u64;
        (archived, returning.len())
    }

    /// Per live shard, the entities of other owners within the shadow margin of its sectors.
    pub fn send_shadows(&mut self, tick: u64) {
        let margin = self.config.shadow_margin;
        let mut per_shard: BTreeMap<ShardId, Vec<Shadow>> =
            self.live.keys().map(|s| (s.clone(), Vec::new())).collect();
        let bounds: Vec<(sidereal_core::Bounds, &ShardId)> = self
            .placement
            .sectors
            .iter()
            .map(|(l, s)| (l.bounds(), s))
            .collect();
        for r in self.mirror.iter().map(|(_, r)| r) {
            let p = r.snapshot.state.point();
            for (b, shard) in &bounds {
                if *shard != &r.owner
                    && b.distance_to(p) <= margin
                    && let Some(v) = per_shard.get_mut(*shard)
                    && v.last().is_none_or(|s| s.snapshot.id != r.snapshot.id)
                {
                    v.push(Shadow {
                        snapshot: r.snapshot,
                    });
                }
            }
        }
        for (shard, shadows) in per_shard {
            self.send_to(&shard, ReplicationMessage::Shadows { tick, shadows });
        }
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

    /// Loads an archived entity from the store (its root is not in the world).
    pub fn load_archived_entity(&mut self, snapshot: EntitySnapshot, epoch: Epoch, version: u64) {
        self.mirror.insert_archived(snapshot, epoch, version);
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

impl Mirror {
    fn check_owner_unchecked(&mut self, id: EntityId) -> &mut crate::mirror::EntityRecord {
        self.get_mut(id).expect("caller checked existence")
    }
}

/// Moves an entity outside every root to the nearest point just inside the closest root and
/// turns its velocity inwards.
fn clamp_into_world(snapshot: &mut EntitySnapshot, world: &[SectorId]) {
    let p = snapshot.state.point();
    let Some(b) = world
        .iter()
        .map(|r| r.bounds())
        .min_by(|a, b| a.distance_to(p).total_cmp(&b.distance_to(p)))
    else {
        return;
    };
    let inset = 0.5;
    let s = &mut snapshot.state;
    let (x, y) = (f64::from(s.pos[0]), f64::from(s.pos[1]));
    let cx = x.clamp(b.min.x + inset, b.max.x - inset);
    let cy = y.clamp(b.min.y + inset, b.max.y - inset);
    if cx != x {
        s.vel[0] = if cx > x {
            s.vel[0].abs()
        } else {
            -s.vel[0].abs()
        };
    }
    if cy != y {
        s.vel[1] = if cy > y {
            s.vel[1].abs()
        } else {
            -s.vel[1].abs()
        };
    }
    s.pos = [cx as f32, cy as f32];
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidereal_core::codec::UpdateEncoder;
    use sidereal_core::{EntityKind, EntityState};

    fn authority() -> Authority {
        Authority::new(AuthorityConfig {
            world: vec![SectorId::new(1, 0, 0).unwrap()],
            secret: "s3cret".into(),
            tick_hz: 30,
            shadow_margin: 50.0,
        })
    }

    fn hello(a: &mut Authority, name: &str) -> Result<LinkId, LinkError> {
        let link = a.connect();
        a.on_message(
            link,
            ShardMessage::Hello {
                protocol: PROTOCOL_VERSION,
                shard: ShardId::new(name),
                secret: "s3cret".into(),
            },
        )
        .map(|_| link)
    }

    fn snap(id: EntityId, x: f32, y: f32) -> EntitySnapshot {
        EntitySnapshot {
            id,
            kind: EntityKind::Asteroid,
            state: EntityState {
                pos: [x, y],
                ..Default::default()
            },
            ttl_ticks: None,
            player: false,
        }
    }

    /// Two shards, the root's children split between them, one entity on each.
    fn two_shards() -> (Authority, LinkId, LinkId) {
        let mut a = authority();
        let l0 = hello(&mut a, "shard-0").unwrap();
        let l1 = hello(&mut a, "shard-1").unwrap();
        a.restore_entity(snap(EntityId(1), 100.0, 100.0), ShardId::new("unplaced"));
        a.restore_entity(snap(EntityId(2), 1500.0, 100.0), ShardId::new("unplaced"));
        let kids = SectorId::new(1, 0, 0).unwrap().children().unwrap();
        let p = Placement {
            generation: 1,
            sectors: kids
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, ShardId::new(format!("shard-{}", i % 2))))
                .collect(),
            world: None,
        };
        a.put_placement(p).unwrap();
        for id in [1, 2] {
            let r = a.mirror.get(EntityId(id)).unwrap().clone();
            let link = if r.owner.0 == "shard-0" { l0 } else { l1 };
            a.on_message(
                link,
                ShardMessage::Adopted {
                    ids: vec![(EntityId(id), r.epoch)],
                },
            )
            .unwrap();
        }
        a.take_outbox();
        (a, l0, l1)
    }

    #[test]
    fn handshakes_with_wrong_secret_version_or_name_are_rejected_with_a_reason() {
        let mut a = authority();
        let link = a.connect();
        let e = a.on_message(
            link,
            ShardMessage::Hello {
                protocol: PROTOCOL_VERSION,
                shard: ShardId::new("x"),
                secret: "nope".into(),
            },
        );
        assert_eq!(
            e,
            Err(LinkError::WrongSecret {
                shard: ShardId::new("x")
            })
        );
        let out = a.take_outbox();
        assert!(
            matches!(&out[..], [(l, ReplicationMessage::Rejected { reason })] if *l == link && reason.contains("wrong shard secret"))
        );
        let link = a.connect();
        let e = a.on_message(
            link,
            ShardMessage::Hello {
                protocol: 99,
                shard: ShardId::new("x"),
                secret: "s3cret".into(),
            },
        );
        assert_eq!(e, Err(LinkError::WrongVersion { got: 99 }));
        let link = a.connect();
        let e = a.on_message(
            link,
            ShardMessage::Hello {
                protocol: PROTOCOL_VERSION,
                shard: ShardId::new("bad name!"),
                secret: "s3cret".into(),
            },
        );
        assert!(matches!(e, Err(LinkError::BadName(_))));
        let link = a.connect();
        assert_eq!(
            a.on_message(link, ShardMessage::Updates(vec![])),
            Err(LinkError::NoHello)
        );
        assert_eq!(a.counters.links_rejected_total(), 4);
        assert_eq!(a.counters.links_rejected["wrong_secret"], 1);
        assert_eq!(a.counters.links_rejected["no_hello"], 1);
        assert!(a.live_shards().is_empty());
    }

    #[test]
    fn a_second_connection_under_a_live_name_is_refused() {
        let mut a = authority();
        hello(&mut a, "shard-0").unwrap();
        assert_eq!(
            hello(&mut a, "shard-0"),
            Err(LinkError::AlreadyConnected(ShardId::new("shard-0")))
        );
        assert_eq!(a.live_shards().len(), 1);
    }

    #[test]
    fn updates_from_a_non_owner_or_a_stale_epoch_are_refused_and_change_nothing() {
        let (mut a, l0, l1) = two_shards();
        let owner0 = a.mirror.get(EntityId(1)).unwrap().clone();
        assert_eq!(owner0.owner.0, "shard-0");
        let moved = EntityState {
            pos: [200.0, 200.0],
            ..Default::default()
        };
        // shard-1 claims entity 1.
        let mut enc = UpdateEncoder::default();
        let bytes = enc
            .encode(1, &mut [(EntityId(1), owner0.epoch, moved)])
            .unwrap();
        a.on_message(l1, ShardMessage::Updates(bytes)).unwrap();
        // shard-0 with a stale epoch.
        let mut enc = UpdateEncoder::default();
        let bytes = enc
            .encode(1, &mut [(EntityId(1), owner0.epoch - 1, moved)])
            .unwrap();
        a.on_message(l0, ShardMessage::Updates(bytes)).unwrap();
        assert_eq!(a.counters.updates_refused, 2);
        assert_eq!(
            a.mirror.get(EntityId(1)).unwrap(),
            &owner0,
            "refused updates change nothing"
        );
        // The right owner at the right epoch is accepted.
        let mut enc = UpdateEncoder::default();
        let bytes = enc
            .encode(1, &mut [(EntityId(1), owner0.epoch, moved)])
            .unwrap();
        a.on_message(l0, ShardMessage::Updates(bytes)).unwrap();
        assert_eq!(
            a.mirror.get(EntityId(1)).unwrap().snapshot.state.pos,
            [200.0, 200.0]
        );
        // Stale despawn and handover are refused too.
        a.on_message(
            l0,
            ShardMessage::Despawned {
                id: EntityId(1),
                epoch: 0,
            },
        )
        .unwrap();
        a.on_message(
            l1,
            ShardMessage::HandoverOut {
                snapshot: snap(EntityId(1), 0.0, 0.0),
                epoch: owner0.epoch,
            },
        )
        .unwrap();
        assert!(a.mirror.contains(EntityId(1)));
        assert_eq!(a.mirror.get(EntityId(1)).unwrap().owner.0, "shard-0");
    }

    #[test]
    fn malformed_update_batches_close_the_link() {
        let (mut a, l0, _) = two_shards();
        assert!(matches!(
            a.on_message(l0, ShardMessage::Updates(vec![0xff; 3])),
            Err(LinkError::Codec(_))
        ));
    }

    #[test]
    fn spawns_in_sectors_the_shard_does_not_own_are_refused() {
        let (mut a, l0, _) = two_shards();
        let inc = a.links[&l0].incarnation;
        // (1500, 100) lies in the child placed on shard-1.
        a.on_message(
            l0,
            ShardMessage::Spawned {
                snapshot: snap(EntityId::minted(inc, 1), 1500.0, 100.0),
            },
        )
        .unwrap();
        // Ids minted under another incarnation are refused as well.
        a.on_message(
            l0,
            ShardMessage::Spawned {
                snapshot: snap(EntityId::minted(inc + 7, 1), 100.0, 100.0),
            },
        )
        .unwrap();
        let nan = EntitySnapshot {
            state: EntityState {
                pos: [f32::NAN, 1.0],
                ..Default::default()
            },
            ..snap(EntityId::minted(inc, 2), 0.0, 0.0)
        };
        a.on_message(l0, ShardMessage::Spawned { snapshot: nan })
            .unwrap();
        assert_eq!(a.mirror.len(), 2);
        assert_eq!(a.counters.refusals, 3);
        a.on_message(
            l0,
            ShardMessage::Spawned {
                snapshot: snap(EntityId::minted(inc, 3), 100.0, 100.0),
            },
        )
        .unwrap();
        assert_eq!(a.mirror.len(), 3);
    }

    #[test]
    fn crossing_hands_over_to_the_sector_owner_and_forgets_after_adoption() {
        let (mut a, l0, l1) = two_shards();
        let epoch = a.mirror.get(EntityId(1)).unwrap().epoch;
        a.on_message(
            l0,
            ShardMessage::HandoverOut {
                snapshot: snap(EntityId(1), 1001.0, 100.0),
                epoch,
            },
        )
        .unwrap();
        let r = a.mirror.get(EntityId(1)).unwrap();
        assert_eq!(
            (r.owner.0.as_str(), r.epoch, r.in_transit),
            ("shard-1", epoch + 1, true)
        );
        let out = a.take_outbox();
        assert!(out.iter().any(|(l, m)| *l == l1 && matches!(m, ReplicationMessage::Adopt { entities } if entities[0].epoch == epoch + 1)));
        a.on_message(
            l1,
            ShardMessage::Adopted {
                ids: vec![(EntityId(1), epoch + 1)],
            },
        )
        .unwrap();
        assert!(!a.mirror.get(EntityId(1)).unwrap().in_transit);
        let out = a.take_outbox();
        assert!(out.iter().any(|(l, m)| *l == l0
            && matches!(m, ReplicationMessage::Forget { ids } if ids == &vec![EntityId(1)])));
    }

    #[test]
    fn an_update_at_the_current_epoch_completes_an_adoption_whose_ack_went_missing() {
        let (mut a, l0, l1) = two_shards();
        let epoch = a.mirror.get(EntityId(1)).unwrap().epoch;
        a.on_message(
            l0,
            ShardMessage::HandoverOut {
                snapshot: snap(EntityId(1), 1001.0, 100.0),
                epoch,
            },
        )
        .unwrap();
        a.take_outbox();
        assert!(a.mirror.get(EntityId(1)).unwrap().in_transit);
        // shard-1 adopted it (its `Adopted` is never seen) and simulates it at the new epoch.
        let moved = EntityState {
            pos: [1010.0, 100.0],
            ..Default::default()
        };
        let mut enc = UpdateEncoder::default();
        let bytes = enc
            .encode(1, &mut [(EntityId(1), epoch + 1, moved)])
            .unwrap();
        a.on_message(l1, ShardMessage::Updates(bytes)).unwrap();
        let r = a.mirror.get(EntityId(1)).unwrap();
        assert!(!r.in_transit, "the update completed the adoption");
        assert_eq!(r.snapshot.state.pos, [1010.0, 100.0]);
        let out = a.take_outbox();
        assert!(out.iter().any(|(l, m)| *l == l0
            && matches!(m, ReplicationMessage::Forget { ids } if ids == &vec![EntityId(1)])));
        // The late `Adopted` is harmless: same epoch, already settled, nothing sent again.
        a.on_message(
            l1,
            ShardMessage::Adopted {
                ids: vec![(EntityId(1), epoch + 1)],
            },
        )
        .unwrap();
        assert!(!a.mirror.get(EntityId(1)).unwrap().in_transit);
        assert!(a.take_outbox().is_empty());
    }

    #[test]
    fn an_entity_pushed_out_of_the_world_comes_back_inside_instead_of_bouncing() {
        let (mut a, l0, _) = two_shards();
        let epoch = a.mirror.get(EntityId(1)).unwrap().epoch;
        let mut out = snap(EntityId(1), -3.0, 100.0);
        out.state.vel = [-5.0, 1.0];
        a.on_message(
            l0,
            ShardMessage::HandoverOut {
                snapshot: out,
                epoch,
            },
        )
        .unwrap();
        let r = a.mirror.get(EntityId(1)).unwrap();
        let s = r.snapshot.state;
        assert!(s.pos[0] > 0.0 && s.pos[0] < 1.0, "{:?}", s.pos);
        assert_eq!(s.vel, [5.0, 1.0], "moving inwards");
        assert_eq!(r.owner.0, "shard-0", "the owner of the leaf it is back in");
    }

    #[test]
    fn placement_generations_are_idempotent_and_monotonic() {
        let (mut a, _, _) = two_shards();
        let p = a.placement().clone();
        assert_eq!(
            a.put_placement(p.clone()),
            Ok(false),
            "same generation and contents is a no-op"
        );
        let mut other = p.clone();
        let first = *other.sectors.keys().next().unwrap();
        other.sectors.insert(first, ShardId::new("shard-1"));
        assert_eq!(
            a.put_placement(other.clone()),
            Err(PutPlacementError::Conflict(1))
        );
        let mut old = p.clone();
        old.generation = 0;
        assert!(matches!(
            a.put_placement(old),
            Err(PutPlacementError::Stale { .. })
        ));
        other.generation = 2;
        other.sectors.insert(first, ShardId::new("ghost"));
        assert!(matches!(
            a.put_placement(other),
            Err(PutPlacementError::Invalid(
                PlacementError::UnknownShard { .. }
            ))
        ));
        assert_eq!(a.placement(), &p);
    }

    #[test]
    fn roots_come_and_go_with_the_placement_and_their_entities_are_archived_then_restored() {
        let (mut a, l0, _l1) = two_shards();
        let west = SectorId::new(1, 0, 0).unwrap();
        let east = SectorId::new(1, 1, 0).unwrap();
        let shard = |n: &str| ShardId::new(n);
        assert_eq!(a.placement().world.as_deref(), Some(&[west][..]));
        // An entity waiting where the world does not reach yet.
        a.restore_entity(snap(EntityId(3), 2500.0, 100.0), shard("unplaced"));

        // Grow the world at runtime: a second root, placed on shard-1, whose entity is adopted.
        let mut grown = a.placement().clone();
        grown.generation = 2;
        grown.world = Some(vec![west, east]);
        grown.sectors.insert(east, shard("shard-1"));
        assert_eq!(a.put_placement(grown), Ok(true));
        assert_eq!(a.world(), [west, east]);
        assert_eq!(a.mirror.get(EntityId(3)).unwrap().owner, shard("shard-1"));
        let told_world = a.take_outbox().into_iter().any(
            |(_, m)| matches!(m, ReplicationMessage::Assign { world, .. } if world == [west, east]),
        );
        assert!(told_world, "live shards learn the new world");
        let before: Vec<_> = [1, 2]
            .map(|i| a.mirror.get(EntityId(i)).unwrap().clone())
            .into();

        // Remove the west root: its entities leave the simulation for the archive, unchanged.
        let shrunk = Placement {
            generation: 3,
            sectors: [(east, shard("shard-1"))].into(),
            world: Some(vec![east]),
        };
        assert_eq!(a.put_placement(shrunk), Ok(true));
        assert_eq!(a.mirror.len(), 1);
        assert_eq!(a.mirror.archived_len(), 2);
        assert!(a.mirror.is_archived(EntityId(1)) && a.mirror.is_archived(EntityId(2)));
        // The shard that owned one lets it go; that is not a refusal.
        let refusals = a.counters.refusals;
        a.on_message(
            l0,
            ShardMessage::Released {
                generation: 3,
                entities: vec![(before[0].snapshot, before[0].epoch)],
            },
        )
        .unwrap();
        // An update racing the removal (sent before the shard saw the placement) is dropped:
        // the archive keeps the state it was archived with.
        let mut enc = UpdateEncoder::default();
        let moved = EntityState {
            pos: [300.0, 300.0],
            ..Default::default()
        };
        let bytes = enc
            .encode(9, &mut [(EntityId(1), before[0].epoch, moved)])
            .unwrap();
        a.on_message(l0, ShardMessage::Updates(bytes)).unwrap();
        assert_eq!(a.counters.refusals, refusals);
        assert!(a.mirror.get(EntityId(1)).is_none(), "out of the simulation");

        // Re-create the root: the same entities come back, as they were, to its new owner.
        let back = Placement {
            generation: 4,
            sectors: [(west, shard("shard-0")), (east, shard("shard-1"))].into(),
            world: Some(vec![west, east]),
        };
        assert_eq!(a.put_placement(back), Ok(true));
        assert_eq!(a.mirror.archived_len(), 0);
        for old in &before {
            let now = a.mirror.get(old.snapshot.id).unwrap();
            assert_eq!(now.snapshot, old.snapshot, "restored exactly");
            assert_eq!(now.owner, shard("shard-0"));
            assert!(now.epoch > old.epoch, "adopted at a new epoch");
        }
        assert_eq!((a.counters.archived, a.counters.restored), (2, 2));
    }

    #[test]
    fn a_world_of_overlapping_roots_is_refused_and_one_of_no_roots_archives_everything() {
        let (mut a, _, _) = two_shards();
        let p = a.placement().clone();
        let west = SectorId::new(1, 0, 0).unwrap();
        let inner = SectorId::new(0, 1, 1).unwrap();
        let mut bad = p.clone();
        bad.generation = 2;
        bad.world = Some(vec![west, inner]);
        assert_eq!(
            a.put_placement(bad),
            Err(PutPlacementError::Invalid(PlacementError::RootsOverlap(
                west, inner
            )))
        );
        assert_eq!(a.placement(), &p);
        assert_eq!(a.world(), [west]);
        // The last root deleted: nothing is simulated, nothing is lost.
        let empty = Placement {
            generation: 2,
            sectors: Default::default(),
            world: Some(vec![]),
        };
        assert_eq!(a.put_placement(empty), Ok(true));
        assert_eq!((a.mirror.len(), a.mirror.archived_len()), (0, 2));
    }
}
