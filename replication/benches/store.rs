//! Checkpoint throughput and restore time on Postgres and SQLite. Prints numbers, never fails.
//!   scripts/bench-store.sh   (starts a throwaway Postgres, runs this, stops it)

use std::time::Instant;

use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState, SectorId, ShardId};
use sidereal_replication::mirror::EntityRecord;
use sidereal_replication::store::{EntityRow, Store, WriteMode};
use sidereal_replication::store_follower::{LoadedWorld, StoreFollower};

fn rows(n: usize, version: u64) -> Vec<EntityRow> {
    (0..n)
        .map(|i| EntityRecord {
            snapshot: EntitySnapshot {
                id: EntityId(i as u64 + 1),
                kind: EntityKind::Asteroid,
                state: EntityState {
                    pos: [
                        (i % 3000) as f32 + 0.25,
                        (i / 3000) as f32 * 10.0 + version as f32,
                    ],
                    vel: [3.0, -1.0],
                    angle: 0.5,
                    ang_vel: 0.1,
                },
                ttl_ticks: None,
                player: false,
            },
            owner: ShardId::new("shard-0"),
            epoch: 2,
            in_transit: false,
            previous_owner: None,
            version,
        })
        .filter_map(|r| EntityRow::from_record(&r))
        .collect()
}

/// An authority holding `loaded`'s live entities, as a new leader starts.
fn restore(loaded: LoadedWorld, world: &[SectorId]) -> sidereal_replication::Authority {
    let mut a = sidereal_replication::Authority::new(sidereal_replication::AuthorityConfig {
        world: world.to_vec(),
        secret: "s".into(),
        tick_hz: 30,
        shadow_margin: 50.0,
    });
    a.mirror_mut().restore(loaded.live, loaded.archived);
    a
}

/// What a takeover reads: a cold start reads every row; a warm standby, which followed the
/// store while it waited, reads only the last checkpoint's changes (here a tenth of the world
/// moved since it last looked). Both end in the same authority.
async fn takeover_reads() {
    println!(
        "| backend | stored entities | changed since the standby last read | cold: read + restore | warm: last changes + restore | of which the last changes | of which restore | warm, nothing changed | the standby's first read |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let world = vec![SectorId::new(4, 0, 0).unwrap()];
    for backend in ["postgres", "sqlite"] {
        for n in [200_000usize, 1_000_000] {
            let store = fresh(backend, &format!("takeover_{backend}_{n}")).await;
            for chunk in rows(n, 1).chunks(100_000) {
                store.write_checkpoint(chunk, &[]).await.unwrap();
            }
            let t = Instant::now();
            let mut warm = StoreFollower::default();
            warm.catch_up(&store).await.unwrap();
            let first = t.elapsed().as_secs_f64();
            let changed: Vec<EntityRow> = rows(n, 2).into_iter().step_by(10).collect();
            store.write_checkpoint(&changed, &[]).await.unwrap();

            let t = Instant::now();
            let cold = StoreFollower::load(&store, &world).await.unwrap();
            let cold_read = t.elapsed().as_secs_f64();
            let a = restore(cold, &world);
            let cold_total = t.elapsed().as_secs_f64();
            let restore_cold = cold_total - cold_read;
            drop(a);

            let t = Instant::now();
            let read = warm.catch_up(&store).await.unwrap();
            let caught_up = t.elapsed().as_secs_f64();
            let loaded = warm.into_world(&store, &world).await.unwrap();
            let warm_read = t.elapsed().as_secs_f64();
            let a = restore(loaded, &world);
            let warm_total = t.elapsed().as_secs_f64();
            assert_eq!(a.mirror().len(), n);
            // After a kill -9 the standby read the dead leader's last checkpoint long before
            // the lease ran out: nothing is left to read.
            let mut idle = StoreFollower::default();
            idle.catch_up(&store).await.unwrap();
            // Meanwhile it polls the lease (four times a second): on SQLite the first queries
            // after a big read pay for it once (about 1 s per million rows here).
            for _ in 0..4 {
                store.leadership().await.unwrap();
            }
            let t = Instant::now();
            let nothing = idle.catch_up(&store).await.unwrap();
            let a = restore(idle.into_world(&store, &world).await.unwrap(), &world);
            let idle_total = t.elapsed().as_secs_f64();
            assert_eq!((nothing, a.mirror().len()), (0, n));
            println!(
                "| {backend} | {n} | {read} | {cold_total:.2} s | {warm_total:.2} s | {caught_up:.2} s | {:.2} s / {:.2} s | {idle_total:.2} s | {first:.2} s |",
                restore_cold,
                warm_total - warm_read,
            );
        }
    }
}

async fn fresh(kind: &str, tag: &str) -> Store {
    if kind == "sqlite" {
        let dir = std::env::temp_dir().join(format!("sidereal-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        return Store::open_url(&format!("sqlite://{}", dir.join("b.db").display()))
            .await
            .unwrap();
    }
    let admin = std::env::var("SIDEREAL_BENCH_DATABASE_URL")
        .expect("SIDEREAL_BENCH_DATABASE_URL (run scripts/bench-store.sh)");
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let db = format!("bench_{tag}");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .unwrap();
    Store::open_url(&format!("{}/{db}", admin.rsplit_once('/').unwrap().0))
        .await
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `scripts/bench-store.sh takeover`: only the takeover reads.
    if std::env::args().any(|a| a == "takeover") {
        takeover_reads().await;
        return;
    }
    println!("| backend | dirty rows | method | first write rows/s | update rows/s |");
    println!("|---|---|---|---|---|");
    for backend in ["postgres", "sqlite"] {
        for n in [10_000usize, 100_000] {
            for (name, mode) in [
                ("fast path", WriteMode::Fast),
                ("multi-row upsert", WriteMode::MultiRow),
                ("naive per-row", WriteMode::PerRow),
            ] {
                if mode == WriteMode::PerRow && n > 10_000 {
                    continue;
                }
                let store = fresh(backend, &format!("{backend}_{n}_{mode:?}").to_lowercase()).await;
                let first = rows(n, 1);
                let t = Instant::now();
                store.write_with(mode, &first, &[]).await.unwrap();
                let insert = n as f64 / t.elapsed().as_secs_f64();
                let second = rows(n, 2);
                let t = Instant::now();
                store.write_with(mode, &second, &[]).await.unwrap();
                let update = n as f64 / t.elapsed().as_secs_f64();
                println!("| {backend} | {n} | {name} | {insert:.0} | {update:.0} |");
            }
        }
    }
    println!();
    takeover_reads().await;
    println!();
    let world = vec![SectorId::new(4, 0, 0).unwrap()];
    for backend in ["postgres", "sqlite"] {
        let store = fresh(backend, &format!("restore_{backend}")).await;
        store
            .write_checkpoint(&rows(100_000, 1), &[])
            .await
            .unwrap();
        let t = Instant::now();
        let loaded = StoreFollower::load(&store, &world).await.unwrap();
        let a = restore(loaded, &world);
        println!(
            "restore of 100k entities from {backend} into the mirror: {:.2} s ({} loaded)",
            t.elapsed().as_secs_f64(),
            a.mirror().len()
        );
    }
}
