//! A game port's cost per tick for its players, for 50, 200 and 500 players each seeing about
//! 100 entities of a moving world: the interest views (a grid over the mirror built once, then
//! each player's neighbourhood) and each player's state update (quantized, delta-encoded
//! against the update it acknowledged two ticks ago). Two ways, same world, same ticks:
//! - per player (how it was done until 2026-12-06): each view copied out in the grid's order,
//!   then quantized and sorted by id for each player who sees it;
//! - once per entity (now): each entity someone sees quantized once per tick, each view
//!   gathered in id order from sorted (id, index) pairs.
//!
//! Prints time per tick, the share of a core at 30 Hz, and bytes per client; never fails.
//!   cargo bench -p sidereal-replication --bench interest

use std::collections::BTreeMap;
use std::time::Instant;

use sidereal_core::protocol::steer_ship;
use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState, ShardId};
use sidereal_game::SeenEntity;
use sidereal_game::codec::StateEncoder;
use sidereal_replication::Mirror;
use sidereal_replication::rules::interest::{SpatialIndex, views};

const HZ: u32 = 30;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn main() {
    println!("## a game port per tick for its players (one core, release, {HZ} Hz)");
    // Sparse: 100,000 entities over 32,000 x 32,000 (~1 per 10,000 square units), radius 560:
    // ~100 in view, views barely overlap. Crowded: 5,000 over 8,000 x 8,000, radius 800: ~150
    // in view, each entity in many players' views (as in a fleet where players gather).
    for (world_name, n, edge, radius) in [
        ("sparse", 100_000u64, 32_000.0f32, 560.0),
        ("crowded", 5_000, 8_000.0, 800.0),
    ] {
        for once_per_entity in [false, true] {
            println!(
                "### {world_name} world, {}",
                if once_per_entity {
                    "once per entity (now)"
                } else {
                    "per player (before)"
                }
            );
            for players in [50usize, 200, 500] {
                // The same world, from the same seed, for every row.
                let (mut mirror, ships, simulate) = world(n, edge);
                measure(
                    &mut mirror,
                    &ships,
                    players,
                    radius,
                    once_per_entity,
                    &simulate,
                );
            }
        }
    }
}

/// `n` entities over an `edge` x `edge` world, one in ten a ship; the ships' ids, and the
/// shards' work (untimed): drift everything, and ships thrust along their heading up to the
/// ships' top speed.
fn world(n: u64, edge: f32) -> (Mirror, Vec<EntityId>, impl Fn(&mut Mirror)) {
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
    let dt = 1.0 / HZ as f32;
    let simulate = move |mirror: &mut Mirror| {
        for (id, ship) in &ids {
            let s = &mut mirror
                .check_owner(*id, &owner, None)
                .expect("owned")
                .snapshot
                .state;
            if *ship {
                let (vel, _) = steer_ship(s.vel, s.angle, 1.0, 0.0);
                s.vel = vel;
            }
            s.pos[0] += s.vel[0] * dt;
            s.pos[1] += s.vel[1] * dt;
            s.angle += s.ang_vel * dt;
        }
    };
    (mirror, ships, simulate)
}

fn measure(
    mirror: &mut Mirror,
    ships: &[EntityId],
    players: usize,
    radius: f64,
    once_per_entity: bool,
    simulate: &impl Fn(&mut Mirror),
) {
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
    let mut buf: Vec<SeenEntity> = Vec::new();
    for tick in 1..=100u64 {
        simulate(mirror);
        let t = Instant::now();
        let mut tick_bytes = 0;
        let mut tick_seen = 0;
        let viewed;
        if once_per_entity {
            let v = views(mirror, &table, radius, tick);
            viewed = t.elapsed();
            for (player, view) in v {
                let encoder = encoders.get_mut(&player).expect("a stream per player");
                tick_seen += view.seen.entities.len();
                tick_bytes += encoder.encode_snapshot(view.seen).len();
                // The client's acknowledgement arrives two ticks later.
                if tick > 2 {
                    encoder.acknowledge(tick - 2);
                }
            }
        } else {
            let all: Vec<&EntitySnapshot> = mirror.iter().map(|(_, r)| &r.snapshot).collect();
            let index = SpatialIndex::build(all.iter().map(|e| (e.id.0, e.state.point())), radius);
            let v: Vec<(u64, Vec<EntitySnapshot>)> = table
                .iter()
                .map(|(p, ship)| {
                    let me = mirror.get(*ship).expect("a ship").snapshot;
                    let near = index
                        .within(me.state.point(), radius)
                        .map(|(_, i)| *all[i as usize])
                        .collect();
                    (*p, near)
                })
                .collect();
            viewed = t.elapsed();
            for (player, entities) in &v {
                let encoder = encoders.get_mut(player).expect("a stream per player");
                buf.clear();
                buf.extend(entities.iter().map(SeenEntity::from));
                tick_seen += entities.len();
                tick_bytes += encoder.encode(tick, &buf).len();
                if tick > 2 {
                    encoder.acknowledge(tick - 2);
                }
            }
        }
        let total = t.elapsed();
        // The first ticks send whole updates; the steady state is what is measured.
        if tick > 10 {
            view_ms.push(viewed.as_secs_f64() * 1000.0);
            encode_ms.push((total - viewed).as_secs_f64() * 1000.0);
            total_ms.push(total.as_secs_f64() * 1000.0);
            seen += tick_seen;
            bytes += tick_bytes;
        }
    }
    let ticks = total_ms.len() as f64;
    let per_client_bytes = bytes as f64 / ticks / players as f64;
    let per_player_us = mean(&encode_ms) * 1000.0 / players as f64;
    println!(
        "{players:>4} players: views {:.2} ms + encoding {:.2} ms = mean {:.2} ms, p99 {:.2} ms per tick ({:.0}% of a core); {per_player_us:.1} us of encoding per player; {:.0} entities seen per player; {:.0} bytes per client per tick = {:.1} kbit/s of state per client",
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
