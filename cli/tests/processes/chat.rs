//! Chat on the game port: real clients, a real replication process. A line reaches exactly the
//! players whose ships are within the interest radius of the speaker's; bad and flooding lines
//! are refused with a reason and counted.

use std::time::{Duration, Instant};

use sidereal_client::GameClient;

use super::players::register;
use super::{TempDir, metric_at, start_replication_with, start_shards_and_place, wait_until};

const RADIUS: f32 = 600.0;

#[test]
fn chat_reaches_the_ships_within_the_radius_and_floods_are_refused() {
    let data = TempDir::new("chat");
    let radius = RADIUS.to_string();
    let r = start_replication_with(100, &data.0, None, &["--interest-radius", &radius]);
    let _shards = start_shards_and_place(&r, 2);
    // New ships appear near the centre of a root chosen by the player id: with two roots, four
    // players have at least two within earshot of each other.
    let names = ["ada", "bob", "cyd", "dee"];
    let mut players: Vec<GameClient> = names
        .iter()
        .map(|n| GameClient::connect(register(&r.http, n)).expect("a token"))
        .collect();
    wait_until("every ship in view", Duration::from_secs(20), || {
        players.iter_mut().all(|p| {
            p.update();
            let ship = p.login.ship;
            p.received()
                .latest
                .as_ref()
                .is_some_and(|u| u.get(ship).is_some())
        })
    });
    let world = r.control.entities("");
    let pos = |p: &GameClient| world[&p.login.ship].pos;
    let near = |a: &GameClient, b: &GameClient| {
        let (pa, pb) = (pos(a), pos(b));
        ((pa[0] - pb[0]).powi(2) + (pa[1] - pb[1]).powi(2)).sqrt() <= RADIUS
    };
    // Every player speaks once.
    for (i, p) in players.iter_mut().enumerate() {
        p.say(&format!("  hello from {}  ", names[i]));
    }
    let heard = |p: &GameClient, speaker: &GameClient| {
        p.received()
            .chat
            .iter()
            .any(|c| c.player_id == speaker.login.player_id)
    };
    wait_until(
        "every line reaches its listeners",
        Duration::from_secs(10),
        || {
            players.iter_mut().for_each(GameClient::update);
            (0..players.len()).all(|l| {
                (0..players.len())
                    .filter(|s| near(&players[l], &players[*s]))
                    .all(|s| heard(&players[l], &players[s]))
            })
        },
    );
    let mut pairs = 0;
    for l in &players {
        for s in &players {
            assert_eq!(
                heard(l, s),
                near(l, s),
                "whether {} heard {} (ships {:?} and {:?})",
                l.login.name,
                s.login.name,
                pos(l),
                pos(s)
            );
            pairs += usize::from(near(l, s) && l.login.player_id != s.login.player_id);
        }
    }
    assert!(pairs >= 2, "two players within earshot");
    let line = &players[0].received().chat[0];
    assert_eq!(line.text.trim(), line.text, "relayed trimmed");
    assert!(line.text.starts_with("hello from "));

    // Bad lines and a flood, from ada.
    let ada = &mut players[0];
    ada.say(&"x".repeat(201));
    ada.say("ring\u{7}");
    for i in 0..20 {
        ada.say(&format!("spam {i}"));
    }
    let flooded = Instant::now();
    let chat = |result: &str| {
        metric_at(
            &r.http,
            &format!("sidereal_chat_total{{result=\"{result}\"}}"),
        )
    };
    // The first four lines used four of ada's burst of five; one spam line more got through.
    wait_until("every refusal counted", Duration::from_secs(10), || {
        ada.update();
        chat("rate_limited") >= 15.0
    });
    wait_until(
        "the first refusals reach ada",
        Duration::from_secs(10),
        || {
            ada.update();
            ada.received().chat_refused.len() >= 3
        },
    );
    let refused = &ada.received().chat_refused;
    assert!(refused[0].contains("longer than 200"), "{refused:?}");
    assert!(refused[1].contains("control characters"), "{refused:?}");
    // 17 refusals, but a reply for only three at once and then one a second: a flood does not
    // turn into a flood of reliable replies.
    let allowed = 3 + flooded.elapsed().as_secs() as usize + 1;
    assert!(
        refused.len() <= allowed,
        "{} replies within {:?}",
        refused.len(),
        flooded.elapsed()
    );
    assert_eq!(chat("too_long"), 1.0);
    assert_eq!(chat("control_characters"), 1.0);
    assert!(chat("rate_limited") >= 15.0, "{}", chat("rate_limited"));
    assert!(chat("delivered") >= 4.0);
    assert!(
        ada.is_connected(),
        "a chatty player is limited, not dropped"
    );
}
