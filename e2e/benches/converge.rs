//! Operator convergence on the local control plane (needs KUBECONFIG, like the e2e suite, and
//! the `sidereal` binary the workspace builds). N root Sectors are applied at once with a real
//! replication and two real shards; it prints how long the API server takes to accept them
//! (kubectl apply: the floor), how long until every one is Active on a shard, and what the
//! operator wrote. It reports; it never fails on a slow machine.
//!
//! `cargo bench -p sidereal-e2e --bench converge -- 1024` (default 1024 roots)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams};
use sidereal_crds::{Sector, SectorPhase};
use sidereal_e2e::{LocalFleet, LocalProcess, client, install_crds, kubectl_stdin, sidereal};

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

    let fleet = LocalFleet::start(1000, 2, 90)?;

    // Everything as text, the way users apply it: the Secret, a pool sized for the test, roots.
    let mut yaml = format!(
        "{}---\napiVersion: sidereal.dev/v1alpha1\nkind: ShardPool\nmetadata:\n  name: default\nspec:\n  capacity:\n    sectors: {n}\n    entities: 1000000\n",
        fleet.control_secret()
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

    let t = Instant::now();
    let mut op = sidereal()
        .args(["operator", "--metrics", "127.0.0.1:0", "--namespace", &ns])
        .args(["--lease-namespace", &ns, "--lease-duration", "3"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut op_out = BufReader::new(op.stdout.take().unwrap()).lines();
    let op_metrics = op_out.next().expect("metrics line")?;
    let op_metrics = op_metrics.split_once("metrics=").unwrap().1.to_owned();
    let op_pid = op.id();
    let _op = LocalProcess(op);
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
        if active == n {
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
    // Steady state: a minute of nothing changing but the entities drifting.
    let steady_window = Duration::from_secs(60);
    tokio::time::sleep(steady_window).await; // the measured window itself
    let m2 = scrape();
    let steady = metric(&m2, "sidereal_operator_status_writes_total") - writes;
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
        "| root Sectors | kubectl apply (API floor) | operator start to all Active with load | status writes to converge | status writes/min, steady (entities drifting) | operator CPU | operator peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.1} s | {:.1} s | {writes} | {steady} | {cpu_seconds:.1} s | {} |",
        apply.as_secs_f64(),
        converged.as_secs_f64(),
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
