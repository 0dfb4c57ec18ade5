//! Helpers for tests against a real cluster given by `KUBECONFIG`: the local control plane
//! that `make test` starts here, or kind elsewhere. Every test gets its own namespace, deleted
//! afterwards even when the test panics.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use sidereal_crds::{Sector, ShardPool};

pub mod kubelet;

/// Field manager used for server-side apply by the tests.
pub const MANAGER: &str = "sidereal-e2e";

/// A client for the cluster in `KUBECONFIG`, with a clear error when there is none.
pub async fn client() -> anyhow::Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!(
            "KUBECONFIG is not set: run the e2e suite through `make test`, which starts a local control plane"
        );
    }
    // Two rustls providers are compiled in (see sidereal_operator::context::use_ring_for_tls).
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        // Metadata only: another test may hold an object these types cannot read on purpose.
        let one = ListParams::default().limit(1);
        let s = Api::<Sector>::all(client.clone())
            .list_metadata(&one)
            .await
            .is_ok();
        let p = Api::<ShardPool>::all(client.clone())
            .list_metadata(&one)
            .await
            .is_ok();
        Ok(s && p)
    })
    .await
}

/// The test kit's wait, with the check's errors as `anyhow` (what every e2e check returns).
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    Ok(sidereal_testkit::wait_until_async(what, deadline, check).await?)
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

/// `kubectl <args> -f -` with `text` on stdin: whether it succeeded, and what it printed
/// (stdout, then stderr).
pub fn kubectl_stdin(args: &[&str], text: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new("kubectl")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("writing to kubectl");
    let out = child.wait_with_output().expect("kubectl");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `kubectl apply -n <ns> -f -` of `yaml`, as a user pipes it.
pub fn apply_text(ns: &str, yaml: &str) -> anyhow::Result<()> {
    let (ok, said) = kubectl_stdin(&["apply", "-n", ns], yaml);
    anyhow::ensure!(ok, "kubectl apply: {said}");
    Ok(())
}

/// The secret shards of every [`LocalFleet`] present to its replication.
pub const SHARD_SECRET: &str = "e2e-shard-secret";

/// The control token of every [`LocalFleet`].
pub const FLEET_TOKEN: &str = "e2e-fleet-control-token";

/// A `sidereal` command with the fleet's secrets in its environment.
pub fn sidereal() -> std::process::Command {
    let mut c = std::process::Command::new(sidereal_bin());
    c.env("SIDEREAL_SHARD_SECRET", SHARD_SECRET)
        .env("SIDEREAL_CONTROL_TOKEN", FLEET_TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    c
}

/// Starts replication on `http` and `link` (`127.0.0.1:0`: any free port) with its data in
/// `data`, seeding `entities` into `world` if the store is empty; returns it with the
/// addresses it bound (the control API as a URL).
fn spawn_replication(
    world: &str,
    entities: usize,
    data: &std::path::Path,
    http: &str,
    link: &str,
) -> anyhow::Result<(LocalProcess, String, String)> {
    use std::io::BufRead;
    let mut child = sidereal()
        .args(["replication", "--http", http, "--link", link])
        .args(["--seed-entities", &entities.to_string()])
        .args(["--world", world])
        .arg("--data")
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting replication")?;
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let replication = LocalProcess(child);
    let ready = lines.next().context("replication's ready line")??;
    // Keep draining stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let addr = |key: &str| {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
            .with_context(|| format!("{key} in {ready:?}"))
    };
    Ok((
        replication,
        format!("http://{}", addr("http=")?),
        addr("link=")?,
    ))
}

/// `sidereal operator` watching `ns`, with its leader Lease in `ns` too (parallel tests never
/// share a leader) and a 3 s lease, so a replacement takes over quickly.
pub fn operator_command(ns: &str) -> std::process::Command {
    let mut c = sidereal();
    c.args(["operator", "--metrics", "127.0.0.1:0", "--namespace", ns])
        .args(["--lease-namespace", ns, "--lease-duration", "3"]);
    c
}

/// Starts `command` (an [`operator_command`]) and returns it with its metrics base URL, read
/// from the first line it prints (`operator metrics=http://...`).
pub fn start_operator(
    mut command: std::process::Command,
) -> anyhow::Result<(LocalProcess, String)> {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the operator")?;
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let operator = LocalProcess(child);
    let said = lines.next().context("the operator's first line")??;
    std::thread::spawn(move || for _ in lines {});
    let url = said
        .split_once("metrics=")
        .with_context(|| format!("no metrics address in {said:?}"))?
        .1
        .to_owned();
    Ok((operator, url))
}

/// A replication and its shards as local processes on loopback, with their own data
/// directory (removed on drop): what the operator talks to in the e2e tests and benchmarks.
pub struct LocalFleet {
    replication: LocalProcess,
    world: String,
    entities: usize,
    shards: Vec<LocalProcess>,
    /// The control API, e.g. `http://127.0.0.1:41234`.
    pub http: String,
    /// The shard-link address shards connect to.
    pub link: String,
    data: PathBuf,
}

impl LocalFleet {
    /// Replication seeding `entities` in its flag world `s2-x0-y0`, and `shards` shards that
    /// fire every `fire_every_ticks` ticks (0: never, so entity counts stay exact).
    pub fn start(entities: usize, shards: usize, fire_every_ticks: u32) -> anyhow::Result<Self> {
        Self::start_in("s2-x0-y0", entities, shards, fire_every_ticks)
    }

    /// [`LocalFleet::start`] with `entities` seeded in `world` (a comma-separated root list).
    pub fn start_in(
        world: &str,
        entities: usize,
        shards: usize,
        fire_every_ticks: u32,
    ) -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let data = std::env::temp_dir().join(format!(
            "sidereal-e2e-fleet-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let (replication, http, link) =
            spawn_replication(world, entities, &data, "127.0.0.1:0", "127.0.0.1:0")?;
        let shards = (0..shards)
            .map(|i| {
                Ok(LocalProcess(
                    sidereal()
                        .args([
                            "shard",
                            "--id",
                            &format!("shard-{i}"),
                            "--replication",
                            link.as_str(),
                        ])
                        .args(["--metrics", "127.0.0.1:0"])
                        .args(["--fire-every-ticks", &fire_every_ticks.to_string()])
                        .spawn()
                        .context("starting a shard")?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            replication,
            world: world.to_owned(),
            entities,
            shards,
            http,
            link,
            data,
        })
    }

    /// Kills replication with SIGKILL and starts it again on the same addresses and data: it
    /// comes back with the world its store holds; its shards' links broke, so they exit and
    /// whoever runs them starts them again.
    pub fn restart_replication(&mut self) -> anyhow::Result<()> {
        let _ = self.replication.0.kill();
        let _ = self.replication.0.wait();
        let http = self.http.trim_start_matches("http://").to_owned();
        let (replication, _, _) =
            spawn_replication(&self.world, self.entities, &self.data, &http, &self.link)?;
        self.replication = replication;
        Ok(())
    }

    /// The Secret that tells the operator where this world's replication is (control API,
    /// token, and the shard-link address its shard pods get), as YAML.
    pub fn control_secret(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sidereal-control\nstringData:\n  url: {}\n  token: {FLEET_TOKEN}\n  link: \"{}\"\n",
            self.http, self.link
        )
    }

    /// The Secret holding the secret shard pods present to this fleet's replication, as YAML.
    pub fn shard_secret(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sidereal-shard\nstringData:\n  secret: {SHARD_SECRET}\n"
        )
    }

    /// A client of this fleet's control API.
    pub fn control(&self) -> sidereal_core::ControlClient {
        sidereal_core::ControlClient::new(self.http.clone(), Some(FLEET_TOKEN.to_owned()))
    }
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        self.shards.clear();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
