//! `sidereal shard`: connect to replication, simulate, serve /metrics and /healthz.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sidereal_core::ShardId;
use sidereal_core::link_socket::parse_link_timeout;
use sidereal_core::protocol::MAX_FRAME_BYTES;
use sidereal_core::stream_client::FeedOptions;
use sidereal_shard::metrics::ShardMetrics;
use sidereal_shard::shadows::NeighbourFeed;
use sidereal_shard::status::{StatusBoard, StatusPlugin};
use sidereal_shard::{Clock, ShardConfig, build_app, stream_server, tcp};

#[derive(Args, Debug, Clone)]
pub struct ShardArgs {
    /// This shard's name (the pod name under Kubernetes).
    #[arg(long, env = "SIDEREAL_SHARD_ID")]
    pub id: String,
    /// Replication's shard-link address.
    #[arg(
        long,
        env = "SIDEREAL_REPLICATION_ADDR",
        default_value = "127.0.0.1:7701"
    )]
    pub replication: String,
    #[arg(long, env = "SIDEREAL_SHARD_SECRET", hide_env_values = true)]
    pub secret: String,
    /// /metrics and /healthz.
    #[arg(long, env = "SIDEREAL_SHARD_METRICS", default_value = "127.0.0.1:9100")]
    pub metrics: SocketAddr,
    #[arg(long, default_value_t = 30)]
    pub tick_hz: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Ships fire a projectile about every this many ticks (0: never).
    #[arg(long, default_value_t = 90)]
    pub fire_every_ticks: u32,
    /// Seconds of silence from replication (it sends every shard its shadows each tick) after
    /// which this shard takes its link for dead and dials again; also the longest a write may
    /// take. Set the same on replication.
    #[arg(long, env = "SIDEREAL_LINK_TIMEOUT", default_value = "3", value_parser = parse_link_timeout)]
    pub link_timeout: Duration,
    /// Largest shard-link frame in bytes, sent or accepted; longer messages are sent in parts.
    /// Set the same on replication.
    #[arg(long, default_value_t = MAX_FRAME_BYTES, value_parser = crate::replication_cmd::parse_max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Where to serve this shard's sector streams (gateways and neighbours subscribe there);
    /// `off` serves none. A port of 0 picks a free one.
    #[arg(long, env = "SIDEREAL_SHARD_STREAM", default_value = "127.0.0.1:0")]
    pub stream: String,
    /// The address subscribers are told to use (`host:port`, e.g. the pod IP under
    /// Kubernetes); by default the bound address, which then must not be a wildcard.
    #[arg(long, env = "SIDEREAL_SHARD_STREAM_ADVERTISE")]
    pub stream_advertise: Option<String>,
    /// Keep retrying to reach replication for this long at start.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// After a link dies, keep simulating and dialling replication again (a standby that takes
    /// over binds the same address) for this long before exiting. Each new link resumes: the
    /// shard's entities are kept, not reloaded from the store.
    #[arg(long, env = "SIDEREAL_RELINK_TIMEOUT", default_value = "30", value_parser = parse_secs)]
    pub relink_timeout: Duration,
}

/// Starts the sector streams' server unless `--stream off`: the address to advertise and the
/// hub for the app.
fn serve_streams(
    args: &ShardArgs,
    shard: &ShardId,
) -> anyhow::Result<(Option<String>, Option<sidereal_shard::streams::StreamHub>)> {
    if args.stream == "off" {
        return Ok((None, None));
    }
    let config = stream_server::StreamServerConfig {
        shard: shard.clone(),
        secret: args.secret.clone(),
        tick_hz: args.tick_hz,
        timeout: args.link_timeout,
        max_frame_bytes: args.max_frame_bytes,
    };
    let (bound, hub) = stream_server::serve(&args.stream, config)
        .with_context(|| format!("cannot serve sector streams on {}", args.stream))?;
    let advertised = match &args.stream_advertise {
        Some(a) => a.clone(),
        None if bound.ip().is_unspecified() => anyhow::bail!(
            "--stream {} binds every address: say which one subscribers use with --stream-advertise",
            args.stream
        ),
        None => bound.to_string(),
    };
    Ok((Some(advertised), Some(hub)))
}

pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    // try_from: a value too big for a Duration (1e300) is refused instead of panicking.
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

pub fn run(args: ShardArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=240).contains(&args.tick_hz),
        "--tick-hz must be within 1..=240"
    );
    let shard = ShardId::new(args.id.clone());
    let (publishing, hub) = serve_streams(&args, &shard)?;
    let dialer = tcp::Dialer {
        addr: args.replication.clone(),
        shard: shard.clone(),
        secret: args.secret.clone(),
        options: tcp::LinkOptions {
            timeout: args.link_timeout,
            max_frame_bytes: args.max_frame_bytes,
        },
        publishing,
        relink_timeout: args.relink_timeout,
    };
    let deadline = Instant::now() + args.connect_timeout;
    let mut backoff = Duration::from_millis(100);
    let link = loop {
        match tcp::connect(dialer.clone()) {
            Ok(l) => break l,
            // A rejection will not change by retrying.
            Err(e @ tcp::ConnectError::Rejected(_)) => return Err(e.into()),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "replication not reachable yet; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let board = StatusBoard {
        health: link.health.clone(),
    };
    let config = ShardConfig {
        name: shard.0.clone(),
        tick_hz: args.tick_hz,
        seed: args.seed,
        fire_every_ticks: args.fire_every_ticks,
    };
    let mut app = build_app(config, link.link, Clock::RealTime);
    if let Some(hub) = hub {
        app.insert_resource(hub);
        // A shard that publishes streams can take its shadows from its neighbours' (when
        // replication says every shard publishes).
        app.insert_resource(NeighbourFeed::new(
            &shard.0,
            &args.secret,
            FeedOptions {
                timeout: args.link_timeout,
                max_frame_bytes: args.max_frame_bytes,
                band: None,
            },
        ));
    }
    let metrics = app.world().resource::<ShardMetrics>().clone();
    // /healthz answers 503 once the link is given up (not while dialling again).
    let health = board.health.clone();
    crate::metrics_http::serve(
        args.metrics,
        move || !health.given_up.load(std::sync::atomic::Ordering::SeqCst),
        move || metrics.render(),
    )?;
    app.add_plugins(StatusPlugin(board));
    match app.run() {
        bevy::app::AppExit::Success => Ok(()),
        bevy::app::AppExit::Error(code) => anyhow::bail!("shard {shard} stopped (code {code})"),
    }
}
