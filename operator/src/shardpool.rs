//! The ShardPool controller: runs a pool's shard pods. Each reconcile observes the pool's pods,
//! its leaves and what replication reports, asks [`plan_pods`] what to do, and does it in small
//! idempotent steps: delete pods whose process ended, create missing ones from the template,
//! label the surplus as draining (the Sector controller then places nothing on them, so their
//! sectors move off), delete drained pods once they have been idle for the retire time, and
//! write the pool's status when it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, SecretKeySelector,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sidereal_core::{SectorId, ShardId};
use sidereal_crds::{ShardPool, ShardPoolStatus};
use tracing::{debug, info, warn};

use crate::context::{CONTROL_SECRET, Context, FIELD_MANAGER, control_client};
use crate::objects::report_invalid;
use crate::policy::pods::{PodPlan, PodState, desired_shards, plan_pods};
use crate::pool::policy_of;
use crate::report::{apply_status, publish, ready_condition};
use crate::{Error, Result};

/// Every shard pod carries its pool's name under this label.
pub const POOL_LABEL: &str = "sidereal.dev/pool";
/// Set to `"true"` on a pod the pool no longer needs: nothing new is placed on it.
pub const DRAINING_LABEL: &str = "sidereal.dev/draining";
/// Marks the pods this operator manages (and the only ones it ever deletes).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sidereal-operator");
/// The Secret holding the shared secret shards present to replication (key `secret`).
pub const SHARD_SECRET: &str = "sidereal-shard";
/// The container that runs the shard: this name in the template, or its first container.
pub const SHARD_CONTAINER: &str = "shard";
/// Where a shard pod serves `/metrics` and `/healthz` unless its template says otherwise.
pub const SHARD_METRICS_PORT: i32 = 9100;
/// Where a shard pod serves its sector streams.
pub const SHARD_STREAM_PORT: i32 = 7704;

/// A pool is reconciled at least this often: load and links move without any object changing.
pub const RESYNC: Duration = Duration::from_secs(2);

/// Runs the ShardPool controller over every namespace (or only `namespaces`) until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown = futures::FutureExt::shared(futures::FutureExt::boxed(shutdown));
    let scopes: Vec<(Api<DeserializeGuard<ShardPool>>, Api<Pod>)> = if namespaces.is_empty() {
        vec![(Api::all(ctx.client.clone()), Api::all(ctx.client.clone()))]
    } else {
        namespaces
            .iter()
            .map(|ns| {
                (
                    Api::namespaced(ctx.client.clone(), ns),
                    Api::namespaced(ctx.client.clone(), ns),
                )
            })
            .collect()
    };
    info!(namespaces = ?namespaces, "shardpool controller starting");
    let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    futures::future::join_all(scopes.into_iter().map(|(pools, pods)| {
        Controller::new(pools, watcher::Config::default())
            .owns(pods, watcher::Config::default().labels(&managed))
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    debug!(error = %e, "pool reconcile did not complete");
                }
            })
    }))
    .await;
    info!("shardpool controller stopped");
}

fn error_policy(pool: Arc<DeserializeGuard<ShardPool>>, e: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&["shardpool", e.metric_label()])
        .inc();
    warn!(pool = %pool.name_any(), error = %e, "pool reconcile failed; retrying");
    Action::requeue(RESYNC)
}

/// What one reconcile sees of a pool.
struct Observed {
    /// The pool's pods, except those already being deleted.
    pods: Vec<Pod>,
    /// Leaves of the pool's Sectors.
    leaves: BTreeSet<SectorId>,
    /// Entities in those leaves, as last reported.
    entities: u64,
    /// `None`: the namespace has no replication to ask.
    replication: Option<Linked>,
    /// Why the namespace's control Secret cannot be used, if it cannot.
    secret_problem: Option<String>,
    /// Whether `leaves` comes from a world sync of this replica. Until then nothing is drained
    /// or retired: a freshly started (or elected) operator must not read "no leaves" as "no
    /// load" and move every sector onto two pods.
    leaves_known: bool,
}

struct Linked {
    connected: BTreeSet<ShardId>,
    /// Leaves per shard in the applied placement.
    sectors_of: BTreeMap<ShardId, usize>,
}

async fn reconcile(guarded: Arc<DeserializeGuard<ShardPool>>, ctx: Arc<Context>) -> Result<Action> {
    let pool = match &guarded.0 {
        Ok(pool) => pool,
        Err(invalid) => {
            // Its pods stay as they are until the pool is fixed (the watch brings it back).
            report_invalid::<ShardPool>(&ctx, invalid).await;
            return Ok(Action::await_change());
        }
    };
    let ns = pool
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(pool.name_any()))?;
    ctx.metrics
        .reconciles
        .with_label_values(&["shardpool"])
        .inc();
    let name = pool.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let observed = observe(&ctx, &ns, pool).await?;
    let policy = policy_of(&pool.spec);
    let desired = desired_shards(observed.leaves.len(), observed.entities, &policy);
    let now = Instant::now();
    let states = pod_states(&ctx, &ns, &observed, &template_hash(pool), now);
    let plan = plan_pods(
        &states,
        observed.leaves_known.then_some(desired),
        &policy,
        now,
    );
    replace_ended(&ctx, &pods, pool, &plan).await?;
    let refused = create_missing(&ctx, &pods, pool, plan.create).await?;
    if observed.leaves_known {
        mark_draining(&ctx, &pods, pool, &observed.pods, &plan).await?;
    }
    retire_idle(&ctx, &pods, pool, &plan).await?;
    sync_pool_status(&ctx, pool, &observed, &plan, desired, refused).await?;
    debug!(pool = %name, desired, pods = observed.pods.len(), "pool reconciled");
    Ok(Action::requeue(RESYNC))
}

/// Lists the pool's pods and Sectors and asks replication (once) for links and placement.
async fn observe(ctx: &Context, ns: &str, pool: &ShardPool) -> Result<Observed> {
    let name = pool.name_any();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={name}")))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_managed(p))
        .collect();
    // The Sector controller lists the world's Sectors once per sync and leaves each pool's
    // leaves here (listing 10,000 Sectors per pool every round would load the API server).
    // None until this replica has synced the world once (just started, or just elected).
    let known: Option<BTreeSet<SectorId>> = ctx
        .world_leaves
        .lock()
        .expect("world leaves lock")
        .get(ns)
        .map(|pools| pools.get(&name).cloned().unwrap_or_default());
    let leaves_known = known.is_some();
    let leaves = known.unwrap_or_default();
    let control = match control_client(ctx, ns).await {
        Ok(control) => control,
        Err(e @ Error::BadControlSecret { .. }) => {
            return Ok(Observed {
                pods,
                leaves,
                entities: 0,
                replication: None,
                secret_problem: Some(e.to_string()),
                leaves_known,
            });
        }
        Err(e) => return Err(e),
    };
    let Some(control) = control else {
        return Ok(Observed {
            pods,
            leaves,
            entities: 0,
            replication: None,
            secret_problem: None,
            leaves_known,
        });
    };
    let connected = control.connected_shards().await?;
    let entities = control
        .load()
        .await?
        .sectors
        .iter()
        .filter(|l| leaves.contains(&l.sector))
        .map(|l| u64::from(l.entities))
        .sum();
    let mut sectors_of: BTreeMap<ShardId, usize> = BTreeMap::new();
    for shard in control.placement().await?.sectors.values() {
        *sectors_of.entry(shard.clone()).or_default() += 1;
    }
    Ok(Observed {
        pods,
        leaves,
        entities,
        replication: Some(Linked {
            connected,
            sectors_of,
        }),
        secret_problem: None,
        leaves_known,
    })
}

fn is_managed(pod: &Pod) -> bool {
    pod.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
}

fn has_ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Failed" | "Succeeded"))
}

fn is_draining(pod: &Pod) -> bool {
    pod.labels().get(DRAINING_LABEL).map(String::as_str) == Some("true")
}

/// The policy's view of each pod, tracking since when each has owned no sector.
fn pod_states(
    ctx: &Context,
    ns: &str,
    observed: &Observed,
    template: &str,
    now: Instant,
) -> Vec<PodState> {
    let mut idle = ctx.idle_since.lock().expect("idle lock");
    observed
        .pods
        .iter()
        .map(|pod| {
            let shard = ShardId::new(pod.name_any());
            let (connected, sectors) = observed.replication.as_ref().map_or((false, 0), |r| {
                (
                    r.connected.contains(&shard),
                    r.sectors_of.get(&shard).copied().unwrap_or(0),
                )
            });
            let key = format!("{ns}/{shard}");
            let idle_since = if sectors == 0 {
                Some(*idle.entry(key).or_insert(now))
            } else {
                idle.remove(&key);
                None
            };
            PodState {
                shard,
                sectors,
                idle_since,
                connected,
                ended: has_ended(pod),
                outdated: is_outdated(pod, template),
            }
        })
        .collect()
}

/// Deletes pods whose process ended; `create_missing` starts their replacements at once, and
/// the Sector controller re-homes their leaves from replication's mirror.
async fn replace_ended(
    ctx: &Context,
    pods: &Api<Pod>,
    pool: &ShardPool,
    plan: &PodPlan,
) -> Result<()> {
    for shard in &plan.replace {
        delete_pod(pods, &shard.0).await?;
        ctx.metrics.pods.with_label_values(&["replaced"]).inc();
        info!(pool = %pool.name_any(), pod = %shard, "shard pod ended; replacing it");
        publish(
            ctx,
            &pool.object_ref(&()),
            EventType::Warning,
            "Replacing",
            format!("shard pod {shard} ended; a new one takes its place"),
        )
        .await;
    }
    Ok(())
}

/// Creates `count` pods; when the API server refuses the pod the template makes (422), stops
/// and returns its message: that is the user's to fix, reported in the pool's status.
async fn create_missing(
    ctx: &Context,
    pods: &Api<Pod>,
    pool: &ShardPool,
    count: usize,
) -> Result<Option<String>> {
    for _ in 0..count {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let created = match pods.create(&params, &shard_pod(pool)).await {
            Ok(pod) => pod,
            Err(kube::Error::Api(e)) if e.code == 422 => return Ok(Some(e.message)),
            Err(e) => return Err(e.into()),
        };
        ctx.metrics.pods.with_label_values(&["created"]).inc();
        let name = created.name_any();
        info!(pool = %pool.name_any(), pod = %name, "shard pod created");
        publish(
            ctx,
            &pool.object_ref(&()),
            EventType::Normal,
            "Created",
            format!("created shard pod {name}"),
        )
        .await;
    }
    Ok(None)
}

/// Labels exactly the planned pods as draining (and unlabels any that the pool needs again).
async fn mark_draining(
    ctx: &Context,
    api: &Api<Pod>,
    pool: &ShardPool,
    pods: &[Pod],
    plan: &PodPlan,
) -> Result<()> {
    let drain: BTreeSet<&str> = plan.drain.iter().map(|s| s.0.as_str()).collect();
    for pod in pods {
        let name = pod.name_any();
        let want = drain.contains(name.as_str());
        if want == is_draining(pod) {
            continue;
        }
        let value = want.then_some("true");
        let patch = json!({ "metadata": { "labels": { DRAINING_LABEL: value } } });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        if want {
            info!(pool = %pool.name_any(), pod = %name, "draining surplus shard pod");
            publish(
                ctx,
                &pool.object_ref(&()),
                EventType::Normal,
                "Draining",
                format!("shard pod {name} is surplus: its sectors move off before it retires"),
            )
            .await;
        }
    }
    Ok(())
}

async fn retire_idle(
    ctx: &Context,
    pods: &Api<Pod>,
    pool: &ShardPool,
    plan: &PodPlan,
) -> Result<()> {
    for shard in &plan.retire {
        delete_pod(pods, &shard.0).await?;
        ctx.metrics.pods.with_label_values(&["retired"]).inc();
        info!(pool = %pool.name_any(), pod = %shard, "idle shard pod retired");
        publish(
            ctx,
            &pool.object_ref(&()),
            EventType::Normal,
            "Retired",
            format!("shard pod {shard} owned no sector for the pool's idle time"),
        )
        .await;
    }
    Ok(())
}

async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<()> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Annotation on each shard pod: the hash of the pool template it was made from. A pod whose
/// hash is not the pool's is outdated, and is rolled (replaced, then drained) one at a time.
pub const TEMPLATE_HASH: &str = "sidereal.dev/template-hash";

/// The hash of `pool`'s pod template (its JSON), 16 hex digits.
pub fn template_hash(pool: &ShardPool) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(&pool.spec.template).unwrap_or_default();
    sha2::Sha256::digest(&json)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_outdated(pod: &Pod, hash: &str) -> bool {
    pod.annotations().get(TEMPLATE_HASH).map(String::as_str) != Some(hash)
}

/// A new shard pod of `pool`: its template, owned by the pool, labelled as the pool's, with the
/// shard's identity (the pod's own name), the replication link address and the shard secret
/// in the shard container's environment. The name is generated by the API server, so a
/// replacement is a new shard and never collides with one still shutting down.
pub fn shard_pod(pool: &ShardPool) -> Pod {
    let name = pool.name_any();
    let template = &pool.spec.template;
    let mut pod = Pod::default();
    let meta = template.metadata.clone().unwrap_or_default();
    pod.metadata.generate_name = Some(format!("{name}-"));
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(TEMPLATE_HASH.into(), template_hash(pool));
    pod.metadata.annotations = Some(annotations);
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POOL_LABEL.into(), name.clone());
    labels.insert("app.kubernetes.io/name".into(), "sidereal-shard".into());
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.remove(DRAINING_LABEL);
    pod.metadata.labels = Some(labels);
    pod.metadata.owner_references = pool.controller_owner_ref(&()).map(|o| vec![o]);
    let mut spec = template.spec.clone().unwrap_or_default();
    if spec.termination_grace_period_seconds.is_none() {
        // A shard stopping hands its sectors over; give it the pool's drain time.
        spec.termination_grace_period_seconds = Some(i64::from(pool.spec.drain_timeout_seconds));
    }
    if spec.containers.is_empty() {
        spec.containers.push(Container {
            name: SHARD_CONTAINER.into(),
            ..Container::default()
        });
    }
    let index = spec
        .containers
        .iter()
        .position(|c| c.name == SHARD_CONTAINER)
        .unwrap_or(0);
    let container = &mut spec.containers[index];
    let env = container.env.get_or_insert_with(Vec::new);
    let mut add = |var: EnvVar| {
        if !env.iter().any(|e| e.name == var.name) {
            env.push(var);
        }
    };
    add(EnvVar {
        name: "SIDEREAL_SHARD_ID".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    });
    add(secret_env(
        "SIDEREAL_REPLICATION_ADDR",
        CONTROL_SECRET,
        "link",
    ));
    add(secret_env("SIDEREAL_SHARD_SECRET", SHARD_SECRET, "secret"));
    add(EnvVar {
        name: "SIDEREAL_SHARD_METRICS".into(),
        value: Some(format!("0.0.0.0:{SHARD_METRICS_PORT}")),
        ..EnvVar::default()
    });
    // Subscribers dial the pod's own IP: defined first, so the next value can expand it.
    add(EnvVar {
        name: "POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    });
    add(EnvVar {
        name: "SIDEREAL_SHARD_STREAM".into(),
        value: Some(format!("0.0.0.0:{SHARD_STREAM_PORT}")),
        ..EnvVar::default()
    });
    add(EnvVar {
        name: "SIDEREAL_SHARD_STREAM_ADVERTISE".into(),
        value: Some(format!("$(POD_IP):{SHARD_STREAM_PORT}")),
        ..EnvVar::default()
    });
    pod.spec = Some(spec);
    pod
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The pool's status: pods, linked pods, leaves, and a Ready condition saying why (not).
async fn sync_pool_status(
    ctx: &Context,
    pool: &ShardPool,
    observed: &Observed,
    plan: &PodPlan,
    desired: usize,
    refused: Option<String>,
) -> Result<()> {
    let live = observed.pods.iter().filter(|p| !has_ended(p)).count();
    let ready = observed.replication.as_ref().map_or(0, |r| {
        observed
            .pods
            .iter()
            .filter(|p| r.connected.contains(&ShardId::new(p.name_any())))
            .count()
    });
    let (status, reason, message) = if let Some(why) = refused {
        (
            "False",
            "InvalidTemplate",
            format!("the API server refuses the pods this template makes: {why}"),
        )
    } else if let Some(problem) = &observed.secret_problem {
        ("False", "BadControlSecret", problem.clone())
    } else if observed.replication.is_none() {
        (
            "False",
            "NoReplication",
            format!("no Secret {CONTROL_SECRET} in the namespace says where replication is"),
        )
    } else if ready < desired.min(live + plan.create) || plan.create > 0 {
        (
            "False",
            "ScalingUp",
            format!("{ready} of {desired} shard pods linked to replication"),
        )
    } else if !plan.drain.is_empty() {
        (
            "True",
            "ScalingDown",
            format!(
                "{} surplus shard pods draining; {desired} needed",
                plan.drain.len()
            ),
        )
    } else {
        (
            "True",
            "Scaled",
            format!("{ready} shard pods linked, as needed"),
        )
    };
    let old = pool.status.clone().unwrap_or_default();
    let old_reason = old
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone());
    let condition = ready_condition(
        &old.conditions,
        status == "True",
        reason,
        message,
        pool.metadata.generation,
    );
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let new = ShardPoolStatus {
        shards: count(live),
        ready: count(ready),
        leaves: count(observed.leaves.len()),
        conditions: vec![condition],
        observed_generation: pool.metadata.generation,
    };
    if new == old {
        return Ok(());
    }
    let api: Api<ShardPool> =
        Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    if !apply_status(&api, "ShardPool", &pool.name_any(), &new).await? {
        return Ok(());
    }
    ctx.metrics.status_writes.with_label_values(&["pool"]).inc();
    if old_reason.as_deref() != Some(reason) {
        let type_ = if status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let note = new.conditions[0].message.clone();
        publish(ctx, &pool.object_ref(&()), type_, reason, note).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(template: serde_json::Value) -> ShardPool {
        let mut p: ShardPool = serde_json::from_value(json!({
            "apiVersion": "sidereal.dev/v1alpha1",
            "kind": "ShardPool",
            "metadata": { "name": "default", "namespace": "w", "uid": "u-1" },
            "spec": { "template": template },
        }))
        .expect("a pool");
        p.spec.drain_timeout_seconds = 45;
        p
    }

    fn env_of(pod: &Pod) -> BTreeMap<String, EnvVar> {
        let spec = pod.spec.as_ref().expect("spec");
        let c = spec
            .containers
            .iter()
            .find(|c| c.name == SHARD_CONTAINER)
            .expect("the shard container");
        c.env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn a_shard_pod_is_its_template_plus_identity_link_and_secret() {
        let p = pool(json!({
            "metadata": { "labels": { "team": "sim", DRAINING_LABEL: "true" } },
            "spec": {
                "containers": [
                    { "name": "sidecar", "image": "busybox" },
                    { "name": "shard", "image": "sidereal:1", "args": ["shard"],
                      "env": [{ "name": "SIDEREAL_SHARD_METRICS", "value": "0.0.0.0:9999" }] }
                ]
            }
        }));
        let pod = shard_pod(&p);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("default-"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels.get(POOL_LABEL).map(String::as_str), Some("default"));
        assert_eq!(labels.get("team").map(String::as_str), Some("sim"));
        assert_eq!(
            labels.get(MANAGED_BY.0).map(String::as_str),
            Some(MANAGED_BY.1)
        );
        assert!(
            !labels.contains_key(DRAINING_LABEL),
            "a new pod is never draining"
        );
        let owner = &pod.metadata.owner_references.clone().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ShardPool", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
        let spec = pod.spec.clone().unwrap();
        assert_eq!(spec.termination_grace_period_seconds, Some(45));
        assert_eq!(
            spec.containers[0].env, None,
            "other containers are left alone"
        );
        let env = env_of(&pod);
        let id = env["SIDEREAL_SHARD_ID"].value_from.clone().unwrap();
        assert_eq!(id.field_ref.unwrap().field_path, "metadata.name");
        let link = env["SIDEREAL_REPLICATION_ADDR"].value_from.clone().unwrap();
        let link = link.secret_key_ref.unwrap();
        assert_eq!(
            (link.name.as_str(), link.key.as_str()),
            (CONTROL_SECRET, "link")
        );
        let secret = env["SIDEREAL_SHARD_SECRET"].value_from.clone().unwrap();
        let secret = secret.secret_key_ref.unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            (SHARD_SECRET, "secret")
        );
        assert_eq!(
            env["SIDEREAL_SHARD_METRICS"].value.as_deref(),
            Some("0.0.0.0:9999"),
            "what the template sets wins"
        );
        // Sector streams: served on every address, advertised as the pod's IP, which must be
        // defined before the value that expands it.
        assert_eq!(
            env["SIDEREAL_SHARD_STREAM"].value.as_deref(),
            Some("0.0.0.0:7704")
        );
        assert_eq!(
            env["SIDEREAL_SHARD_STREAM_ADVERTISE"].value.as_deref(),
            Some("$(POD_IP):7704")
        );
        let ip = env["POD_IP"].value_from.clone().unwrap();
        assert_eq!(ip.field_ref.unwrap().field_path, "status.podIP");
        let names: Vec<String> = spec.containers[1]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.clone())
            .collect();
        let at = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(at("POD_IP") < at("SIDEREAL_SHARD_STREAM_ADVERTISE"));
    }

    #[test]
    fn an_empty_template_still_makes_a_shard_container() {
        let pod = shard_pod(&pool(json!({})));
        let spec = pod.spec.clone().unwrap();
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.containers[0].name, SHARD_CONTAINER);
        assert_eq!(
            env_of(&pod)["SIDEREAL_SHARD_METRICS"].value.as_deref(),
            Some("0.0.0.0:9100")
        );
    }
}
