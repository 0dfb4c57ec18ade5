//! Shadows: read-only kinematic copies of other owners' entities near this shard's borders, so
//! that bodies collide across a border as they do inside a sector.
//!
//! They come from one of two places. When every shard of the fleet publishes sector streams,
//! replication sends each a `Neighbours` message (the leaves other shards own within the shadow
//! margin of its own, and where those shards publish) and the shard subscribes to those
//! streams itself ([`NeighbourFeed`]): shadows then never pass through replication. Otherwise
//! replication sends the shadow set itself (`Shadows`) every tick. Both end in
//! [`replace_shadows`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use avian2d::prelude::*;
use bevy::prelude::*;
use sidereal_core::protocol::ReplicationMessage;
use sidereal_core::sector_view::Source;
use sidereal_core::stream_client::{FeedOptions, SectorFeed};
use sidereal_core::{Bounds, EntitySnapshot, SectorId, ShardId};

use crate::components::{ShadowOf, TickSet, radius_of};
use crate::link::ReportEvery;
use crate::metrics::ShardMetrics;
use crate::ownership::{Ownership, ShadowNews, apply_replication_messages};

/// What replication said this shard's neighbours are.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighbourPlan {
    pub generation: u64,
    pub margin: f32,
    pub report_every: u32,
    pub sectors: BTreeMap<SectorId, ShardId>,
    pub streams: HashMap<ShardId, String>,
}

/// This shard's subscription to its neighbours' sector streams. Without a feed (in-process
/// fleets, `--stream off`), `Neighbours` messages are ignored and shadows come from replication.
#[derive(Resource, Default)]
pub struct NeighbourFeed {
    /// A `Mutex` only because resources must be `Sync`; one system uses it.
    feed: Option<Mutex<SectorFeed>>,
    /// `None` while replication sends the shadows itself.
    pub plan: Option<NeighbourPlan>,
    /// The tick of the shadow set replication is sending: parts of one set share it.
    shadow_tick: Option<u64>,
}

impl NeighbourFeed {
    /// A feed that names itself `name` to other shards and proves `secret`.
    pub fn new(name: &str, secret: &str, options: FeedOptions) -> Self {
        Self {
            feed: Some(Mutex::new(SectorFeed::new(name, secret, options))),
            plan: None,
            shadow_tick: None,
        }
    }
}

pub struct ShadowsPlugin;

impl Plugin for ShadowsPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<NeighbourFeed>().add_systems(
            FixedUpdate,
            (take_shadow_news, shadow_neighbours_streams)
                .chain()
                .in_set(TickSet::Receive)
                .after(apply_replication_messages),
        );
    }
}

pub(crate) type ShadowState<'a> = (
    &'a mut Position,
    &'a mut Rotation,
    &'a mut LinearVelocity,
    &'a mut AngularVelocity,
);
pub(crate) type ShadowQuery<'w, 's> =
    Query<'w, 's, ShadowState<'static>, (With<ShadowOf>, Without<crate::components::Owned>)>;

/// Replaces the shadow set with `list` (or, when `continuing`, extends the set being received:
/// a set too big for one frame comes in parts). Shadows that stay are moved in place; entities
/// this shard owns are never shadowed.
pub(crate) fn replace_shadows(
    commands: &mut Commands,
    own: &mut Ownership,
    shadows: &mut ShadowQuery,
    continuing: bool,
    list: impl IntoIterator<Item = EntitySnapshot>,
) {
    let mut previous = if continuing {
        HashMap::new()
    } else {
        std::mem::take(&mut own.shadows)
    };
    for s in list {
        if own.entities.contains_key(&s.id) {
            continue;
        }
        let existing = previous.remove(&s.id).or_else(|| own.shadows.remove(&s.id));
        let e = match existing.filter(|e| shadows.contains(*e)) {
            Some(e) => {
                let (mut p, mut r, mut v, mut w) = shadows.get_mut(e).expect("checked");
                p.0 = Vec2::from(s.state.pos);
                *r = Rotation::radians(s.state.angle);
                v.0 = Vec2::from(s.state.vel);
                w.0 = s.state.ang_vel;
                e
            }
            None => commands
                .spawn((
                    ShadowOf(s.id),
                    RigidBody::Kinematic,
                    Collider::circle(radius_of(s.kind)),
                    Position(Vec2::from(s.state.pos)),
                    Rotation::radians(s.state.angle),
                    LinearVelocity(Vec2::from(s.state.vel)),
                ))
                .id(),
        };
        own.shadows.insert(s.id, e);
    }
    for (_, e) in previous.drain() {
        commands.entity(e).despawn();
    }
}

/// Applies replication's `Shadows` (it computes them; shards report every tick) or
/// `Neighbours` (this shard takes them from its neighbours' streams).
fn take_shadow_news(
    mut commands: Commands,
    mut news: ResMut<ShadowNews>,
    mut neighbours: ResMut<NeighbourFeed>,
    mut report: ResMut<ReportEvery>,
    mut own: ResMut<Ownership>,
    mut shadows: ShadowQuery,
) {
    for msg in news.0.drain(..) {
        match msg {
            ReplicationMessage::Shadows {
                tick,
                shadows: list,
            } => {
                neighbours.plan = None;
                report.0 = 1;
                // A new tick's set replaces the old one; a further part of the same tick's set
                // (a set too big for one frame) extends it.
                let continuing = neighbours.shadow_tick == Some(tick);
                neighbours.shadow_tick = Some(tick);
                let list = list.into_iter().map(|s| s.snapshot);
                replace_shadows(&mut commands, &mut own, &mut shadows, continuing, list);
            }
            ReplicationMessage::Neighbours {
                generation,
                margin,
                report_every,
                sectors,
                streams,
            } => {
                neighbours.shadow_tick = None;
                report.0 = report_every;
                neighbours.plan = Some(NeighbourPlan {
                    generation,
                    margin,
                    report_every,
                    sectors: sectors.into_iter().collect(),
                    streams: streams.into_iter().collect(),
                });
            }
            _ => {}
        }
    }
}

/// Whether `p` lies within `margin` of any of `bounds`.
fn near_any(bounds: &[Bounds], p: sidereal_core::Point, margin: f64) -> bool {
    bounds.iter().any(|b| b.distance_to(p) <= margin)
}

/// The shadow set from the neighbours' streams: every entity they show within the margin of
/// this shard's leaves, except those waiting in transit (they are about to show again, here or
/// at a neighbour) and those this shard owns.
pub fn shadows_from_view<'a>(
    view: impl IntoIterator<Item = &'a sidereal_core::sector_view::ViewedEntity>,
    own_bounds: &[Bounds],
    margin: f64,
    owned: impl Fn(sidereal_core::EntityId) -> bool,
) -> Vec<EntitySnapshot> {
    view.into_iter()
        .filter(|e| !matches!(e.source, Source::InTransit { .. }) && !owned(e.id))
        .filter_map(|e| {
            let state = e.state();
            near_any(own_bounds, state.point(), margin).then_some(EntitySnapshot {
                id: e.id,
                kind: e.kind,
                state,
                ttl_ticks: None,
                player: false,
            })
        })
        .collect()
}

/// Each tick, while replication says who the neighbours are: follow their streams (the bands
/// along the edges of the leaves near this shard's), take in what arrived, and make the shadow
/// set from it.
fn shadow_neighbours_streams(
    mut commands: Commands,
    mut neighbours: ResMut<NeighbourFeed>,
    mut own: ResMut<Ownership>,
    metrics: Res<ShardMetrics>,
    mut shadows: ShadowQuery,
) {
    let NeighbourFeed {
        feed: Some(feed),
        plan,
        ..
    } = &mut *neighbours
    else {
        return;
    };
    let feed = feed.get_mut().expect("neighbour feed lock");
    let now = Instant::now();
    let Some(plan) = plan else {
        // Replication sends the shadows now: let the neighbours' streams go.
        if feed.connections() > 0 {
            feed.follow(&BTreeMap::new(), &HashMap::new(), Some(&[]), now);
            metrics.neighbour_streams.set(0);
        }
        return;
    };
    let margin = f64::from(plan.margin);
    let own_bounds: Vec<Bounds> = own.sectors.iter().map(SectorId::bounds).collect();
    let areas: Vec<Bounds> = own_bounds.iter().map(|b| b.grown(margin)).collect();
    // Only the band along the neighbours' edges: what lies deeper in their leaves is farther
    // than the margin from this shard's (and leaves the band, and this view, as it goes in).
    feed.set_band(Some(plan.margin), now);
    feed.follow(&plan.sectors, &plan.streams, Some(&areas), now);
    feed.pump(now);
    metrics.neighbour_streams.set(feed.connections() as i64);
    metrics.neighbour_bytes.inc_by(
        feed.stats
            .bytes
            .saturating_sub(metrics.neighbour_bytes.get()),
    );
    let list = shadows_from_view(feed.view.iter(), &own_bounds, margin, |id| {
        own.entities.contains_key(&id)
    });
    replace_shadows(&mut commands, &mut own, &mut shadows, false, list);
}

#[cfg(test)]
mod tests {
    use sidereal_core::codec::Quantized;
    use sidereal_core::sector_view::ViewedEntity;
    use sidereal_core::{EntityId, EntityKind, EntityState};

    use super::*;

    fn viewed(n: u64, x: f32, source: Source) -> ViewedEntity {
        let state = EntityState {
            pos: [x, 10.0],
            vel: [1.0, 0.0],
            angle: 0.0,
            ang_vel: 0.0,
        };
        ViewedEntity {
            id: EntityId::minted(1, n),
            kind: EntityKind::Asteroid,
            epoch: 1,
            state: Quantized::from_state(&state).unwrap(),
            tick: 1,
            source,
        }
    }

    #[test]
    fn shadows_are_the_streamed_entities_near_this_shards_leaves_and_not_its_own() {
        let root = SectorId::new(1, 0, 0).unwrap();
        let b = root.bounds();
        let edge = b.max.x as f32;
        let live = Source::Stream {
            conn: 1,
            sector: root,
        };
        let view = [
            // 10 units beyond the east edge: shadowed.
            viewed(1, edge + 10.0, live),
            // 500 units beyond: too far.
            viewed(2, edge + 500.0, live),
            // Near, but this shard owns it now (adopted before the stream said so).
            viewed(3, edge + 5.0, live),
            // Near, but in transit: it shows again where it lands.
            viewed(
                4,
                edge + 5.0,
                Source::InTransit {
                    since: Instant::now(),
                },
            ),
        ];
        let owned = EntityId::minted(1, 3);
        let list = shadows_from_view(&view, &[b], 50.0, |id| id == owned);
        let ids: Vec<u64> = list.iter().map(|s| s.id.0 & 0xffff).collect();
        assert_eq!(ids, vec![1]);
        assert!((list[0].state.pos[0] - (edge + 10.0)).abs() < 0.1);
    }
}
