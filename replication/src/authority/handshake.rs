//! A shard's Hello: version, proof of the secret and name checks, its assignment, and the
//! entities it gets back.

use sidereal_core::handshake::{RESERVED_SHARD_NAMES, SHARD_LINK};
use sidereal_core::protocol::{Adoption, PROTOCOL_VERSION, ReplicationMessage, ShardMessage};
use sidereal_core::{EntityId, SectorId, ShardId};
use tracing::info;

use super::{Authority, LinkError, LinkId};

impl Authority {
    /// A shard's `Hello` (any other message first is refused by the caller).
    pub(super) fn hello(&mut self, link: LinkId, hello: ShardMessage) -> Result<(), LinkError> {
        let ShardMessage::Hello {
            protocol,
            shard,
            nonce,
            proof,
            stream,
            resuming,
        } = hello
        else {
            return Err(LinkError::NoHello);
        };
        let (nonce, proof) = (&nonce, &proof);
        let challenge = self.links[&link].challenge;
        let result = if protocol != PROTOCOL_VERSION {
            Err(LinkError::WrongVersion { got: protocol })
        } else if !SHARD_LINK.verify_hello(&self.config.secret, &challenge, nonce, &shard.0, proof)
        {
            Err(LinkError::WrongSecret {
                shard: shard.clone(),
            })
        } else if RESERVED_SHARD_NAMES.contains(&shard.0.as_str()) {
            Err(LinkError::ReservedName(shard.0.clone()))
        } else if shard.0.is_empty()
            || shard.0.len() > 63
            || !shard
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            Err(LinkError::BadName(shard.0.clone()))
        } else if self.live.contains_key(&shard) {
            Err(LinkError::AlreadyConnected(shard.clone()))
        } else if self.next_incarnation >= self.incarnation_limit {
            Err(LinkError::NoIncarnation)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            self.outbox.push((
                link,
                ReplicationMessage::Rejected {
                    reason: e.to_string(),
                },
            ));
            return Err(e);
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let l = self.links.get_mut(&link).expect("checked by caller");
        l.shard = Some(shard.clone());
        l.incarnation = incarnation;
        l.resuming = resuming;
        self.live.insert(shard.clone(), link);
        self.seen.insert(shard.clone());
        match stream {
            Some(addr) => self.streams.insert(shard.clone(), addr),
            None => self.streams.remove(&shard),
        };
        info!(%shard, incarnation, resuming, "shard linked");
        self.outbox.push((
            link,
            ReplicationMessage::Welcome {
                incarnation,
                tick_hz: self.config.tick_hz,
                proof: SHARD_LINK.welcome(&self.config.secret, &challenge, nonce, &shard.0),
            },
        ));
        self.send_assignment(&shard);
        if resuming {
            // It keeps what it simulates: its `Resume` says what that is, and what it does not
            // claim it gets then.
            return Ok(());
        }
        // A shard that comes back (restarted pod) gets back whatever the mirror says it owns,
        // and whatever lies in its leaves with no live owner (a restored world, a dead shard).
        let mine: Vec<EntityId> = self
            .mirror
            .iter()
            .filter(|(_, r)| {
                r.owner == shard
                    || (!self.live.contains_key(&r.owner)
                        && self
                            .leaf_of(&r.snapshot)
                            .is_some_and(|l| self.placement.sectors[&l] == shard))
            })
            .map(|(id, _)| *id)
            .collect();
        self.readopt(&shard, mine);
        self.arrived(&shard, false);
        Ok(())
    }

    pub(super) fn send_assignment(&mut self, shard: &ShardId) {
        let sectors: Vec<SectorId> = self
            .placement
            .sectors
            .iter()
            .filter(|(_, s)| *s == shard)
            .map(|(l, _)| *l)
            .collect();
        let msg = ReplicationMessage::Assign {
            generation: self.placement.generation,
            sectors,
            world: self.world.clone(),
        };
        self.send_to(shard, msg);
    }

    /// Hands `ids` (from the mirror's state) to `to` at a new epoch.
    pub(super) fn readopt(&mut self, to: &ShardId, ids: Vec<EntityId>) {
        let mut adopt = Vec::new();
        for id in ids {
            let Some(r) = self.mirror.get(id) else {
                continue;
            };
            let snapshot = r.snapshot;
            if let Some(epoch) = self.mirror.hand_over(id, snapshot, to.clone()) {
                adopt.push(Adoption { snapshot, epoch });
            }
        }
        if !adopt.is_empty() && self.takes_adoptions(to) {
            let ids: Vec<EntityId> = adopt.iter().map(|a| a.snapshot.id).collect();
            self.send_to(to, ReplicationMessage::Adopt { entities: adopt });
            self.send_controls_with(to, &ids);
        }
    }

    /// Whether `shard` may be sent an `Adopt` now: it is linked and not in the middle of a
    /// resume. A resuming shard may hold the entity already (adopted from the last leader) and
    /// an `Adopt` would replace its live copy with ours; what is handed to it meanwhile stays in
    /// transit, and its resume's end sends what it did not claim (`resume.rs`).
    pub(super) fn takes_adoptions(&self, shard: &ShardId) -> bool {
        self.live
            .get(shard)
            .and_then(|l| self.links.get(l))
            .is_some_and(|l| !l.resuming)
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
