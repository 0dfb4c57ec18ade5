//! The players' login API: `POST /v1/accounts` registers and `POST /v1/login` logs in; both
//! answer with a netcode connect token for the game ports and the player's ship. No control
//! token: the password is the proof. Floods, guessing and bad bodies get a 4xx and no token.

pub mod limits;
pub mod passwords;
pub mod token;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sidereal_core::control::ErrorView;
use sidereal_core::login::{CredentialsError, MAX_LOGIN_BODY_BYTES};
use tokio::sync::Semaphore;
use tracing::warn;

use self::limits::{FailureLock, RateLimiter};
use self::token::NetcodeKey;
use crate::rules::sessions::address_key;
use crate::store::StoreError;

/// Settings of the login API.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// Without a key, logins answer 503: there is nothing to sign tokens with.
    pub netcode_key: Option<NetcodeKey>,
    /// Game addresses written into tokens, in the order clients try them; empty means the
    /// game port's own address.
    pub servers: Vec<SocketAddr>,
    /// WebSocket game addresses written into tokens after the UDP ones; empty means the
    /// WebSocket port's own address.
    pub websocket_servers: Vec<SocketAddr>,
    /// How long a token may be used to open a connection.
    pub token_valid_for: Duration,
    /// Attempts per second per client address, and the burst allowed.
    pub per_client_rate: f64,
    pub per_client_burst: u32,
    /// New accounts the whole world takes per hour (and at most at once).
    pub registrations_per_hour: f64,
    /// Wrong passwords per account before it is locked, and the longest lock.
    pub free_failures: u32,
    pub max_lock: Duration,
    /// Password hashes computed at once (each takes ~20 MiB and a core for tens of ms).
    pub hashing_slots: usize,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            netcode_key: None,
            servers: Vec::new(),
            websocket_servers: Vec::new(),
            token_valid_for: Duration::from_secs(60),
            per_client_rate: 5.0,
            per_client_burst: 20,
            registrations_per_hour: 3600.0,
            free_failures: 5,
            max_lock: Duration::from_secs(15 * 60),
            // As many hashes at once as there are cores.
            hashing_slots: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

/// Every `result` label of `sidereal_logins_total`.
pub const LOGIN_RESULTS: [&str; 14] = [
    "created",
    "ok",
    "malformed",
    "too_large",
    "invalid",
    "name_taken",
    "wrong_credentials",
    "rate_limited",
    "locked",
    "busy",
    "in_progress",
    "budget",
    "address_full",
    "unavailable",
];

/// Why a registration or login got no token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("malformed request: {1}")]
    Malformed(StatusCode, String),
    #[error("request body larger than {MAX_LOGIN_BODY_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Invalid(#[from] CredentialsError),
    #[error("that name is taken")]
    NameTaken,
    #[error("wrong name or password")]
    WrongCredentials,
    #[error("too many attempts from this address; retry in {} ms", .0.as_millis().max(1))]
    RateLimited(Duration),
    #[error("too many wrong passwords for this account; retry in {} ms", .0.as_millis().max(1))]
    Locked(Duration),
    #[error("too many logins in progress; retry shortly")]
    Busy,
    /// The world's budget of new accounts is spent for now.
    #[error("no new accounts for now (the world's registration budget is spent); retry in {} s", .0.as_secs().max(1))]
    Budget(Duration),
    /// Guesses for one account are answered one at a time, so the lockout counts each.
    #[error("another login for this account is in progress; retry shortly")]
    InProgress,
    /// The address has this many players in the world already (on any gateway).
    #[error(
        "{0} players are in the world from this address already (its limit); retry when one leaves"
    )]
    AddressFull(usize),
    #[error("login unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        LoginError::Unavailable(format!("the world store failed: {e}"))
    }
}

impl From<JsonRejection> for LoginError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            LoginError::TooLarge
        } else {
            LoginError::Malformed(r.status(), r.body_text())
        }
    }
}

impl LoginError {
    pub fn label(&self) -> &'static str {
        match self {
            LoginError::Malformed(..) => "malformed",
            LoginError::TooLarge => "too_large",
            LoginError::Invalid(_) => "invalid",
            LoginError::NameTaken => "name_taken",
            LoginError::WrongCredentials => "wrong_credentials",
            LoginError::RateLimited(_) => "rate_limited",
            LoginError::Locked(_) => "locked",
            LoginError::Busy => "busy",
            LoginError::InProgress => "in_progress",
            LoginError::Budget(_) => "budget",
            LoginError::AddressFull(_) => "address_full",
            LoginError::Unavailable(_) => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            LoginError::Malformed(status, _) => *status,
            LoginError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            LoginError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            LoginError::NameTaken => StatusCode::CONFLICT,
            LoginError::WrongCredentials => StatusCode::UNAUTHORIZED,
            LoginError::RateLimited(_)
            | LoginError::Locked(_)
            | LoginError::Busy
            | LoginError::InProgress
            | LoginError::Budget(_)
            | LoginError::AddressFull(_) => StatusCode::TOO_MANY_REQUESTS,
            LoginError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        let retry = match &self {
            LoginError::RateLimited(d) | LoginError::Locked(d) | LoginError::Budget(d) => {
                Some(d.as_secs_f64().ceil())
            }
            LoginError::Busy | LoginError::InProgress => Some(1.0),
            _ => None,
        };
        let mut r = (
            self.status(),
            Json(ErrorView {
                error: self.to_string(),
            }),
        )
            .into_response();
        if let Some(secs) = retry {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                (secs.max(1.0) as u64).to_string().parse().expect("digits"),
            );
        }
        r
    }
}

/// The login API's state: its limits, its hashing slots and its counts.
pub struct Logins {
    pub(crate) config: LoginConfig,
    per_client: Mutex<RateLimiter<IpAddr>>,
    pub(crate) locks: Mutex<FailureLock>,
    hashing: Semaphore,
    /// New accounts the whole world takes: an hour's budget at most at once, refilling evenly.
    registrations: Mutex<RateLimiter<()>>,
    /// Accounts with a password check in progress: one at a time each.
    attempts: Mutex<HashSet<String>>,
    /// Addresses with a hash in progress: one at a time each, so a flood from a few addresses
    /// queues behind itself, not in front of everyone else.
    hashing_from: Mutex<HashSet<IpAddr>>,
    /// One ship creation at a time, so two logins of one account never make two ships.
    pub(crate) ships: tokio::sync::Mutex<()>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Logins {
    /// The game port addresses connect tokens name.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.config.servers
    }

    /// The WebSocket game addresses connect tokens name.
    pub fn websocket_servers(&self) -> &[SocketAddr] {
        &self.config.websocket_servers
    }

    pub fn new(config: LoginConfig) -> Self {
        if config.netcode_key.is_none() {
            warn!("no netcode key configured: logins answer 503 (set SIDEREAL_NETCODE_KEY)");
        }
        Self {
            per_client: Mutex::new(RateLimiter::new(
                config.per_client_rate,
                config.per_client_burst,
                100_000,
            )),
            locks: Mutex::new(FailureLock::new(config.free_failures, config.max_lock)),
            hashing: Semaphore::new(config.hashing_slots.max(1)),
            registrations: Mutex::new(RateLimiter::new(
                config.registrations_per_hour / 3600.0,
                config
                    .registrations_per_hour
                    .clamp(1.0, f64::from(u32::MAX)) as u32,
                1,
            )),
            attempts: Mutex::new(HashSet::new()),
            hashing_from: Mutex::new(HashSet::new()),
            ships: tokio::sync::Mutex::new(()),
            counts: Mutex::new(LOGIN_RESULTS.iter().map(|r| (*r, 0)).collect()),
            config,
        }
    }

    /// Attempts by result, for `/metrics`.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().expect("counts lock").clone()
    }

    pub(crate) fn count(&self, result: &'static str) {
        *self
            .counts
            .lock()
            .expect("counts lock")
            .entry(result)
            .or_default() += 1;
    }

    pub(crate) fn admit(&self, client: IpAddr) -> Result<(), LoginError> {
        self.per_client
            .lock()
            .expect("limiter lock")
            .take(&address_key(client), Instant::now())
            .map_err(LoginError::RateLimited)
    }

    /// Takes one new account from the world's registration budget.
    pub(crate) fn register_one(&self) -> Result<(), LoginError> {
        self.registrations
            .lock()
            .expect("registrations lock")
            .take(&(), Instant::now())
            .map_err(LoginError::Budget)
    }

    /// Claims the one password check `name` may have in progress, until the guard drops.
    pub(crate) fn attempt(&self, name: &str) -> Result<Claim<'_, String>, LoginError> {
        Claim::take(&self.attempts, name.to_owned()).ok_or(LoginError::InProgress)
    }

    /// Runs `f` (a hash or a verification) for `client` on the blocking pool in one of the
    /// hashing slots, one at a time per address.
    pub(crate) async fn hashing<T: Send + 'static>(
        &self,
        client: IpAddr,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LoginError> {
        let _mine = Claim::take(&self.hashing_from, address_key(client)).ok_or(LoginError::Busy)?;
        let _slot = tokio::time::timeout(Duration::from_secs(2), self.hashing.acquire())
            .await
            .map_err(|_| LoginError::Busy)?
            .map_err(|_| LoginError::Busy)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| LoginError::Unavailable(format!("hashing failed: {e}")))
    }
}

/// A key held in a shared set until dropped.
pub(crate) struct Claim<'a, K: Eq + std::hash::Hash> {
    set: &'a Mutex<HashSet<K>>,
    key: Option<K>,
}

impl<'a, K: Eq + std::hash::Hash + Clone> Claim<'a, K> {
    /// The claim on `key`, or `None` while someone else holds it.
    fn take(set: &'a Mutex<HashSet<K>>, key: K) -> Option<Self> {
        if !set.lock().expect("claims lock").insert(key.clone()) {
            return None;
        }
        Some(Self {
            set,
            key: Some(key),
        })
    }
}

impl<K: Eq + std::hash::Hash> Drop for Claim<'_, K> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.set.lock().expect("claims lock").remove(&k);
        }
    }
}
