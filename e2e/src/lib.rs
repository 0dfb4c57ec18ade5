//! Helpers for tests against a real cluster given by `KUBECONFIG`: the local control plane
//! that `make test` starts here, or kind elsewhere. Every test gets its own namespace, deleted
//! afterwards even when the test panics.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use sidereal_crds::{Sector, ShardPool};

/// Field manager used for server-side apply by the tests.
pub const MANAGER: &str = "sidereal-e2e";

/// A client for the cluster in `KUBECONFIG`, with a clear error when there is none.
pub async fn client() -> anyhow::Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!(
            "KUBECONFIG is not set: run the e2e suite through `make test`, which starts a local control plane"
        );
    }
    Client::try_default()
        .await
        .context("connecting to the cluster in KUBECONFIG")
}

/// The repository's root, for the YAML files users apply.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

/// Runs kubectl (against `KUBECONFIG`) and returns its stdout, or its stderr as the error.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Installs both CRDs as users do, from the committed YAML (`kubectl apply --server-side -f
/// crds/generated/`), and waits until the API server serves them.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let dir = repo_root().join("crds/generated");
    kubectl(&[
        "apply",
        "--server-side",
        "--field-manager",
        MANAGER,
        "-f",
        dir.to_str().context("a UTF-8 path")?,
    ])?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sidereal_crds::crds() {
        let name = crd.metadata.name.clone().expect("CRDs have names");
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .with_context(|| format!("{name} not Established within 30s"))??;
    }
    // Discovery can lag Established by a moment; wait until a list of each kind succeeds.
    wait_until("CRDs served", Duration::from_secs(30), || async {
        let s = Api::<Sector>::all(client.clone())
            .list(&Default::default())
            .await
            .is_ok();
        let p = Api::<ShardPool>::all(client.clone())
            .list(&Default::default())
            .await
            .is_ok();
        Ok(s && p)
    })
    .await
}

/// Polls `check` until it returns true or `deadline` passes. Never a bare sleep: the loop ends
/// as soon as the condition holds.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `body` in a fresh namespace with the CRDs installed and deletes the namespace
/// afterwards, whether the body returned an error or panicked.
pub async fn in_namespace<F, Fut>(test: &str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let client = client().await?;
    install_crds(&client).await?;
    let ns = format!(
        "e2e-{test}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(ns.clone());
    n.metadata.labels = Some([("sidereal.dev/e2e".to_owned(), "true".to_owned())].into());
    namespaces
        .create(&PostParams::default(), &n)
        .await
        .with_context(|| format!("creating namespace {ns}"))?;
    let outcome = tokio::spawn(body(client.clone(), ns.clone())).await;
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    match outcome {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(join.into()),
    }
}

/// The API server's message for a rejected request, or an error if it was not rejected.
pub fn rejection<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> anyhow::Result<String> {
    match result {
        Ok(obj) => bail!("the API server accepted an object it should have rejected: {obj:?}"),
        Err(kube::Error::Api(status)) => Ok(status.message.clone()),
        Err(e) => bail!("request failed without an API rejection: {e}"),
    }
}

/// The `sidereal` binary this workspace built (`cargo test --workspace` builds it before any
/// test runs; `make test` puts it under `CARGO_TARGET_DIR`).
pub fn sidereal_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug/sidereal");
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `make test` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A local process killed when dropped (the test's replication, shards, operator).
pub struct LocalProcess(pub std::process::Child);

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
