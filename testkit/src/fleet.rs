//! An in-process fleet: one replication authority and several shard apps joined by channels,
//! stepped one tick at a time so invariants can be checked between ticks.

use std::collections::{HashMap, HashSet};

use bevy::app::App;
use crossbeam_channel::{Receiver, Sender};
use sidereal_core::protocol::{ReplicationMessage, ShardMessage};
use sidereal_core::{EntityId, EntitySnapshot, Epoch, Placement, SectorId, ShardId};
use sidereal_replication::{Authority, AuthorityConfig, LinkId};
use sidereal_shard::ownership::Ownership;
use sidereal_shard::tcp::ResumeGate;
use sidereal_shard::{Clock, ShardConfig, ShardLink, build_app};

pub const SECRET: &str = "test-secret";
pub const TICK_HZ: u32 = 30;

pub struct ShardProc {
    pub id: ShardId,
    pub app: App,
    pub link: LinkId,
    to_shard: Sender<ReplicationMessage>,
    from_shard: Receiver<ShardMessage>,
    /// The shard's sector-stream hub: subscribers join through it.
    pub streams: Sender<sidereal_shard::streams::HubEvent>,
    /// After a re-link: what the shard's transport lets through (nothing before its `Resume`).
    gate: Option<ResumeGate>,
    welcomed: bool,
}

/// What a store held at one checkpoint: every entity at its epoch and version, and the
/// placement.
#[derive(Debug, Clone)]
pub struct Stored {
    pub entities: Vec<(EntitySnapshot, Epoch, u64)>,
    pub placement: Placement,
    /// Incarnations reserved up to then (a new leader starts above them).
    pub incarnations_below: u32,
}

pub struct Fleet {
    pub authority: Authority,
    pub shards: Vec<Option<ShardProc>>,
    pub tick: u64,
    /// Link bytes of update batches, for the bytes-per-update figure.
    pub update_bytes: u64,
    pub update_entries: u64,
    /// Tick at which each in-flight handover left its old owner.
    handover_started: HashMap<EntityId, u64>,
    /// Ticks from leaving the old owner to being simulated by the new one, per handover.
    pub handover_ticks: Vec<u64>,
    /// Shards started from now on say they publish sector streams (at a made-up address: no
    /// one subscribes in process), so the authority treats them as shadowing themselves.
    pub announce_streams: bool,
}

impl Fleet {
    pub fn new(world: Vec<SectorId>, shards: usize, fire_every_ticks: u32) -> Self {
        let config = AuthorityConfig {
            world,
            secret: SECRET.into(),
            tick_hz: TICK_HZ,
            shadow_margin: 50.0,
        };
        let mut fleet = Fleet {
            authority: Authority::new(config),
            shards: Vec::new(),
            tick: 0,
            update_bytes: 0,
            update_entries: 0,
            handover_started: HashMap::new(),
            handover_ticks: Vec::new(),
            announce_streams: false,
        };
        for i in 0..shards {
            fleet.start_shard(&format!("shard-{i}"), i as u64 + 1, fire_every_ticks);
        }
        fleet
    }

    pub fn start_shard(&mut self, name: &str, seed: u64, fire_every_ticks: u32) -> usize {
        let (link, to_shard, from_shard) = ShardLink::pair();
        let mut app = build_app(
            ShardConfig {
                name: name.to_owned(),
                tick_hz: TICK_HZ,
                seed,
                fire_every_ticks,
            },
            link,
            Clock::Stepped,
        );
        let (streams, hub) = crossbeam_channel::unbounded();
        app.insert_resource(sidereal_shard::streams::StreamHub(hub));
        let challenge = [self.shards.len() as u8; 32];
        let link = self.authority.connect(challenge);
        let id = ShardId::new(name);
        self.authority
            .on_message(
                link,
                ShardMessage::hello(SECRET, &challenge, id.clone(), [0xa5; 32])
                    .publishing(self.announce_streams.then(|| format!("in-process/{name}"))),
            )
            .expect("handshake");
        self.shards.push(Some(ShardProc {
            id,
            app,
            link,
            to_shard,
            from_shard,
            streams,
            gate: None,
            welcomed: false,
        }));
        self.deliver();
        self.shards.len() - 1
    }

    pub fn shard_ids(&self) -> Vec<ShardId> {
        self.shards.iter().flatten().map(|s| s.id.clone()).collect()
    }

    /// Scatters `n` entities over the world (owned by nobody until placed), as replication
    /// seeds an empty world.
    pub fn seed(&mut self, n: usize, seed: u64) {
        sidereal_replication::server::seed_world(&mut self.authority, n, seed);
    }

    pub fn place(&mut self, p: Placement) {
        self.authority.put_placement(p).expect("valid placement");
        self.deliver();
    }

    pub fn place_even(&mut self) {
        let gen_ = self.authority.placement().generation + 1;
        let p =
            sidereal_core::placement::even(&self.authority.config().world, &self.shard_ids(), gen_);
        self.place(p);
    }

    fn deliver(&mut self) {
        let out = self.authority.take_outbox();
        let by_link: HashMap<LinkId, usize> = self
            .shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (s.link, i)))
            .collect();
        for (link, msg) in out {
            if let Some(&i) = by_link.get(&link) {
                let s = self.shards[i].as_mut().expect("live");
                // A second Welcome is a new link: as the TCP transport does, let nothing the
                // shard queued before its `Resume` for that link through.
                if let ReplicationMessage::Welcome { incarnation, .. } = &msg {
                    if s.welcomed {
                        s.gate = Some(ResumeGate::new(*incarnation));
                    }
                    s.welcomed = true;
                }
                let _ = s.to_shard.send(msg);
            }
        }
    }

    /// One tick: every shard simulates, then replication handles everything they sent and
    /// answers (answers are applied at the start of the next tick).
    pub fn step(&mut self) {
        self.tick += 1;
        for s in self.shards.iter_mut().flatten() {
            s.app.update();
        }
        self.pump();
    }

    fn pump(&mut self) {
        for i in 0..self.shards.len() {
            let Some(s) = &self.shards[i] else { continue };
            let mut gate = s.gate;
            let msgs: Vec<ShardMessage> = s
                .from_shard
                .try_iter()
                .filter(|m| gate.as_mut().is_none_or(|g| g.admit(m)))
                .collect();
            let link = s.link;
            self.shards[i].as_mut().expect("checked").gate = gate;
            for m in msgs {
                match &m {
                    ShardMessage::Updates(b) => {
                        self.update_bytes += b.len() as u64;
                        self.update_entries += sidereal_core::codec::batch_entries(b);
                    }
                    ShardMessage::HandoverOut { snapshot, .. } => {
                        self.handover_started.insert(snapshot.id, self.tick);
                    }
                    ShardMessage::Adopted { ids } => {
                        for (id, _) in ids {
                            if let Some(t) = self.handover_started.remove(id) {
                                // Adopted during tick `self.tick`, so simulated by the new owner from it on.
                                self.handover_ticks.push(self.tick - t);
                            }
                        }
                    }
                    _ => {}
                }
                self.authority
                    .on_message(link, m)
                    .expect("well-behaved shard");
            }
        }
        self.authority.send_shadows(self.tick);
        self.deliver();
    }

    /// One tick of the shards alone: replication is gone, what they send waits in their
    /// transport (and is dropped when they link again, as TCP's is).
    pub fn step_shards_only(&mut self) {
        self.tick += 1;
        for s in self.shards.iter_mut().flatten() {
            s.app.update();
        }
    }

    /// Every entity each live shard holds: those it simulates and those it handed over that no
    /// new owner confirmed yet.
    pub fn held(&self) -> Vec<(ShardId, HashSet<EntityId>)> {
        self.shards
            .iter()
            .flatten()
            .map(|s| {
                let own = s.app.world().resource::<Ownership>();
                let ids = own
                    .entities
                    .keys()
                    .chain(own.handed_over.keys())
                    .copied()
                    .collect();
                (s.id.clone(), ids)
            })
            .collect()
    }

    /// The replication half of `step` (the shards were updated by the caller).
    pub fn step_replication_only(&mut self) {
        self.tick += 1;
        self.pump();
    }

    /// Simulates `kill -9`: the shard vanishes without a word.
    pub fn kill(&mut self, i: usize) -> ShardId {
        let s = self.shards[i].take().expect("alive");
        self.authority.disconnect(s.link);
        s.id
    }

    /// What a checkpoint now would store (everything, as if every entity were dirty).
    pub fn stored(&self) -> Stored {
        let a = &self.authority;
        Stored {
            entities: a
                .mirror()
                .iter()
                .map(|(_, r)| (r.snapshot, r.epoch, r.version))
                .collect(),
            placement: a.placement().clone(),
            incarnations_below: a.next_incarnation(),
        }
    }

    /// A takeover: replication dies (kill -9: nothing more is sent or received) and a new
    /// leader starts from `stored`. Every shard kept simulating and links to it again,
    /// resuming; messages it queued meanwhile are dropped as its transport drops them.
    pub fn take_over(&mut self, stored: &Stored) {
        let mut a = Authority::new(self.authority.config().clone());
        for (snapshot, epoch, version) in &stored.entities {
            a.load_entity(*snapshot, *epoch, *version);
        }
        a.load_placement(stored.placement.clone());
        a.reserve_incarnations_above(stored.incarnations_below.saturating_sub(1));
        a.reserve_incarnations_above(a.max_incarnation());
        a.set_report_every(self.authority.report_every());
        a.begin_takeover();
        self.authority = a;
        self.handover_started.clear();
        for i in 0..self.shards.len() {
            if self.shards[i].is_some() {
                self.relink(i);
            }
        }
    }

    /// Shard `i` links again (a new connection), resuming with what it simulates.
    pub fn relink(&mut self, i: usize) {
        let announce = self.announce_streams;
        let s = self.shards[i].as_mut().expect("alive");
        let challenge = [0x40 + i as u8; 32];
        let link = self.authority.connect(challenge);
        let hello = ShardMessage::hello(SECRET, &challenge, s.id.clone(), [0xa5; 32])
            .publishing(announce.then(|| format!("in-process/{}", s.id)))
            .resuming(true);
        self.authority.on_message(link, hello).expect("handshake");
        s.link = link;
        self.deliver();
    }

    /// Re-homes dead shards' leaves onto live shards (what the operator or `sidereal up` does).
    pub fn rehome(&mut self) {
        let live = self.authority.live_shards();
        if let Some(p) = sidereal_core::placement::rehome(self.authority.placement(), &live) {
            self.place(p);
        }
    }

    /// The tick whose shard messages started `id`'s handover still in flight, if any.
    pub fn handover_started_at(&self, id: EntityId) -> Option<u64> {
        self.handover_started.get(&id).copied()
    }

    pub fn authoritative_sets(&self) -> Vec<(ShardId, HashSet<EntityId>)> {
        self.shards
            .iter()
            .flatten()
            .map(|s| {
                (
                    s.id.clone(),
                    s.app
                        .world()
                        .resource::<Ownership>()
                        .entities
                        .keys()
                        .copied()
                        .collect(),
                )
            })
            .collect()
    }

    /// The conservation invariants: every entity in exactly one place, owners agree.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen: HashMap<EntityId, ShardId> = HashMap::new();
        for (shard, set) in self.authoritative_sets() {
            for id in set {
                if let Some(other) = seen.insert(id, shard.clone()) {
                    return Err(format!(
                        "tick {}: {id} is authoritative on both {other} and {shard}",
                        self.tick
                    ));
                }
                let r = self.authority.mirror().get(id).ok_or_else(|| {
                    format!(
                        "tick {}: {id} simulated by {shard} but not in the mirror",
                        self.tick
                    )
                })?;
                if r.owner != shard {
                    return Err(format!(
                        "tick {}: {id} simulated by {shard} but the mirror says {}",
                        self.tick, r.owner
                    ));
                }
                if r.in_transit {
                    return Err(format!(
                        "tick {}: {id} simulated by {shard} but still in transit",
                        self.tick
                    ));
                }
            }
        }
        let live = self.authority.live_shards();
        for (id, r) in self.authority.mirror().iter() {
            if live.contains(&r.owner) && !r.in_transit && !seen.contains_key(id) {
                return Err(format!(
                    "tick {}: {id} owned by live {} (not in transit) but simulated nowhere",
                    self.tick, r.owner
                ));
            }
        }
        Ok(())
    }
}
