//! Crash recovery and database outages with real processes and a real Postgres (the
//! throwaway cluster `make test` starts; SIDEREAL_TEST_DATABASE_URL / SIDEREAL_TEST_PG_DIR).

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sidereal_core::control::EntityView;
use sidereal_core::sector_view::ViewedEntity;
use sidereal_core::stream_client::{FeedOptions, SectorFeed};
use sidereal_core::{EntityKind, SectorId, ShardId, placement};

use super::streams::follow;
use super::*;

/// The outage test stops the shared Postgres; nothing else here may use it meanwhile.
pub(crate) static PG: Mutex<()> = Mutex::new(());

fn admin_url() -> String {
    std::env::var("SIDEREAL_TEST_DATABASE_URL")
        .expect("SIDEREAL_TEST_DATABASE_URL is not set: run through `make test`")
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub(crate) fn fresh_database(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let admin = admin_url();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let db = format!("{tag}_{}_{n}", std::process::id());
    psql(&admin, &format!("CREATE DATABASE {db}"));
    format!("{}/{db}", admin.rsplit_once('/').unwrap().0)
}

fn world() -> Vec<SectorId> {
    vec!["s2-xm1-y0".parse().unwrap(), "s2-x0-y0".parse().unwrap()]
}

fn place(r: &Replication, shards: usize) {
    let ids: Vec<ShardId> = (0..shards)
        .map(|i| ShardId::new(format!("shard-{i}")))
        .collect();
    let generation = placement_of(r).generation + 1;
    let p = placement::even(&world(), &ids, generation);
    r.control.put_placement(&p).expect("placing the world");
}

fn entity_list(r: &Replication) -> Vec<EntityView> {
    r.control.entities("").into_values().collect()
}

fn applied(r: &Replication) -> f64 {
    metric(r, "sidereal_entity_updates_total{result=\"applied\"}")
}

fn speed(e: &EntityView) -> f64 {
    f64::from(e.vel[0]).hypot(f64::from(e.vel[1]))
}

fn pos(e: &EntityView) -> (f64, f64) {
    (f64::from(e.pos[0]), f64::from(e.pos[1]))
}

/// Where an entity was and how fast it went, as the mirror or a shard's stream showed it.
struct Seen {
    id: u64,
    kind: EntityKind,
    pos: (f64, f64),
    speed: f64,
}

impl Seen {
    fn from_mirror(e: &EntityView) -> Self {
        Seen {
            id: e.id.0,
            kind: e.kind,
            pos: pos(e),
            speed: speed(e),
        }
    }

    fn from_stream(e: &ViewedEntity) -> Self {
        let s = e.state();
        Seen {
            id: e.id.0,
            kind: e.kind,
            pos: (f64::from(s.pos[0]), f64::from(s.pos[1])),
            speed: f64::from(s.vel[0]).hypot(f64::from(s.vel[1])),
        }
    }
}

/// kill -9 replication at several moments; every durable entity comes back exactly once and
/// no older than one checkpoint interval plus a tick or two; accounts and ships survive. The
/// first round serves players from replication (shards report every tick: the mirror is the
/// reference); the others run it as the control plane (`--no-game`: shards report only when a
/// checkpoint asks), where the reference is what the shards' own streams show.
#[test]
fn replication_killed_at_random_moments_restores_the_world() {
    let _pg = PG.lock().unwrap_or_else(|e| e.into_inner());
    let interval = 1.0;
    for (round, backend) in ["postgres", "sqlite", "postgres"].into_iter().enumerate() {
        let data = TempDir::new("crash");
        let url = (backend == "postgres").then(|| fresh_database("crash"));
        let control_plane = round > 0;
        let mut extra = vec!["--checkpoint-interval", "1"];
        if control_plane {
            extra.push("--no-game");
        }
        let r = start_replication_with(600, &data.0, url.as_deref(), &extra);
        // Shards that do not wait for a new leader (they would resume with what they hold):
        // this is the store's restore, as when the shards die too.
        let mut shards: Vec<Proc> = (0..2)
            .map(|i| {
                start_shard_with(
                    &r,
                    &format!("shard-{i}"),
                    &["--metrics", "127.0.0.1:0", "--relink-timeout", "0"],
                )
            })
            .collect();
        wait_until("shards linked", Duration::from_secs(30), || {
            connected(&r).len() == 2
        });
        place(&r, 2);
        wait_until("updates flowing", Duration::from_secs(20), || {
            applied(&r) > 0.0
        });
        let durable: HashSet<u64> = entity_list(&r)
            .iter()
            .filter(|e| e.kind != EntityKind::Projectile)
            .map(|e| e.id.0)
            .collect();
        assert_eq!(durable.len(), 600);
        let ship = entity_list(&r)
            .into_iter()
            .find(|e| e.kind == EntityKind::Ship)
            .unwrap()
            .id
            .0;
        if let Some(u) = &url {
            psql(
                u,
                &format!(
                    "INSERT INTO accounts (name, password_hash, ship_id) VALUES ('pilot', 'argon2:...', {ship})"
                ),
            );
        }

        // Run for a round-dependent, uneven time, watching the world.
        let mut feed = SectorFeed::new("test-watcher", SECRET, FeedOptions::default());
        let mut watch = || -> Vec<Seen> {
            if !control_plane {
                return entity_list(&r).iter().map(Seen::from_mirror).collect();
            }
            follow(&r, &mut feed);
            feed.view.iter().map(Seen::from_stream).collect()
        };
        if control_plane {
            wait_until(
                "the streams show the world",
                Duration::from_secs(20),
                || watch().len() >= 600,
            );
            wait_until(
                "a checkpoint's report round",
                Duration::from_secs(10),
                || metric(&r, "sidereal_checkpoint_report_rounds_total") >= 1.0,
            );
        }
        let run_for =
            Duration::from_millis(1300 + 900 * round as u64 + (std::process::id() as u64 % 400));
        let start = Instant::now();
        let mut last = (Instant::now(), watch());
        while start.elapsed() < run_for {
            last = (Instant::now(), watch());
            if control_plane {
                // The stream arrives as the shards tick; read it about every tick.
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        if control_plane {
            assert_eq!(
                metric(&r, "sidereal_shard_report_every_ticks"),
                0.0,
                "round {round}: shards report only when a checkpoint asks"
            );
            assert_eq!(
                metric(&r, "sidereal_checkpoint_report_rounds_late_total"),
                0.0,
                "round {round}: every report round came in before the checkpoint wrote"
            );
        }
        let mut r = r;
        r.proc_.0.kill().expect("SIGKILL replication");
        let killed_at = Instant::now();
        r.proc_.0.wait().unwrap();
        // Shards that give up at once on their link stop by themselves.
        for s in &mut shards {
            wait_until(
                "shard exits after losing its link",
                Duration::from_secs(10),
                || s.0.try_wait().unwrap().is_some(),
            );
        }
        let staleness = killed_at.duration_since(last.0).as_secs_f64();

        let r2 = start_replication_with(600, &data.0, url.as_deref(), &extra);
        let restored = entity_list(&r2);
        let ids: Vec<u64> = restored.iter().map(|e| e.id.0).collect();
        let unique: HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(
            ids.len(),
            unique.len(),
            "round {round} ({backend}): an entity was restored twice"
        );
        assert_eq!(
            unique, durable,
            "round {round} ({backend}): exactly the durable entities come back"
        );
        let by_id: HashMap<u64, &EntityView> = restored.iter().map(|e| (e.id.0, e)).collect();
        let mut worst = 0.0f64;
        // A control-plane checkpoint waits up to 0.25 s for its report round (all came in
        // sooner: asserted above) and then holds state two ticks old at most.
        let round_trip = if control_plane { 0.25 } else { 0.0 };
        for e in last.1.iter().filter(|e| e.kind != EntityKind::Projectile) {
            let id = e.id;
            let now = by_id[&id];
            let ((x0, y0), (x1, y1)) = (e.pos, pos(now));
            let allowed = e.speed.max(speed(now)).max(60.0)
                * (interval + 2.0 / 30.0 + round_trip + staleness + 0.25)
                + 2.0;
            let d = (x1 - x0).hypot(y1 - y0);
            worst = worst.max(d / allowed);
            assert!(
                d <= allowed,
                "round {round} ({backend}): e{id} restored {d:.1} units from its last state (allowed {allowed:.1})"
            );
        }
        println!(
            "round {round} ({backend}): killed after {run_for:?}, {} entities restored, worst staleness {:.0}% of the bound",
            unique.len(),
            worst * 100.0
        );

        // The world resumes: the same shards come back and adopt their leaves.
        let _shards2: Vec<Proc> = (0..2)
            .map(|i| start_shard(&r2, &format!("shard-{i}")))
            .collect();
        wait_until("restored entities adopted", Duration::from_secs(20), || {
            entity_list(&r2)
                .iter()
                .all(|e| e.owner.0.starts_with("shard-") && !e.in_transit)
        });
        if let Some(u) = &url {
            assert_eq!(
                psql(u, "SELECT ship_id FROM accounts WHERE name = 'pilot'"),
                ship.to_string()
            );
            assert!(by_id.contains_key(&ship), "the pilot's ship exists");
        }
    }
}

/// Postgres goes away for 10 s: the world keeps running, replication stays ready (players can
/// still log in and shards be re-homed), the store's health says why, the backlog is kept and
/// flushed when the database returns, and the stored rows then equal the mirror.
#[test]
fn a_database_outage_keeps_the_world_running_and_loses_nothing() {
    let _pg = PG.lock().unwrap_or_else(|e| e.into_inner());
    let pg_dir = std::env::var("SIDEREAL_TEST_PG_DIR")
        .expect("SIDEREAL_TEST_PG_DIR is not set: run through `make test`");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh");
    let url = fresh_database("outage");
    let data = TempDir::new("outage");
    let r = start_replication_with(500, &data.0, Some(&url), &["--checkpoint-interval", "0.5"]);
    let mut shard = start_shard(&r, "shard-0");
    wait_until("shard linked", Duration::from_secs(30), || {
        connected(&r).len() == 1
    });
    place(&r, 1);
    let status = || r.control.status();
    let ready = || {
        Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{}/readyz", r.http),
            ])
            .output()
            .unwrap()
            .stdout
    };
    wait_until("a checkpoint", Duration::from_secs(10), || {
        status().last_checkpoint_age_seconds.is_some()
    });
    assert_eq!(ready(), b"200");

    let down = Command::new(script)
        .args(["pause", &pg_dir])
        .status()
        .unwrap();
    assert!(down.success());
    let outage = Instant::now();
    wait_until(
        "the store reports the outage",
        Duration::from_secs(8),
        || !status().store_healthy,
    );
    assert_eq!(
        ready(),
        b"200",
        "an outage does not take replication off the network"
    );
    assert_eq!(metric(&r, "sidereal_store_healthy"), 0.0);
    // No account and no ship is made while the store fails (each retry used to leave an
    // orphaned ship behind); the refusal is immediate and says why.
    let asked = Instant::now();
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
        ])
        .args([
            "--data",
            r#"{"name":"late","password":"correct horse battery"}"#,
        ])
        .arg(format!("{}/v1/accounts", r.http))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.ends_with("503") && out.contains("store is failing"),
        "{out}"
    );
    assert!(asked.elapsed() < Duration::from_secs(2), "refused at once");
    // The simulation goes on: updates keep arriving while the database is away.
    let before = applied(&r);
    wait_until("updates during the outage", Duration::from_secs(5), || {
        applied(&r) > before
    });
    wait_until("backlog grows", Duration::from_secs(5), || {
        status().checkpoint_backlog > 0
    });
    assert_eq!(connected(&r).len(), 1, "the shard is unaffected");
    let remaining = Duration::from_secs(10).saturating_sub(outage.elapsed());
    std::thread::sleep(remaining); // the outage itself, not synchronisation
    let up = Command::new(script)
        .args(["resume", &pg_dir])
        .status()
        .unwrap();
    assert!(up.success());

    assert_eq!(ready(), b"200");
    wait_until("store healthy again", Duration::from_secs(30), || {
        status().store_healthy
    });
    let flushed_at = Instant::now();
    wait_until(
        "a checkpoint after the outage",
        Duration::from_secs(10),
        || {
            status()
                .last_checkpoint_age_seconds
                .is_some_and(|age| age < flushed_at.elapsed().as_secs_f64() + 0.01)
        },
    );
    let live: HashMap<u64, EntityView> = entity_list(&r)
        .into_iter()
        .filter(|e| e.kind != EntityKind::Projectile)
        .map(|e| (e.id.0, e))
        .collect();
    assert_eq!(live.len(), 500);
    let stored: HashSet<u64> = psql(&url, "SELECT id FROM entities")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        stored,
        live.keys().copied().collect::<HashSet<_>>(),
        "every entity is stored after the backlog flush"
    );
    let versions: u64 = psql(&url, "SELECT COUNT(*) FROM entities WHERE version > 1")
        .parse()
        .unwrap();
    assert!(
        versions > 400,
        "moving state written during and after the outage ({versions} rows moved)"
    );
    assert!(metric(&r, "sidereal_checkpoint_failures_total") >= 1.0);

    // Stop the simulation so the mirror holds still, let the last changes be written, and the
    // stored rows are the mirror: every position, velocity and version.
    shard.0.kill().unwrap();
    shard.0.wait().unwrap();
    wait_until("the shard is gone", Duration::from_secs(10), || {
        connected(&r).is_empty()
    });
    let stopped = Instant::now();
    wait_until("the last changes written", Duration::from_secs(10), || {
        let s = status();
        s.checkpoint_backlog == 0
            && s.last_checkpoint_age_seconds
                .is_some_and(|age| age < stopped.elapsed().as_secs_f64())
    });
    let mirror: HashMap<u64, (String, u64)> = entity_list(&r)
        .into_iter()
        .filter(|e| e.kind != EntityKind::Projectile)
        .map(|e| {
            let row = format!("{}|{}|{}|{}", e.pos[0], e.pos[1], e.vel[0], e.vel[1]);
            (e.id.0, (row, e.version))
        })
        .collect();
    let stored: HashMap<u64, (String, u64)> = psql(
        &url,
        "SELECT id, pos_x, pos_y, vel_x, vel_y, version FROM entities",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        let num = |i: usize| f[i].parse::<f32>().unwrap();
        let row = format!("{}|{}|{}|{}", num(1), num(2), num(3), num(4));
        (f[0].parse().unwrap(), (row, f[5].parse().unwrap()))
    })
    .collect();
    assert_eq!(mirror.len(), 500);
    let differing: Vec<_> = mirror
        .iter()
        .filter(|(id, m)| stored.get(*id) != Some(*m))
        .take(5)
        .map(|(id, m)| (id, m, stored.get(id)))
        .collect();
    assert!(
        differing.is_empty() && stored.len() == mirror.len(),
        "stored rows differ from the mirror: {differing:?}"
    );
}

/// The world's roots come from the placement: removing a root over the control API takes its
/// entities out of the simulation into the store, a kill -9 of replication keeps them there
/// (archived, not quarantined, not simulated), and writing the root again brings every one
/// of them back to the shards.
#[test]
fn a_removed_root_is_archived_across_a_crash_and_comes_back_whole() {
    let _pg = PG.lock().unwrap_or_else(|e| e.into_inner());
    let url = fresh_database("roots");
    let data = TempDir::new("roots");
    let extra = ["--checkpoint-interval", "0.5"];
    let long_lived = |r: &Replication| -> HashMap<u64, EntityView> {
        r.control
            .entities("")
            .into_iter()
            .filter(|(_, e)| e.kind != EntityKind::Projectile)
            .collect()
    };
    let r = start_replication_with(600, &data.0, Some(&url), &extra);
    let shards: Vec<Proc> = (0..2)
        .map(|i| start_shard(&r, &format!("shard-{i}")))
        .collect();
    wait_until("shards linked", Duration::from_secs(30), || {
        connected(&r).len() == 2
    });
    place(&r, 2);
    let everyone: HashSet<u64> = long_lived(&r).into_keys().collect();
    assert_eq!(everyone.len(), 600);
    let [west, east] = [world()[0], world()[1]];
    let ids: Vec<ShardId> = ["shard-0", "shard-1"].map(ShardId::new).into();

    // Remove the west root.
    let mut shrunk = placement::even(&[east], &ids, placement_of(&r).generation + 1);
    shrunk.world = Some(vec![east]);
    r.control.put_placement(&shrunk).expect("removing a root");
    let status = r.control.status();
    assert_eq!(status.roots, 1);
    assert!(status.archived_entities > 100, "{status:?}");
    let archived = status.archived_entities;
    let live_ids: HashSet<u64> = long_lived(&r).into_keys().collect();
    assert_eq!(live_ids.len() + archived, 600);
    wait_until(
        "the shards simulate only the east root",
        Duration::from_secs(20),
        || {
            long_lived(&r)
                .values()
                .all(|e| e.pos[0] >= 0.0 && !e.in_transit && e.owner.0.starts_with("shard-"))
        },
    );
    // kill -9 replication at once (the placement and its world were durable before the PUT
    // answered); the shards stop with it. The archive survives in the store.
    let mut r = r;
    r.proc_.0.kill().unwrap();
    r.proc_.0.wait().unwrap();
    drop(shards);
    let r2 = start_replication_with(600, &data.0, Some(&url), &extra);
    let status = r2.control.status();
    assert_eq!(
        (status.roots, status.archived_entities, status.entities),
        (1, archived, 600 - archived),
        "{status:?}"
    );
    assert!(psql(&url, "SELECT count(*) FROM quarantine") == "0");
    assert_eq!(r2.control.placement().world, Some(vec![east]));
    assert_eq!(
        metric(&r2, "sidereal_store_rows_read_at_start"),
        600.0,
        "a cold start reads every stored row"
    );

    // Re-create the west root: every archived entity comes back and is simulated again.
    let _shards2: Vec<Proc> = (0..2)
        .map(|i| start_shard(&r2, &format!("shard-{i}")))
        .collect();
    wait_until("shards linked again", Duration::from_secs(30), || {
        connected(&r2).len() == 2
    });
    let mut whole = placement::even(&[west, east], &ids, placement_of(&r2).generation + 1);
    whole.world = Some(vec![west, east]);
    r2.control
        .put_placement(&whole)
        .expect("re-creating the root");
    assert_eq!(r2.control.status().archived_entities, 0);
    wait_until(
        "every entity back and adopted",
        Duration::from_secs(20),
        || {
            let now = long_lived(&r2);
            now.len() == 600
                && now
                    .values()
                    .all(|e| !e.in_transit && e.owner.0.starts_with("shard-"))
        },
    );
    let back: HashSet<u64> = long_lived(&r2).into_keys().collect();
    assert_eq!(back, everyone, "the same entities, none lost, none new");
}

/// Stored entities as (id, x, version).
type StoredRows = Vec<(i64, f32, i64)>;

/// The rows of the store at `url` (Postgres) or under `data` (SQLite), read directly, and who
/// leads it.
fn stored(url: Option<&str>, data: &std::path::Path) -> (StoredRows, Option<(u64, String)>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = sidereal_replication::Store::open(url, data).await.unwrap();
        let mut rows: StoredRows = store
            .entity_rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.pos[0], r.version))
            .collect();
        rows.sort_by_key(|r| r.0);
        (rows, store.leadership().await.unwrap())
    })
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig}");
}

/// Issue 21's fencing: the leader is stopped (SIGSTOP) while a second replication takes the
/// same store; let go (SIGCONT), the first finds its writes refused and steps down (exits,
/// saying why), and the store's rows are exactly what they were when the second took over:
/// nothing the deposed leader had left to write landed. Postgres and SQLite.
#[test]
fn a_deposed_replication_cannot_write_and_steps_down() {
    let _pg = PG.lock().unwrap_or_else(|e| e.into_inner());
    for backend in ["postgres", "sqlite"] {
        let data = TempDir::new("fence");
        let url = (backend == "postgres").then(|| fresh_database("fence"));
        let extra = ["--checkpoint-interval", "0.5"];
        let mut a = start_replication_with(400, &data.0, url.as_deref(), &extra);
        let _shards: Vec<Proc> = (0..2)
            .map(|i| start_shard(&a, &format!("shard-{i}")))
            .collect();
        wait_until("shards linked", Duration::from_secs(30), || {
            connected(&a).len() == 2
        });
        place(&a, 2);
        wait_until("updates flowing", Duration::from_secs(20), || {
            applied(&a) > 1000.0
        });
        let first = stored(url.as_deref(), &data.0).1.expect("a leader");

        // The leader stops mid-flight; a second replication takes the store.
        signal(&a.proc_, "-STOP");
        let b = start_replication_with(400, &data.0, url.as_deref(), &extra);
        let (rows_at_takeover, leader) = stored(url.as_deref(), &data.0);
        let leader = leader.expect("a leader");
        assert_eq!(
            leader.0,
            first.0 + 1,
            "{backend}: the second took the next epoch"
        );
        assert_ne!(leader.1, first.1, "{backend}: held by another process");
        assert!(!rows_at_takeover.is_empty());

        // Let go, the first is deposed: it steps down on its next checkpoint.
        signal(&a.proc_, "-CONT");
        let resumed = Instant::now();
        wait_until(
            "the deposed replication exits",
            Duration::from_secs(10),
            || a.proc_.0.try_wait().unwrap().is_some(),
        );
        let status = a.proc_.0.wait().unwrap();
        assert!(!status.success(), "{backend}: it exits with an error");
        println!(
            "{backend}: the deposed replication stepped down {:?} after it was let go",
            resumed.elapsed()
        );
        let (rows_after, leader_after) = stored(url.as_deref(), &data.0);
        assert_eq!(
            rows_after, rows_at_takeover,
            "{backend}: not one row changed by the deposed leader"
        );
        assert_eq!(
            leader_after,
            Some(leader),
            "{backend}: the second still leads"
        );
        // The new leader is in charge: it serves, and writes.
        assert!(b.control.status().leaf_sectors > 0, "{backend}");
    }
}

/// Starts `replication --standby` with `entities`, the store at `data`/`url` and `flags` on a
/// thread of its own: the receiver yields it once it leads (its ready line comes only then).
pub(crate) fn start_standby(
    entities: usize,
    data: &std::path::Path,
    url: Option<&str>,
    flags: &[&str],
) -> std::sync::mpsc::Receiver<Replication> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (dir, url) = (data.to_path_buf(), url.map(str::to_owned));
    let flags: Vec<String> = flags
        .iter()
        .map(|s| s.to_string())
        .chain(["--standby".to_string()])
        .collect();
    std::thread::spawn(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let _ = tx.send(start_replication_with(
            entities,
            &dir,
            url.as_deref(),
            &flags,
        ));
    });
    rx
}

/// Issue 21's takeover: a standby (`--standby`, the same store and addresses) binds nothing
/// while the leader lives; kill -9 of the leader and the standby leads within 5 s: it serves
/// the world the store holds, the shards (which simulate on) link to it at the same address and
/// resume, and it accepts a placement once they are back. Postgres and SQLite. Prints the
/// takeover time (killed to placement accepted again).
#[test]
fn a_standby_takes_over_within_5_s_of_the_leader_s_kill_9() {
    let _pg = PG.lock().unwrap_or_else(|e| e.into_inner());
    for backend in ["postgres", "sqlite"] {
        let data = TempDir::new("standby");
        let url = (backend == "postgres").then(|| fresh_database("standby"));
        let (http, link) = (
            format!("127.0.0.1:{}", super::free_port()),
            format!("127.0.0.1:{}", super::free_port()),
        );
        let same = [
            "--http",
            http.as_str(),
            "--link",
            link.as_str(),
            "--checkpoint-interval",
            "0.5",
        ];
        let mut leader = start_replication_with(300, &data.0, url.as_deref(), &same);
        let mut shards: Vec<Proc> = (0..2)
            .map(|i| start_shard(&leader, &format!("shard-{i}")))
            .collect();
        wait_until("shards linked", Duration::from_secs(30), || {
            connected(&leader).len() == 2
        });
        place(&leader, 2);
        wait_until("updates flowing", Duration::from_secs(20), || {
            applied(&leader) > 1000.0
        });
        let durable: HashSet<u64> = entity_list(&leader)
            .iter()
            .filter(|e| e.kind != EntityKind::Projectile)
            .map(|e| e.id.0)
            .collect();
        let generation = placement_of(&leader).generation;

        // The standby: it says it is ready only once it leads.
        let rx = start_standby(300, &data.0, url.as_deref(), &same);
        assert!(
            rx.recv_timeout(Duration::from_secs(2)).is_err(),
            "{backend}: the standby stays back while the leader lives"
        );

        leader.proc_.0.kill().expect("kill -9 the leader");
        let killed = Instant::now();
        let _ = leader.proc_.0.wait();
        let standby = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the standby took over");
        let led_in = killed.elapsed();
        let mut next = placement_of(&standby);
        assert_eq!(
            next.generation, generation,
            "{backend}: the stored placement"
        );
        next.generation += 1;
        // Refused (503) until both shards are back; they dial again every second at most.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match standby.control.put_placement(&next) {
                Ok(_) => break,
                Err(ControlError::Unavailable(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{backend}: the new leader takes a placement: {e}"),
            }
        }
        let takeover = killed.elapsed();
        println!(
            "{backend}: the standby led {led_in:?} after the kill; placement accepted again after {takeover:?}"
        );
        assert!(
            takeover <= Duration::from_secs(5),
            "{backend}: took {takeover:?}"
        );
        for s in &mut shards {
            assert!(
                s.0.try_wait().unwrap().is_none(),
                "{backend}: the shards simulated on"
            );
        }
        assert_eq!(metric(&standby, "sidereal_links_resumed_total"), 2.0);
        assert_eq!(metric(&standby, "sidereal_takeover_waiting_shards"), 0.0);
        // Warm: it had followed every checkpoint while it waited (the leader died seconds
        // before it took over), so it read no row more on taking over.
        assert_eq!(
            metric(&standby, "sidereal_store_rows_read_at_start"),
            0.0,
            "{backend}: a warm standby reads only what changed since it last looked"
        );
        let now: HashSet<u64> = entity_list(&standby)
            .iter()
            .filter(|e| e.kind != EntityKind::Projectile)
            .map(|e| e.id.0)
            .collect();
        assert_eq!(now, durable, "{backend}: the whole world, once");
        wait_until(
            "every entity owned by a shard again",
            Duration::from_secs(10),
            || {
                entity_list(&standby)
                    .iter()
                    .all(|e| e.owner.0.starts_with("shard-") && !e.in_transit)
            },
        );
        let (_, lead) = stored(url.as_deref(), &data.0);
        assert!(
            lead.is_some_and(|(epoch, _)| epoch == 2),
            "{backend}: the standby took the next epoch"
        );
    }
}

/// Under Kubernetes each replica has an address of its own, and a standby must answer its pod's
/// probes while it waits (`--standby-probes`): alive, ready to take over, and saying in its
/// metrics that it does not lead. Once it takes over, the same address serves the leader's
/// control API and `sidereal_leading 1`.
#[test]
fn a_standby_answers_its_probes_while_it_waits_and_serves_as_leader_once_it_takes_over() {
    let data = TempDir::new("standby-probes");
    let mut leader = start_replication_with(50, &data.0, None, &["--leader-lease", "1.5"]);
    let http = format!("127.0.0.1:{}", super::free_port());
    let rx = start_standby(
        50,
        &data.0,
        None,
        &["--standby-probes", "--leader-lease", "1.5", "--http", &http],
    );
    let base = format!("http://{http}");
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("{base}{path}")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until("the standby answers", Duration::from_secs(20), || {
        get("/healthz").ends_with("200")
    });
    assert!(get("/readyz").ends_with("200"), "ready to take over");
    assert!(get("/readyz").contains("standby"));
    assert_eq!(metric_at(&base, "sidereal_leading"), 0.0);
    // It follows the store while it waits: the 50 stored entities, read moments ago.
    wait_until(
        "the standby followed the store",
        Duration::from_secs(10),
        || metric_at(&base, "sidereal_standby_followed_entities") == 50.0,
    );
    assert!(metric_at(&base, "sidereal_standby_follow_age_seconds") < 2.0);
    let text = get("/metrics");
    let (clean, said) = super::metrics::promtool(text.trim_end_matches("200"));
    assert!(
        clean,
        "promtool check metrics on a standby's metrics: {said}"
    );
    assert!(
        get("/v1/status").ends_with("404"),
        "a standby serves no control API"
    );
    assert_eq!(metric(&leader, "sidereal_leading"), 1.0);

    leader.proc_.0.kill().expect("kill -9 the leader");
    let _ = leader.proc_.0.wait();
    let standby = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the standby took over");
    assert_eq!(standby.http, base);
    assert_eq!(metric_at(&base, "sidereal_leading"), 1.0);
    assert_eq!(
        standby.control.status().entities,
        50,
        "the world, from the store"
    );
    assert_eq!(
        metric(&standby, "sidereal_store_rows_read_at_start"),
        0.0,
        "followed before, not read again"
    );
}

/// An upgrade hands leadership over instead of waiting out a lease: SIGTERM to the leader
/// (what a rollout or `helm upgrade` sends) and it lets go of the store's lease as it stops, so
/// the standby leads well within the 3 s lease; the shard simulates on and resumes onto it.
#[test]
fn a_leader_stopped_with_sigterm_hands_over_to_the_standby_at_once() {
    let data = TempDir::new("handover");
    let (http, link) = (
        format!("127.0.0.1:{}", super::free_port()),
        format!("127.0.0.1:{}", super::free_port()),
    );
    let same = ["--http", http.as_str(), "--link", link.as_str()];
    let leader = start_replication_with(200, &data.0, None, &same);
    let _shard = start_shard(&leader, "shard-0");
    wait_until("the shard linked", Duration::from_secs(30), || {
        connected(&leader).len() == 1
    });
    place(&leader, 1);
    let rx = start_standby(200, &data.0, None, &same);
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "the standby waits while the leader lives"
    );
    signal(&leader.proc_, "-TERM");
    let stopped = Instant::now();
    let standby = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the standby took over");
    let led = stopped.elapsed();
    wait_until("the shard resumed", Duration::from_secs(10), || {
        metric(&standby, "sidereal_links_resumed_total") == 1.0
    });
    let handed = stopped.elapsed();
    println!("SIGTERM: the standby led after {led:?}, the shard resumed after {handed:?}");
    assert!(
        led < Duration::from_millis(2500),
        "a handover, not a lease run out: {led:?}"
    );
    assert_eq!(
        entity_list(&standby)
            .iter()
            .filter(|e| e.kind != EntityKind::Projectile)
            .count(),
        200
    );
}

/// A rollout starts a new standby while the old leader hands the store over: the new one finds
/// the lease vacant at once but holds nothing yet, so it reads the world before competing for
/// the store, and the standby that has followed it all along takes over (reading nothing more).
/// A world big enough that the cold read outlasts the warm standby's quarter-second poll.
#[test]
fn a_warm_standby_wins_a_vacancy_over_one_that_just_started() {
    const WORLD: usize = 60_000;
    let data = TempDir::new("warm-wins");
    let mut leader = start_replication_with(WORLD, &data.0, None, &[]);
    let own_http = || format!("127.0.0.1:{}", super::free_port());
    let warm_http = own_http();
    let warm = start_standby(
        WORLD,
        &data.0,
        None,
        &["--standby-probes", "--http", &warm_http],
    );
    let warm_base = format!("http://{warm_http}");
    wait_until(
        "the standby followed the world",
        Duration::from_secs(60),
        || metric_at(&warm_base, "sidereal_standby_followed_entities") == WORLD as f64,
    );

    signal(&leader.proc_, "-TERM");
    let cold_http = own_http();
    let cold = start_standby(
        WORLD,
        &data.0,
        None,
        &["--standby-probes", "--http", &cold_http],
    );
    let led = warm
        .recv_timeout(Duration::from_secs(10))
        .expect("the warm standby took over");
    let _ = leader.proc_.0.wait();
    assert!(
        cold.recv_timeout(Duration::from_secs(2)).is_err(),
        "the one that just started stands by"
    );
    assert_eq!(
        metric_at(&format!("http://{cold_http}"), "sidereal_leading"),
        0.0
    );
    assert!(
        metric(&led, "sidereal_store_rows_read_at_start") < WORLD as f64,
        "warm: it did not read the world again"
    );
    assert_eq!(led.control.status().entities, WORLD);
}

/// A lost node takes the leader and a shard with it: the standby waits for the stored
/// placement's shards, refusing placement changes, but only for `--takeover-grace` (2 s here);
/// the surviving shard resumes meanwhile. Then placements go through, the lost shard's leaves
/// are re-homed from the store, and every durable entity is back exactly once.
#[test]
fn a_shard_lost_with_the_leader_is_waited_for_only_the_takeover_grace() {
    let data = TempDir::new("grace");
    let (http, link) = (
        format!("127.0.0.1:{}", super::free_port()),
        format!("127.0.0.1:{}", super::free_port()),
    );
    let same = ["--http", http.as_str(), "--link", link.as_str()];
    let mut leader = start_replication_with(400, &data.0, None, &same);
    let _survivor = start_shard(&leader, "shard-0");
    let mut lost = start_shard(&leader, "shard-1");
    wait_until("shards linked", Duration::from_secs(30), || {
        connected(&leader).len() == 2
    });
    place(&leader, 2);
    wait_until("both simulating", Duration::from_secs(20), || {
        entity_list(&leader)
            .iter()
            .all(|e| e.owner.0.starts_with("shard-") && !e.in_transit)
    });
    let durable: HashSet<u64> = entity_list(&leader)
        .iter()
        .filter(|e| e.kind != EntityKind::Projectile)
        .map(|e| e.id.0)
        .collect();
    let rx = start_standby(
        400,
        &data.0,
        None,
        &[same.as_slice(), &["--takeover-grace", "2"]].concat(),
    );
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "standing by"
    );
    lost.0.kill().expect("kill -9 shard-1");
    leader.proc_.0.kill().expect("kill -9 the leader");
    let _ = (lost.0.wait(), leader.proc_.0.wait());
    let standby = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the standby took over");
    let led = Instant::now();
    let rehome = |r: &Replication| {
        placement::rehome(&placement_of(r), &BTreeSet::from([ShardId::new("shard-0")]))
            .expect("shard-1 had leaves")
    };
    let accepted = loop {
        match standby.control.put_placement(&rehome(&standby)) {
            Ok(_) => break led.elapsed(),
            Err(ControlError::Unavailable(_)) => {
                assert!(led.elapsed() < Duration::from_secs(10), "the grace ends");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the re-homing: {e}"),
        }
    };
    println!("a shard lost with the leader: placements accepted {accepted:?} after the takeover");
    assert!(
        accepted >= Duration::from_millis(1000),
        "the standby waited for the lost shard (grace 2 s): {accepted:?}"
    );
    assert_eq!(metric(&standby, "sidereal_links_resumed_total"), 1.0);
    wait_until(
        "every entity on the survivor",
        Duration::from_secs(20),
        || {
            entity_list(&standby)
                .iter()
                .all(|e| e.owner.0 == "shard-0" && !e.in_transit)
        },
    );
    let now: HashSet<u64> = entity_list(&standby)
        .iter()
        .filter(|e| e.kind != EntityKind::Projectile)
        .map(|e| e.id.0)
        .collect();
    assert_eq!(now, durable, "every durable entity, once");
}

/// `--label-pod` outside a pod: the flags it needs are refused by name, and without the API
/// server's address the process stops at once saying what is missing, before it touches the
/// store.
#[test]
fn label_pod_outside_kubernetes_says_what_is_missing() {
    let data = TempDir::new("label-pod");
    let run = |args: &[&str]| {
        let out = sidereal()
            .args(["replication", "--data"])
            .arg(&data.0)
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("SIDEREAL_KUBE_API")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .output()
            .expect("sidereal replication");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, said) = run(&["--label-pod"]);
    assert!(!ok && said.contains("--pod-name"), "{said}");
    let (ok, said) = run(&["--label-pod", "--pod-name", "r-0", "--pod-namespace", "w"]);
    assert!(!ok, "{said}");
    assert!(
        said.contains("--label-pod") && said.contains("KUBERNETES_SERVICE_HOST is not set"),
        "{said}"
    );
}
