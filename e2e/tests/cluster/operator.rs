//! The operator against the real API server, with a real replication and real shards on
//! loopback (shard pods come with the ShardPool controller; here the test starts the shards
//! itself). Everything a user applies is applied as text by kubectl.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use sidereal_core::SectorId;
use sidereal_crds::{Sector, SectorPhase};
use sidereal_e2e::{
    LocalFleet, LocalProcess, apply_text, in_namespace, kubectl, operator_command, repo_root,
    sidereal, start_operator, wait_until,
};

const ENTITIES: usize = 400;

fn names(ids: &[SectorId]) -> BTreeSet<String> {
    ids.iter().map(|s| s.name()).collect()
}

#[tokio::test]
async fn the_operator_makes_root_sectors_the_world_and_reports_them_live() -> anyhow::Result<()> {
    in_namespace("operator", |client, ns| async move {
        let fleet = LocalFleet::start(ENTITIES, 2, 0)?;
        let control = fleet.control();
        apply_text(&ns, &fleet.control_secret())?;
        let samples = repo_root().join("manifests/samples");
        kubectl(&["apply", "-n", &ns, "-f", samples.to_str().unwrap()])?;
        let (_operator, base) = start_operator(operator_command(&ns))?;
        let metrics_url = format!("{base}/metrics");
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let samples_roots: BTreeSet<String> = ["s2-xm1-ym1", "s2-x0-ym1", "s2-xm1-y0", "s2-x0-y0"]
            .map(String::from)
            .into();

        // Every sample root becomes the world, placed on the two shards, Active with its load.
        let all_active = || async {
            let list = sectors.list(&Default::default()).await?.items;
            Ok(list.len() == 4
                && list.iter().all(|s| {
                    s.status.as_ref().is_some_and(|st| {
                        st.phase == Some(SectorPhase::Active)
                            && st
                                .shard
                                .as_deref()
                                .is_some_and(|sh| sh == "shard-0" || sh == "shard-1")
                            && st.load.is_some()
                    })
                }))
        };
        wait_until("every root Sector Active on a shard", Duration::from_secs(60), all_active)
            .await?;
        let placement = control.placement().await?;
        assert_eq!(names(placement.world.as_deref().unwrap()), samples_roots);
        let status = control.status().await?;
        // The seeded root s2-x0-y0 is one of the samples; nothing else was seeded.
        assert_eq!((status.roots, status.entities, status.archived_entities), (4, ENTITIES, 0));
        // Status carries load, rewritten only when it moves meaningfully (Prometheus has the
        // exact figures), so the sum is close to, not always exactly, the world's count.
        wait_until("load reported in status", Duration::from_secs(30), || async {
            let list = sectors.list(&Default::default()).await?.items;
            let sum: i64 = list
                .iter()
                .map(|s| s.status.as_ref().and_then(|st| st.load.clone()).map_or(0, |l| l.entities))
                .sum();
            Ok((ENTITIES as i64 * 9 / 10..=ENTITIES as i64 * 11 / 10).contains(&sum))
        })
        .await?;
        let table = kubectl(&["get", "sectors", "-n", &ns, "--no-headers"])?;
        assert_eq!(table.matches(" Active ").count(), 4, "{table}");
        // The operator's own metrics follow Prometheus conventions and count what it did.
        let text = Command::new("curl").args(["-sf", &metrics_url]).output()?.stdout;
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), &text)?;
        let checked = promtool.wait_with_output()?;
        let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
        assert!(checked.status.success() && said.trim().is_empty(), "promtool: {said}");
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.lines().any(|l| l.starts_with("sidereal_operator_world_syncs_total{outcome=\"ok\"}")),
            "{text}"
        );

        // Deleting the root where the entities were seeded archives those inside it;
        // re-applying it brings every one of them back.
        kubectl(&["delete", "sector", "s2-x0-y0", "-n", &ns])?;
        wait_until("the root left the world", Duration::from_secs(30), || async {
            let s = control.status().await?;
            // Seeded in this root; by now some have drifted into its neighbours.
            Ok(s.roots == 3 && s.archived_entities > 0 && s.entities + s.archived_entities == ENTITIES)
        })
        .await?;
        kubectl(&["apply", "-n", &ns, "-f", samples.join("sectors.yaml").to_str().unwrap()])?;
        wait_until("the root and its entities are back", Duration::from_secs(30), || async {
            let s = control.status().await?;
            Ok(s.roots == 4 && s.archived_entities == 0 && s.entities == ENTITIES)
        })
        .await?;
        wait_until("every root Active again", Duration::from_secs(30), all_active).await?;

        // A Sector naming a pool that does not exist: a condition, not a crash, not placed.
        apply_text(
            &ns,
            "apiVersion: sidereal.dev/v1alpha1\nkind: Sector\nmetadata:\n  name: s2-x1-y0\nspec:\n  pool: nope\n  scale: 2\n  gridX: 1\n  gridY: 0\n",
        )?;
        wait_until("the orphan Sector says why", Duration::from_secs(30), || async {
            let s = sectors.get("s2-x1-y0").await?;
            Ok(s.status.as_ref().is_some_and(|st| {
                st.phase == Some(SectorPhase::Pending)
                    && st.conditions.iter().any(|c| c.reason == "PoolNotFound" && c.status == "False")
            }))
        })
        .await?;
        assert_eq!(control.status().await?.roots, 4, "not part of the world");

        Ok(())
    })
    .await
}

fn pool_yaml(split_entities: u32, merge_entities: u32) -> String {
    format!(
        "apiVersion: sidereal.dev/v1alpha1
kind: ShardPool
metadata:
  name: default
spec:
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
"
    )
}

/// Load drives the tree: a root over the split threshold splits into its four children (owned
/// by it), which are placed and simulated with every entity conserved, even with the operator
/// killed mid-split and replaced; raise the thresholds and the four merge back.
#[tokio::test]
async fn a_hot_root_splits_into_four_simulated_children_and_merges_back_when_cold()
-> anyhow::Result<()> {
    in_namespace("splitmerge", |client, ns| async move {
        let fleet = LocalFleet::start(ENTITIES, 2, 0)?;
        let control = fleet.control();
        apply_text(&ns, &fleet.control_secret())?;
        // 400 entities in one root: hot against a split threshold of 100.
        apply_text(&ns, &pool_yaml(100, 50))?;
        apply_text(
            &ns,
            "apiVersion: sidereal.dev/v1alpha1\nkind: Sector\nmetadata:\n  name: s2-x0-y0\nspec:\n  pool: default\n  scale: 2\n  gridX: 0\n  gridY: 0\n",
        )?;
        let operator = || -> anyhow::Result<LocalProcess> {
            Ok(LocalProcess(
                operator_command(&ns)
                    .stdout(Stdio::null())
                    .spawn()?,
            ))
        };
        let first = operator()?;
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let children: BTreeSet<String> = ["s1-x0-y0", "s1-x1-y0", "s1-x0-y1", "s1-x1-y1"]
            .map(String::from)
            .into();
        // kill -9 the operator the moment the split shows (children being created, nothing
        // placed yet), and start another: it picks up where the first stopped.
        wait_until("the split starts", Duration::from_secs(90), || async {
            let list = sectors.list(&Default::default()).await?.items;
            Ok(list.iter().any(|s| children.contains(&s.name_any())))
        })
        .await?;
        drop(first);
        let _operator = operator()?;
        let phase = |s: &Sector| s.status.as_ref().and_then(|st| st.phase);
        wait_until("split: four children Active, the parent Split", Duration::from_secs(90), || async {
            let list = sectors.list(&Default::default()).await?.items;
            let kids: Vec<&Sector> = list.iter().filter(|s| children.contains(&s.name_any())).collect();
            assert!(list.len() <= 5, "no Sector but the root and its four children: {list:?}");
            let parent = list.iter().find(|s| s.name_any() == "s2-x0-y0");
            Ok(kids.len() == 4
                && kids.iter().all(|k| phase(k) == Some(SectorPhase::Active))
                && parent.is_some_and(|p| phase(p) == Some(SectorPhase::Split)))
        })
        .await?;
        // Owned by the parent (deleting it cascades), simulated by replication as leaves.
        let parent = sectors.get("s2-x0-y0").await?;
        for k in &children {
            let kid = sectors.get(k).await?;
            let owner = kid.metadata.owner_references.unwrap_or_default();
            assert!(
                owner.iter().any(|o| o.uid == parent.metadata.uid.clone().unwrap() && o.controller == Some(true)),
                "{k} is owned by its parent"
            );
        }
        assert_eq!(
            parent.status.unwrap().children.into_iter().collect::<BTreeSet<_>>(),
            children
        );
        let placement = control.placement().await?;
        assert_eq!(
            placement.sectors.keys().map(|s| s.name()).collect::<BTreeSet<_>>(),
            children
        );
        assert_eq!(names(placement.world.as_deref().unwrap()), BTreeSet::from(["s2-x0-y0".to_owned()]));
        wait_until("every entity simulated after the split", Duration::from_secs(30), || async {
            let s = control.status().await?;
            let e = control.entities("").await?.entities;
            Ok(s.entities == ENTITIES && e.iter().all(|e| !e.in_transit))
        })
        .await?;

        // Cold now: the four merge back into their parent, which simulates them again.
        apply_text(&ns, &pool_yaml(100_000, 50_000))?;
        wait_until("merged: the children gone, the parent Active", Duration::from_secs(90), || async {
            let list = sectors.list(&Default::default()).await?.items;
            Ok(list.len() == 1 && phase(&list[0]) == Some(SectorPhase::Active))
        })
        .await?;
        let placement = control.placement().await?;
        assert_eq!(
            placement.sectors.keys().map(|s| s.name()).collect::<Vec<_>>(),
            ["s2-x0-y0"]
        );
        wait_until("every entity simulated after the merge", Duration::from_secs(30), || async {
            let s = control.status().await?;
            let e = control.entities("").await?.entities;
            Ok(s.entities == ENTITIES && e.iter().all(|e| !e.in_transit))
        })
        .await?;
        Ok(())
    })
    .await
}

/// One operator, two worlds: each namespace's Sectors become its own replication's world, and
/// what happens in one (here: its only root deleted) never shows in the other.
#[tokio::test]
async fn two_worlds_run_side_by_side_under_one_operator_and_never_touch() -> anyhow::Result<()> {
    in_namespace("world-a", |client, ns_a| async move {
        in_namespace("world-b", move |_, ns_b| async move {
            let (a, b) = (LocalFleet::start(ENTITIES, 2, 0)?, LocalFleet::start(ENTITIES, 2, 0)?);
            let (control_a, control_b) = (a.control(), b.control());
            apply_text(&ns_a, &a.control_secret())?;
            apply_text(&ns_b, &b.control_secret())?;
            let samples = repo_root().join("manifests/samples");
            kubectl(&["apply", "-n", &ns_a, "-f", samples.to_str().unwrap()])?;
            kubectl(&["apply", "-n", &ns_b, "-f", samples.join("shardpool.yaml").to_str().unwrap()])?;
            apply_text(
                &ns_b,
                "apiVersion: sidereal.dev/v1alpha1\nkind: Sector\nmetadata:\n  name: s2-x0-y0\nspec:\n  pool: default\n  scale: 2\n  gridX: 0\n  gridY: 0\n",
            )?;
            let _operator = LocalProcess(
                sidereal()
                    .args(["operator", "--metrics", "127.0.0.1:0"])
                    .args(["--lease-namespace", &ns_a, "--lease-duration", "3"])
                    .args(["--namespace", &format!("{ns_a},{ns_b}")])
                    .stdout(Stdio::null())
                    .spawn()?,
            );
            let active = |ns: String, n: usize| {
                let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
                move || {
                    let sectors = sectors.clone();
                    async move {
                        let list = sectors.list(&Default::default()).await?.items;
                        Ok(list.len() == n
                            && list.iter().all(|s| {
                                s.status.as_ref().and_then(|st| st.phase) == Some(SectorPhase::Active)
                            }))
                    }
                }
            };
            wait_until("world A: four roots Active", Duration::from_secs(60), active(ns_a.clone(), 4)).await?;
            wait_until("world B: one root Active", Duration::from_secs(60), active(ns_b.clone(), 1)).await?;
            let world = |p: sidereal_core::Placement| names(p.world.as_deref().unwrap());
            assert_eq!(world(control_a.placement().await?).len(), 4);
            assert_eq!(world(control_b.placement().await?), BTreeSet::from(["s2-x0-y0".to_owned()]));

            // World B loses its only root (every entity archived); world A does not notice.
            let generation_a = control_a.placement().await?.generation;
            kubectl(&["delete", "sector", "s2-x0-y0", "-n", &ns_b])?;
            wait_until("world B archived", Duration::from_secs(30), || async {
                let s = control_b.status().await?;
                Ok(s.roots == 0 && s.archived_entities == ENTITIES && s.entities == 0)
            })
            .await?;
            let s = control_a.status().await?;
            assert_eq!((s.roots, s.archived_entities, s.entities), (4, 0, ENTITIES));
            // A's placement moves only with A's own load (bin-packing), never to B's roots.
            let p = control_a.placement().await?;
            assert!(p.generation >= generation_a);
            assert_eq!(world(p).len(), 4, "world A untouched");
            Ok(())
        })
        .await
    })
    .await
}

/// The value of an unlabelled metric in a Prometheus text page (None: not exported).
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn scrape(url: &str) -> anyhow::Result<String> {
    let out = Command::new("curl").args(["-sf", url]).output()?;
    anyhow::ensure!(out.status.success(), "curl {url} failed");
    Ok(String::from_utf8(out.stdout)?)
}

/// Two replicas elect one leader on a Lease; only it reconciles. Killed with -9, the other
/// takes over within the lease duration and carries on, with nothing duplicated.
#[tokio::test]
async fn of_two_operator_replicas_only_the_leader_reconciles_and_a_follower_takes_over()
-> anyhow::Result<()> {
    in_namespace("leader", |client, ns| async move {
        let fleet = LocalFleet::start(ENTITIES, 2, 0)?;
        apply_text(&ns, &fleet.control_secret())?;
        let samples = repo_root().join("manifests/samples");
        kubectl(&["apply", "-n", &ns, "-f", samples.to_str().unwrap()])?;
        let replica = |identity: &str| -> anyhow::Result<(LocalProcess, String)> {
            let mut command = operator_command(&ns);
            command.args(["--identity", identity]);
            let (operator, base) = start_operator(command)?;
            Ok((operator, format!("{base}/metrics")))
        };
        let (a, url_a) = replica("replica-a")?;
        let (b, url_b) = replica("replica-b")?;
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let active = |n: usize| {
            let sectors = sectors.clone();
            move || {
                let sectors = sectors.clone();
                async move {
                    let list = sectors.list(&Default::default()).await?.items;
                    Ok(list.len() == n
                        && list.iter().all(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SectorPhase::Active)))
                }
            }
        };
        wait_until("the samples Active", Duration::from_secs(60), active(4)).await?;
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &ns);
        let holder = leases.get("sidereal-operator").await?.spec.unwrap().holder_identity.unwrap();
        let (leader, leader_url, follower, follower_url, follower_name) = if holder == "replica-a" {
            (a, url_a, b, url_b, "replica-b")
        } else {
            (b, url_b, a, url_a, "replica-a")
        };
        assert_eq!(metric(&scrape(&leader_url)?, "sidereal_operator_leader"), Some(1.0));
        let page = scrape(&follower_url)?;
        assert_eq!(metric(&page, "sidereal_operator_leader"), Some(0.0));
        assert!(
            !page.contains("sidereal_operator_reconciles_total{"),
            "the follower reconciled: {page}"
        );

        // The leader dies without a word; the follower waits out the lease, then leads.
        drop(leader);
        let killed = std::time::Instant::now();
        apply_text(
            &ns,
            "apiVersion: sidereal.dev/v1alpha1\nkind: Sector\nmetadata:\n  name: s2-x1-y0\nspec:\n  pool: default\n  scale: 2\n  gridX: 1\n  gridY: 0\n",
        )?;
        wait_until("the follower leads", Duration::from_secs(30), || async {
            Ok(metric(&scrape(&follower_url)?, "sidereal_operator_leader") == Some(1.0))
        })
        .await?;
        let takeover = killed.elapsed();
        wait_until("the new root Active under the new leader", Duration::from_secs(60), active(5)).await?;
        let lease = leases.get("sidereal-operator").await?.spec.unwrap();
        assert_eq!(lease.holder_identity.as_deref(), Some(follower_name));
        assert!(lease.lease_transitions.unwrap_or(0) >= 1);
        // A follower waits a whole lease duration (3 s) of silence, checking every second.
        assert!(takeover < Duration::from_secs(8), "took over after {takeover:?}");
        eprintln!("leader killed -> follower leading in {takeover:?}");
        assert_eq!(fleet.control().status().await?.roots, 5);
        // No duplicate shard pods from the change of leader: 5 leaves need one busy pod and
        // the spare (the samples' pods never run here: no kwok toleration).
        // The new leader may still be creating the spare: wait for two, and never more.
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        wait_until("one busy pod and the spare", Duration::from_secs(30), || async {
            let names: Vec<String> = pods
                .list(&kube::api::ListParams::default().labels("sidereal.dev/pool=default"))
                .await?
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            anyhow::ensure!(names.len() <= 2, "duplicate shard pods: {names:?}");
            Ok(names.len() == 2)
        })
        .await?;

        // A child whose three siblings are missing slips past admission: it says why and is
        // not simulated; its parent carries on.
        apply_text(
            &ns,
            "apiVersion: sidereal.dev/v1alpha1\nkind: Sector\nmetadata:\n  name: s1-x0-y0\nspec:\n  pool: default\n  scale: 1\n  gridX: 0\n  gridY: 0\n",
        )?;
        wait_until("the lonely child says why", Duration::from_secs(30), || async {
            let s = sectors.get("s1-x0-y0").await?;
            Ok(s.status.as_ref().is_some_and(|st| {
                st.phase == Some(SectorPhase::Pending)
                    && st.conditions.iter().any(|c| c.reason == "ParentNotSplit")
            }))
        })
        .await?;
        let parent = sectors.get("s2-x0-y0").await?;
        assert_eq!(parent.status.and_then(|s| s.phase), Some(SectorPhase::Active));
        let placement = fleet.control().placement().await?;
        assert!(!placement.sectors.contains_key(&"s1-x0-y0".parse()?));
        drop(follower);
        Ok(())
    })
    .await
}

/// A control Secret without its token: every Sector and the pool say exactly that (no crash
/// loop, nothing placed); fixing the Secret brings the world up.
#[tokio::test]
async fn a_broken_control_secret_is_reported_on_every_sector_until_fixed() -> anyhow::Result<()> {
    in_namespace("badsecret", |client, ns| async move {
        let fleet = LocalFleet::start(ENTITIES, 2, 0)?;
        apply_text(
            &ns,
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sidereal-control\nstringData:\n  url: {}\n",
                fleet.http
            ),
        )?;
        let samples = repo_root().join("manifests/samples");
        kubectl(&["apply", "-n", &ns, "-f", samples.to_str().unwrap()])?;
        let _operator = LocalProcess(
            operator_command(&ns)
                .stdout(Stdio::null())
                .spawn()?,
        );
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let pools: Api<sidereal_crds::ShardPool> = Api::namespaced(client.clone(), &ns);
        wait_until("every Sector names the broken Secret", Duration::from_secs(60), || async {
            let list = sectors.list(&Default::default()).await?.items;
            Ok(list.len() == 4
                && list.iter().all(|s| {
                    s.status.as_ref().is_some_and(|st| {
                        st.phase == Some(SectorPhase::Pending)
                            && st.conditions.iter().any(|c| {
                                c.reason == "BadControlSecret" && c.message.contains("token")
                            })
                    })
                }))
        })
        .await?;
        wait_until("the pool says so too", Duration::from_secs(30), || async {
            let st = pools.get("default").await?.status.unwrap_or_default();
            Ok(st.conditions.iter().any(|c| c.reason == "BadControlSecret"))
        })
        .await?;
        assert!(fleet.control().placement().await?.sectors.is_empty(), "nothing placed");

        apply_text(&ns, &fleet.control_secret())?;
        wait_until("fixed: every root Active", Duration::from_secs(60), || async {
            let list = sectors.list(&Default::default()).await?.items;
            Ok(list.len() == 4
                && list
                    .iter()
                    .all(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SectorPhase::Active)))
        })
        .await?;
        Ok(())
    })
    .await
}
