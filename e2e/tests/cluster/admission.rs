//! The API server itself enforces the CRDs' schema and CEL rules: valid objects are accepted,
//! nonsense is rejected with a readable message, status is only writable through its
//! subresource, and children go when their parent goes.

use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use sidereal_core::SectorId;
use sidereal_crds::{Sector, SectorLoad, SectorPhase, SectorStatus, ShardPool};
use sidereal_e2e::{in_namespace, kubectl, rejection, wait_until};

fn dynamic<K: Resource<DynamicType = ()>>(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()))
}

fn sector_json(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sidereal.dev/v1alpha1", "kind": "Sector",
        "metadata": { "name": name }, "spec": spec,
    }))
    .unwrap()
}

fn pool_json(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "sidereal.dev/v1alpha1", "kind": "ShardPool",
        "metadata": { "name": name }, "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn valid_pool_and_root_sector_are_accepted_with_defaults_and_columns() -> anyhow::Result<()> {
    in_namespace("valid", |client, ns| async move {
        let pools = dynamic::<ShardPool>(&client, &ns);
        pools
            .create(&PostParams::default(), &pool_json("default", json!({})))
            .await?;
        // Defaults come from the schema, applied by the API server.
        let pool: ShardPool = Api::namespaced(client.clone(), &ns).get("default").await?;
        assert_eq!(pool.spec.split.entities, 5000);
        assert_eq!(pool.spec.shards.max, 8);
        assert!(pool.spec.merge.entities < pool.spec.split.entities);

        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let id = SectorId::new(2, -1, 3)?;
        let created = sectors
            .create(&PostParams::default(), &Sector::for_id("default", id))
            .await?;
        assert_eq!(created.name_any(), "s2-xm1-y3");
        assert_eq!(created.sector_id()?, id);

        let mut status = Sector::for_id("default", id);
        status.status = Some(SectorStatus {
            phase: Some(SectorPhase::Active),
            shard: Some("shard-0".into()),
            load: Some(SectorLoad {
                entities: 1234,
                players: 7,
                tick_p99_ms: 4.5,
            }),
            ..Default::default()
        });
        sectors
            .patch_status(
                "s2-xm1-y3",
                &PatchParams::apply("sidereal-e2e").force(),
                &Patch::Apply(&status),
            )
            .await?;

        let table = kubectl(&["get", "sectors", "-n", &ns])?;
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "NAME", "SCALE", "GRID", "X", "GRID", "Y", "PHASE", "SHARD", "ENTITIES", "PLAYERS",
                "TICK", "P99", "AGE"
            ],
            "{table}"
        );
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            &row[..9],
            [
                "s2-xm1-y3",
                "2",
                "-1",
                "3",
                "Active",
                "shard-0",
                "1234",
                "7",
                "4.5"
            ],
            "{table}"
        );
        // Short name and category work too.
        assert!(kubectl(&["get", "sec", "-n", &ns, "-o", "name"])?.contains("s2-xm1-y3"));
        assert!(
            kubectl(&["get", "sidereal", "-n", &ns, "-o", "name"])?
                .contains("shardpool.sidereal.dev/default")
        );
        Ok(())
    })
    .await
}

/// Each invalid object is rejected at admission, and the message says why.
#[tokio::test]
async fn invalid_objects_are_rejected_with_readable_messages() -> anyhow::Result<()> {
    in_namespace("invalid", |client, ns| async move {
        let sectors = dynamic::<Sector>(&client, &ns);
        let pools = dynamic::<ShardPool>(&client, &ns);
        let good = json!({ "pool": "default", "scale": 1, "gridX": 0, "gridY": 0 });
        let with = |patch: Value| {
            let mut v = good.clone();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            v
        };
        let sector_cases: Vec<(&str, &str, Value, &str)> = vec![
            ("scale above 40", "s41-x0-y0", with(json!({"scale": 41})), "spec.scale"),
            ("negative scale", "s0-x0-y0", with(json!({"scale": -1})), "greater than or equal to 0"),
            ("name does not match coordinates", "s1-x5-y0", good.clone(), "canonical name"),
            ("name not canonical (leading zero)", "s1-x00-y0", good.clone(), "canonical name"),
            ("coordinates outside the world at this scale", "s40-x1-y0", json!({"pool": "default", "scale": 40, "gridX": 1, "gridY": 0}), "inside the world"),
            ("gridX is a string", "s1-x0-y0", with(json!({"gridX": "zero"})), "spec.gridX"),
            ("scale is a float", "s1-x0-y0", with(json!({"scale": 1.5})), "spec.scale"),
            ("pool reference is not a DNS label", "s1-x0-y0", with(json!({"pool": "Bad_Pool"})), "DNS-1123 label"),
            ("missing pool", "s1-x0-y0", json!({"scale": 1, "gridX": 0, "gridY": 0}), "spec.pool: Required value"),
        ];
        for (what, name, spec, expected) in sector_cases {
            let msg = rejection(sectors.create(&PostParams::default(), &sector_json(name, spec)).await)
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            assert!(msg.contains(expected), "{what}: expected {expected:?} in {msg:?}");
        }

        let pool_cases: Vec<(&str, Value, &str)> = vec![
            ("min above max", json!({"shards": {"min": 5, "max": 2, "warmSpares": 0}}), "shards.min must not exceed shards.max"),
            ("merge entities not below split", json!({"merge": {"entities": 5000, "players": 1, "tickP99Ms": 1.0, "sustainSeconds": 10}}), "merge.entities must be below split.entities"),
            ("merge tick not below split", json!({"merge": {"entities": 1, "players": 1, "tickP99Ms": 90.0, "sustainSeconds": 10}}), "merge.tickP99Ms must be below split.tickP99Ms"),
            ("zero sustain window", json!({"split": {"entities": 5000, "players": 200, "tickP99Ms": 25.0, "sustainSeconds": 0}}), "sustainSeconds must be positive"),
            ("negative cooldown", json!({"cooldownSeconds": -5}), "cooldownSeconds must be positive"),
            ("zero drain timeout", json!({"drainTimeoutSeconds": 0}), "drainTimeoutSeconds must be positive"),
            ("wrong type for max", json!({"shards": {"min": 1, "max": "many", "warmSpares": 0}}), "spec.shards.max"),
            ("more warm spares than max", json!({"shards": {"min": 1, "max": 2, "warmSpares": 3}}), "warmSpares must not exceed shards.max"),
        ];
        for (what, spec, expected) in pool_cases {
            let msg = rejection(pools.create(&PostParams::default(), &pool_json("p", spec)).await)
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            assert!(msg.contains(expected), "{what}: expected {expected:?} in {msg:?}");
        }
        // Nothing invalid was stored.
        assert!(sectors.list(&Default::default()).await?.items.is_empty());
        assert!(pools.list(&Default::default()).await?.items.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn coordinates_are_immutable() -> anyhow::Result<()> {
    in_namespace("immutable", |client, ns| async move {
        let sectors = dynamic::<Sector>(&client, &ns);
        sectors
            .create(
                &PostParams::default(),
                &sector_json(
                    "s1-x0-y0",
                    json!({"pool": "default", "scale": 1, "gridX": 0, "gridY": 0}),
                ),
            )
            .await?;
        for (field, value, expected) in [
            ("gridX", 1, "gridX is immutable"),
            ("gridY", -1, "gridY is immutable"),
            ("scale", 2, "scale is immutable"),
        ] {
            let patch = json!({ "spec": { field: value } });
            let msg = rejection(
                sectors
                    .patch("s1-x0-y0", &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )?;
            assert!(
                msg.contains(expected),
                "changing {field}: expected {expected:?} in {msg:?}"
            );
        }
        // The pool may change (a sector can be moved to another pool).
        sectors
            .patch(
                "s1-x0-y0",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"pool": "other"}})),
            )
            .await?;
        let s: Sector = Api::namespaced(client.clone(), &ns).get("s1-x0-y0").await?;
        assert_eq!(
            (
                s.spec.pool.as_str(),
                s.spec.scale,
                s.spec.grid_x,
                s.spec.grid_y
            ),
            ("other", 1, 0, 0)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn status_is_written_only_through_the_status_subresource() -> anyhow::Result<()> {
    in_namespace("status", |client, ns| async move {
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let id = SectorId::new(0, 4, -4)?;
        sectors.create(&PostParams::default(), &Sector::for_id("default", id)).await?;
        let name = id.name();

        // A status in a write to the main resource is dropped.
        let sneaky = json!({ "status": { "phase": "Active", "shard": "intruder" } });
        sectors.patch(&name, &PatchParams::default(), &Patch::Merge(&sneaky)).await?;
        assert_eq!(sectors.get(&name).await?.status, None);

        // Through the subresource it sticks, and a spec change there is ignored.
        let via_status = json!({ "status": { "phase": "Active", "shard": "shard-1" }, "spec": { "pool": "changed" } });
        sectors.patch_status(&name, &PatchParams::default(), &Patch::Merge(&via_status)).await?;
        let s = sectors.get(&name).await?;
        let status = s.status.expect("status written through the subresource");
        assert_eq!((status.phase, status.shard.as_deref()), (Some(SectorPhase::Active), Some("shard-1")));
        assert_eq!(s.spec.pool, "default");

        // Status values are validated too.
        let bad = json!({ "status": { "phase": "Exploded" } });
        let msg = rejection(sectors.patch_status(&name, &PatchParams::default(), &Patch::Merge(&bad)).await)?;
        assert!(msg.contains("status.phase"), "{msg}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deleting_a_parent_sector_cascades_to_its_children() -> anyhow::Result<()> {
    in_namespace("cascade", |client, ns| async move {
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let parent_id = SectorId::new(1, 0, -1)?;
        let parent = sectors
            .create(
                &PostParams::default(),
                &Sector::for_id("default", parent_id),
            )
            .await?;
        let owner = parent
            .controller_owner_ref(&())
            .expect("created objects have a uid");
        for child in parent_id.children().expect("scale 1 has children") {
            let mut s = Sector::for_id("default", child);
            s.metadata.owner_references = Some(vec![owner.clone()]);
            sectors.create(&PostParams::default(), &s).await?;
        }
        assert_eq!(sectors.list(&Default::default()).await?.items.len(), 5);

        sectors
            .delete(&parent_id.name(), &DeleteParams::background())
            .await?;
        // kube-controller-manager's garbage collector removes the children.
        wait_until(
            "children garbage-collected",
            Duration::from_secs(60),
            || {
                let sectors = sectors.clone();
                async move { Ok(sectors.list(&Default::default()).await?.items.is_empty()) }
            },
        )
        .await
    })
    .await
}
