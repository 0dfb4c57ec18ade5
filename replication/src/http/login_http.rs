//! The players' login API over HTTP: registration and login, each answered with a connect
//! token, behind the limits of [`crate::login::Logins`]. A module of its own, beside `login`
//! rather than in it: it needs the server's shared state, which holds the login state, so
//! `login` stays free of `state`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use sidereal_core::EntityId;
use sidereal_core::gateway_link::AuthorityMessage;
use sidereal_core::login::{
    Credentials, LoginReply, MAX_LOGIN_BODY_BYTES, validate_credentials, validate_name,
};
use tracing::{info, warn};

use crate::login::token::{self, NetcodeKey};
use crate::login::{LoginError, passwords};
use crate::state::Shared;
use crate::store::Account;

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/accounts", post(register))
        .route("/v1/login", post(login))
        .layer(DefaultBodyLimit::max(MAX_LOGIN_BODY_BYTES))
}

async fn register(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Response {
    let body = body.map(|Json(c)| c).map_err(LoginError::from);
    answer(
        &s,
        StatusCode::CREATED,
        "created",
        try_register(&s, peer.ip(), body).await,
    )
}

async fn login(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Response {
    let body = body.map(|Json(c)| c).map_err(LoginError::from);
    answer(
        &s,
        StatusCode::OK,
        "ok",
        try_login(&s, peer.ip(), body).await,
    )
}

/// A registration (`register`) or login that a gateway received from `client` and passed on
/// over its link, answered exactly as this process's own endpoints answer it: the status, the
/// `Retry-After` seconds if any, and the JSON body.
pub(crate) async fn answer_for_gateway(
    s: &Shared,
    client: IpAddr,
    register: bool,
    body: &[u8],
) -> (u16, Option<u32>, Vec<u8>) {
    let credentials = if body.len() > MAX_LOGIN_BODY_BYTES {
        Err(LoginError::TooLarge)
    } else {
        serde_json::from_slice::<Credentials>(body)
            .map_err(|e| LoginError::Malformed(StatusCode::BAD_REQUEST, e.to_string()))
    };
    let response = if register {
        let r = try_register(s, client, credentials).await;
        answer(s, StatusCode::CREATED, "created", r)
    } else {
        let r = try_login(s, client, credentials).await;
        answer(s, StatusCode::OK, "ok", r)
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(axum::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    (status, retry_after, body)
}

fn answer(
    s: &Shared,
    status: StatusCode,
    label: &'static str,
    r: Result<LoginReply, LoginError>,
) -> Response {
    match r {
        Ok(reply) => {
            s.logins.count(label);
            (status, Json(reply)).into_response()
        }
        Err(e) => {
            s.logins.count(e.label());
            e.into_response()
        }
    }
}

/// What both endpoints check first, cheapest first: that logins are possible at all, the
/// client address's rate limit, then the body.
fn admit_request(
    s: &Shared,
    client: IpAddr,
    body: Result<Credentials, LoginError>,
) -> Result<(NetcodeKey, &crate::store::Store, Credentials), LoginError> {
    let key = s.logins.config.netcode_key.clone().ok_or_else(no_key)?;
    let store = s.store.as_ref().ok_or_else(no_store)?;
    s.logins.admit(client)?;
    let c = body?;
    Ok((key, store, c))
}

async fn try_register(
    s: &Shared,
    client: IpAddr,
    body: Result<Credentials, LoginError>,
) -> Result<LoginReply, LoginError> {
    let (key, store, c) = admit_request(s, client, body)?;
    validate_credentials(&c)?;
    if !s.store_health.lock().expect("health lock").healthy {
        return Err(LoginError::Unavailable(
            "the world store is failing; no accounts are made until it is back (retry shortly)"
                .into(),
        ));
    }
    if store.account(&c.name).await?.is_some() {
        return Err(LoginError::NameTaken);
    }
    s.logins.register_one()?;
    let password = c.password.clone();
    let password_hash = s
        .logins
        .hashing(client, move || passwords::hash(&password))
        .await?
        .map_err(|e| LoginError::Unavailable(format!("hashing failed: {e}")))?;
    let mut account = Account {
        name: c.name.clone(),
        password_hash,
        ship_id: None,
        player_id: Some(new_player_id()),
    };
    if !store.create_account(&account).await? {
        // Taken between the check and the insert, or (once in 2^63) the player id collided.
        return Err(match store.account(&c.name).await? {
            Some(_) => LoginError::NameTaken,
            None => LoginError::Unavailable("player id collision; try again".into()),
        });
    }
    info!(name = %account.name, "account created");
    account.ship_id = Some(ensure_ship(s, &account.name).await?.0 as i64);
    reply(s, &key, &account, client)
}

async fn try_login(
    s: &Shared,
    client: IpAddr,
    body: Result<Credentials, LoginError>,
) -> Result<LoginReply, LoginError> {
    let (key, store, c) = admit_request(s, client, body)?;
    validate_name(&c.name)?;
    // One check at a time per account: each guess is counted before the next one is heard,
    // so concurrent guesses cannot all pass the lock before the first failure is recorded.
    let _attempt = s.logins.attempt(&c.name)?;
    s.logins
        .locks
        .lock()
        .expect("locks lock")
        .check(&c.name, Instant::now())
        .map_err(LoginError::Locked)?;
    let account = store.account(&c.name).await?;
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let password = c.password.clone();
    let ok = s
        .logins
        .hashing(client, move || {
            passwords::verify(&password, stored.as_deref())
        })
        .await?;
    let Some(mut account) = account.filter(|_| ok) else {
        let mut locks = s.logins.locks.lock().expect("locks lock");
        let now = Instant::now();
        let lock = locks.failed(&c.name, now);
        locks.forget_idle(now, Duration::from_secs(3600));
        if !lock.is_zero() {
            warn!(name = %c.name, ?lock, "repeated wrong passwords; account locked");
        }
        return Err(LoginError::WrongCredentials);
    };
    s.logins
        .locks
        .lock()
        .expect("locks lock")
        .succeeded(&c.name);
    if account.player_id.is_none() {
        let id = new_player_id();
        if !store.set_player_id(&account.name, id).await? {
            return Err(LoginError::Unavailable(
                "player id collision; try again".into(),
            ));
        }
        account.player_id = Some(id);
    }
    account.ship_id = Some(ensure_ship(s, &account.name).await?.0 as i64);
    reply(s, &key, &account, client)
}

/// The account's ship id, reserved (in the account's row) if it has none. The ship itself is
/// made when the player first connects (`server::make_ship_on_first_connection`), so accounts
/// that never play cost the world no simulated entity. Serialized, so concurrent logins of one
/// account get the same id; nothing is reserved while the store is failing.
async fn ensure_ship(s: &Shared, name: &str) -> Result<EntityId, LoginError> {
    let store = s.store.as_ref().ok_or_else(no_store)?;
    let _one_at_a_time = s.logins.ships.lock().await;
    let account = store
        .account(name)
        .await?
        .ok_or_else(|| LoginError::Unavailable("the account vanished".into()))?;
    if let Some(id) = account.ship_id {
        return Ok(EntityId(id as u64));
    }
    if !s.store_health.lock().expect("health lock").healthy {
        return Err(LoginError::Unavailable(
            "the world store is failing; no ship is reserved until it is back (retry shortly)"
                .into(),
        ));
    }
    let ship = {
        let mut a = s.authority.lock().expect("authority lock");
        // Only the id: the state is set where the ship is made.
        a.new_ship(sidereal_core::EntityState::default()).id
    };
    if !store.set_ship(name, Some(ship.0 as i64)).await? {
        return Err(LoginError::Unavailable("the account vanished".into()));
    }
    info!(%name, %ship, "ship reserved; it is made on the first connection");
    Ok(ship)
}

/// The login's answer: a connect token for a fresh session of the account's player, minted
/// into the session table (the gateway admits it against the player's and the address's limits).
fn reply(
    s: &Shared,
    key: &NetcodeKey,
    account: &Account,
    client: IpAddr,
) -> Result<LoginReply, LoginError> {
    let player_id = account.player_id.unwrap_or_default() as u64;
    // Linked gateways serve players when there are any; the embedded game port otherwise.
    let mut gateways = s.gateways.lock().expect("gateways lock");
    // Each gateway holds an address to the limit for its own sessions; across the fleet, a
    // login is refused while the address has that many players in the world already (this
    // player's own session aside: logging in again replaces it).
    let per_address = s.sessions.lock().limits().per_address;
    if !gateways.is_empty() && gateways.playing_from(client, player_id) >= per_address {
        return Err(LoginError::AddressFull(per_address));
    }
    let (servers, websocket) = gateways.token_servers().unwrap_or_else(|| {
        (
            s.logins.config.servers.clone(),
            s.logins.config.websocket_servers.clone(),
        )
    });
    // One token for both transports: netcode accepts it at any address it names.
    let all: Vec<SocketAddr> = servers.iter().chain(&websocket).copied().collect();
    let ship = account.ship_id.unwrap_or_default() as u64;
    let session = token::session_id();
    let (bytes, expires_at) = token::issue(
        key,
        &all,
        session,
        player_id,
        ship,
        s.logins.config.token_valid_for,
    )
    .map_err(|e| LoginError::Unavailable(e.to_string()))?;
    s.sessions
        .lock()
        .minted(session, player_id, client, Instant::now());
    // The gateways admit the session's connection against its player's and address's limits.
    gateways.minted(player_id, client);
    gateways.tell_all(&AuthorityMessage::Minted {
        session,
        player_id,
        address: client,
    });
    drop(gateways);
    Ok(LoginReply {
        name: account.name.clone(),
        player_id,
        ship,
        token: base64::engine::general_purpose::STANDARD.encode(bytes),
        expires_at,
        servers: servers.iter().map(ToString::to_string).collect(),
        websocket: websocket.iter().map(ToString::to_string).collect(),
    })
}

/// A random non-zero 63-bit id (it is stored in a signed BIGINT).
fn new_player_id() -> i64 {
    let b = token::random_bytes();
    let id = i64::from_le_bytes(b[..8].try_into().expect("8 bytes")) & i64::MAX;
    id.max(1)
}

fn no_key() -> LoginError {
    LoginError::Unavailable("no netcode key is configured (SIDEREAL_NETCODE_KEY)".into())
}

fn no_store() -> LoginError {
    LoginError::Unavailable("replication runs without a store".into())
}
