//! What a standby serves while it waits to lead: `/healthz` and `/readyz` (it is alive and
//! ready to take over, so a Deployment's rollout can count it) and `/metrics` saying it does not
//! lead. Nothing else: the control API, logins and links are the leader's. Only where each
//! replica has an address of its own (`--standby-probes`, a pod): beside the leader on one
//! machine (`sidereal up`) it would hold the address the standby needs once it takes over.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{debug, info};

/// The standby's HTTP server; [`StandbyHttp::stop`] frees the address for the leader's.
pub struct StandbyHttp {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl StandbyHttp {
    /// Serves on `addr` if it is free; `None` if another process (the leader) holds it.
    pub async fn serve(addr: SocketAddr) -> Option<Self> {
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
                get(|| async {
                    "# HELP sidereal_leading 1 while this replication leads the store, 0 while it stands by\n\
                     # TYPE sidereal_leading gauge\n\
                     sidereal_leading 0\n"
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
