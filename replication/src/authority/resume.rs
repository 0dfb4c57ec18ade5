//! Shards that kept simulating through a lost link, and a new leader's takeover.
//!
//! A shard whose link died (its leader was killed, a standby took over, or the network cut
//! it off) keeps simulating and links again with `Hello { resuming: true }`. Its first message
//! on the new link is `Resume`: every entity it simulates and every handover no new owner
//! confirmed, each at its epoch. Replication takes those over its own copies by epoch (the
//! higher wins: an entity is only ever handed on at a new epoch), so what the shard simulated
//! since the last checkpoint is kept, not rewound to the store.
//!
//! A new leader starts from the store: the placement and every entity as last checkpointed,
//! owned by nobody ("unplaced"). It waits for the shards of that placement to link again
//! (refusing placement changes meanwhile, which would hand their leaves to others) until all
//! are back or the grace the shell gives runs out. Then a stored entity that no resumed shard
//! claimed was despawned since the checkpoint (a projectile that expired) and goes; one in the
//! leaves of a shard that did not come back waits for the placement that re-homes them, as
//! after any shard's death.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sidereal_core::protocol::{Adoption, ReplicationMessage};
use sidereal_core::{EntityId, EntitySnapshot, Epoch, ShardId};
use tracing::{info, warn};

use super::{Authority, LinkId};

/// The highest epoch a resuming shard may claim. Epochs grow by one per handover, so no real
/// entity comes near; a claim beyond it is a broken or hostile shard's, and taking it would
/// leave no epoch for the next handover.
pub const MAX_CLAIMED_EPOCH: Epoch = u64::MAX / 2;

/// A new leader's wait for the shards of its stored placement.
#[derive(Debug, Default)]
pub(super) struct Takeover {
    /// Shards of the stored placement not linked again yet.
    waiting: BTreeSet<ShardId>,
    /// Shards that came back with their entities.
    resumed: BTreeSet<ShardId>,
    /// Stored entities no shard has claimed or adopted yet.
    unclaimed: HashSet<EntityId>,
}

/// What one finished takeover did, for the log and the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TakeoverOutcome {
    /// Every shard of the stored placement came back.
    pub all_back: bool,
    /// Stored entities that no resumed shard held any more (despawned since the checkpoint).
    pub dropped: usize,
    /// Stored entities in resumed shards' leaves handed back to them because the grace ran
    /// out before every shard was back (one may have gone to a shard that did not return).
    pub readopted: usize,
}

impl Authority {
    /// Starts a new leader's takeover: the shards of the stored placement are expected back.
    /// Nothing to wait for (no stored placement): `false`.
    pub fn begin_takeover(&mut self) -> bool {
        let waiting: BTreeSet<ShardId> = self.placement.sectors.values().cloned().collect();
        if waiting.is_empty() {
            return false;
        }
        let unplaced = ShardId::new("unplaced");
        let unclaimed = self
            .mirror
            .iter()
            .filter(|(_, r)| r.owner == unplaced)
            .map(|(id, _)| *id)
            .collect();
        info!(
            shards = waiting.len(),
            "taking over: waiting for the placement's shards to link again"
        );
        self.takeover = Some(Takeover {
            waiting,
            resumed: BTreeSet::new(),
            unclaimed,
        });
        true
    }

    /// The shards a takeover still waits for (`None`: no takeover under way).
    pub fn awaiting_shards(&self) -> Option<Vec<ShardId>> {
        self.takeover
            .as_ref()
            .map(|t| t.waiting.iter().cloned().collect())
    }

    /// The grace ran out: the takeover ends with whoever is back.
    pub fn end_takeover(&mut self) -> Option<TakeoverOutcome> {
        let t = self.takeover.take()?;
        Some(self.finish_takeover(t))
    }

    /// The outcome of the takeover that ended last, once.
    pub fn take_takeover_outcome(&mut self) -> Option<TakeoverOutcome> {
        self.takeover_outcome.take()
    }

    /// `shard` linked during a takeover, resuming or fresh (a restarted pod gets its leaves'
    /// stored entities at its `Hello`, as always).
    pub(super) fn arrived(&mut self, shard: &ShardId, resumed: bool) {
        let Some(t) = &mut self.takeover else {
            return;
        };
        t.waiting.remove(shard);
        if resumed {
            t.resumed.insert(shard.clone());
        }
        if t.waiting.is_empty() {
            let t = self.takeover.take().expect("checked");
            let outcome = self.finish_takeover(t);
            self.takeover_outcome = Some(outcome);
        }
    }

    fn finish_takeover(&mut self, t: Takeover) -> TakeoverOutcome {
        let all_back = t.waiting.is_empty();
        let unplaced = ShardId::new("unplaced");
        let mut outcome = TakeoverOutcome {
            all_back,
            ..TakeoverOutcome::default()
        };
        let mut back: BTreeMap<ShardId, Vec<EntityId>> = BTreeMap::new();
        for id in t.unclaimed {
            let Some(r) = self.mirror.get(id) else {
                continue;
            };
            if r.owner != unplaced {
                continue;
            }
            let Some(owner) = self
                .leaf_of(&r.snapshot)
                .map(|l| self.placement.sectors[&l].clone())
            else {
                continue;
            };
            if !t.resumed.contains(&owner) || !self.live.contains_key(&owner) {
                continue;
            }
            if all_back {
                // Its shard came back without it, and no other shard has it: it ended there.
                self.mirror.remove(id);
                self.counters.despawns += 1;
                outcome.dropped += 1;
            } else {
                back.entry(owner).or_default().push(id);
            }
        }
        for (owner, ids) in back {
            outcome.readopted += ids.len();
            self.readopt(&owner, ids);
        }
        if all_back {
            info!(
                dropped = outcome.dropped,
                "takeover done: every shard is back; placement changes are accepted again"
            );
        } else {
            warn!(
                readopted = outcome.readopted,
                "takeover grace ran out before every shard was back; placement changes are accepted again"
            );
        }
        outcome
    }

    /// One part of a resuming shard's `Resume`.
    pub(super) fn resume(
        &mut self,
        link: LinkId,
        shard: &ShardId,
        owned: Vec<(EntitySnapshot, Epoch)>,
        handed_over: Vec<(EntitySnapshot, Epoch)>,
        last: bool,
    ) {
        let mut disown = Vec::new();
        let mut forget = Vec::new();
        for (snapshot, epoch) in owned {
            if self.claim(shard, snapshot, epoch) {
                self.note_resumed(link, snapshot.id);
            } else {
                disown.push(snapshot.id);
            }
        }
        for (snapshot, epoch) in handed_over {
            let id = snapshot.id;
            let newer_elsewhere = self.mirror.get(id).is_some_and(|r| r.epoch > epoch);
            if newer_elsewhere || self.mirror.is_archived(id) {
                // Adopted by another shard since (or out of the world): drop the copy.
                forget.push(id);
                continue;
            }
            // Not confirmed by anyone: hand it on again, from the state the shard kept.
            if !self.claim(shard, snapshot, epoch) {
                forget.push(id);
                continue;
            }
            // As claimed (a non-finite state repaired from the mirror).
            let snapshot = self.mirror.get(id).expect("just claimed").snapshot;
            self.note_resumed(link, id);
            self.handover_to_leaf_owner(link, shard, snapshot);
        }
        if !disown.is_empty() {
            self.send_to(shard, ReplicationMessage::Disown { ids: disown });
        }
        if !forget.is_empty() {
            self.send_to(shard, ReplicationMessage::Forget { ids: forget });
        }
        if last {
            self.settle_resume(link, shard);
        }
    }

    fn note_resumed(&mut self, link: LinkId, id: EntityId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.resumed.insert(id);
        }
        if let Some(t) = &mut self.takeover {
            t.unclaimed.remove(&id);
        }
    }

    /// Takes `shard`'s copy of an entity at `epoch` as the entity, unless someone holds it at a
    /// newer epoch (or at the same one and is live: a shard restarted during the takeover got
    /// it from the store). A non-finite state is replaced by the mirror's last good one.
    /// `false`: the shard's copy is stale (or beyond repair) and must go.
    fn claim(&mut self, shard: &ShardId, snapshot: EntitySnapshot, epoch: Epoch) -> bool {
        let id = snapshot.id;
        if epoch > MAX_CLAIMED_EPOCH || self.mirror.is_archived(id) {
            self.counters.refusals += 1;
            return false;
        }
        let mut snapshot = snapshot;
        if !snapshot.state.is_finite() {
            // As with an update: the state is refused, the mirror keeps the last good one.
            // With none to keep, the copy goes.
            self.counters.refusals += 1;
            match self.mirror.get(id) {
                Some(r) => snapshot.state = r.snapshot.state,
                None => return false,
            }
        }
        let Some(r) = self.mirror.get(id) else {
            // Spawned or adopted since the last checkpoint.
            self.mirror.insert_claimed(snapshot, shard.clone(), epoch);
            return true;
        };
        let other_live = &r.owner != shard && self.live.contains_key(&r.owner);
        if r.epoch > epoch || (r.epoch == epoch && other_live) {
            self.counters.refusals += 1;
            return false;
        }
        let (stale_owner, previous) = (
            other_live.then(|| r.owner.clone()),
            r.previous_owner.clone(),
        );
        self.mirror.set_claimed(snapshot, shard.clone(), epoch);
        if let Some(stale) = stale_owner {
            // A live shard holds an older copy (the store's, given to it at its Hello).
            self.send_to(&stale, ReplicationMessage::Disown { ids: vec![id] });
        }
        if let Some(prev) = previous.filter(|p| p != shard) {
            self.send_to(&prev, ReplicationMessage::Forget { ids: vec![id] });
        }
        true
    }

    /// After a resume's last part: what replication thought the shard held but the shard did
    /// not claim. Handed to it and never adopted: sent again. Its own and not claimed: it ended
    /// there while unlinked. In its leaves with no live owner: adopted now (as at any `Hello`),
    /// except, during a takeover, the store's copies, which wait for the takeover's end.
    fn settle_resume(&mut self, link: LinkId, shard: &ShardId) {
        let resumed = self
            .links
            .get_mut(&link)
            .map(|l| std::mem::take(&mut l.resumed))
            .unwrap_or_default();
        if let Some(l) = self.links.get_mut(&link) {
            l.resuming = false;
        }
        let unclaimed = self.takeover.as_ref().map(|t| &t.unclaimed);
        let mut again = Vec::new();
        let mut ended = Vec::new();
        let mut orphans = Vec::new();
        for (id, r) in self.mirror.iter() {
            if resumed.contains(id) {
                continue;
            }
            if &r.owner == shard {
                if r.in_transit {
                    again.push(Adoption {
                        snapshot: r.snapshot,
                        epoch: r.epoch,
                    });
                } else {
                    ended.push(*id);
                }
            } else if !self.live.contains_key(&r.owner)
                && !unclaimed.is_some_and(|u| u.contains(id))
                && self
                    .leaf_of(&r.snapshot)
                    .is_some_and(|l| &self.placement.sectors[&l] == shard)
            {
                orphans.push(*id);
            }
        }
        self.counters.resumes += 1;
        self.counters.resumed_entities += resumed.len() as u64;
        for id in &ended {
            self.mirror.remove(*id);
            self.counters.despawns += 1;
        }
        info!(
            %shard,
            kept = resumed.len(),
            sent_again = again.len(),
            ended = ended.len(),
            adopted = orphans.len(),
            "shard resumed"
        );
        if !again.is_empty() {
            let ids: Vec<EntityId> = again.iter().map(|a| a.snapshot.id).collect();
            self.send_to(shard, ReplicationMessage::Adopt { entities: again });
            self.send_controls_with(shard, &ids);
        }
        self.readopt(shard, orphans);
        self.arrived(shard, true);
    }
}
