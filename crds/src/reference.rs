//! The CRD reference (docs/crd-reference.md), generated from the same schema the API server
//! enforces: every field with its type, default, bounds and description, and every CEL rule
//! with its message.

use serde_json::Value;

use crate::crds;

/// The reference as Markdown.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# CRD reference\n\n\
         Generated from the Rust types in `crds/src` (the schema the API server enforces) by\n\
         `make docs`; a test fails when it drifts. Apply the CRDs with\n\
         `sidereal crdgen | kubectl apply --server-side -f -` or the Helm chart.\n",
    );
    for crd in crds() {
        let crd = serde_json::to_value(&crd).expect("a CRD serializes");
        let spec = &crd["spec"];
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        for version in spec["versions"].as_array().into_iter().flatten() {
            out += &format!(
                "\n## {kind} ({}/{}, {})\n\n",
                spec["group"].as_str().unwrap_or_default(),
                version["name"].as_str().unwrap_or_default(),
                spec["scope"].as_str().unwrap_or_default().to_lowercase()
            );
            let schema = &version["schema"]["openAPIV3Schema"];
            if let Some(d) = schema["description"].as_str() {
                out += &format!("{}\n\n", one_line(d));
            }
            out += "| field | type | default | description |\n|---|---|---|---|\n";
            let mut rules = Vec::new();
            for part in ["spec", "status"] {
                walk(&schema["properties"][part], part, &mut out, &mut rules);
            }
            if !rules.is_empty() {
                out += "\nAdmission rules (CEL), checked by the API server:\n\n";
                for (path, rule, message) in rules {
                    out += &format!("- `{path}`: `{rule}`: {message}\n");
                }
            }
        }
    }
    out
}

fn walk(schema: &Value, path: &str, out: &mut String, rules: &mut Vec<(String, String, String)>) {
    if schema.is_null() {
        return;
    }
    let mut ty = schema["type"].as_str().unwrap_or("object").to_owned();
    if let Some(f) = schema["format"].as_str() {
        ty = format!("{ty} ({f})");
    }
    let mut bounds = Vec::new();
    for (key, word) in [
        ("minimum", ">="),
        ("maximum", "<="),
        ("minLength", "length >="),
        ("maxLength", "length <="),
        ("minItems", "items >="),
        ("maxItems", "items <="),
    ] {
        if let Some(v) = schema.get(key) {
            bounds.push(format!("{word} {v}"));
        }
    }
    if let Some(e) = schema["enum"].as_array() {
        let values: Vec<String> = e.iter().map(|v| v.to_string()).collect();
        bounds.push(format!("one of {}", values.join(", ")));
    }
    if let Some(p) = schema["pattern"].as_str() {
        bounds.push(format!("matches `{p}`"));
    }
    let default = schema
        .get("default")
        .map(|d| format!("`{d}`"))
        .unwrap_or_default();
    let mut description = schema["description"]
        .as_str()
        .map(one_line)
        .unwrap_or_default();
    if !bounds.is_empty() {
        description = format!("{description} ({})", bounds.join("; "));
    }
    if path.contains('.') || !schema["description"].is_null() {
        *out += &format!(
            "| `{path}` | {ty} | {default} | {} |\n",
            description.replace('|', "\\|")
        );
    }
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        rules.push((
            path.to_owned(),
            rule["rule"].as_str().unwrap_or_default().to_owned(),
            rule["message"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, child) in props {
            walk(child, &format!("{path}.{name}"), out, rules);
        }
    }
    if schema["items"].is_object() {
        walk(&schema["items"], &format!("{path}[]"), out, rules);
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
