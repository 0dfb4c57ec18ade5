//! Store conformance: the same tests against SQLite (a temp file) and Postgres (a throwaway
//! cluster started by `make test`, URL in SIDEREAL_TEST_DATABASE_URL).

use std::sync::atomic::{AtomicU32, Ordering};

use sidereal_core::{
    EntityId, EntityKind, EntitySnapshot, EntityState, Placement, SectorId, ShardId,
};
use sidereal_replication::mirror::EntityRecord;
use sidereal_replication::store::{Account, Db, EntityRow, Store, StoreError, WriteMode};
use sidereal_replication::store_follower::StoreFollower;

fn world() -> Vec<SectorId> {
    vec![SectorId::new(2, 0, 0).unwrap()]
}

static N: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database of each backend.
async fn stores() -> Vec<(Store, String)> {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sidereal-store-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite_url = format!("sqlite://{}", dir.join("t.db").display());
    std::fs::create_dir_all(&dir).unwrap();
    let admin = std::env::var("SIDEREAL_TEST_DATABASE_URL")
        .expect("SIDEREAL_TEST_DATABASE_URL is not set: run the suite through `make test`, which starts a throwaway Postgres");
    let db = format!("conformance_{}_{n}", std::process::id());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("admin connection");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .unwrap();
    let pg_url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    vec![
        (Store::open_url(&sqlite_url).await.unwrap(), sqlite_url),
        (Store::open_url(&pg_url).await.unwrap(), pg_url),
    ]
}

fn record(id: u64, x: f32, version: u64) -> EntityRecord {
    EntityRecord {
        snapshot: EntitySnapshot {
            id: EntityId(id),
            kind: EntityKind::Asteroid,
            state: EntityState {
                pos: [x, 10.0],
                vel: [1.5, -2.0],
                angle: 0.5,
                ang_vel: 0.1,
            },
            ttl_ticks: None,
            player: false,
        },
        owner: ShardId::new("shard-0"),
        epoch: 3,
        in_transit: false,
        previous_owner: None,
        version,
    }
}

fn rows(records: &[EntityRecord]) -> Vec<EntityRow> {
    records.iter().filter_map(EntityRow::from_record).collect()
}

#[tokio::test]
async fn checkpoints_round_trip_newer_versions_win_and_deletes_apply() {
    for (store, url) in stores().await {
        let first: Vec<_> = (1..=500).map(|i| record(i, i as f32, 5)).collect();
        store.write_checkpoint(&rows(&first), &[]).await.unwrap();
        // A newer version moves entity 1, an older one for entity 2 is ignored, 3 is deleted.
        let newer = rows(&[record(1, 77.0, 6), record(2, 99.0, 4)]);
        store.write_checkpoint(&newer, &[3]).await.unwrap();
        let loaded = StoreFollower::load(&store, &world()).await.unwrap();
        assert_eq!(loaded.live.len(), 499, "{url}");
        assert!(loaded.quarantined.is_empty(), "{url}");
        let get = |id: u64| {
            loaded
                .live
                .get(&EntityId(id))
                .map(|r| (r.snapshot, r.epoch, r.version))
        };
        let (s1, epoch, version) = get(1).unwrap();
        assert_eq!(
            (s1.state.pos, epoch, version),
            ([77.0, 10.0], 3, 6),
            "{url}"
        );
        assert_eq!(
            get(2).unwrap().0.state.pos,
            [2.0, 10.0],
            "{url}: an older version never overwrites"
        );
        assert!(get(3).is_none(), "{url}");
        assert_eq!(
            s1.state,
            record(1, 77.0, 6).snapshot.state,
            "{url}: state is stored exactly"
        );
    }
}

#[tokio::test]
async fn every_write_mode_stores_the_same_world() {
    for (store, url) in stores().await {
        let mut all = Vec::new();
        for (k, mode) in [WriteMode::Fast, WriteMode::MultiRow, WriteMode::PerRow]
            .into_iter()
            .enumerate()
        {
            let recs: Vec<_> = (0..300)
                .map(|i| record(1 + (k as u64) * 1000 + i, (i % 900) as f32, 1))
                .collect();
            store.write_with(mode, &rows(&recs), &[]).await.unwrap();
            all.extend(rows(&recs));
        }
        let mut stored = store.entity_rows().await.unwrap();
        stored.sort_by_key(|r| r.id);
        all.sort_by_key(|r| r.id);
        assert_eq!(stored, all, "{url}");
    }
}

#[tokio::test]
async fn projectiles_are_not_persisted() {
    let mut r = record(9, 1.0, 1);
    r.snapshot.kind = EntityKind::Projectile;
    assert!(EntityRow::from_record(&r).is_none());
}

#[tokio::test]
async fn bad_rows_are_quarantined_not_loaded() {
    for (store, url) in stores().await {
        store
            .write_checkpoint(&rows(&[record(1, 5.0, 1)]), &[])
            .await
            .unwrap();
        let insert = |id: i64, sector: &str, x: &str, kind: i16| {
            format!(
                "INSERT INTO entities (id, kind, sector, pos_x, pos_y, vel_x, vel_y, angle, ang_vel, player, owner_epoch, version) \
                 VALUES ({id}, {kind}, '{sector}', {x}, 10, 0, 0, 0, 0, false, 1, 1)"
            )
        };
        let mut bad = vec![
            (2, insert(2, "s0-x999-y0", "5", 1), "not in its sector"),
            (3, insert(3, "not-a-sector", "5", 1), "invalid sector name"),
            (4, insert(4, "s0-x0-y0", "5", 9), "unknown kind"),
        ];
        // A NaN position: Postgres stores it; SQLite turns NaN into NULL, so store text instead.
        if url.starts_with("postgres") {
            bad.push((6, insert(6, "s0-x0-y0", "'NaN'", 1), "not finite"));
        } else {
            bad.push((6, insert(6, "s0-x0-y0", "'garbage'", 1), "does not decode"));
        }
        for (_, sql, _) in &bad {
            match store.db() {
                Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
                Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
            }
        }
        // Valid, but outside every root (its root was removed): archived, kept, not live.
        let outside = insert(5, "s0-x9000-y0", "9000500", 1);
        match store.db() {
            Db::Postgres(p) => sqlx::query(&outside).execute(p).await.map(|_| ()).unwrap(),
            Db::Sqlite(p) => sqlx::query(&outside).execute(p).await.map(|_| ()).unwrap(),
        }
        let loaded = StoreFollower::load(&store, &world()).await.unwrap();
        assert_eq!(loaded.live.len(), 1, "{url}: only the good row is live");
        assert_eq!(
            loaded.archived.keys().map(|id| id.0).collect::<Vec<_>>(),
            [5],
            "{url}: the row outside the world is archived"
        );
        for (id, _, reason) in &bad {
            let q = loaded
                .quarantined
                .iter()
                .find(|(qid, _)| qid == id)
                .unwrap_or_else(|| panic!("{url}: row {id} not quarantined"));
            assert!(
                q.1.contains(reason),
                "{url}: row {id}: {:?} should mention {reason:?}",
                q.1
            );
        }
        // Moved, not copied: the next start loads cleanly and the quarantine keeps them.
        let again = StoreFollower::load(&store, &world()).await.unwrap();
        assert!(
            again.quarantined.is_empty() && again.live.len() == 1 && again.archived.len() == 1,
            "{url}"
        );
        assert_eq!(store.quarantined().await.unwrap().len(), bad.len(), "{url}");
    }
}

#[tokio::test]
async fn placement_and_accounts_are_durable() {
    for (store, url) in stores().await {
        assert_eq!(store.load_placement().await.unwrap(), None);
        let mut p = Placement {
            generation: 7,
            sectors: Default::default(),
            world: None,
        };
        p.sectors.insert(world()[0], ShardId::new("shard-3"));
        store.save_placement(&p).await.unwrap();
        p.generation = 8;
        store.save_placement(&p).await.unwrap();
        // Reopening (a restart) finds the latest placement.
        let reopened = Store::open_url(&url).await.unwrap();
        assert_eq!(
            reopened.load_placement().await.unwrap(),
            Some(p.clone()),
            "{url}"
        );

        let account = |name: &str, hash: &str, ship, player| Account {
            name: name.into(),
            password_hash: hash.into(),
            ship_id: ship,
            player_id: player,
        };
        assert!(
            store
                .create_account(&account("ada", "hash1", Some(42), Some(7)))
                .await
                .unwrap()
        );
        assert!(
            !store
                .create_account(&account("ada", "other", None, Some(8)))
                .await
                .unwrap(),
            "{url}: names are unique"
        );
        assert!(
            !store
                .create_account(&account("bob", "other", None, Some(7)))
                .await
                .unwrap(),
            "{url}: player ids are unique"
        );
        // An account from before player ids: it gets one, once, and never a taken one.
        assert!(
            store
                .create_account(&account("old", "h", None, None))
                .await
                .unwrap()
        );
        assert!(
            !store.set_player_id("old", 7).await.unwrap(),
            "{url}: 7 is ada's"
        );
        assert!(store.set_player_id("old", 9).await.unwrap());
        assert!(
            !store.set_player_id("old", 10).await.unwrap(),
            "{url}: set once"
        );
        assert_eq!(
            reopened.account("old").await.unwrap().unwrap().player_id,
            Some(9)
        );
        assert!(store.set_ship("ada", Some(43)).await.unwrap());
        assert!(!store.set_ship("nobody", Some(1)).await.unwrap());
        let a = reopened.account("ada").await.unwrap().unwrap();
        assert_eq!(
            (a.password_hash.as_str(), a.ship_id, a.player_id),
            ("hash1", Some(43), Some(7)),
            "{url}"
        );
    }
}

/// Ships are reserved in accounts before they exist as entities: the highest reserved id is
/// known, so ids minted after a restart never collide with one.
#[tokio::test]
async fn the_highest_reserved_ship_id_is_known() {
    for (store, url) in stores().await {
        assert_eq!(store.max_account_ship().await.unwrap(), None, "{url}");
        for (name, ship, player) in [("ada", Some(77), 5), ("bob", None, 6), ("cyd", Some(12), 7)] {
            let account = Account {
                name: name.into(),
                password_hash: "h".into(),
                ship_id: ship,
                player_id: Some(player),
            };
            assert!(store.create_account(&account).await.unwrap());
        }
        assert_eq!(store.max_account_ship().await.unwrap(), Some(77), "{url}");
    }
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    for (store, url) in stores().await {
        let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99999, 'from the future', true, X'00', 0)";
        match store.db() {
            Db::Postgres(p) => sqlx::query(&sql.replace("X'00'", "'\\x00'::bytea"))
                .execute(p)
                .await
                .map(|_| ())
                .unwrap(),
            Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
        }
        match Store::open_url(&url).await {
            Err(e @ StoreError::SchemaTooNew { found: 99999, .. }) => {
                assert!(e.to_string().contains("newer than this binary"), "{e}")
            }
            other => panic!("{url}: expected SchemaTooNew, got {other:?}"),
        }
    }
}

/// Two replications on one store (a standby that took over while the leader was stopped): the
/// first's writes are refused once the second took the store, whatever it tries, and the rows
/// show only the second's.
#[tokio::test]
async fn a_deposed_leaders_writes_are_refused_and_the_rows_show_it() {
    for (first, url) in stores().await {
        let mine = first.take_leadership("replication-a").await.unwrap();
        first
            .write_checkpoint(&rows(&[record(1, 100.0, 1)]), &[])
            .await
            .unwrap();
        let second = Store::open_url(&url).await.unwrap();
        let theirs = second.take_leadership("replication-b").await.unwrap();
        assert_eq!(theirs, mine + 1, "{url}");
        assert_eq!(
            second.leadership().await.unwrap(),
            Some((theirs, "replication-b".into()))
        );
        // The deposed leader comes back and tries to write: refused, nothing applied.
        match first
            .write_checkpoint(&rows(&[record(1, 999.0, 2), record(2, 5.0, 1)]), &[])
            .await
        {
            Err(StoreError::Deposed {
                mine: m,
                current,
                holder,
            }) => assert_eq!(
                (m, current, holder.as_str()),
                (mine, theirs, "replication-b")
            ),
            other => panic!("{url}: a deposed leader's checkpoint gave {other:?}"),
        }
        let p = Placement {
            generation: 9,
            sectors: Default::default(),
            world: Some(world()),
        };
        let refused = first.save_placement(&p).await;
        assert!(
            refused.as_ref().is_err_and(StoreError::is_deposed),
            "{url}: {refused:?}"
        );
        let account = Account {
            name: "late".into(),
            password_hash: "argon2:...".into(),
            ship_id: None,
            player_id: Some(77),
        };
        let refused = first.create_account(&account).await;
        assert!(
            refused.as_ref().is_err_and(StoreError::is_deposed),
            "{url}: {refused:?}"
        );
        assert_eq!(
            second.account("late").await.unwrap(),
            None,
            "{url}: no account made by the deposed leader"
        );
        // The new leader writes as usual.
        second
            .write_checkpoint(&rows(&[record(1, 300.0, 3)]), &[])
            .await
            .unwrap();
        let stored = second.entity_rows().await.unwrap();
        assert_eq!(
            stored.len(),
            1,
            "{url}: the deposed leader's new entity never landed"
        );
        assert_eq!(
            (stored[0].pos[0], stored[0].version),
            (300.0, 3),
            "{url}: only the leader's write is there"
        );
        assert_eq!(second.load_placement().await.unwrap(), None, "{url}");
    }
}

/// Link incarnations reserved by one leader stay reserved for the next (a new leader starts
/// above them, so ids minted by shards that outlived the old leader never collide), the mark
/// never goes down, and a deposed leader cannot move it.
#[tokio::test]
async fn reserved_incarnations_outlive_their_leader_and_only_the_leader_reserves() {
    for (first, url) in stores().await {
        assert_eq!(first.reserved_incarnations().await.unwrap(), 0, "{url}");
        first.take_leadership("replication-a").await.unwrap();
        first.reserve_incarnations(4097).await.unwrap();
        first.reserve_incarnations(100).await.unwrap();
        assert_eq!(
            first.reserved_incarnations().await.unwrap(),
            4097,
            "{url}: never lowered"
        );
        let second = Store::open_url(&url).await.unwrap();
        second.take_leadership("replication-b").await.unwrap();
        assert_eq!(second.reserved_incarnations().await.unwrap(), 4097, "{url}");
        let refused = first.reserve_incarnations(9000).await;
        assert!(
            refused.as_ref().is_err_and(StoreError::is_deposed),
            "{url}: {refused:?}"
        );
        second.reserve_incarnations(8193).await.unwrap();
        assert_eq!(second.reserved_incarnations().await.unwrap(), 8193, "{url}");
    }
}

/// Standbys take the store by compare-and-set: never while a leader's lease is fresh, at once
/// once it let go, and of two racing for the same vacancy exactly one wins (the other waits on
/// as a standby). The first leader is then deposed.
#[tokio::test]
async fn only_one_standby_takes_a_vacant_store_and_never_a_live_leaders() {
    let lease = std::time::Duration::from_secs(3);
    for (first, url) in stores().await {
        assert_eq!(
            first.take_vacant_leadership("a", lease).await.unwrap(),
            Some(1),
            "{url}: nobody led it"
        );
        let b = Store::open_url(&url).await.unwrap();
        let c = Store::open_url(&url).await.unwrap();
        assert_eq!(
            b.take_vacant_leadership("b", lease).await.unwrap(),
            None,
            "{url}: a live leader's lease keeps a standby out"
        );
        first.release_leadership().await.unwrap();
        let (rb, rc) = tokio::join!(
            b.take_vacant_leadership("b", lease),
            c.take_vacant_leadership("c", lease)
        );
        let won: Vec<u64> = [rb.unwrap(), rc.unwrap()].into_iter().flatten().collect();
        assert_eq!(won, vec![2], "{url}: exactly one of two racing standbys");
        let refused = first.check_leading().await;
        assert!(refused.is_err_and(|e| e.is_deposed()), "{url}");
    }
}

/// Runs `sql` on whichever database `store` is.
async fn exec(store: &Store, sql: &str) {
    match store.db() {
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
    }
}

/// Live entities as (id, position, epoch, version), and archived ids.
type WorldRows = (Vec<(u64, [f32; 2], u64, u64)>, Vec<u64>);

/// What two loads of the same store must agree on.
fn world_of(w: &sidereal_replication::store_follower::LoadedWorld) -> WorldRows {
    let mut live: Vec<_> = w
        .live
        .values()
        .map(|r| (r.snapshot.id.0, r.snapshot.state.pos, r.epoch, r.version))
        .collect();
    live.sort_by_key(|e| e.0);
    let mut archived: Vec<_> = w.archived.keys().map(|id| id.0).collect();
    archived.sort_unstable();
    (live, archived)
}

#[tokio::test]
async fn a_follower_reads_only_what_changed_and_ends_where_a_full_load_does() {
    for (store, url) in stores().await {
        let first: Vec<_> = (1..=50).map(|i| record(i, i as f32, 1)).collect();
        store.write_checkpoint(&rows(&first), &[]).await.unwrap();
        let mut warm = StoreFollower::default();
        assert_eq!(
            warm.catch_up(&store).await.unwrap(),
            50,
            "{url}: all, the first time"
        );
        assert_eq!(
            warm.catch_up(&store).await.unwrap(),
            0,
            "{url}: nothing changed"
        );

        // 10 moved, 5 deleted, 5 new, one that cannot be loaded, one older version (ignored).
        let mut changed: Vec<_> = (1..=10).map(|i| record(i, i as f32 + 100.0, 2)).collect();
        changed.extend((51..=55).map(|i| record(i, i as f32, 1)));
        changed.push(record(20, 900.0, 0));
        let mut changed = rows(&changed);
        let mut bad = rows(&[record(56, 5.0, 1)]).remove(0);
        bad.sector = "s0-x999-y0".into();
        changed.push(bad);
        store
            .write_checkpoint(&changed, &[11, 12, 13, 14, 15])
            .await
            .unwrap();
        assert_eq!(
            warm.catch_up(&store).await.unwrap(),
            16,
            "{url}: the changed rows only (the older version was not written)"
        );
        assert_eq!(warm.len(), 50 - 5 + 5 + 1, "{url}");

        // A cold load agrees, and quarantines the bad row; the warm follower sees it leave.
        let cold = StoreFollower::load(&store, &world()).await.unwrap();
        assert_eq!(cold.quarantined.len(), 1, "{url}");
        assert_eq!(warm.catch_up(&store).await.unwrap(), 0, "{url}");
        assert_eq!(
            warm.len(),
            50,
            "{url}: the quarantined row's tombstone applied"
        );
        let warm = warm.into_world(&store, &world()).await.unwrap();
        assert!(warm.quarantined.is_empty(), "{url}");
        assert_eq!(world_of(&warm), world_of(&cold), "{url}");
        assert_eq!(warm.live.len(), 50, "{url}");
        let moved = &warm.live[&EntityId(3)];
        assert_eq!(
            (moved.snapshot.state.pos, moved.version),
            ([103.0, 10.0], 2),
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_follower_behind_the_kept_tombstones_reads_everything_again() {
    for (store, url) in stores().await {
        let first: Vec<_> = (1..=20).map(|i| record(i, i as f32, 1)).collect();
        store.write_checkpoint(&rows(&first), &[]).await.unwrap();
        let mut behind = StoreFollower::default();
        behind.catch_up(&store).await.unwrap();
        store.write_checkpoint(&[], &[1, 2]).await.unwrap();
        // Thousands of changes later (the counter moved on): the pruning that runs every 64th
        // change drops the tombstones of 1 and 2.
        exec(&store, "UPDATE entity_changes SET seq = 10000 WHERE id = 1").await;
        for i in 0..64 {
            store
                .write_checkpoint(&rows(&[record(3, 50.0 + i as f32, 2 + i)]), &[])
                .await
                .unwrap();
        }
        let kept: i64 = match store.db() {
            Db::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM entity_tombstones")
                .fetch_one(p)
                .await
                .unwrap(),
            Db::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM entity_tombstones")
                .fetch_one(p)
                .await
                .unwrap(),
        };
        assert_eq!(kept, 0, "{url}: old tombstones pruned");
        let changes = store.read_changes(behind.through()).await.unwrap();
        assert!(
            changes.whole,
            "{url}: too far behind to read only the changes"
        );
        assert_eq!(behind.apply(changes), 18, "{url}");
        assert_eq!(behind.len(), 18, "{url}: 1 and 2 are gone all the same");
        let cold = StoreFollower::load(&store, &world()).await.unwrap();
        let warm = behind.into_world(&store, &world()).await.unwrap();
        assert_eq!(world_of(&warm), world_of(&cold), "{url}");
    }
}

/// Two checkpoints in flight at once (the pool has several connections) and a follower reading
/// all along: change numbers commit in order, so the follower never skips a write that
/// committed after one numbered above it.
#[tokio::test]
async fn a_follower_misses_nothing_while_writes_race() {
    for (store, url) in stores().await {
        let first: Vec<_> = (1..=400).map(|i| record(i, i as f32, 1)).collect();
        store.write_checkpoint(&rows(&first), &[]).await.unwrap();
        let writer = |lane: u64| {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..40u64 {
                    // Each lane moves its own ids (even or odd) and deletes one each round.
                    let ids = (1..=400).filter(|i| i % 2 == lane && *i > round * 2 + 2);
                    let moved: Vec<_> = ids
                        .map(|i| record(i, (i + round) as f32, 2 + round))
                        .collect();
                    let gone = [(round * 2 + 2 - lane) as i64];
                    store.write_checkpoint(&rows(&moved), &gone).await.unwrap();
                }
            })
        };
        let lanes = [writer(0), writer(1)];
        let mut warm = StoreFollower::default();
        while !lanes.iter().all(|l| l.is_finished()) {
            warm.catch_up(&store).await.unwrap();
        }
        for l in lanes {
            l.await.unwrap();
        }
        warm.catch_up(&store).await.unwrap();
        let cold = StoreFollower::load(&store, &world()).await.unwrap();
        let warm = warm.into_world(&store, &world()).await.unwrap();
        assert_eq!(warm.live.len(), 400 - 80, "{url}");
        assert_eq!(world_of(&warm), world_of(&cold), "{url}");
    }
}

/// Mid-upgrade, an older binary may lead the store: its writes carry no change numbers. A
/// follower that sees such a leader drops what it read (it may miss those writes) and reads the
/// whole world again once a leader that stamps takes over, ending where a cold load does.
#[tokio::test]
async fn a_leader_that_does_not_stamp_its_writes_makes_a_follower_read_everything_again() {
    for (store, url) in stores().await {
        store.take_leadership("new-1").await.unwrap();
        let first: Vec<_> = (1..=30).map(|i| record(i, i as f32, 1)).collect();
        store.write_checkpoint(&rows(&first), &[]).await.unwrap();
        let mut warm = StoreFollower::default();
        assert_eq!(warm.catch_up(&store).await.unwrap(), 30, "{url}");
        // An older binary takes the store (its statement knows nothing of stamps) and moves
        // entity 7 without a change number.
        exec(
            &store,
            "UPDATE leadership SET epoch = epoch + 1, holder = 'old-binary' WHERE id = 1",
        )
        .await;
        exec(
            &store,
            "UPDATE entities SET pos_x = 500, version = 9 WHERE id = 7",
        )
        .await;
        assert_eq!(warm.catch_up(&store).await.unwrap(), 0, "{url}");
        assert!(
            warm.is_empty() && warm.through().is_none(),
            "{url}: dropped"
        );
        // A stamping leader takes over: the follower reads everything, the old write included.
        let next = Store::open_url(&url).await.unwrap();
        next.take_leadership("new-2").await.unwrap();
        assert_eq!(warm.catch_up(&next).await.unwrap(), 30, "{url}");
        let warm = warm.into_world(&next, &world()).await.unwrap();
        assert_eq!(
            warm.live[&EntityId(7)].snapshot.state.pos[0],
            500.0,
            "{url}"
        );
        let cold = StoreFollower::load(&next, &world()).await.unwrap();
        assert_eq!(world_of(&warm), world_of(&cold), "{url}");
    }
}
