-- Entities: write-behind checkpoints of the mirror. Projectiles are transient and not stored.
CREATE TABLE entities (
    id          BIGINT PRIMARY KEY,
    kind        SMALLINT NOT NULL,
    -- Scale-0 sector containing the position at checkpoint time (canonical name).
    sector      TEXT NOT NULL,
    pos_x       REAL NOT NULL,
    pos_y       REAL NOT NULL,
    vel_x       REAL NOT NULL,
    vel_y       REAL NOT NULL,
    angle       REAL NOT NULL,
    ang_vel     REAL NOT NULL,
    player      BOOLEAN NOT NULL,
    owner_epoch BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    ship_id       BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Small key/value state of the world: placement (JSON, with its generation), world roots.
CREATE TABLE world_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Rows that could not be loaded into the live world, kept for an operator to inspect.
CREATE TABLE quarantine (
    id             BIGINT NOT NULL,
    reason         TEXT NOT NULL,
    row_text       TEXT NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
