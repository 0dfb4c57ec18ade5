//! Operator convergence on the local control plane (needs KUBECONFIG, like the e2e suite, and
//! the `sidereal` binary the workspace builds). N root Sectors are applied at once with a real
//! replication; the pool (1,000 sectors per shard, one warm spare) gets its shard pods from the
//! operator, and the kubelet stand-in runs each as a real `sidereal shard` process. It prints
//! how long the API server takes to accept the Sectors (kubectl apply: the floor), how long
//! until every one is Active on a shard with its load and every shard pod Running and linked,
//! the API requests the operator made, and what it writes once nothing changes. It reports;
//! it never fails on a slow machine.
//!
//! `cargo bench -p sidereal-e2e --bench converge -- 1024` (default 1024 roots)

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use sidereal_crds::{Sector, SectorPhase};
use sidereal_e2e::kubelet::Kubelet;
use sidereal_e2e::{
    LocalFleet, client, install_crds, kubectl_stdin, operator_command, start_operator,
};

/// The pool's capacity: leaves per shard pod.
const SECTORS_PER_SHARD: usize = 1000;

fn kubectl_in(args: &[&str], text: &str) -> String {
    let (ok, said) = kubectl_stdin(args, text);
    assert!(ok, "kubectl {args:?}: {said}");
    said
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1024);
    let side = (n as f64).sqrt().ceil() as i64;
    let client = client().await?;
    install_crds(&client).await?;
    let ns = format!("bench-converge-{}", std::process::id());
    kubectl_in(
        &["apply"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
    );

    let fleet = LocalFleet::start(1000, 0, 90)?;
    let control = fleet.control();

    // Everything as text, the way users apply it: the Secrets, the pool, the roots.
    let mut yaml = format!(
        "{}---\n{}---\napiVersion: sidereal.dev/v1alpha1\nkind: ShardPool\nmetadata:\n  name: default\nspec:\n  shards: {{min: 1, max: 64, warmSpares: 1}}\n  capacity:\n    sectors: {SECTORS_PER_SHARD}\n    entities: 1000000\n  template:\n    spec:\n      tolerations: [{{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}}]\n      containers:\n        - name: shard\n          image: sidereal:dev\n          args: [shard]\n",
        fleet.control_secret(),
        fleet.shard_secret()
    );
    for i in 0..n as i64 {
        let (x, y) = (i % side, i / side);
        yaml.push_str(&format!(
            "---\napiVersion: sidereal.dev/v1alpha1\nkind: Sector\nmetadata:\n  name: s0-x{x}-y{y}\nspec:\n  pool: default\n  scale: 0\n  gridX: {x}\n  gridY: {y}\n"
        ));
    }
    let t = Instant::now();
    kubectl_in(&["apply", "-n", &ns], &yaml);
    let apply = t.elapsed();

    let pods_wanted = n.div_ceil(SECTORS_PER_SHARD) + 1;
    let _kubelet = Kubelet::start(client.clone(), &ns, "app.kubernetes.io/name=sidereal-shard");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let t = Instant::now();
    let (op, op_metrics) = start_operator(operator_command(&ns))?;
    let op_pid = op.0.id();
    let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
    let converged = loop {
        let list = sectors.list(&Default::default()).await?.items;
        // Converged: Active on a shard, with the load its shard reported.
        let active = list
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.phase == Some(SectorPhase::Active) && st.load.is_some())
            })
            .count();
        let running = pods
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        let linked = control.connected_shards().await.map_or(0, |c| c.len());
        if active == n && running == pods_wanted && linked == pods_wanted {
            break t.elapsed();
        }
        if t.elapsed() > Duration::from_secs(600) {
            println!("gave up after 600 s: {active}/{n} Active");
            break t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let scrape = || {
        let out = Command::new("curl")
            .args(["-s", &format!("{op_metrics}/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let m = scrape();
    let writes = metric(&m, "sidereal_operator_status_writes_total");
    let requests = metric(&m, "sidereal_operator_api_requests_total");
    let api_writes = |m: &str| {
        ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .map(|v| {
                metric(
                    m,
                    &format!("sidereal_operator_api_requests_total{{method=\"{v}\"}}"),
                )
            })
            .sum::<f64>()
    };
    let writes_before = api_writes(&m);
    // Steady state: a minute of nothing changing but the entities drifting.
    let steady_window = Duration::from_secs(60);
    tokio::time::sleep(steady_window).await; // the measured window itself
    let m2 = scrape();
    let steady = api_writes(&m2) - writes_before;
    let status = std::fs::read_to_string(format!("/proc/{op_pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    let stat = std::fs::read_to_string(format!("/proc/{op_pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu_seconds = (ticks(13) + ticks(14)) / 100.0;
    println!(
        "| root Sectors | shard pods (real processes) | kubectl apply (API floor) | operator start to all Active with load, all pods Running and linked | status writes to converge | operator API requests (per s) | API writes/min, steady (entities drifting) | operator CPU | operator peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {pods_wanted} | {:.1} s | {:.1} s | {writes} | {requests} ({:.0}/s) | {steady} | {cpu_seconds:.1} s | {} |",
        apply.as_secs_f64(),
        converged.as_secs_f64(),
        requests / converged.as_secs_f64().max(0.001),
        peak.trim_start_matches("VmHWM:").trim()
    );
    let _ = sectors
        .delete_collection(&DeleteParams::background(), &Default::default())
        .await;
    let _ = std::process::Command::new("kubectl")
        .args(["delete", "namespace", &ns, "--wait=false"])
        .output();
    Ok(())
}
