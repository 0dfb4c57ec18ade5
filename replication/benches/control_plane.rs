//! The authority as a control plane, 100,000 moving entities over 256 leaves (16 shards of
//! 4 x 4 leaves, margin 50):
//!
//! Border shadows, before and after shards shadowed themselves:
//! - before: replication computed every shard's shadows from its mirror each tick (every
//!   entity against every leaf, in one place);
//! - after: replication only tells each shard its neighbours (on change and twice a second),
//!   and each shard picks its shadows out of what its neighbours' streams show it.
//!
//! The authority's work per tick with 0, 100 and 500 players commanding ships every tick:
//! before (updates every tick, shadows computed here), with updates every tick but shards
//! shadowing themselves (replication serving players from its mirror), and after (no game
//! port here: shards report only for the checkpoint, once a second, on its `Report` round).
//!
//! Prints time per tick and the share of a core at 30 Hz; never fails.
//!   cargo bench -p sidereal-replication --bench control_plane

use std::time::Instant;

use sidereal_core::codec::Quantized;
use sidereal_core::codec::UpdateEncoder;
use sidereal_core::protocol::{PilotCommand, ReplicationMessage, ShardMessage};
use sidereal_core::sector_view::{Source, ViewedEntity};
use sidereal_core::stream::in_band;
use sidereal_core::{
    Bounds, EntityId, EntityKind, EntitySnapshot, EntityState, Epoch, Placement, SectorId, ShardId,
};
use sidereal_replication::authority::{neighbours_of, shadows_by_shard};
use sidereal_replication::{Authority, AuthorityConfig, LinkId, Mirror};
use sidereal_shard::shadows::shadows_from_view;

const HZ: f64 = 30.0;
const MARGIN: f64 = 50.0;
const ENTITIES: u64 = 100_000;

fn mean_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed().as_secs_f64() * 1e3 / runs as f64
}

/// The 16 x 16 leaves under a scale-4 root, each 4 x 4 block one shard's.
fn placement() -> Placement {
    let root = SectorId::new(4, 0, 0).unwrap();
    let mut leaves = vec![root];
    for _ in 0..4 {
        leaves = leaves.iter().flat_map(|s| s.children().unwrap()).collect();
    }
    let edge = root.bounds().edge() / 4.0;
    let origin = root.bounds().min;
    let mut p = Placement {
        generation: 1,
        ..Placement::default()
    };
    for leaf in leaves {
        let b = leaf.bounds();
        let (bx, by) = (
            ((b.min.x - origin.x) / edge) as u32,
            ((b.min.y - origin.y) / edge) as u32,
        );
        p.sectors
            .insert(leaf, ShardId::new(format!("shard-{}", by * 4 + bx)));
    }
    p
}

/// `ENTITIES` entities spread evenly over the world, the first `ships` of them ships.
fn world_entities(ships: u64) -> Vec<EntitySnapshot> {
    let world = SectorId::new(4, 0, 0).unwrap().bounds();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..ENTITIES)
        .map(|n| EntitySnapshot {
            id: EntityId::minted(1, n + 1),
            kind: if n < ships {
                EntityKind::Ship
            } else {
                EntityKind::Asteroid
            },
            state: EntityState {
                pos: [
                    (world.min.x + rand() * world.edge()) as f32,
                    (world.min.y + rand() * world.edge()) as f32,
                ],
                vel: [10.0, -5.0],
                angle: 0.5,
                ang_vel: 0.1,
            },
            ttl_ticks: None,
            player: n < ships,
        })
        .collect()
}

/// One simulated shard: its link and what it owns, moved and encoded as a shard would.
struct FakeShard {
    link: LinkId,
    owned: Vec<(EntityId, Epoch, EntityState)>,
    encoder: UpdateEncoder,
}

/// An authority with 16 linked shards (publishing streams or not), the world placed on them
/// and `players` players each flying one ship.
fn linked_authority(publishing: bool, players: u64) -> (Authority, Vec<FakeShard>) {
    let mut a = Authority::new(AuthorityConfig {
        world: vec![SectorId::new(4, 0, 0).unwrap()],
        secret: "bench-secret-0123456789".into(),
        tick_hz: HZ as u32,
        shadow_margin: MARGIN,
    });
    let mut shards = Vec::new();
    for i in 0..16u8 {
        let challenge = [i; 32];
        let link = a.connect(challenge);
        let hello = ShardMessage::hello(
            "bench-secret-0123456789",
            &challenge,
            ShardId::new(format!("shard-{i}")),
            [0xa5; 32],
        )
        .publishing(publishing.then(|| format!("10.0.0.{i}:7704")));
        a.on_message(link, hello).expect("welcome");
        shards.push(FakeShard {
            link,
            owned: Vec::new(),
            encoder: UpdateEncoder::default(),
        });
    }
    for e in world_entities(players) {
        a.restore_entity(e, ShardId::new("unplaced"));
    }
    a.put_placement(placement()).expect("a valid placement");
    for (link, msg) in a.take_outbox() {
        if let ReplicationMessage::Adopt { entities } = msg {
            let s = shards.iter_mut().find(|s| s.link == link).expect("a shard");
            s.owned.extend(
                entities
                    .into_iter()
                    .map(|e| (e.snapshot.id, e.epoch, e.snapshot.state)),
            );
        }
    }
    for p in 0..players {
        a.player_joined(p + 1, EntityId::minted(1, p + 1));
    }
    (a, shards)
}

/// Mean authority time per tick over `ticks` ticks: shards' updates (every `report_every`
/// ticks: more than 1 means on the checkpoint's report round, asked and answered here), every
/// player's command, shadows or neighbours, and the outbox taken. Moving and encoding (the
/// shards' work) is not counted.
fn authority_per_tick(publishing: bool, report_every: u64, players: u64, ticks: u64) -> (f64, u64) {
    let (mut a, mut shards) = linked_authority(publishing, players);
    a.set_report_every(if report_every == 1 { 1 } else { 0 });
    let mut spent = 0.0;
    for tick in 1..=ticks {
        let mut batches = Vec::new();
        let round = if tick % report_every == 0 && report_every > 1 {
            let start = Instant::now();
            let round = a.request_reports();
            spent += start.elapsed().as_secs_f64();
            round
        } else {
            None
        };
        if tick % report_every == 0 {
            for s in &mut shards {
                for (_, _, st) in s.owned.iter_mut() {
                    st.pos[0] += st.vel[0] * report_every as f32 / HZ as f32;
                    st.pos[1] += st.vel[1] * report_every as f32 / HZ as f32;
                }
                if let Some(bytes) = s.encoder.encode(tick, &mut s.owned) {
                    batches.push((s.link, bytes));
                }
            }
        }
        let start = Instant::now();
        for (link, bytes) in batches {
            a.on_message(link, ShardMessage::Updates(bytes))
                .expect("valid updates");
        }
        if let Some(round) = round {
            for s in &shards {
                a.on_message(s.link, ShardMessage::Reported { round })
                    .expect("valid answer");
            }
            assert!(a.reports_in(round));
        }
        for p in 0..players {
            a.pilot(
                p + 1,
                PilotCommand {
                    thrust: 0.5,
                    turn: 0.1,
                    fire: false,
                },
            );
        }
        a.send_shadows(tick);
        a.take_outbox();
        spent += start.elapsed().as_secs_f64();
    }
    (spent * 1e3 / ticks as f64, a.counters.updates_applied)
}

fn main() {
    border_shadows();
    authority_per_tick_table();
}

fn authority_per_tick_table() {
    println!();
    println!(
        "## the authority per tick: {ENTITIES} moving entities, 16 shards, players commanding every tick (one core, release, {HZ} Hz)"
    );
    println!(
        "| mode | players | per tick | share of a core at {HZ} Hz | updates applied per second |"
    );
    println!("|---|---|---|---|---|");
    let modes: [(&str, bool, u64, u64); 3] = [
        (
            "before: updates every tick, shadows computed here",
            false,
            1,
            6,
        ),
        (
            "updates every tick, shards shadow themselves (game port here)",
            true,
            1,
            60,
        ),
        (
            "after: no game port here, updates on the checkpoint's round (1 s)",
            true,
            30,
            90,
        ),
    ];
    for (mode, publishing, every, ticks) in modes {
        for players in [0, 100, 500] {
            let (ms, applied) = authority_per_tick(publishing, every, players, ticks);
            println!(
                "| {mode} | {players} | {ms:.2} ms | {:.1} % | {:.0} |",
                ms * HZ / 10.0,
                applied as f64 * HZ / ticks as f64
            );
        }
    }
}

fn border_shadows() {
    let p = placement();
    let shards: Vec<ShardId> = (0..16)
        .map(|i| ShardId::new(format!("shard-{i}")))
        .collect();
    let mut mirror = Mirror::default();
    let mut all: Vec<(EntitySnapshot, ShardId)> = Vec::new();
    for snap in world_entities(0) {
        let owner = p
            .sectors
            .iter()
            .find(|(s, _)| s.bounds().contains(snap.state.point()))
            .map(|(_, o)| o.clone())
            .expect("inside the world");
        mirror.insert_new(snap, owner.clone());
        all.push((snap, owner));
    }
    println!(
        "## border shadows: {ENTITIES} entities, {} leaves, {} shards, margin {MARGIN} (one core, release, {HZ} Hz)",
        p.sectors.len(),
        shards.len()
    );
    println!("| where | work | per tick | share of a core at {HZ} Hz | shadows |");
    println!("|---|---|---|---|---|");

    // Before: the authority, every entity against every leaf, every tick.
    let mut shadows = 0;
    let before = mean_ms(5, || {
        let per = shadows_by_shard(&p, &mirror, &shards, MARGIN);
        shadows = per.values().map(Vec::len).sum();
    });
    println!(
        "| replication, before | every shard's shadows from the mirror | {before:.2} ms | {:.0} % | {shadows} |",
        before * HZ / 10.0
    );

    // After, replication: every shard's neighbours, twice a second (every 15th tick).
    let mut told = 0;
    let every_half_second = mean_ms(20, || {
        told = shards
            .iter()
            .map(|s| neighbours_of(&p, s, MARGIN).len())
            .sum();
    });
    let per_tick = every_half_second * 2.0 / HZ;
    println!(
        "| replication, after | every shard's neighbours ({told} leaves named), twice a second | {per_tick:.3} ms | {:.2} % | 0 |",
        per_tick * HZ / 10.0
    );

    // After, each shard: what its feed holds of its neighbours' leaves (the band along their
    // edges, as the shard subscribes; whole leaves counted for comparison) filtered to the
    // band along its own leaves.
    let mut per_shard = Vec::new();
    let (mut held, mut whole) = (0, 0);
    let mut found = 0;
    for shard in &shards {
        let near: Vec<SectorId> = neighbours_of(&p, shard, MARGIN)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let near_bounds: Vec<Bounds> = near.iter().map(SectorId::bounds).collect();
        whole += all
            .iter()
            .filter(|(s, _)| near_bounds.iter().any(|b| b.contains(s.state.point())))
            .count();
        let view: Vec<ViewedEntity> = all
            .iter()
            .filter(|(s, _)| {
                let at = s.state.point();
                near.iter()
                    .any(|n| n.bounds().contains(at) && in_band(*n, Some(MARGIN as f32), at))
            })
            .map(|(s, _)| ViewedEntity {
                id: s.id,
                kind: s.kind,
                epoch: 1,
                state: Quantized::from_state(&s.state).unwrap(),
                tick: 1,
                source: Source::Stream {
                    conn: 1,
                    sector: near[0],
                },
            })
            .collect();
        held += view.len();
        let own: Vec<Bounds> = p
            .sectors
            .iter()
            .filter(|(_, o)| *o == shard)
            .map(|(s, _)| s.bounds())
            .collect();
        let ms = mean_ms(20, || {
            found += shadows_from_view(&view, &own, MARGIN, |_| false).len();
        });
        per_shard.push(ms);
    }
    let (total, worst) = (
        per_shard.iter().sum::<f64>(),
        per_shard.iter().copied().fold(0.0, f64::max),
    );
    println!(
        "| each shard, after | its shadows from its neighbours' bands ({} entities held per shard on average; {} from whole leaves) | {:.3} ms mean, {worst:.3} ms worst | {:.2} % worst | {} |",
        held / shards.len(),
        whole / shards.len(),
        total / shards.len() as f64,
        worst * HZ / 10.0,
        found / 20
    );
    println!(
        "| all 16 shards together, after | | {total:.2} ms | {:.1} % of one core, spread over 16 | |",
        total * HZ / 10.0
    );
}
