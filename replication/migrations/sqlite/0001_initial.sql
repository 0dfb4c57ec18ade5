-- Entities: write-behind checkpoints of the mirror. Projectiles are transient and not stored.
CREATE TABLE entities (
    id          INTEGER PRIMARY KEY,
    kind        INTEGER NOT NULL,
    -- Scale-0 sector containing the position at checkpoint time (canonical name).
    sector      TEXT NOT NULL,
    pos_x       REAL NOT NULL,
    pos_y       REAL NOT NULL,
    vel_x       REAL NOT NULL,
    vel_y       REAL NOT NULL,
    angle       REAL NOT NULL,
    ang_vel     REAL NOT NULL,
    player      INTEGER NOT NULL,
    owner_epoch INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE accounts (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    ship_id       INTEGER,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE world_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE quarantine (
    id             INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    row_text       TEXT NOT NULL,
    quarantined_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
