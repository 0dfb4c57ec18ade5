//! What users type, as they type it: the committed CRD YAML and the hand-written samples,
//! applied as text by kubectl to the real API server (client-side and server-side).

use kube::api::Api;
use sidereal_crds::Sector;
use sidereal_e2e::{in_namespace, kubectl, kubectl_stdin, repo_root};

fn path(rel: &str) -> String {
    repo_root().join(rel).to_string_lossy().into_owned()
}

/// The README's install commands, on the real API server (not a client-side dry run): the
/// committed files applied client-side and server-side, and again (idempotent).
#[tokio::test]
async fn committed_crd_yaml_installs_client_side_and_server_side() -> anyhow::Result<()> {
    in_namespace("crdyaml", |_client, _ns| async move {
        let dir = path("crds/generated");
        let out = kubectl(&["apply", "-f", &dir])?;
        assert!(
            out.contains("sectors.sidereal.dev") && out.contains("shardpools.sidereal.dev"),
            "{out}"
        );
        let out = kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &dir])?;
        assert!(out.contains("serverside-applied"), "{out}");
        // The printer columns the API server stored are the ones the types declare.
        let cols = kubectl(&[
            "get",
            "crd",
            "sectors.sidereal.dev",
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
        ])?;
        assert_eq!(
            cols,
            "Scale Grid X Grid Y Phase Shard Entities Players Tick p99 Age"
        );
        Ok(())
    })
    .await
}

/// The samples users copy: accepted as written, readable back with the right coordinates,
/// listed by `kubectl get sectors`, and unchanged when applied again.
#[tokio::test]
async fn hand_written_samples_are_accepted_as_written() -> anyhow::Result<()> {
    in_namespace("samples", |client, ns| async move {
        let samples = path("manifests/samples");
        let out = kubectl(&["apply", "-n", &ns, "-f", &samples])?;
        assert_eq!(out.matches("created").count(), 5, "{out}");
        let again = kubectl(&["apply", "-n", &ns, "-f", &samples])?;
        assert_eq!(again.matches("unchanged").count(), 5, "{again}");
        let ssa = kubectl(&["apply", "--server-side", "-n", &ns, "-f", &samples])?;
        assert_eq!(ssa.matches("serverside-applied").count(), 5, "{ssa}");

        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        let mut ids: Vec<_> = sectors
            .list(&Default::default())
            .await?
            .items
            .iter()
            .map(|s| s.sector_id())
            .collect::<Result<_, _>>()?;
        ids.sort();
        let names: Vec<String> = ids.iter().map(|i| i.name()).collect();
        assert_eq!(
            names,
            ["s2-xm1-ym1", "s2-xm1-y0", "s2-x0-ym1", "s2-x0-y0"],
            "{ids:?}"
        );
        let table = kubectl(&["get", "sectors", "-n", &ns, "--no-headers"])?;
        let origin: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("s2-x0-y0 "))
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(&origin[..4], ["s2-x0-y0", "2", "0", "0"], "{table}");
        Ok(())
    })
    .await
}

/// A user who writes the pre-v1alpha1 shape (`x:` and `y:`) is refused by strict field
/// validation, which names the unknown field; nothing is stored. The same sector typed with
/// the new keys, nothing quoted, is accepted.
#[tokio::test]
async fn the_old_coordinate_keys_are_refused_and_the_new_ones_need_no_quotes() -> anyhow::Result<()>
{
    in_namespace("oldkeys", |client, ns| async move {
        let head = "apiVersion: sidereal.dev/v1alpha1\nkind: Sector\nmetadata:\n  name: s0-x0-ym1\nspec:\n  pool: default\n  scale: 0\n";
        let (ok, text) = kubectl_stdin(&["apply", "-n", &ns], &format!("{head}  x: 0\n  y: -1\n"));
        assert!(!ok, "{text}");
        assert!(text.contains(r#"unknown field "spec.x""#), "{text}");
        let sectors: Api<Sector> = Api::namespaced(client.clone(), &ns);
        assert!(sectors.list(&Default::default()).await?.items.is_empty());

        let (ok, text) =
            kubectl_stdin(&["apply", "-n", &ns], &format!("{head}  gridX: 0\n  gridY: -1\n"));
        assert!(ok, "{text}");
        let stored = sectors.get("s0-x0-ym1").await?;
        assert_eq!((stored.spec.grid_x, stored.spec.grid_y), (0, -1));
        Ok(())
    })
    .await
}
