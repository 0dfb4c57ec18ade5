//! Players' login over real HTTP against a real `sidereal replication` process: registration,
//! login, the ship that comes with an account, and what bad input, guessing and floods get.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sidereal_core::EntityKind;
use sidereal_core::login::{CONNECT_TOKEN_BYTES, LoginReply};

use super::{TempDir, metric_at, start_replication_with, start_shards_and_place, wait_until};

/// A player's HTTP client, from a chosen loopback source address (127.0.0.0/8 all reach the
/// server, so two "clients" are told apart as they would be on a network).
struct Player {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

/// What came back: status, the Retry-After header, and the body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

impl Answer {
    fn reply(&self) -> LoginReply {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).expect(&self.body);
        v["error"].as_str().expect("an error message").to_owned()
    }
}

impl Player {
    fn from(base: &str, source: &str) -> Self {
        let source: IpAddr = source.parse().unwrap();
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder()
                .local_address(source)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    /// POSTs `body` as typed (JSON or not) with a JSON content type.
    fn post(&self, path: &str, body: &str) -> Answer {
        self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .expect("the server answers");
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            Answer {
                status,
                retry_after,
                body: r.text().await.unwrap(),
            }
        })
    }

    fn register(&self, name: &str, password: &str) -> Answer {
        self.post("/v1/accounts", &creds(name, password))
    }

    fn login(&self, name: &str, password: &str) -> Answer {
        self.post("/v1/login", &creds(name, password))
    }
}

fn creds(name: &str, password: &str) -> String {
    serde_json::json!({ "name": name, "password": password }).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn check_token(reply: &LoginReply, game: std::net::SocketAddr) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&reply.token)
        .expect("the token is base64");
    assert_eq!(bytes.len(), CONNECT_TOKEN_BYTES);
    assert_eq!(&bytes[..13], b"NETCODE 1.02\0");
    let t = now();
    assert!(
        (t + 50..=t + 61).contains(&reply.expires_at),
        "a token lasts 60 s: expires {} at {t}",
        reply.expires_at
    );
    assert_eq!(
        reply.servers,
        vec![game.to_string()],
        "the game port's address"
    );
}

fn logins(base: &str, result: &str) -> f64 {
    metric_at(
        base,
        &format!("sidereal_logins_total{{result=\"{result}\"}}"),
    )
}

#[test]
fn a_player_registers_logs_in_and_finds_its_ship_again_after_a_kill_9_of_replication() {
    let data = TempDir::new("login");
    let r = start_replication_with(100, &data.0, None, &[]);
    let shards = start_shards_and_place(&r, 1);
    let ada = Player::from(&r.http, "127.0.0.1");

    let created = ada.register("ada", "correct horse battery");
    assert_eq!(created.status, 201, "{}", created.body);
    let first = created.reply();
    assert_eq!(first.name, "ada");
    assert_ne!(first.player_id, 0);
    check_token(&first, r.game.expect("a game port"));
    // Registering makes no ship: it is made when the player first connects.
    assert!(!r.control.entities("").contains_key(&first.ship));
    let mut client = sidereal_client::GameClient::connect(first.clone()).expect("a token");
    wait_until("connected", Duration::from_secs(15), || {
        client.update();
        client.is_connected()
    });
    // The ship exists, is a player's ship, and the shard that owns its sector simulates it.
    wait_until(
        "the ship simulated by shard-0",
        Duration::from_secs(20),
        || {
            r.control
                .entities("owner=shard-0")
                .get(&first.ship)
                .is_some_and(|e| e.kind == EntityKind::Ship && !e.in_transit)
        },
    );
    wait_until("the shard counts a player", Duration::from_secs(20), || {
        client.update();
        r.control
            .load()
            .sectors
            .iter()
            .map(|s| s.players)
            .sum::<u32>()
            == 1
    });

    let again = ada.register("ada", "another password");
    assert_eq!(
        (again.status, again.error()),
        (409, "that name is taken".into())
    );

    let login = ada.login("ada", "correct horse battery");
    assert_eq!(login.status, 200, "{}", login.body);
    let second = login.reply();
    check_token(&second, r.game.expect("a game port"));
    assert_eq!(
        (second.player_id, second.ship),
        (first.player_id, first.ship),
        "the same player and ship at every login"
    );
    assert_ne!(second.token, first.token, "a fresh token per login");

    // A wrong password and an unknown name look the same.
    let wrong = ada.login("ada", "correct horse batterx");
    let unknown = ada.login("nobody", "correct horse battery");
    assert_eq!(
        (wrong.status, wrong.error()),
        (401, "wrong name or password".into())
    );
    assert_eq!((unknown.status, unknown.body), (401, wrong.body));

    // Bad bodies: each a clear 4xx, none a token.
    let syntax = ada.post("/v1/login", "{\"name\": \"ada\", ");
    assert_eq!(syntax.status, 400, "{}", syntax.body);
    assert!(
        syntax.error().starts_with("malformed request"),
        "{}",
        syntax.body
    );
    let missing = ada.post("/v1/login", r#"{"name":"ada"}"#);
    assert_eq!(missing.status, 422, "{}", missing.body);
    assert!(missing.error().contains("password"), "{}", missing.body);
    let huge = ada.post("/v1/login", &creds("ada", &"x".repeat(4096)));
    assert_eq!(huge.status, 413, "{}", huge.body);
    let bad_name = ada.register("Ada Lovelace", "correct horse battery");
    assert_eq!(bad_name.status, 422, "{}", bad_name.body);
    assert!(
        bad_name.error().contains("name may only contain"),
        "{}",
        bad_name.body
    );
    let short = ada.register("grace", "short");
    assert_eq!(short.status, 422);
    assert!(short.error().contains("password must be 8 to 128 bytes"));

    for (result, n) in [
        ("created", 1.0),
        ("ok", 1.0),
        ("name_taken", 1.0),
        ("wrong_credentials", 2.0),
        ("malformed", 2.0),
        ("too_large", 1.0),
        ("invalid", 2.0),
    ] {
        assert_eq!(
            logins(&r.http, result),
            n,
            "logins_total{{result={result}}}"
        );
    }

    // kill -9, restart on the same data: the account, and the ship made on its first
    // connection, were durable before anyone saw them.
    client.disconnect();
    let mut r = r;
    r.proc_.0.kill().unwrap(); // SIGKILL
    r.proc_.0.wait().unwrap();
    drop((r, shards));
    let r = start_replication_with(100, &data.0, None, &[]);
    let _shards = start_shards_and_place(&r, 1);
    let ada = Player::from(&r.http, "127.0.0.1");
    let back = ada.login("ada", "correct horse battery");
    assert_eq!(back.status, 200, "{}", back.body);
    let back = back.reply();
    assert_eq!((back.player_id, back.ship), (first.player_id, first.ship));
    wait_until("the ship simulated again", Duration::from_secs(20), || {
        r.control
            .entities("owner=shard-0")
            .get(&first.ship)
            .is_some_and(|e| e.kind == EntityKind::Ship)
    });
}

#[test]
fn guessing_locks_the_account_and_a_flood_is_limited_without_slowing_other_players() {
    let data = TempDir::new("login-flood");
    let r = start_replication_with(0, &data.0, None, &[]);
    let ada = Player::from(&r.http, "127.0.0.1");
    assert_eq!(ada.register("ada", "correct horse battery").status, 201);

    // Five free wrong guesses, then each one locks the account for longer.
    for _ in 0..6 {
        assert_eq!(ada.login("ada", "guess guess guess").status, 401);
    }
    let locked = ada.login("ada", "correct horse battery");
    assert_eq!(
        locked.status, 429,
        "even the right password waits: {}",
        locked.body
    );
    assert!(
        locked.error().contains("too many wrong passwords"),
        "{}",
        locked.body
    );
    assert_eq!(locked.retry_after, Some(1));
    assert!(!locked.body.contains("token"));
    wait_until("the lock to end", Duration::from_secs(5), || {
        ada.login("ada", "correct horse battery").status == 200
    });
    assert!(logins(&r.http, "locked") >= 1.0);

    // A baseline of ada's login latency, then the same while another address floods. Ada logs
    // in from her own address at 4 a second, within her own limit (5 a second).
    let ada = Player::from(&r.http, "127.0.0.3");
    let timed = |p: &Player| {
        let t = Instant::now();
        let a = p.login("ada", "correct horse battery");
        assert_eq!(a.status, 200, "{}", a.body);
        t.elapsed()
    };
    let mut quiet: Vec<Duration> = (0..3).map(|_| timed(&ada)).collect();
    quiet.sort();
    // Mallory floods from one address for 3 s, four requests at a time, guessing passwords.
    let flood_for = Duration::from_secs(3);
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let base = r.http.clone();
            std::thread::spawn(move || {
                let mallory = Player::from(&base, "127.0.0.2");
                let (mut limited, mut refused) = (0, 0);
                let end = Instant::now() + flood_for;
                let mut i = 0;
                while Instant::now() < end {
                    i += 1;
                    let a = mallory.login(&format!("victim{}", i % 7), "guess guess guess");
                    match a.status {
                        429 => {
                            limited += 1;
                            assert!(a.retry_after.is_some_and(|s| s >= 1), "{}", a.body);
                        }
                        401 => refused += 1,
                        other => panic!("flood got {other}: {}", a.body),
                    }
                }
                (limited, refused)
            })
        })
        .collect();
    let mut during = Vec::new();
    let pace = Duration::from_millis(250);
    loop {
        let next = Instant::now() + pace;
        during.push(timed(&ada));
        if floods.iter().all(|f| f.is_finished()) {
            break;
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let (limited, refused) = floods
        .into_iter()
        .map(|f| f.join().unwrap())
        .fold((0, 0), |(l, r), (a, b)| (l + a, r + b));
    println!("flood: {limited} refused unhashed (429), {refused} hashed and refused (401)");
    // The address's burst (20) and rate (5/s for 3 s) are all it gets hashed, with a margin.
    assert!(
        refused <= 50,
        "{refused} of the flood's guesses were hashed"
    );
    assert!(
        limited >= 4 * refused,
        "most of the flood is refused unhashed: {limited}"
    );
    during.sort();
    let median = during[during.len() / 2];
    println!(
        "ada's login: {:?} quiet, {median:?} median during a flood ({} logins)",
        quiet[1],
        during.len()
    );
    assert!(
        median <= quiet[1] * 4 + Duration::from_millis(250),
        "a flood from another address slowed ada: {median:?} vs {:?}",
        quiet[1]
    );
    let refused_unhashed: f64 = ["rate_limited", "locked", "busy", "in_progress"]
        .iter()
        .map(|l| logins(&r.http, l))
        .sum();
    assert!(refused_unhashed >= limited as f64);
}

/// The world takes new accounts up to its budget (`--registrations-per-hour`), from every
/// address together; past it registration answers 429, and players who have an account still
/// log in.
#[test]
fn registrations_past_the_worlds_budget_wait_and_logins_go_on() {
    let data = TempDir::new("login-budget");
    let r = start_replication_with(0, &data.0, None, &["--registrations-per-hour", "3"]);
    for (i, name) in ["ada", "bob", "cyd"].iter().enumerate() {
        let p = Player::from(&r.http, &format!("127.0.2.{}", i + 1));
        assert_eq!(p.register(name, "correct horse battery").status, 201);
    }
    let late = Player::from(&r.http, "127.0.2.9").register("dee", "correct horse battery");
    assert_eq!(late.status, 429, "{}", late.body);
    assert!(
        late.error().contains("registration budget"),
        "{}",
        late.body
    );
    assert!(
        late.retry_after.is_some_and(|s| s >= 60),
        "{:?}",
        late.retry_after
    );
    let ada = Player::from(&r.http, "127.0.2.1").login("ada", "correct horse battery");
    assert_eq!(ada.status, 200, "{}", ada.body);
    assert_eq!(logins(&r.http, "budget"), 1.0);
    let ships = r
        .control
        .entities("")
        .values()
        .filter(|e| e.kind == sidereal_core::EntityKind::Ship)
        .count();
    assert_eq!(
        ships, 0,
        "registering makes no ship (the first connection does), the refused one none either"
    );
}

/// Forty guesses for one account at the same moment, each from its own address: they are heard
/// one at a time, so the lockout counts each one and at most its free failures are ever hashed
/// (before, all forty passed the lock check before the first failure was recorded). A name no
/// account can have is refused before anything else.
#[test]
fn concurrent_guesses_from_many_addresses_cannot_outrun_the_lockout() {
    let data = TempDir::new("login-concurrent");
    let r = start_replication_with(0, &data.0, None, &[]);
    let ada = Player::from(&r.http, "127.0.0.1");
    assert_eq!(ada.register("ada", "correct horse battery").status, 201);
    let start = std::sync::Arc::new(std::sync::Barrier::new(40));
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let (base, start) = (r.http.clone(), start.clone());
            std::thread::spawn(move || {
                let guesser = Player::from(&base, &format!("127.0.1.{}", i + 1));
                start.wait();
                guesser.login("ada", "guess guess guess").status
            })
        })
        .collect();
    let statuses: Vec<u16> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        (1..=6).contains(&checked),
        "{checked} of 40 concurrent guesses had their password checked: {statuses:?}"
    );
    assert!(logins(&r.http, "in_progress") >= 1.0);
    let bad = ada.login("Not A Name!", "correct horse battery");
    assert_eq!(bad.status, 422, "{}", bad.body);
}

/// `--public-http`: a listener for the internet with the players' login and health and nothing
/// of the control API, so a NetworkPolicy can keep `--http` private.
#[test]
fn the_public_listener_serves_login_and_nothing_of_the_control_api() {
    let data = TempDir::new("public-http");
    let r = start_replication_with(
        0,
        &data.0,
        None,
        &["--public-http", "127.0.0.1:0", "--insecure-public-http"],
    );
    let public = r
        .public
        .clone()
        .expect("a public listener in the ready line");
    assert_ne!(public, r.http);
    let player = Player::from(&public, "127.0.0.1");
    let created = player.register("ada", "correct horse battery");
    assert_eq!(created.status, 201, "{}", created.body);
    let again = Player::from(&r.http, "127.0.0.2").login("ada", "correct horse battery");
    assert_eq!(again.status, 200, "one store behind both listeners");
    let get = |base: &str, path: &str| {
        player.rt.block_on(async {
            player
                .client
                .get(format!("{base}{path}"))
                .header("authorization", format!("Bearer {}", super::TOKEN))
                .send()
                .await
                .expect("an answer")
                .status()
                .as_u16()
        })
    };
    assert_eq!(get(&public, "/healthz"), 200);
    for path in ["/v1/status", "/v1/placement", "/metrics", "/map", "/v1/map"] {
        assert_eq!(get(&public, path), 404, "{path} on the public listener");
        assert_eq!(get(&r.http, path), 200, "{path} on the control listener");
    }
}
