//! `sidereal up`: replication and N shards as local processes, placed evenly, supervised.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;
use sidereal_core::{Placement, SectorId, ShardId, placement};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::replication_cmd::{DEFAULT_WORLD, shutdown_signal};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Number of shard processes.
    #[arg(long, default_value_t = 3)]
    pub shards: usize,
    /// Headless bot clients (the client issue adds them; must be 0 for now).
    #[arg(long, default_value_t = 0)]
    pub bots: usize,
    /// Data directory: the shard secret and the SQLite store (unless DATABASE_URL is set).
    #[arg(long = "data", default_value = ".sidereal")]
    pub data: PathBuf,
    /// Replication's control API.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub http: SocketAddr,
    /// Replication's shard-link listener.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub link: SocketAddr,
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
}

fn load_or_create_secret(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join("shard-secret");
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
    secret: String,
    replication: Child,
    shards: Vec<(ShardId, Child)>,
}

impl Fleet {
    fn spawn_shard(&self, i: usize) -> anyhow::Result<Child> {
        let port = self
            .args
            .metrics_base_port
            .checked_add(i as u16)
            .context("metrics port overflow")?;
        Command::new(&self.exe)
            .arg("shard")
            .args(["--id", &format!("shard-{i}")])
            .args(["--replication", &self.args.link.to_string()])
            .args(["--metrics", &format!("127.0.0.1:{port}")])
            .args(["--tick-hz", &self.args.tick_hz.to_string()])
            .args(["--seed", &(i as u64 + 1).to_string()])
            .env("SIDEREAL_SHARD_SECRET", &self.secret)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a shard process")
    }

    async fn stop(&mut self) {
        for (_, c) in &mut self.shards {
            let _ = c.start_kill();
        }
        let _ = self.replication.start_kill();
        for (_, c) in &mut self.shards {
            let _ = c.wait().await;
        }
        let _ = self.replication.wait().await;
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
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
        args.bots == 0,
        "--bots needs the client issue, which has not landed yet; use --bots 0"
    );
    let secret = load_or_create_secret(&args.data)?;
    let exe = std::env::current_exe().context("locating the sidereal binary")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let world: Vec<String> = args.world.iter().map(|s| s.to_string()).collect();
        let replication = Command::new(&exe)
            .arg("replication")
            .args([
                "--http",
                &args.http.to_string(),
                "--link",
                &args.link.to_string(),
            ])
            .args(["--world", &world.join(",")])
            .args([
                "--seed-entities",
                &args.entities.to_string(),
                "--tick-hz",
                &args.tick_hz.to_string(),
            ])
            .arg("--data")
            .arg(&args.data)
            .env("SIDEREAL_SHARD_SECRET", &secret)
            .stdin(Stdio::null())
            // Its ready line is for supervisors that bind port 0; `up` knows its ports.
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting replication")?;
        let mut fleet = Fleet {
            exe: exe.clone(),
            args: args.clone(),
            secret,
            replication,
            shards: Vec::new(),
        };
        let result = supervise(&mut fleet).await;
        fleet.stop().await;
        result
    })
}

async fn supervise(fleet: &mut Fleet) -> anyhow::Result<()> {
    let base = format!("http://{}", fleet.args.http);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    wait_for(
        "replication's /healthz",
        Duration::from_secs(30),
        || async {
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await?;
    for i in 0..fleet.args.shards {
        let child = fleet.spawn_shard(i)?;
        fleet
            .shards
            .push((ShardId::new(format!("shard-{i}")), child));
    }
    let want = fleet.args.shards;
    wait_for("every shard to link", Duration::from_secs(60), || async {
        connected(&client, &base)
            .await
            .is_ok_and(|c| c.len() >= want)
    })
    .await?;
    let current: Placement =
        serde_json::from_value(get_json(&client, &format!("{base}/v1/placement")).await?)?;
    let ids: Vec<ShardId> = fleet.shards.iter().map(|(id, _)| id.clone()).collect();
    let p = placement::even(&fleet.args.world, &ids, current.generation + 1);
    put_placement(&client, &base, &p).await?;
    let status = get_json(&client, &format!("{base}/v1/status")).await?;
    println!(
        "sidereal is up: {} shards, {} leaf sectors, {} entities",
        status["shardsConnected"], status["leafSectors"], status["entities"]
    );
    println!(
        "  control API  {base}/v1/status  {base}/v1/placement  {base}/v1/load  {base}/v1/shards"
    );
    println!(
        "  metrics      {base}/metrics, shards on 127.0.0.1:{}..",
        fleet.args.metrics_base_port
    );
    println!("  data         {}", fleet.args.data.display());
    println!("press Ctrl-C to stop");

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
            bail!("replication exited ({status}); stopping the fleet");
        }
        let mut died = Vec::new();
        for (i, (id, child)) in fleet.shards.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                warn!(shard = %id, %status, "shard exited; re-homing its sectors and restarting it");
                died.push(i);
            }
        }
        if died.is_empty() {
            continue;
        }
        rehome(&client, &base).await?;
        for i in died {
            fleet.shards[i].1 = fleet.spawn_shard(i)?;
        }
    }
}

async fn connected(
    client: &reqwest::Client,
    base: &str,
) -> anyhow::Result<std::collections::BTreeSet<ShardId>> {
    let v = get_json(client, &format!("{base}/v1/shards")).await?;
    Ok(v["shards"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["connected"] == true)
                .filter_map(|s| s["shard"].as_str().map(ShardId::new))
                .collect()
        })
        .unwrap_or_default())
}

/// Moves the leaves of disconnected shards onto connected ones, through the control API.
async fn rehome(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    // The link closes a moment after the process dies; wait until replication has noticed.
    let current: Placement =
        serde_json::from_value(get_json(client, &format!("{base}/v1/placement")).await?)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = connected(client, base).await?;
        if let Some(next) = placement::rehome(&current, &live) {
            return put_placement(client, base, &next).await;
        }
        if Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put_placement(client: &reqwest::Client, base: &str, p: &Placement) -> anyhow::Result<()> {
    let r = client
        .put(format!("{base}/v1/placement"))
        .json(p)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "placement generation {} refused: {} {}",
            p.generation,
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    info!(
        generation = p.generation,
        leaves = p.sectors.len(),
        "placement applied"
    );
    Ok(())
}
