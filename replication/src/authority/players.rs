//! Players' ships: minted by the authority itself and handed straight to the shard that owns
//! the leaf they appear in.

use sidereal_core::protocol::{Adoption, PilotCommand, ReplicationMessage, ShipControl};
use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState, SectorId, ShardId};

use super::Authority;

/// Where player `player_id`'s first ship appears: near the centre of one of the world's roots,
/// chosen and scattered by the id so that players do not all start on top of each other.
/// Pure, so a player's spawn point is the same wherever it is computed.
pub fn spawn_point(world: &[SectorId], player_id: u64) -> Option<EntityState> {
    let root = world.get((player_id % world.len().max(1) as u64) as usize)?;
    let b = root.bounds();
    let (cx, cy) = ((b.min.x + b.max.x) / 2.0, (b.min.y + b.max.y) / 2.0);
    // A spread of up to 200 units (or a tenth of the root for small ones) around the centre.
    let spread = (root.edge() / 10.0).min(200.0);
    let mix = player_id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let unit = |bits: u64| (bits & 0xffff) as f64 / 65535.0 * 2.0 - 1.0;
    Some(EntityState {
        pos: [
            (cx + unit(mix) * spread) as f32,
            (cy + unit(mix >> 16) * spread) as f32,
        ],
        angle: (unit(mix >> 32) * std::f64::consts::PI) as f32,
        ..Default::default()
    })
}

impl Authority {
    /// Adds a new player ship at `state` and returns its id. It goes to the live owner of its
    /// leaf at once; with none, to whichever shard next takes that leaf. Dirty until the next
    /// checkpoint: callers that promise durability checkpoint before answering.
    pub fn spawn_ship(&mut self, state: EntityState) -> EntityId {
        let snapshot = self.new_ship(state);
        self.spawn_ship_as(snapshot);
        snapshot.id
    }

    /// A player's ship at `state` with a fresh id, not in the world yet: the caller stores it
    /// first, then [`Authority::spawn_ship_as`] adds it.
    pub fn new_ship(&mut self, state: EntityState) -> EntitySnapshot {
        let (incarnation, counter) = match self.own_ids {
            Some((i, c)) => (i, c + 1),
            None => {
                let i = self.next_incarnation;
                self.next_incarnation += 1;
                (i, 1)
            }
        };
        self.own_ids = Some((incarnation, counter));
        EntitySnapshot {
            id: EntityId::minted(incarnation, counter),
            kind: EntityKind::Ship,
            state,
            ttl_ticks: None,
            player: true,
        }
    }

    /// Adds a ship made by [`Authority::new_ship`] to the world, handed to the owner of its
    /// leaf when that shard is linked.
    pub fn spawn_ship_as(&mut self, snapshot: EntitySnapshot) {
        let id = snapshot.id;
        self.mirror.insert_new(snapshot, ShardId::new("unplaced"));
        if let Some(owner) = self
            .leaf_of(&snapshot)
            .map(|l| self.placement.sectors[&l].clone())
            && self.takes_adoptions(&owner)
            && let Some(epoch) = self.mirror.hand_over(id, snapshot, owner.clone())
        {
            self.send_to(
                &owner,
                ReplicationMessage::Adopt {
                    entities: vec![Adoption { snapshot, epoch }],
                },
            );
        }
    }

    /// A player connected to a game port, flying `ship`.
    pub fn player_joined(&mut self, player_id: u64, ship: EntityId) {
        self.players.insert(player_id, ship);
    }

    /// The player is gone: its ship stops obeying its last command and drifts.
    pub fn player_left(&mut self, player_id: u64) {
        if let Some(ship) = self.players.remove(&player_id) {
            self.controls.remove(&ship);
            self.route(ShipControl {
                ship,
                command: PilotCommand::default(),
            });
        }
    }

    /// A connected player's command (validated by the caller) for its ship: kept, and sent to
    /// the shard simulating the ship. `false` if the player has no ship in the world.
    pub fn pilot(&mut self, player_id: u64, command: PilotCommand) -> bool {
        let Some(&ship) = self.players.get(&player_id) else {
            return false;
        };
        if !self.mirror.contains(ship) {
            return false;
        }
        let control = ShipControl { ship, command };
        self.controls.insert(ship, control);
        self.route(control);
        true
    }

    fn route(&mut self, control: ShipControl) {
        if let Some(owner) = self.mirror.get(control.ship).map(|r| r.owner.clone()) {
            self.send_to(
                &owner,
                ReplicationMessage::Controls {
                    controls: vec![control],
                },
            );
        }
    }

    /// After an `Adopt` of `ids` to `to`: the commands of the piloted ones among them, so the
    /// new owner flies them from its first tick.
    pub(super) fn send_controls_with(&mut self, to: &ShardId, ids: &[EntityId]) {
        let controls: Vec<ShipControl> = ids
            .iter()
            .filter_map(|id| self.controls.get(id).copied())
            .collect();
        if !controls.is_empty() {
            self.send_to(to, ReplicationMessage::Controls { controls });
        }
    }

    /// Connected players and their ships.
    pub fn players(&self) -> &std::collections::BTreeMap<u64, EntityId> {
        &self.players
    }

    /// Whether `id` is an entity of the world, simulated or archived.
    pub fn knows_entity(&self, id: EntityId) -> bool {
        self.mirror.contains(id) || self.mirror.is_archived(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_points_lie_inside_the_world_and_differ_between_players() {
        let world = vec![
            SectorId::new(2, 0, 0).unwrap(),
            SectorId::new(2, -1, 0).unwrap(),
        ];
        let mut seen = std::collections::HashSet::new();
        for id in 1..200u64 {
            let s = spawn_point(&world, id).unwrap();
            let p = s.point();
            assert!(world.iter().any(|r| r.bounds().contains(p)), "{id}: {p:?}");
            assert!(s.is_finite());
            seen.insert((s.pos[0].to_bits(), s.pos[1].to_bits()));
        }
        assert!(
            seen.len() > 190,
            "only {} distinct spawn points",
            seen.len()
        );
        assert_eq!(spawn_point(&world, 7), spawn_point(&world, 7));
        assert_eq!(spawn_point(&[], 7), None);
    }
}
