-- A standby follows the store while it waits to lead, reading only what changed since it last
-- looked. Every write to `entities` takes the next change number from `entity_changes` (its row
-- stays locked until the write commits, so numbers commit in order) and stamps the rows it
-- writes with it; a deleted row leaves a tombstone with it. Tombstones older than a few thousand
-- changes are pruned, and `tombstones_from` says from which change on they are all kept (a
-- follower further behind reads the whole table again).
CREATE TABLE entity_changes (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    seq             BIGINT NOT NULL,
    tombstones_from BIGINT NOT NULL
);
INSERT INTO entity_changes (id, seq, tombstones_from) VALUES (1, 0, 0);
ALTER TABLE entities ADD COLUMN changed_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX entities_changed_seq ON entities (changed_seq);
CREATE TABLE entity_tombstones (
    id  BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX entity_tombstones_seq ON entity_tombstones (seq);
-- The epoch of the last leader that took the store stamping its writes (this binary and later).
-- A leader that took it without (an older binary, during an upgrade) leaves this behind its
-- epoch: a standby then cannot trust what it followed and reads the whole world on taking over.
ALTER TABLE leadership ADD COLUMN stamped_epoch BIGINT NOT NULL DEFAULT 0;
