-- Link incarnations prefix the entity ids shards mint. A leader reserves them here ahead of
-- handing them out, so a leader that takes over starts above every one its predecessor may
-- have given a shard that still simulates (and mints) under it.
ALTER TABLE leadership ADD COLUMN incarnations_below BIGINT NOT NULL DEFAULT 0;
