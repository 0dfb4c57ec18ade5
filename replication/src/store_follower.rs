//! The world as the store holds it, kept up to date by reading only what changed.
//!
//! A leader loads the world once, at start. A standby follows the store while it waits to
//! lead ([`StoreFollower::catch_up`] a few times a second), so that when it takes over only the
//! last moment's changes are left to read: the takeover does not grow with the world. Both go
//! through the same steps: read the changes, apply them, and, once leading, turn what was read
//! into the [`LoadedWorld`] the authority starts from. The entities are held as the mirror's
//! records already, so the new leader takes the map whole instead of building it.

use std::collections::{BTreeMap, HashMap};

use sidereal_core::{EntityId, Placement, SectorId, ShardId};

use crate::mirror::EntityRecord;
use crate::store::{Store, StoreChanges, StoreError};

/// The world as loaded at start.
#[derive(Debug, Default)]
pub struct LoadedWorld {
    /// The roots: the stored placement's, else the ones the caller gave.
    pub world: Vec<SectorId>,
    /// Entities inside the roots, owned by nobody yet (`unplaced`), at their stored epoch and
    /// version.
    pub live: HashMap<EntityId, EntityRecord>,
    /// Entities no root covers (their root was removed): kept, not simulated.
    pub archived: HashMap<EntityId, EntityRecord>,
    /// (id, reason) of rows moved to quarantine, by id.
    pub quarantined: Vec<(i64, String)>,
    pub placement: Option<Placement>,
}

/// The stored entities, as of change [`StoreFollower::through`].
#[derive(Debug, Default)]
pub struct StoreFollower {
    /// `None` until the first read.
    through: Option<i64>,
    /// The store's leader at the last read: a copy stays whole only while every leader since
    /// stamped its writes (this one, or its successor that did).
    leader_epoch: Option<i64>,
    /// Rows that load, as mirror records.
    valid: HashMap<EntityId, EntityRecord>,
    /// Rows that do not: (reason, the row as text), quarantined when the follower leads.
    bad: BTreeMap<i64, (String, String)>,
}

impl StoreFollower {
    /// Loads the world from `store` in one go (a leader's start): read everything, then
    /// [`StoreFollower::into_world`].
    pub async fn load(store: &Store, world: &[SectorId]) -> Result<LoadedWorld, StoreError> {
        let mut follower = Self::default();
        follower.catch_up(store).await?;
        follower.into_world(store, world).await
    }

    /// Reads and applies what changed since the last read (everything, the first time);
    /// returns how many rows were read.
    pub async fn catch_up(&mut self, store: &Store) -> Result<usize, StoreError> {
        let changes = store.read_changes(self.through).await?;
        Ok(self.apply(changes))
    }

    /// Applies `changes` (deletions first: a row still in the table is alive); returns how many
    /// rows they carried.
    pub fn apply(&mut self, changes: StoreChanges) -> usize {
        let leader = changes.leader;
        let continuous = self
            .leader_epoch
            .is_none_or(|e| leader.epoch == e || leader.epoch == e + 1);
        if !leader.stamps || !(changes.whole || continuous) {
            // A leader whose writes carry no change numbers led since (an older binary during
            // an upgrade), or one this follower never saw: what it holds may miss writes.
            self.reset();
            return 0;
        }
        self.leader_epoch = Some(leader.epoch);
        if changes.whole {
            self.valid.clear();
            self.bad.clear();
        }
        for id in &changes.deleted {
            self.valid.remove(&EntityId(*id as u64));
            self.bad.remove(id);
        }
        let n = changes.rows.len();
        if self.valid.is_empty() {
            self.valid.reserve(n);
        }
        for (id, row) in changes.rows {
            let checked = match row {
                Ok(row) => row
                    .validate()
                    .map_err(|reason| (reason, format!("{row:?}"))),
                Err(e) => Err((format!("row does not decode: {e}"), String::new())),
            };
            match checked {
                Ok((snapshot, epoch, version, _)) => {
                    self.bad.remove(&id);
                    let record = EntityRecord {
                        snapshot,
                        owner: ShardId::new("unplaced"),
                        epoch,
                        in_transit: false,
                        previous_owner: None,
                        version,
                    };
                    self.valid.insert(snapshot.id, record);
                }
                Err(why) => {
                    self.valid.remove(&EntityId(id as u64));
                    self.bad.insert(id, why);
                }
            }
        }
        self.through = Some(changes.through);
        n
    }

    /// Forgets everything read: the next read is of the whole table.
    fn reset(&mut self) {
        self.through = None;
        self.leader_epoch = None;
        self.valid.clear();
        self.bad.clear();
    }

    /// The change number read through (`None` before the first read).
    pub fn through(&self) -> Option<i64> {
        self.through
    }

    /// Stored entity rows held, the ones that cannot be loaded included.
    pub fn len(&self) -> usize {
        self.valid.len() + self.bad.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The world to lead, from what was read: its roots are the stored placement's (else
    /// `world`); entities inside them are live, valid ones outside are archived; rows that do
    /// not decode or validate are moved to `quarantine` (one transaction, fenced: only a
    /// leader's) and reported, never loaded.
    pub async fn into_world(
        self,
        store: &Store,
        world: &[SectorId],
    ) -> Result<LoadedWorld, StoreError> {
        let placement = store.load_placement().await?;
        let (mut out, bad) = self.classify(placement, world);
        if !bad.is_empty() {
            store.quarantine(&bad).await?;
            out.quarantined = bad
                .into_iter()
                .map(|(id, reason, _)| (id, reason))
                .collect();
        }
        Ok(out)
    }

    /// Sorts the rows held into live, archived and bad, by the roots of `placement` (else
    /// `world`); the bad ones as (id, reason, row text).
    fn classify(
        mut self,
        placement: Option<Placement>,
        world: &[SectorId],
    ) -> (LoadedWorld, Vec<(i64, String, String)>) {
        let world = placement
            .as_ref()
            .and_then(|p| p.world.clone())
            .unwrap_or_else(|| world.to_vec());
        let covered = |r: &EntityRecord| {
            SectorId::of_point(r.snapshot.state.point(), 0)
                .is_ok_and(|s| world.iter().any(|root| root.covers(&s)))
        };
        let archived: HashMap<EntityId, EntityRecord> = self
            .valid
            .extract_if(|_, r| !covered(r))
            .map(|(id, mut r)| {
                r.owner = ShardId::new("archived");
                (id, r)
            })
            .collect();
        let bad = self
            .bad
            .into_iter()
            .map(|(id, (reason, text))| (id, reason, text))
            .collect();
        let out = LoadedWorld {
            live: self.valid,
            archived,
            quarantined: Vec::new(),
            placement,
            world,
        };
        (out, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChangeLeader, EntityRow};

    fn row(id: i64, x: f32) -> (i64, Result<EntityRow, String>) {
        let row = EntityRow {
            id,
            kind: 1,
            sector: "s0-x0-y0".into(),
            pos: [x, 1.0],
            vel: [0.0, 0.0],
            angle: 0.0,
            ang_vel: 0.0,
            player: false,
            owner_epoch: 1,
            version: 1,
        };
        (id, Ok(row))
    }

    fn ids(f: &StoreFollower) -> Vec<i64> {
        let mut ids: Vec<i64> = f.valid.keys().map(|id| id.0 as i64).collect();
        ids.extend(f.bad.keys());
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_row_still_in_the_table_outlives_its_older_tombstone() {
        let mut f = StoreFollower::default();
        f.apply(StoreChanges {
            through: 1,
            whole: true,
            rows: vec![row(1, 1.0), row(2, 2.0)],
            deleted: vec![],
            ..Default::default()
        });
        // 2 deleted, then written again under the same id: the row read is the live one.
        f.apply(StoreChanges {
            through: 3,
            whole: false,
            rows: vec![row(2, 5.0)],
            deleted: vec![2, 1],
            ..Default::default()
        });
        assert_eq!(ids(&f), [2]);
        assert_eq!(f.through(), Some(3));
    }

    fn leader(epoch: i64, stamps: bool) -> ChangeLeader {
        ChangeLeader { epoch, stamps }
    }

    #[test]
    fn a_leader_that_does_not_stamp_or_one_never_seen_makes_the_copy_start_again() {
        let mut f = StoreFollower::default();
        let read = |through, whole, rows, leader| StoreChanges {
            through,
            whole,
            rows,
            deleted: vec![],
            leader,
        };
        f.apply(read(4, true, vec![row(1, 1.0)], leader(3, true)));
        // The next leader (a takeover) stamps: the copy goes on.
        assert_eq!(
            f.apply(read(5, false, vec![row(2, 2.0)], leader(4, true))),
            1
        );
        assert_eq!((ids(&f), f.through()), (vec![1, 2], Some(5)));
        // An older binary took the store: its writes carry no change numbers.
        assert_eq!(f.apply(read(5, false, vec![], leader(5, false))), 0);
        assert_eq!((ids(&f), f.through()), (vec![], None));
        f.apply(read(9, true, vec![row(3, 3.0)], leader(6, true)));
        // Two takeovers between reads: the one in the middle was never seen.
        assert_eq!(
            f.apply(read(12, false, vec![row(4, 4.0)], leader(8, true))),
            0
        );
        assert_eq!(f.through(), None, "read whole next time");
        f.apply(read(
            12,
            true,
            vec![row(3, 3.0), row(4, 4.0)],
            leader(8, true),
        ));
        assert_eq!(ids(&f), [3, 4]);
    }

    #[test]
    fn a_whole_read_replaces_what_was_held_and_bad_rows_are_kept_aside() {
        let mut f = StoreFollower::default();
        f.apply(StoreChanges {
            through: 7,
            whole: true,
            rows: vec![row(1, 1.0), row(9, 9.0)],
            deleted: vec![],
            ..Default::default()
        });
        let mut outside = row(4, 1.0);
        outside.1.as_mut().unwrap().sector = "s0-x5-y0".into();
        f.apply(StoreChanges {
            through: 9,
            whole: true,
            rows: vec![row(3, 3.0), outside, (5, Err("bad bytes".into()))],
            deleted: vec![],
            ..Default::default()
        });
        assert_eq!(ids(&f), [3, 4, 5]);
        let world = [SectorId::new(0, 0, 0).unwrap()];
        let (out, bad) = f.classify(None, &world);
        assert_eq!(out.live.keys().collect::<Vec<_>>(), [&EntityId(3)]);
        assert!(out.archived.is_empty());
        let reasons: Vec<_> = bad.iter().map(|(id, r, _)| (*id, r.as_str())).collect();
        assert_eq!(reasons.len(), 2);
        assert!(reasons[0].1.contains("not in its sector"), "{reasons:?}");
        assert!(
            reasons[1].1.contains("does not decode: bad bytes"),
            "{reasons:?}"
        );
    }
}
