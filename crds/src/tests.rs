use std::path::PathBuf;

use kube::CustomResourceExt;
use serde_json::Value;

use super::*;

fn generated_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("generated")
}

/// The committed YAML must be exactly what the types generate, in `crds/generated/` and in the
/// Helm chart's copy (`charts/sidereal/crds/`). Regenerate both with `make crdgen`.
#[test]
fn committed_crds_match_the_rust_types() {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/sidereal/crds");
    let chart_files = std::fs::read_dir(&chart)
        .map(|d| d.count())
        .unwrap_or_default();
    assert_eq!(
        chart_files,
        crd_files().len(),
        "{} holds exactly the generated CRDs",
        chart.display()
    );
    for (name, yaml) in crd_files() {
        for path in [generated_dir().join(name), chart.join(name)] {
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{} is missing ({e}); run `make crdgen`", path.display())
            });
            assert!(
                committed == yaml,
                "{} drifted from the Rust types; run `make crdgen` and commit the result",
                path.display()
            );
        }
    }
}

fn rules_of(crd: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                    for r in rules {
                        out.push((
                            r["rule"].as_str().unwrap_or_default().to_owned(),
                            r["message"].as_str().unwrap_or_default().to_owned(),
                        ));
                    }
                }
                m.values().for_each(|c| walk(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(crd, &mut out);
    out
}

fn assert_rule(rules: &[(String, String)], rule_part: &str, message_part: &str) {
    assert!(
        rules
            .iter()
            .any(|(r, m)| r.contains(rule_part) && m.contains(message_part)),
        "no rule containing {rule_part:?} with message containing {message_part:?} in {rules:#?}"
    );
}

#[test]
fn sector_schema_has_every_rule() {
    let crd = serde_json::to_value(sector::crd()).unwrap();
    let rules = rules_of(&crd);
    for field in ["scale", "gridX", "gridY"] {
        assert_rule(&rules, "self == oldSelf", &format!("{field} is immutable"));
    }
    assert_rule(
        &rules,
        "int(self.metadata.name.split('-')[1].substring(1).replace('m', '-')) == self.spec.gridX",
        "canonical name",
    );
    assert_rule(&rules, "[1099511627776, 549755813888", "inside the world");
    assert_rule(&rules, "self.matches('^[a-z0-9]", "DNS-1123 label");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["scale"]["maximum"], 40.0);
    assert_eq!(spec["properties"]["scale"]["minimum"], 0.0);
    assert_eq!(spec["properties"]["pool"]["maxLength"], 63);
    // Bounds the cost the API server estimates for the name rule.
    let meta = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"];
    assert_eq!(meta["properties"]["name"]["maxLength"], 63);
}

#[test]
fn shardpool_schema_has_every_rule() {
    let crd = serde_json::to_value(ShardPool::crd()).unwrap();
    let rules = rules_of(&crd);
    assert_rule(
        &rules,
        "self.min <= self.max",
        "shards.min must not exceed shards.max",
    );
    assert_rule(&rules, "self.warmSpares <= self.max", "warmSpares");
    for f in ["entities", "players", "tickP99Ms"] {
        assert_rule(
            &rules,
            &format!("self.merge.{f} < self.split.{f}"),
            &format!("merge.{f} must be below split.{f}"),
        );
    }
    for msg in [
        "sustainSeconds must be positive",
        "cooldownSeconds must be positive",
        "drainTimeoutSeconds must be positive",
        "idleRetireSeconds must be positive",
        "maxConcurrentTransitions must be positive",
    ] {
        assert_rule(&rules, "self > 0", msg);
    }
}

#[test]
fn both_crds_have_status_subresources_short_names_and_columns() {
    let sector = serde_json::to_value(sector::crd()).unwrap();
    let pool = serde_json::to_value(ShardPool::crd()).unwrap();
    for crd in [&sector, &pool] {
        assert_eq!(crd["spec"]["group"], GROUP);
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert!(
            v["subresources"]["status"].is_object(),
            "status subresource missing"
        );
    }
    assert_eq!(sector["spec"]["names"]["shortNames"][0], "sec");
    assert_eq!(pool["spec"]["names"]["shortNames"][0], "sp");
    let columns: Vec<&str> = sector["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Scale", "Grid X", "Grid Y", "Phase", "Shard", "Entities", "Players", "Tick p99", "Age"
        ]
    );
}

#[test]
fn shardpool_defaults_are_consistent_with_its_own_rules() {
    let spec: ShardPoolSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    assert!(spec.shards.min <= spec.shards.max);
    assert!(spec.merge.entities < spec.split.entities);
    assert!(spec.merge.players < spec.split.players);
    assert!(spec.merge.tick_p99_ms < spec.split.tick_p99_ms);
    // The schema carries the same defaults so the API server fills them in.
    let crd = serde_json::to_value(ShardPool::crd()).unwrap();
    let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(props["split"]["default"]["entities"], 5000);
    assert_eq!(props["cooldownSeconds"]["default"], 120);
}

#[test]
fn sector_for_id_is_named_after_its_coordinates() {
    let id = sidereal_core::SectorId::new(3, -1, 2).unwrap();
    let s = Sector::for_id("default", id);
    assert_eq!(s.metadata.name.as_deref(), Some("s3-xm1-y2"));
    assert_eq!(s.sector_id().unwrap(), id);
}

/// Every key and string value of the generated YAML, so a YAML 1.1 reader (kubectl) and a
/// YAML 1.2 one read the same object without any quoting.
#[test]
fn no_key_or_value_is_a_yaml_11_boolean_or_null() {
    fn walk(v: &serde_yaml::Value, path: &str, bad: &mut Vec<String>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, child) in m {
                    let key = k.as_str().unwrap_or_default();
                    if YAML11_SPECIAL_WORDS.contains(&key) {
                        bad.push(format!("key {path}.{key}"));
                    }
                    walk(child, &format!("{path}.{key}"), bad);
                }
            }
            serde_yaml::Value::Sequence(s) => {
                for (i, child) in s.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), bad);
                }
            }
            serde_yaml::Value::String(s) if YAML11_SPECIAL_WORDS.contains(&s.as_str()) => {
                bad.push(format!("value {path} = {s:?}"));
            }
            _ => {}
        }
    }
    for (name, yaml) in crd_files() {
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        let mut bad = Vec::new();
        walk(&doc, "", &mut bad);
        assert!(bad.is_empty(), "{name}: {bad:#?}");
        assert!(
            !yaml.contains("'y'") && !yaml.contains("\"Y\""),
            "{name} needs no quoting"
        );
    }
}

#[test]
fn sector_fields_are_written_without_quotes() {
    let sector = Sector::for_id("default", sidereal_core::SectorId::new(0, 0, -3).unwrap());
    let yaml = serde_yaml::to_string(&sector).unwrap();
    assert!(
        yaml.contains("gridX: 0\n") && yaml.contains("gridY: -3\n"),
        "{yaml}"
    );
    assert!(!yaml.contains('\''), "{yaml}");
}

/// docs/crd-reference.md is generated from these types; regenerate with `make docs`.
#[test]
fn the_crd_reference_is_generated_from_the_types() {
    let doc = reference::reference_markdown();
    for field in [
        "spec.scale",
        "spec.gridX",
        "spec.split.entities",
        "status.phase",
    ] {
        assert!(
            doc.contains(&format!("`{field}`")),
            "{field} in the reference"
        );
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/crd-reference.md");
    if std::env::var_os("SIDEREAL_BLESS").is_some() {
        std::fs::write(&path, &doc).expect("writing docs/crd-reference.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == doc,
        "docs/crd-reference.md drifted from the CRD types: run `make docs` and commit it"
    );
}
