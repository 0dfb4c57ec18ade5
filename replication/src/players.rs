//! What a game port (replication's own or a linked gateway) reports about players, applied to
//! the authority: joins (and a new player's first ship), leaves and commands.

use std::sync::Arc;
use std::time::Instant;

use sidereal_core::{EntityId, EntityKind, EntitySnapshot};
use tracing::{info, warn};

use crate::gateway::GatewayEvent;
use crate::state::Shared;

/// Applies what the game port reports: players joining and leaving, and their commands, which
/// pass the input gate before the authority routes them to the ship's shard.
pub(crate) fn on_gateway_event(s: &Arc<Shared>, event: GatewayEvent) {
    let mut a = match event {
        // Gateways relay chat among themselves through the gateway link.
        GatewayEvent::Chat(_) => return,
        GatewayEvent::Joined { player_id, ship } => {
            let mut a = s.authority.lock().expect("authority lock");
            a.player_joined(player_id, ship);
            if !a.knows_entity(ship) {
                let world = a.world().to_vec();
                drop(a);
                make_ship_on_first_connection(s, player_id, ship, &world);
                a = s.authority.lock().expect("authority lock");
            }
            a
        }
        GatewayEvent::Left { player_id } => {
            let mut a = s.authority.lock().expect("authority lock");
            a.player_left(player_id);
            a
        }
        GatewayEvent::Input { player_id, command } => {
            // One lock at a time: /metrics reads both, and holding the gate while waiting for
            // the authority deadlocked against it.
            let admitted =
                s.inputs
                    .lock()
                    .expect("inputs lock")
                    .admit(player_id, command, Instant::now());
            let Ok(command) = admitted else {
                return;
            };
            let mut a = s.authority.lock().expect("authority lock");
            if !a.pilot(player_id, command) {
                drop(a);
                s.inputs.lock().expect("inputs lock").no_ship();
                a = s.authority.lock().expect("authority lock");
            }
            a
        }
    };
    s.flush(&mut a);
}

/// A player's ship is made when the player first connects, not when it registers, so accounts
/// that never play cost the world nothing. It is stored (one row) before it enters the world;
/// a store that is failing makes nothing (the next connection tries again).
fn make_ship_on_first_connection(
    s: &Arc<Shared>,
    player_id: u64,
    ship: EntityId,
    world: &[sidereal_core::SectorId],
) {
    let Some(state) = crate::authority::spawn_point(world, player_id) else {
        return;
    };
    if !s.pending_ships.lock().expect("pending lock").insert(ship) {
        return;
    }
    let snapshot = EntitySnapshot {
        id: ship,
        kind: EntityKind::Ship,
        state,
        ttl_ticks: None,
        player: true,
    };
    let s = s.clone();
    tokio::spawn(async move {
        let stored = match (&s.store, crate::store::EntityRow::new_entity(&snapshot)) {
            (Some(store), Some(row)) => store
                .write_checkpoint(&[row], &[])
                .await
                .map_err(|e| e.to_string()),
            (None, _) => Ok(()),
            (_, None) => Err("the spawn point lies outside the world".into()),
        };
        match stored {
            Ok(()) => {
                let mut a = s.authority.lock().expect("authority lock");
                if !a.knows_entity(ship) {
                    a.spawn_ship_as(snapshot);
                    s.flush(&mut a);
                    info!(player_id, %ship, "ship made on the player's first connection");
                }
            }
            Err(e) => {
                warn!(player_id, %ship, error = %e, "cannot store the player's new ship; it is made on the next connection")
            }
        }
        s.pending_ships.lock().expect("pending lock").remove(&ship);
    });
}
