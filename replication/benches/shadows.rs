//! Border shadows for 100,000 moving entities over 256 leaves (16 shards of 4 x 4 leaves,
//! margin 50), before and after shards shadowed themselves:
//! - before: replication computed every shard's shadows from its mirror each tick (every
//!   entity against every leaf, in one place);
//! - after: replication only tells each shard its neighbours (on change and twice a second),
//!   and each shard picks its shadows out of what its neighbours' streams show it.
//!
//! Prints time per tick and the share of a core at 30 Hz; never fails.
//!   cargo bench -p sidereal-replication --bench shadows

use std::time::Instant;

use sidereal_core::codec::Quantized;
use sidereal_core::sector_view::{Source, ViewedEntity};
use sidereal_core::{
    Bounds, EntityId, EntityKind, EntitySnapshot, EntityState, Placement, SectorId, ShardId,
};
use sidereal_replication::Mirror;
use sidereal_replication::authority::{neighbours_of, shadows_by_shard};
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

fn main() {
    let p = placement();
    let shards: Vec<ShardId> = (0..16)
        .map(|i| ShardId::new(format!("shard-{i}")))
        .collect();
    let world = SectorId::new(4, 0, 0).unwrap().bounds();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut mirror = Mirror::default();
    let mut all: Vec<(EntitySnapshot, ShardId)> = Vec::new();
    for n in 0..ENTITIES {
        let pos = [
            (world.min.x + rand() * world.edge()) as f32,
            (world.min.y + rand() * world.edge()) as f32,
        ];
        let state = EntityState {
            pos,
            vel: [10.0, -5.0],
            angle: 0.5,
            ang_vel: 0.1,
        };
        let snap = EntitySnapshot {
            id: EntityId::minted(1, n + 1),
            kind: EntityKind::Asteroid,
            state,
            ttl_ticks: None,
            player: false,
        };
        let owner = p
            .sectors
            .iter()
            .find(|(s, _)| s.bounds().contains(state.point()))
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

    // After, each shard: its neighbours' leaves' entities (what its feed holds) filtered to
    // the band along its own leaves.
    let mut per_shard = Vec::new();
    let mut held = 0;
    let mut found = 0;
    for shard in &shards {
        let near: Vec<SectorId> = neighbours_of(&p, shard, MARGIN)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let near_bounds: Vec<Bounds> = near.iter().map(SectorId::bounds).collect();
        let view: Vec<ViewedEntity> = all
            .iter()
            .filter(|(s, _)| near_bounds.iter().any(|b| b.contains(s.state.point())))
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
        "| each shard, after | its shadows from its neighbours' streams ({} entities held per shard on average) | {:.3} ms mean, {worst:.3} ms worst | {:.2} % worst | {} |",
        held / shards.len(),
        total / shards.len() as f64,
        worst * HZ / 10.0,
        found / 20
    );
    println!(
        "| all 16 shards together, after | | {total:.2} ms | {:.1} % of one core, spread over 16 | |",
        total * HZ / 10.0
    );
}
