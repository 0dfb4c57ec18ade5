//! The I/O shell around the authority: the shard-link TCP server, the shadow ticker and the
//! HTTP control API, all on one tokio runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sidereal_core::protocol::{FrameReader, ReplicationMessage, ShardMessage, encode_frame};
use sidereal_core::{EntityId, EntityKind, EntitySnapshot, EntityState, ShardId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::authority::{Authority, AuthorityConfig, LinkId};
use crate::metrics::Metrics;

/// A shard must say Hello within this long after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub http: SocketAddr,
    pub link: SocketAddr,
    pub authority: AuthorityConfig,
    /// Entities scattered over the world when the mirror starts empty.
    pub seed_entities: usize,
    pub seed: u64,
}

/// State shared by the link tasks, the ticker and the HTTP handlers.
pub struct Shared {
    pub authority: Mutex<Authority>,
    pub metrics: Mutex<Metrics>,
    writers: Mutex<HashMap<LinkId, mpsc::UnboundedSender<ReplicationMessage>>>,
    pub started: Instant,
}

impl Shared {
    pub fn new(authority: Authority) -> Arc<Self> {
        Arc::new(Self {
            authority: Mutex::new(authority),
            metrics: Mutex::new(Metrics::new()),
            writers: Mutex::new(HashMap::new()),
            started: Instant::now(),
        })
    }

    /// Routes everything the authority queued to the links' writer tasks.
    pub fn flush(&self, a: &mut Authority) {
        let out = a.take_outbox();
        if out.is_empty() {
            return;
        }
        let writers = self.writers.lock().expect("writers lock");
        for (link, msg) in out {
            if let Some(w) = writers.get(&link) {
                let _ = w.send(msg);
            }
        }
    }
}

/// The bound addresses of a running replication server.
pub struct Running {
    pub http: SocketAddr,
    pub link: SocketAddr,
    pub shared: Arc<Shared>,
}

/// Scatters `n` drifting entities over the world's roots, owned by nobody until placed.
pub fn seed_world(a: &mut Authority, n: usize, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let world = a.config().world.clone();
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

/// Binds both listeners and serves until `shutdown` resolves.
pub async fn start(
    config: ReplicationConfig,
) -> std::io::Result<(Running, tokio::task::JoinHandle<()>)> {
    let mut authority = Authority::new(config.authority.clone());
    if authority.mirror().is_empty() && config.seed_entities > 0 {
        seed_world(&mut authority, config.seed_entities, config.seed);
    }
    let shared = Shared::new(authority);
    let link_listener = TcpListener::bind(config.link).await?;
    let http_listener = TcpListener::bind(config.http).await?;
    let running = Running {
        http: http_listener.local_addr()?,
        link: link_listener.local_addr()?,
        shared: shared.clone(),
    };
    info!(http = %running.http, link = %running.link, "replication listening");

    let s = shared.clone();
    let accept = tokio::spawn(async move {
        loop {
            match link_listener.accept().await {
                Ok((stream, peer)) => {
                    let s = s.clone();
                    tokio::spawn(async move { serve_link(s, stream, peer).await });
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
        }
    });
    let app = crate::api::router(shared.clone());
    let http = tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, app).await {
            warn!(error = %e, "http server stopped");
        }
    });
    let all = tokio::spawn(async move {
        let _ = tokio::join!(accept, ticker, http);
    });
    Ok((running, all))
}

async fn serve_link(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let link = shared.authority.lock().expect("authority lock").connect();
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ReplicationMessage>();
    shared
        .writers
        .lock()
        .expect("writers lock")
        .insert(link, tx);
    let metrics_out = shared.clone();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            buf.clear();
            buf.extend(encode_frame(&first));
            while let Ok(m) = rx.try_recv() {
                buf.extend(encode_frame(&m));
            }
            metrics_out
                .metrics
                .lock()
                .expect("metrics lock")
                .link_bytes
                .with_label_values(&["out"])
                .inc_by(buf.len() as u64);
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let reason = read_link(&shared, link, &mut rd).await;
    let shard = {
        let mut a = shared.authority.lock().expect("authority lock");
        let shard = a.shard_of(link).cloned();
        if reason.is_some() {
            a.counters.links_rejected += 1;
        }
        a.disconnect(link);
        shared.flush(&mut a);
        shard
    };
    match reason {
        Some(r) => warn!(%peer, shard = ?shard.map(|s| s.0), reason = %r, "closing shard link"),
        None => info!(%peer, shard = ?shard.map(|s| s.0), "shard link closed by peer"),
    }
    // Dropping the sender lets the writer flush what is queued (a Rejected reason) and close.
    shared.writers.lock().expect("writers lock").remove(&link);
    let _ = writer.await;
}

/// Reads frames until the peer closes (`None`) or the link must be closed (`Some(reason)`).
async fn read_link(
    shared: &Shared,
    link: LinkId,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
) -> Option<String> {
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let linked = shared
            .authority
            .lock()
            .expect("authority lock")
            .shard_of(link)
            .is_some();
        let read = if linked {
            rd.read(&mut buf).await
        } else {
            match tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                rd.read(&mut buf),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => return Some(format!("no Hello within {HANDSHAKE_TIMEOUT:?}")),
            }
        };
        let n = match read {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => return Some(format!("read error: {e}")),
        };
        shared
            .metrics
            .lock()
            .expect("metrics lock")
            .link_bytes
            .with_label_values(&["in"])
            .inc_by(n as u64);
        reader.push(&buf[..n]);
        loop {
            let msg = match reader.next_frame::<ShardMessage>() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return Some(e.to_string()),
            };
            let mut a = shared.authority.lock().expect("authority lock");
            let result = a.on_message(link, msg);
            shared.flush(&mut a);
            if let Err(e) = result {
                return Some(e.to_string());
            }
        }
    }
}
