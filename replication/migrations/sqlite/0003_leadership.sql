-- Who may write: each replication that takes the store bumps the epoch, and every write checks,
-- in its own transaction, that the epoch is still the one it took. A deposed leader's writes
-- are refused. The leader renews `renewed_ms` (the database's clock, milliseconds since 1970)
-- every second; a standby takes the store once it is older than the lease.
CREATE TABLE leadership (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  INTEGER NOT NULL,
    holder TEXT NOT NULL,
    renewed_ms INTEGER NOT NULL DEFAULT 0,
    since  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
