//! Interest management cost per tick: the grid over the mirror built once, then each player's
//! neighbourhood, for 50, 200 and 500 players each seeing about 100 entities. Prints numbers;
//! never fails.
//!   cargo bench -p sidereal-replication --bench interest

use std::collections::BTreeMap;
use std::time::Instant;

use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState, ShardId};
use sidereal_replication::Mirror;
use sidereal_replication::interest::views;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() {
    println!("## interest views per tick (one core, release)");
    // 100,000 entities over a 32,000 x 32,000 world: ~1 entity per 10,000 square units, so a
    // radius of 560 holds about 100.
    let (n, edge, radius) = (100_000u64, 32_000.0f32, 560.0);
    let mut mirror = Mirror::default();
    let owner = ShardId::new("shard-0");
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut ships = Vec::new();
    for i in 0..n {
        let snapshot = EntitySnapshot {
            id: EntityId::minted(1, i + 1),
            kind: if i % 10 == 0 {
                EntityKind::Ship
            } else {
                EntityKind::Asteroid
            },
            state: EntityState {
                pos: [rand() * edge - edge / 2.0, rand() * edge - edge / 2.0],
                ..Default::default()
            },
            ttl_ticks: None,
            player: false,
        };
        if i % 10 == 0 {
            ships.push(snapshot.id);
        }
        mirror.insert_new(snapshot, owner.clone());
    }
    for players in [50usize, 200, 500] {
        let table: BTreeMap<u64, EntityId> = ships
            .iter()
            .take(players)
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, *s))
            .collect();
        let mut ms = Vec::new();
        let mut seen = 0usize;
        for _ in 0..30 {
            let t = Instant::now();
            let v = views(&mirror, &table, radius);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            seen = v.values().map(Vec::len).sum();
        }
        println!(
            "{players:>4} players, {n} entities: mean {:.2} ms, p99 {:.2} ms per tick; {:.0} entities seen per player",
            ms.iter().sum::<f64>() / ms.len() as f64,
            percentile(&mut ms, 0.99),
            seen as f64 / players as f64
        );
    }
}
