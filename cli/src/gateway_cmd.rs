//! `sidereal gateway`: players' sessions, interest and encoding, fed by the shards' sector
//! streams, linked to the authority; one of several behind a load balancer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sidereal_core::handshake::MIN_SECRET_LEN;
use sidereal_core::link_socket::parse_link_timeout;
use sidereal_core::stream::valid_subscriber_name;
use sidereal_replication::gateway::{DEFAULT_COMMAND_DELAY_TICKS, GatewayConfig};
use sidereal_replication::gateway_node::{self, GatewayNodeConfig};
use sidereal_replication::login::token::NetcodeKey;
use sidereal_replication::rules::sessions::SessionLimits;
use sidereal_replication::tls::{self, ReloadingCert, TlsFiles};

#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// This gateway's name, to the authority and to shards (the pod name under Kubernetes);
    /// 1-63 of [A-Za-z0-9.-].
    #[arg(long, env = "SIDEREAL_GATEWAY_NAME")]
    pub name: String,
    /// The authority's gateway link (replication's --gateway-link).
    #[arg(
        long,
        env = "SIDEREAL_AUTHORITY_ADDR",
        default_value = "127.0.0.1:7705"
    )]
    pub authority: String,
    /// The fleet's shared secret (the shard secret).
    #[arg(long, env = "SIDEREAL_SHARD_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The netcode key that signs players' connect tokens: the same as replication's.
    #[arg(long, env = "SIDEREAL_NETCODE_KEY", hide_env_values = true)]
    pub netcode_key: NetcodeKey,
    /// Game port for players: lightyear (netcode) over UDP. Port 0 picks a free one.
    #[arg(long, env = "SIDEREAL_GAME_UDP", default_value = "127.0.0.1:7712")]
    pub game_udp: SocketAddr,
    /// Game addresses of this gateway written into connect tokens, comma-separated; by
    /// default the bound --game-udp address.
    #[arg(long, env = "SIDEREAL_PUBLIC_GAME_ADDR", value_delimiter = ',')]
    pub public_game_addr: Vec<SocketAddr>,
    /// Game port for browsers: the same netcode over WebSocket. Port 0 picks a free one.
    #[arg(long, env = "SIDEREAL_GAME_WS", default_value = "127.0.0.1:7713")]
    pub game_ws: SocketAddr,
    /// Serve no WebSocket game port.
    #[arg(long)]
    pub no_game_ws: bool,
    /// Certificate chain (PEM) for wss:// on the WebSocket game port; reloaded when the files
    /// change (a renewed kubernetes.io/tls Secret). Without it the WebSocket port is ws://.
    #[arg(long, env = "SIDEREAL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "SIDEREAL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// WebSocket game addresses of this gateway written into connect tokens, comma-separated.
    #[arg(long, env = "SIDEREAL_PUBLIC_GAME_WS_ADDR", value_delimiter = ',')]
    pub public_game_ws_addr: Vec<SocketAddr>,
    /// The address players reach this gateway at when no --public-game-addr is given and the
    /// game ports are bound to an unspecified address (0.0.0.0): the pod's IP under Kubernetes.
    #[arg(long, env = "SIDEREAL_ADVERTISE_IP")]
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Players' registration and login here (POST /v1/accounts, /v1/login), passed on to the
    /// authority over the gateway link and answered as replication's own login endpoint
    /// answers: any gateway takes logins. HTTPS with --tls-cert. Off when not given.
    #[arg(long, env = "SIDEREAL_GATEWAY_LOGIN")]
    pub login: Option<SocketAddr>,
    /// /metrics and /healthz (healthy while linked to the authority).
    #[arg(
        long,
        env = "SIDEREAL_GATEWAY_METRICS",
        default_value = "127.0.0.1:9200"
    )]
    pub metrics: SocketAddr,
    /// World units around a player's ship within which it is sent entities.
    #[arg(long, default_value_t = 1500.0)]
    pub interest_radius: f32,
    #[arg(long, default_value_t = 30)]
    pub tick_hz: u32,
    /// Ticks from a player's command to the first state that shows it; clients predict with it.
    #[arg(long, default_value_t = DEFAULT_COMMAND_DELAY_TICKS)]
    pub command_delay_ticks: u32,
    /// Players each game transport takes at most.
    #[arg(long, env = "SIDEREAL_MAX_CLIENTS", default_value_t = 1024)]
    pub max_clients: usize,
    /// Game sessions all players behind one address may hold at once on this gateway.
    #[arg(long, default_value_t = 64)]
    pub max_sessions_per_address: usize,
    /// On SIGTERM, tell every player to connect to another gateway and wait this long at most
    /// for them to go before exiting (keep it under the pod's terminationGracePeriodSeconds).
    #[arg(long, default_value = "10", value_parser = crate::shard_cmd::parse_secs)]
    pub drain_timeout: std::time::Duration,
    /// On SIGTERM, stay at least this long (within --drain-timeout), telling late arrivals to
    /// move on too: a load balancer (kube-proxy, a cloud's) keeps sending new players to a
    /// stopping pod for a moment, and a port that has closed would leave them to time out.
    #[arg(long, default_value = "2", value_parser = crate::shard_cmd::parse_secs)]
    pub drain_linger: std::time::Duration,
    /// Seconds of silence after which the authority link or a sector stream is taken for dead.
    #[arg(long, default_value = "3", value_parser = parse_link_timeout)]
    pub link_timeout: Duration,
}

pub fn config(args: &GatewayArgs) -> anyhow::Result<GatewayNodeConfig> {
    anyhow::ensure!(
        valid_subscriber_name(&args.name),
        "--name must be 1-63 of [A-Za-z0-9.-]"
    );
    anyhow::ensure!(
        args.secret.len() >= MIN_SECRET_LEN,
        "the shard secret must be at least {MIN_SECRET_LEN} characters"
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
        args.command_delay_ticks <= 30,
        "--command-delay-ticks must be within 0..=30"
    );
    anyhow::ensure!(
        (1..=65_536).contains(&args.max_clients),
        "--max-clients must be within 1..=65536"
    );
    anyhow::ensure!(
        args.max_sessions_per_address >= 1,
        "--max-sessions-per-address must be at least 1"
    );
    // Tokens must name an address players can reach: not 0.0.0.0.
    let advertised = |bound: SocketAddr,
                      public: &[SocketAddr]|
     -> anyhow::Result<Vec<SocketAddr>> {
        if !public.is_empty() {
            return Ok(public.to_vec());
        }
        match args.advertise_ip {
            Some(ip) if bound.ip().is_unspecified() => {
                anyhow::ensure!(
                    bound.port() != 0,
                    "--advertise-ip needs a fixed game port, not port 0"
                );
                Ok(vec![SocketAddr::new(ip, bound.port())])
            }
            None if bound.ip().is_unspecified() => anyhow::bail!(
                "the game port {bound} is bound to an unspecified address: give --public-game-addr \
                 (and --public-game-ws-addr) or --advertise-ip, the address players reach"
            ),
            _ => Ok(Vec::new()),
        }
    };
    let public_udp = advertised(args.game_udp, &args.public_game_addr)?;
    let public_ws = if args.no_game_ws {
        Vec::new()
    } else {
        advertised(args.game_ws, &args.public_game_ws_addr)?
    };
    Ok(GatewayNodeConfig {
        name: args.name.clone(),
        authority: args.authority.clone(),
        secret: args.secret.clone(),
        netcode_key: args.netcode_key.0,
        game: GatewayConfig {
            udp: args.game_udp,
            websocket: (!args.no_game_ws).then_some(args.game_ws),
            websocket_tls: None,
            public: Vec::new(),
            tick_hz: args.tick_hz,
            interest_radius: args.interest_radius,
            client_timeout_secs: 10,
            max_clients: args.max_clients,
            command_delay_ticks: args.command_delay_ticks,
        },
        public_udp,
        public_ws,
        link_timeout: args.link_timeout,
        sessions: SessionLimits {
            per_address: args.max_sessions_per_address,
            ..SessionLimits::default()
        },
    })
}

/// wss:// on the WebSocket game port, from --tls-cert and --tls-key: the certificate (to watch
/// for renewals) and the TLS config the port serves.
fn websocket_tls(
    args: &GatewayArgs,
) -> anyhow::Result<Option<(Arc<ReloadingCert>, Arc<tls::ServerConfig>)>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    };
    let cert = ReloadingCert::open(files).context("loading --tls-cert and --tls-key")?;
    let config = tls::server_config(cert.clone(), &[])?;
    Ok(Some((cert, config)))
}

pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let mut config = config(&args)?;
    let tls = websocket_tls(&args)?;
    config.game.websocket_tls = tls.as_ref().map(|(_, c)| c.clone());
    let running = std::sync::Arc::new(gateway_node::start(config)?);
    let (linked, render) = (running.clone(), running.clone());
    let metrics = crate::metrics_http::serve(
        args.metrics,
        move || linked.status.lock().expect("status lock").linked,
        move || render.render_metrics(),
    )?;
    // One machine-readable line for supervisors and tests that bind port 0.
    let ws = running
        .websocket
        .map(|w| format!(" ws={w}"))
        .unwrap_or_default();
    let login = args
        .login
        .map(|addr| {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the login endpoint on {addr}"))?;
            l.set_nonblocking(true)?;
            anyhow::Ok(l)
        })
        .transpose()?;
    let login_field = match &login {
        Some(l) => format!(" login={}", l.local_addr()?),
        None => String::new(),
    };
    println!(
        "SIDEREAL_READY game={}{ws} metrics={metrics}{login_field}",
        running.udp
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(listener) = login {
        let router = sidereal_replication::http::gateway_login::router(running.logins.clone());
        let tls_config = tls.as_ref().map(|(_, c)| c.clone());
        rt.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::warn!(error = %e, "login endpoint unusable"),
            };
            match tls_config {
                Some(c) => sidereal_replication::server::serve_https(listener, router, c).await,
                None => {
                    let app = router.into_make_service_with_connect_info::<SocketAddr>();
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::warn!(error = %e, "login endpoint stopped");
                    }
                }
            }
        });
    }
    if let Some((cert, _)) = tls {
        rt.spawn(cert.watch());
    }
    rt.block_on(crate::replication_cmd::shutdown_signal());
    drain(&running, args.drain_timeout, args.drain_linger);
    Ok(())
}

/// Stopping (SIGTERM: a rollout, a scale-down, Ctrl-C): every player is told to connect to
/// another gateway, and the process waits until they have (or `timeout` passed) before it goes,
/// so nobody waits out a silence to find out; and at least `linger`, for late arrivals.
fn drain(
    running: &gateway_node::RunningGateway,
    timeout: std::time::Duration,
    linger: std::time::Duration,
) {
    let players = running.players();
    tracing::info!(
        players,
        ?timeout,
        "stopping: draining players to other gateways"
    );
    running.drain();
    let started = std::time::Instant::now();
    let (deadline, linger_until) = (started + timeout, started + linger.min(timeout));
    while (running.players() > 0 || std::time::Instant::now() < linger_until)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tracing::info!(left = running.players(), "shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    /// A gateway's command line: the flags it needs, then `extra`.
    fn try_parse(extra: &[&str]) -> Result<GatewayArgs, clap::Error> {
        let mut argv = vec![
            "gateway",
            "--name",
            "gw-0",
            "--secret",
            "a-long-enough-secret",
            "--netcode-key",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ];
        argv.extend(extra);
        Cli::try_parse_from(argv).map(|c| c.gateway)
    }

    fn parse(extra: &[&str]) -> GatewayArgs {
        try_parse(extra).expect("valid flags")
    }

    #[test]
    fn drain_linger_is_seconds_and_bad_values_are_refused_with_the_flag_named() {
        assert_eq!(parse(&[]).drain_linger, std::time::Duration::from_secs(2));
        assert_eq!(
            parse(&["--drain-linger", "0.5"]).drain_linger,
            std::time::Duration::from_millis(500)
        );
        for bad in ["soon", "-1", "NaN", "inf", "1e300"] {
            let flag = format!("--drain-linger={bad}");
            let err = try_parse(&[&flag]).expect_err("refused").to_string();
            assert!(
                err.contains("--drain-linger") && err.contains("not a number of seconds"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn tokens_never_name_an_unspecified_address() {
        let any = ["--game-udp", "0.0.0.0:7702", "--game-ws", "0.0.0.0:7703"];
        let err = config(&parse(&any)).unwrap_err().to_string();
        assert!(err.contains("--advertise-ip"), "{err}");
        let mut with_ip = any.to_vec();
        with_ip.extend(["--advertise-ip", "10.1.2.3"]);
        let c = config(&parse(&with_ip)).unwrap();
        assert_eq!(c.public_udp, vec!["10.1.2.3:7702".parse().unwrap()]);
        assert_eq!(c.public_ws, vec!["10.1.2.3:7703".parse().unwrap()]);
        let mut public = any.to_vec();
        public.extend(["--public-game-addr", "203.0.113.7:7702", "--no-game-ws"]);
        let c = config(&parse(&public)).unwrap();
        assert_eq!(c.public_udp, vec!["203.0.113.7:7702".parse().unwrap()]);
        assert!(c.public_ws.is_empty());
        // Bound to a loopback or a real address: that address is what tokens name.
        let c = config(&parse(&[
            "--game-udp",
            "127.0.0.1:0",
            "--game-ws",
            "127.0.0.1:0",
        ]))
        .unwrap();
        assert!(c.public_udp.is_empty() && c.public_ws.is_empty());
    }
}
