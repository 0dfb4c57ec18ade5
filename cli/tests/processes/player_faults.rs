//! Players on a bad day: a client that drops and comes back, tokens that are expired or reused,
//! and garbage on the game port. Real clients and a real replication process on loopback.

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use sidereal_client::latency::quantile;
use sidereal_client::{GameClient, SeenEntity, login};
use sidereal_core::login::Credentials;

use super::players::register;
use super::{TempDir, start_replication_with, start_shards_and_place, wait_until};

const TICK: Duration = Duration::from_millis(33);

fn own_ship(c: &GameClient) -> Option<SeenEntity> {
    c.received().latest.as_ref()?.get(c.login.ship).copied()
}

/// One client frame: send the command, exchange packets, wait out the tick.
fn fly(c: &mut GameClient, thrust: f32, turn: f32) {
    let next = Instant::now() + TICK;
    c.pilot(thrust, turn, false);
    c.update();
    std::thread::sleep(next.saturating_duration_since(Instant::now()));
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

#[test]
fn a_dropped_player_logs_in_again_and_finds_its_ship_where_it_left_it() {
    let data = TempDir::new("reconnect");
    let r = start_replication_with(100, &data.0, None, &[]);
    let _shards = start_shards_and_place(&r, 1);
    let first = register(&r.http, "ada");
    let mut ada = GameClient::connect(first.clone()).expect("a token");
    wait_until("the ship in view", Duration::from_secs(15), || {
        ada.update();
        own_ship(&ada).is_some()
    });
    let spawn = own_ship(&ada).unwrap().pos;
    // Full thrust until it has clearly moved (on a loaded machine the first commands take a
    // while to come back as motion).
    let deadline = Instant::now() + Duration::from_secs(15);
    for ticks in 0.. {
        fly(&mut ada, 1.0, 0.0);
        if ticks >= 30 && own_ship(&ada).is_some_and(|s| dist(s.pos, spawn) > 40.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the ship never flew");
    }
    for _ in 0..5 {
        fly(&mut ada, 0.0, 0.0);
    }
    let left = own_ship(&ada).unwrap();
    assert!(dist(left.pos, spawn) > 20.0, "it flew: {left:?}");
    // The connection drops: no goodbye, the server only notices the silence.
    drop(ada);
    let dropped = Instant::now();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let again = rt
        .block_on(login(
            &reqwest::Client::new(),
            &r.http,
            &Credentials {
                name: "ada".into(),
                password: "correct horse battery".into(),
            },
            false,
        ))
        .expect("logging in again");
    assert_eq!(
        (again.player_id, again.ship),
        (first.player_id, first.ship),
        "the same player and ship"
    );
    let mut ada = GameClient::connect(again).expect("a token");
    // At once, not after the dropped connection's 10 s timeout: each login is a new session.
    wait_until("the ship in view again", Duration::from_secs(5), || {
        ada.update();
        own_ship(&ada).is_some()
    });
    let back = own_ship(&ada).unwrap();
    let elapsed = dropped.elapsed().as_secs_f32();
    let speed = (left.vel[0].powi(2) + left.vel[1].powi(2)).sqrt();
    println!(
        "back after {elapsed:.1} s: left at {:?} moving {speed:.0} u/s, found at {:?}",
        left.pos, back.pos
    );
    // Where it left it: carried on by its own momentum, not respawned.
    assert!(
        dist(back.pos, left.pos) <= speed * (elapsed + 0.5) + 20.0,
        "the ship moved {} units in {elapsed} s",
        dist(back.pos, left.pos)
    );
    assert!(dist(back.pos, spawn) > 20.0, "not back at the spawn point");
    // And it flies again.
    let before = back.pos;
    wait_until("the ship answers its pilot", Duration::from_secs(5), || {
        fly(&mut ada, 1.0, 0.0);
        own_ship(&ada).is_some_and(|s| dist(s.pos, before) > speed + 10.0)
    });
}

/// Unix seconds now.
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Garbage at the game port is dropped without hurting a connected player: ada keeps her
/// connection, her update rate and her input-to-state latency while 6,000 junk datagrams (300
/// of them 60 KB) arrive. A token used twice and an expired token never connect.
#[test]
fn reused_and_expired_tokens_never_connect_and_garbage_does_not_hurt_players() {
    let data = TempDir::new("tokens");
    let r = start_replication_with(100, &data.0, None, &["--token-valid-for", "3"]);
    let _shards = start_shards_and_place(&r, 1);
    let reply = register(&r.http, "ada");
    let mut ada = GameClient::connect(reply.clone()).expect("a token");
    wait_until(
        "ada connected with her ship",
        Duration::from_secs(15),
        || {
            ada.update();
            own_ship(&ada).is_some()
        },
    );
    // Turning back and forth: each change is a latency probe.
    let mut frame = 0u32;
    let mut fly_ada = |ada: &mut GameClient| {
        frame += 1;
        let turn = if (frame / 10).is_multiple_of(2) {
            0.8
        } else {
            -0.8
        };
        fly(ada, 0.0, turn);
    };
    let rate = |ada: &mut GameClient, fly_ada: &mut dyn FnMut(&mut GameClient)| {
        let (u0, t0) = (ada.received().updates, Instant::now());
        for _ in 0..90 {
            fly_ada(ada);
        }
        (ada.received().updates - u0) as f64 / t0.elapsed().as_secs_f64()
    };
    let quiet_rate = rate(&mut ada, &mut fly_ada);
    let quiet_samples = ada.received().turn_latency.latencies().len();

    // The same token again, from another client: netcode's replay protection refuses it.
    let mut thief = GameClient::connect(reply.clone()).expect("the same token");
    // Meanwhile the token expires (3 s): a fresh registration's token, kept too long.
    let bob = register(&r.http, "bob");
    for _ in 0..60 {
        fly_ada(&mut ada);
        thief.update();
    }
    wait_until("bob's token expires", Duration::from_secs(10), || {
        fly_ada(&mut ada);
        now_unix() > bob.expires_at
    });
    let mut late = GameClient::connect(bob).expect("an expired but well-formed token");

    // Garbage from a flooder, at 2,000 datagrams a second for three seconds.
    let game = reply.servers[0].parse::<std::net::SocketAddr>().unwrap();
    let flooder = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut buf = vec![0u8; 60_000];
        let start = Instant::now();
        for i in 0..6_000u32 {
            let len = if i % 20 == 0 {
                60_000
            } else {
                rng.random_range(1..1200)
            };
            rng.fill(&mut buf[..len]);
            // Some look like netcode packets (a valid packet-type prefix) with junk after.
            if i % 3 == 0 {
                buf[0] = (i % 7) as u8;
            }
            let _ = socket.send_to(&buf[..len], game);
            let due = start + Duration::from_micros(500 * u64::from(i));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    });
    let flood_rate = rate(&mut ada, &mut |a: &mut GameClient| {
        fly_ada(a);
        thief.update();
        late.update();
    });
    flooder.join().unwrap();
    let samples = ada.received().turn_latency.latencies();
    let (quiet, flood) = samples.split_at(quiet_samples);
    let (q50, f50) = (quantile(quiet, 0.5).unwrap(), quantile(flood, 0.5).unwrap());
    println!(
        "ada: {quiet_rate:.1} updates/s quiet, {flood_rate:.1} in the flood; latency p50 {q50:?} quiet, {f50:?} in the flood ({} samples)",
        flood.len()
    );
    assert!(ada.is_connected(), "ada is still connected");
    assert!(!thief.is_connected(), "a token used twice never connects");
    assert!(thief.received().welcome.is_none());
    assert!(!late.is_connected(), "an expired token never connects");
    assert!(
        flood_rate >= quiet_rate * 0.8,
        "updates/s {quiet_rate:.1} quiet, {flood_rate:.1} in the flood"
    );
    assert!(
        f50 <= q50 * 2 + Duration::from_millis(50),
        "latency p50 {q50:?} quiet, {f50:?} in the flood"
    );
}
