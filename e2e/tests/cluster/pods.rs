//! Pods land on kwok's fake nodes and are reported Running: the operator relies on this.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;
use sidereal_e2e::{in_namespace, wait_until};

#[tokio::test]
async fn a_pod_is_scheduled_to_a_fake_node_and_runs() -> anyhow::Result<()> {
    in_namespace("pods", |client, ns| async move {
        let fake_nodes: Vec<String> = Api::<Node>::all(client.clone())
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|n| n.metadata.annotations.as_ref().is_some_and(|a| a.get("kwok.x-k8s.io/node").is_some_and(|v| v == "fake")))
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(!fake_nodes.is_empty(), "the cluster has no kwok nodes");

        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "shard-smoke", "labels": { "app.kubernetes.io/name": "sidereal-shard" } },
            "spec": {
                "containers": [{ "name": "shard", "image": "sidereal:dev", "args": ["shard"] }],
                "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule" }],
            }
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        wait_until("pod Running on a fake node", Duration::from_secs(60), || {
            let pods = pods.clone();
            async move {
                let p = pods.get("shard-smoke").await?;
                let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                Ok(phase.as_deref() == Some("Running"))
            }
        })
        .await?;
        let p = pods.get("shard-smoke").await?;
        let node = p.spec.and_then(|s| s.node_name).expect("a running pod has a node");
        assert!(fake_nodes.contains(&node), "{node} is not a kwok node");
        Ok(())
    })
    .await
}
