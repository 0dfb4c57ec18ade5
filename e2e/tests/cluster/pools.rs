//! The full loop with real processes: the operator runs a ShardPool's pods on kwok nodes, the
//! kubelet stand-in runs a real `sidereal shard` for each, and load drives the fleet. A root
//! splits when the pool's threshold drops below its load and the pool grows to fit its
//! children; a shard pod deleted by hand is replaced and its leaves re-homed with nothing lost;
//! raised thresholds merge the children back and the surplus pods drain and retire.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use sidereal_core::ControlClient;
use sidereal_crds::{Sector, SectorPhase, ShardPool};
use sidereal_e2e::kubelet::Kubelet;
use sidereal_e2e::{
    LocalFleet, LocalProcess, apply_text, in_namespace, kubectl, operator_command, start_operator,
    wait_until,
};

const ENTITIES: usize = 400;
const SHARD_PODS: &str = "app.kubernetes.io/name=sidereal-shard";

/// A pool of at most 6 shards holding 2 leaves each, with one warm spare; everything is
/// quick (1 s sustain, cooldown and idle time) so the test sees several transitions.
fn pool_yaml(split_entities: u32, merge_entities: u32) -> String {
    format!(
        "apiVersion: sidereal.dev/v1alpha1
kind: ShardPool
metadata:
  name: default
spec:
  shards:
    min: 1
    max: 6
    warmSpares: 1
  capacity:
    sectors: 2
    entities: 100000
  split:
    entities: {split_entities}
    players: 200
    tickP99Ms: 2000
    sustainSeconds: 1
  merge:
    entities: {merge_entities}
    players: 100
    tickP99Ms: 1000
    sustainSeconds: 1
  cooldownSeconds: 1
  maxConcurrentTransitions: 4
  minScale: 1
  idleRetireSeconds: 2
  template:
    spec:
      tolerations:
        - key: kwok.x-k8s.io/node
          operator: Exists
          effect: NoSchedule
      containers:
        - name: shard
          image: sidereal:dev
          args: [shard, --fire-every-ticks, \"0\"]
"
    )
}

const ROOT: &str = "apiVersion: sidereal.dev/v1alpha1
kind: Sector
metadata:
  name: s2-x0-y0
spec:
  pool: default
  scale: 2
  gridX: 0
  gridY: 0
";

/// `kubectl get events` in `ns` matching `selector`: one line per Event, its reason then its
/// message.
fn event_lines(ns: &str, selector: &str) -> anyhow::Result<String> {
    kubectl(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        selector,
        "-o",
        "custom-columns=R:.reason,M:.message",
        "--no-headers",
    ])
}

/// The pool's live shard pods (not being deleted).
async fn shard_pods(client: &Client, ns: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(SHARD_PODS))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect())
}

/// Every leaf Sector is Active on one of `pods`, every entity is simulated (none archived,
/// none in transit), and replication's placement names only `pods`: the world is whole.
async fn whole(
    sectors: &Api<Sector>,
    control: &ControlClient,
    pods: &BTreeSet<String>,
    leaves: usize,
) -> anyhow::Result<bool> {
    let list = sectors.list(&Default::default()).await?.items;
    let active: Vec<&Sector> = list
        .iter()
        .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SectorPhase::Active))
        .collect();
    let on_pods = active.iter().all(|s| {
        s.status
            .as_ref()
            .and_then(|st| st.shard.as_ref())
            .is_some_and(|sh| pods.contains(sh))
    });
    let placement = control.placement().await?;
    let placed_on_pods = placement.sectors.values().all(|s| pods.contains(&s.0));
    let status = control.status().await?;
    let entities = control.entities("").await?.entities;
    Ok(active.len() == leaves
        && on_pods
        && placement.sectors.len() == leaves
        && placed_on_pods
        && status.entities == ENTITIES
        && status.archived_entities == 0
        && entities.iter().all(|e| !e.in_transit))
}

/// Waits until the pool runs two linked shard pods and the root is simulated whole on them.
async fn two_pods_whole(
    client: &Client,
    ns: &str,
    sectors: &Api<Sector>,
    control: &ControlClient,
) -> anyhow::Result<()> {
    wait_until(
        "two shard pods linked, the root Active",
        Duration::from_secs(90),
        || async {
            let pods = shard_pods(client, ns).await?;
            Ok(pods.len() == 2 && whole(sectors, control, &pods, 1).await?)
        },
    )
    .await
}

/// A world with no shard of its own: replication (400 entities in `s2-x0-y0`), its Secrets,
/// the pool (no split yet), the root, the kubelet stand-in and the operator.
fn pool_world(client: &Client, ns: &str) -> anyhow::Result<(LocalFleet, Kubelet, LocalProcess)> {
    let fleet = LocalFleet::start(ENTITIES, 0, 0)?;
    apply_text(ns, &fleet.control_secret())?;
    apply_text(ns, &fleet.shard_secret())?;
    apply_text(ns, &pool_yaml(100_000, 50))?;
    apply_text(ns, ROOT)?;
    let kubelet = Kubelet::start(client.clone(), ns, SHARD_PODS);
    let operator = LocalProcess(operator_command(ns).stdout(Stdio::null()).spawn()?);
    Ok((fleet, kubelet, operator))
}

#[tokio::test]
async fn shard_pods_follow_the_load_through_a_split_a_lost_pod_and_a_merge() -> anyhow::Result<()> {
    in_namespace("pools", |client, ns| async move {
        let (fleet, kubelet, _operator) = pool_world(&client, &ns)?;
        let control = fleet.control();
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let pools: Api<ShardPool> = Api::namespaced(client.clone(), &ns);
        let pool_is = |shards: i32, ready: i32, leaves: i32| {
            let pools = pools.clone();
            move || {
                let pools = pools.clone();
                async move {
                    let st = pools.get("default").await?.status.unwrap_or_default();
                    Ok((st.shards, st.ready, st.leaves) == (shards, ready, leaves))
                }
            }
        };

        // A pool whose template makes pods the API server refuses says so in its status.
        apply_text(&ns, "apiVersion: sidereal.dev/v1alpha1\nkind: ShardPool\nmetadata:\n  name: broken\nspec:\n  template:\n    spec:\n      containers:\n        - name: shard\n")?;
        wait_until("the broken pool says why", Duration::from_secs(30), || async {
            let st = pools.get("broken").await?.status.unwrap_or_default();
            Ok(st.conditions.iter().any(|c| {
                c.status == "False" && c.reason == "InvalidTemplate" && c.message.contains("image")
            }))
        })
        .await?;

        // A pool the API server accepts (the template is opaque to it) but the operator cannot
        // read: reported on the object, and it stalls nothing else (everything below).
        apply_text(&ns, "apiVersion: sidereal.dev/v1alpha1\nkind: ShardPool\nmetadata:\n  name: unreadable\nspec:\n  template:\n    spec:\n      containers: not-a-list\n")?;

        // One leaf needs one shard, plus the warm spare: two pods, both running real shards
        // linked to replication, the root simulated on one of them.
        wait_until(
            "two shard pods linked, the root Active on one",
            Duration::from_secs(90),
            || async {
                let pods = shard_pods(&client, &ns).await?;
                Ok(pods.len() == 2 && whole(&sectors, &control, &pods, 1).await?)
            },
        )
        .await?;
        wait_until(
            "pool status: 2 shards, 2 ready, 1 leaf",
            Duration::from_secs(30),
            pool_is(2, 2, 1),
        )
        .await?;
        let before = shard_pods(&client, &ns).await?;
        assert_eq!(kubelet.running(), before, "a process per pod");
        let linked = control.connected_shards().await?;
        assert_eq!(
            linked.iter().map(|s| s.0.clone()).collect::<BTreeSet<_>>(),
            before
        );
        let table = kubectl(&["get", "shardpools", "-n", &ns, "--no-headers"])?;
        let row = table.lines().find(|l| l.starts_with("default ")).expect(&table);
        let columns: Vec<&str> = row.split_whitespace().collect();
        // NAME MIN MAX SHARDS READY LEAVES AGE
        assert_eq!(
            &columns[..6],
            ["default", "1", "6", "2", "2", "1"],
            "{table}"
        );

        // 400 entities in the root, split threshold 150: four children of about 100 each,
        // two leaves per shard: two busy pods and a spare.
        apply_text(&ns, &pool_yaml(150, 20))?;
        wait_until(
            "split: four children Active on three linked pods",
            Duration::from_secs(90),
            || async {
                let pods = shard_pods(&client, &ns).await?;
                let parent = sectors.get("s2-x0-y0").await?;
                let split = parent.status.and_then(|s| s.phase) == Some(SectorPhase::Split);
                Ok(split && pods.len() == 3 && whole(&sectors, &control, &pods, 4).await?)
            },
        )
        .await?;
        wait_until(
            "pool status: 3 shards, 3 ready, 4 leaves",
            Duration::from_secs(30),
            pool_is(3, 3, 4),
        )
        .await?;
        let pods = shard_pods(&client, &ns).await?;
        assert!(
            before.is_subset(&pods),
            "growing never replaced a pod: {before:?} -> {pods:?}"
        );

        // A pod that simulates leaves is deleted by hand: a new pod takes its place, its leaves
        // are re-homed from replication's mirror, nothing is lost.
        let placement = control.placement().await?;
        let mut owned: BTreeMap<String, usize> = BTreeMap::new();
        for shard in placement.sectors.values() {
            *owned.entry(shard.0.clone()).or_default() += 1;
        }
        let victim = owned.keys().next().expect("some pod owns leaves").clone();
        kubectl(&["delete", "pod", &victim, "-n", &ns, "--wait=false"])?;
        wait_until(
            "the lost pod replaced and its leaves re-homed",
            Duration::from_secs(90),
            || async {
                let now = shard_pods(&client, &ns).await?;
                Ok(now.len() == 3
                    && !now.contains(&victim)
                    && whole(&sectors, &control, &now, 4).await?)
            },
        )
        .await?;
        assert!(
            !kubelet.running().contains(&victim),
            "its process was stopped"
        );

        // Cold: the children merge back into the root, and the surplus pods drain and retire
        // after the pool's idle time, back to one busy pod and the spare.
        apply_text(&ns, &pool_yaml(100_000, 50_000))?;
        wait_until(
            "merged, and back to two pods",
            Duration::from_secs(90),
            || async {
                let pods = shard_pods(&client, &ns).await?;
                let list = sectors.list(&Default::default()).await?.items;
                Ok(list.len() == 1
                    && pods.len() == 2
                    && whole(&sectors, &control, &pods, 1).await?)
            },
        )
        .await?;
        wait_until(
            "pool status: 2 shards, 2 ready, 1 leaf",
            Duration::from_secs(30),
            pool_is(2, 2, 1),
        )
        .await?;
        let events = event_lines(&ns, "involvedObject.kind=ShardPool")?;
        for reason in ["Created", "Draining", "Retired"] {
            assert!(
                events.lines().any(|l| l.split_whitespace().next() == Some(reason)),
                "no {reason} Event: {events}"
            );
        }

        // The root deleted: its entities are archived and the pool shrinks to what an empty
        // world needs (the warm spare); applied again, everything comes back.
        kubectl(&["delete", "sector", "s2-x0-y0", "-n", &ns])?;
        wait_until("archived, and down to the spare", Duration::from_secs(60), || async {
            let s = control.status().await?;
            Ok(s.roots == 0
                && s.archived_entities == ENTITIES
                && s.entities == 0
                && shard_pods(&client, &ns).await?.len() == 1)
        })
        .await?;
        apply_text(&ns, ROOT)?;
        wait_until("restored on two pods again", Duration::from_secs(60), || async {
            let pods = shard_pods(&client, &ns).await?;
            Ok(pods.len() == 2 && whole(&sectors, &control, &pods, 1).await?)
        })
        .await?;

        let unreadable = event_lines(&ns, "involvedObject.name=unreadable")?;
        assert!(
            unreadable.contains("InvalidObject") && unreadable.contains("not-a-list"),
            "{unreadable}"
        );
        Ok(())
    })
    .await
}

/// Replication killed with SIGKILL and started again on the same addresses: it reloads the
/// world and placement from its store, the shard processes (their links broken) simulate on,
/// dial again and resume in the same pods without a restart, and every entity is simulated
/// again.
#[tokio::test]
async fn a_replication_restart_loses_nothing_and_the_same_pods_carry_on() -> anyhow::Result<()> {
    in_namespace("restart", |client, ns| async move {
        let (mut fleet, kubelet, _operator) = pool_world(&client, &ns)?;
        let control = fleet.control();
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        two_pods_whole(&client, &ns, &sectors, &control).await?;
        let pods = shard_pods(&client, &ns).await?;
        let starts = kubelet.starts();
        fleet.restart_replication()?;
        wait_until(
            "every entity simulated again on the same pods",
            Duration::from_secs(90),
            || async {
                let linked = control.connected_shards().await.unwrap_or_default();
                Ok(linked.len() == 2
                    && shard_pods(&client, &ns).await? == pods
                    && whole(&sectors, &control, &pods, 1).await?)
            },
        )
        .await?;
        assert_eq!(
            kubelet.starts(),
            starts,
            "the same shard processes carried on: none was started again"
        );
        let text = tokio::process::Command::new("curl")
            .args(["-sf", &format!("{}/metrics", control.base())])
            .output()
            .await?
            .stdout;
        let resumes = String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("sidereal_links_resumed_total "))
            .map(str::to_owned);
        assert_eq!(resumes.as_deref(), Some("2"), "both shards resumed");
        let status = control.status().await?;
        assert_eq!(
            (status.roots, status.entities, status.archived_entities),
            (1, ENTITIES, 0)
        );
        Ok(())
    })
    .await
}

/// Two pools in one world: each root's leaves go to its own pool's shard pods, and each pool
/// is sized for its own leaves.
#[tokio::test]
async fn each_pool_simulates_its_own_subtrees() -> anyhow::Result<()> {
    in_namespace("twopools", |client, ns| async move {
        let fleet = LocalFleet::start_in("s2-x0-y0,s2-x1-y0", ENTITIES, 0, 0)?;
        let control = fleet.control();
        apply_text(&ns, &fleet.control_secret())?;
        apply_text(&ns, &fleet.shard_secret())?;
        // Three roots in alpha, one in beta: packing all four onto any two shards would put
        // some of alpha's on beta's pod.
        for (pool, x, y) in [
            ("alpha", 0, 0),
            ("alpha", 0, 1),
            ("alpha", -1, 0),
            ("beta", 1, 0),
        ] {
            let name = sidereal_core::SectorId::new(2, x, y)?.name();
            apply_text(
                &ns,
                &format!(
                    "apiVersion: sidereal.dev/v1alpha1
kind: ShardPool
metadata:
  name: {pool}
spec:
  shards: {{min: 1, max: 3, warmSpares: 0}}
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
  name: {name}
spec: {{pool: {pool}, scale: 2, gridX: {x}, gridY: {y}}}
"
                ),
            )?;
        }
        let _kubelet = Kubelet::start(client.clone(), &ns, SHARD_PODS);
        let _operator = LocalProcess(operator_command(&ns).stdout(Stdio::null()).spawn()?);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_until(
            "each root on a pod of its own pool",
            Duration::from_secs(90),
            || async {
                let pool_of: BTreeMap<String, String> = pods
                    .list(&ListParams::default().labels(SHARD_PODS))
                    .await?
                    .items
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter_map(|p| {
                        Some((p.name_any(), p.labels().get("sidereal.dev/pool")?.clone()))
                    })
                    .collect();
                let placement = control.placement().await?;
                let linked = control.connected_shards().await?;
                let on = |root: &str, pool: &str| {
                    let id: sidereal_core::SectorId = root.parse().unwrap();
                    placement.sectors.get(&id).is_some_and(|shard| {
                        linked.contains(shard) && pool_of.get(&shard.0).is_some_and(|p| p == pool)
                    })
                };
                let per_pool = |pool: &str| pool_of.values().filter(|p| *p == pool).count();
                Ok(pool_of.len() == 2
                    && per_pool("alpha") == 1
                    && per_pool("beta") == 1
                    && on("s2-x0-y0", "alpha")
                    && on("s2-x1-y0", "beta"))
            },
        )
        .await?;
        assert_eq!(control.status().await?.entities, ENTITIES);
        Ok(())
    })
    .await
}

/// The operator under the ServiceAccount of `manifests/operator/rbac.yaml` (applied as text,
/// its namespace set to the test's) runs a world: nothing it does needs more than the file
/// grants, and the file grants no other Secret.
#[tokio::test]
async fn the_operator_runs_on_the_rights_of_its_rbac_manifest_alone() -> anyhow::Result<()> {
    in_namespace("rbac", |client, ns| async move {
        let rbac = std::fs::read_to_string(
            sidereal_e2e::repo_root().join("manifests/operator/rbac.yaml"),
        )?;
        apply_text(&ns, &rbac.replace("sidereal-system", &ns))?;
        let account = format!("system:serviceaccount:{ns}:sidereal-operator");
        let can = |verb: &str, what: &str| {
            kubectl(&["auth", "can-i", verb, what, "-n", &ns, "--as", &account])
                .map(|out| out.trim() == "yes")
                .unwrap_or(false)
        };
        assert!(can("get", "secret/sidereal-control"));
        assert!(!can("get", "secret/anything-else"), "no other Secret");
        assert!(!can("list", "secrets"));
        // A kubeconfig holding only the account's token.
        let token = kubectl(&[
            "create",
            "token",
            "sidereal-operator",
            "-n",
            &ns,
            "--duration",
            "1h",
        ])?;
        let view: serde_json::Value = serde_json::from_str(&kubectl(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            "json",
        ])?)?;
        let cluster = view["clusters"][0]["cluster"].clone();
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "c", "cluster": cluster }],
            "users": [{ "name": "operator", "user": { "token": token.trim() } }],
            "contexts": [{ "name": "c", "context": { "cluster": "c", "user": "operator" } }],
            "current-context": "c",
        });
        let path = std::env::temp_dir().join(format!("sidereal-{ns}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec(&kubeconfig)?)?;

        let fleet = LocalFleet::start(ENTITIES, 0, 0)?;
        let control = fleet.control();
        apply_text(&ns, &fleet.control_secret())?;
        apply_text(&ns, &fleet.shard_secret())?;
        apply_text(&ns, &pool_yaml(100_000, 50))?;
        apply_text(&ns, ROOT)?;
        let _kubelet = Kubelet::start(client.clone(), &ns, SHARD_PODS);
        let _operator = LocalProcess(
            operator_command(&ns)
                .env("KUBECONFIG", &path)
                .stdout(Stdio::null())
                .spawn()?,
        );
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let pools: Api<ShardPool> = Api::namespaced(client.clone(), &ns);
        wait_until(
            "pods, placement and status under the operator's own account",
            Duration::from_secs(90),
            || async {
                let pods = shard_pods(&client, &ns).await?;
                let st = pools.get("default").await?.status.unwrap_or_default();
                Ok(pods.len() == 2
                    && (st.shards, st.ready, st.leaves) == (2, 2, 1)
                    && whole(&sectors, &control, &pods, 1).await?)
            },
        )
        .await?;
        let lease = kubectl(&[
            "get",
            "lease",
            "sidereal-operator",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        assert!(!lease.trim().is_empty(), "the lease is held");
        let _ = std::fs::remove_file(&path);
        Ok(())
    })
    .await
}

/// The operator's Grafana dashboard, for real: Debian's Prometheus scrapes an operator running
/// a world with shard pods, and every panel of `charts/sidereal/dashboards/sidereal-operator.json`
/// evaluates and returns data.
#[tokio::test]
async fn every_operator_dashboard_panel_returns_data_from_a_real_prometheus() -> anyhow::Result<()>
{
    in_namespace("dashboard", |client, ns| async move {
        let board: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            sidereal_e2e::repo_root().join("charts/sidereal/dashboards/sidereal-operator.json"),
        )?)?;
        let fleet = LocalFleet::start(ENTITIES, 0, 0)?;
        let control = fleet.control();
        apply_text(&ns, &fleet.control_secret())?;
        apply_text(&ns, &fleet.shard_secret())?;
        apply_text(&ns, &pool_yaml(100_000, 50))?;
        apply_text(&ns, ROOT)?;
        let _kubelet = Kubelet::start(client.clone(), &ns, SHARD_PODS);
        let (_operator, base) = start_operator(operator_command(&ns))?;
        let target = base.trim_start_matches("http://").to_owned();
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        wait_until("the world up", Duration::from_secs(90), || async {
            let pods = shard_pods(&client, &ns).await?;
            Ok(pods.len() == 2 && whole(&sectors, &control, &pods, 1).await?)
        })
        .await?;

        let dir = std::env::temp_dir().join(format!("sidereal-prom-{ns}"));
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: operator\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )?;
        let _prometheus = LocalProcess(
            std::process::Command::new("prometheus")
                .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let query = |expr: String| async move {
            let out = tokio::process::Command::new("curl")
                .args(["-s", "--data-urlencode", &format!("query={expr}")])
                .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
                .output()
                .await?;
            let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| anyhow::anyhow!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
            assert_eq!(reply["status"], "success", "{expr} does not evaluate: {reply}");
            Ok::<_, anyhow::Error>(reply["data"]["result"].as_array().cloned().unwrap_or_default())
        };
        for panel in board["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().unwrap_or("?");
            for t in panel["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("an expression").to_owned();
                wait_until(&format!("panel {title:?}: {expr}"), Duration::from_secs(60), || {
                    let q = query(expr.clone());
                    async move { Ok(!q.await?.is_empty()) }
                })
                .await?;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await
}

/// An upgrade changes the pool's pod template (here a flag, as a new image or setting would):
/// the operator rolls the shard pods one at a time. A pod of the new template starts and
/// links; then an outdated pod drains (its sectors move to the others by placement, handed
/// over live by the shard itself, so nothing is rewound) and goes as soon as it owns nothing;
/// then the next. The world stays whole and every entity simulated throughout, and at the end
/// every pod is of the new template.
#[tokio::test]
async fn a_template_change_rolls_the_shard_pods_one_at_a_time_with_nothing_lost()
-> anyhow::Result<()> {
    in_namespace("roll", |client, ns| async move {
        let (fleet, kubelet, _operator) = pool_world(&client, &ns)?;
        let control = fleet.control();
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        two_pods_whole(&client, &ns, &sectors, &control).await?;
        let before = shard_pods(&client, &ns).await?;
        let upgraded = pool_yaml(100_000, 50).replace(
            "args: [shard, --fire-every-ticks, \"0\"]",
            "args: [shard, --fire-every-ticks, \"0\", --relink-timeout, \"20\"]",
        );
        apply_text(&ns, &upgraded)?;
        let started = std::time::Instant::now();
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        wait_until(
            "every pod replaced by one of the new template, the world whole on them",
            Duration::from_secs(120),
            || async {
                let pods = shard_pods(&client, &ns).await?;
                most.fetch_max(pods.len(), std::sync::atomic::Ordering::SeqCst);
                let status = control.status().await?;
                anyhow::ensure!(
                    status.entities == ENTITIES && status.archived_entities == 0,
                    "an entity went missing during the roll: {status:?}"
                );
                Ok(pods.len() == 2
                    && pods.is_disjoint(&before)
                    && whole(&sectors, &control, &pods, 1).await?)
            },
        )
        .await?;
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        println!(
            "template change: 2 shard pods rolled in {:?}, at most {most} at once",
            started.elapsed()
        );
        anyhow::ensure!(most <= 3, "one pod beyond the two at a time: {most}");
        let args = kubelet.running();
        anyhow::ensure!(args.len() == 2, "two shard processes run: {args:?}");
        Ok(())
    })
    .await
}
