//! Split latency on the local control plane (needs KUBECONFIG, like the e2e suite, and the
//! `sidereal` binary the workspace builds). One root `s4-x0-y0` holds 6,400 entities spread
//! evenly; with a split threshold of 200 it splits three levels deep (1 + 4 + 16 = 21 splits:
//! leaves of ~100 entities at scale 1). Shard pods come from the pool and run as real
//! `sidereal shard` processes under the kubelet stand-in.
//!
//! For each split it measures, from the end of the parent's sustain window (the operator logs
//! how long before it started the split that window ended), until all four children are
//! simulating: each placed on a linked shard and owning every entity inside it, none in
//! transit (polled from replication every 100 ms). Prints p50, p99 and max. Reports only.
//!
//! `cargo bench -p sidereal-e2e --bench split`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sidereal_core::geometry::Point;
use sidereal_core::{SectorId, ShardId};
use sidereal_e2e::kubelet::Kubelet;
use sidereal_e2e::{
    LocalFleet, LocalProcess, client, install_crds, kubectl_stdin, operator_command,
};

const ENTITIES: usize = 6_400;
const EXPECTED_SPLITS: usize = 21;

fn pool(max_concurrent: u32) -> String {
    format!(
        "apiVersion: sidereal.dev/v1alpha1
kind: ShardPool
metadata:
  name: default
spec:
  shards: {{min: 1, max: 8, warmSpares: 1}}
  capacity: {{sectors: 16, entities: 1000000}}
  split: {{entities: 200, players: 200, tickP99Ms: 5000, sustainSeconds: 1}}
  merge: {{entities: 1, players: 1, tickP99Ms: 4000, sustainSeconds: 600}}
  cooldownSeconds: 1
  maxConcurrentTransitions: {max_concurrent}
  template:
    spec:
      tolerations: [{{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}]
      containers:
        - name: shard
          image: sidereal:dev
          args: [shard, --fire-every-ticks, \"0\"]
---
apiVersion: sidereal.dev/v1alpha1
kind: Sector
metadata:
  name: s4-x0-y0
spec: {{pool: default, scale: 4, gridX: 0, gridY: 0}}
"
    )
}

/// Seconds since the epoch of a tracing timestamp like `2026-11-23T10:18:04.322332Z`.
fn epoch_of(stamp: &str) -> Option<f64> {
    let ts: k8s_openapi::jiff::Timestamp = stamp.parse().ok()?;
    Some(ts.as_nanosecond() as f64 / 1e9)
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// `split started` lines of the operator's log: (parent, when its sustain window ended).
fn parse_split(line: &str) -> Option<(SectorId, f64)> {
    if !line.contains("split started") {
        return None;
    }
    let stamp = line.split_whitespace().next()?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let sector: SectorId = field("sector=")?.parse().ok()?;
    let late_ms: f64 = field("window_ended_ms_ago=")?.parse().ok()?;
    Some((sector, epoch_of(stamp)? - late_ms / 1000.0))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let max_concurrent: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(8);
    let client = client().await?;
    install_crds(&client).await?;
    let ns = format!("bench-split-{}", std::process::id());
    let (ok, said) = kubectl_stdin(
        &["apply"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
    );
    anyhow::ensure!(ok, "{said}");
    let fleet = LocalFleet::start_in("s4-x0-y0", ENTITIES, 0, 0)?;
    let control = fleet.control();
    let yaml = format!(
        "{}---\n{}---\n{}",
        fleet.control_secret(),
        fleet.shard_secret(),
        pool(max_concurrent)
    );
    let (ok, said) = kubectl_stdin(&["apply", "-n", &ns], &yaml);
    anyhow::ensure!(ok, "{said}");
    let _kubelet = Kubelet::start(client.clone(), &ns, "app.kubernetes.io/name=sidereal-shard");
    let mut op = operator_command(&ns)
        .env("RUST_LOG", "sidereal_operator=info,warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = mpsc::channel();
    let stderr = op.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(split) = parse_split(&line) {
                let _ = tx.send(split);
            }
        }
    });
    let _op = LocalProcess(op);

    let started_at = Instant::now();
    let mut started: BTreeMap<SectorId, f64> = BTreeMap::new();
    let mut done: BTreeMap<SectorId, f64> = BTreeMap::new();
    while done.len() < EXPECTED_SPLITS && started_at.elapsed() < Duration::from_secs(300) {
        while let Ok((parent, window_end)) = rx.try_recv() {
            started.insert(parent, window_end);
        }
        let polled = now_epoch();
        let (Ok(placement), Ok(linked), Ok(entities)) = (
            control.placement().await,
            control.connected_shards().await,
            control.entities("").await,
        ) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for (parent, window_end) in &started {
            if done.contains_key(parent) {
                continue;
            }
            let children = parent.children().expect("a split sector has children");
            let owners: Option<Vec<&ShardId>> = children
                .iter()
                .map(|c| placement.sectors.get(c).filter(|s| linked.contains(*s)))
                .collect();
            let Some(owners) = owners else { continue };
            let settled = entities.entities.iter().all(|e| {
                let p = Point::new(f64::from(e.pos[0]), f64::from(e.pos[1]));
                match children.iter().position(|c| c.contains(p)) {
                    Some(i) => !e.in_transit && e.owner == *owners[i],
                    None => true,
                }
            });
            if settled {
                done.insert(*parent, polled - window_end);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut secs: Vec<f64> = done.values().copied().collect();
    secs.sort_by(f64::total_cmp);
    println!(
        "split latency (window end -> four children simulating), {} splits of {} started, maxConcurrentTransitions {max_concurrent}:",
        secs.len(),
        started.len()
    );
    if !secs.is_empty() {
        println!(
            "  p50 {:.2}s  p99 {:.2}s  max {:.2}s  min {:.2}s",
            percentile(&secs, 0.5),
            percentile(&secs, 0.99),
            secs[secs.len() - 1],
            secs[0]
        );
    }
    println!(
        "  whole tree (1 root -> 64 leaves): {:.1}s from the operator's start",
        started_at.elapsed().as_secs_f64()
    );
    let status = control.status().await?;
    println!(
        "  entities {} of {ENTITIES} (archived {}), leaves {}",
        status.entities, status.archived_entities, status.leaf_sectors
    );
    sidereal_e2e::kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    Ok(())
}
