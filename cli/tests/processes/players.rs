//! Players on the game port: a real lightyear client (the product's `sidereal-client`) logs in
//! over HTTP, connects over UDP with its token to a real `sidereal replication` process and is
//! sent what is near its ship, and nothing farther.

use std::time::{Duration, Instant};

use sidereal_client::{GameClient, Transport, login};
use sidereal_core::login::Credentials;

use sidereal_testkit::udp_proxy::UdpProxy;

use super::{TempDir, metric_at, start_replication_with, start_shards_and_place, wait_until};

const RADIUS: f32 = 600.0;

pub(crate) fn register(http: &str, name: &str) -> sidereal_core::login::LoginReply {
    log_in_as(http, name, true)
}

/// Registers (`register`) or logs in `name` with the test password, as the client library does.
pub(crate) fn log_in_as(
    http: &str,
    name: &str,
    register: bool,
) -> sidereal_core::login::LoginReply {
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
        register,
    ))
    .expect("login")
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

    // World updates arrive with the ship, once the shard has adopted it.
    wait_until("updates with the ship", Duration::from_secs(15), || {
        ada.update();
        let r = ada.received();
        r.updates >= 20
            && r.latest
                .as_ref()
                .is_some_and(|u| u.get(reply.ship).is_some())
    });
    let update = ada.received().latest.clone().unwrap();
    let ship = *update.get(reply.ship).unwrap();
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
    // The state on the wire is quantized and delta-encoded: a few bits per entity per update,
    // where plain f32 state would be 160 bits of values alone.
    let bytes = metric_at(&r.http, "sidereal_game_state_bytes_total ");
    let entity_updates = metric_at(&r.http, "sidereal_game_entity_updates_total ");
    let bits = bytes * 8.0 / entity_updates;
    println!("{bits:.1} bits per entity update over {entity_updates} entity updates");
    assert!(
        entity_updates > 100.0 && bits < 48.0,
        "{bits} bits per entity update"
    );
    let client_bytes = ada.received().state_bytes as f64;
    assert!(
        client_bytes > 0.0 && client_bytes <= bytes,
        "{client_bytes} of {bytes}"
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

/// What a browser build does: log in over HTTP, then play the same netcode over WebSocket
/// (plain ws:// on loopback) with the same token format, state codec and commands.
#[test]
fn a_client_plays_over_websocket_as_a_browser_would() {
    let data = TempDir::new("websocket");
    let r = start_replication_with(100, &data.0, None, &[]);
    let _shards = start_shards_and_place(&r, 1);
    let reply = register(&r.http, "ada");
    assert_eq!(reply.websocket.len(), 1, "a WebSocket address: {reply:?}");
    assert_ne!(reply.websocket, reply.servers);
    let mut ada = GameClient::connect_via(reply.clone(), Transport::WebSocket).expect("a token");
    wait_until("state over WebSocket", Duration::from_secs(15), || {
        ada.update();
        ada.received().updates >= 10 && own_ship(&ada, reply.ship).is_some()
    });
    assert_eq!(
        ada.received().welcome.as_ref().unwrap().player_id,
        reply.player_id
    );
    assert_eq!(r.control.status().players_connected, 1);
    let start = own_ship(&ada, reply.ship).unwrap().pos;
    let tick = Duration::from_secs_f64(1.0 / 30.0);
    let mut frame = 0u32;
    wait_until(
        "the ship flies and turns on command",
        Duration::from_secs(10),
        || {
            frame += 1;
            let next = Instant::now() + tick;
            let turn = if (frame / 15).is_multiple_of(2) {
                0.8
            } else {
                -0.8
            };
            ada.pilot(1.0, turn, false);
            ada.update();
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let moved = own_ship(&ada, reply.ship).is_some_and(|s| {
                ((s.pos[0] - start[0]).powi(2) + (s.pos[1] - start[1]).powi(2)).sqrt() > 50.0
            });
            moved && ada.received().turn_latency.latencies().len() >= 2
        },
    );
    println!(
        "over WebSocket: {} updates, {} bytes of state, turn latency {:?}",
        ada.received().updates,
        ada.received().state_bytes,
        ada.received().turn_latency.latencies()
    );
    ada.disconnect();
    wait_until("the player leaves", Duration::from_secs(5), || {
        r.control.status().players_connected == 0
    });
}

/// Behind a load balancer or NAT, clients reach the game port at another address than it
/// binds: tokens name the public address (`--public-game-addr`), and the gateway accepts them.
#[test]
fn a_player_reaches_the_game_port_through_its_public_address() {
    let data = TempDir::new("public-addr");
    let game = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let balancer = UdpProxy::start(game).expect("a relay");
    let (bind, public) = (game.to_string(), balancer.addr.to_string());
    let r = start_replication_with(
        50,
        &data.0,
        None,
        &["--game-udp", &bind, "--public-game-addr", &public],
    );
    let _shards = start_shards_and_place(&r, 1);
    let reply = register(&r.http, "ada");
    assert_eq!(
        reply.servers,
        vec![public.clone()],
        "the token names the public address"
    );
    let mut ada = GameClient::connect(reply.clone()).expect("a token");
    wait_until("updates through the relay", Duration::from_secs(15), || {
        ada.update();
        ada.received().updates >= 5
    });
    assert_eq!(ada.received().welcome.as_ref().unwrap().ship, reply.ship);
    assert!(balancer.to_client_bytes() >= ada.received().state_bytes);
}

/// The speed and heading of `ship` in the newest update.
fn own_ship(c: &GameClient, ship: u64) -> Option<sidereal_client::SeenEntity> {
    c.received().latest.as_ref()?.get(ship).copied()
}

#[test]
fn a_pilot_steers_its_ship_and_bad_or_flooding_commands_are_refused_or_absorbed() {
    let data = TempDir::new("pilot");
    let r = start_replication_with(0, &data.0, None, &[]);
    let _shards = start_shards_and_place(&r, 1);
    let reply = register(&r.http, "ada");
    let mut ada = GameClient::connect(reply.clone()).expect("a token");
    wait_until("the ship in view", Duration::from_secs(15), || {
        ada.update();
        own_ship(&ada, reply.ship).is_some()
    });
    let still = own_ship(&ada, reply.ship).unwrap();
    let speed = |e: &sidereal_client::SeenEntity| (e.vel[0].powi(2) + e.vel[1].powi(2)).sqrt();
    assert!(
        speed(&still) < 1.0,
        "a new ship waits for its pilot: {still:?}"
    );

    // Full thrust, once per tick, as a client does: the ship speeds up along its heading.
    let tick = Duration::from_secs_f64(1.0 / 30.0);
    wait_until("the ship at speed", Duration::from_secs(10), || {
        let next = Instant::now() + tick;
        ada.pilot(1.0, 0.0, false);
        ada.update();
        std::thread::sleep(next.saturating_duration_since(Instant::now())); // a client's tick
        own_ship(&ada, reply.ship).is_some_and(|e| speed(&e) > 60.0)
    });
    let moving = own_ship(&ada, reply.ship).unwrap();
    let heading = [moving.angle.cos(), moving.angle.sin()];
    let along = (moving.vel[0] * heading[0] + moving.vel[1] * heading[1]) / speed(&moving);
    assert!(along > 0.95, "thrust pushes along the heading: {moving:?}");

    // Turning: full rudder changes the heading.
    let before = moving.angle;
    wait_until("the ship turned", Duration::from_secs(10), || {
        let next = Instant::now() + tick;
        ada.pilot(0.0, 1.0, false);
        ada.update();
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        own_ship(&ada, reply.ship).is_some_and(|e| (e.angle - before).abs() > 0.5)
    });

    // Non-finite commands are refused and counted; out-of-range ones clamped.
    let inputs = |result: &str| {
        metric_at(
            &r.http,
            &format!("sidereal_inputs_total{{result=\"{result}\"}}"),
        )
    };
    // One command per tick, as a client sends them.
    for (thrust, turn) in [(f32::NAN, 0.0), (0.0, f32::INFINITY), (50.0, 0.0)] {
        let next = Instant::now() + tick;
        ada.pilot(thrust, turn, false);
        ada.update();
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    wait_until("refusals counted", Duration::from_secs(5), || {
        ada.update();
        inputs("non_finite") >= 2.0 && inputs("clamped") >= 1.0
    });

    // A flood: 1,000 frames in about a second, each with a new command. lightyear's input path
    // carries one command per tick, and the gateway passes on at most that: about 30 reach
    // replication, not 1,000. The ship still answers.
    let all = || {
        [
            "accepted",
            "clamped",
            "non_finite",
            "rate_limited",
            "no_ship",
        ]
        .iter()
        .map(|r| inputs(r))
        .sum::<f64>()
    };
    let sent_before = all();
    let flood = Instant::now();
    for i in 0..1000 {
        // A new value every frame, so every tick's command differs from the last one.
        let turn = i as f32 / 1000.0 - 0.5;
        ada.pilot(0.0, turn, false);
        ada.update();
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = flood.elapsed().as_secs_f64();
    wait_until("the flood counted", Duration::from_secs(5), || {
        ada.update();
        all() - sent_before >= secs * 30.0 * 0.3
    });
    let arrived = all() - sent_before;
    assert!(
        arrived <= (secs + 0.5) * 30.0 * 1.1,
        "{arrived} commands reached replication in {secs:.2} s of flooding"
    );
    assert!(ada.is_connected());
    println!("flood: 1000 commands in {secs:.2} s, {arrived} reached replication");
    println!(
        "inputs: accepted {}, clamped {}, non-finite {}, rate-limited {}",
        inputs("accepted"),
        inputs("clamped"),
        inputs("non_finite"),
        inputs("rate_limited")
    );
}
