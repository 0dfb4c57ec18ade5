//! The live sector map's frame: built from a placement of 256 leaves on 8 shards and a mirror
//! of 100,000 entities, sampled to at most 3,000, and serialized, as `/v1/map/events` does once
//! per interval for every watching page. Prints the build time and the frame's size.
//!   cargo bench -p sidereal-replication --bench map

use std::collections::BTreeMap;
use std::time::Instant;

use sidereal_core::load::{SectorCounts, ShardLoadReport};
use sidereal_core::{EntityKind, Placement, SectorId, ShardId};
use sidereal_replication::http::map::{MAX_MAP_ENTITIES, frame};

fn main() {
    let mut placement = Placement::default();
    let mut load: BTreeMap<ShardId, ShardLoadReport> = BTreeMap::new();
    // 256 scale-0 leaves: a 16 x 16 grid around the origin.
    for x in -8..8 {
        for y in -8..8 {
            let leaf = SectorId::new(0, x, y).expect("a sector");
            let shard = ShardId(format!("shard-{}", (x + 8 + y + 8) % 8));
            placement.sectors.insert(leaf, shard.clone());
            load.entry(shard)
                .or_insert_with(|| ShardLoadReport {
                    tick: 1,
                    tick_mean_ms: 1.0,
                    tick_p99_ms: 2.0,
                    tick_wall_mean_ms: 1.0,
                    tick_wall_p99_ms: 2.0,
                    sectors: Vec::new(),
                })
                .sectors
                .push(SectorCounts {
                    sector: leaf,
                    entities: 390,
                    players: 2,
                });
        }
    }
    let entities: Vec<(EntityKind, [f32; 2])> = (0..100_000u32)
        .map(|i| {
            let kind = if i % 10 == 0 {
                EntityKind::Ship
            } else {
                EntityKind::Asteroid
            };
            (
                kind,
                [
                    (i % 16_000) as f32 - 8000.0,
                    (i / 16) as f32 % 16_000.0 - 8000.0,
                ],
            )
        })
        .collect();
    let rounds = 200;
    let (mut build, mut bytes) = (0.0f64, 0usize);
    for _ in 0..rounds {
        let t = Instant::now();
        let f = frame(
            &placement,
            &load,
            entities.iter().copied(),
            entities.len(),
            MAX_MAP_ENTITIES,
        );
        let json = serde_json::to_string(&f).expect("a frame serializes");
        build += t.elapsed().as_secs_f64();
        bytes = json.len();
    }
    let per = build / f64::from(rounds) * 1000.0;
    println!(
        "map frame: 100000 entities sampled to {MAX_MAP_ENTITIES}, 256 leaves: {per:.2} ms to build and serialize, {:.1} kB of JSON; at 4 frames a second {:.1}% of a core, {:.0} kB/s per watching page",
        bytes as f64 / 1000.0,
        per * 4.0 / 10.0,
        bytes as f64 * 4.0 / 1000.0
    );
}
