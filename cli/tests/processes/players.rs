//! Players on the game port: a real lightyear client (the product's `sidereal-client`) logs in
//! over HTTP, connects over UDP with its token to a real `sidereal replication` process and is
//! sent what is near its ship, and nothing farther.

use std::time::{Duration, Instant};

use sidereal_client::{GameClient, login};
use sidereal_core::login::Credentials;

use super::{TempDir, start_replication_with, start_shards_and_place, wait_until};

const RADIUS: f32 = 600.0;

fn register(http: &str, name: &str) -> sidereal_core::login::LoginReply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(login(
        &reqwest::Client::new(),
        http,
        &Credentials {
            name: name.into(),
            password: "correct horse battery".into(),
        },
        true,
    ))
    .expect("registration")
}

#[test]
fn a_player_connects_over_udp_and_is_sent_its_ship_and_only_what_is_near_it() {
    let data = TempDir::new("players");
    let radius = RADIUS.to_string();
    let r = start_replication_with(400, &data.0, None, &["--interest-radius", &radius]);
    let _shards = start_shards_and_place(&r, 2);
    let reply = register(&r.http, "ada");
    let mut ada = GameClient::connect(reply.clone()).expect("a well-formed token");
    wait_until("connected and welcomed", Duration::from_secs(15), || {
        ada.update();
        ada.is_connected() && ada.received().welcome.is_some()
    });
    let welcome = ada.received().welcome.clone().unwrap();
    wait_until(
        "replication counts the player",
        Duration::from_secs(5),
        || r.control.status().players_connected == 1,
    );
    assert_eq!(
        (welcome.player_id, welcome.ship),
        (reply.player_id, reply.ship)
    );
    assert_eq!(welcome.interest_radius, RADIUS);

    // World updates arrive with the ship first, once the shard has adopted it.
    wait_until("updates with the ship", Duration::from_secs(15), || {
        ada.update();
        let r = ada.received();
        r.updates >= 20
            && r.latest
                .as_ref()
                .is_some_and(|u| u.entities.first().is_some_and(|e| e.id == reply.ship))
    });
    let update = ada.received().latest.clone().unwrap();
    let ship = update.entities[0];
    assert_eq!(ship.kind, 0, "a ship");
    let world = r.control.entities("");
    assert!(
        update.entities.len() < world.len(),
        "{} of {} entities sent: interest management sends a neighbourhood, not the world",
        update.entities.len(),
        world.len()
    );
    let dist = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    for e in &update.entities {
        assert!(
            dist(e.pos, ship.pos) <= RADIUS + 0.01,
            "entity {} at {:.1} from the ship, beyond the radius {RADIUS}",
            e.id,
            dist(e.pos, ship.pos)
        );
        assert!(
            world.contains_key(&e.id),
            "entity {} is not in the mirror",
            e.id
        );
    }
    println!(
        "ada sees {} of {} entities within {RADIUS} units of her ship",
        update.entities.len(),
        world.len()
    );
    // Everything the mirror has well inside the radius is sent (entities move a little between
    // the update and the mirror read: 40 units/s at most, for well under a second).
    let well_inside = world
        .values()
        .filter(|e| dist(e.pos, ship.pos) < RADIUS - 100.0)
        .count();
    assert!(
        update.entities.len() >= well_inside,
        "sent {} entities, the mirror has {well_inside} well inside the radius",
        update.entities.len()
    );

    // A token sealed with another key never connects.
    let mut forged = reply.clone();
    forged.token = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut bytes = b64.decode(&reply.token).unwrap();
        // Flip a bit of the sealed part: the server cannot open it.
        bytes[100] ^= 1;
        b64.encode(bytes)
    };
    let mut mallory = GameClient::connect(forged).expect("still parses");
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        mallory.update();
        ada.update();
        assert!(!mallory.is_connected(), "a forged token connected");
        std::thread::sleep(Duration::from_millis(10)); // a client's frame pace
    }
    assert!(ada.is_connected(), "ada is still connected");
    assert_eq!(
        r.control.status().players_connected,
        1,
        "mallory never counted"
    );

    // Leaving frees the player at once, not after the 10 s timeout.
    ada.disconnect();
    let left = Instant::now();
    wait_until("replication sees ada leave", Duration::from_secs(5), || {
        ada.update();
        r.control.status().players_connected == 0
    });
    assert!(left.elapsed() < Duration::from_secs(5));
}
