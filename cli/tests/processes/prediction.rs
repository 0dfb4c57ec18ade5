//! lightyear's prediction and interpolation in `sidereal-client`, against a real fleet: the own
//! ship answers its pilot before the server's state could, and agrees with that state when it
//! comes; other entities move smoothly between world updates.

use std::time::{Duration, Instant};

use sidereal_client::GameClient;
use sidereal_testkit::udp_proxy::UdpProxy;

use super::players::register;
use super::{TempDir, start_replication_with, start_shards_and_place, wait_until};

const FRAME: Duration = Duration::from_millis(1000 / 60);
const TICK_SECS: f64 = 1.0 / 30.0;

/// Runs frames at 60 per second for `d`, calling `each` after every frame.
fn frames(client: &mut GameClient, d: Duration, mut each: impl FnMut(&mut GameClient)) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let next = Instant::now() + FRAME;
        client.update();
        each(client);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Over a path with 150 ms of round trip, the predicted ship turns a few ticks after its
/// pilot's command (the fleet's command delay), while the server's state shows the turn only
/// after the round trip on top. Flying square-wave turns for seconds, the server rarely
/// disagrees with the prediction: rollbacks stay a small share of the ticks flown.
#[test]
fn the_own_ship_answers_at_once_and_the_server_agrees() {
    let data = TempDir::new("prediction");
    let game = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let path = UdpProxy::with_delay(game, Duration::from_millis(75)).expect("a relay");
    let (bind, public) = (game.to_string(), path.addr.to_string());
    let r = start_replication_with(
        0,
        &data.0,
        None,
        &["--game-udp", &bind, "--public-game-addr", &public],
    );
    let _shards = start_shards_and_place(&r, 1);
    let reply = register(&r.http, "ada");
    let mut ada = GameClient::connect(reply.clone()).expect("a token");
    wait_until("the predicted ship", Duration::from_secs(20), || {
        ada.update();
        std::thread::sleep(Duration::from_millis(5));
        ada.own_ship().is_some() && ada.received().latest.is_some()
    });
    let delay = ada.received().welcome.as_ref().unwrap().command_delay_ticks;

    // Let lightyear's clock settle, thrusting gently.
    ada.pilot(0.5, 0.0, false);
    frames(&mut ada, Duration::from_secs(2), |_| {});
    let before = ada.prediction_stats();

    // Square-wave turns: each reversal is timed on the prediction and on the server's state.
    let (mut predicted_ms, mut server_ms) = (Vec::new(), Vec::new());
    let flying = Duration::from_secs(6);
    let started = Instant::now();
    let mut turn = 1.0f32;
    while started.elapsed() < flying {
        turn = -turn;
        let commanded = Instant::now();
        ada.pilot(0.5, turn, false);
        let want = turn * 2.0;
        let (mut predicted, mut server) = (None, None);
        frames(&mut ada, Duration::from_millis(750), |c| {
            let at = commanded.elapsed().as_secs_f64() * 1000.0;
            if predicted.is_none() && c.own_ship().is_some_and(|s| (s.spin - want).abs() < 0.01) {
                predicted = Some(at);
            }
            let confirmed = c
                .received()
                .latest
                .as_ref()
                .and_then(|u| u.get(reply.ship))
                .map(|s| s.spin);
            if server.is_none() && confirmed.is_some_and(|s| (s - want).abs() < 0.1) {
                server = Some(at);
            }
        });
        predicted_ms.extend(predicted);
        server_ms.extend(server);
    }
    let after = ada.prediction_stats();
    let ticks = flying.as_secs_f64() / TICK_SECS;
    let rollbacks = after.rollbacks - before.rollbacks;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let reversals = predicted_ms.len();
    let (p, s) = (median(&mut predicted_ms), median(&mut server_ms));
    println!(
        "prediction over 150 ms RTT: {reversals} reversals, predicted turn after {p:.0} ms, \
         server state after {s:.0} ms (command delay {delay} ticks); {rollbacks} rollbacks \
         ({} ticks replayed) in {ticks:.0} ticks",
        after.rollback_ticks - before.rollback_ticks
    );
    assert!(reversals >= 6, "every reversal shows in the prediction");
    assert_eq!(server_ms.len(), reversals, "and in the server's state");
    let tick_ms = TICK_SECS * 1000.0;
    assert!(
        p <= (f64::from(delay) + 3.0) * tick_ms,
        "the predicted ship turns within the command delay: {p:.0} ms"
    );
    assert!(
        s >= p + 100.0,
        "the prediction is ahead of the server's state by about the round trip: {p:.0} vs {s:.0} ms"
    );
    assert!(
        f64::from(rollbacks) < ticks * 0.25,
        "the server rarely disagrees: {rollbacks} rollbacks in {ticks:.0} ticks"
    );
    // Where the prediction has the ship is where the server's state puts it, about a round
    // trip and the command delay later.
    let predicted = ada.own_ship().unwrap();
    let confirmed = *ada
        .received()
        .latest
        .as_ref()
        .unwrap()
        .get(reply.ship)
        .unwrap();
    let gap = (predicted.pos[0] - confirmed.pos[0]).hypot(predicted.pos[1] - confirmed.pos[1]);
    let speed = confirmed.vel[0].hypot(confirmed.vel[1]);
    assert!(
        gap <= speed * 0.5 + 10.0,
        "the prediction is near the server's ship: {gap:.1} units apart at {speed:.0} units/s"
    );
}

/// A player sees the asteroids around its ship through lightyear's interpolation: a 60 fps client draws positions between the 30 Hz world updates
/// (more distinct positions than updates) with no jumps, a little behind the newest update.
#[test]
fn other_entities_move_smoothly_between_world_updates() {
    let data = TempDir::new("interpolation");
    let r = start_replication_with(300, &data.0, None, &["--interest-radius", "800"]);
    let _shards = start_shards_and_place(&r, 1);
    let reply = register(&r.http, "bob");
    let mut bob = GameClient::connect(reply.clone()).expect("a token");
    wait_until("entities interpolated", Duration::from_secs(20), || {
        bob.update();
        std::thread::sleep(Duration::from_millis(5));
        bob.remotes().iter().filter(|(r, _)| r.kind == 1).count() >= 3
    });
    // A moving entity in view: the fastest one, seen in the newest update.
    let pick = |c: &GameClient| {
        c.received().latest.as_ref().and_then(|u| {
            u.entities
                .iter()
                .filter(|e| e.id != reply.ship && e.kind == 1)
                .max_by(|a, b| {
                    a.vel[0]
                        .hypot(a.vel[1])
                        .total_cmp(&b.vel[0].hypot(b.vel[1]))
                })
                .copied()
        })
    };
    let target = pick(&bob).expect("an asteroid in view");
    let id = target.id;
    let updates_before = bob.received().updates;
    // Every position the updates gave it, and every position drawn, with when.
    let mut samples: Vec<[f32; 2]> = Vec::new();
    let mut drawn: Vec<([f32; 2], Instant)> = Vec::new();
    let mut lag: Vec<f32> = Vec::new();
    let mut max_speed = 0.0f32;
    // The largest step between two frames beyond what the entity's speed covers in the time
    // between them (a snap to a new update after a stall shows here).
    let mut worst_excess = 0.0f32;
    frames(&mut bob, Duration::from_secs(3), |c| {
        if let Some(newest) = c.received().latest.as_ref().and_then(|u| u.get(id)) {
            if samples.last() != Some(&newest.pos) {
                samples.push(newest.pos);
            }
            max_speed = max_speed.max(newest.vel[0].hypot(newest.vel[1]));
        }
        let Some(now) = c.remote(id) else { return };
        if let Some(newest) = samples.last() {
            lag.push((newest[0] - now.pos[0]).hypot(newest[1] - now.pos[1]));
        }
        let at = Instant::now();
        if let Some((prev, then)) = drawn.last() {
            let step = (now.pos[0] - prev[0]).hypot(now.pos[1] - prev[1]);
            let covered = max_speed * (at - *then).as_secs_f32();
            worst_excess = worst_excess.max(step - covered * 2.0);
        }
        drawn.push((now.pos, at));
    });
    let updates = bob.received().updates - updates_before;
    // Drawn where no update put it: between two samples, as interpolation does. Showing the
    // updates as they come draws only sample positions.
    let between = drawn
        .iter()
        .filter(|(p, _)| {
            samples
                .iter()
                .all(|s| (s[0] - p[0]).hypot(s[1] - p[1]) > 0.01)
        })
        .count();
    lag.sort_by(f32::total_cmp);
    let median_lag = lag.get(lag.len() / 2).copied().unwrap_or(f32::NAN);
    println!(
        "interpolation: entity {id} at up to {max_speed:.1} units/s, {} frames drawn from \
         {updates} updates, {between} of them between updates, worst step beyond its speed \
         {worst_excess:.2} units, median lag {median_lag:.2} units behind the newest update",
        drawn.len()
    );
    assert!(drawn.len() >= 60, "the entity stayed in view and drawn");
    assert!(max_speed > 1.0, "a moving entity");
    assert!(
        between * 2 >= drawn.len(),
        "positions between updates: {between} of {} frames",
        drawn.len()
    );
    // Drawing the newest update instead would jump the lag (several units) in one frame.
    assert!(
        worst_excess <= 1.5,
        "no jumps: a step {worst_excess:.2} units beyond what its speed covers"
    );
    assert!(
        median_lag > 0.0 && median_lag <= max_speed * 0.5,
        "drawn a little behind the newest update: {median_lag:.2} units"
    );
}
