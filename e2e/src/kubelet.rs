//! A test-only stand-in for the kubelet. kwok's fake nodes schedule pods and report them
//! Running without running anything; this runs a real `sidereal` process for each shard pod
//! bound to a node, with that pod's container args and environment (values, the pod's own
//! name, Secret keys resolved as the kubelet does), and kills it when the pod is deleted. A
//! process that exits is started again, as with `restartPolicy: Always`.
//!
//! It is not a kubelet: no images, no probes, no status writes (kwok owns pod status). It
//! exists so the e2e tests run the operator's pods as the real shard processes they describe.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::{LocalProcess, sidereal_bin};

/// The container of a shard pod that the stand-in runs.
const SHARD_CONTAINER: &str = "shard";

/// Runs the shard pods of one namespace as local processes until dropped.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    running: Arc<Mutex<HashMap<String, LocalProcess>>>,
    /// Pods started, counting restarts.
    starts: Arc<Mutex<u64>>,
}

impl Kubelet {
    /// Watches the pods labelled `selector` (e.g. `app.kubernetes.io/name=sidereal-shard`) in
    /// `ns`, checking every 100 ms.
    pub fn start(client: Client, ns: &str, selector: &str) -> Self {
        let running: Arc<Mutex<HashMap<String, LocalProcess>>> = Arc::default();
        let starts = Arc::new(Mutex::new(0));
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client, ns);
        let params = ListParams::default().labels(selector);
        let task = tokio::spawn({
            let running = running.clone();
            let starts = starts.clone();
            async move {
                loop {
                    if let Ok(list) = pods.list(&params).await {
                        sync(&list.items, &secrets, &running, &starts).await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self {
            task,
            running,
            starts,
        }
    }

    /// Pods with a live process now.
    pub fn running(&self) -> BTreeSet<String> {
        self.running
            .lock()
            .expect("running lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Processes started so far, restarts included.
    pub fn starts(&self) -> u64 {
        *self.starts.lock().expect("starts lock")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        self.running.lock().expect("running lock").clear();
    }
}

/// Starts a process for every bound, live pod without one; kills those whose pod is gone or
/// being deleted; forgets processes that exited so they start again.
async fn sync(
    pods: &[Pod],
    secrets: &Api<Secret>,
    running: &Mutex<HashMap<String, LocalProcess>>,
    starts: &Mutex<u64>,
) {
    let live: BTreeMap<String, &Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
        .map(|p| (p.name_any(), p))
        .collect();
    let to_start: Vec<&Pod> = {
        let mut running = running.lock().expect("running lock");
        running.retain(|name, process| {
            live.contains_key(name) && matches!(process.0.try_wait(), Ok(None))
        });
        live.iter()
            .filter(|(name, _)| !running.contains_key(*name))
            .map(|(_, p)| *p)
            .collect()
    };
    for pod in to_start {
        match command(pod, secrets).await {
            Ok(mut cmd) => match cmd.spawn() {
                Ok(child) => {
                    running
                        .lock()
                        .expect("running lock")
                        .insert(pod.name_any(), LocalProcess(child));
                    *starts.lock().expect("starts lock") += 1;
                }
                Err(e) => eprintln!("kubelet stand-in: starting {}: {e}", pod.name_any()),
            },
            // Like the kubelet's CreateContainerConfigError: retried on the next pass.
            Err(e) => eprintln!("kubelet stand-in: {}: {e}", pod.name_any()),
        }
    }
}

/// The shard container of `pod` as a local command.
async fn command(pod: &Pod, secrets: &Api<Secret>) -> anyhow::Result<std::process::Command> {
    let spec = pod.spec.as_ref().expect("bound pods have a spec");
    let container: &Container = spec
        .containers
        .iter()
        .find(|c| c.name == SHARD_CONTAINER)
        .or_else(|| spec.containers.first())
        .ok_or_else(|| anyhow::anyhow!("no container"))?;
    let mut cmd = std::process::Command::new(sidereal_bin());
    cmd.args(container.args.clone().unwrap_or_default())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    let mut defined: Vec<(String, String)> = Vec::new();
    for var in container.env.clone().unwrap_or_default() {
        let value = match (&var.value, &var.value_from) {
            // `$(NAME)` of a variable defined earlier expands, as the kubelet does.
            (Some(v), _) => defined.iter().fold(v.clone(), |v, (name, value)| {
                v.replace(&format!("$({name})"), value)
            }),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    match field.field_path.as_str() {
                        "metadata.name" => pod.name_any(),
                        "metadata.namespace" => pod.namespace().unwrap_or_default(),
                        // Pods run as local processes here: the host's loopback is their IP.
                        "status.podIP" => "127.0.0.1".to_owned(),
                        other => anyhow::bail!("unsupported fieldRef {other}"),
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    let secret = secrets.get(&key.name).await?;
                    let bytes = secret
                        .data
                        .and_then(|d| d.get(&key.key).cloned())
                        .ok_or_else(|| {
                            anyhow::anyhow!("Secret {} has no key {}", key.name, key.key)
                        })?;
                    String::from_utf8(bytes.0)?
                } else {
                    anyhow::bail!("unsupported valueFrom in {}", var.name)
                }
            }
            (None, None) => String::new(),
        };
        cmd.env(&var.name, &value);
        defined.push((var.name.clone(), value));
    }
    // Every pod has its own network namespace; local processes share one, so metrics and
    // sector streams take any free port (and the streams advertise the one they got).
    cmd.env("SIDEREAL_SHARD_METRICS", "127.0.0.1:0");
    cmd.env("SIDEREAL_SHARD_STREAM", "127.0.0.1:0");
    cmd.env_remove("SIDEREAL_SHARD_STREAM_ADVERTISE");
    Ok(cmd)
}
