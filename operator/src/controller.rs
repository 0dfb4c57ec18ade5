//! The Sector controller. Every namespace holding Sectors is one world, served by the
//! replication named in its `sidereal-control` Secret. A reconcile of any Sector syncs its
//! whole world (at most every [`SYNC_DEBOUNCE`](crate::context::SYNC_DEBOUNCE)): observe the
//! Sectors, pools and replication once, push the placement with the Sectors' roots as the
//! world, then write each Sector's status where it changed. Each step is idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use sidereal_core::{ControlClient, Placement, SectorId, ShardId};
use sidereal_crds::{Sector, SectorStatus, ShardPool};
use tracing::{debug, info, warn};

use crate::context::{Context, FIELD_MANAGER, Metrics, control_client};
use crate::objects::list_valid;
use crate::policy::placement::{assign, moved};
use crate::policy::transitions::{Transition, decide};
use crate::policy::{Capacity, LeafLoad, PoolPolicy, Thresholds};
use crate::pool::policy_of;
use crate::report::{apply_status, publish, ready_condition};
use crate::shardpool::{DRAINING_LABEL, MANAGED_BY, POOL_LABEL};
use crate::world::{
    Readiness, ReplicationView, SectorState, SectorTree, bad_secret, load_moved,
    merging as merging_state, sector_state, simulated, splits_under_way,
};
use crate::{Error, Result};

/// Every known world is re-synced this often even when nothing in the cluster changed: load
/// moves.
pub const RESYNC: Duration = Duration::from_secs(2);

/// Sector status patches in flight at once during a sync.
const STATUS_WRITES_IN_FLIGHT: usize = 32;

/// A new Sector's first status waits this long for it to be simulated: a world applied at once
/// then costs one status write per Sector (Active), not two (Pending, then Active).
const FIRST_STATUS_GRACE: Duration = Duration::from_secs(15);

/// Conflicting placement writes retried in a row before the reconcile fails (and is retried).
const PLACEMENT_ATTEMPTS: u32 = 10;

/// Runs the Sector controller over every namespace (or only over `namespaces`, one watch
/// each) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown = futures::FutureExt::shared(futures::FutureExt::boxed(shutdown));
    let apis: Vec<Api<DeserializeGuard<Sector>>> = if namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    info!(namespaces = ?namespaces, "sector controller starting");
    // Aborted when this future ends or is dropped (a replica losing the lead drops it).
    let _ticker = AbortOnDrop(tokio::spawn(tick_worlds(ctx.clone())));
    futures::future::join_all(apis.into_iter().map(|api| {
        Controller::new(api, watcher::Config::default())
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    debug!(error = %e, "reconcile did not complete");
                }
            })
    }))
    .await;
    info!("sector controller stopped");
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn reconcile(sector: Arc<DeserializeGuard<Sector>>, ctx: Arc<Context>) -> Result<Action> {
    // A Sector that does not deserialize still names its world; the sync reports and skips it.
    let ns = sector
        .namespace()
        .ok_or_else(|| Error::NotNamespaced(sector.name_any()))?;
    sync_if_due(&ctx, &ns).await?;
    // The world ticker re-syncs every known world every RESYNC: no per-Sector requeue, so
    // 10,000 Sectors cost one sync per world per tick, not 10,000 reconciles.
    Ok(Action::await_change())
}

/// Syncs the world of `ns` unless it was synced within the debounce window.
async fn sync_if_due(ctx: &Context, ns: &str) -> Result<()> {
    if !ctx.claim_sync(ns, Instant::now()) {
        return Ok(());
    }
    loop {
        ctx.metrics.reconciles.with_label_values(&["sector"]).inc();
        let timer = ctx.metrics.sync_seconds.start_timer();
        let result = sync_world(ctx, ns).await;
        timer.observe_duration();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        ctx.metrics.syncs.with_label_values(&[outcome]).inc();
        // Something changed while it ran (a watch event's claim was refused): go again now
        // rather than at the next tick.
        if !ctx.release_sync(ns) {
            return result;
        }
        if let Err(e) = result {
            // No extra round after a failure: release for good; the error policy retries.
            ctx.release_sync(ns);
            return Err(e);
        }
    }
}

/// Every RESYNC, syncs every world the controller has seen (load moves without any object
/// changing; a world whose last Sector was deleted still has to archive it).
async fn tick_worlds(ctx: Arc<Context>) {
    let mut every = tokio::time::interval(RESYNC);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        let worlds: Vec<String> = ctx
            .synced
            .lock()
            .expect("synced lock")
            .keys()
            .cloned()
            .collect();
        for ns in worlds {
            if let Err(e) = sync_if_due(&ctx, &ns).await {
                ctx.metrics
                    .errors
                    .with_label_values(&["sector", e.metric_label()])
                    .inc();
                warn!(namespace = %ns, error = %e, "world sync failed; retrying");
            }
        }
    }
}

fn error_policy(sector: Arc<DeserializeGuard<Sector>>, e: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&["sector", e.metric_label()])
        .inc();
    warn!(sector = %sector.name_any(), error = %e, "world sync failed; retrying");
    // Let the next Sector's reconcile try again at once.
    if let Some(ns) = sector.namespace() {
        ctx.synced.lock().expect("synced lock").remove(&ns);
    }
    Action::requeue(Duration::from_secs(2))
}

/// One world, end to end: observe, place, report.
async fn sync_world(ctx: &Context, ns: &str) -> Result<()> {
    let sectors_api: Api<Sector> = Api::namespaced(ctx.client.clone(), ns);
    // A broken Secret is the user's to fix: every Sector says so, and the sync goes on.
    let (control, secret_problem) = match control_client(ctx, ns).await {
        Ok(control) => (control, None),
        Err(e @ Error::BadControlSecret { .. }) => {
            warn!(namespace = %ns, error = %e, "the control Secret cannot be used");
            (None, Some(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    let pods = match &control {
        Some(_) => shard_pods(ctx, ns).await?,
        None => ShardPods::default(),
    };
    let (mut sectors, mut pools, mut tree) = observe(ctx, ns).await?;
    let mut view = None;
    if let Some(control) = &control {
        let seen = place(
            control,
            &tree,
            &pool_of(&sectors),
            &pools,
            &pods,
            &ctx.metrics,
            ns,
        )
        .await?;
        if scale(ctx, &sectors_api, ns, &sectors, &tree, &pools, &seen).await? {
            // The tree changed: place the new leaves now, not a sync later.
            (sectors, pools, tree) = observe(ctx, ns).await?;
            let sector_pool = pool_of(&sectors);
            let placed = place(
                control,
                &tree,
                &sector_pool,
                &pools,
                &pods,
                &ctx.metrics,
                ns,
            );
            view = Some(placed.await?);
        } else {
            view = Some(seen);
        }
    }
    // The pool controller sizes each pool from these: the Sectors are listed once per sync.
    let sector_pool = pool_of(&sectors);
    let mut leaves_by_pool: BTreeMap<String, BTreeSet<SectorId>> = BTreeMap::new();
    for leaf in &tree.leaves {
        if let Some(pool) = sector_pool.get(leaf) {
            leaves_by_pool
                .entry(pool.clone())
                .or_default()
                .insert(*leaf);
        }
    }
    ctx.world_leaves
        .lock()
        .expect("world leaves lock")
        .insert(ns.to_owned(), leaves_by_pool);
    if sectors.is_empty() {
        // Its last Sector is gone (and its roots archived above): stop ticking it.
        ctx.synced.lock().expect("synced lock").remove(ns);
        let prefix = format!("{ns}/");
        ctx.histories
            .lock()
            .expect("histories lock")
            .retain(|world, _| !world.starts_with(&prefix));
        ctx.merging.lock().expect("merging lock").remove(ns);
        return Ok(());
    }
    // Status writes go out a few at a time: a world of thousands of Sectors converges in
    // seconds, without flooding the API server. The scale of a meaningful load change is the
    // split thresholds of the Sector's pool.
    let splits: BTreeMap<&str, Thresholds> = pools
        .iter()
        .map(|(name, p)| (name.as_str(), policy_of(&p.spec).split))
        .collect();
    let default_split = PoolPolicy::default().split;
    let merging = ctx
        .merging
        .lock()
        .expect("merging lock")
        .get(ns)
        .cloned()
        .unwrap_or_default();
    let jobs: Vec<(&Sector, SectorState)> = sectors
        .iter()
        .filter_map(|s| {
            let id = s.sector_id().ok()?;
            let pool_exists = pools.contains_key(&s.spec.pool);
            let mut state = sector_state(id, &tree, pool_exists, view.as_ref());
            if let Some(problem) = &secret_problem {
                state = bad_secret(state, problem);
            }
            Some((
                s,
                if merging.contains(&id) {
                    merging_state(state)
                } else {
                    state
                },
            ))
        })
        .collect();
    let now = Instant::now();
    let jobs: Vec<(&Sector, SectorState)> = {
        let mut first_seen = ctx.first_seen.lock().expect("first seen lock");
        // Only this world's Sectors that still have no status are remembered.
        let key = |s: &Sector| format!("{ns}/{}", s.metadata.uid.as_deref().unwrap_or_default());
        let waiting: BTreeSet<String> = jobs
            .iter()
            .filter(|(s, _)| s.status.is_none())
            .map(|(s, _)| key(s))
            .collect();
        let prefix = format!("{ns}/");
        first_seen.retain(|k, _| !k.starts_with(&prefix) || waiting.contains(k));
        jobs.into_iter()
            .filter(|(s, state)| {
                if s.status.is_some() {
                    return true;
                }
                let seen = *first_seen.entry(key(s)).or_insert(now);
                !waits_for_first_placement(s, state, now.saturating_duration_since(seen))
            })
            .collect()
    };
    // A steady number in flight (not chunks that each wait for their slowest write).
    let mut pending = Vec::with_capacity(jobs.len());
    for (s, state) in &jobs {
        let split = splits.get(s.spec.pool.as_str()).unwrap_or(&default_split);
        pending.push(sync_status(ctx, &sectors_api, s, state, split));
    }
    let mut writes = futures::stream::iter(pending).buffer_unordered(STATUS_WRITES_IN_FLIGHT);
    while let Some(result) = writes.next().await {
        result?;
    }
    Ok(())
}

/// Whether `sector` is new (no status yet, first seen by this operator `age` ago, within
/// [`FIRST_STATUS_GRACE`]) and only waiting to be placed or measured: its first status is then
/// written once it is simulated with its load (or the grace is over), not before.
fn waits_for_first_placement(sector: &Sector, state: &SectorState, age: Duration) -> bool {
    let placing = matches!(
        state.readiness,
        Readiness::NoShards | Readiness::NotPlaced | Readiness::ShardDown
    );
    // Simulated, but its shard has not reported its load yet (it will within a second).
    let unmeasured = state.readiness == Readiness::Simulated && state.load.is_none();
    sector.status.is_none() && age < FIRST_STATUS_GRACE && (placing || unmeasured)
}

/// The world's readable Sectors and pools, and the tree of those whose pool exists.
async fn observe(
    ctx: &Context,
    ns: &str,
) -> Result<(Vec<Sector>, BTreeMap<String, ShardPool>, SectorTree)> {
    let sectors: Vec<Sector> = list_valid(ctx, ns).await?;
    let pools: BTreeMap<String, ShardPool> = list_valid::<ShardPool>(ctx, ns)
        .await?
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect();
    let placeable: BTreeSet<SectorId> = sectors
        .iter()
        .filter(|s| pools.contains_key(&s.spec.pool))
        .filter_map(|s| s.sector_id().ok())
        .collect();
    let tree = SectorTree::of(&placeable);
    Ok((sectors, pools, tree))
}

/// The shard pods of a world: which pool each belongs to, and which are draining.
#[derive(Debug, Default)]
struct ShardPods {
    pool_of: BTreeMap<ShardId, String>,
    draining: BTreeSet<ShardId>,
}

async fn shard_pods(ctx: &Context, ns: &str) -> Result<ShardPods> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let mut pods = ShardPods::default();
    for pod in api
        .list_metadata(&ListParams::default().labels(&managed))
        .await?
        .items
    {
        let shard = ShardId::new(pod.name_any());
        let labels = pod.labels();
        if labels.get(DRAINING_LABEL).map(String::as_str) == Some("true") {
            pods.draining.insert(shard.clone());
        }
        if let Some(pool) = labels.get(POOL_LABEL) {
            pods.pool_of.insert(shard, pool.clone());
        }
    }
    Ok(pods)
}

/// The pool of every Sector (a split's children carry their parent's).
fn pool_of(sectors: &[Sector]) -> BTreeMap<SectorId, String> {
    sectors
        .iter()
        .filter_map(|s| Some((s.sector_id().ok()?, s.spec.pool.clone())))
        .collect()
}

fn capacity_of(pool: &ShardPool) -> Capacity {
    Capacity {
        sectors: usize::try_from(pool.spec.capacity.sectors)
            .unwrap_or(1)
            .max(1),
        entities: u64::try_from(pool.spec.capacity.entities)
            .unwrap_or(1)
            .max(1),
    }
}

/// Reads replication once (shards, load), pushes the desired placement of the tree's leaves
/// with its roots as the world when it differs from the applied one (re-reading and
/// recomputing on a conflict), and returns what replication now reports. Each pool's leaves go
/// to its own linked, non-draining shard pods at its capacity; a pool with none uses shards
/// that belong to no pool (started by hand), then any other pool's, so every leaf is placed.
async fn place(
    control: &ControlClient,
    tree: &SectorTree,
    sector_pool: &BTreeMap<SectorId, String>,
    pools: &BTreeMap<String, ShardPool>,
    pods: &ShardPods,
    metrics: &Metrics,
    ns: &str,
) -> Result<ReplicationView> {
    let connected = control.connected_shards().await?;
    let load: BTreeMap<SectorId, _> = control
        .load()
        .await?
        .sectors
        .into_iter()
        .map(|l| (l.sector, l))
        .collect();
    // A draining shard keeps simulating until its leaves are placed elsewhere.
    let placeable: Vec<ShardId> = connected.difference(&pods.draining).cloned().collect();
    // No roots (the last root Sector deleted) needs no shard: everything is archived.
    if tree.roots.is_empty() || !placeable.is_empty() {
        let unpooled: Vec<ShardId> = placeable
            .iter()
            .filter(|s| !pods.pool_of.contains_key(*s))
            .cloned()
            .collect();
        let mut by_pool: BTreeMap<&str, BTreeMap<SectorId, u64>> = BTreeMap::new();
        for leaf in &tree.leaves {
            let pool = sector_pool.get(leaf).map_or("", String::as_str);
            let entities = load.get(leaf).map_or(0, |v| u64::from(v.entities));
            by_pool.entry(pool).or_default().insert(*leaf, entities);
        }
        let plan: Vec<(&BTreeMap<SectorId, u64>, Vec<ShardId>, Capacity)> = by_pool
            .iter()
            .map(|(pool, leaves)| {
                let own: Vec<ShardId> = placeable
                    .iter()
                    .filter(|s| pods.pool_of.get(*s).is_some_and(|p| p == pool))
                    .cloned()
                    .collect();
                let shards = [own, unpooled.clone(), placeable.clone()]
                    .into_iter()
                    .find(|s| !s.is_empty())
                    .unwrap_or_default();
                let capacity = pools.get(*pool).map(capacity_of).unwrap_or(Capacity {
                    sectors: 16,
                    entities: 20_000,
                });
                (leaves, shards, capacity)
            })
            .collect();
        let roots = tree.roots.clone();
        let mut moves = 0;
        let applied = control
            .update_placement(PLACEMENT_ATTEMPTS, |current| {
                let mut sectors = BTreeMap::new();
                for (leaves, shards, capacity) in &plan {
                    sectors.extend(assign(leaves, &current.sectors, shards, *capacity));
                }
                moves = moved(&current.sectors, &sectors);
                let unchanged =
                    sectors == current.sectors && current.world.as_deref() == Some(&roots[..]);
                (!unchanged).then(|| Placement {
                    generation: 0,
                    sectors,
                    world: Some(roots.clone()),
                })
            })
            .await?;
        if let Some(reply) = applied {
            metrics.leaf_moves.inc_by(moves as u64);
            info!(
                generation = reply.generation,
                moves,
                roots = roots.len(),
                leaves = tree.leaves.len(),
                "placement pushed"
            );
        }
    }
    let placement = control.placement().await?;
    metrics
        .placement_generation
        .with_label_values(&[ns])
        .set(i64::try_from(placement.generation).unwrap_or(i64::MAX));
    Ok(ReplicationView {
        placement,
        connected,
        load,
    })
}

/// Feeds this round's load to the world's history and carries out the splits and merges the
/// policy decides: a split creates the four child Sectors (owned by the parent, so deleting
/// it cascades), a merge deletes them. The next sync places the new leaves.
async fn scale(
    ctx: &Context,
    api: &Api<Sector>,
    ns: &str,
    sectors: &[Sector],
    tree: &SectorTree,
    pools: &BTreeMap<String, ShardPool>,
    view: &ReplicationView,
) -> Result<bool> {
    let by_id: BTreeMap<SectorId, &Sector> = sectors
        .iter()
        .filter_map(|s| s.sector_id().ok().map(|id| (id, s)))
        .collect();
    // Only fresh reports from the shard that simulates the leaf count.
    let reports: BTreeMap<SectorId, LeafLoad> = tree
        .leaves
        .iter()
        .filter_map(|l| {
            let shard = view.placement.sectors.get(l)?;
            let v = view
                .load
                .get(l)
                .filter(|_| view.connected.contains(shard))?;
            Some((
                *l,
                LeafLoad {
                    entities: u64::from(v.entities),
                    players: u64::from(v.players),
                    tick_p99_ms: f64::from(v.tick_p99_ms),
                },
            ))
        })
        .collect();
    let now = Instant::now();
    // Transitions under way count against their pool's cap: splits whose children are not all
    // simulated, merges whose parent is not simulated yet.
    let mut under_way: Vec<SectorId> = splits_under_way(tree, view).into_iter().collect();
    {
        let mut merging = ctx.merging.lock().expect("merging lock");
        let parents = merging.entry(ns.to_owned()).or_default();
        parents.retain(|p| tree.leaves.contains(p) && !simulated(p, view));
        under_way.extend(parents.iter().copied());
    }
    // Each pool's subtrees follow that pool's policy, with a history of their own.
    let mut transitions: Vec<(Transition, PoolPolicy)> = Vec::new();
    let mut late: BTreeMap<SectorId, Duration> = BTreeMap::new();
    for (name, pool) in pools {
        let mine = |s: &SectorId| by_id.get(s).is_some_and(|x| x.spec.pool == *name);
        let leaves: BTreeSet<SectorId> = tree.leaves.iter().copied().filter(mine).collect();
        if leaves.is_empty() {
            continue;
        }
        let roots: Vec<SectorId> = tree.roots.iter().copied().filter(mine).collect();
        let policy = policy_of(&pool.spec);
        let in_flight = under_way.iter().filter(|s| mine(s)).count();
        let mut histories = ctx.histories.lock().expect("histories lock");
        let history = histories.entry(format!("{ns}/{name}")).or_default();
        history.observe(&leaves, &reports, &policy, now);
        for t in decide(&roots, &leaves, &policy, history, in_flight, now) {
            if let Transition::Split { sector, .. } = t {
                let over = history.hot_for(&sector, &policy, now).unwrap_or_default();
                late.insert(sector, over.saturating_sub(policy.split.sustain));
            }
            history.record_change(t.sectors(), now);
            transitions.push((t, policy.clone()));
        }
    }
    let changed = !transitions.is_empty();
    for (t, policy) in transitions {
        match t {
            Transition::Split { sector, children } => {
                let Some(parent) = by_id.get(&sector) else {
                    continue;
                };
                let owner = parent.controller_owner_ref(&());
                for c in children {
                    let mut child = Sector::for_id(&parent.spec.pool, c);
                    child.metadata.owner_references = owner.clone().map(|o| vec![o]);
                    api.patch(
                        &c.name(),
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&child),
                    )
                    .await?;
                }
                ctx.metrics.transitions.with_label_values(&["split"]).inc();
                // How long after its sustain window ended the split started (the split latency
                // benchmark reads this line).
                let window_ended_ms_ago = late.get(&sector).map_or(0, Duration::as_millis);
                info!(%sector, window_ended_ms_ago, "split started");
                publish(
                    ctx,
                    &parent.object_ref(&()),
                    EventType::Normal,
                    "Splitting",
                    format!(
                        "over the split thresholds for {}s: splitting into its four children",
                        policy.split.sustain.as_secs()
                    ),
                )
                .await;
            }
            Transition::Merge { parent, children } => {
                for c in children {
                    match api.delete(&c.name(), &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                ctx.metrics.transitions.with_label_values(&["merge"]).inc();
                ctx.merging
                    .lock()
                    .expect("merging lock")
                    .entry(ns.to_owned())
                    .or_default()
                    .insert(parent);
                info!(%parent, "merge");
                if let Some(p) = by_id.get(&parent) {
                    publish(ctx, &p.object_ref(&()), EventType::Normal, "Merging", format!("its four children were under the merge thresholds for {}s: merging them back", policy.merge.sustain.as_secs())).await;
                }
            }
        }
    }
    Ok(changed)
}

/// Writes `state` into the Sector's status if it says something new, keeping the condition's
/// transition time when its status did not flip; an Event marks every phase change.
async fn sync_status(
    ctx: &Context,
    api: &Api<Sector>,
    sector: &Sector,
    state: &SectorState,
    split: &Thresholds,
) -> Result<()> {
    let old = sector.status.clone().unwrap_or_default();
    let generation = sector.metadata.generation;
    let condition = ready_condition(
        &old.conditions,
        state.readiness.ready(),
        state.readiness.reason(),
        state.message.clone(),
        generation,
    );
    // Keep the load last written unless it moved meaningfully (see `load_moved`).
    let load = match (&old.load, &state.load) {
        (Some(o), Some(n)) if !load_moved(o, n, split) => Some(o.clone()),
        _ => state.load.clone(),
    };
    let new = SectorStatus {
        phase: Some(state.phase),
        shard: state.shard.clone(),
        load,
        children: state.children.clone(),
        conditions: vec![condition],
        observed_generation: generation,
    };
    if new == old {
        return Ok(());
    }
    if !apply_status(api, "Sector", &sector.name_any(), &new).await? {
        return Ok(());
    }
    let kind = if old.phase == new.phase {
        "load"
    } else {
        "phase"
    };
    ctx.metrics.status_writes.with_label_values(&[kind]).inc();
    if old.phase != new.phase {
        let type_ = if state.readiness.ready() {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(
            ctx,
            &sector.object_ref(&()),
            type_,
            state.readiness.reason(),
            state.message.clone(),
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sidereal_core::control::SectorLoadView;

    use super::*;

    #[test]
    fn a_new_sectors_first_status_waits_for_its_shard_and_load_but_not_forever() {
        let id: SectorId = "s2-x0-y0".parse().unwrap();
        let new = Sector::for_id("default", id);
        let secs = Duration::from_secs;
        let tree = SectorTree::of(&[id].into());
        let mut r = ReplicationView::default();
        let no_shards = sector_state(id, &tree, true, Some(&r));
        assert!(waits_for_first_placement(&new, &no_shards, secs(5)));
        let shard = ShardId::new("shard-0");
        r.connected.insert(shard.clone());
        r.placement.sectors.insert(id, shard.clone());
        let unmeasured = sector_state(id, &tree, true, Some(&r));
        assert!(waits_for_first_placement(&new, &unmeasured, secs(5)));
        r.load.insert(
            id,
            SectorLoadView {
                sector: id,
                shard,
                entities: 3,
                players: 0,
                tick_p99_ms: 1.0,
            },
        );
        let active = sector_state(id, &tree, true, Some(&r));
        assert!(!waits_for_first_placement(&new, &active, secs(5)));
        // Not forever: past the grace, Pending is written.
        assert!(!waits_for_first_placement(&new, &no_shards, secs(20)));
        // A Sector with a status, or one that needs the user's attention, never waits.
        let mut seen = new.clone();
        seen.status = Some(SectorStatus::default());
        assert!(!waits_for_first_placement(&seen, &no_shards, secs(5)));
        let orphan = sector_state(id, &tree, false, Some(&r));
        assert!(!waits_for_first_placement(&new, &orphan, secs(5)));
    }
}
