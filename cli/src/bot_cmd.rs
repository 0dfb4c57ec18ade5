//! `sidereal bot`: a swarm of headless players in one process.

use std::time::Duration;

use clap::Args;
use sidereal_client::latency::quantile;
use sidereal_client::swarm::{SwarmConfig, SwarmMetrics, SwarmReport, run_swarm};

#[derive(Args, Debug, Clone)]
pub struct BotArgs {
    /// How many bots.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// How many of them run the whole client (prediction, interpolation); the rest are light:
    /// they decode, acknowledge and pilot only, at a fraction of the CPU. Default: all.
    #[arg(long)]
    pub full_bots: Option<usize>,
    /// Replication's HTTP address (login).
    #[arg(
        long,
        env = "SIDEREAL_HTTP_URL",
        default_value = "http://127.0.0.1:7700"
    )]
    pub http: String,
    /// Bots are named `<prefix>-<i>`; a bot that exists logs in, one that does not registers.
    #[arg(long, default_value = "bot")]
    pub prefix: String,
    /// The bots' password.
    #[arg(
        long,
        env = "SIDEREAL_BOT_PASSWORD",
        default_value = "bots fly in circles",
        hide_env_values = true
    )]
    pub password: String,
    /// Seconds to fly; 0 flies until stopped.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    #[arg(long, default_value_t = 30)]
    pub tick_hz: u32,
    /// Serve the swarm's live metrics (bots connected, updates, state bytes, disconnects, chat,
    /// input-to-state latency) on this address at /metrics.
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// A certificate (PEM) to trust for an https:// --http besides the system's roots (a
    /// private CA, a self-signed test certificate).
    #[arg(long, env = "SIDEREAL_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
}

pub fn run(args: BotArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=10_000).contains(&args.count),
        "--count must be within 1..=10000"
    );
    let config = SwarmConfig {
        http: args.http.trim_end_matches('/').to_owned(),
        count: args.count,
        prefix: args.prefix,
        password: args.password,
        duration: (args.duration > 0).then(|| Duration::from_secs(args.duration)),
        tick_hz: args.tick_hz,
        metrics: None,
        full_bots: args.full_bots.unwrap_or(args.count),
        tls_ca: args
            .tls_ca
            .as_ref()
            .map(|p| {
                std::fs::read(p)
                    .map_err(|e| anyhow::anyhow!("reading --tls-ca {}: {e}", p.display()))
            })
            .transpose()?,
    };
    let mut config = config;
    if let Some(addr) = args.metrics {
        let metrics = SwarmMetrics::default();
        let m = metrics.clone();
        let bound = crate::metrics_http::serve(addr, || true, move || m.render())?;
        println!("bot metrics=http://{bound}/metrics");
        config.metrics = Some(metrics);
    }
    let report = run_swarm(&config)?;
    print!("{}", table(&report));
    Ok(())
}

fn latencies(b: &sidereal_client::swarm::BotReport) -> Vec<Duration> {
    b.latency.iter().map(|s| s.latency).collect()
}

/// The per-bot table, then one machine-readable summary line.
pub fn table(r: &SwarmReport) -> String {
    let mut out = format!(
        "{:<16} {:>10} {:>10} {:>9} {:>12} {:>10} {:>8} {:>8} {:>10} {:>9} {:>11}\n",
        "bot",
        "connect_ms",
        "updates/s",
        "visible",
        "interpolated",
        "state_kB/s",
        "p50_ms",
        "p99_ms",
        "distance",
        "rollbacks",
        "disconnects"
    );
    let ms = |d: Option<Duration>| d.map_or_else(|| "-".into(), |d| d.as_millis().to_string());
    for b in &r.bots {
        out += &format!(
            "{:<16} {:>10} {:>10.1} {:>9.1} {:>12} {:>10.2} {:>8} {:>8} {:>10.0} {:>9} {:>11}\n",
            b.name,
            b.connect_time
                .map(|d| d.as_millis().to_string())
                .unwrap_or_else(|| "never".into()),
            b.updates as f64 / r.seconds.max(0.001),
            b.mean_visible,
            b.interpolated,
            b.state_bytes as f64 / 1000.0 / r.seconds.max(0.001),
            ms(quantile(&latencies(b), 0.5)),
            ms(quantile(&latencies(b), 0.99)),
            b.distance,
            if b.predicted {
                b.rollbacks.to_string()
            } else {
                "-".into()
            },
            b.disconnects
        );
    }
    let moved = r.bots.iter().filter(|b| b.distance > 0.0).count();
    let why = |reason: fn(&sidereal_client::ReconnectReasons) -> u64| {
        r.bots
            .iter()
            .map(|b| reason(&b.reconnect_reasons))
            .sum::<u64>()
    };
    out += &format!(
        "SWARM bots={} connected={} moved={} disconnects={} seconds={:.1} bits_per_entity_update={:.1} latency_p50_ms={} latency_p99_ms={} latency_samples={} chat_said={} chat_heard={} predicted={} rollbacks={} latency_max_ms={} longest_gap_ms={} reconnects={} reconnects_drained={} reconnects_dropped={} reconnects_unanswered={} reconnects_silent={}\n",
        r.bots.len(),
        r.connected(),
        moved,
        r.disconnects(),
        r.seconds,
        r.bits_per_entity_update(),
        ms(r.latency(0.5)),
        ms(r.latency(0.99)),
        r.bots.iter().map(|b| b.latency.len()).sum::<usize>(),
        r.bots.iter().map(|b| b.chat_said).sum::<u32>(),
        r.bots.iter().map(|b| b.chat_heard).sum::<usize>(),
        r.bots.iter().filter(|b| b.predicted).count(),
        r.bots.iter().map(|b| b.rollbacks).sum::<u32>(),
        ms(r.latency(1.0)),
        r.bots
            .iter()
            .map(|b| b.longest_gap.as_millis())
            .max()
            .unwrap_or(0),
        r.bots.iter().map(|b| b.reconnects).sum::<u64>(),
        why(|w| w.drained),
        why(|w| w.dropped),
        why(|w| w.unanswered),
        why(|w| w.silent),
    );
    out
}
