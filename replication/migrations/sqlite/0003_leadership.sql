-- Who may write: each replication that takes the store bumps the epoch, and every write checks,
-- in its own transaction, that the epoch is still the one it took. A deposed leader's writes
-- are refused.
CREATE TABLE leadership (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  INTEGER NOT NULL,
    holder TEXT NOT NULL,
    since  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
