//! State the reconcilers share: the Kubernetes client, the event recorder, metrics, and when
//! each world was last synced.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use sidereal_core::SectorId;

use crate::policy::history::LoadHistory;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "sidereal-operator";

/// The Secret in a world's namespace that says where its replication is: keys `url` (the
/// control API, e.g. `http://replication:7700`) and `token` (its bearer token).
pub const CONTROL_SECRET: &str = "sidereal-control";

/// A world is synced at most this often, however many of its Sectors ask.
pub const SYNC_DEBOUNCE: Duration = Duration::from_millis(500);

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub syncs: IntCounterVec,
    pub reconciles: IntCounterVec,
    pub errors: IntCounterVec,
    pub pods: IntCounterVec,
    pub invalid_objects: IntCounterVec,
    pub sync_seconds: Histogram,
    pub status_writes: IntCounterVec,
    pub transitions: IntCounterVec,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    pub api_requests: IntCounterVec,
    /// Leaves a placement write moved from one shard to another.
    pub leaf_moves: IntCounter,
    pub placement_generation: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry =
            Registry::new_custom(Some("sidereal_operator".into()), None).expect("a valid prefix");
        let syncs = IntCounterVec::new(
            Opts::new("world_syncs_total", "World syncs, by outcome"),
            &["outcome"],
        )
        .expect("valid");
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles, by controller"),
            &["controller"],
        )
        .expect("valid");
        let errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Failed reconciles, by controller and error",
            ),
            &["controller", "error"],
        )
        .expect("valid");
        let pods = IntCounterVec::new(
            Opts::new(
                "shard_pods_total",
                "Shard pods created, replaced (their process ended) and retired (idle surplus)",
            ),
            &["action"],
        )
        .expect("valid");
        let sync_seconds = Histogram::with_opts(HistogramOpts::new(
            "world_sync_duration_seconds",
            "Time to observe a world, place it and write its Sectors' status",
        ))
        .expect("valid");
        let status_writes = IntCounterVec::new(
            Opts::new(
                "status_writes_total",
                "Sector status patches, by kind (written only on change)",
            ),
            &["kind"],
        )
        .expect("valid");
        let transitions = IntCounterVec::new(
            Opts::new("transitions_total", "Splits and merges started, by kind"),
            &["kind"],
        )
        .expect("valid");
        let invalid_objects = IntCounterVec::new(
            Opts::new(
                "invalid_objects_total",
                "Objects skipped because the operator cannot read them, by kind (once per version)",
            ),
            &["kind"],
        )
        .expect("valid");
        for c in [
            &syncs,
            &reconciles,
            &errors,
            &pods,
            &invalid_objects,
            &status_writes,
            &transitions,
        ] {
            registry.register(Box::new(c.clone())).expect("unique");
        }
        registry
            .register(Box::new(sync_seconds.clone()))
            .expect("unique");
        let leader = IntGauge::new(
            "leader",
            "1 while this replica holds the leader lease and reconciles, else 0",
        )
        .expect("valid");
        registry.register(Box::new(leader.clone())).expect("unique");
        let api_requests = IntCounterVec::new(
            Opts::new(
                "api_requests_total",
                "Requests this replica made to the Kubernetes API server, by method and resource",
            ),
            &["method", "resource"],
        )
        .expect("valid");
        registry
            .register(Box::new(api_requests.clone()))
            .expect("unique");
        let leaf_moves = IntCounter::new(
            "leaf_moves_total",
            "Leaves the operator's placement writes moved from one shard to another",
        )
        .expect("valid");
        registry
            .register(Box::new(leaf_moves.clone()))
            .expect("unique");
        let placement_generation = IntGaugeVec::new(
            Opts::new(
                "placement_generation",
                "Generation of each world's applied placement, as last read",
            ),
            &["namespace"],
        )
        .expect("valid");
        registry
            .register(Box::new(placement_generation.clone()))
            .expect("unique");
        Self {
            registry,
            syncs,
            reconciles,
            errors,
            pods,
            invalid_objects,
            sync_seconds,
            status_writes,
            transitions,
            leader,
            api_requests,
            leaf_moves,
            placement_generation,
        }
    }
}

/// Makes ring rustls's process-wide crypto provider. The WebSocket game port brings rustls's
/// aws-lc-rs provider into the build beside kube's ring, and with two compiled in, rustls
/// picks neither by itself: kube's TLS setup would panic. Idempotent.
pub fn use_ring_for_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for the cluster in the environment (KUBECONFIG, or the pod's service account) that
/// counts every request it makes in `sidereal_operator_api_requests_total`.
pub async fn counting_client(metrics: &Metrics) -> Result<Client, kube::Error> {
    use_ring_for_tls();
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let counter = metrics.api_requests.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        counter
            .with_label_values(&[req.method().as_str(), resource_of(req.uri().path())])
            .inc();
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// The resource a request path names (`/api/v1/namespaces/w/pods/p` -> `pods`,
/// `/apis/sidereal.dev/v1alpha1/sectors` -> `sectors`): a small, fixed set of label values.
fn resource_of(path: &str) -> &str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") if segments.len() > 2 => &segments[2..],
        Some(&"apis") if segments.len() > 3 => &segments[3..],
        _ => return "other",
    };
    match rest {
        ["namespaces", _, resource, ..] => resource,
        [resource, ..] => resource,
        [] => "other",
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// When each namespace's world was last synced.
    pub synced: Mutex<HashMap<String, Instant>>,
    /// Worlds being synced right now.
    pub running: Mutex<HashSet<String>>,
    /// Worlds whose running sync must go once more (something changed while it ran).
    pub again: Mutex<HashSet<String>>,
    /// What the policy remembers of each world's load between syncs.
    pub histories: Mutex<HashMap<String, LoadHistory>>,
    /// Per world, the leaves of each pool as of the last sync (the pool controller's input).
    pub world_leaves: Mutex<HashMap<String, BTreeMap<String, BTreeSet<SectorId>>>>,
    /// When this operator first saw each Sector (by uid) that has no status yet.
    pub first_seen: Mutex<HashMap<String, Instant>>,
    /// Per world, parents whose merge started and that are not simulated yet.
    pub merging: Mutex<HashMap<String, BTreeSet<SectorId>>>,
    /// Since when each shard pod (`namespace/name`) has owned no sector.
    pub idle_since: Mutex<HashMap<String, Instant>>,
    /// Invalid objects already reported (`uid/name/resourceVersion`).
    pub invalid_seen: Mutex<HashSet<String>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            synced: Mutex::new(HashMap::new()),
            running: Mutex::new(HashSet::new()),
            again: Mutex::new(HashSet::new()),
            histories: Mutex::new(HashMap::new()),
            merging: Mutex::new(HashMap::new()),
            first_seen: Mutex::new(HashMap::new()),
            world_leaves: Mutex::new(HashMap::new()),
            idle_since: Mutex::new(HashMap::new()),
            invalid_seen: Mutex::new(HashSet::new()),
        }
    }

    /// Claims the next sync of `namespace`: refused while one is running (one sync per world
    /// at a time: two would race each other's view and make statuses flap; the running one is
    /// asked to go again, so the change that asked is not lost) or when the last one started
    /// within the debounce window. Release with [`Context::release_sync`].
    pub fn claim_sync(&self, namespace: &str, now: Instant) -> bool {
        let mut running = self.running.lock().expect("running lock");
        if running.contains(namespace) {
            self.again
                .lock()
                .expect("again lock")
                .insert(namespace.to_owned());
            return false;
        }
        let mut synced = self.synced.lock().expect("synced lock");
        match synced.get(namespace) {
            Some(t) if now.saturating_duration_since(*t) < SYNC_DEBOUNCE => false,
            _ => {
                synced.insert(namespace.to_owned(), now);
                running.insert(namespace.to_owned());
                true
            }
        }
    }

    /// Ends the sync claimed with [`Context::claim_sync`]. True when a claim was refused while
    /// it ran: the world is then still claimed, and the caller syncs it once more.
    pub fn release_sync(&self, namespace: &str) -> bool {
        let mut running = self.running.lock().expect("running lock");
        if self.again.lock().expect("again lock").remove(namespace) {
            return true;
        }
        running.remove(namespace);
        false
    }
}

/// The namespace's replication, from its `sidereal-control` Secret; `None` when there is none.
pub(crate) async fn control_client(
    ctx: &Context,
    ns: &str,
) -> crate::Result<Option<sidereal_core::ControlClient>> {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(ctx.client.clone(), ns);
    let Some(secret) = secrets.get_opt(CONTROL_SECRET).await? else {
        return Ok(None);
    };
    let field = |key: &str| -> crate::Result<String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| crate::Error::BadControlSecret {
                namespace: ns.to_owned(),
                name: CONTROL_SECRET.to_owned(),
                reason: format!("no key {key:?}"),
            })?;
        String::from_utf8(bytes)
            .map(|s| s.trim().to_owned())
            .map_err(|_| crate::Error::BadControlSecret {
                namespace: ns.to_owned(),
                name: CONTROL_SECRET.to_owned(),
                reason: format!("{key} is not UTF-8"),
            })
    };
    Ok(Some(sidereal_core::ControlClient::new(
        field("url")?,
        Some(field("token")?),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_the_resource_they_name() {
        for (path, resource) in [
            ("/api/v1/namespaces/w/pods/default-x2k", "pods"),
            ("/api/v1/namespaces/w/pods", "pods"),
            (
                "/apis/sidereal.dev/v1alpha1/namespaces/w/sectors/s2-x0-y0/status",
                "sectors",
            ),
            ("/apis/sidereal.dev/v1alpha1/sectors", "sectors"),
            (
                "/apis/coordination.k8s.io/v1/namespaces/w/leases/op",
                "leases",
            ),
            ("/api/v1/namespaces/w", "namespaces"),
            ("/version", "other"),
            ("/apis", "other"),
        ] {
            assert_eq!(resource_of(path), resource, "{path}");
        }
    }

    #[tokio::test]
    async fn one_sync_per_world_at_a_time_and_not_more_often_than_the_debounce() {
        use_ring_for_tls();
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("a URL"),
        ))
        .expect("a client needs no server to be built");
        let ctx = Context::new(client, Metrics::default());
        let t0 = Instant::now();
        assert!(ctx.claim_sync("a", t0));
        assert!(
            !ctx.claim_sync("a", t0 + SYNC_DEBOUNCE * 4),
            "still running"
        );
        assert!(ctx.claim_sync("b", t0), "another world is independent");
        // The refused claim asked for one more round: still claimed.
        assert!(ctx.release_sync("a"));
        assert!(
            !ctx.claim_sync("a", t0 + SYNC_DEBOUNCE * 8),
            "running its extra round"
        );
        assert!(ctx.release_sync("a"));
        assert!(!ctx.release_sync("a"), "done");
        assert!(!ctx.claim_sync("a", t0 + SYNC_DEBOUNCE / 2), "debounced");
        assert!(ctx.claim_sync("a", t0 + SYNC_DEBOUNCE * 4));
    }
}
