//! `sidereal`: one binary for every role of the fleet.

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
    /// Print the Sector and ShardPool CRDs as YAML (or write one file per CRD into --out).
    Crdgen {
        /// Write `<plural>.sidereal.dev.yaml` files into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen { out: None } => print!("{}", sidereal_crds::render_crds()),
        Command::Crdgen { out: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in sidereal_crds::crd_files() {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
