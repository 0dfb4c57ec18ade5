//! The entity mirror: the latest known state of every entity, with its owner and epoch.

use std::collections::{HashMap, HashSet};

use sidereal_core::{EntityId, EntitySnapshot, Epoch, ShardId};

#[derive(Debug, Clone, PartialEq)]
pub struct EntityRecord {
    pub snapshot: EntitySnapshot,
    pub owner: ShardId,
    pub epoch: Epoch,
    /// Handed to `owner`, which has not yet confirmed it simulates it.
    pub in_transit: bool,
    /// The owner before the current handover, told to forget its copy once `owner` confirms.
    pub previous_owner: Option<ShardId>,
    /// Bumped on every accepted change.
    pub version: u64,
}

/// Why an update to the mirror was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{id} is unknown")]
    Unknown { id: EntityId },
    #[error("{id} is owned by {owner}, not {sender}")]
    NotOwner {
        id: EntityId,
        owner: ShardId,
        sender: ShardId,
    },
    #[error("{id}: epoch {got} is stale (current {current})")]
    StaleEpoch {
        id: EntityId,
        got: Epoch,
        current: Epoch,
    },
    #[error("{id} is still being handed over to {owner}")]
    InTransit { id: EntityId, owner: ShardId },
}

#[derive(Debug, Default)]
pub struct Mirror {
    entities: HashMap<EntityId, EntityRecord>,
    /// Entities of roots removed from the world: out of the simulation, kept (in the store
    /// too) exactly as they were, until their root comes back.
    archived: HashMap<EntityId, EntityRecord>,
    /// Changed since the last checkpoint was taken (live or archived).
    dirty: HashSet<EntityId>,
    /// Removed since the last checkpoint was taken.
    removed: HashSet<EntityId>,
}

impl Mirror {
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub fn get(&self, id: EntityId) -> Option<&EntityRecord> {
        self.entities.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: EntityId) -> Option<&mut EntityRecord> {
        self.entities.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&EntityId, &EntityRecord)> {
        self.entities.iter()
    }

    pub fn contains(&self, id: EntityId) -> bool {
        self.entities.contains_key(&id)
    }

    /// Takes a world restored from the store whole (nothing dirty: the store has it all), in
    /// place of what this mirror held: a million-entry map handed over, not rebuilt.
    pub fn restore(
        &mut self,
        live: HashMap<EntityId, EntityRecord>,
        archived: HashMap<EntityId, EntityRecord>,
    ) {
        self.entities = live;
        self.archived = archived;
        self.dirty.clear();
        self.removed.clear();
    }

    /// Inserts a new entity; `false` if the id exists (nothing changes then).
    pub fn insert_new(&mut self, snapshot: EntitySnapshot, owner: ShardId) -> bool {
        if self.entities.contains_key(&snapshot.id) {
            return false;
        }
        self.insert_restored(snapshot, owner, 1, 1);
        self.dirty.insert(snapshot.id);
        true
    }

    /// Inserts an entity loaded from the store (not dirty: the store has it).
    pub fn insert_restored(
        &mut self,
        snapshot: EntitySnapshot,
        owner: ShardId,
        epoch: Epoch,
        version: u64,
    ) {
        let record = EntityRecord {
            snapshot,
            owner,
            epoch,
            in_transit: false,
            previous_owner: None,
            version,
        };
        self.entities.insert(snapshot.id, record);
    }

    /// Inserts an entity a resuming shard holds that this mirror never saw (spawned or handed
    /// to it since the last checkpoint), owned by it at `epoch`. Dirty.
    pub fn insert_claimed(&mut self, snapshot: EntitySnapshot, owner: ShardId, epoch: Epoch) {
        self.insert_restored(snapshot, owner, epoch, 1);
        self.dirty.insert(snapshot.id);
    }

    /// A resuming shard's copy replaces the record: owned and simulated by it at `epoch`.
    pub fn set_claimed(&mut self, snapshot: EntitySnapshot, owner: ShardId, epoch: Epoch) {
        if let Some(r) = self.entities.get_mut(&snapshot.id) {
            r.snapshot = snapshot;
            r.owner = owner;
            r.epoch = epoch;
            r.in_transit = false;
            r.previous_owner = None;
            r.version += 1;
            self.dirty.insert(snapshot.id);
        }
    }

    /// Marks an entity changed (its next checkpoint writes it).
    pub fn touch(&mut self, id: EntityId) {
        if self.entities.contains_key(&id) {
            self.dirty.insert(id);
        }
    }

    pub fn dirty_len(&self) -> usize {
        self.dirty.len() + self.removed.len()
    }

    /// Takes the checkpoint work: the changed records (cloned) and the removed ids.
    pub fn take_dirty(&mut self) -> (Vec<EntityRecord>, Vec<EntityId>) {
        let changed = self
            .dirty
            .drain()
            .filter_map(|id| self.entities.get(&id).or(self.archived.get(&id)).cloned())
            .collect();
        (changed, self.removed.drain().collect())
    }

    /// A checkpoint failed: its work goes back into the dirty set, nothing is dropped.
    pub fn requeue(
        &mut self,
        changed: impl IntoIterator<Item = EntityId>,
        removed: impl IntoIterator<Item = EntityId>,
    ) {
        for id in changed {
            if self.entities.contains_key(&id) || self.archived.contains_key(&id) {
                self.dirty.insert(id);
            }
        }
        for id in removed {
            if !self.entities.contains_key(&id) {
                self.removed.insert(id);
            }
        }
    }

    /// The record, if `sender` owns `id` at `epoch` (any epoch when `None`) and is simulating it.
    pub fn check_owner(
        &mut self,
        id: EntityId,
        sender: &ShardId,
        epoch: Option<Epoch>,
    ) -> Result<&mut EntityRecord, Refusal> {
        let r = self.entities.get_mut(&id).ok_or(Refusal::Unknown { id })?;
        if &r.owner != sender {
            return Err(Refusal::NotOwner {
                id,
                owner: r.owner.clone(),
                sender: sender.clone(),
            });
        }
        if let Some(e) = epoch
            && e != r.epoch
        {
            return Err(Refusal::StaleEpoch {
                id,
                got: e,
                current: r.epoch,
            });
        }
        if r.in_transit {
            return Err(Refusal::InTransit {
                id,
                owner: r.owner.clone(),
            });
        }
        Ok(r)
    }

    /// Moves ownership to `to` at the next epoch; returns the new epoch.
    pub fn hand_over(
        &mut self,
        id: EntityId,
        snapshot: EntitySnapshot,
        to: ShardId,
    ) -> Option<Epoch> {
        let r = self.entities.get_mut(&id)?;
        r.previous_owner = Some(std::mem::replace(&mut r.owner, to));
        r.epoch += 1;
        r.in_transit = true;
        r.snapshot = snapshot;
        r.version += 1;
        let epoch = r.epoch;
        self.dirty.insert(id);
        Some(epoch)
    }

    /// Takes an entity out of the simulation into the archive, as it is (its last change is
    /// still checkpointed). A handover in flight is void: nobody simulates it any more.
    pub fn archive(&mut self, id: EntityId) -> bool {
        let Some(mut r) = self.entities.remove(&id) else {
            return false;
        };
        r.in_transit = false;
        r.previous_owner = None;
        self.archived.insert(id, r);
        true
    }

    /// Brings an archived entity back into the world, owned by `owner` (a placeholder that is
    /// not live, so the owner of its leaf adopts it at the next epoch).
    pub fn unarchive(&mut self, id: EntityId, owner: ShardId) -> bool {
        let Some(mut r) = self.archived.remove(&id) else {
            return false;
        };
        r.owner = owner;
        self.entities.insert(id, r);
        true
    }

    pub fn is_archived(&self, id: EntityId) -> bool {
        self.archived.contains_key(&id)
    }

    pub fn archived(&self) -> impl Iterator<Item = (&EntityId, &EntityRecord)> {
        self.archived.iter()
    }

    pub fn archived_len(&self) -> usize {
        self.archived.len()
    }

    pub fn remove(&mut self, id: EntityId) -> Option<EntityRecord> {
        let r = self.entities.remove(&id)?;
        self.dirty.remove(&id);
        self.removed.insert(id);
        Some(r)
    }
}
