//! Game-port sessions under abuse, with real lightyear clients and a real replication process:
//! one account logging in and connecting 300 times never holds more than two sessions (the
//! current one and the one it replaces, which is told and leaves at once), every other attempt
//! is refused before netcode gives it a slot, one live session is left, and a second player
//! still gets in.

use std::time::Duration;

use sidereal_client::GameClient;

use super::gateways::{start_gateway_with, try_login};
use super::players::{log_in_as, register};
use super::{TempDir, metric_at, start_replication_with, start_shards_and_place, wait_until};

fn log_in(http: &str, name: &str) -> sidereal_core::login::LoginReply {
    log_in_as(http, name, false)
}

#[test]
fn one_account_connecting_300_times_keeps_one_session_and_another_player_still_gets_in() {
    let data = TempDir::new("sessions");
    // 64 slots: without the session limit, mallory's connections alone would fill them.
    let r = start_replication_with(
        50,
        &data.0,
        None,
        &["--max-clients", "64", "--login-rate", "1000"],
    );
    let _shards = start_shards_and_place(&r, 1);
    let mut replies = vec![register(&r.http, "mallory")];
    replies.extend((1..300).map(|_| log_in(&r.http, "mallory")));

    // Each token used at once, 25 at a time; the clients that get in are kept alive (until a
    // newer connection supersedes them and they leave).
    let mut kept: Vec<GameClient> = Vec::new();
    let mut refused = 0;
    for batch in replies.chunks(25) {
        let mut trying: Vec<GameClient> = batch
            .iter()
            .map(|reply| GameClient::connect(reply.clone()).expect("a token"))
            .collect();
        wait_until(
            "each connection up or refused",
            Duration::from_secs(30),
            || {
                for c in kept.iter_mut().chain(trying.iter_mut()) {
                    c.update();
                }
                trying
                    .iter()
                    .all(|c| c.is_connected() || c.is_disconnected())
            },
        );
        for c in trying {
            if c.is_connected() {
                kept.push(c);
            } else {
                refused += 1;
            }
        }
        kept.retain(|c| !c.is_disconnected());
        // At no time does mallory hold more than its two sessions.
        assert!(
            kept.len() <= 2,
            "{} of mallory's connections up at once",
            kept.len()
        );
    }
    // Every request past the limit was refused before netcode gave it a slot.
    let denied = metric_at(
        &r.http,
        "sidereal_game_connections_denied_total{reason=\"player_limit\"}",
    );
    assert!(
        denied >= 250.0 && refused >= 250,
        "{denied} denied, {refused} refused"
    );
    wait_until("one live session left", Duration::from_secs(10), || {
        for c in &mut kept {
            c.update();
        }
        kept.retain(|c| !c.is_disconnected());
        kept.len() == 1
            && metric_at(&r.http, "sidereal_game_sessions") == 1.0
            && r.control.status().players_connected == 1
    });

    let bob = register(&r.http, "bob");
    let mut bob = GameClient::connect(bob).expect("a token");
    wait_until(
        "bob connects and is welcomed",
        Duration::from_secs(15),
        || {
            bob.update();
            for c in &mut kept {
                c.update();
            }
            bob.is_connected() && bob.received().welcome.is_some()
        },
    );
    assert_eq!(r.control.status().players_connected, 2);
}

/// A player who connects again (a second device, a restarted game) takes over: the older
/// connection is told and ends at once, not after netcode's timeout, and its slot is free.
#[test]
fn a_superseded_connection_ends_at_once_and_frees_its_slot() {
    let data = TempDir::new("superseded");
    let r = start_replication_with(50, &data.0, None, &[]);
    let _shards = start_shards_and_place(&r, 1);
    let first = register(&r.http, "ada");
    let mut old = GameClient::connect(first).expect("a token");
    wait_until("the first connection", Duration::from_secs(15), || {
        old.update();
        old.is_connected() && old.received().welcome.is_some()
    });
    let mut new = GameClient::connect(log_in(&r.http, "ada")).expect("a token");
    let t = std::time::Instant::now();
    wait_until(
        "the old connection ends, the new one plays",
        Duration::from_secs(5),
        || {
            old.update();
            new.update();
            old.is_disconnected() && new.is_connected() && new.received().welcome.is_some()
        },
    );
    assert!(old.received().superseded, "told why");
    let sessions = || metric_at(&r.http, "sidereal_game_sessions");
    wait_until("one session held", Duration::from_secs(5), || {
        new.update();
        sessions() == 1.0
    });
    assert_eq!(r.control.status().players_connected, 1);
    eprintln!("superseded connection ended after {:?}", t.elapsed());
}

/// A gateway knows the sessions replication's logins mint (their player and address) and
/// admits connections against the same limits as replication's own game port: here one
/// session per address, so a second player from the same address is refused until the first
/// leaves.
#[test]
fn a_gateway_admits_sessions_against_the_address_limit() {
    let data = TempDir::new("gateway-sessions");
    let r = start_replication_with(
        50,
        &data.0,
        None,
        &["--no-game", "--gateway-link", "127.0.0.1:0"],
    );
    let _shards = start_shards_and_place(&r, 1);
    let link = r.gateways.clone().expect("a gateway link");
    let g = start_gateway_with(
        &link,
        "gw-limits",
        None,
        1500.0,
        &["--max-sessions-per-address", "1"],
    );
    wait_until("the gateway linked", Duration::from_secs(20), || {
        metric_at(&g.metrics, "sidereal_gateway_linked") == 1.0
    });
    let mut ada = GameClient::connect(register(&r.http, "ada")).expect("a token");
    wait_until("ada plays", Duration::from_secs(15), || {
        ada.update();
        ada.is_connected() && ada.received().welcome.is_some()
    });
    let mut bob = GameClient::connect(register(&r.http, "bob")).expect("a token");
    wait_until(
        "bob, from ada's address, is refused",
        Duration::from_secs(15),
        || {
            ada.update();
            bob.update();
            bob.is_disconnected()
        },
    );
    assert!(ada.is_connected(), "ada keeps her session");
    let denied = "sidereal_game_connections_denied_total{reason=\"address_limit\"}";
    assert_eq!(metric_at(&g.metrics, denied), 1.0);

    // Ada leaves: her slot is free, and bob's next login gets in.
    ada.disconnect();
    wait_until("ada's session ended", Duration::from_secs(15), || {
        ada.update();
        metric_at(&g.metrics, "sidereal_game_sessions") == 0.0
    });
    let mut bob = GameClient::connect(log_in(&r.http, "bob")).expect("a token");
    wait_until("bob plays", Duration::from_secs(15), || {
        bob.update();
        bob.is_connected() && bob.received().welcome.is_some()
    });
}

/// Each gateway counts only its own sessions, so an address could hold its limit on every
/// gateway. Logins close that: with replication's `--max-sessions-per-address 1` and two
/// gateways that would each admit 64, a second player from ada's address gets no token while
/// ada plays (429, counted as `address_full`), and gets one once she has left.
#[test]
fn a_login_is_refused_while_its_address_holds_the_limit_across_gateways() {
    let data = TempDir::new("fleet-address-limit");
    let r = start_replication_with(
        50,
        &data.0,
        None,
        &[
            "--no-game",
            "--gateway-link",
            "127.0.0.1:0",
            "--max-sessions-per-address",
            "1",
        ],
    );
    let _shards = start_shards_and_place(&r, 1);
    let link = r.gateways.clone().expect("a gateway link");
    let gateways = [
        start_gateway_with(&link, "gw-a", None, 1500.0, &[]),
        start_gateway_with(&link, "gw-b", None, 1500.0, &[]),
    ];
    wait_until("both gateways linked", Duration::from_secs(20), || {
        gateways
            .iter()
            .all(|g| metric_at(&g.metrics, "sidereal_gateway_linked") == 1.0)
    });
    let ada_login = register(&r.http, "ada");
    // Bob's account is made while nobody plays; his logins are what is limited.
    let _ = register(&r.http, "bob");
    let mut ada = GameClient::connect(ada_login).expect("a token");
    wait_until("ada plays", Duration::from_secs(15), || {
        ada.update();
        ada.is_connected() && ada.received().welcome.is_some()
    });
    wait_until("replication counts ada", Duration::from_secs(10), || {
        r.control.status().players_connected == 1
    });
    let try_bob = || try_login(&r.http, "bob", "correct horse battery", false);
    match try_bob() {
        Err(sidereal_client::ClientError::Refused { status, message }) => {
            assert_eq!(status, 429, "{message}");
            assert!(message.contains("from this address"), "{message}");
        }
        other => panic!("bob got {other:?} while ada plays from his address"),
    }
    assert_eq!(
        super::metric(&r, "sidereal_logins_total{result=\"address_full\"}"),
        1.0
    );
    // Ada logging in again is not refused: her new session replaces her own.
    let again = log_in(&r.http, "ada");
    assert_eq!(again.player_id, ada.login.player_id);

    ada.disconnect();
    wait_until("ada has left", Duration::from_secs(15), || {
        ada.update();
        r.control.status().players_connected == 0
    });
    let mut bob =
        GameClient::connect(try_bob().expect("bob's login once ada left")).expect("a token");
    wait_until("bob plays", Duration::from_secs(15), || {
        bob.update();
        bob.is_connected() && bob.received().welcome.is_some()
    });
}
