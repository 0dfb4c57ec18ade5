//! In-process fleet tests: conservation of entities through crossings, splits, merges, kills
//! and a takeover by a new leader.

use std::collections::{BTreeSet, HashMap};

use sidereal_core::placement;
use sidereal_core::sector_view::Source;
use sidereal_core::{EntityId, EntityKind, SectorId, ShardId};
use sidereal_replication::PutPlacementError;
use sidereal_shard::ownership::Ownership;
use sidereal_testkit::fleet::{Fleet, Stored, TICK_HZ};

fn world() -> Vec<SectorId> {
    vec![SectorId::new(2, 0, 0).unwrap()]
}

/// Tolerance of the continuity check: an entity moves at most 1.5 x its speed x one tick, plus
/// two world units for contact resolution pushing overlapping bodies apart (and 1/64-unit
/// quantization; one unit was once exceeded by a slow body pushed 1.63 units). A handover that
/// lost or replayed state would jump far more (a tick's flight of a ship: tens of units).
fn max_step(v: f32) -> f32 {
    v * 1.5 / TICK_HZ as f32 + 2.0
}

struct Continuity {
    last: HashMap<EntityId, ([f32; 2], f32)>,
    worst_excess: f32,
}

impl Continuity {
    fn new() -> Self {
        Self {
            last: HashMap::new(),
            worst_excess: 0.0,
        }
    }

    /// Positions never jump more than their speed allows, across handovers included.
    fn check(&mut self, fleet: &Fleet) -> Result<(), String> {
        let mut next = HashMap::with_capacity(self.last.len());
        for (id, r) in fleet.authority.mirror().iter() {
            let s = r.snapshot.state;
            let speed = (s.vel[0].hypot(s.vel[1])).max(1.0);
            if let Some((p, v)) = self.last.get(id) {
                let d = (s.pos[0] - p[0]).hypot(s.pos[1] - p[1]);
                let allowed = max_step(speed.max(*v));
                if d > allowed {
                    return Err(format!(
                        "tick {}: {id} jumped {d:.2} units (allowed {allowed:.2})",
                        fleet.tick
                    ));
                }
                self.worst_excess = self.worst_excess.max(d / allowed);
            }
            next.insert(*id, (s.pos, speed));
        }
        self.last = next;
        Ok(())
    }
}

#[test]
fn entities_are_conserved_while_crossing_between_three_shards() {
    let mut fleet = Fleet::new(world(), 3, 45);
    fleet.seed(2100, 7);
    fleet.place_even();
    let mut continuity = Continuity::new();
    let seeded = fleet.authority.mirror().len();
    for _ in 0..60 * TICK_HZ {
        fleet.step();
        fleet.check_invariants().unwrap();
        continuity.check(&fleet).unwrap();
        let c = &fleet.authority.counters;
        assert_eq!(
            fleet.authority.mirror().len() as u64,
            seeded as u64 + c.spawns - c.despawns,
            "tick {}",
            fleet.tick
        );
        assert_eq!(c.refusals, 0, "a well-behaved fleet has nothing refused");
    }
    let c = fleet.authority.counters.clone();
    println!(
        "2100 entities, 3 shards, 60 s: {} handovers, {} spawns, {} despawns, {} updates, {:.2} bytes/update",
        c.handovers,
        c.spawns,
        c.despawns,
        c.updates_applied,
        fleet.update_bytes as f64 / fleet.update_entries.max(1) as f64
    );
    assert!(
        c.handovers > 1000,
        "the test must exercise many crossings, got {}",
        c.handovers
    );
    assert!(
        c.spawns > 100 && c.despawns > 100,
        "projectiles live and die"
    );
    assert!(fleet.update_bytes as f64 / (fleet.update_entries as f64) <= 12.0);
}

#[test]
fn split_onto_two_shards_and_merge_back_with_live_traffic() {
    let mut fleet = Fleet::new(world(), 2, 60);
    fleet.seed(2000, 11);
    // Start with the four scale-1 children of the root, all on shard-0 except one.
    let ids = fleet.shard_ids();
    let root = world()[0];
    let mut p = sidereal_core::Placement {
        generation: 1,
        sectors: Default::default(),
        world: None,
    };
    for (i, c) in root.children().unwrap().into_iter().enumerate() {
        p.sectors.insert(c, ids[usize::from(i == 3)].clone());
    }
    fleet.place(p);
    let run = |fleet: &mut Fleet, ticks: u32, continuity: &mut Continuity| {
        for _ in 0..ticks {
            fleet.step();
            fleet.check_invariants().unwrap();
            continuity.check(fleet).unwrap();
        }
    };
    let mut continuity = Continuity::new();
    run(&mut fleet, 90, &mut continuity);

    let hot = root.children().unwrap()[0];
    let before = fleet
        .authority
        .mirror()
        .iter()
        .filter(|(_, r)| hot.contains(r.snapshot.state.point()))
        .count();
    assert!(before > 200, "the split sector holds entities ({before})");
    let split = placement::split(
        fleet.authority.placement(),
        hot,
        [
            ids[0].clone(),
            ids[1].clone(),
            ids[0].clone(),
            ids[1].clone(),
        ],
    )
    .unwrap();
    let handovers_before = fleet.authority.counters.handovers;
    fleet.place(split);
    run(&mut fleet, 1, &mut continuity);
    // Entities of the two children now on shard-1 moved there within a tick.
    let moved = fleet.authority.counters.handovers - handovers_before;
    assert!(moved > 50, "split handed over {moved} entities");
    run(&mut fleet, 300, &mut continuity);
    for (child, shard) in hot
        .children()
        .unwrap()
        .iter()
        .zip([&ids[0], &ids[1], &ids[0], &ids[1]])
    {
        for (_, r) in fleet.authority.mirror().iter() {
            if child.contains(r.snapshot.state.point()) && !r.in_transit {
                assert_eq!(&r.owner, shard, "{} in {child}", r.snapshot.id);
            }
        }
    }

    let merged = placement::merge(fleet.authority.placement(), hot, ids[1].clone()).unwrap();
    fleet.place(merged);
    run(&mut fleet, 300, &mut continuity);
    for (_, r) in fleet.authority.mirror().iter() {
        if hot.contains(r.snapshot.state.point()) && !r.in_transit {
            assert_eq!(r.owner, ids[1]);
        }
    }
}

#[test]
fn a_killed_shards_sectors_are_rehomed_with_nothing_lost() {
    let mut fleet = Fleet::new(world(), 3, 0);
    fleet.seed(1500, 3);
    fleet.place_even();
    for _ in 0..120 {
        fleet.step();
    }
    let victim = fleet.kill(1);
    let owned_by_victim: Vec<(EntityId, u64)> = fleet
        .authority
        .mirror()
        .iter()
        .filter(|(_, r)| r.owner == victim)
        .map(|(id, r)| (*id, r.epoch))
        .collect();
    assert!(!owned_by_victim.is_empty());
    let total = fleet.authority.mirror().len();
    // A few ticks pass before the placement arrives; the survivors keep simulating.
    for _ in 0..10 {
        fleet.step();
        fleet.check_invariants().unwrap();
    }
    fleet.rehome();
    // Each orphan is checked until it is seen adopted once (a new epoch, a live owner, out of
    // transit); after that it may cross borders again like any entity.
    let mut settled = std::collections::BTreeSet::new();
    for _ in 0..60 {
        fleet.step();
        fleet.check_invariants().unwrap();
        for (id, epoch) in &owned_by_victim {
            let r = fleet.authority.mirror().get(*id).expect("still exists");
            if r.owner != victim && r.epoch > *epoch && !r.in_transit {
                settled.insert(*id);
            }
        }
    }
    assert_eq!(
        fleet.authority.mirror().len(),
        total,
        "no entity lost or duplicated"
    );
    let unsettled: Vec<_> = owned_by_victim
        .iter()
        .filter(|(id, _)| !settled.contains(id))
        .collect();
    assert!(unsettled.is_empty(), "never adopted: {unsettled:?}");
    for (id, _) in &owned_by_victim {
        assert_ne!(fleet.authority.mirror().get(*id).unwrap().owner, victim);
    }
    assert!(
        fleet
            .authority
            .placement()
            .sectors
            .values()
            .all(|s| *s != victim)
    );
}

/// A subscriber of every sector stream sees exactly the mirror's entities, each once and at the
/// mirror's state, tick after tick: through crossings between shards, a split onto two shards,
/// the merge back, and a shard killed and its sectors re-homed.
#[test]
fn sector_streams_show_every_entity_once_through_crossings_splits_merges_and_a_kill() {
    use sidereal_testkit::streams::StreamWatcher;
    let mut fleet = Fleet::new(world(), 3, 45);
    fleet.seed(2100, 5);
    // The root's four scale-1 children over three shards, so one can be split.
    let ids = fleet.shard_ids();
    let mut p = sidereal_core::Placement {
        generation: 1,
        sectors: Default::default(),
        world: None,
    };
    for (c, i) in world()[0].children().unwrap().into_iter().zip([0, 1, 2, 0]) {
        p.sectors.insert(c, ids[i].clone());
    }
    fleet.place(p);
    let mut watcher = StreamWatcher::new();
    watcher.subscribe(&fleet);
    // A second subscriber takes only the 50-unit band along each sector's edges, as a
    // neighbouring shard does for its shadows.
    let mut band = StreamWatcher::of_band(50.0);
    band.subscribe(&fleet);
    let run = |fleet: &mut Fleet, watchers: &mut [&mut StreamWatcher], ticks: u32| {
        for _ in 0..ticks {
            fleet.step();
            fleet.check_invariants().unwrap();
            watchers[0].pump(fleet).unwrap();
            watchers[0].check_against_mirror(fleet).unwrap();
            watchers[1].pump(fleet).unwrap();
            watchers[1].check_band_against_mirror(fleet).unwrap();
        }
    };
    run(&mut fleet, &mut [&mut watcher, &mut band], 10 * TICK_HZ);
    let handovers = fleet.authority.counters.handovers;
    assert!(
        handovers > 100,
        "crossings between shards happened ({handovers})"
    );
    assert!(fleet.authority.counters.despawns > 10, "projectiles ended");

    let leaf = *fleet
        .authority
        .placement()
        .sectors
        .iter()
        .find(|(_, s)| **s == ids[0])
        .expect("shard-0 owns a leaf")
        .0;
    let split = placement::split(
        fleet.authority.placement(),
        leaf,
        [
            ids[0].clone(),
            ids[1].clone(),
            ids[2].clone(),
            ids[0].clone(),
        ],
    )
    .unwrap();
    fleet.place(split);
    watcher.subscribe(&fleet);
    band.subscribe(&fleet);
    run(&mut fleet, &mut [&mut watcher, &mut band], 5 * TICK_HZ);
    let merged = placement::merge(fleet.authority.placement(), leaf, ids[2].clone()).unwrap();
    fleet.place(merged);
    watcher.subscribe(&fleet);
    band.subscribe(&fleet);
    run(&mut fleet, &mut [&mut watcher, &mut band], 5 * TICK_HZ);

    fleet.kill(1);
    run(&mut fleet, &mut [&mut watcher, &mut band], 10);
    assert!(
        watcher.view.in_transit() > 0,
        "the dead shard's entities wait in transit"
    );
    fleet.rehome();
    watcher.subscribe(&fleet);
    band.subscribe(&fleet);
    run(&mut fleet, &mut [&mut watcher, &mut band], 5 * TICK_HZ);
    // Nothing of the dead shard is left waiting: whatever the view holds in transit is in
    // transit in the mirror too (a handover in flight). The other way round may differ by a
    // tick: the new owner's frame can show an entity the authority has not yet seen adopted.
    let stuck: Vec<EntityId> = watcher
        .view
        .iter()
        .filter(|e| matches!(e.source, Source::InTransit { .. }))
        .map(|e| e.id)
        .filter(|id| {
            !fleet
                .authority
                .mirror()
                .get(*id)
                .is_some_and(|r| r.in_transit)
        })
        .collect();
    assert!(stuck.is_empty(), "waiting in the view only: {stuck:?}");
    let stats = watcher.view.stats;
    assert_eq!(stats.expired, 0, "nothing waited past the transit timeout");
    println!(
        "sector streams: {} frames, {:.2} bytes per entity update in shared frames, {} stale updates refused, {} bytes in all",
        stats.frames,
        stats.update_bytes as f64 / stats.entity_updates.max(1) as f64,
        stats.stale_refused,
        watcher.bytes
    );
    println!(
        "the 50-unit band of the same sectors: {} bytes ({:.1} % of whole sectors)",
        band.bytes,
        band.bytes as f64 * 100.0 / watcher.bytes as f64
    );
    assert!(
        band.bytes * 2 < watcher.bytes,
        "a band costs a fraction of whole sectors"
    );
}

/// Shards that shadow themselves, told to report only when asked, send no entity updates on
/// their own; asked for a checkpoint's round, each sends every entity's state that tick and
/// then `Reported`, so the mirror (and the checkpoint written from it) holds what they simulate.
#[test]
fn shards_reporting_only_when_asked_answer_a_report_round_with_their_state() {
    let mut fleet = Fleet::new(world(), 0, 0);
    fleet.announce_streams = true;
    fleet.start_shard("shard-0", 1, 0);
    fleet.start_shard("shard-1", 2, 0);
    fleet.seed(300, 11);
    fleet.place_even();
    for _ in 0..10 {
        fleet.step();
    }
    assert!(fleet.authority.shards_shadow_themselves());
    fleet.authority.set_report_every(0);
    fleet.step();
    let before = fleet.update_entries;
    for _ in 0..30 {
        fleet.step();
        fleet.check_invariants().unwrap();
    }
    assert_eq!(fleet.update_entries, before, "no updates unless asked");
    let drift = |fleet: &Fleet| -> f32 {
        simulated(fleet)
            .iter()
            .map(|(id, p)| {
                let m = fleet
                    .authority
                    .mirror()
                    .get(*id)
                    .unwrap()
                    .snapshot
                    .state
                    .pos;
                (p[0] - m[0]).hypot(p[1] - m[1])
            })
            .fold(0.0f32, f32::max)
    };
    assert!(drift(&fleet) > 1.0, "the mirror fell behind the shards");

    let round = fleet.authority.request_reports().expect("a round");
    assert!(!fleet.authority.reports_in(round));
    // The request goes out at the end of this step and is answered in the next.
    fleet.step();
    assert!(!fleet.authority.reports_in(round));
    fleet.step();
    assert!(fleet.authority.reports_in(round), "both shards answered");
    assert!(
        fleet.update_entries >= before + 250,
        "the answers carried (nearly) every entity: {}",
        fleet.update_entries - before
    );
    // Quantization (1/64 unit) aside, the mirror now holds what the shards simulate.
    let d = drift(&fleet);
    assert!(
        d < 0.05,
        "mirror {d:.3} units from the shards after the round"
    );
}

/// The durable (non-projectile) ids among `ids`, by the mirror's or the store's kinds.
fn durable(
    ids: impl IntoIterator<Item = EntityId>,
    kinds: &HashMap<EntityId, EntityKind>,
) -> BTreeSet<EntityId> {
    ids.into_iter()
        .filter(|id| kinds.get(id).is_some_and(|k| *k != EntityKind::Projectile))
        .collect()
}

fn kinds_of(fleet: &Fleet, stored: &Stored) -> HashMap<EntityId, EntityKind> {
    let mut kinds: HashMap<EntityId, EntityKind> = stored
        .entities
        .iter()
        .map(|(s, ..)| (s.id, s.kind))
        .collect();
    kinds.extend(
        fleet
            .authority
            .mirror()
            .iter()
            .map(|(id, r)| (*id, r.snapshot.kind)),
    );
    kinds
}

/// Positions of what each shard simulates now.
fn simulated(fleet: &Fleet) -> HashMap<EntityId, [f32; 2]> {
    let mut out = HashMap::new();
    for shard in fleet.shards.iter().flatten() {
        let world = shard.app.world();
        let mut q = world
            .try_query::<(
                &sidereal_shard::components::Owned,
                &avian2d::prelude::Position,
            )>()
            .unwrap();
        for (o, p) in q.iter(world) {
            out.insert(o.id, [p.0.x, p.0.y]);
        }
    }
    out
}

/// Issue 21's takeover in process. Replication dies a second after its last checkpoint, and a
/// new leader starts from that checkpoint. The shards simulate on alone through the gap
/// (crossing borders, firing, handing over into the void), link again and resume. Nothing they
/// simulated is lost, rewound or duplicated: every entity they hold is in the new mirror once,
/// at their state, owned by the shard that simulates it; stored entities that ended since the
/// checkpoint are gone; placement changes wait until every shard is back.
#[test]
fn a_new_leader_keeps_what_shards_simulated_since_the_last_checkpoint() {
    let mut fleet = Fleet::new(world(), 3, 20);
    fleet.seed(1500, 5);
    fleet.place_even();
    for _ in 0..60 {
        fleet.step();
    }
    let stored = fleet.stored();
    let handovers_at_checkpoint = fleet.authority.counters.handovers;
    for _ in 0..30 {
        fleet.step();
    }
    assert!(
        fleet.authority.counters.handovers > handovers_at_checkpoint + 20,
        "entities crossed borders after the checkpoint"
    );
    // The leader is killed: for half a second the shards simulate alone.
    for _ in 0..15 {
        fleet.step_shards_only();
    }
    let held: BTreeSet<EntityId> = fleet.held().into_iter().flat_map(|(_, ids)| ids).collect();
    let in_flight: usize = fleet
        .shards
        .iter()
        .flatten()
        .map(|s| s.app.world().resource::<Ownership>().handed_over.len())
        .sum();
    fleet.take_over(&stored);
    assert_eq!(fleet.authority.awaiting_shards().map(|w| w.len()), Some(3));
    let mut next = fleet.authority.placement().clone();
    next.generation += 1;
    assert!(
        matches!(
            fleet.authority.put_placement(next.clone()),
            Err(PutPlacementError::TakingOver { .. })
        ),
        "no placement change while shards are away"
    );
    fleet.step();
    assert_eq!(
        fleet.authority.awaiting_shards(),
        None,
        "every shard resumed in one tick"
    );
    let outcome = fleet.authority.take_takeover_outcome().expect("done");
    assert!(outcome.all_back);
    // Right after the resume the mirror holds the shards' state, not the store's.
    let now = simulated(&fleet);
    let stored_pos: HashMap<EntityId, [f32; 2]> = stored
        .entities
        .iter()
        .map(|(s, ..)| (s.id, s.state.pos))
        .collect();
    let (mut moved_since_store, mut worst) = (0, 0.0f32);
    for (id, p) in &now {
        let m = fleet
            .authority
            .mirror()
            .get(*id)
            .expect("in the mirror")
            .snapshot
            .state
            .pos;
        worst = worst.max((p[0] - m[0]).hypot(p[1] - m[1]));
        if let Some(s) = stored_pos.get(id)
            && (s[0] - m[0]).hypot(s[1] - m[1]) > 1.0
        {
            moved_since_store += 1;
        }
    }
    assert!(
        worst < 2.0,
        "the mirror is {worst:.2} units from a shard's entity"
    );
    let kinds = kinds_of(&fleet, &stored);
    for _ in 0..60 {
        fleet.step();
        fleet.check_invariants().unwrap();
    }
    let mirror: BTreeSet<EntityId> = fleet.authority.mirror().iter().map(|(id, _)| *id).collect();
    let stored_ids = stored.entities.iter().map(|(s, ..)| s.id);
    assert_eq!(
        durable(mirror.iter().copied(), &kinds),
        durable(held.iter().copied(), &kinds),
        "every durable entity the shards held, once, and no other"
    );
    assert_eq!(
        durable(held.iter().copied(), &kinds),
        durable(stored_ids, &kinds),
        "ships and asteroids never end: the store had the same ones"
    );
    let unplaced = fleet
        .authority
        .mirror()
        .iter()
        .filter(|(_, r)| !fleet.authority.live_shards().contains(&r.owner))
        .count();
    assert_eq!(unplaced, 0, "everything is simulated by a live shard");
    assert!(
        fleet.authority.put_placement(next).is_ok(),
        "placements again"
    );
    let c = &fleet.authority.counters;
    println!(
        "takeover: {} entities kept from 3 resumes ({moved_since_store} moved since the checkpoint, {in_flight} handovers in flight), {} stored ones that ended meanwhile dropped, worst {worst:.3} units from the shards",
        c.resumed_entities, outcome.dropped
    );
    assert_eq!(c.resumes, 3);
    assert!(
        moved_since_store > 1000,
        "{moved_since_store} entities moved since the checkpoint"
    );
    assert!(
        outcome.dropped > 0,
        "projectiles that expired since the checkpoint stay gone"
    );
}

/// A shard dies with the leader: the others resume, the new leader waits out its grace, then
/// takes placements again; the lost shard's leaves are re-homed from the store, and nothing is
/// duplicated or lost (what the survivors hold, plus the store's copies of the rest).
#[test]
fn a_shard_lost_with_the_leader_has_its_leaves_rehomed_from_the_store_after_the_grace() {
    let mut fleet = Fleet::new(world(), 3, 0);
    fleet.seed(1200, 9);
    fleet.place_even();
    for _ in 0..60 {
        fleet.step();
    }
    let stored = fleet.stored();
    for _ in 0..20 {
        fleet.step();
    }
    fleet.kill(1);
    for _ in 0..10 {
        fleet.step_shards_only();
    }
    let held: BTreeSet<EntityId> = fleet.held().into_iter().flat_map(|(_, ids)| ids).collect();
    fleet.take_over(&stored);
    for _ in 0..5 {
        fleet.step();
    }
    assert_eq!(
        fleet.authority.awaiting_shards(),
        Some(vec![ShardId::new("shard-1")]),
        "still waiting for the lost shard"
    );
    let outcome = fleet.authority.end_takeover().expect("the grace ran out");
    assert!(!outcome.all_back);
    fleet.rehome();
    for _ in 0..60 {
        fleet.step();
        fleet.check_invariants().unwrap();
    }
    let mirror: BTreeSet<EntityId> = fleet.authority.mirror().iter().map(|(id, _)| *id).collect();
    let stored_ids: BTreeSet<EntityId> = stored.entities.iter().map(|(s, ..)| s.id).collect();
    assert_eq!(
        mirror, stored_ids,
        "no projectiles here: the same world, once"
    );
    assert!(held.is_subset(&mirror));
    assert_eq!(fleet.authority.mirror().len(), stored_ids.len());
    let live = fleet.authority.live_shards();
    assert!(
        fleet
            .authority
            .mirror()
            .iter()
            .all(|(_, r)| live.contains(&r.owner))
    );
}
