//! Replication's cost per tick for its players, for 50, 200 and 500 players each seeing about
//! 100 entities of a moving world: the interest views (a grid over the mirror built once, then
//! each player's neighbourhood) and each player's state update (quantized, delta-encoded
//! against the update it acknowledged two ticks ago), as the gateway does them. Prints time per
//! tick, the share of a core at 30 Hz, and bytes per client; never fails.
//!   cargo bench -p sidereal-replication --bench interest

use std::collections::BTreeMap;
use std::time::Instant;

use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState, ShardId};
use sidereal_game::codec::StateEncoder;
use sidereal_replication::Mirror;
use sidereal_replication::gateway::seen_entity;
use sidereal_replication::interest::views;

const HZ: u32 = 30;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn main() {
    println!("## replication per tick for its players (one core, release, {HZ} Hz)");
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
    let mut ids = Vec::new();
    for i in 0..n {
        let ship = i % 10 == 0;
        let snapshot = EntitySnapshot {
            id: EntityId::minted(1, i + 1),
            kind: if ship {
                EntityKind::Ship
            } else {
                EntityKind::Asteroid
            },
            state: EntityState {
                pos: [rand() * edge - edge / 2.0, rand() * edge - edge / 2.0],
                vel: [rand() * 60.0 - 30.0, rand() * 60.0 - 30.0],
                angle: rand() * 6.0,
                ang_vel: rand() - 0.5,
            },
            ttl_ticks: None,
            player: false,
        };
        if ship {
            ships.push(snapshot.id);
        }
        ids.push((snapshot.id, ship));
        mirror.insert_new(snapshot, owner.clone());
    }
    // The shards' work, untimed: drift everything, and ships thrust along their heading.
    let dt = 1.0 / HZ as f32;
    let simulate = |mirror: &mut Mirror| {
        for (id, ship) in &ids {
            let s = &mut mirror
                .check_owner(*id, &owner, None)
                .expect("owned")
                .snapshot
                .state;
            if *ship {
                s.vel[0] += s.angle.cos() * 4.0;
                s.vel[1] += s.angle.sin() * 4.0;
            }
            s.pos[0] += s.vel[0] * dt;
            s.pos[1] += s.vel[1] * dt;
            s.angle += s.ang_vel * dt;
        }
    };
    for players in [50usize, 200, 500] {
        let table: BTreeMap<u64, EntityId> = ships
            .iter()
            .take(players)
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, *s))
            .collect();
        let mut encoders: BTreeMap<u64, StateEncoder> =
            table.keys().map(|p| (*p, StateEncoder::new(HZ))).collect();
        let (mut view_ms, mut encode_ms, mut total_ms) = (Vec::new(), Vec::new(), Vec::new());
        let (mut seen, mut bytes) = (0usize, 0usize);
        let mut buf = Vec::new();
        for tick in 1..=100u64 {
            simulate(&mut mirror);
            let t = Instant::now();
            let v = views(&mirror, &table, radius);
            let viewed = t.elapsed();
            let mut tick_bytes = 0;
            for (player, entities) in &v {
                let encoder = encoders.get_mut(player).expect("a stream per player");
                buf.clear();
                buf.extend(entities.iter().map(seen_entity));
                tick_bytes += encoder.encode(tick, &buf).len();
                // The client's acknowledgement arrives two ticks later.
                if tick > 2 {
                    encoder.acknowledge(tick - 2);
                }
            }
            let total = t.elapsed();
            // The first ticks send whole updates; the steady state is what is measured.
            if tick > 10 {
                view_ms.push(viewed.as_secs_f64() * 1000.0);
                encode_ms.push((total - viewed).as_secs_f64() * 1000.0);
                total_ms.push(total.as_secs_f64() * 1000.0);
                seen += v.values().map(Vec::len).sum::<usize>();
                bytes += tick_bytes;
            }
        }
        let ticks = total_ms.len() as f64;
        let per_client_bytes = bytes as f64 / ticks / players as f64;
        println!(
            "{players:>4} players: views {:.2} ms + encoding {:.2} ms = mean {:.2} ms, p99 {:.2} ms per tick ({:.0}% of a core); {:.0} entities seen per player; {:.0} bytes per client per tick = {:.1} kbit/s of state per client",
            mean(&view_ms),
            mean(&encode_ms),
            mean(&total_ms),
            percentile(&mut total_ms, 0.99),
            mean(&total_ms) * f64::from(HZ) / 10.0,
            seen as f64 / ticks / players as f64,
            per_client_bytes,
            per_client_bytes * 8.0 * f64::from(HZ) / 1000.0,
        );
    }
}
