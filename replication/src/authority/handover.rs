//! Handovers: an entity leaves its owner's leaves and is adopted by the owner of the leaf it is in.

use std::collections::BTreeMap;

use sidereal_core::protocol::{Adoption, ReplicationMessage};
use sidereal_core::{EntityId, EntitySnapshot, Epoch, SectorId, ShardId};
use tracing::warn;

use super::{Authority, LinkId};
use crate::mirror::Refusal;

impl Authority {
    pub(super) fn handover_out(
        &mut self,
        link: LinkId,
        shard: &ShardId,
        snapshot: EntitySnapshot,
        epoch: Epoch,
    ) {
        if let Err(r) = self.mirror.check_owner(snapshot.id, shard, Some(epoch)) {
            return self.refuse(shard, "handover", r);
        }
        if !snapshot.state.is_finite() {
            self.counters.refusals += 1;
            warn!(%shard, id = %snapshot.id, "handover with non-finite state refused; the mirror keeps the last good state");
            let last = self.mirror.get(snapshot.id).expect("checked").snapshot;
            return self.handover_to_leaf_owner(link, shard, last);
        }
        self.handover_to_leaf_owner(link, shard, snapshot);
    }

    pub(super) fn handover_to_leaf_owner(
        &mut self,
        link: LinkId,
        from: &ShardId,
        mut snapshot: EntitySnapshot,
    ) {
        self.forget_on_link(link, snapshot.id);
        if self.leaf_of(&snapshot).is_none() {
            // It left the world (a collision pushed it past the edge): put it back just inside,
            // moving inwards. Handing it back unchanged would bounce it between owners forever.
            clamp_into_world(&mut snapshot, &self.world);
        }
        let to = self
            .leaf_of(&snapshot)
            .map(|l| self.placement.sectors[&l].clone())
            .unwrap_or_else(|| from.clone());
        let epoch = self
            .mirror
            .hand_over(snapshot.id, snapshot, to.clone())
            .expect("checked owner");
        self.counters.handovers += 1;
        if !self.takes_adoptions(&to) {
            return;
        }
        self.send_to(
            &to,
            ReplicationMessage::Adopt {
                entities: vec![Adoption { snapshot, epoch }],
            },
        );
        self.send_controls_with(&to, &[snapshot.id]);
    }

    pub(super) fn adopted(&mut self, shard: &ShardId, ids: &[(EntityId, Epoch)]) {
        let mut forget: BTreeMap<ShardId, Vec<EntityId>> = BTreeMap::new();
        for &(id, epoch) in ids {
            let Some(r) = self.mirror.get(id) else {
                continue;
            };
            if &r.owner != shard || r.epoch != epoch {
                let reason = Refusal::StaleEpoch {
                    id,
                    got: epoch,
                    current: r.epoch,
                };
                self.refuse(shard, "adoption", reason);
                continue;
            }
            let r = self.mirror.check_owner_unchecked(id);
            r.in_transit = false;
            if let Some(prev) = r.previous_owner.take()
                && &prev != shard
            {
                forget.entry(prev).or_default().push(id);
            }
        }
        for (prev, ids) in forget {
            self.send_to(&prev, ReplicationMessage::Forget { ids });
        }
    }
}

/// Moves an entity outside every root to the nearest point just inside the closest root and
/// turns its velocity inwards.
fn clamp_into_world(snapshot: &mut EntitySnapshot, world: &[SectorId]) {
    let p = snapshot.state.point();
    let Some(b) = world
        .iter()
        .map(|r| r.bounds())
        .min_by(|a, b| a.distance_to(p).total_cmp(&b.distance_to(p)))
    else {
        return;
    };
    let inset = 0.5;
    let s = &mut snapshot.state;
    let (x, y) = (f64::from(s.pos[0]), f64::from(s.pos[1]));
    let cx = x.clamp(b.min.x + inset, b.max.x - inset);
    let cy = y.clamp(b.min.y + inset, b.max.y - inset);
    if cx != x {
        s.vel[0] = if cx > x {
            s.vel[0].abs()
        } else {
            -s.vel[0].abs()
        };
    }
    if cy != y {
        s.vel[1] = if cy > y {
            s.vel[1].abs()
        } else {
            -s.vel[1].abs()
        };
    }
    s.pos = [cx as f32, cy as f32];
}
