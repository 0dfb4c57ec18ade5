//! The I/O shell around the authority: the shard-link TCP server, the shadow ticker and the
//! HTTP control API, all on one tokio runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sidereal_core::handshake::fresh_nonce;
use sidereal_core::link_socket;
use sidereal_core::protocol::{FrameReader, MAX_HELLO_FRAME_BYTES, ShardMessage, encode_frame};
use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState, ShardId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::authority::{Authority, AuthorityConfig, LinkId};
use crate::gateway::{self, GatewayConfig, Views};
use crate::link_outbox::{LinkOutbox, OutboxFailure};
pub use crate::link_settings::{HANDSHAKE_TIMEOUT, LinkSettings, MAX_HANDSHAKES_IN_FLIGHT};
use crate::login::LoginConfig;
use crate::players::on_gateway_event;
use crate::ports::{resolve_tcp, resolve_udp};
use crate::state::Shared;
use crate::store::{Store, StoreError};
use crate::store_follower::StoreFollower;

/// How often the leader renews its lease on the store.
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(1);

/// The longest a checkpoint waits for shards to answer its report round: a shard that is
/// slower than this (or died) does not hold up everyone else's rows.
const REPORT_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub http: SocketAddr,
    /// A second HTTP listener with only the players' login and `/healthz`, for exposing to the
    /// internet while the control API stays private; `None` serves login on `http` alone.
    pub public_http: Option<SocketAddr>,
    /// Certificate and key for TLS on `public_http` (HTTPS) and the WebSocket game port
    /// (`wss://`), reloaded when the files change; `None` serves them in clear.
    pub tls: Option<crate::tls::TlsFiles>,
    pub link: SocketAddr,
    pub link_settings: LinkSettings,
    pub authority: AuthorityConfig,
    /// Entities scattered over the world when the store holds none.
    pub seed_entities: usize,
    pub seed: u64,
    /// Postgres URL; `None` means the SQLite file in `data_dir`.
    pub database_url: Option<String>,
    pub data_dir: std::path::PathBuf,
    pub checkpoint_interval: Duration,
    /// Start as a standby: wait (before binding anything) until the store's leader is gone,
    /// then take the store over and serve.
    pub standby: bool,
    /// While standing by, serve /healthz, /readyz and /metrics on the `http` address: only
    /// where each replica has its own address (a pod), never beside the leader on one machine.
    pub standby_probes: bool,
    /// How long a leader's lease on the store lasts unrenewed (it renews every second).
    pub leader_lease: Duration,
    /// How long a replication that found a placement in the store waits for its shards to
    /// link again (resuming with what they simulated) before accepting placement changes.
    pub takeover_grace: Duration,
    /// Label this pod `sidereal.dev/role=standby|leader` through the Kubernetes API (the
    /// chart's Services select the leader by it).
    pub label_pod: Option<crate::pod_role::PodRef>,
    /// Bearer token every control endpoint requires (`/v1/...`).
    pub control_token: String,
    /// The players' login API.
    pub login: LoginConfig,
    /// The game port; `None` serves no players (tests of the shard side).
    pub gateway: Option<GatewayConfig>,
    /// Game-port sessions per player and per address.
    pub sessions: crate::rules::sessions::SessionLimits,
    /// Where `sidereal gateway` processes link; `None` takes none.
    pub gateway_link: Option<SocketAddr>,
}

/// The bound addresses of a running replication server.
pub struct Running {
    pub http: SocketAddr,
    pub public_http: Option<SocketAddr>,
    pub link: SocketAddr,
    /// The game port (UDP), when players are served.
    pub game: Option<SocketAddr>,
    /// The game port over WebSocket, when players are served and it is on.
    pub game_ws: Option<SocketAddr>,
    /// The gateway link's listener, when gateways are taken.
    pub gateway_link: Option<SocketAddr>,
    pub shared: Arc<Shared>,
}

/// Scatters `n` drifting entities over the world's roots, owned by nobody until placed.
pub fn seed_world(a: &mut Authority, n: usize, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let world = a.world().to_vec();
    for i in 0..n {
        let b = world[i % world.len()].bounds();
        let kind = if i % 10 == 0 {
            EntityKind::Ship
        } else {
            EntityKind::Asteroid
        };
        let state = EntityState {
            pos: [
                rng.random_range(b.min.x + 10.0..b.max.x - 10.0) as f32,
                rng.random_range(b.min.y + 10.0..b.max.y - 10.0) as f32,
            ],
            vel: [rng.random_range(-40.0..40.0), rng.random_range(-40.0..40.0)],
            angle: rng.random_range(-3.0..3.0),
            ang_vel: rng.random_range(-0.5..0.5),
        };
        let snap = EntitySnapshot {
            id: EntityId::minted(0, i as u64 + 1),
            kind,
            state,
            ttl_ticks: None,
            player: false,
        };
        a.restore_entity(snap, ShardId::new("unplaced"));
    }
    info!(entities = n, "seeded an empty world");
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot bind: {0}")]
    Bind(#[from] std::io::Error),
    #[error("--label-pod: {0}")]
    PodRole(#[from] crate::pod_role::PodRoleError),
}

/// Labels the pod with `role` where it labels itself; a failure is logged, not fatal (the
/// Services then keep routing as they did).
async fn set_pod_role(role: Option<&Arc<crate::pod_role::PodRole>>, name: &str) {
    if let Some(r) = role
        && let Err(e) = r.set(name).await
    {
        warn!(error = %e, role = name, "cannot label this pod");
    }
}

/// Link incarnations a leader reserves in the store at a time (it reserves more once half are
/// used; a block lasts thousands of shard links).
pub const INCARNATION_BLOCK: u32 = 4096;

/// Reserves the next block of incarnations in the store and lets the authority hand them out.
async fn reserve_incarnations(store: &Store, authority: &mut Authority) -> Result<(), StoreError> {
    let limit = authority
        .next_incarnation()
        .saturating_add(INCARNATION_BLOCK);
    store.reserve_incarnations(limit).await?;
    authority.set_incarnation_limit(limit);
    Ok(())
}

/// Reserves another block once half the current one is used.
async fn top_up_incarnations(
    store: &Store,
    authority: &std::sync::Mutex<Authority>,
) -> Result<(), StoreError> {
    let (next, limit) = {
        let a = authority.lock().expect("authority lock");
        (a.next_incarnation(), a.incarnation_limit())
    };
    if next.saturating_add(INCARNATION_BLOCK / 2) < limit {
        return Ok(());
    }
    let limit = next.saturating_add(INCARNATION_BLOCK);
    store.reserve_incarnations(limit).await?;
    authority
        .lock()
        .expect("authority lock")
        .set_incarnation_limit(limit);
    Ok(())
}

/// One round of a standby following the store: reads what changed, and says how far it got
/// (a failure is logged at most every 10 s and retried next round).
async fn follow_store(
    store: &Store,
    follower: &mut StoreFollower,
    status: &crate::http::standby::FollowStatus,
    warned: &mut Option<Instant>,
) {
    let first = follower.through().is_none();
    let t = Instant::now();
    match follower.catch_up(store).await {
        Ok(read) => {
            status.followed(follower.len(), follower.through().unwrap_or(0));
            if first {
                info!(
                    entities = follower.len(),
                    read,
                    seconds = t.elapsed().as_secs_f64(),
                    "standby: read the world; following its changes"
                );
            }
        }
        Err(e) => {
            if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                warn!(error = %e, "standby: cannot follow the store; retrying");
                *warned = Some(Instant::now());
            }
        }
    }
}

/// Opens the store, restores the world (or seeds a new one, durably), binds both listeners and
/// serves.
pub async fn start(
    config: ReplicationConfig,
) -> Result<(Running, tokio::task::JoinHandle<()>), StartError> {
    let pod_role = config
        .label_pod
        .as_ref()
        .map(crate::pod_role::PodRole::new)
        .transpose()?
        .map(Arc::new);
    let store = Store::open(config.database_url.as_deref(), &config.data_dir).await?;
    // This replication leads the store from now on: one that took it before is deposed, and
    // its writes are refused (it steps down at its next checkpoint).
    let holder = format!(
        "{}/{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "replication".into()),
        std::process::id()
    );
    let mut follower = StoreFollower::default();
    let epoch = if config.standby {
        // A standby takes the store only once its leader is gone, and only if no other standby
        // took it first (compare-and-set on the lease).
        info!(lease = ?config.leader_lease, "standby: waiting for the store's leader to go");
        let status = Arc::new(crate::http::standby::FollowStatus::default());
        let probes = match config.standby_probes {
            true => crate::http::standby::StandbyHttp::serve(config.http, status.clone()).await,
            false => None,
        };
        set_pod_role(pod_role.as_ref(), "standby").await;
        // Warm: the world is read while waiting, so taking over reads only the last changes.
        let mut warned = None;
        let epoch = store
            .await_leadership(&holder, config.leader_lease, async || {
                follow_store(&store, &mut follower, &status, &mut warned).await;
                follower.through().is_some()
            })
            .await?;
        if let Some(p) = probes {
            p.stop().await;
        }
        info!("the store's leader is gone; taking over");
        epoch
    } else {
        store.take_leadership(&holder).await?
    };
    info!(backend = store.backend(), epoch, %holder, "store open; leading it");
    let mut authority = Authority::new(config.authority.clone());
    // What a standby followed is read on from where it stopped: the changes of its last
    // moment, written before the old leader was fenced out. A leader starting cold reads all.
    let t0 = Instant::now();
    let followed = follower.len();
    let read_at_start = follower.catch_up(&store).await?;
    let loaded = follower.into_world(&store, &config.authority.world).await?;
    for (id, reason) in &loaded.quarantined {
        warn!(id, %reason, "stored entity quarantined, not loaded");
    }
    let (restored, archived) = (loaded.live.len(), loaded.archived.len());
    authority.mirror_mut().restore(loaded.live, loaded.archived);
    if let Some(p) = loaded.placement {
        let shards = p.sectors.values().cloned().collect();
        if sidereal_core::placement::validate(&p.sectors, &loaded.world, &shards).is_ok() {
            authority.load_placement(p);
        } else {
            warn!("stored placement does not fit this world; waiting for a new one");
        }
    }
    let restore_time = t0.elapsed();
    info!(
        entities = restored,
        archived,
        roots = authority.world().len(),
        quarantined = loaded.quarantined.len(),
        generation = authority.placement().generation,
        followed,
        read_at_start,
        seconds = restore_time.as_secs_f64(),
        "world restored"
    );
    let seeded = authority.mirror().is_empty() && config.seed_entities > 0;
    if seeded {
        seed_world(&mut authority, config.seed_entities, config.seed);
    }
    let reserved_ships = store
        .max_account_ship()
        .await?
        .map_or(0, |id| (id as u64 >> EntityId::COUNTER_BITS) as u32);
    authority.reserve_incarnations_above(authority.max_incarnation().max(reserved_ships));
    // Shards that kept simulating under a former leader mint ids under the incarnations it gave
    // them: start above every one any leader reserved, and reserve a block ahead.
    let reserved = store.reserved_incarnations().await?;
    authority.reserve_incarnations_above(reserved.saturating_sub(1));
    reserve_incarnations(&store, &mut authority).await?;
    let taking_over = authority.begin_takeover();
    // The game port's real address (a port of 0 picks a free one) goes into connect tokens
    // unless public addresses are configured.
    let game = match (&config.gateway, &config.login.netcode_key) {
        (Some(g), Some(_)) => Some(resolve_udp(g.udp)?),
        _ => None,
    };
    let game_ws = match (&config.gateway, game) {
        (Some(g), Some(_)) => g.websocket.map(resolve_tcp).transpose()?,
        _ => None,
    };
    if game.is_none() {
        // No game port serves players from the mirror: the authority needs entity state only
        // for checkpoints, so shards that shadow themselves report it when a checkpoint asks
        // instead of every tick.
        authority.set_report_every(0);
    }
    let mut login = config.login.clone();
    if login.servers.is_empty() {
        login.servers.extend(game);
    }
    if login.websocket_servers.is_empty() {
        login.websocket_servers.extend(game_ws);
    }
    let shared = Shared::new(
        authority,
        Some(store),
        config.control_token.clone(),
        login,
        config.sessions,
    );
    {
        let mut health = shared.store_health.lock().expect("store health lock");
        health.rows_read_at_start = read_at_start as u64;
        health.restore_time = restore_time;
    }
    if seeded {
        // Spawns are durable before anyone sees them.
        shared.checkpoint().await?;
    }
    let tls = config.tls.as_ref().map(PublicTls::open).transpose()?;
    if let Some(t) = &tls {
        tokio::spawn(t.cert.clone().watch());
    }
    let link_listener = TcpListener::bind(config.link).await?;
    let http_listener = TcpListener::bind(config.http).await?;
    let gateway_listener = match config.gateway_link {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let public_listener = match config.public_http {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let running = Running {
        http: http_listener.local_addr()?,
        public_http: public_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?,
        link: link_listener.local_addr()?,
        game,
        game_ws,
        gateway_link: gateway_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?,
        shared: shared.clone(),
    };
    if let Some(listener) = gateway_listener {
        tokio::spawn(crate::gateway_link::serve(
            shared.clone(),
            listener,
            config.link_settings,
        ));
    }
    let views = match (&config.gateway, &config.login.netcode_key, game) {
        (Some(g), Some(key), Some(udp)) => {
            let (views_tx, views_rx) = crossbeam_channel::bounded::<Views>(2);
            let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
            gateway::spawn(
                GatewayConfig {
                    udp,
                    websocket: game_ws,
                    websocket_tls: tls.as_ref().map(|t| t.websocket.clone()),
                    public: shared
                        .logins
                        .servers()
                        .iter()
                        .chain(shared.logins.websocket_servers())
                        .copied()
                        .collect(),
                    ..g.clone()
                },
                key.0,
                gateway::GatewayIo {
                    views: views_rx,
                    events: events_tx,
                    elsewhere: None,
                    traffic: shared.game_traffic.clone(),
                    sessions: shared.sessions.clone(),
                },
            )?;
            let s = shared.clone();
            tokio::spawn(async move {
                while let Some(event) = events_rx.recv().await {
                    on_gateway_event(&s, event);
                }
            });
            Some((views_tx, f64::from(g.interest_radius)))
        }
        _ => None,
    };
    info!(http = %running.http, link = %running.link, "replication listening");
    if let Some(role) = pod_role {
        // Only now: the Services send everyone to the pod labelled leader.
        tokio::spawn(async move { role.set_until_done("leader").await });
    }

    let s = shared.clone();
    let settings = config.link_settings;
    let accept = tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES_IN_FLIGHT));
        loop {
            match link_listener.accept().await {
                Ok((stream, peer)) => {
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        s.authority
                            .lock()
                            .expect("authority lock")
                            .counters
                            .link_rejected("handshake_limit");
                        warn!(%peer, limit = MAX_HANDSHAKES_IN_FLIGHT, "too many handshakes in flight; closing");
                        continue;
                    };
                    let s = s.clone();
                    tokio::spawn(
                        async move { serve_link(s, stream, peer, permit, settings).await },
                    );
                }
                Err(e) => warn!(error = %e, "accept failed"),
            }
        }
    });
    let s = shared.clone();
    let tick_hz = config.authority.tick_hz.max(1);
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(tick_hz)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut tick = 0u64;
        loop {
            every.tick().await;
            tick += 1;
            let mut a = s.authority.lock().expect("authority lock");
            a.send_shadows(tick);
            s.flush(&mut a);
            if let Some((to_gateway, radius)) = &views {
                let per_player =
                    crate::rules::interest::views(a.mirror(), a.players(), *radius, tick);
                drop(a);
                // A full queue means the gateway is behind: it skips to the newest anyway.
                let _ = to_gateway.try_send(Views { tick, per_player });
            }
        }
    });
    let s = shared.clone();
    let lease = tokio::spawn(async move {
        let Some(store) = s.store.clone() else { return };
        let mut every = tokio::time::interval(LEASE_RENEW_EVERY);
        loop {
            every.tick().await;
            match store.renew_leadership().await {
                Ok(()) => {}
                Err(e) if e.is_deposed() => {
                    tracing::error!(error = %e, "deposed; stepping down");
                    s.step_down(e.to_string());
                    return;
                }
                Err(e) => warn!(error = %e, "cannot renew the lease on the store"),
            }
        }
    });
    if taking_over {
        let (s, grace) = (shared.clone(), config.takeover_grace);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let mut a = s.authority.lock().expect("authority lock");
            if let Some(outcome) = a.end_takeover() {
                warn!(?outcome, grace = ?grace, "takeover grace over");
            }
            s.flush(&mut a);
        });
    }
    let s = shared.clone();
    let interval = config.checkpoint_interval;
    let checkpoints = tokio::spawn(async move {
        let mut wait = interval;
        loop {
            tokio::time::sleep(wait).await;
            s.gather_reports(REPORT_WAIT).await;
            let reserved = match &s.store {
                Some(store) => top_up_incarnations(store, &s.authority).await,
                None => Ok(()),
            };
            match reserved.and(s.checkpoint().await.map(|_| ())) {
                Ok(_) => wait = interval,
                Err(e) if e.is_deposed() => {
                    // Another replication leads the store: nothing here may be written again.
                    tracing::error!(error = %e, "deposed; stepping down");
                    s.step_down(e.to_string());
                    return;
                }
                Err(e) => {
                    let backlog = s
                        .authority
                        .lock()
                        .expect("authority lock")
                        .mirror()
                        .dirty_len();
                    wait = (wait * 2).min(Duration::from_secs(5));
                    warn!(error = %e, backlog, retry_in = ?wait, "checkpoint failed; keeping the backlog and retrying");
                }
            }
        }
    });
    let app = crate::http::api::router(shared.clone());
    let http = tokio::spawn(async move {
        // Client addresses feed the login rate limits.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(http_listener, app).await {
            warn!(error = %e, "http server stopped");
        }
    });
    let public = public_listener.map(|listener| {
        let router = crate::http::api::public_router(shared.clone());
        match &tls {
            Some(tls) => tokio::spawn(serve_https(listener, router, tls.login.clone())),
            None => {
                let app = router.into_make_service_with_connect_info::<SocketAddr>();
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        warn!(error = %e, "public http server stopped");
                    }
                })
            }
        }
    });
    let all = tokio::spawn(async move {
        let public = async move {
            if let Some(p) = public {
                let _ = p.await;
            }
        };
        let _ = tokio::join!(accept, ticker, http, checkpoints, lease, public);
    });
    Ok((running, all))
}

async fn serve_link(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    handshake: OwnedSemaphorePermit,
    settings: LinkSettings,
) {
    if let Err(e) = link_socket::harden(&stream, settings.timeout) {
        warn!(%peer, error = %e, "cannot set keepalive on a shard link");
    }
    let (mut rd, wr) = stream.into_split();
    let outbox = Arc::new(LinkOutbox::default());
    let link = {
        let mut a = shared.authority.lock().expect("authority lock");
        let link = a.connect(fresh_nonce());
        shared.add_writer(link, outbox.clone());
        // The challenge goes out first.
        shared.flush(&mut a);
        link
    };
    let mut writer = tokio::spawn(write_link(shared.clone(), outbox.clone(), wr, settings));

    let close = read_link(&shared, link, &mut rd, &outbox, handshake, settings).await;
    let shard = {
        let mut a = shared.authority.lock().expect("authority lock");
        let shard = a.shard_of(link).cloned();
        // The authority counted the refusals it made; the shell counts its own.
        if let Some(reason) = close.rejected_here() {
            a.counters.link_rejected(reason);
        }
        if let Some(reason) = close.dropped_here() {
            a.counters.link_dropped(reason);
        }
        a.disconnect(link);
        shared.flush(&mut a);
        shard
    };
    let shard = shard.map(|s| s.0);
    match &close {
        LinkClose::PeerClosed => info!(%peer, ?shard, "shard link closed by peer"),
        LinkClose::Io(e) => warn!(%peer, ?shard, error = %e, "shard link broke"),
        _ => warn!(%peer, ?shard, reason = %close, "closing shard link"),
    }
    // Closing the outbox lets the writer flush what is queued (a Rejected reason) and close;
    // a peer that stopped reading gets no longer than the link timeout for that.
    shared.remove_writer(link);
    if tokio::time::timeout(settings.timeout, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Writes the link's outbox to the socket, each message in frames within the limit, until
/// the outbox closes. A write the peer does not take within the timeout fails the link.
async fn write_link(
    shared: Arc<Shared>,
    outbox: Arc<LinkOutbox>,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    settings: LinkSettings,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(batch) = outbox.next_batch().await {
        buf.clear();
        for msg in batch {
            for part in msg.split(settings.max_frame_bytes) {
                buf.extend(encode_frame(&part));
            }
        }
        shared
            .link_bytes
            .sent
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        match tokio::time::timeout(settings.timeout, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            // Broken: the reader sees it too.
            Ok(Err(_)) => break,
            Err(_) => {
                outbox.fail(OutboxFailure::WriteStalled);
                break;
            }
        }
    }
    let _ = tokio::time::timeout(settings.timeout, wr.shutdown()).await;
}

/// The public listeners' TLS: one certificate (reloaded on change) for login and `wss://`.
struct PublicTls {
    cert: Arc<crate::tls::ReloadingCert>,
    login: Arc<rustls::ServerConfig>,
    websocket: Arc<rustls::ServerConfig>,
}

impl PublicTls {
    fn open(files: &crate::tls::TlsFiles) -> Result<Self, crate::tls::TlsError> {
        let cert = crate::tls::ReloadingCert::open(files.clone())?;
        Ok(Self {
            login: crate::tls::server_config(cert.clone(), &[b"http/1.1"])?,
            websocket: crate::tls::server_config(cert.clone(), &[])?,
            cert,
        })
    }
}

/// Serves `router` over HTTPS: a TLS handshake (10 s at most) per connection, then HTTP/1.1,
/// with the client's address for the login limits.
/// Serves `router` over HTTPS on `listener` (the client's address as `ConnectInfo`).
pub async fn serve_https(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accept failed");
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    // Plain HTTP, a scanner, a client that does not trust the certificate.
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    tower::ServiceExt::oneshot(router.clone(), req)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Why a shard link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkClose {
    #[error("closed by the shard")]
    PeerClosed,
    /// The connection broke (a killed shard resets it): not the shard's input at fault.
    #[error("read error: {0}")]
    Io(std::io::Error),
    #[error("no Hello within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Nothing came for the link timeout: the shard is stopped, hung or cut off.
    #[error("nothing from the shard for {0:?}")]
    Silent(Duration),
    /// The shard stopped taking what replication sends.
    #[error("the shard cannot keep up ({0:?})")]
    Writer(OutboxFailure),
    /// The authority refused a message (and counted it).
    #[error(transparent)]
    Refused(#[from] crate::authority::LinkError),
}

impl LinkClose {
    /// The rejection label when this close is a rejection the shell itself detected.
    fn rejected_here(&self) -> Option<&'static str> {
        match self {
            LinkClose::HandshakeTimeout => Some("handshake_timeout"),
            LinkClose::Malformed(_) => Some("malformed_frame"),
            _ => None,
        }
    }

    /// The label of `sidereal_links_dropped_total` when the shard was dropped as dead or slow.
    fn dropped_here(&self) -> Option<&'static str> {
        match self {
            LinkClose::Silent(_) => Some("silent"),
            LinkClose::Writer(OutboxFailure::Backlog) => Some("backlog"),
            LinkClose::Writer(OutboxFailure::WriteStalled) => Some("write_stalled"),
            _ => None,
        }
    }
}

/// Reads frames until the peer closes or the link must be closed, and says why. Before the
/// handshake a frame may be at most [`MAX_HELLO_FRAME_BYTES`] and the peer has
/// [`HANDSHAKE_TIMEOUT`]; once linked, silence for the link timeout closes the link.
async fn read_link(
    shared: &Shared,
    link: LinkId,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    outbox: &LinkOutbox,
    handshake: OwnedSemaphorePermit,
    settings: LinkSettings,
) -> LinkClose {
    let mut reader = FrameReader::with_limit(MAX_HELLO_FRAME_BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut handshake = Some(handshake);
    loop {
        let linked = handshake.is_none();
        let wait = if linked {
            settings.timeout
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        let read = tokio::select! {
            r = tokio::time::timeout(wait, rd.read(&mut buf)) => r,
            why = outbox.failed() => return LinkClose::Writer(why),
        };
        let n = match read {
            Err(_) if linked => return LinkClose::Silent(settings.timeout),
            Err(_) => return LinkClose::HandshakeTimeout,
            Ok(Ok(0)) => return LinkClose::PeerClosed,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return LinkClose::Io(e),
        };
        shared
            .link_bytes
            .received
            .fetch_add(n as u64, Ordering::Relaxed);
        reader.push(&buf[..n]);
        loop {
            let msg = match reader.next_frame::<ShardMessage>() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return LinkClose::Malformed(e.to_string()),
            };
            let answered_report = matches!(msg, ShardMessage::Reported { .. });
            let mut a = shared.authority.lock().expect("authority lock");
            let result = a.on_message(link, msg);
            if answered_report {
                shared.reports.notify_waiters();
            }
            if handshake.is_some() && a.shard_of(link).is_some() {
                // Linked: the handshake slot frees up and frames may be full size.
                handshake = None;
                reader.set_limit(settings.max_frame_bytes);
            }
            shared.flush(&mut a);
            if let Err(e) = result {
                return LinkClose::Refused(e);
            }
        }
        if handshake.is_some() && reader.buffered() > MAX_HELLO_FRAME_BYTES {
            return LinkClose::Malformed("more than a Hello before the handshake".into());
        }
    }
}
