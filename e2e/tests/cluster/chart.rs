//! The Helm chart (`charts/sidereal`), as a platform team uses it, against the real API server:
//! `helm lint`, `helm template` with default and other values (every rendered object applied
//! with a server-side dry run), `helm install --wait` and `helm upgrade` (kwok makes the pods
//! Ready; generated secrets survive the upgrade), values the schema rejects, and the
//! environment the chart sets being exactly what the binary reads.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::Value;
use sidereal_e2e::{
    LocalProcess, in_namespace, kubectl, kubectl_stdin, repo_root, sidereal, sidereal_bin,
    wait_until,
};

fn chart() -> String {
    repo_root().join("charts/sidereal").display().to_string()
}

/// helm, as `make test` built it (SIDEREAL_HELM), else from PATH.
fn helm(args: &[&str]) -> (bool, String, String) {
    let bin = std::env::var_os("SIDEREAL_HELM").unwrap_or_else(|| "helm".into());
    let out = Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e} (make test builds helm)", bin.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn helm_ok(args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = helm(args);
    ensure!(ok, "helm {}: {err}{out}", args.join(" "));
    Ok(out)
}

/// Values unlike the defaults: a trial Postgres, a cluster-wide operator, two roots, public
/// addresses, given secrets, no dashboards, a replication PDB, gateways.
const OTHER_VALUES: &str = r#"
image: {repository: registry.example/sidereal, tag: "9.9.9", pullPolicy: Always}
world:
  roots:
    - {scale: 3, gridX: -1, gridY: 0}
    - {scale: 3, gridX: 0, gridY: 0}
operator: {replicas: 3, clusterWide: true, leaseDurationSeconds: 30}
replication:
  replicas: 2
  tickHz: 20
  interestRadius: 900
  publicGameAddresses: ["203.0.113.7:7702"]
  publicWebSocketAddresses: ["203.0.113.7:7703"]
  podDisruptionBudget: {enabled: true}
gameService: {type: NodePort}
secrets:
  netcodeKey: 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
  controlToken: given-control-token
postgres: {enabled: true}
shardPool: {name: big, shards: {min: 2, max: 20, warmSpares: 2}}
dashboards: {enabled: false}
gateways: {enabled: true, autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 6}}
"#;

/// `helm install sidereal` into `ns` as these tests install it, with `more` flags: the CRDs
/// left alone (`--skip-crds`: the suite installed them with kubectl), a trial Postgres, and a NodePort game
/// Service (`--wait` would wait for a LoadBalancer's address, which no local cluster assigns).
fn helm_install(ns: &str, more: &[&str]) -> anyhow::Result<String> {
    let chart = chart();
    let mut args = vec![
        "install",
        "sidereal",
        &chart,
        "-n",
        ns,
        "--skip-crds",
        "--set",
        "postgres.enabled=true",
        "--set",
        "gameService.type=NodePort",
        "--wait",
        "--timeout",
        "3m",
    ];
    args.extend_from_slice(more);
    helm_ok(&args)
}

fn values_file(text: &str) -> tempfile_path::TempFile {
    tempfile_path::TempFile::with(text)
}

/// A file removed when dropped (no extra crate for one temp file).
mod tempfile_path {
    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn with(text: &str) -> Self {
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "sidereal-values-{}-{}.yaml",
                std::process::id(),
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::write(&path, text).expect("writing a values file");
            Self(path)
        }
        pub fn path(&self) -> &str {
            self.0.to_str().expect("a UTF-8 temp path")
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The rendered objects, as JSON values.
fn objects(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|o| o["kind"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_chart_lints_renders_and_every_object_passes_a_server_side_dry_run()
-> anyhow::Result<()> {
    let other = values_file(OTHER_VALUES);
    helm_ok(&["lint", "--strict", &chart()])?;
    helm_ok(&["lint", "--strict", &chart(), "-f", other.path()])?;
    in_namespace("chart-render", move |_client, ns| async move {
        for (what, extra) in [
            ("default values", vec![]),
            ("other values", vec!["-f", other.path()]),
        ] {
            let chart = chart();
            let mut args = vec![
                "template",
                "sidereal",
                chart.as_str(),
                "--include-crds",
                "--namespace",
                &ns,
            ];
            args.extend(extra.iter().copied());
            let rendered = helm_ok(&args)?;
            let objs = objects(&rendered);
            let want: &[&str] = &[
                "CustomResourceDefinition",
                "Deployment",
                "Service",
                "Secret",
                "ShardPool",
                "Sector",
                "NetworkPolicy",
                "PodDisruptionBudget",
                "ServiceAccount",
            ];
            for kind in want {
                ensure!(kinds(&objs).contains(*kind), "{what}: no {kind} rendered");
            }
            // Every object, as text, through the real API server's admission (CEL included).
            let (ok, said) = kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--dry-run=server",
                    "-n",
                    &ns,
                ],
                &rendered,
            );
            ensure!(ok, "{what}: the API server refused the chart: {said}");
            every_object_dry_run(&said, objs.len())?;
            println!(
                "{what}: {} objects accepted ({:?})",
                objs.len(),
                kinds(&objs)
            );
        }
        Ok(())
    })
    .await?;
    // The optional pieces render when asked for.
    let with_monitors = helm_ok(&[
        "template",
        "sidereal",
        &chart(),
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
    ])?;
    let monitors = objects(&with_monitors);
    let k = kinds(&monitors);
    ensure!(
        k.contains("ServiceMonitor") && k.contains("PodMonitor") && k.contains("PrometheusRule"),
        "{k:?}"
    );
    // The PrometheusRule carries the rule file the process tests load into a real Prometheus.
    let rule = monitors
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .context("the PrometheusRule")?;
    let file: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(format!(
        "{}/alerts/sidereal-alerts.yaml",
        chart()
    ))?)?;
    ensure!(rule["spec"] == file, "{}", rule["spec"]);
    // A TLS Secret: login over HTTPS and wss://, from the mounted files; without one, the
    // login listener is explicitly in clear.
    let with_tls = objects(&helm_ok(&[
        "template",
        "sidereal",
        &chart(),
        "--set",
        "replication.tls.secretName=game-tls",
    ])?);
    let replication_env = |objs: &[serde_json::Value]| -> anyhow::Result<(Vec<String>, String)> {
        let d = objs
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "sidereal-replication")
            .context("replication's Deployment")?;
        let pod = &d["spec"]["template"]["spec"];
        let env = pod["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        Ok((env, pod["volumes"].to_string()))
    };
    let (env, volumes) = replication_env(&with_tls)?;
    ensure!(
        env.contains(&"SIDEREAL_TLS_CERT".to_owned())
            && env.contains(&"SIDEREAL_TLS_KEY".to_owned())
            && !env.contains(&"SIDEREAL_INSECURE_PUBLIC_HTTP".to_owned())
            && volumes.contains("game-tls"),
        "{env:?} {volumes}"
    );
    let defaults = objects(&helm_ok(&["template", "sidereal", &chart()])?);
    let (env, _) = replication_env(&defaults)?;
    ensure!(
        env.contains(&"SIDEREAL_INSECURE_PUBLIC_HTTP".to_owned()),
        "{env:?}"
    );
    // Players' own addresses reach replication: its per-address limits need them.
    let game = defaults
        .iter()
        .find(|o| o["kind"] == "Service" && o["spec"]["type"] == "LoadBalancer")
        .context("the game Service")?;
    ensure!(
        game["spec"]["externalTrafficPolicy"] == "Local",
        "{}",
        game["spec"]
    );
    // The control and link ports are not open to everyone: each rule naming them has peers,
    // and the link port's are the shard pods alone.
    let policy = defaults
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == "sidereal-replication")
        .context("replication's NetworkPolicy")?;
    for rule in policy["spec"]["ingress"]
        .as_array()
        .context("ingress rules")?
    {
        let ports: Vec<i64> = rule["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        let peers = rule["from"].as_array().map_or(0, Vec::len);
        if ports.contains(&7700) || ports.contains(&7701) {
            ensure!(peers > 0, "port {ports:?} open to everyone: {rule}");
        } else {
            ensure!(
                ports.iter().all(|p| [7702, 7703, 7704].contains(p)),
                "only the game and login ports are public: {rule}"
            );
        }
        if ports.contains(&7701) {
            ensure!(
                rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    == "sidereal-shard"
                    && peers == 1,
                "{rule}"
            );
        }
    }
    // With gateways: replication serves no game port and takes gateway links from the gateway
    // pods alone; the gateways get the game Service, an autoscaler and a disruption budget,
    // and may subscribe to the shards' streams.
    ensure!(
        !kinds(&defaults).contains("HorizontalPodAutoscaler"),
        "no gateways by default"
    );
    let other = values_file(OTHER_VALUES);
    let with_gateways = objects(&helm_ok(&[
        "template",
        "sidereal",
        &chart(),
        "-f",
        other.path(),
    ])?);
    let named = |kind: &str, name: &str| {
        with_gateways
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .with_context(|| format!("{kind} {name}"))
    };
    let replication =
        &named("Deployment", "sidereal-replication")?["spec"]["template"]["spec"]["containers"][0];
    ensure!(
        replication["args"].to_string().contains("--no-game")
            && replication["env"]
                .to_string()
                .contains("SIDEREAL_GATEWAY_LINK"),
        "{replication}"
    );
    let gateway = &named("Deployment", "sidereal-gateway")?["spec"];
    ensure!(
        gateway.get("replicas").is_none(),
        "the autoscaler owns the replicas: {gateway}"
    );
    ensure!(
        gateway["template"]["spec"]["containers"][0]["env"]
            .to_string()
            .contains("203.0.113.7:7702"),
        "tokens name the public address: {gateway}"
    );
    let hpa = named("HorizontalPodAutoscaler", "sidereal-gateway")?;
    ensure!(hpa["spec"]["maxReplicas"] == 6, "{hpa}");
    named("PodDisruptionBudget", "sidereal-gateway")?;
    let game = named("Service", "sidereal-gateway-game")?;
    ensure!(game["spec"]["ports"].to_string().contains("UDP"), "{game}");
    // Players may log in at any gateway: the game Service carries login too.
    ensure!(
        game["spec"]["ports"].to_string().contains("\"login\"")
            && gateway["template"]["spec"]["containers"][0]["env"]
                .to_string()
                .contains("SIDEREAL_GATEWAY_LOGIN"),
        "gateways take logins: {game}"
    );
    let login = named("Service", "sidereal-replication-game")?;
    ensure!(
        !login["spec"]["ports"].to_string().contains("UDP"),
        "replication's Service keeps only login: {login}"
    );
    let policy = named("NetworkPolicy", "sidereal-replication")?;
    let link_rule = policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["ports"][0]["port"] == 7705)
        .context("a rule for the gateway link")?;
    ensure!(
        link_rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            == "sidereal-gateway",
        "{link_rule}"
    );
    let shards = named("NetworkPolicy", "sidereal-shards")?;
    ensure!(
        shards.to_string().contains("sidereal-gateway"),
        "gateways reach the sector streams: {shards}"
    );
    // wss:// on the gateways too, with replication's certificate.
    let gateways_tls = objects(&helm_ok(&[
        "template",
        "sidereal",
        &chart(),
        "--set",
        "gateways.enabled=true",
        "--set",
        "replication.tls.secretName=game-tls",
    ])?);
    let pod = &gateways_tls
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "sidereal-gateway")
        .context("the gateway Deployment")?["spec"]["template"]["spec"];
    ensure!(
        pod["containers"][0]["env"]
            .to_string()
            .contains("SIDEREAL_TLS_CERT")
            && pod["containers"][0]["volumeMounts"]
                .to_string()
                .contains("/etc/sidereal/tls")
            && pod["volumes"].to_string().contains("game-tls"),
        "{pod}"
    );
    let dashboards: Vec<_> = defaults
        .iter()
        .filter(|o| o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    ensure!(dashboards.len() == 2, "two dashboards: {dashboards:?}");
    for d in dashboards {
        for (name, json) in d["data"].as_object().context("dashboard data")? {
            serde_json::from_str::<Value>(json.as_str().unwrap_or_default())
                .with_context(|| format!("{name} is not JSON in its ConfigMap"))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn helm_install_waits_for_ready_pods_and_an_upgrade_keeps_the_generated_secrets()
-> anyhow::Result<()> {
    in_namespace("chart-install", |client, ns| async move {
        let chart = chart();
        let notes = helm_install(&ns, &[])?;
        ensure!(
            notes.contains("kubectl -n") && notes.contains("publicGameAddresses is empty"),
            "NOTES.txt says what to do next: {notes}"
        );
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let read = |name: &'static str, key: &'static str| {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get(name).await?;
                let bytes = s.data.and_then(|d| d.get(key).map(|b| b.0.clone()));
                anyhow::Ok(String::from_utf8(bytes.context("no such key")?)?)
            }
        };
        let netcode = "sidereal-netcode";
        let first = (
            read("sidereal-control", "token").await?,
            read("sidereal-shard", "secret").await?,
            read(netcode, "key").await?,
            read("sidereal-postgres", "password").await?,
        );
        ensure!(first.0.len() >= 32 && first.1.len() >= 32, "{first:?}");
        ensure!(
            first.2.len() == 64 && first.2.chars().all(|c| c.is_ascii_hexdigit()),
            "a netcode key is 64 hex characters: {}",
            first.2
        );
        let url = read("sidereal-control", "url").await?;
        ensure!(
            url == format!("http://sidereal-replication.{ns}.svc:7700"),
            "{url}"
        );
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        for d in ["sidereal-operator", "sidereal-replication"] {
            let status = deployments.get(d).await?.status.unwrap_or_default();
            ensure!(
                status.ready_replicas.unwrap_or(0) >= 1,
                "{d} ready: {status:?}"
            );
        }
        // An upgrade that changes a setting: the release rolls, the secrets stay.
        helm_ok(&[
            "upgrade",
            "sidereal",
            &chart,
            "-n",
            &ns,
            "--reuse-values",
            "--set",
            "replication.tickHz=20",
            "--wait",
            "--timeout",
            "3m",
        ])?;
        let again = (
            read("sidereal-control", "token").await?,
            read("sidereal-shard", "secret").await?,
            read(netcode, "key").await?,
            read("sidereal-postgres", "password").await?,
        );
        ensure!(first == again, "secrets changed on upgrade");
        let args = deployments
            .get("sidereal-replication")
            .await?
            .spec
            .and_then(|s| s.template.spec)
            .map(|s| s.containers[0].args.clone().unwrap_or_default())
            .unwrap_or_default();
        ensure!(args.contains(&"--tick-hz=20".to_owned()), "{args:?}");
        wait_until(
            "the upgraded replication ready",
            Duration::from_secs(60),
            || {
                let deployments = deployments.clone();
                async move {
                    let s = deployments.get("sidereal-replication").await?.status;
                    Ok(s.is_some_and(|s| {
                        s.updated_replicas == Some(1) && s.ready_replicas == Some(1)
                    }))
                }
            },
        )
        .await?;
        let (ok, history, err) = helm(&["history", "sidereal", "-n", &ns]);
        ensure!(ok && history.contains("deployed"), "{history}{err}");
        helm_ok(&["uninstall", "sidereal", "-n", &ns, "--wait"])?;
        Ok(())
    })
    .await
}

#[test]
fn values_the_schema_rejects_fail_with_a_message_naming_them() {
    for (set, names) in [
        ("operator.replicas=0", "/operator/replicas"),
        ("secrets.netcodeKey=not-hex", "/secrets/netcodeKey"),
        ("gameService.type=Everywhere", "/gameService/type"),
        ("replication.tickHz=1000", "/replication/tickHz"),
        ("replication.replicas=0", "/replication/replicas"),
        (
            "replication.publicGameAddresses={game.example.com:7702}",
            "/replication/publicGameAddresses/0",
        ),
        ("shardPool.name=Not_A_Name", "/shardPool/name"),
        ("replicaCount=3", "replicaCount"),
    ] {
        let (ok, out, err) = helm(&["template", "sidereal", &chart(), "--set", set]);
        assert!(!ok, "--set {set} was accepted:\n{out}");
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(names),
            "--set {set}: the error should name {names}: {err}"
        );
    }
    // A standby needs a store both replicas reach: SQLite is a file in one pod.
    let (ok, out, err) = helm(&[
        "template",
        "sidereal",
        &chart(),
        "--set",
        "replication.replicas=2",
    ]);
    assert!(!ok, "two replicas on SQLite were accepted:\n{out}");
    assert!(
        err.contains("replication.replicas > 1 needs a database"),
        "{err}"
    );
}

/// Every environment variable the chart gives a `sidereal` container is one that subcommand
/// reads (`[env: NAME=]` in its --help).
#[test]
fn the_chart_sets_only_environment_the_binary_reads() -> anyhow::Result<()> {
    let other = values_file(OTHER_VALUES);
    let mut checked = 0;
    for extra in [vec![], vec!["-f", other.path()]] {
        let chart = chart();
        let mut args = vec!["template", "sidereal", &chart[..]];
        args.extend(extra.iter().copied());
        for obj in objects(&helm_ok(&args)?) {
            let spec = match obj["kind"].as_str() {
                Some("Deployment" | "StatefulSet") => &obj["spec"]["template"]["spec"],
                Some("ShardPool") => &obj["spec"]["template"]["spec"],
                _ => continue,
            };
            for c in spec["containers"].as_array().into_iter().flatten() {
                if !c["image"].as_str().unwrap_or_default().contains("sidereal") {
                    continue; // the trial Postgres
                }
                let cmd = c["args"][0].as_str().context("a subcommand")?;
                let help = Command::new(sidereal_bin())
                    .args([cmd, "--help"])
                    .output()?;
                let help = String::from_utf8_lossy(&help.stdout).into_owned();
                for env in c["env"].as_array().into_iter().flatten() {
                    let name = env["name"].as_str().context("env name")?;
                    // `[env: NAME=default]`, or `[env: NAME]` for hidden values.
                    if !help.contains(&format!("[env: {name}="))
                        && !help.contains(&format!("[env: {name}]"))
                    {
                        bail!("the chart sets {name} for `sidereal {cmd}`, which does not read it");
                    }
                    checked += 1;
                }
                // And flags it passes exist.
                for arg in c["args"].as_array().into_iter().flatten().skip(1) {
                    let flag = arg
                        .as_str()
                        .unwrap_or_default()
                        .split('=')
                        .next()
                        .unwrap_or_default();
                    // `--flag <VALUE>`, or a switch alone on its line (`--no-game`).
                    ensure!(
                        help.contains(&format!("{flag} "))
                            || help.contains(&format!("{flag} <"))
                            || help.contains(&format!("{flag}\n")),
                        "the chart passes {flag} to `sidereal {cmd}`, which has no such flag"
                    );
                }
            }
        }
    }
    ensure!(checked >= 15, "only {checked} variables checked");
    Ok(())
}

/// `manifests/base` is the chart rendered with its values file (a drift test: `make manifests`),
/// and `kubectl apply -k` of it is accepted by the API server.
#[test]
fn the_kustomize_base_is_the_chart_rendered_and_the_api_server_accepts_it() -> anyhow::Result<()> {
    let base = repo_root().join("manifests/base");
    let values = base.join("values.yaml");
    // The CRDs included: the chart keeps them in crds/, which `helm template` leaves out.
    let rendered = helm_ok(&[
        "template",
        "sidereal",
        &chart(),
        "--include-crds",
        "--namespace",
        "sidereal",
        "-f",
        values.to_str().context("a UTF-8 path")?,
    ])?;
    let committed = std::fs::read_to_string(base.join("sidereal.yaml"))?;
    let body = committed.split_once('\n').map_or("", |(_, rest)| rest);
    ensure!(
        body == rendered,
        "manifests/base/sidereal.yaml drifted from the chart; run `make manifests` and commit it"
    );
    let objs = objects(&rendered);
    ensure!(
        !kinds(&objs).contains("Secret"),
        "the base carries no secrets"
    );
    // The base's namespace, as its README creates it.
    let _ = Command::new("kubectl")
        .args(["create", "namespace", "sidereal"])
        .output();
    let out = Command::new("kubectl")
        .args(["apply", "-k"])
        .arg(&base)
        .args(["--server-side", "--force-conflicts", "--dry-run=server"])
        .output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "kubectl apply -k manifests/base: {said}"
    );
    every_object_dry_run(&said, objs.len())
}

/// kubectl said `(server dry run)` once for each of the `expected` objects.
fn every_object_dry_run(said: &str, expected: usize) -> anyhow::Result<()> {
    let applied = said
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .count();
    ensure!(
        applied == expected,
        "{applied} of {expected} objects applied: {said}"
    );
    Ok(())
}

/// Issue 21 on Kubernetes: `replication.replicas=2` renders a leader and a standby on one
/// store; every replica runs `--standby --label-pod`, and the replication Services select
/// `sidereal.dev/role=leader`. The chart's pods here are kwok's (no process runs in them), so
/// two real `sidereal replication` processes play their parts, each labelling "its" pod through
/// the real API server with the token of the chart's own ServiceAccount (so the chart's RBAC is
/// what allows it). The Service's endpoints follow the leader: first the pod whose process
/// leads; after that process's kill -9 (and restart as a standby, as the kubelet would), the
/// other's.
#[tokio::test]
async fn two_replication_replicas_route_to_the_leaders_pod_and_a_takeover_moves_the_service()
-> anyhow::Result<()> {
    in_namespace("chart-ha", |client, ns| async move {
        helm_install(&ns, &["--set", "replication.replicas=2"])?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let d = deployments.get("sidereal-replication").await?;
        let spec = d.spec.clone().context("a spec")?;
        ensure!(spec.replicas == Some(2), "{:?}", spec.replicas);
        let strategy = spec.strategy.and_then(|s| s.type_).unwrap_or_default();
        ensure!(strategy == "RollingUpdate", "{strategy}");
        let args = spec.template.spec.context("a pod spec")?.containers[0]
            .args
            .clone()
            .unwrap_or_default();
        ensure!(
            args.contains(&"--standby".to_owned()) && args.contains(&"--label-pod".to_owned()),
            "{args:?}"
        );
        let selector = kubectl(&[
            "get",
            "service",
            "sidereal-replication",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.selector.sidereal\\.dev/role}",
        ])?;
        ensure!(
            selector == "leader",
            "the Service selects the leader: {selector:?}"
        );
        let pdb = kubectl(&[
            "get",
            "pdb",
            "sidereal-replication",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.minAvailable}",
        ])?;
        ensure!(pdb == "1", "one replica at a time may go: {pdb:?}");
        let names = kubectl(&[
            "get",
            "pods",
            "-n",
            &ns,
            "-l",
            "app.kubernetes.io/name=sidereal-replication",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        let pods: Vec<String> = names.split_whitespace().map(str::to_owned).collect();
        ensure!(pods.len() == 2, "{pods:?}");

        // What a pod's service account would have: a token, the API server and its CA.
        let dir = std::env::temp_dir().join(format!("sidereal-ha-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let token = kubectl(&["create", "token", "sidereal-replication", "-n", &ns])?;
        std::fs::write(dir.join("token"), token.trim())?;
        let server = kubectl(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])?;
        // The CA every pod gets mounted, from the ConfigMap the controller-manager publishes.
        let ca = kubectl(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])?;
        ensure!(ca.contains("BEGIN CERTIFICATE"), "the cluster's CA: {ca:?}");
        std::fs::write(dir.join("ca.crt"), ca)?;
        let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let (http, link) = (free()?.to_string(), free()?.to_string());
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let replication = |pod: &str| -> anyhow::Result<LocalProcess> {
            Ok(LocalProcess(
                sidereal()
                    .args([
                        "replication",
                        "--standby",
                        "--label-pod",
                        "--leader-lease",
                        "1.5",
                    ])
                    .args(["--pod-name", pod, "--pod-namespace", &ns])
                    .args(["--http", &http, "--link", &link, "--seed-entities", "10"])
                    .arg("--data")
                    .arg(&data)
                    .env("SIDEREAL_KUBE_API", server.trim())
                    .env("SIDEREAL_KUBE_TOKEN_FILE", dir.join("token"))
                    .env("SIDEREAL_KUBE_CA_FILE", dir.join("ca.crt"))
                    .stdout(std::process::Stdio::null())
                    .spawn()?,
            ))
        };
        let role = |pod: &str| {
            kubectl(&[
                "get",
                "pod",
                pod,
                "-n",
                &ns,
                "-o",
                "jsonpath={.metadata.labels.sidereal\\.dev/role}",
            ])
            .unwrap_or_default()
        };
        let endpoints = || {
            kubectl(&[
                "get",
                "endpointslices",
                "-n",
                &ns,
                "-l",
                "kubernetes.io/service-name=sidereal-replication",
                "-o",
                "jsonpath={.items[*].endpoints[*].targetRef.name}",
            ])
            .unwrap_or_default()
        };
        let mut first = replication(&pods[0])?;
        wait_until(
            "the first pod's process leads",
            Duration::from_secs(20),
            || async { Ok(role(&pods[0]) == "leader") },
        )
        .await?;
        let _second = replication(&pods[1])?;
        wait_until("the second stands by", Duration::from_secs(20), || async {
            Ok(role(&pods[1]) == "standby")
        })
        .await?;
        wait_until(
            "the Service routes to the leader alone",
            Duration::from_secs(30),
            || async { Ok(endpoints() == pods[0]) },
        )
        .await?;

        first.0.kill()?;
        let killed = std::time::Instant::now();
        let _ = first.0.wait();
        // The kubelet restarts the container: it comes back as a standby, and either standby
        // may win the vacancy (compare-and-set: exactly one does).
        let _first_again = replication(&pods[0])?;
        let leads = || {
            Command::new("curl")
                .args(["-sf", &format!("http://{http}/healthz")])
                .status()
                .is_ok_and(|s| s.success())
        };
        let mut leader = String::new();
        wait_until(
            "one pod leads again, the other stands by, and the Service follows",
            Duration::from_secs(30),
            || {
                let now = match (role(&pods[0]).as_str(), role(&pods[1]).as_str()) {
                    ("leader", "standby") => pods[0].clone(),
                    ("standby", "leader") => pods[1].clone(),
                    _ => String::new(),
                };
                let ok = !now.is_empty() && leads() && endpoints() == now;
                leader = now;
                async move { Ok(ok) }
            },
        )
        .await?;
        println!(
            "kill -9 of the leader's process: {} leads, and the Service routes to it {:?} later",
            if leader == pods[1] {
                "the waiting standby"
            } else {
                "the restarted one"
            },
            killed.elapsed()
        );
        helm_ok(&["uninstall", "sidereal", "-n", &ns, "--wait"])?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .await
}
