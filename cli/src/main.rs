//! `sidereal`: one binary for every role of the fleet.

mod autoscale;
mod bot_cmd;
mod gateway_cmd;
mod metrics_http;
mod operator_cmd;
mod replication_cmd;
mod shard_cmd;
mod up_cmd;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sidereal",
    version,
    about = "Sidereal: a sharded backend for huge 2D space worlds"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole fleet (replication + shards) as local processes.
    Up(up_cmd::UpArgs),
    /// Run the replication server (shard links, mirror, placement, control API).
    Replication(Box<replication_cmd::ReplicationArgs>),
    /// Run one shard.
    Shard(shard_cmd::ShardArgs),
    /// Run a gateway: players' sessions, interest and encoding, fed by the shards' sector
    /// streams (one of several; replication's --gateway-link takes them).
    Gateway(Box<gateway_cmd::GatewayArgs>),
    /// Run a swarm of headless players (log in, connect, fly, report).
    Bot(bot_cmd::BotArgs),
    /// Run the Kubernetes operator (Sector controller).
    Operator(operator_cmd::OperatorArgs),
    /// Print the Sector and ShardPool CRDs as YAML (or write one file per CRD into --out).
    Crdgen {
        /// Write `<plural>.sidereal.dev.yaml` files into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn init_tracing() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,wgpu=warn".into());
    // lightyear 0.30 logs two started servers (the game port's UDP and WebSocket servers) as an
    // "invalid networking topology" error. Only its replication and prediction consult that
    // topology; the gateway speaks messages, which work on both. Quiet unless asked for.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("network_topology")) {
        filter = filter.add_directive(
            "lightyear_connection::network_topology=off"
                .parse()
                .expect("a valid directive"),
        );
    }
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crdgen { out: None } => print!("{}", sidereal_crds::render_crds()),
        Command::Crdgen { out: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in sidereal_crds::crd_files() {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Up(args) => {
            init_tracing();
            up_cmd::run(args)?;
        }
        Command::Replication(args) => {
            init_tracing();
            up_cmd::die_with_supervisor();
            replication_cmd::run(*args)?;
        }
        Command::Bot(args) => {
            init_tracing();
            up_cmd::die_with_supervisor();
            bot_cmd::run(args)?;
        }
        Command::Operator(args) => {
            init_tracing();
            operator_cmd::run(args)?;
        }
        Command::Gateway(args) => {
            init_tracing();
            up_cmd::die_with_supervisor();
            gateway_cmd::run(*args)?;
        }
        Command::Shard(args) => {
            init_tracing();
            up_cmd::die_with_supervisor();
            shard_cmd::run(args)?;
        }
    }
    Ok(())
}
