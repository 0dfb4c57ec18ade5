//! `sidereal up`: replication and N shards as local processes, placed evenly, supervised, and
//! autoscaled by the operator's policy (splits, merges, shard count) unless `--no-autoscale`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sidereal_core::{ControlClient, ControlError, Placement, SectorId, ShardId, placement};
use sidereal_operator::policy::PoolPolicy;
use sidereal_operator::policy::placement::assign;
use sidereal_operator::policy::transitions::Transition;

use crate::autoscale::Autoscaler;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::replication_cmd::{DEFAULT_WORLD, shutdown_signal};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Shard processes at start, and the fewest the autoscaler keeps.
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// The most shard processes the autoscaler starts.
    #[arg(long, default_value_t = 8)]
    pub max_shards: usize,
    /// Keep the world's leaves and the shard count as they are (no split, merge or scaling).
    #[arg(long)]
    pub no_autoscale: bool,
    /// A leaf with more entities than this for --split-after seconds splits into four.
    #[arg(long, default_value_t = 5000)]
    pub split_entities: u64,
    /// Four sibling leaves with fewer entities than this together, for --merge-after seconds,
    /// merge back into their parent.
    #[arg(long, default_value_t = 1000)]
    pub merge_entities: u64,
    #[arg(long, default_value_t = 30)]
    pub split_after: u64,
    #[arg(long, default_value_t = 120)]
    pub merge_after: u64,
    /// Seconds between two splits or merges of the same sector.
    #[arg(long, default_value_t = 120)]
    pub cooldown: u64,
    /// Leaves one shard takes at most before another is started.
    #[arg(long, default_value_t = 16)]
    pub sectors_per_shard: usize,
    /// An extra shard that owns nothing stops after being idle this many seconds.
    #[arg(long, default_value_t = 300)]
    pub idle_retire: u64,
    /// Headless bot players flying in the world (`sidereal bot`), started once it is placed.
    #[arg(long, default_value_t = 0)]
    pub bots: usize,
    /// Data directory: the shard secret and the SQLite store (unless DATABASE_URL is set).
    #[arg(long = "data", default_value = ".sidereal")]
    pub data: PathBuf,
    /// Bearer token of the control API; generated into the data directory when not given.
    #[arg(long, env = "SIDEREAL_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// Replication's control API.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub http: SocketAddr,
    /// Replication's shard-link listener.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub link: SocketAddr,
    /// Game port for players (lightyear over UDP).
    #[arg(long, env = "SIDEREAL_GAME_UDP", default_value = "127.0.0.1:7702")]
    pub game_udp: SocketAddr,
    /// Game port for browsers (the same netcode over WebSocket, plain ws://).
    #[arg(long, env = "SIDEREAL_GAME_WS", default_value = "127.0.0.1:7703")]
    pub game_ws: SocketAddr,
    /// Gateway processes (`sidereal gateway`) serving players, fed by the shards' sector
    /// streams; 0 serves players from replication's own game port instead. Gateway i takes
    /// the game ports + 10 x i and serves /metrics on --gateway-metrics-base-port + i.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// Gateway i serves /metrics on this port + i.
    #[arg(long, default_value_t = 9200)]
    pub gateway_metrics_base_port: u16,
    /// Run a standby replication beside the leader, on the same store and addresses: if the
    /// leader dies, the standby takes the store over within the lease (3 s) plus its start,
    /// shards simulate on and resume onto it, gateways re-link and their players stay
    /// connected; a new standby then waits behind it.
    #[arg(long)]
    pub standby: bool,
    /// Gateway i takes players' logins (POST /v1/accounts, /v1/login, passed on to
    /// replication) on this port + i, on the --http address.
    #[arg(long, default_value_t = 7790)]
    pub gateway_login_base_port: u16,
    /// Game sessions all players behind one address may hold at once on each game port
    /// (replication's own or each gateway's); bot swarms from one machine need more.
    #[arg(long, default_value_t = 64)]
    pub max_sessions_per_address: usize,
    /// Where gateways link to replication, with --gateways.
    #[arg(long, default_value = "127.0.0.1:7705")]
    pub gateway_link: SocketAddr,
    /// Shard i serves /metrics on this port + i.
    #[arg(long, default_value_t = 9100)]
    pub metrics_base_port: u16,
    /// Entities scattered over the world at the first start.
    #[arg(long, default_value_t = 2000)]
    pub entities: usize,
    #[arg(long, default_value = DEFAULT_WORLD, value_delimiter = ',')]
    pub world: Vec<SectorId>,
    #[arg(long, default_value_t = 30)]
    pub tick_hz: u32,
    /// Seconds of silence after which replication and a shard take their link for dead: the
    /// shard's leaves move to the others and the shard process restarts.
    #[arg(long, default_value = "3", value_parser = sidereal_core::link_socket::parse_link_timeout)]
    pub link_timeout: Duration,
}

/// Set by `up` on its children: the pid they must not outlive.
pub const SUPERVISOR_PID_ENV: &str = "SIDEREAL_SUPERVISOR_PID";

/// A command for one of the fleet's processes; the child ties its life to ours (see
/// [`die_with_supervisor`]).
fn child_command(exe: &Path) -> Command {
    let mut c = Command::new(exe);
    c.env(SUPERVISOR_PID_ENV, std::process::id().to_string());
    c
}

/// In a child of `up`: be killed when `up` dies, however it dies (even `kill -9`). A fleet
/// without its supervisor would hold the ports and simulate a world nobody re-homes. If `up`
/// is already gone (it died before this call), exit now.
pub fn die_with_supervisor() {
    let Some(supervisor) = std::env::var(SUPERVISOR_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Signal, getppid, set_parent_process_death_signal};
        if let Err(e) = set_parent_process_death_signal(Some(Signal::KILL)) {
            warn!(error = %e, "cannot tie this process to its supervisor's life");
        }
        if getppid().map(|p| p.as_raw_nonzero().get()) != Some(supervisor) {
            warn!(supervisor, "the supervisor is gone; exiting");
            std::process::exit(1);
        }
    }
}

/// A random 256-bit key kept in `dir/name` (mode 0600), created on first use.
fn load_or_create_key(dir: &Path, name: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join(name);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("reading /dev/urandom")?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(secret)
}

struct Fleet {
    exe: PathBuf,
    args: UpArgs,
    replication: Child,
    /// A replication waiting to take over (`--standby`).
    standby: Option<Child>,
    keys: Keys,
    /// The bot swarm, with `--bots`.
    bots: Option<Child>,
    /// Shard `shard-i` by its index i (its metrics port is the base port + i).
    shards: BTreeMap<usize, Child>,
    /// Gateway `gateway-i` by its index i.
    gateways: BTreeMap<usize, Child>,
}

fn shard_id(i: usize) -> ShardId {
    ShardId::new(format!("shard-{i}"))
}

impl Fleet {
    fn spawn_shard(&self, i: usize) -> anyhow::Result<Child> {
        let port = self
            .args
            .metrics_base_port
            .checked_add(i as u16)
            .context("metrics port overflow")?;
        child_command(&self.exe)
            .arg("shard")
            .args(["--id", &shard_id(i).0])
            .args(["--replication", &self.args.link.to_string()])
            .args(["--metrics", &format!("127.0.0.1:{port}")])
            .args(["--tick-hz", &self.args.tick_hz.to_string()])
            .args(["--seed", &(i as u64 + 1).to_string()])
            .args([
                "--link-timeout",
                &self.args.link_timeout.as_secs_f64().to_string(),
            ])
            .env("SIDEREAL_SHARD_SECRET", &self.keys.secret)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a shard process")
    }

    fn spawn_gateway(&self, i: usize) -> anyhow::Result<Child> {
        let offset = u16::try_from(i * 10).context("gateway port overflow")?;
        let port = |a: SocketAddr| -> anyhow::Result<String> {
            let p = a
                .port()
                .checked_add(offset)
                .context("gateway port overflow")?;
            Ok(SocketAddr::new(a.ip(), p).to_string())
        };
        child_command(&self.exe)
            .arg("gateway")
            .args(["--name", &format!("gateway-{i}")])
            .args(["--authority", &self.args.gateway_link.to_string()])
            .args(["--game-udp", &port(self.args.game_udp)?])
            .args(["--game-ws", &port(self.args.game_ws)?])
            .args([
                "--metrics",
                &format!(
                    "127.0.0.1:{}",
                    usize::from(self.args.gateway_metrics_base_port) + i
                ),
            ])
            .args([
                "--login",
                &SocketAddr::new(
                    self.args.http.ip(),
                    self.args
                        .gateway_login_base_port
                        .checked_add(u16::try_from(i).context("gateway port overflow")?)
                        .context("gateway port overflow")?,
                )
                .to_string(),
            ])
            .args(["--tick-hz", &self.args.tick_hz.to_string()])
            .args([
                "--link-timeout",
                &self.args.link_timeout.as_secs_f64().to_string(),
                "--max-sessions-per-address",
                &self.args.max_sessions_per_address.to_string(),
            ])
            .env("SIDEREAL_SHARD_SECRET", &self.keys.secret)
            .env("SIDEREAL_NETCODE_KEY", &self.keys.netcode_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a gateway process")
    }

    /// Starts shard-i for the lowest free i.
    fn start_another_shard(&mut self) -> anyhow::Result<ShardId> {
        let i = (0..)
            .find(|i| !self.shards.contains_key(i))
            .expect("a free index");
        let child = self.spawn_shard(i)?;
        self.shards.insert(i, child);
        Ok(shard_id(i))
    }

    async fn stop_shard(&mut self, shard: &ShardId) {
        let found = self.shards.keys().copied().find(|i| shard_id(*i) == *shard);
        if let Some(mut child) = found.and_then(|i| self.shards.remove(&i)) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts `sidereal bot` with `--bots` players against this fleet's login endpoint.
    fn start_bots(&mut self) -> anyhow::Result<()> {
        let child = child_command(&self.exe)
            .arg("bot")
            .args(["--count", &self.args.bots.to_string()])
            .args(["--http", &format!("http://{}", self.args.http)])
            .args([
                "--duration",
                "0",
                "--tick-hz",
                &self.args.tick_hz.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the bots")?;
        self.bots = Some(child);
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(b) = &mut self.bots {
            let _ = b.start_kill();
            let _ = b.wait().await;
        }
        for c in self.shards.values_mut().chain(self.gateways.values_mut()) {
            let _ = c.start_kill();
        }
        let _ = self.replication.start_kill();
        for c in self.gateways.values_mut() {
            let _ = c.wait().await;
        }
        for c in self.shards.values_mut() {
            let _ = c.wait().await;
        }
        let _ = self.replication.wait().await;
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.shards >= 1, "--shards must be at least 1");
    anyhow::ensure!(
        args.max_shards >= args.shards,
        "--max-shards ({}) must be at least --shards ({})",
        args.max_shards,
        args.shards
    );
    anyhow::ensure!(
        args.merge_entities < args.split_entities,
        "--merge-entities must be below --split-entities, or sectors would split and merge in a loop"
    );
    anyhow::ensure!(
        args.sectors_per_shard >= 1,
        "--sectors-per-shard must be at least 1"
    );
    let secret = load_or_create_key(&args.data, "shard-secret")?;
    let control_token = match args.control_token.clone().filter(|t| !t.is_empty()) {
        Some(t) => t,
        None => load_or_create_key(&args.data, "control-token")?,
    };
    let netcode_key = load_or_create_key(&args.data, "netcode-key")?;
    let exe = std::env::current_exe().context("locating the sidereal binary")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let keys = Keys {
            secret,
            control_token,
            netcode_key,
        };
        let replication = spawn_replication(&exe, &args, &keys, false)?;
        let mut fleet = Fleet {
            exe: exe.clone(),
            args: args.clone(),
            replication,
            // Started once the fleet is up (not racing replication for a fresh store).
            standby: None,
            keys,
            bots: None,
            shards: BTreeMap::new(),
            gateways: BTreeMap::new(),
        };
        let result = supervise(&mut fleet).await;
        fleet.stop().await;
        result
    })
}

/// The fleet's keys, as every process gets them.
struct Keys {
    secret: String,
    control_token: String,
    netcode_key: String,
}

/// Starts replication (or, `standby`, a replication that waits for the leader to go).
fn spawn_replication(
    exe: &std::path::Path,
    args: &UpArgs,
    keys: &Keys,
    standby: bool,
) -> anyhow::Result<Child> {
    let world: Vec<String> = args.world.iter().map(|s| s.to_string()).collect();
    let mut replication = child_command(exe);
    replication.arg("replication");
    if args.gateways > 0 {
        replication.args([
            "--no-game",
            "--gateway-link",
            &args.gateway_link.to_string(),
        ]);
    }
    if standby {
        replication.arg("--standby");
    }
    replication
        .args([
            "--http",
            &args.http.to_string(),
            "--link",
            &args.link.to_string(),
            "--game-udp",
            &args.game_udp.to_string(),
            "--game-ws",
            &args.game_ws.to_string(),
        ])
        .args(["--world", &world.join(",")])
        .args([
            "--seed-entities",
            &args.entities.to_string(),
            "--tick-hz",
            &args.tick_hz.to_string(),
            "--link-timeout",
            &args.link_timeout.as_secs_f64().to_string(),
            "--max-sessions-per-address",
            &args.max_sessions_per_address.to_string(),
        ])
        .arg("--data")
        .arg(&args.data)
        .env("SIDEREAL_SHARD_SECRET", &keys.secret)
        .env("SIDEREAL_CONTROL_TOKEN", &keys.control_token)
        .env("SIDEREAL_NETCODE_KEY", &keys.netcode_key)
        .stdin(Stdio::null())
        // Its ready line is for supervisors that bind port 0; `up` knows its ports.
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting replication")
}

/// Conflicting placement writes are retried this many times in a row before the supervisor
/// waits for its next round (it never gives up for good).
const PLACEMENT_ATTEMPTS: u32 = 10;

async fn supervise(fleet: &mut Fleet) -> anyhow::Result<()> {
    let base = format!("http://{}", fleet.args.http);
    let control = ControlClient::new(base.clone(), Some(fleet.keys.control_token.clone()));
    wait_for("replication's /healthz", Duration::from_secs(30), || {
        control.healthy()
    })
    .await?;
    for _ in 0..fleet.args.shards {
        fleet.start_another_shard()?;
    }
    for i in 0..fleet.args.gateways {
        let child = fleet.spawn_gateway(i)?;
        fleet.gateways.insert(i, child);
    }
    let want = fleet.args.shards;
    wait_for("every shard to link", Duration::from_secs(60), || async {
        connected(&control).await.is_ok_and(|c| c.len() >= want)
    })
    .await?;
    let ids: Vec<ShardId> = fleet.shards.keys().map(|i| shard_id(*i)).collect();
    let world = fleet.args.world.clone();
    // A store that already held a placement makes replication wait (its takeover grace) for
    // that placement's shards before it takes a new one: 503 until then.
    let placing_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match control
            .update_placement(PLACEMENT_ATTEMPTS, |_| {
                Some(placement::even(&world, &ids, 0))
            })
            .await
        {
            Err(ControlError::Unavailable(why)) if Instant::now() < placing_deadline => {
                info!(%why, "replication is not taking placements yet; waiting");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => {
                other.context("placing the world on the shards")?;
                break;
            }
        }
    }
    if fleet.args.bots > 0 {
        fleet.start_bots()?;
    }
    let status = control.status().await?;
    println!(
        "sidereal is up: {} shards, {} leaf sectors, {} entities",
        status.shards_connected, status.leaf_sectors, status.entities
    );
    println!(
        "  control API  {base}/v1/status  {base}/v1/placement  {base}/v1/load  {base}/v1/shards"
    );
    println!(
        "  token        Authorization: Bearer $(cat {})",
        fleet.args.data.join("control-token").display()
    );
    // The token rides in the fragment, which the browser keeps to itself.
    println!(
        "  sector map   {base}/map#token={}",
        fleet.keys.control_token
    );
    if fleet.args.gateways == 0 {
        println!(
            "  game port    udp://{} and ws://{} (lightyear, netcode)",
            fleet.args.game_udp, fleet.args.game_ws
        );
    } else {
        println!(
            "  game ports   {} gateways from udp://{} and ws://{} (+10 each; tokens name them all)",
            fleet.args.gateways, fleet.args.game_udp, fleet.args.game_ws
        );
    }
    println!(
        "  players      POST {base}/v1/accounts or {base}/v1/login with {{\"name\":..,\"password\":..}}"
    );
    if fleet.args.gateways > 0 {
        println!(
            "               or the same at any gateway: http://{}:{}.. (one port per gateway)",
            fleet.args.http.ip(),
            fleet.args.gateway_login_base_port
        );
    }
    println!(
        "  metrics      {base}/metrics, shards on 127.0.0.1:{}..",
        fleet.args.metrics_base_port
    );
    println!("  data         {}", fleet.args.data.display());
    println!("press Ctrl-C to stop");

    let mut scaler = (!fleet.args.no_autoscale).then(|| Autoscaler::new(policy_of(&fleet.args)));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("stopping the fleet");
                return Ok(());
            }
            _ = every.tick() => {}
        }
        if let Some(status) = fleet.replication.try_wait()? {
            let Some(standby) = fleet.standby.take() else {
                bail!("replication exited ({status}); stopping the fleet");
            };
            // The standby takes the store over and binds the same addresses: shards that lost
            // their link simulate on, find it there and resume; a new standby waits behind it.
            warn!(%status, "replication exited; the standby takes over");
            fleet.replication = standby;
        }
        // A standby waits on the same store and addresses (`--standby`): started, and started
        // again whenever it exits or took over.
        if fleet.args.standby {
            let gone = match &mut fleet.standby {
                None => true,
                Some(s) => s.try_wait()?.is_some(),
            };
            if gone {
                fleet.standby = Some(spawn_replication(
                    &fleet.exe,
                    &fleet.args,
                    &fleet.keys,
                    true,
                )?);
            }
        }
        let indices: Vec<usize> = fleet.shards.keys().copied().collect();
        for i in indices {
            if let Some(status) = fleet.shards.get_mut(&i).expect("listed").try_wait()? {
                warn!(shard = %shard_id(i), %status, "shard exited; restarting it");
                let child = fleet.spawn_shard(i)?;
                fleet.shards.insert(i, child);
            }
        }
        let indices: Vec<usize> = fleet.gateways.keys().copied().collect();
        for i in indices {
            if let Some(status) = fleet.gateways.get_mut(&i).expect("listed").try_wait()? {
                warn!(gateway = i, %status, "gateway exited; restarting it");
                let child = fleet.spawn_gateway(i)?;
                fleet.gateways.insert(i, child);
            }
        }
        // Level-triggered: whatever put leaves on a shard that is not linked (a kill, a
        // restart, another writer's placement), move them to linked shards; the autoscaler
        // does that as part of its placement. Every failure here is retried next round; none
        // stops the fleet.
        let outcome = match &mut scaler {
            Some(scaler) => autoscale(fleet, &control, scaler).await,
            None => rehome(&control).await.map_err(Into::into),
        };
        if let Err(e) = outcome {
            warn!(error = %e, "this round's placement did not go through; retrying");
        }
    }
}

/// The scaling policy of `up`'s flags (players and tick time keep the pool defaults).
fn policy_of(args: &UpArgs) -> PoolPolicy {
    let mut p = PoolPolicy::default();
    p.split.entities = args.split_entities;
    p.split.sustain = Duration::from_secs(args.split_after);
    p.merge.entities = args.merge_entities;
    p.merge.sustain = Duration::from_secs(args.merge_after);
    p.cooldown = Duration::from_secs(args.cooldown);
    p.capacity.sectors = args.sectors_per_shard;
    p.min_shards = args.shards;
    p.max_shards = args.max_shards;
    p.warm_spares = 0;
    p.idle_retire = Duration::from_secs(args.idle_retire);
    p
}

/// One autoscaling round: observe, decide (splits, merges, shard count), place, then start
/// or stop shard processes.
async fn autoscale(
    fleet: &mut Fleet,
    control: &ControlClient,
    scaler: &mut Autoscaler,
) -> anyhow::Result<()> {
    let current = control.placement().await?;
    let load = control.load().await?.sectors;
    let linked = connected(control).await?;
    let running: Vec<ShardId> = fleet.shards.keys().map(|i| shard_id(*i)).collect();
    let round = scaler.round(&current, &load, &linked, &running, Instant::now());
    for t in &round.transitions {
        match t {
            Transition::Split { sector, .. } => info!(%sector, "splitting a hot sector"),
            Transition::Merge { parent, .. } => info!(%parent, "merging four cold sectors"),
        }
    }
    if !round.placeable.is_empty() {
        let capacity = scaler.policy.capacity;
        let written = control
            .update_placement(PLACEMENT_ATTEMPTS, |cur| {
                let sectors = assign(&round.leaves, &cur.sectors, &round.placeable, capacity);
                (sectors != cur.sectors).then_some(Placement {
                    generation: 0,
                    sectors,
                    world: None,
                })
            })
            .await?;
        if let Some(reply) = written {
            info!(
                generation = reply.generation,
                leaves = round.leaves.len(),
                "placement updated"
            );
        }
    }
    for _ in 0..round.start {
        let shard = fleet.start_another_shard()?;
        info!(%shard, "started a shard for the load");
    }
    for shard in &round.stop {
        fleet.stop_shard(shard).await;
        info!(%shard, "stopped an idle shard");
    }
    Ok(())
}

async fn connected(control: &ControlClient) -> Result<BTreeSet<ShardId>, ControlError> {
    control.connected_shards().await
}

/// Moves the leaves of unlinked shards onto linked ones, re-reading and recomputing when
/// another writer changed the placement first.
async fn rehome(control: &ControlClient) -> Result<(), ControlError> {
    let live = connected(control).await?;
    if live.is_empty() {
        return Ok(());
    }
    if let Some(reply) = control
        .update_placement(PLACEMENT_ATTEMPTS, |current| {
            placement::rehome(current, &live)
        })
        .await?
    {
        info!(
            generation = reply.generation,
            "re-homed the leaves of unlinked shards"
        );
    }
    Ok(())
}
