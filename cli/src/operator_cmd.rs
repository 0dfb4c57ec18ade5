//! `sidereal operator`: the Kubernetes operator, with `/metrics` and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use clap::Args;
use sidereal_operator::context::Metrics;
use sidereal_operator::{Context, controller};

use crate::replication_cmd::shutdown_signal;

#[derive(Args, Clone, Debug)]
pub struct OperatorArgs {
    /// `/metrics` and `/healthz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics: SocketAddr,
    /// Watch only these namespaces, comma-separated or repeated (default: every namespace;
    /// each one is a world).
    #[arg(
        long = "namespace",
        env = "SIDEREAL_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
}

pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to Kubernetes (KUBECONFIG, or the pod's service account)")?;
        let metrics = Metrics::default();
        let listener = tokio::net::TcpListener::bind(args.metrics)
            .await
            .with_context(|| format!("binding {}", args.metrics))?;
        let registry = metrics.registry.clone();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/metrics",
                get(move || {
                    let text = render(&registry);
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            text,
                        )
                    }
                }),
            );
        println!("operator metrics=http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let ctx = Arc::new(Context::new(client, metrics));
        controller::run(ctx, args.namespaces, shutdown_signal()).await;
        Ok(())
    })
}

fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "encoding metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}
