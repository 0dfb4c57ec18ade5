//! Persistence: one interface over Postgres (production) and SQLite (the embedded default).
//!
//! Replication is the only writer. Moving state is written behind in checkpoints (one
//! transaction per batch; on Postgres through COPY into a staging table, then one merging
//! upsert); the placement is written before it is acknowledged. On start the world is loaded
//! back; rows that cannot be trusted are moved to `quarantine` instead of the live world.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sidereal_core::{
    EntityId, EntityKind, EntitySnapshot, EntityState, Epoch, Placement, SectorId,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use crate::mirror::EntityRecord;

/// Runs `query` in a transaction on `pool` that `fence` checks first (see
/// [`Store::fence_pg`]), and returns the rows it affected.
macro_rules! fenced_rows {
    ($store:ident, $pool:expr, $fence:ident, $query:expr) => {{
        let mut tx = $pool.begin().await?;
        $store.$fence(&mut tx).await?;
        let n = $query.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        n
    }};
}

/// Takes the next change number in `tx`: its row stays locked until `tx` ends, so change
/// numbers commit in the order they are taken and a follower that has read through change `n`
/// has seen every write numbered `n` or less.
macro_rules! next_change {
    ($tx:ident) => {
        sqlx::query_scalar::<_, i64>(
            "UPDATE entity_changes SET seq = seq + 1 WHERE id = 1 RETURNING seq",
        )
        .fetch_one(&mut *$tx)
        .await?
    };
}

/// Every 64th change, drops tombstones more than [`TOMBSTONES_KEPT`] changes old and says so.
macro_rules! prune_tombstones {
    ($tx:ident, $seq:expr) => {
        if $seq % 64 == 0 {
            let below = $seq - TOMBSTONES_KEPT;
            sqlx::query("DELETE FROM entity_tombstones WHERE seq < $1")
                .bind(below)
                .execute(&mut *$tx)
                .await?;
            sqlx::query(
                "UPDATE entity_changes SET tombstones_from = $1 WHERE id = 1 AND tombstones_from < $1",
            )
            .bind(below)
            .execute(&mut *$tx)
            .await?;
        }
    };
}

/// The database's clock in milliseconds since 1970: leases are judged by one clock.
const PG_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
const SQLITE_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database schema is at version {found}, newer than this binary knows ({known}); upgrade sidereal or restore a matching backup"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("cannot use {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    /// Another replication took the store after this one (a standby that took over): this
    /// one's writes are refused, and it must stop.
    #[error(
        "deposed: {holder} leads the store at epoch {current}, this replication took epoch {mine}; its writes are refused"
    )]
    Deposed {
        mine: u64,
        current: u64,
        holder: String,
    },
}

impl StoreError {
    pub fn is_deposed(&self) -> bool {
        matches!(self, StoreError::Deposed { .. })
    }
}

/// `Ok` while the leadership row says epoch `mine`.
fn still_leading(mine: u64, row: Option<(i64, String)>) -> Result<(), StoreError> {
    match row {
        Some((epoch, _)) if epoch as u64 == mine => Ok(()),
        Some((epoch, holder)) => Err(StoreError::Deposed {
            mine,
            current: epoch as u64,
            holder,
        }),
        None => Err(StoreError::Deposed {
            mine,
            current: 0,
            holder: "nobody".into(),
        }),
    }
}

/// One stored entity, as written and read.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRow {
    pub id: i64,
    pub kind: i16,
    pub sector: String,
    pub pos: [f32; 2],
    pub vel: [f32; 2],
    pub angle: f32,
    pub ang_vel: f32,
    pub player: bool,
    pub owner_epoch: i64,
    pub version: i64,
}

impl EntityRow {
    /// `None` for what is not persisted (projectiles live two seconds).
    pub fn from_record(r: &EntityRecord) -> Option<Self> {
        Self::from_parts(&r.snapshot, r.epoch, r.version)
    }

    /// A new entity's row, as the mirror starts it (epoch 1, version 1).
    pub fn new_entity(s: &EntitySnapshot) -> Option<Self> {
        Self::from_parts(s, 1, 1)
    }

    fn from_parts(s: &EntitySnapshot, epoch: Epoch, version: u64) -> Option<Self> {
        if s.kind == EntityKind::Projectile {
            return None;
        }
        let sector = SectorId::of_point(s.state.point(), 0).ok()?.to_string();
        Some(Self {
            id: s.id.0 as i64,
            kind: s.kind as i16,
            sector,
            pos: s.state.pos,
            vel: s.state.vel,
            angle: s.state.angle,
            ang_vel: s.state.ang_vel,
            player: s.player,
            owner_epoch: epoch as i64,
            version: version as i64,
        })
    }

    /// The entity this row describes and the scale-0 sector it lies in, or why it cannot be
    /// loaded at all.
    pub fn validate(&self) -> Result<(EntitySnapshot, Epoch, u64, SectorId), String> {
        let kind = match self.kind {
            0 => EntityKind::Ship,
            1 => EntityKind::Asteroid,
            k => return Err(format!("unknown kind {k}")),
        };
        let state = EntityState {
            pos: self.pos,
            vel: self.vel,
            angle: self.angle,
            ang_vel: self.ang_vel,
        };
        if !state.is_finite() {
            return Err("state is not finite".into());
        }
        let sector: SectorId = self.sector.parse().map_err(|e| format!("{e}"))?;
        if !sector.contains(state.point()) {
            return Err(format!(
                "position {:?} is not in its sector {sector}",
                self.pos
            ));
        }
        if self.id <= 0 || self.owner_epoch < 0 || self.version < 0 {
            return Err("negative id, epoch or version".into());
        }
        let snapshot = EntitySnapshot {
            id: EntityId(self.id as u64),
            kind,
            state,
            ttl_ticks: None,
            player: self.player,
        };
        Ok((
            snapshot,
            self.owner_epoch as u64,
            self.version as u64,
            sector,
        ))
    }
}

/// How a checkpoint is written (the fast path is the default; the others are for comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Postgres: COPY into a staging table, then one INSERT ... ON CONFLICT. SQLite: multi-row.
    Fast,
    /// Multi-row `INSERT ... ON CONFLICT` statements.
    MultiRow,
    /// One statement per row (the naive baseline).
    PerRow,
}

/// What changed in `entities` after some change number, read in one snapshot.
#[derive(Debug, Default)]
pub struct StoreChanges {
    /// The change these are complete through: read again after it next time.
    pub through: i64,
    /// `rows` is the whole table: drop what was read before.
    pub whole: bool,
    /// Rows written since (their current value), by id; a row that does not decode says why.
    pub rows: Vec<(i64, Result<EntityRow, String>)>,
    /// Ids deleted since.
    pub deleted: Vec<i64>,
    /// Who led the store at the time.
    pub leader: ChangeLeader,
}

/// The store's leader as [`Store::read_changes`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLeader {
    /// Its epoch (0: nobody ever led).
    pub epoch: i64,
    /// Whether it stamps its writes with change numbers. One that does not (an older binary,
    /// mid-upgrade) makes what a follower read incomplete: nothing else is read then.
    pub stamps: bool,
}

impl Default for ChangeLeader {
    fn default() -> Self {
        Self {
            epoch: 0,
            stamps: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub ship_id: Option<i64>,
    /// Netcode client id; `None` for accounts made before player ids existed.
    pub player_id: Option<i64>,
}

/// The database behind a [`Store`].
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The world's store, and the leadership epoch its writes are fenced with (0: not taken, as in
/// tools and tests that write alone).
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    fence: Arc<AtomicU64>,
}

const COLUMNS: &str =
    "id, kind, sector, pos_x, pos_y, vel_x, vel_y, angle, ang_vel, player, owner_epoch, version";
const UPDATE_SET: &str = "kind = EXCLUDED.kind, sector = EXCLUDED.sector, pos_x = EXCLUDED.pos_x, pos_y = EXCLUDED.pos_y, \
    vel_x = EXCLUDED.vel_x, vel_y = EXCLUDED.vel_y, angle = EXCLUDED.angle, ang_vel = EXCLUDED.ang_vel, \
    player = EXCLUDED.player, owner_epoch = EXCLUDED.owner_epoch, version = EXCLUDED.version, \
    changed_seq = EXCLUDED.changed_seq";

/// Tombstones kept behind the newest change: a follower further behind than this many changes
/// (over an hour of one-second checkpoints) reads the whole table again.
pub const TOMBSTONES_KEPT: i64 = 4096;

impl Store {
    fn new(db: Db) -> Self {
        Self {
            db,
            fence: Arc::default(),
        }
    }

    /// The database, for tools and tests that read it directly.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// `DATABASE_URL` (Postgres) if given, else the SQLite file `sidereal.db` in `data_dir`.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        match database_url {
            Some(url) => Self::open_url(url).await,
            None => {
                std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
                    path: data_dir.display().to_string(),
                    source,
                })?;
                Self::open_url(&format!(
                    "sqlite://{}",
                    data_dir.join("sidereal.db").display()
                ))
                .await
            }
        }
    }

    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let store = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            Store::new(Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await?,
            ))
        } else {
            // A leader stopped inside a transaction (a frozen pod, SIGSTOP) would hold the
            // leadership row's lock and keep a standby from taking over: Postgres ends such a
            // session after a few idle seconds. Notices ("relation ... already exists,
            // skipping", once per checkpoint) stay out of the log.
            let opts = PgConnectOptions::from_str(url)?.options([
                ("idle_in_transaction_session_timeout", "5s"),
                ("client_min_messages", "warning"),
            ]);
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(opts)
                .await?;
            Store::new(Db::Postgres(pool))
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> &'static str {
        match &self.db {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// Applies migrations; refuses a database migrated by a newer binary.
    async fn migrate(&self) -> Result<(), StoreError> {
        let (migrator, applied): (&Migrator, Option<i64>) = match &self.db {
            Db::Postgres(p) => {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                        .fetch_one(p)
                        .await?;
                let v = if exists.is_some() {
                    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                        .fetch_one(p)
                        .await?
                } else {
                    None
                };
                (&PG_MIGRATOR, v)
            }
            Db::Sqlite(p) => {
                let exists: Option<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'").fetch_optional(p).await?;
                let v = if exists.is_some() {
                    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                        .fetch_one(p)
                        .await?
                } else {
                    None
                };
                (&SQLITE_MIGRATOR, v)
            }
        };
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        if let Some(found) = applied
            && found > known
        {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        match &self.db {
            Db::Postgres(p) => migrator.run(p).await?,
            Db::Sqlite(p) => migrator.run(p).await?,
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await?,
            Db::Sqlite(p) => {
                sqlx::query("SELECT 1").execute(p).await?;
                return Ok(());
            }
        };
        Ok(())
    }

    /// Writes a checkpoint in one transaction: upserts `rows` (newer versions win), deletes
    /// `removed`.
    pub async fn write_checkpoint(
        &self,
        rows: &[EntityRow],
        removed: &[i64],
    ) -> Result<(), StoreError> {
        self.write_with(WriteMode::Fast, rows, removed).await
    }

    pub async fn write_with(
        &self,
        mode: WriteMode,
        rows: &[EntityRow],
        removed: &[i64],
    ) -> Result<(), StoreError> {
        match &self.db {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                self.fence_pg(&mut tx).await?;
                let seq = next_change!(tx);
                match mode {
                    WriteMode::Fast => pg_copy_upsert(&mut tx, rows, seq).await?,
                    WriteMode::MultiRow => {
                        for chunk in rows.chunks(4000) {
                            multi_row_upsert::<sqlx::Postgres>(chunk, seq)
                                .build()
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    WriteMode::PerRow => {
                        for r in rows {
                            multi_row_upsert::<sqlx::Postgres>(std::slice::from_ref(r), seq)
                                .build()
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                if !removed.is_empty() {
                    sqlx::query(
                        "WITH gone AS (DELETE FROM entities WHERE id = ANY($1) RETURNING id) \
                         INSERT INTO entity_tombstones (id, seq) SELECT id, $2 FROM gone",
                    )
                    .bind(removed)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                }
                prune_tombstones!(tx, seq);
                tx.commit().await?;
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                self.fence_sqlite(&mut tx).await?;
                let seq = next_change!(tx);
                let chunk = if mode == WriteMode::PerRow { 1 } else { 2000 };
                for c in rows.chunks(chunk) {
                    multi_row_upsert::<sqlx::Sqlite>(c, seq)
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
                sqlite_delete_entities(&mut tx, removed, seq).await?;
                prune_tombstones!(tx, seq);
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Reads what changed in `entities` after change `after` (everything when `None`, or when
    /// the tombstones since then were pruned), in one snapshot of the database.
    pub async fn read_changes(&self, after: Option<i64>) -> Result<StoreChanges, StoreError> {
        macro_rules! read {
            ($pool:expr, $begin:expr, $decode:expr) => {{
                let mut tx = $pool.begin().await?;
                for stmt in $begin {
                    sqlx::query(stmt).execute(&mut *tx).await?;
                }
                let leader: Option<(i64, i64)> =
                    sqlx::query_as("SELECT epoch, stamped_epoch FROM leadership WHERE id = 1")
                        .fetch_optional(&mut *tx)
                        .await?;
                let leader = leader.map_or(
                    ChangeLeader {
                        epoch: 0,
                        stamps: true,
                    },
                    |(epoch, stamped)| ChangeLeader {
                        epoch,
                        stamps: epoch == stamped,
                    },
                );
                if !leader.stamps {
                    // Its writes carry no change numbers: nothing here would be complete.
                    tx.commit().await?;
                    return Ok(StoreChanges {
                        through: after.unwrap_or(0),
                        whole: false,
                        rows: Vec::new(),
                        deleted: Vec::new(),
                        leader,
                    });
                }
                let counter: Option<(i64, i64)> =
                    sqlx::query_as("SELECT seq, tombstones_from FROM entity_changes WHERE id = 1")
                        .fetch_optional(&mut *tx)
                        .await?;
                let (through, tombstones_from) = counter.unwrap_or((0, 0));
                let since = match after {
                    Some(a) if a <= through && a.saturating_add(1) >= tombstones_from => Some(a),
                    _ => None,
                };
                // Every row in table order for a whole read (an index walk would visit them at
                // random), the changed ones through the index otherwise.
                let rows = match since {
                    Some(a) => {
                        let sql = format!("SELECT {COLUMNS} FROM entities WHERE changed_seq > $1");
                        sqlx::query(&sql).bind(a).fetch_all(&mut *tx).await?
                    }
                    None => {
                        let sql = format!("SELECT {COLUMNS} FROM entities");
                        sqlx::query(&sql).fetch_all(&mut *tx).await?
                    }
                };
                let rows = rows
                    .iter()
                    .map(|r| {
                        (
                            r.try_get("id").unwrap_or(-1),
                            $decode(r).map_err(|e| e.to_string()),
                        )
                    })
                    .collect();
                let deleted = match since {
                    Some(a) => {
                        sqlx::query_scalar("SELECT id FROM entity_tombstones WHERE seq > $1")
                            .bind(a)
                            .fetch_all(&mut *tx)
                            .await?
                    }
                    None => Vec::new(),
                };
                tx.commit().await?;
                StoreChanges {
                    through,
                    whole: since.is_none(),
                    rows,
                    deleted,
                    leader,
                }
            }};
        }
        Ok(match &self.db {
            Db::Postgres(p) => read!(
                p,
                ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"],
                pg_row
            ),
            Db::Sqlite(p) => read!(p, [] as [&str; 0], sqlite_row),
        })
    }

    /// Moves rows that cannot be loaded to `quarantine`, in one transaction, fenced like every
    /// write; followers see them deleted.
    pub async fn quarantine(&self, bad: &[(i64, String, String)]) -> Result<(), StoreError> {
        macro_rules! move_rows {
            ($pool:expr, $fence:ident) => {{
                let mut tx = $pool.begin().await?;
                self.$fence(&mut tx).await?;
                let seq = next_change!(tx);
                for (id, reason, text) in bad {
                    sqlx::query(
                        "INSERT INTO quarantine (id, reason, row_text) VALUES ($1, $2, $3)",
                    )
                    .bind(id)
                    .bind(reason)
                    .bind(text)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM entities WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("INSERT INTO entity_tombstones (id, seq) VALUES ($1, $2)")
                        .bind(id)
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }};
        }
        match &self.db {
            Db::Postgres(p) => move_rows!(p, fence_pg),
            Db::Sqlite(p) => move_rows!(p, fence_sqlite),
        }
        Ok(())
    }

    pub async fn quarantined(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = "SELECT id, reason FROM quarantine ORDER BY id";
        Ok(match &self.db {
            Db::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await?,
            Db::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await?,
        })
    }

    pub async fn count_entities(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM entities";
        Ok(match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
        })
    }

    /// Every stored entity row (tests and tools).
    pub async fn entity_rows(&self) -> Result<Vec<EntityRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM entities ORDER BY id");
        Ok(match &self.db {
            Db::Postgres(p) => sqlx::query(&sql)
                .fetch_all(p)
                .await?
                .iter()
                .map(pg_row)
                .collect::<Result<_, _>>()?,
            Db::Sqlite(p) => sqlx::query(&sql)
                .fetch_all(p)
                .await?
                .iter()
                .map(sqlite_row)
                .collect::<Result<_, _>>()?,
        })
    }

    pub async fn save_placement(&self, p: &Placement) -> Result<(), StoreError> {
        let json = serde_json::to_string(p).expect("placement serialises");
        let sql = "INSERT INTO world_state (key, value) VALUES ('placement', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
        match &self.db {
            Db::Postgres(pool) => fenced_rows!(self, pool, fence_pg, sqlx::query(sql).bind(json)),
            Db::Sqlite(pool) => {
                fenced_rows!(self, pool, fence_sqlite, sqlx::query(sql).bind(json))
            }
        };
        Ok(())
    }

    /// Takes the store's leadership for `holder`: the epoch goes up by one and is returned,
    /// and from now on this store's world writes (checkpoints, placement) go through only while
    /// it is still the epoch: a replication that took the store later deposes this one.
    pub async fn take_leadership(&self, holder: &str) -> Result<u64, StoreError> {
        let sql = |now: &str| {
            format!(
                "INSERT INTO leadership (id, epoch, holder, renewed_ms, stamped_epoch) \
                 VALUES (1, 1, $1, {now}, 1) \
                 ON CONFLICT (id) DO UPDATE SET epoch = leadership.epoch + 1, \
                 holder = EXCLUDED.holder, renewed_ms = EXCLUDED.renewed_ms, \
                 since = CURRENT_TIMESTAMP, stamped_epoch = leadership.epoch + 1 RETURNING epoch"
            )
        };
        let epoch: i64 = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_scalar(&sql(PG_NOW_MS))
                    .bind(holder)
                    .fetch_one(p)
                    .await?
            }
            Db::Sqlite(p) => {
                sqlx::query_scalar(&sql(SQLITE_NOW_MS))
                    .bind(holder)
                    .fetch_one(p)
                    .await?
            }
        };
        let epoch = epoch as u64;
        self.fence.store(epoch, Ordering::SeqCst);
        Ok(epoch)
    }

    /// Renews this store's lease on the leadership (the leader, every second), or fails with
    /// `Deposed` if another took it.
    pub async fn renew_leadership(&self) -> Result<(), StoreError> {
        let mine = self.epoch();
        if mine == 0 {
            return Ok(());
        }
        let sql = |now: &str| {
            format!("UPDATE leadership SET renewed_ms = {now} WHERE id = 1 AND epoch = $1")
        };
        let n = match &self.db {
            Db::Postgres(p) => sqlx::query(&sql(PG_NOW_MS))
                .bind(mine as i64)
                .execute(p)
                .await?
                .rows_affected(),
            Db::Sqlite(p) => sqlx::query(&sql(SQLITE_NOW_MS))
                .bind(mine as i64)
                .execute(p)
                .await?
                .rows_affected(),
        };
        if n == 1 {
            return Ok(());
        }
        self.check_leading().await
    }

    /// Incarnations below this may have been handed out by some leader (0: none reserved).
    pub async fn reserved_incarnations(&self) -> Result<u32, StoreError> {
        let sql = "SELECT incarnations_below FROM leadership WHERE id = 1";
        let below: Option<i64> = match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_optional(p).await?,
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_optional(p).await?,
        };
        Ok(below.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Reserves every incarnation below `below` for this leader (never lowering the mark), or
    /// fails with `Deposed` if another took the store.
    pub async fn reserve_incarnations(&self, below: u32) -> Result<(), StoreError> {
        let mine = self.epoch();
        let sql = |max: &str| {
            format!(
                "UPDATE leadership SET incarnations_below = {max}(incarnations_below, $2) \
                 WHERE id = 1 AND epoch = $1"
            )
        };
        let n = match &self.db {
            Db::Postgres(p) => sqlx::query(&sql("GREATEST"))
                .bind(mine as i64)
                .bind(i64::from(below))
                .execute(p)
                .await?
                .rows_affected(),
            Db::Sqlite(p) => sqlx::query(&sql("MAX"))
                .bind(mine as i64)
                .bind(i64::from(below))
                .execute(p)
                .await?
                .rows_affected(),
        };
        if n == 1 {
            return Ok(());
        }
        self.check_leading().await?;
        Err(StoreError::Deposed {
            mine,
            current: 0,
            holder: "nobody (no leadership row)".into(),
        })
    }

    /// Lets the leadership go at once (a graceful stop): a standby need not wait out the lease.
    pub async fn release_leadership(&self) -> Result<(), StoreError> {
        let mine = self.epoch();
        let sql = "UPDATE leadership SET renewed_ms = 0 WHERE id = 1 AND epoch = $1";
        match &self.db {
            Db::Postgres(p) => sqlx::query(sql).bind(mine as i64).execute(p).await?,
            Db::Sqlite(p) => {
                sqlx::query(sql).bind(mine as i64).execute(p).await?;
                return Ok(());
            }
        };
        Ok(())
    }

    /// Takes the leadership for `holder` only if nobody holds it: no leader yet, or its lease
    /// older than `lease` (it died, hangs, or let go). Compare-and-set in one statement, so of
    /// two standbys that see the same vacancy exactly one gets it. The new epoch, or `None`.
    pub async fn take_vacant_leadership(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let lease_ms = lease.as_millis().min(i64::MAX as u128) as i64;
        let sql = |now: &str| {
            format!(
                "INSERT INTO leadership (id, epoch, holder, renewed_ms, stamped_epoch) \
                 VALUES (1, 1, $1, {now}, 1) \
                 ON CONFLICT (id) DO UPDATE SET epoch = leadership.epoch + 1, \
                 holder = EXCLUDED.holder, renewed_ms = EXCLUDED.renewed_ms, \
                 since = CURRENT_TIMESTAMP, stamped_epoch = leadership.epoch + 1 \
                 WHERE EXCLUDED.renewed_ms - leadership.renewed_ms >= $2 RETURNING epoch"
            )
        };
        let epoch: Option<i64> = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_scalar(&sql(PG_NOW_MS))
                    .bind(holder)
                    .bind(lease_ms)
                    .fetch_optional(p)
                    .await?
            }
            Db::Sqlite(p) => {
                sqlx::query_scalar(&sql(SQLITE_NOW_MS))
                    .bind(holder)
                    .bind(lease_ms)
                    .fetch_optional(p)
                    .await?
            }
        };
        let epoch = epoch.map(|e| e as u64);
        if let Some(e) = epoch {
            self.fence.store(e, Ordering::SeqCst);
        }
        Ok(epoch)
    }

    /// Waits, as a standby, until nobody leads the store or its leader's lease is older than
    /// `lease` (the leader died, hangs, or let go), checking four times a second, and takes it
    /// then: the epoch. Another standby that takes it first is waited out like any leader.
    /// `between` runs after each check that found a live leader (a warm standby follows the
    /// store there) and says whether this standby holds the world now. One that does not yet
    /// (it just started) runs it once more before taking a vacant store, so a warm standby
    /// racing it for the same vacancy wins, and it never takes over cold what another would
    /// take over warm.
    pub async fn await_leadership(
        &self,
        holder: &str,
        lease: Duration,
        mut between: impl AsyncFnMut() -> bool,
    ) -> Result<u64, StoreError> {
        let sql = |now: &str| {
            format!("SELECT epoch, holder, {now} - renewed_ms FROM leadership WHERE id = 1")
        };
        let mut told = None;
        // A store nobody leads yet (a fleet starting: its leader has not taken it) is given a
        // lease's time to be taken before the standby takes it itself.
        let mut unled_since: Option<std::time::Instant> = None;
        let mut warm = false;
        loop {
            let row: Option<(i64, String, i64)> = match &self.db {
                Db::Postgres(p) => sqlx::query_as(&sql(PG_NOW_MS)).fetch_optional(p).await?,
                Db::Sqlite(p) => {
                    sqlx::query_as(&sql(SQLITE_NOW_MS))
                        .fetch_optional(p)
                        .await?
                }
            };
            let vacant = match row {
                Some((epoch, holder, age)) if i128::from(age) < lease.as_millis() as i128 => {
                    if told != Some(epoch) {
                        tracing::info!(epoch, %holder, "standing by: the store has a live leader");
                        told = Some(epoch);
                    }
                    false
                }
                Some(_) => true,
                None => {
                    let since = *unled_since.get_or_insert_with(std::time::Instant::now);
                    since.elapsed() >= lease
                }
            };
            if vacant {
                if !warm {
                    between().await;
                }
                if let Some(epoch) = self.take_vacant_leadership(holder, lease).await? {
                    return Ok(epoch);
                }
            }
            let next = tokio::time::Instant::now() + Duration::from_millis(250);
            warm = between().await;
            tokio::time::sleep_until(next).await;
        }
    }

    /// Who leads the store now, (epoch, holder); `None` before anyone took it.
    pub async fn leadership(&self) -> Result<Option<(u64, String)>, StoreError> {
        let sql = "SELECT epoch, holder FROM leadership WHERE id = 1";
        let row: Option<(i64, String)> = match &self.db {
            Db::Postgres(p) => sqlx::query_as(sql).fetch_optional(p).await?,
            Db::Sqlite(p) => sqlx::query_as(sql).fetch_optional(p).await?,
        };
        Ok(row.map(|(e, h)| (e as u64, h)))
    }

    /// `Ok` while this store still leads (or never took the leadership).
    pub async fn check_leading(&self) -> Result<(), StoreError> {
        let mine = self.epoch();
        if mine == 0 {
            return Ok(());
        }
        let row = self.leadership().await?;
        still_leading(mine, row.map(|(e, h)| (e as i64, h)))
    }

    /// The epoch this store took (0: none).
    pub fn epoch(&self) -> u64 {
        self.fence.load(Ordering::SeqCst)
    }

    /// Refuses the write in `tx` unless the store is still this one's. The leadership row is
    /// share-locked until the transaction ends, so a takeover waits for a write in flight and
    /// every write after it sees the new epoch.
    async fn fence_pg(&self, tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        let mine = self.epoch();
        if mine == 0 {
            return Ok(());
        }
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT epoch, holder FROM leadership WHERE id = 1 FOR SHARE")
                .fetch_optional(&mut *tx)
                .await?;
        still_leading(mine, row)
    }

    /// [`Store::fence_pg`] on SQLite. The check is itself a write (of nothing), so the
    /// transaction takes the write lock first, waiting its turn: a read first would pin a
    /// snapshot that another writer's commit makes stale (SQLITE_BUSY_SNAPSHOT).
    async fn fence_sqlite(&self, tx: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
        let mine = self.epoch();
        if mine == 0 {
            return Ok(());
        }
        let held = sqlx::query("UPDATE leadership SET epoch = epoch WHERE id = 1 AND epoch = $1")
            .bind(mine as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if held == 1 {
            return Ok(());
        }
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT epoch, holder FROM leadership WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        still_leading(mine, row)
    }

    pub async fn load_placement(&self) -> Result<Option<Placement>, StoreError> {
        let sql = "SELECT value FROM world_state WHERE key = 'placement'";
        let v: Option<String> = match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_optional(p).await?,
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_optional(p).await?,
        };
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Creates an account; `false` if the name (or the player id) is taken. Committed before
    /// returning.
    pub async fn create_account(&self, account: &Account) -> Result<bool, StoreError> {
        let sql = "INSERT INTO accounts (name, password_hash, ship_id, player_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
        let n = match &self.db {
            Db::Postgres(p) => fenced_rows!(
                self,
                p,
                fence_pg,
                sqlx::query(sql)
                    .bind(&account.name)
                    .bind(&account.password_hash)
                    .bind(account.ship_id)
                    .bind(account.player_id)
            ),
            Db::Sqlite(p) => fenced_rows!(
                self,
                p,
                fence_sqlite,
                sqlx::query(sql)
                    .bind(&account.name)
                    .bind(&account.password_hash)
                    .bind(account.ship_id)
                    .bind(account.player_id)
            ),
        };
        Ok(n == 1)
    }

    /// Gives an account made before player ids existed its id; `false` if it has one already
    /// or the id is taken. Committed before returning.
    pub async fn set_player_id(&self, name: &str, player_id: i64) -> Result<bool, StoreError> {
        let sql = "UPDATE accounts SET player_id = $1 WHERE name = $2 AND player_id IS NULL AND NOT EXISTS (SELECT 1 FROM accounts WHERE player_id = $1)";
        let n = match &self.db {
            Db::Postgres(p) => fenced_rows!(
                self,
                p,
                fence_pg,
                sqlx::query(sql).bind(player_id).bind(name)
            ),
            Db::Sqlite(p) => fenced_rows!(
                self,
                p,
                fence_sqlite,
                sqlx::query(sql).bind(player_id).bind(name)
            ),
        };
        Ok(n == 1)
    }

    pub async fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let sql = "SELECT name, password_hash, ship_id, player_id FROM accounts WHERE name = $1";
        let row: Option<(String, String, Option<i64>, Option<i64>)> = match &self.db {
            Db::Postgres(p) => sqlx::query_as(sql).bind(name).fetch_optional(p).await?,
            Db::Sqlite(p) => sqlx::query_as(sql).bind(name).fetch_optional(p).await?,
        };
        Ok(
            row.map(|(name, password_hash, ship_id, player_id)| Account {
                name,
                password_hash,
                ship_id,
                player_id,
            }),
        )
    }

    /// The highest ship id any account points at (ships are reserved at login and made on the
    /// first connection, so some exist only here): ids minted after a restart stay above it.
    pub async fn max_account_ship(&self) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MAX(ship_id) FROM accounts";
        Ok(match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
        })
    }

    /// Changes which ship an account owns. Committed before returning.
    pub async fn set_ship(&self, name: &str, ship_id: Option<i64>) -> Result<bool, StoreError> {
        let sql = "UPDATE accounts SET ship_id = $1 WHERE name = $2";
        let n = match &self.db {
            Db::Postgres(p) => {
                fenced_rows!(self, p, fence_pg, sqlx::query(sql).bind(ship_id).bind(name))
            }
            Db::Sqlite(p) => fenced_rows!(
                self,
                p,
                fence_sqlite,
                sqlx::query(sql).bind(ship_id).bind(name)
            ),
        };
        Ok(n == 1)
    }
}

/// Deletes `removed` from `entities` in `tx`, leaving tombstones numbered `seq`.
async fn sqlite_delete_entities(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    removed: &[i64],
    seq: i64,
) -> Result<(), sqlx::Error> {
    for c in removed.chunks(2000) {
        let mut q = QueryBuilder::<sqlx::Sqlite>::new("DELETE FROM entities WHERE id IN (");
        let mut sep = q.separated(", ");
        for id in c {
            sep.push_bind(*id);
        }
        q.push(") RETURNING id");
        let gone: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
        if gone.is_empty() {
            continue;
        }
        let mut q = QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO entity_tombstones (id, seq) ");
        q.push_values(&gone, |mut b, id| {
            b.push_bind(*id).push(seq);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn multi_row_upsert<'a, DB>(rows: &'a [EntityRow], seq: i64) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i16: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    f32: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(format!("INSERT INTO entities ({COLUMNS}, changed_seq) "));
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.id)
            .push_bind(r.kind)
            .push_bind(r.sector.as_str())
            .push_bind(r.pos[0])
            .push_bind(r.pos[1])
            .push_bind(r.vel[0])
            .push_bind(r.vel[1])
            .push_bind(r.angle)
            .push_bind(r.ang_vel)
            .push_bind(r.player)
            .push_bind(r.owner_epoch)
            .push_bind(r.version)
            // A number this store made, not input: inline, so binds stay under SQLite's limit.
            .push(seq);
    });
    q.push(format!(
        " ON CONFLICT (id) DO UPDATE SET {UPDATE_SET} WHERE entities.version <= EXCLUDED.version"
    ));
    q
}

async fn pg_copy_upsert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[EntityRow],
    seq: i64,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query("CREATE TEMP TABLE IF NOT EXISTS entities_stage (LIKE entities INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        .execute(&mut **tx)
        .await?;
    let mut text = String::with_capacity(rows.len() * 96);
    for r in rows {
        use std::fmt::Write;
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.id,
            r.kind,
            r.sector,
            r.pos[0],
            r.pos[1],
            r.vel[0],
            r.vel[1],
            r.angle,
            r.ang_vel,
            if r.player { 't' } else { 'f' },
            r.owner_epoch,
            r.version
        );
    }
    let mut copy = tx
        .copy_in_raw(&format!("COPY entities_stage ({COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(text.into_bytes()).await?;
    copy.finish().await?;
    sqlx::query(&format!(
        "INSERT INTO entities ({COLUMNS}, changed_seq) SELECT {COLUMNS}, $1 FROM entities_stage \
         ON CONFLICT (id) DO UPDATE SET {UPDATE_SET}, updated_at = now() WHERE entities.version <= EXCLUDED.version"
    ))
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn pg_row(r: &sqlx::postgres::PgRow) -> Result<EntityRow, sqlx::Error> {
    Ok(EntityRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        sector: r.try_get("sector")?,
        pos: [r.try_get("pos_x")?, r.try_get("pos_y")?],
        vel: [r.try_get("vel_x")?, r.try_get("vel_y")?],
        angle: r.try_get("angle")?,
        ang_vel: r.try_get("ang_vel")?,
        player: r.try_get("player")?,
        owner_epoch: r.try_get("owner_epoch")?,
        version: r.try_get("version")?,
    })
}

fn sqlite_row(r: &sqlx::sqlite::SqliteRow) -> Result<EntityRow, sqlx::Error> {
    // SQLite stores REAL as f64 and INTEGER as i64.
    let f = |c: &str| r.try_get::<f64, _>(c).map(|v| v as f32);
    Ok(EntityRow {
        id: r.try_get("id")?,
        kind: r.try_get::<i64, _>("kind")? as i16,
        sector: r.try_get("sector")?,
        pos: [f("pos_x")?, f("pos_y")?],
        vel: [f("vel_x")?, f("vel_y")?],
        angle: f("angle")?,
        ang_vel: f("ang_vel")?,
        player: r.try_get("player")?,
        owner_epoch: r.try_get("owner_epoch")?,
        version: r.try_get("version")?,
    })
}
