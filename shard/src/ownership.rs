//! Which sectors and entities this shard owns; adoption, release and handover.

use std::collections::{BTreeSet, HashMap};

use avian2d::prelude::*;
use bevy::prelude::*;
use sidereal_core::protocol::{ReplicationMessage, ShardMessage};
use sidereal_core::{Bounds, EntityId, EntitySnapshot, Epoch, Point, SectorId};
use tracing::{info, warn};

use crate::components::{Owned, Pilot, TickSet, Ttl, body, snapshot, state_of};
use crate::link::{Encoder, ReportRequest, ShardLink};
use crate::metrics::ShardMetrics;

/// The shard's view of what it owns.
#[derive(Resource, Debug, Default)]
pub struct Ownership {
    /// Link incarnation: prefixes the ids this shard mints. 0 until welcomed.
    pub incarnation: u32,
    next_counter: u64,
    pub generation: u64,
    /// Set through [`Ownership::assign`], which keeps the bounds below in step.
    pub sectors: BTreeSet<SectorId>,
    pub world: Vec<SectorId>,
    /// The bounds of `sectors` and of `world`, computed once per assignment: every entity is
    /// checked against them every tick.
    sector_bounds: Vec<(SectorId, Bounds)>,
    world_bounds: Vec<Bounds>,
    /// Owned entity ids to their Bevy entities.
    pub entities: HashMap<EntityId, Entity>,
    /// Handed over (or released), not yet confirmed by the new owner, at the epoch this shard
    /// held it: a resume after a lost link offers these again, so none is lost in between.
    pub handed_over: HashMap<EntityId, (EntitySnapshot, Epoch)>,
    /// Shadows held now (kept by the shadows plugin; owned entities are never among them).
    pub(crate) shadows: HashMap<EntityId, Entity>,
    /// Handovers sent so far (for metrics).
    pub handovers_out: u64,
    /// Entities that left this shard alive this tick (handed over or released), with where
    /// they were: the sector streams tell subscribers to wait for them. Emptied every tick.
    pub departed: Vec<(EntityId, [f32; 2])>,
    /// Entities that ended here this tick (despawned, disowned), with their epoch and where
    /// they were. Emptied every tick.
    pub ended: Vec<(EntityId, Epoch, [f32; 2])>,
}

impl Ownership {
    pub fn owns_point(&self, p: Point) -> bool {
        self.sector_bounds.iter().any(|(_, b)| b.contains(p))
    }

    /// The owned leaf that contains `p`.
    pub fn sector_of(&self, p: Point) -> Option<SectorId> {
        self.sector_bounds
            .iter()
            .find(|(_, b)| b.contains(p))
            .map(|(s, _)| *s)
    }

    pub fn in_world(&self, p: Point) -> bool {
        self.world_bounds.iter().any(|b| b.contains(p))
    }

    /// Takes a new assignment: the sectors this shard owns and the world's roots.
    pub fn assign(&mut self, generation: u64, sectors: Vec<SectorId>, world: Vec<SectorId>) {
        self.generation = generation;
        self.sectors = sectors.into_iter().collect();
        self.sector_bounds = self.sectors.iter().map(|s| (*s, s.bounds())).collect();
        self.world_bounds = world.iter().map(SectorId::bounds).collect();
        self.world = world;
    }

    /// Mints a new entity id; `None` before the handshake completed.
    pub fn mint(&mut self) -> Option<EntityId> {
        (self.incarnation != 0).then(|| {
            self.next_counter += 1;
            EntityId::minted(self.incarnation, self.next_counter)
        })
    }

    pub fn shadow_count(&self) -> usize {
        self.shadows.len()
    }
}

/// `Shadows` and `Neighbours` from replication this tick, for the shadows plugin.
#[derive(Resource, Default)]
pub struct ShadowNews(pub Vec<ReplicationMessage>);

pub struct OwnershipPlugin;

impl Plugin for OwnershipPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Ownership>()
            .init_resource::<ShadowNews>()
            .configure_sets(FixedUpdate, (TickSet::Receive, TickSet::Act).chain())
            .configure_sets(FixedLast, (TickSet::Settle, TickSet::Report).chain())
            .add_systems(
                FixedUpdate,
                apply_replication_messages.in_set(TickSet::Receive),
            )
            .add_systems(FixedFirst, forget_last_ticks_departures)
            .add_systems(FixedLast, hand_over_leavers.in_set(TickSet::Settle))
            .add_systems(FixedLast, publish_gauges.in_set(TickSet::Report));
    }
}

fn forget_last_ticks_departures(mut own: ResMut<Ownership>) {
    own.departed.clear();
    own.ended.clear();
}

/// Keeps the ownership gauges current; counters and histograms are written where things happen.
fn publish_gauges(metrics: Res<ShardMetrics>, own: Res<Ownership>) {
    metrics.entities.set(own.entities.len() as i64);
    metrics.shadows.set(own.shadow_count() as i64);
    metrics.sectors.set(own.sectors.len() as i64);
}

type OwnedState<'a> = (
    Entity,
    &'a Owned,
    &'a Position,
    &'a Rotation,
    &'a LinearVelocity,
    &'a AngularVelocity,
    Option<&'a Ttl>,
);

/// Applies everything replication sent since the last tick, at the tick boundary.
pub(crate) fn apply_replication_messages(
    mut commands: Commands,
    link: Res<ShardLink>,
    mut own: ResMut<Ownership>,
    (mut encoder, mut report): (ResMut<Encoder>, ResMut<ReportRequest>),
    owned: Query<OwnedState>,
    mut shadow_news: ResMut<ShadowNews>,
    metrics: Res<ShardMetrics>,
) {
    while let Ok(msg) = link.from_replication.try_recv() {
        match msg {
            ReplicationMessage::Welcome { incarnation, .. } => {
                let relinked = own.incarnation != 0;
                own.incarnation = incarnation;
                // Ids minted from here on carry the new incarnation: their counter starts over.
                own.next_counter = 0;
                if relinked {
                    resume(&link, &own, &mut encoder, &mut report, &owned, &metrics);
                } else {
                    info!(incarnation, "linked to replication");
                }
            }
            ReplicationMessage::Rejected { reason } => {
                warn!(%reason, "replication rejected this shard")
            }
            // The link's transport answers it before the app starts (the in-process harness
            // handshakes for the shard).
            ReplicationMessage::Challenge { .. } => {}
            ReplicationMessage::Assign {
                generation,
                sectors,
                world,
            } => {
                own.assign(generation, sectors, world);
                release_unowned(&mut commands, &link, &mut own, &mut encoder, &owned);
            }
            ReplicationMessage::Adopt { entities } => {
                let mut ids = Vec::with_capacity(entities.len());
                for a in entities {
                    let s = a.snapshot;
                    if let Some(old) = own.entities.remove(&s.id) {
                        commands.entity(old).despawn();
                    }
                    own.handed_over.remove(&s.id);
                    let mut e = commands.spawn((
                        Owned {
                            id: s.id,
                            kind: s.kind,
                            epoch: a.epoch,
                            player: s.player,
                        },
                        body(s.kind, &s.state),
                    ));
                    if let Some(t) = s.ttl_ticks {
                        e.insert(Ttl(t));
                    }
                    own.entities.insert(s.id, e.id());
                    ids.push((s.id, a.epoch));
                }
                link.send(ShardMessage::Adopted { ids });
            }
            ReplicationMessage::Controls { controls } => {
                for c in controls {
                    // A ship this shard does not simulate (handed over since): its new owner
                    // got the command with the ship.
                    if let Some(&e) = own.entities.get(&c.ship) {
                        commands.entity(e).insert(Pilot(c.command));
                    }
                }
            }
            ReplicationMessage::Forget { ids } => {
                for id in ids {
                    own.handed_over.remove(&id);
                }
            }
            ReplicationMessage::Disown { ids } => {
                let mut dropped = 0;
                for id in ids {
                    let Some(e) = own.entities.remove(&id) else {
                        continue;
                    };
                    let (epoch, pos) = owned.get(e).map_or((1, [f32::NAN; 2]), |(_, o, p, ..)| {
                        (o.epoch, [p.0.x, p.0.y])
                    });
                    own.ended.push((id, epoch, pos));
                    encoder.0.forget(id);
                    commands.entity(e).despawn();
                    link.send(ShardMessage::Despawned { id, epoch });
                    dropped += 1;
                }
                if dropped > 0 {
                    warn!(
                        dropped,
                        "replication does not know entities this shard simulated (a refused spawn); dropped them"
                    );
                }
            }
            // The link plugin answers it after this tick's updates.
            ReplicationMessage::Report { round } => report.0 = Some(round),
            // Where shadows come from is the shadows plugin's business.
            msg @ (ReplicationMessage::Shadows { .. } | ReplicationMessage::Neighbours { .. }) => {
                shadow_news.0.push(msg);
            }
        }
    }
}

/// Linked again after a lost link (to a new leader, or the same one after a cut): replication
/// knows nothing of this link's past, so the delta baseline and any report request start over,
/// and it gets everything this shard simulates and every handover not yet confirmed, each at
/// its epoch, before anything else on the new link.
fn resume(
    link: &ShardLink,
    own: &Ownership,
    encoder: &mut Encoder,
    report: &mut ReportRequest,
    owned: &Query<OwnedState>,
    metrics: &ShardMetrics,
) {
    *encoder = Encoder::default();
    report.0 = None;
    let entities: Vec<(EntitySnapshot, Epoch)> = owned
        .iter()
        .filter(|(e, o, ..)| own.entities.get(&o.id) == Some(e))
        .map(|(_, o, p, r, v, w, ttl)| (snapshot(o, state_of(p, r, v, w), ttl), o.epoch))
        .collect();
    let handed_over: Vec<(EntitySnapshot, Epoch)> = own.handed_over.values().copied().collect();
    info!(
        incarnation = own.incarnation,
        entities = entities.len(),
        handed_over = handed_over.len(),
        "linked to replication again; resuming with this shard's entities"
    );
    metrics.resumes.inc();
    link.send(ShardMessage::Resume {
        incarnation: own.incarnation,
        owned: entities,
        handed_over,
        last: true,
    });
}

/// After a new assignment: entities in sectors this shard no longer owns go back to
/// replication in one `Released` message, at this tick boundary.
fn release_unowned(
    commands: &mut Commands,
    link: &ShardLink,
    own: &mut Ownership,
    encoder: &mut Encoder,
    owned: &Query<OwnedState>,
) {
    let mut released: Vec<(EntitySnapshot, Epoch)> = Vec::new();
    for (e, o, p, r, v, w, ttl) in owned.iter() {
        let state = state_of(p, r, v, w);
        if !own.owns_point(state.point()) && own.entities.get(&o.id) == Some(&e) {
            let snap = snapshot(o, state, ttl);
            released.push((snap, o.epoch));
            own.handed_over.insert(o.id, (snap, o.epoch));
            own.departed.push((o.id, state.pos));
            own.entities.remove(&o.id);
            encoder.0.forget(o.id);
            commands.entity(e).despawn();
        }
    }
    if !released.is_empty() {
        info!(
            count = released.len(),
            generation = own.generation,
            "released entities of sectors moved away"
        );
        link.send(ShardMessage::Released {
            generation: own.generation,
            entities: released,
        });
    }
}

/// Entities that physics moved out of this shard's sectors are handed to replication, which
/// passes them to the owner of the sector they entered. Every entity's position is checked each
/// tick; only a leaver's whole state is read.
fn hand_over_leavers(
    mut commands: Commands,
    link: Res<ShardLink>,
    metrics: Res<ShardMetrics>,
    mut own: ResMut<Ownership>,
    mut encoder: ResMut<Encoder>,
    positions: Query<(Entity, &Position), With<Owned>>,
    owned: Query<OwnedState>,
) {
    for (e, p) in &positions {
        if own.owns_point(Point::new(p.0.x.into(), p.0.y.into())) {
            continue;
        }
        let Ok((e, o, p, r, v, w, ttl)) = owned.get(e) else {
            continue;
        };
        if own.entities.get(&o.id) != Some(&e) {
            continue;
        }
        let snap = snapshot(o, state_of(p, r, v, w), ttl);
        own.entities.remove(&o.id);
        own.handed_over.insert(o.id, (snap, o.epoch));
        own.departed.push((o.id, snap.state.pos));
        own.handovers_out += 1;
        metrics.handovers_out.inc();
        encoder.0.forget(o.id);
        commands.entity(e).despawn();
        link.send(ShardMessage::HandoverOut {
            snapshot: snap,
            epoch: o.epoch,
        });
    }
}
