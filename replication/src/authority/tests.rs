use super::*;
use sidereal_core::EntityState;
use sidereal_core::codec::UpdateEncoder;
use sidereal_core::protocol::PilotCommand;

fn authority() -> Authority {
    Authority::new(AuthorityConfig {
        world: vec![SectorId::new(1, 0, 0).unwrap()],
        secret: "s3cret".into(),
        tick_hz: 30,
        shadow_margin: 50.0,
    })
}

/// A fresh challenge per link, as the shell draws them.
fn challenge(link_hint: u8) -> [u8; 32] {
    [link_hint; 32]
}

/// A new link, with its challenge queued.
fn challenged(a: &mut Authority, hint: u8) -> LinkId {
    let link = a.connect(challenge(hint));
    assert!(
        matches!(a.outbox.last(), Some((l, ReplicationMessage::Challenge { protocol: PROTOCOL_VERSION, nonce })) if *l == link && *nonce == challenge(hint)),
        "a link opens with its challenge"
    );
    link
}

fn hello(a: &mut Authority, name: &str) -> Result<LinkId, LinkError> {
    let link = challenged(a, 1);
    a.on_message(
        link,
        ShardMessage::hello("s3cret", &challenge(1), ShardId::new(name), [2; 32]),
    )
    .map(|_| link)
}

use crate::test_support::asteroid_at as snap;

/// The root's four children placed alternately on shard-0 and shard-1.
fn children_on_two_shards() -> Placement {
    let kids = SectorId::new(1, 0, 0).unwrap().children().unwrap();
    Placement {
        generation: 1,
        sectors: kids
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, ShardId::new(format!("shard-{}", i % 2))))
            .collect(),
        world: None,
    }
}

/// Two shards, the root's children split between them, one entity on each.
fn two_shards() -> (Authority, LinkId, LinkId) {
    let mut a = authority();
    let l0 = hello(&mut a, "shard-0").unwrap();
    let l1 = hello(&mut a, "shard-1").unwrap();
    a.restore_entity(snap(EntityId(1), 100.0, 100.0), ShardId::new("unplaced"));
    a.restore_entity(snap(EntityId(2), 1500.0, 100.0), ShardId::new("unplaced"));
    a.put_placement(children_on_two_shards()).unwrap();
    for id in [1, 2] {
        let r = a.mirror.get(EntityId(id)).unwrap().clone();
        let link = if r.owner.0 == "shard-0" { l0 } else { l1 };
        a.on_message(
            link,
            ShardMessage::Adopted {
                ids: vec![(EntityId(id), r.epoch)],
            },
        )
        .unwrap();
    }
    a.take_outbox();
    (a, l0, l1)
}

#[test]
fn handshakes_with_wrong_secret_version_or_name_are_rejected_with_a_reason() {
    let mut a = authority();
    let link = challenged(&mut a, 1);
    let e = a.on_message(
        link,
        ShardMessage::hello("nope", &challenge(1), ShardId::new("x"), [2; 32]),
    );
    assert_eq!(
        e,
        Err(LinkError::WrongSecret {
            shard: ShardId::new("x")
        })
    );
    let out: Vec<_> = a
        .take_outbox()
        .into_iter()
        .filter(|(_, m)| !matches!(m, ReplicationMessage::Challenge { .. }))
        .collect();
    assert!(
        matches!(&out[..], [(l, ReplicationMessage::Rejected { reason })] if *l == link && reason.contains("wrong shard secret"))
    );
    let link = challenged(&mut a, 3);
    let mut old = ShardMessage::hello("s3cret", &challenge(3), ShardId::new("x"), [2; 32]);
    if let ShardMessage::Hello { protocol, .. } = &mut old {
        *protocol = 99;
    }
    let e = a.on_message(link, old);
    assert_eq!(e, Err(LinkError::WrongVersion { got: 99 }));
    let link = challenged(&mut a, 4);
    let e = a.on_message(
        link,
        ShardMessage::hello("s3cret", &challenge(4), ShardId::new("bad name!"), [2; 32]),
    );
    assert!(matches!(e, Err(LinkError::BadName(_))));
    let link = challenged(&mut a, 5);
    assert_eq!(
        a.on_message(link, ShardMessage::Updates(vec![])),
        Err(LinkError::NoHello)
    );
    assert_eq!(a.counters.links_rejected_total(), 4);
    assert_eq!(a.counters.links_rejected["wrong_secret"], 1);
    assert_eq!(a.counters.links_rejected["no_hello"], 1);
    assert!(a.live_shards().is_empty());
}

#[test]
fn a_recorded_hello_replayed_on_another_connection_is_refused() {
    let mut a = authority();
    let first = challenged(&mut a, 1);
    let recorded = ShardMessage::hello("s3cret", &challenge(1), ShardId::new("shard-0"), [2; 32]);
    a.on_message(first, recorded.clone()).unwrap();
    a.disconnect(first);
    // The attacker replays every byte the shard sent; this connection was challenged anew.
    let second = challenged(&mut a, 9);
    assert_eq!(
        a.on_message(second, recorded),
        Err(LinkError::WrongSecret {
            shard: ShardId::new("shard-0")
        })
    );
    assert!(a.live_shards().is_empty());
}

#[test]
fn the_welcome_proves_replication_knows_the_secret_for_this_handshake() {
    let mut a = authority();
    let link = challenged(&mut a, 1);
    a.on_message(
        link,
        ShardMessage::hello("s3cret", &challenge(1), ShardId::new("shard-0"), [2; 32]),
    )
    .unwrap();
    let out = a.take_outbox();
    let Some((_, ReplicationMessage::Welcome { proof, .. })) = out.get(1) else {
        panic!("a Welcome first: {out:?}")
    };
    use sidereal_core::handshake::SHARD_LINK;
    assert!(SHARD_LINK.verify_welcome("s3cret", &challenge(1), &[2; 32], "shard-0", proof));
    assert!(!SHARD_LINK.verify_welcome(
        "another secret",
        &challenge(1),
        &[2; 32],
        "shard-0",
        proof
    ));
}

/// Positions travel rounded to 1/64 unit and bounds are half-open: 1999.999 arrives as 2000.0,
/// outside a world that ends at 2000. The mirror keeps it inside, so a restart does not archive
/// it and a rehome still finds its leaf.
#[test]
fn an_entity_a_hair_inside_the_worlds_top_right_corner_stays_inside_in_the_mirror() {
    let (mut a, l0, l1) = two_shards();
    let r = a.mirror.get(EntityId(2)).unwrap().clone();
    let link = if r.owner.0 == "shard-0" { l0 } else { l1 };
    let edge = EntityState {
        pos: [1999.999, 1999.999],
        vel: [3.0, 3.0],
        ..Default::default()
    };
    let bytes = UpdateEncoder::default()
        .encode(1, &mut [(EntityId(2), r.epoch, edge)])
        .unwrap();
    let (_, wire) = sidereal_core::codec::UpdateDecoder::default()
        .decode(&bytes)
        .unwrap();
    let inside = |p: sidereal_core::Point| a.world().iter().any(|root| root.contains(p));
    assert!(
        !inside(wire[0].state.to_state().point()),
        "the wire rounds it onto the edge"
    );
    a.on_message(link, ShardMessage::Updates(bytes)).unwrap();
    let stored = a.mirror.get(EntityId(2)).unwrap().snapshot.state;
    assert!(
        a.world().iter().any(|root| root.contains(stored.point())),
        "{:?}",
        stored.pos
    );
    assert!(stored.pos[0] > 1999.9 && stored.pos[1] > 1999.9);
    assert!(
        a.leaf_of(&a.mirror.get(EntityId(2)).unwrap().snapshot)
            .is_some()
    );
}

#[test]
fn names_that_mean_no_shard_are_refused() {
    let mut a = authority();
    for name in ["unplaced", "archived"] {
        assert_eq!(
            hello(&mut a, name),
            Err(LinkError::ReservedName(name.into()))
        );
    }
    assert_eq!(a.counters.links_rejected["reserved_name"], 2);
    assert!(a.live_shards().is_empty());
}

#[test]
fn a_second_connection_under_a_live_name_is_refused() {
    let mut a = authority();
    hello(&mut a, "shard-0").unwrap();
    assert_eq!(
        hello(&mut a, "shard-0"),
        Err(LinkError::AlreadyConnected(ShardId::new("shard-0")))
    );
    assert_eq!(a.live_shards().len(), 1);
}

#[test]
fn updates_from_a_non_owner_or_a_stale_epoch_are_refused_and_change_nothing() {
    let (mut a, l0, l1) = two_shards();
    let owner0 = a.mirror.get(EntityId(1)).unwrap().clone();
    assert_eq!(owner0.owner.0, "shard-0");
    let moved = EntityState {
        pos: [200.0, 200.0],
        ..Default::default()
    };
    // shard-1 claims entity 1.
    let mut enc = UpdateEncoder::default();
    let bytes = enc
        .encode(1, &mut [(EntityId(1), owner0.epoch, moved)])
        .unwrap();
    a.on_message(l1, ShardMessage::Updates(bytes)).unwrap();
    // shard-0 with a stale epoch.
    let mut enc = UpdateEncoder::default();
    let bytes = enc
        .encode(1, &mut [(EntityId(1), owner0.epoch - 1, moved)])
        .unwrap();
    a.on_message(l0, ShardMessage::Updates(bytes)).unwrap();
    assert_eq!(a.counters.updates_refused, 2);
    assert_eq!(
        a.mirror.get(EntityId(1)).unwrap(),
        &owner0,
        "refused updates change nothing"
    );
    // The right owner at the right epoch is accepted.
    let mut enc = UpdateEncoder::default();
    let bytes = enc
        .encode(1, &mut [(EntityId(1), owner0.epoch, moved)])
        .unwrap();
    a.on_message(l0, ShardMessage::Updates(bytes)).unwrap();
    assert_eq!(
        a.mirror.get(EntityId(1)).unwrap().snapshot.state.pos,
        [200.0, 200.0]
    );
    // Stale despawn and handover are refused too.
    a.on_message(
        l0,
        ShardMessage::Despawned {
            id: EntityId(1),
            epoch: 0,
        },
    )
    .unwrap();
    a.on_message(
        l1,
        ShardMessage::HandoverOut {
            snapshot: snap(EntityId(1), 0.0, 0.0),
            epoch: owner0.epoch,
        },
    )
    .unwrap();
    assert!(a.mirror.contains(EntityId(1)));
    assert_eq!(a.mirror.get(EntityId(1)).unwrap().owner.0, "shard-0");
}

#[test]
fn malformed_update_batches_close_the_link() {
    let (mut a, l0, _) = two_shards();
    assert!(matches!(
        a.on_message(l0, ShardMessage::Updates(vec![0xff; 3])),
        Err(LinkError::Codec(_))
    ));
}

#[test]
fn spawns_in_sectors_the_shard_does_not_own_are_refused() {
    let (mut a, l0, _) = two_shards();
    let inc = a.links[&l0].incarnation;
    // (1500, 100) lies in the child placed on shard-1.
    a.on_message(
        l0,
        ShardMessage::Spawned {
            snapshot: snap(EntityId::minted(inc, 1), 1500.0, 100.0),
        },
    )
    .unwrap();
    // Ids minted under another incarnation are refused as well.
    a.on_message(
        l0,
        ShardMessage::Spawned {
            snapshot: snap(EntityId::minted(inc + 7, 1), 100.0, 100.0),
        },
    )
    .unwrap();
    let nan = EntitySnapshot {
        state: EntityState {
            pos: [f32::NAN, 1.0],
            ..Default::default()
        },
        ..snap(EntityId::minted(inc, 2), 0.0, 0.0)
    };
    a.on_message(l0, ShardMessage::Spawned { snapshot: nan })
        .unwrap();
    assert_eq!(a.mirror.len(), 2);
    assert_eq!(a.counters.refusals, 3);
    a.on_message(
        l0,
        ShardMessage::Spawned {
            snapshot: snap(EntityId::minted(inc, 3), 100.0, 100.0),
        },
    )
    .unwrap();
    assert_eq!(a.mirror.len(), 3);
}

/// A shard with a stale view of its sectors fires into a sector it lost: the spawn is refused
/// and the shard told to drop it; until it has, each update of the ghost is refused and answered
/// the same way; its `Despawned` clears the ghost's baseline, and is not a refusal.
#[test]
fn a_refused_spawn_is_answered_so_the_shard_drops_its_ghost() {
    let (mut a, l0, _) = two_shards();
    let ghost = EntityId::minted(a.links[&l0].incarnation, 1);
    let disowned = |a: &mut Authority| -> Vec<EntityId> {
        a.take_outbox()
            .into_iter()
            .filter(|(l, _)| *l == l0)
            .flat_map(|(_, m)| match m {
                ReplicationMessage::Disown { ids } => ids,
                _ => vec![],
            })
            .collect()
    };
    // (1500, 100) lies in the child placed on shard-1.
    a.on_message(
        l0,
        ShardMessage::Spawned {
            snapshot: snap(ghost, 1500.0, 100.0),
        },
    )
    .unwrap();
    assert_eq!(disowned(&mut a), vec![ghost]);
    let bytes = UpdateEncoder::default()
        .encode(1, &mut [(ghost, 1, snap(ghost, 1501.0, 100.0).state)])
        .unwrap();
    a.on_message(l0, ShardMessage::Updates(bytes)).unwrap();
    assert_eq!(disowned(&mut a), vec![ghost], "an update of it too");
    assert!(a.links[&l0].decoder.knows(ghost));
    let refusals = a.counters.refusals;
    a.on_message(
        l0,
        ShardMessage::Despawned {
            id: ghost,
            epoch: 1,
        },
    )
    .unwrap();
    assert!(!a.links[&l0].decoder.knows(ghost), "its baseline is gone");
    assert_eq!(
        a.counters.refusals, refusals,
        "dropping a ghost is no refusal"
    );
    assert!(!a.mirror.contains(ghost));
}

#[test]
fn refusal_logs_are_sampled_while_every_refusal_is_counted() {
    let logged = (1..=5000).filter(|n| super::should_log(*n)).count();
    assert_eq!(logged, 20 + 5);
}

#[test]
fn crossing_hands_over_to_the_sector_owner_and_forgets_after_adoption() {
    let (mut a, l0, l1) = two_shards();
    let epoch = a.mirror.get(EntityId(1)).unwrap().epoch;
    a.on_message(
        l0,
        ShardMessage::HandoverOut {
            snapshot: snap(EntityId(1), 1001.0, 100.0),
            epoch,
        },
    )
    .unwrap();
    let r = a.mirror.get(EntityId(1)).unwrap();
    assert_eq!(
        (r.owner.0.as_str(), r.epoch, r.in_transit),
        ("shard-1", epoch + 1, true)
    );
    let out = a.take_outbox();
    assert!(out.iter().any(|(l, m)| *l == l1
        && matches!(m, ReplicationMessage::Adopt { entities } if entities[0].epoch == epoch + 1)));
    a.on_message(
        l1,
        ShardMessage::Adopted {
            ids: vec![(EntityId(1), epoch + 1)],
        },
    )
    .unwrap();
    assert!(!a.mirror.get(EntityId(1)).unwrap().in_transit);
    let out = a.take_outbox();
    assert!(out.iter().any(|(l, m)| *l == l0
        && matches!(m, ReplicationMessage::Forget { ids } if ids == &vec![EntityId(1)])));
}

#[test]
fn an_update_at_the_current_epoch_completes_an_adoption_whose_ack_went_missing() {
    let (mut a, l0, l1) = two_shards();
    let epoch = a.mirror.get(EntityId(1)).unwrap().epoch;
    a.on_message(
        l0,
        ShardMessage::HandoverOut {
            snapshot: snap(EntityId(1), 1001.0, 100.0),
            epoch,
        },
    )
    .unwrap();
    a.take_outbox();
    assert!(a.mirror.get(EntityId(1)).unwrap().in_transit);
    // shard-1 adopted it (its `Adopted` is never seen) and simulates it at the new epoch.
    let moved = EntityState {
        pos: [1010.0, 100.0],
        ..Default::default()
    };
    let mut enc = UpdateEncoder::default();
    let bytes = enc
        .encode(1, &mut [(EntityId(1), epoch + 1, moved)])
        .unwrap();
    a.on_message(l1, ShardMessage::Updates(bytes)).unwrap();
    let r = a.mirror.get(EntityId(1)).unwrap();
    assert!(!r.in_transit, "the update completed the adoption");
    assert_eq!(r.snapshot.state.pos, [1010.0, 100.0]);
    let out = a.take_outbox();
    assert!(out.iter().any(|(l, m)| *l == l0
        && matches!(m, ReplicationMessage::Forget { ids } if ids == &vec![EntityId(1)])));
    // The late `Adopted` is harmless: same epoch, already settled, nothing sent again.
    a.on_message(
        l1,
        ShardMessage::Adopted {
            ids: vec![(EntityId(1), epoch + 1)],
        },
    )
    .unwrap();
    assert!(!a.mirror.get(EntityId(1)).unwrap().in_transit);
    assert!(a.take_outbox().is_empty());
}

#[test]
fn an_entity_pushed_out_of_the_world_comes_back_inside_instead_of_bouncing() {
    let (mut a, l0, _) = two_shards();
    let epoch = a.mirror.get(EntityId(1)).unwrap().epoch;
    let mut out = snap(EntityId(1), -3.0, 100.0);
    out.state.vel = [-5.0, 1.0];
    a.on_message(
        l0,
        ShardMessage::HandoverOut {
            snapshot: out,
            epoch,
        },
    )
    .unwrap();
    let r = a.mirror.get(EntityId(1)).unwrap();
    let s = r.snapshot.state;
    assert!(s.pos[0] > 0.0 && s.pos[0] < 1.0, "{:?}", s.pos);
    assert_eq!(s.vel, [5.0, 1.0], "moving inwards");
    assert_eq!(r.owner.0, "shard-0", "the owner of the leaf it is back in");
}

#[test]
fn placement_generations_are_idempotent_and_monotonic() {
    let (mut a, _, _) = two_shards();
    let p = a.placement().clone();
    assert_eq!(
        a.put_placement(p.clone()),
        Ok(false),
        "same generation and contents is a no-op"
    );
    let mut other = p.clone();
    let first = *other.sectors.keys().next().unwrap();
    other.sectors.insert(first, ShardId::new("shard-1"));
    assert_eq!(
        a.put_placement(other.clone()),
        Err(PutPlacementError::Conflict(1))
    );
    let mut old = p.clone();
    old.generation = 0;
    assert!(matches!(
        a.put_placement(old),
        Err(PutPlacementError::Stale { .. })
    ));
    other.generation = 2;
    other.sectors.insert(first, ShardId::new("ghost"));
    assert!(matches!(
        a.put_placement(other),
        Err(PutPlacementError::Invalid(
            PlacementError::UnknownShard { .. }
        ))
    ));
    assert_eq!(a.placement(), &p);
}

#[test]
fn a_generation_far_ahead_is_refused_so_placement_can_never_get_stuck() {
    let (mut a, _, _) = two_shards();
    let p = a.placement().clone();
    for given in [u64::MAX, p.generation + MAX_GENERATION_JUMP + 1] {
        let mut far = p.clone();
        far.generation = given;
        assert_eq!(
            a.put_placement(far),
            Err(PutPlacementError::Jump {
                given,
                current: p.generation
            })
        );
    }
    assert_eq!(a.placement(), &p);
    // The next generation, and a jump within the bound, still go through.
    let mut next = p.clone();
    next.generation = p.generation + MAX_GENERATION_JUMP;
    assert_eq!(a.put_placement(next), Ok(true));
}

#[test]
fn roots_come_and_go_with_the_placement_and_their_entities_are_archived_then_restored() {
    let (mut a, l0, _l1) = two_shards();
    let west = SectorId::new(1, 0, 0).unwrap();
    let east = SectorId::new(1, 1, 0).unwrap();
    let shard = |n: &str| ShardId::new(n);
    assert_eq!(a.placement().world.as_deref(), Some(&[west][..]));
    // An entity waiting where the world does not reach yet.
    a.restore_entity(snap(EntityId(3), 2500.0, 100.0), shard("unplaced"));

    // Grow the world at runtime: a second root, placed on shard-1, whose entity is adopted.
    let mut grown = a.placement().clone();
    grown.generation = 2;
    grown.world = Some(vec![west, east]);
    grown.sectors.insert(east, shard("shard-1"));
    assert_eq!(a.put_placement(grown), Ok(true));
    assert_eq!(a.world(), [west, east]);
    assert_eq!(a.mirror.get(EntityId(3)).unwrap().owner, shard("shard-1"));
    let told_world = a.take_outbox().into_iter().any(
        |(_, m)| matches!(m, ReplicationMessage::Assign { world, .. } if world == [west, east]),
    );
    assert!(told_world, "live shards learn the new world");
    let before: Vec<_> = [1, 2]
        .map(|i| a.mirror.get(EntityId(i)).unwrap().clone())
        .into();

    // Remove the west root: its entities leave the simulation for the archive, unchanged.
    let shrunk = Placement {
        generation: 3,
        sectors: [(east, shard("shard-1"))].into(),
        world: Some(vec![east]),
    };
    assert_eq!(a.put_placement(shrunk), Ok(true));
    assert_eq!(a.mirror.len(), 1);
    assert_eq!(a.mirror.archived_len(), 2);
    assert!(a.mirror.is_archived(EntityId(1)) && a.mirror.is_archived(EntityId(2)));
    // The shard that owned one lets it go; that is not a refusal.
    let refusals = a.counters.refusals;
    a.on_message(
        l0,
        ShardMessage::Released {
            generation: 3,
            entities: vec![(before[0].snapshot, before[0].epoch)],
        },
    )
    .unwrap();
    // An update racing the removal (sent before the shard saw the placement) is dropped:
    // the archive keeps the state it was archived with.
    let mut enc = UpdateEncoder::default();
    let moved = EntityState {
        pos: [300.0, 300.0],
        ..Default::default()
    };
    let bytes = enc
        .encode(9, &mut [(EntityId(1), before[0].epoch, moved)])
        .unwrap();
    a.on_message(l0, ShardMessage::Updates(bytes)).unwrap();
    assert_eq!(a.counters.refusals, refusals);
    assert!(a.mirror.get(EntityId(1)).is_none(), "out of the simulation");

    // Re-create the root: the same entities come back, as they were, to its new owner.
    let back = Placement {
        generation: 4,
        sectors: [(west, shard("shard-0")), (east, shard("shard-1"))].into(),
        world: Some(vec![west, east]),
    };
    assert_eq!(a.put_placement(back), Ok(true));
    assert_eq!(a.mirror.archived_len(), 0);
    for old in &before {
        let now = a.mirror.get(old.snapshot.id).unwrap();
        assert_eq!(now.snapshot, old.snapshot, "restored exactly");
        assert_eq!(now.owner, shard("shard-0"));
        assert!(now.epoch > old.epoch, "adopted at a new epoch");
    }
    assert_eq!((a.counters.archived, a.counters.restored), (2, 2));
}

#[test]
fn a_world_of_overlapping_roots_is_refused_and_one_of_no_roots_archives_everything() {
    let (mut a, _, _) = two_shards();
    let p = a.placement().clone();
    let west = SectorId::new(1, 0, 0).unwrap();
    let inner = SectorId::new(0, 1, 1).unwrap();
    let mut bad = p.clone();
    bad.generation = 2;
    bad.world = Some(vec![west, inner]);
    assert_eq!(
        a.put_placement(bad),
        Err(PutPlacementError::Invalid(PlacementError::RootsOverlap(
            west, inner
        )))
    );
    assert_eq!(a.placement(), &p);
    assert_eq!(a.world(), [west]);
    // The last root deleted: nothing is simulated, nothing is lost.
    let empty = Placement {
        generation: 2,
        sectors: Default::default(),
        world: Some(vec![]),
    };
    assert_eq!(a.put_placement(empty), Ok(true));
    assert_eq!((a.mirror.len(), a.mirror.archived_len()), (0, 2));
}

#[test]
fn a_pilots_command_reaches_the_ships_owner_and_follows_the_ship_through_a_handover() {
    let (mut a, l0, l1) = two_shards();
    let ship = EntityId(1);
    let owner = a.mirror.get(ship).unwrap().owner.clone();
    let (from, to) = if owner.0 == "shard-0" {
        (l0, l1)
    } else {
        (l1, l0)
    };
    let command = PilotCommand {
        thrust: 1.0,
        turn: -0.5,
        fire: true,
    };
    assert!(!a.pilot(7, command), "no such player yet");
    a.player_joined(7, ship);
    assert!(a.pilot(7, command));
    let control = ShipControl { ship, command };
    let out = a.take_outbox();
    assert!(
        matches!(&out[..], [(l, ReplicationMessage::Controls { controls })] if *l == from && controls == &vec![control]),
        "{out:?}"
    );
    // The ship flies into the other shard's leaf: the new owner gets it, then its command.
    let epoch = a.mirror.get(ship).unwrap().epoch;
    let mut moved = a.mirror.get(ship).unwrap().snapshot;
    moved.state.pos = [1500.0, 120.0];
    a.on_message(
        from,
        ShardMessage::HandoverOut {
            snapshot: moved,
            epoch,
        },
    )
    .unwrap();
    let out = a.take_outbox();
    assert!(
        matches!(&out[..], [
            (l1_, ReplicationMessage::Adopt { entities }),
            (l2_, ReplicationMessage::Controls { controls }),
        ] if *l1_ == to && *l2_ == to && entities[0].snapshot.id == ship && controls == &vec![control]),
        "{out:?}"
    );
    // The player leaves: its ship is told to stop obeying.
    a.player_left(7);
    let out = a.take_outbox();
    assert!(
        matches!(&out[..], [(l, ReplicationMessage::Controls { controls })]
            if *l == to && controls[0].command == PilotCommand::default()),
        "{out:?}"
    );
    assert!(!a.pilot(7, command));
}

fn publishing_hello(a: &mut Authority, name: &str, hint: u8) -> LinkId {
    let link = challenged(a, hint);
    a.on_message(
        link,
        ShardMessage::hello("s3cret", &challenge(hint), ShardId::new(name), [2; 32])
            .publishing(Some(format!("10.0.0.{hint}:7704"))),
    )
    .unwrap();
    link
}

#[test]
fn shards_that_all_publish_are_told_their_neighbours_and_get_no_shadows() {
    let mut a = authority();
    let l0 = publishing_hello(&mut a, "shard-0", 1);
    let l1 = publishing_hello(&mut a, "shard-1", 2);
    a.put_placement(children_on_two_shards()).unwrap();
    a.restore_entity(snap(EntityId(1), 100.0, 100.0), ShardId::new("shard-1"));
    a.take_outbox();
    assert!(a.shards_shadow_themselves());
    a.set_report_every(15);
    assert_eq!(a.report_every(), 15);
    a.send_shadows(1);
    let out = a.take_outbox();
    assert!(
        !out.iter()
            .any(|(_, m)| matches!(m, ReplicationMessage::Shadows { .. })),
        "no shadows computed: {out:?}"
    );
    for (link, me, other, addr) in [
        (l0, "shard-0", "shard-1", "10.0.0.2:7704"),
        (l1, "shard-1", "shard-0", "10.0.0.1:7704"),
    ] {
        let told = out
            .iter()
            .find_map(|(l, m)| match m {
                ReplicationMessage::Neighbours {
                    sectors,
                    streams,
                    report_every: 15,
                    ..
                } if *l == link => Some((sectors.clone(), streams.clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{me} is told its neighbours"));
        assert!(!told.0.is_empty());
        assert!(told.0.iter().all(|(_, s)| s.0 == other), "{told:?}");
        assert_eq!(told.1, vec![(ShardId::new(other), addr.to_string())]);
    }
    // Unchanged, not told again until the half-second repeat (15 ticks at 30 Hz).
    a.send_shadows(2);
    assert!(a.take_outbox().is_empty());
    a.send_shadows(15);
    assert_eq!(a.take_outbox().len(), 2, "repeated twice a second");

    // A shard that does not publish: replication computes everyone's shadows again.
    hello(&mut a, "shard-2").unwrap();
    a.take_outbox();
    assert!(!a.shards_shadow_themselves());
    assert_eq!(
        a.report_every(),
        1,
        "shadows from the mirror need every tick"
    );
    a.send_shadows(16);
    let out = a.take_outbox();
    assert_eq!(
        out.iter()
            .filter(|(_, m)| matches!(m, ReplicationMessage::Shadows { .. }))
            .count(),
        3
    );
    assert!(
        !out.iter()
            .any(|(_, m)| matches!(m, ReplicationMessage::Neighbours { .. }))
    );
}

#[test]
fn neighbours_are_the_other_owners_leaves_within_the_margin() {
    let root = SectorId::new(2, 0, 0).unwrap();
    // The root's grandchildren: a 4x4 grid, the west half a's.
    let grand: Vec<SectorId> = root
        .children()
        .unwrap()
        .iter()
        .flat_map(|c| c.children().unwrap())
        .collect();
    let mid = (root.bounds().min.x + root.bounds().max.x) / 2.0;
    let (a, b) = (ShardId::new("a"), ShardId::new("b"));
    let mut p = Placement::default();
    for g in &grand {
        let owner = if g.bounds().max.x <= mid { &a } else { &b };
        p.sectors.insert(*g, owner.clone());
    }
    let n = neighbours_of(&p, &a, 50.0);
    // The column of b's leaves along the border (4 of them), nothing further east.
    assert_eq!(n.len(), 4, "{n:?}");
    assert!(
        n.iter()
            .all(|(s, owner)| owner == &b && s.bounds().min.x == mid)
    );
    // A margin wider than a leaf reaches the next column too.
    let edge = grand[0].bounds().edge();
    assert_eq!(neighbours_of(&p, &a, edge + 1.0).len(), 8);
}

#[test]
fn a_checkpoint_round_asks_every_shard_and_is_in_when_all_answered() {
    let mut a = authority();
    let l0 = publishing_hello(&mut a, "shard-0", 1);
    let l1 = publishing_hello(&mut a, "shard-1", 2);
    a.take_outbox();
    // Shards report every tick by default: the mirror is current, nothing to ask.
    assert_eq!(a.request_reports(), None);
    a.set_report_every(0);
    assert_eq!(a.report_every(), 0);
    let round = a.request_reports().expect("shards report only when asked");
    let asked: Vec<LinkId> = a
        .take_outbox()
        .into_iter()
        .filter_map(|(l, m)| {
            matches!(m, ReplicationMessage::Report { round: r } if r == round).then_some(l)
        })
        .collect();
    assert_eq!(asked, vec![l0, l1]);
    assert!(!a.reports_in(round));
    a.on_message(l0, ShardMessage::Reported { round }).unwrap();
    assert!(!a.reports_in(round), "shard-1 has not answered");
    a.on_message(l1, ShardMessage::Reported { round }).unwrap();
    assert!(a.reports_in(round));

    // The next round is a new one; a shard that dies is not waited for.
    let next = a.request_reports().unwrap();
    assert!(next > round && !a.reports_in(next));
    a.on_message(l0, ShardMessage::Reported { round: next })
        .unwrap();
    a.disconnect(l1);
    assert!(a.reports_in(next));

    // A shard without streams: the authority computes shadows from the mirror, which needs
    // every tick again, and asks nothing.
    hello(&mut a, "shard-2").unwrap();
    assert_eq!(a.report_every(), 1);
    assert_eq!(a.request_reports(), None);
}

/// shard-0 links again after a cut (the same authority), resuming.
fn resume_link(a: &mut Authority, name: &str, hint: u8) -> LinkId {
    let link = challenged(a, hint);
    a.on_message(
        link,
        ShardMessage::hello("s3cret", &challenge(hint), ShardId::new(name), [2; 32]).resuming(true),
    )
    .unwrap();
    link
}

fn resume(
    a: &mut Authority,
    link: LinkId,
    owned: Vec<(EntitySnapshot, Epoch)>,
    handed_over: Vec<(EntitySnapshot, Epoch)>,
) {
    a.on_message(
        link,
        ShardMessage::Resume {
            incarnation: 0,
            owned,
            handed_over,
            last: true,
        },
    )
    .unwrap();
}

fn sent_to(out: &[(LinkId, ReplicationMessage)], link: LinkId) -> Vec<&ReplicationMessage> {
    out.iter()
        .filter(|(l, _)| *l == link)
        .map(|(_, m)| m)
        .collect()
}

#[test]
fn a_resuming_shard_is_not_handed_the_mirror_s_copies_and_its_own_state_wins() {
    let (mut a, l0, _l1) = two_shards();
    let e1 = a.mirror.get(EntityId(1)).unwrap().clone();
    a.disconnect(l0);
    let l0 = resume_link(&mut a, "shard-0", 9);
    let out = a.take_outbox();
    assert!(
        !sent_to(&out, l0)
            .iter()
            .any(|m| matches!(m, ReplicationMessage::Adopt { .. })),
        "nothing adopted before the resume"
    );
    // It moved on while unlinked, and minted a projectile replication never heard of.
    let moved = snap(EntityId(1), 130.0, 100.0);
    let minted = snap(EntityId::minted(7, 1), 140.0, 100.0);
    resume(&mut a, l0, vec![(moved, e1.epoch), (minted, 1)], vec![]);
    let r = a.mirror.get(EntityId(1)).unwrap();
    assert_eq!(
        (r.snapshot.state.pos, r.epoch, &r.owner),
        (moved.state.pos, e1.epoch, &e1.owner)
    );
    assert!(
        a.mirror
            .get(minted.id)
            .is_some_and(|r| r.owner.0 == "shard-0")
    );
    assert_eq!(a.counters.resumes, 1);
    assert_eq!(a.counters.resumed_entities, 2);
}

#[test]
fn a_resumed_copy_older_than_the_mirror_s_is_disowned_and_an_unclaimed_one_has_ended() {
    let (mut a, l0, l1) = two_shards();
    let e1 = a.mirror.get(EntityId(1)).unwrap().clone();
    // shard-0 is cut off; its leaves (and entity 1) go to shard-1 at a newer epoch.
    a.disconnect(l0);
    let mut p = a.placement().clone();
    for s in p.sectors.values_mut() {
        *s = ShardId::new("shard-1");
    }
    p.generation += 1;
    a.put_placement(p).unwrap();
    let now = a.mirror.get(EntityId(1)).unwrap().clone();
    assert_eq!((now.owner.0.as_str(), now.epoch), ("shard-1", e1.epoch + 1));
    a.on_message(
        l1,
        ShardMessage::Adopted {
            ids: vec![(EntityId(1), now.epoch)],
        },
    )
    .unwrap();
    // A third entity shard-0 owned and despawned while cut off (its Despawned was lost).
    a.restore_entity(snap(EntityId(3), 900.0, 900.0), ShardId::new("shard-0"));
    a.take_outbox();
    let l0 = resume_link(&mut a, "shard-0", 9);
    resume(
        &mut a,
        l0,
        vec![(snap(EntityId(1), 120.0, 100.0), e1.epoch)],
        vec![],
    );
    let out = a.take_outbox();
    assert!(
        sent_to(&out, l0)
            .iter()
            .any(|m| matches!(m, ReplicationMessage::Disown { ids } if ids == &vec![EntityId(1)])),
        "its stale copy goes"
    );
    assert_eq!(
        a.mirror.get(EntityId(1)).unwrap().owner.0,
        "shard-1",
        "the newer copy stays"
    );
    assert!(
        a.mirror.get(EntityId(3)).is_none(),
        "what it no longer holds has ended"
    );
}

#[test]
fn an_unconfirmed_handover_is_handed_on_again_and_one_adopted_since_is_forgotten() {
    let (mut a, l0, l1) = two_shards();
    let e1 = a.mirror.get(EntityId(1)).unwrap().clone();
    let e2 = a.mirror.get(EntityId(2)).unwrap().clone();
    a.disconnect(l0);
    a.take_outbox();
    let l0 = resume_link(&mut a, "shard-0", 9);
    // Entity 1 crossed into shard-1's leaf while unlinked; entity 2 is shard-1's already at a
    // newer epoch than the copy shard-0 still keeps of an old handover.
    let crossed = snap(EntityId(1), 1100.0, 100.0);
    resume(
        &mut a,
        l0,
        vec![],
        vec![
            (crossed, e1.epoch),
            (snap(EntityId(2), 1400.0, 100.0), e2.epoch - 1),
        ],
    );
    let out = a.take_outbox();
    let r = a.mirror.get(EntityId(1)).unwrap();
    assert_eq!(
        (r.owner.0.as_str(), r.epoch, r.in_transit),
        ("shard-1", e1.epoch + 1, true)
    );
    assert!(
        sent_to(&out, l1)
            .iter()
            .any(|m| matches!(m, ReplicationMessage::Adopt { entities } if entities[0].snapshot.id == EntityId(1))),
        "handed on to the leaf's owner"
    );
    assert!(
        sent_to(&out, l0)
            .iter()
            .any(|m| matches!(m, ReplicationMessage::Forget { ids } if ids == &vec![EntityId(2)])),
        "adopted elsewhere since: forgotten"
    );
    a.on_message(
        l1,
        ShardMessage::Adopted {
            ids: vec![(EntityId(1), e1.epoch + 1)],
        },
    )
    .unwrap();
    assert!(
        sent_to(&a.take_outbox(), l0)
            .iter()
            .any(|m| matches!(m, ReplicationMessage::Forget { ids } if ids == &vec![EntityId(1)])),
        "and forgotten once adopted"
    );
}

#[test]
fn a_takeover_refuses_placements_until_every_shard_is_back_and_drops_what_none_claimed() {
    let mut a = authority();
    a.load_placement(children_on_two_shards());
    a.load_entity(snap(EntityId(1), 100.0, 100.0), 4, 9);
    a.load_entity(snap(EntityId(2), 1500.0, 100.0), 2, 9);
    a.load_entity(snap(EntityId(3), 120.0, 100.0), 1, 9);
    assert!(a.begin_takeover());
    let mut next = a.placement().clone();
    next.generation += 1;
    assert!(matches!(
        a.put_placement(next.clone()),
        Err(PutPlacementError::TakingOver { waiting }) if waiting.len() == 2
    ));
    let l0 = resume_link(&mut a, "shard-0", 3);
    resume(
        &mut a,
        l0,
        vec![(snap(EntityId(1), 105.0, 100.0), 4)],
        vec![],
    );
    assert_eq!(a.awaiting_shards(), Some(vec![ShardId::new("shard-1")]));
    assert!(
        a.mirror.get(EntityId(3)).is_some(),
        "kept while a shard is away"
    );
    // shard-1 was restarted meanwhile: a fresh Hello adopts its leaf's stored entities.
    let l1 = hello(&mut a, "shard-1").unwrap();
    let out = a.take_outbox();
    assert!(sent_to(&out, l1).iter().any(
        |m| matches!(m, ReplicationMessage::Adopt { entities } if entities[0].snapshot.id == EntityId(2) && entities[0].epoch == 3)
    ));
    let outcome = a.take_takeover_outcome().expect("every shard is back");
    assert_eq!((outcome.all_back, outcome.dropped), (true, 1));
    assert!(
        a.mirror.get(EntityId(3)).is_none(),
        "shard-0 came back without it"
    );
    assert_eq!(a.awaiting_shards(), None);
    assert!(a.put_placement(next).is_ok());
}

/// The race the process test caught: shard-0 still offers a handover that shard-1 had already
/// adopted from the last leader (its `Adopted` never arrived). shard-1 is linked but its resume
/// has not been read yet, so no `Adopt` may go to it (it would replace the live copy with the
/// old one); its resume then claims the entity, and shard-0 is told to forget its copy.
#[test]
fn a_handover_offered_again_is_not_pushed_onto_a_shard_still_resuming() {
    let (mut a, l0, l1) = two_shards();
    let e1 = a.mirror.get(EntityId(1)).unwrap().clone();
    a.disconnect(l0);
    a.disconnect(l1);
    a.take_outbox();
    let l0 = resume_link(&mut a, "shard-0", 9);
    let l1 = resume_link(&mut a, "shard-1", 10);
    a.take_outbox();
    let left = snap(EntityId(1), 1100.0, 100.0);
    resume(&mut a, l0, vec![], vec![(left, e1.epoch)]);
    let out = a.take_outbox();
    assert!(
        !sent_to(&out, l1)
            .iter()
            .any(|m| matches!(m, ReplicationMessage::Adopt { .. })),
        "nothing pushed onto a shard whose resume is not in"
    );
    let live = snap(EntityId(1), 1180.0, 100.0);
    resume(&mut a, l1, vec![(live, e1.epoch + 1)], vec![]);
    let r = a.mirror.get(EntityId(1)).unwrap();
    assert_eq!(
        (
            r.owner.0.as_str(),
            r.epoch,
            r.snapshot.state.pos,
            r.in_transit
        ),
        ("shard-1", e1.epoch + 1, live.state.pos, false)
    );
    let out = a.take_outbox();
    assert!(
        sent_to(&out, l0)
            .iter()
            .any(|m| matches!(m, ReplicationMessage::Forget { ids } if ids == &vec![EntityId(1)])),
        "shard-0 drops its copy"
    );
    assert!(
        !sent_to(&out, l1)
            .iter()
            .any(|m| matches!(m, ReplicationMessage::Adopt { .. })),
        "and shard-1 keeps its own"
    );
}

/// Bad input in a resume: a copy at an epoch no handover could have reached is refused and
/// disowned; a non-finite state is refused but the entity is kept, owned by the shard, at the
/// mirror's last good state (as for an update); both count as refusals, and the good copies
/// in the same message are kept.
#[test]
fn a_resume_with_a_nan_state_or_an_absurd_epoch_is_refused_entity_by_entity() {
    let (mut a, l0, _l1) = two_shards();
    let e1 = a.mirror.get(EntityId(1)).unwrap().clone();
    a.disconnect(l0);
    let l0 = resume_link(&mut a, "shard-0", 9);
    a.take_outbox();
    let mut nan = snap(EntityId(1), 110.0, 100.0);
    nan.state.pos[0] = f32::NAN;
    let greedy = snap(EntityId::minted(7, 1), 120.0, 100.0);
    let fine = snap(EntityId::minted(7, 2), 130.0, 100.0);
    let refusals = a.counters.refusals;
    resume(
        &mut a,
        l0,
        vec![(nan, e1.epoch + 1), (greedy, u64::MAX), (fine, 1)],
        vec![],
    );
    assert_eq!(a.counters.refusals, refusals + 2);
    let kept = a.mirror.get(EntityId(1)).expect("not lost");
    assert_eq!(
        (kept.snapshot.state, kept.epoch, kept.owner.0.as_str()),
        (e1.snapshot.state, e1.epoch + 1, "shard-0")
    );
    assert!(a.mirror.get(greedy.id).is_none());
    assert!(a.mirror.get(fine.id).is_some());
    let out = a.take_outbox();
    assert!(sent_to(&out, l0).iter().any(|m| matches!(
        m,
        ReplicationMessage::Disown { ids } if ids == &vec![greedy.id]
    )));
}
