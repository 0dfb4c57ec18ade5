//! What a standby serves while it waits to lead: `/healthz` and `/readyz` (it is alive and
//! ready to take over, so a Deployment's rollout can count it) and `/metrics` saying it does not
//! lead and how far it has followed the store. Nothing else: the control API, logins and links are the leader's. Only where each
//! replica has an address of its own (`--standby-probes`, a pod): beside the leader on one
//! machine (`sidereal up`) it would hold the address the standby needs once it takes over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use prometheus::core::Collector;
use prometheus::{Encoder, Gauge, Opts, TextEncoder};
use tokio::net::TcpListener;
use tracing::{debug, info};

/// How far a standby has followed the store (its `/metrics`).
#[derive(Debug, Default)]
pub struct FollowStatus {
    entities: AtomicU64,
    through: AtomicI64,
    /// When the last read succeeded, milliseconds since 1970 (0: never).
    read_at_ms: AtomicU64,
}

impl FollowStatus {
    /// A read succeeded: `entities` rows held, read through change `through`.
    pub fn followed(&self, entities: usize, through: i64) {
        self.entities.store(entities as u64, Ordering::Relaxed);
        self.through.store(through, Ordering::Relaxed);
        self.read_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The Prometheus text of the standby's metrics.
    pub fn metrics(&self) -> String {
        let read_at = self.read_at_ms.load(Ordering::Relaxed);
        let age = match read_at {
            0 => f64::INFINITY,
            t => now_ms().saturating_sub(t) as f64 / 1000.0,
        };
        let gauge = |name: &str, help: &str, v: f64| {
            let g = Gauge::with_opts(Opts::new(name, help).namespace("sidereal")).expect("valid");
            g.set(v);
            g.collect()
        };
        let families = [
            gauge(
                "leading",
                "1 while this replication leads the store, 0 while it stands by",
                0.0,
            ),
            gauge(
                "standby_followed_entities",
                "Stored entities a standby holds, read from the store while it waits",
                self.entities.load(Ordering::Relaxed) as f64,
            ),
            gauge(
                "standby_followed_change",
                "The store's change number a standby has read through",
                self.through.load(Ordering::Relaxed) as f64,
            ),
            gauge(
                "standby_follow_age_seconds",
                "Seconds since a standby last read the store's changes (+Inf: never)",
                age,
            ),
        ]
        .concat();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "cannot encode the standby's metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The standby's HTTP server; [`StandbyHttp::stop`] frees the address for the leader's.
pub struct StandbyHttp {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl StandbyHttp {
    /// Serves on `addr` if it is free; `None` if another process (the leader) holds it.
    pub async fn serve(addr: SocketAddr, status: Arc<FollowStatus>) -> Option<Self> {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                debug!(%addr, error = %e, "standby: the address is taken (the leader's); serving nothing while waiting");
                return None;
            }
        };
        info!(%addr, "standby: serving /healthz, /readyz and /metrics while waiting");
        let app = Router::new()
            .route("/healthz", get(|| async { "ok: standby" }))
            .route(
                "/readyz",
                get(|| async { "ready: standby, following the store to take over" }),
            )
            .route(
                "/metrics",
                get(move || {
                    let status = status.clone();
                    async move { status.metrics() }
                }),
            );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Some(Self { stop, task })
    }

    /// Stops serving and waits until the address is free again.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
