//! `sidereal replication`.

use std::net::SocketAddr;

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sidereal_core::SectorId;
use sidereal_core::handshake::MIN_SECRET_LEN;
use sidereal_core::link_socket::parse_link_timeout;
use sidereal_core::protocol::{MAX_FRAME_BYTES, MIN_FRAME_BYTES};
use sidereal_replication::gateway::{DEFAULT_COMMAND_DELAY_TICKS, GatewayConfig};
use sidereal_replication::login::token::NetcodeKey;
use sidereal_replication::rules::sessions::SessionLimits;
use sidereal_replication::server::LinkSettings;
use sidereal_replication::tls::TlsFiles;
use sidereal_replication::{AuthorityConfig, LoginConfig, ReplicationConfig};

/// A frame limit within [`MIN_FRAME_BYTES`, `MAX_FRAME_BYTES` x 16].
pub fn parse_max_frame_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES * 16).contains(&n) {
        return Err(format!(
            "must be within {MIN_FRAME_BYTES}..={}",
            MAX_FRAME_BYTES * 16
        ));
    }
    Ok(n)
}

/// A socket address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct OptionalAddr(pub Option<SocketAddr>);

pub fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s == "off" {
        return Ok(OptionalAddr(None));
    }
    s.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|_| format!("{s:?} is neither an address (host:port) nor off"))
}

/// The default world: four scale-2 roots around the origin (8000 x 8000 units).
pub const DEFAULT_WORLD: &str = "s2-xm1-ym1,s2-x0-ym1,s2-xm1-y0,s2-x0-y0";

#[derive(Args, Debug, Clone)]
pub struct ReplicationArgs {
    /// Control API, /metrics, /healthz, /readyz.
    #[arg(long, env = "SIDEREAL_HTTP", default_value = "127.0.0.1:7700")]
    pub http: SocketAddr,
    /// Also serve the players' login (and /healthz), and nothing else, here: the address to
    /// expose to players while --http stays private. Login is served on --http either way.
    #[arg(long, env = "SIDEREAL_PUBLIC_HTTP")]
    pub public_http: Option<SocketAddr>,
    /// Certificate chain (PEM) for TLS on --public-http (HTTPS) and the WebSocket game port
    /// (wss://); reloaded when it or the key changes (cert-manager renewals).
    #[arg(long, env = "SIDEREAL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "SIDEREAL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve --public-http in clear, without --tls-cert: only behind a proxy that terminates
    /// TLS. Players' passwords and connect tokens cross that listener.
    #[arg(long, env = "SIDEREAL_INSECURE_PUBLIC_HTTP")]
    pub insecure_public_http: bool,
    /// Shard link listener.
    #[arg(long, env = "SIDEREAL_LINK", default_value = "127.0.0.1:7701")]
    pub link: SocketAddr,
    /// Seconds of silence after which a shard's link is closed as dead (shards report load
    /// every second) and its sectors wait for re-homing; also the longest a write to a shard
    /// may take. Set the same on shards.
    #[arg(long, env = "SIDEREAL_LINK_TIMEOUT", default_value = "3", value_parser = parse_link_timeout)]
    pub link_timeout: Duration,
    /// Largest shard-link frame in bytes, sent or accepted; longer messages are sent in parts.
    /// Set the same on shards.
    #[arg(long, default_value_t = MAX_FRAME_BYTES, value_parser = parse_max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Secret shards must present (prefer the environment variable over the flag).
    #[arg(long, env = "SIDEREAL_SHARD_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Bearer token the control API (/v1/...) requires (prefer the environment variable).
    #[arg(long, env = "SIDEREAL_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: String,
    /// Root sectors of the world, comma-separated canonical names.
    #[arg(long, env = "SIDEREAL_WORLD", default_value = DEFAULT_WORLD, value_delimiter = ',')]
    pub world: Vec<SectorId>,
    #[arg(long, default_value_t = 30)]
    pub tick_hz: u32,
    /// Entities scattered over an empty world at start.
    #[arg(long, default_value_t = 2000)]
    pub seed_entities: usize,
    /// Shards keep shadows of neighbours' entities this close to their borders (world units).
    #[arg(long, default_value_t = 50.0)]
    pub shadow_margin: f64,
    /// Postgres URL; without it the world is stored in SQLite under --data.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Data directory for the embedded SQLite store.
    #[arg(long = "data", env = "SIDEREAL_DATA", default_value = ".sidereal")]
    pub data: std::path::PathBuf,
    /// Seconds between write-behind checkpoints of moving state.
    #[arg(long, default_value_t = 1.0)]
    pub checkpoint_interval: f64,
    /// Start as a standby: bind nothing (but see --standby-probes), follow the store (its world
    /// read and kept current, a few times a second) and wait until the store's leader is gone
    /// (killed, hung, or stopped), then take the store over (unless another standby took it
    /// first), read only what changed since it last looked, and serve on the same addresses.
    /// Needs a store both can reach: Postgres, or the same SQLite file on one machine.
    #[arg(long, env = "SIDEREAL_STANDBY")]
    pub standby: bool,
    /// While standing by, serve /healthz, /readyz (both 200: alive and ready to take over) and
    /// /metrics (`sidereal_leading 0`, how far it has followed the store) on the --http
    /// address, for a pod's probes and Prometheus. Only where
    /// each replica has an address of its own (Kubernetes), never beside the leader on one
    /// machine: the standby must find the address free when it takes over.
    #[arg(long, requires = "standby")]
    pub standby_probes: bool,
    /// Seconds a leader's lease on the store lasts without renewal (it renews every second):
    /// how long a standby waits after the leader stops answering.
    #[arg(long, default_value_t = 3.0, value_parser = parse_leader_lease)]
    pub leader_lease: f64,
    /// Seconds a replication that found a placement in the store (a standby that took over, a
    /// restart) waits for that placement's shards to link again before accepting placement
    /// changes; it stops waiting as soon as all are back. Shards that kept simulating resume
    /// with their entities; one still missing then has its leaves re-homed from the store.
    #[arg(long, default_value_t = 10.0, value_parser = parse_takeover_grace)]
    pub takeover_grace: f64,
    /// Under Kubernetes: label this pod `sidereal.dev/role=standby` while it waits and
    /// `sidereal.dev/role=leader` once it leads, through the API server with the pod's service
    /// account (needs --pod-name, --pod-namespace and `patch` on pods). The chart's Services
    /// select the leader by that label.
    #[arg(long, env = "SIDEREAL_LABEL_POD", requires_all = ["pod_name", "pod_namespace"])]
    pub label_pod: bool,
    /// This pod's name, for --label-pod (the downward API's metadata.name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// This pod's namespace, for --label-pod (the downward API's metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Netcode private key that signs players' connect tokens: 64 hex characters (generate
    /// one: openssl rand -hex 32). Without it, logins answer 503.
    #[arg(long, env = "SIDEREAL_NETCODE_KEY", hide_env_values = true)]
    pub netcode_key: Option<NetcodeKey>,
    /// Game port for players: lightyear (netcode) over UDP. Port 0 picks a free one.
    #[arg(long, env = "SIDEREAL_GAME_UDP", default_value = "127.0.0.1:7702")]
    pub game_udp: SocketAddr,
    /// Game addresses written into connect tokens (what players connect to), comma-separated;
    /// by default the bound --game-udp address.
    #[arg(long, env = "SIDEREAL_PUBLIC_GAME_ADDR", value_delimiter = ',')]
    pub public_game_addr: Vec<SocketAddr>,
    /// Game port for browsers: the same netcode over WebSocket (plain ws://; put a
    /// TLS-terminating proxy in front for wss://). Port 0 picks a free one.
    #[arg(long, env = "SIDEREAL_GAME_WS", default_value = "127.0.0.1:7703")]
    pub game_ws: SocketAddr,
    /// Serve no WebSocket game port.
    #[arg(long)]
    pub no_game_ws: bool,
    /// Serve no game port here at all: players play through `sidereal gateway` processes.
    #[arg(long)]
    pub no_game: bool,
    /// Where `sidereal gateway` processes link (the gateway link, e.g. 127.0.0.1:7705); `off`
    /// takes none.
    #[arg(long, env = "SIDEREAL_GATEWAY_LINK", default_value = "off", value_parser = parse_optional_addr)]
    pub gateway_link: OptionalAddr,
    /// WebSocket game addresses written into connect tokens, comma-separated; by default the
    /// bound --game-ws address.
    #[arg(long, env = "SIDEREAL_PUBLIC_GAME_WS_ADDR", value_delimiter = ',')]
    pub public_game_ws_addr: Vec<SocketAddr>,
    /// World units around a player's ship within which it is sent entities.
    #[arg(long, default_value_t = 1500.0)]
    pub interest_radius: f32,
    /// Ticks from a player's command to the first state that shows it (the round trip to the
    /// shard); clients predict their ship with it. Raise it when shards are far from replication.
    #[arg(long, default_value_t = DEFAULT_COMMAND_DELAY_TICKS)]
    pub command_delay_ticks: u32,
    /// Seconds a connect token may be used to open a connection.
    #[arg(long, default_value_t = 60)]
    pub token_valid_for: u64,
    /// Logins and registrations per second from one address (an IPv4 address, an IPv6 /64),
    /// with bursts of four seconds' worth (at least 20). Raise it when many players share an
    /// address (a campus NAT).
    #[arg(long, default_value_t = 5.0)]
    pub login_rate: f64,
    /// New accounts the world takes per hour, from everyone together (and at most that many at
    /// once): registrations past it answer 429 until the budget refills.
    #[arg(long, default_value_t = 3600.0)]
    pub registrations_per_hour: f64,
    /// Players each game transport (UDP, WebSocket) takes at most [default: 128 per CPU core,
    /// at least 256].
    #[arg(long, env = "SIDEREAL_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    /// Game sessions all players behind one address (an IPv4 address, an IPv6 /64) may hold
    /// at once. A player holds at most two: its current one and the one it reconnects from.
    #[arg(long, default_value_t = 64)]
    pub max_sessions_per_address: usize,
}

/// 128 players per CPU core (a gateway thread serves about 200 at full interest), at least 256.
fn default_max_clients() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    (cores * 128).max(256)
}

pub fn config(args: &ReplicationArgs) -> anyhow::Result<ReplicationConfig> {
    anyhow::ensure!(
        args.public_http.is_none() || args.tls_cert.is_some() || args.insecure_public_http,
        "--public-http serves players' passwords and connect tokens: give --tls-cert and \
         --tls-key, or --insecure-public-http when a proxy in front terminates TLS"
    );
    anyhow::ensure!(
        args.secret.len() >= MIN_SECRET_LEN,
        "the shard secret must be at least {MIN_SECRET_LEN} characters (generate one: openssl rand -hex 32)"
    );
    anyhow::ensure!(
        args.control_token.len() >= 16,
        "the control token must be at least 16 characters (generate one: openssl rand -hex 32)"
    );
    anyhow::ensure!(
        !args.world.is_empty(),
        "the world needs at least one root sector"
    );
    anyhow::ensure!(
        args.command_delay_ticks <= 30,
        "--command-delay-ticks must be within 0..=30"
    );
    anyhow::ensure!(
        (1..=240).contains(&args.tick_hz),
        "--tick-hz must be within 1..=240"
    );
    anyhow::ensure!(
        args.interest_radius.is_finite() && (1.0..=100_000.0).contains(&args.interest_radius),
        "--interest-radius must be within 1..=100000 world units"
    );
    anyhow::ensure!(
        (1..=3600).contains(&args.token_valid_for),
        "--token-valid-for must be within 1..=3600 seconds"
    );
    anyhow::ensure!(
        args.login_rate.is_finite() && (0.01..=1e6).contains(&args.login_rate),
        "--login-rate must be within 0.01..=1000000 per second"
    );
    anyhow::ensure!(
        args.registrations_per_hour.is_finite()
            && (1.0..=1e9).contains(&args.registrations_per_hour),
        "--registrations-per-hour must be within 1..=1000000000"
    );
    let max_clients = args.max_clients.unwrap_or_else(default_max_clients);
    anyhow::ensure!(
        (1..=65_536).contains(&max_clients),
        "--max-clients must be within 1..=65536"
    );
    anyhow::ensure!(
        args.max_sessions_per_address >= 1,
        "--max-sessions-per-address must be at least 1"
    );
    for (i, a) in args.world.iter().enumerate() {
        for b in &args.world[i + 1..] {
            anyhow::ensure!(
                !a.covers(b) && !b.covers(a),
                "world roots {a} and {b} overlap"
            );
        }
    }
    Ok(ReplicationConfig {
        http: args.http,
        public_http: args.public_http,
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key }),
        link: args.link,
        link_settings: LinkSettings {
            timeout: args.link_timeout,
            max_frame_bytes: args.max_frame_bytes,
        },
        authority: AuthorityConfig {
            world: args.world.clone(),
            secret: args.secret.clone(),
            tick_hz: args.tick_hz,
            shadow_margin: args.shadow_margin,
        },
        seed_entities: args.seed_entities,
        seed: 42,
        database_url: args.database_url.clone().filter(|u| !u.is_empty()),
        data_dir: args.data.clone(),
        checkpoint_interval: std::time::Duration::from_secs_f64(args.checkpoint_interval),
        standby: args.standby,
        leader_lease: std::time::Duration::from_secs_f64(args.leader_lease),
        takeover_grace: std::time::Duration::from_secs_f64(args.takeover_grace),
        standby_probes: args.standby_probes,
        label_pod: match (args.label_pod, &args.pod_name, &args.pod_namespace) {
            (true, Some(name), Some(namespace)) => Some(sidereal_replication::pod_role::PodRef {
                name: name.clone(),
                namespace: namespace.clone(),
            }),
            _ => None,
        },
        control_token: args.control_token.clone(),
        login: LoginConfig {
            netcode_key: args.netcode_key.clone(),
            servers: args.public_game_addr.clone(),
            websocket_servers: args.public_game_ws_addr.clone(),
            token_valid_for: std::time::Duration::from_secs(args.token_valid_for),
            per_client_rate: args.login_rate,
            registrations_per_hour: args.registrations_per_hour,
            per_client_burst: (args.login_rate * 4.0).clamp(20.0, 1e6) as u32,
            ..LoginConfig::default()
        },
        gateway_link: args.gateway_link.0,
        gateway: (!args.no_game).then_some(GatewayConfig {
            udp: args.game_udp,
            websocket: (!args.no_game_ws).then_some(args.game_ws),
            // From the certificate files, when the server starts.
            websocket_tls: None,
            // The public addresses, from the login settings above.
            public: Vec::new(),
            tick_hz: args.tick_hz,
            interest_radius: args.interest_radius,
            client_timeout_secs: 10,
            max_clients,
            command_delay_ticks: args.command_delay_ticks,
        }),
        sessions: SessionLimits {
            per_address: args.max_sessions_per_address,
            token_valid_for: std::time::Duration::from_secs(args.token_valid_for),
            ..SessionLimits::default()
        },
    })
}

pub fn run(args: ReplicationArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        let (running, all) = sidereal_replication::start(config)
            .await
            .context("starting replication (its store, then its listeners)")?;
        // One machine-readable line for supervisors and tests that bind port 0.
        let game = running
            .gateway_link
            .map(|g| format!(" gateways={g}"))
            .unwrap_or_default()
            + &running
                .game
                .map(|g| format!(" game={g}"))
                .unwrap_or_default()
            + &running
                .game_ws
                .map(|w| format!(" ws={w}"))
                .unwrap_or_default()
            + &running
                .public_http
                .map(|p| format!(" public={p}"))
                .unwrap_or_default();
        println!(
            "SIDEREAL_READY http={} link={}{game}",
            running.http, running.link
        );
        tokio::select! {
            _ = all => {}
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                // A standby takes over at once instead of waiting out the lease.
                if let Some(store) = &running.shared.store
                    && let Err(e) = store.release_leadership().await
                {
                    tracing::warn!(error = %e, "could not release the store's leadership");
                }
            }
            why = running.shared.deposed() => anyhow::bail!("stepped down: {why}"),
        }
        anyhow::Ok(())
    })
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A leader's lease: 1.5 to 60 seconds (it renews every second, so less would lapse).
fn parse_leader_lease(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (1.5..=60.0).contains(&v) {
        Ok(v)
    } else {
        Err(
            "the leader lease must be within 1.5..=60 seconds (the leader renews every second)"
                .into(),
        )
    }
}

/// The takeover grace: 0 to 300 seconds.
fn parse_takeover_grace(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (0.0..=300.0).contains(&v) {
        Ok(v)
    } else {
        Err("the takeover grace must be within 0..=300 seconds".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_limits_outside_the_allowed_range_or_not_numbers_are_refused() {
        assert_eq!(parse_max_frame_bytes("65536"), Ok(65536));
        assert_eq!(
            parse_max_frame_bytes(&MIN_FRAME_BYTES.to_string()),
            Ok(MIN_FRAME_BYTES)
        );
        for bad in ["0", "1024", "-5", "1e9", "", "lots", "18446744073709551616"] {
            assert!(parse_max_frame_bytes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_max_frame_bytes(&(MAX_FRAME_BYTES * 16 + 1).to_string()).is_err());
    }
}
