//! `/healthz` and `/metrics` for a process whose work runs on threads of its own (a shard's
//! simulation, a bot swarm), served from a thread of their own so a slow scrape never delays it.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

/// Serves `healthy()` (200 or 503) on `/healthz` and `render()` (Prometheus text) on `/metrics`.
pub fn serve(
    addr: SocketAddr,
    healthy: impl Fn() -> bool + Clone + Send + Sync + 'static,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("binding metrics on {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app =
                    Router::new()
                        .route(
                            "/healthz",
                            get(move || {
                                let ok = healthy();
                                async move {
                                    if ok {
                                        (StatusCode::OK, "ok")
                                    } else {
                                        (StatusCode::SERVICE_UNAVAILABLE, "down")
                                    }
                                }
                            }),
                        )
                        .route(
                            "/metrics",
                            get(move || {
                                let text = render();
                                async move {
                                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
                                }
                            }),
                        );
                let _ = axum::serve(listener, app).await;
            });
        })?;
    Ok(bound)
}
