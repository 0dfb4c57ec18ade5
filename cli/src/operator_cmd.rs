//! `sidereal operator`: the Kubernetes operator, with `/metrics` and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use clap::Args;
use sidereal_operator::context::{Metrics, counting_client};
use sidereal_operator::leader::{self, Election};
use sidereal_operator::{Context, controller, shardpool};

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
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease: replicas sharing it elect one leader.
    #[arg(long, default_value = "sidereal-operator")]
    pub lease_name: String,
    /// Seconds a leader that stopped renewing keeps the lease (a successor waits this long).
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// This replica's name in the lease (default: the pod name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let metrics = Metrics::default();
        let client = counting_client(&metrics)
            .await
            .context("connecting to Kubernetes (KUBECONFIG, or the pod's service account)")?;
        let listener = tokio::net::TcpListener::bind(args.metrics)
            .await
            .with_context(|| format!("binding {}", args.metrics))?;
        let registry = metrics.registry.clone();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            // Ready whether leading or standing by: a follower is healthy, it just waits.
            .route("/readyz", get(|| async { "ok" }))
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
        let identity = args.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        anyhow::ensure!(
            args.lease_duration >= 3,
            "--lease-duration must be at least 3 seconds"
        );
        let election = Election {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity,
            duration: std::time::Duration::from_secs(args.lease_duration),
        };
        let leader_gauge = metrics.leader.clone();
        let ctx = Arc::new(Context::new(client.clone(), metrics));
        // Only the leader runs the controllers; SIGTERM/SIGINT stops them and gives the lease up.
        let namespaces = args.namespaces.clone();
        let work = move || {
            let (ctx, namespaces) = (ctx.clone(), namespaces.clone());
            async move {
                let never = std::future::pending::<()>;
                tokio::join!(
                    controller::run(ctx.clone(), namespaces.clone(), never()),
                    shardpool::run(ctx, namespaces, never()),
                );
            }
        };
        leader::run(client, election, leader_gauge, work, shutdown_signal()).await;
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
