//! The Grafana dashboard, for real: `sidereal up` runs a fleet, Debian's Prometheus scrapes
//! replication, the shards and the gateway, and every expression of every panel in
//! `charts/sidereal/dashboards/sidereal-fleet.json` evaluates without error and returns data;
//! the chart's alert rules (`charts/sidereal/alerts/sidereal-alerts.yaml`) load and evaluate.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, TempDir, free_port, sidereal, wait_until};

fn dashboard() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/sidereal/dashboards/sidereal-fleet.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON")
}

/// `GET /api/v1/query`: the result list, or why not.
fn query(prometheus: u16, expr: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = Command::new("curl")
        .args(["-s", "--data-urlencode", &format!("query={expr}")])
        .arg(format!("http://127.0.0.1:{prometheus}/api/v1/query"))
        .output()
        .map_err(|e| e.to_string())?;
    let reply: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {:?}", out.stdout))?;
    if reply["status"] != "success" {
        return Err(format!("{expr}: {reply}"));
    }
    Ok(reply["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[test]
fn every_dashboard_panel_returns_data_from_a_real_prometheus() {
    let board = dashboard();
    let panels = board["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut ids: Vec<i64> = panels
        .iter()
        .map(|p| p["id"].as_i64().expect("an id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");

    let data = TempDir::new("dash");
    let (http, link, metrics) = (free_port(), free_port(), free_port());
    let (gateway_link, gateway_metrics, gateway_login) = (free_port(), free_port(), free_port());
    let _up = Proc(
        sidereal()
            // Bots, so the players' panels (bandwidth per player, commands, chat) have data;
            // one gateway (the default) serves them.
            .args(["up", "--shards", "2", "--entities", "300", "--bots", "3"])
            .args(["--gateway-link", &format!("127.0.0.1:{gateway_link}")])
            .args(["--gateway-metrics-base-port", &gateway_metrics.to_string()])
            .args(["--gateway-login-base-port", &gateway_login.to_string()])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--link", &format!("127.0.0.1:{link}")])
            .args(["--metrics-base-port", &metrics.to_string()])
            .arg("--data")
            .arg(&data.0)
            .stdout(Stdio::null())
            .spawn()
            .expect("sidereal up"),
    );
    let prometheus = free_port();
    let config = data.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ['{}']
scrape_configs:
  - job_name: replication
    static_configs: [{{targets: ['127.0.0.1:{http}']}}]
  - job_name: shards
    static_configs: [{{targets: ['127.0.0.1:{}', '127.0.0.1:{}']}}]
  - job_name: gateways
    static_configs: [{{targets: ['127.0.0.1:{gateway_metrics}']}}]
",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../charts/sidereal/alerts/sidereal-alerts.yaml"
            ),
            metrics,
            metrics + 1
        ),
    )
    .unwrap();
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.0.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package; make test installs it)"),
    );
    wait_until("all four targets scraped", Duration::from_secs(60), || {
        query(prometheus, "up == 1").is_ok_and(|r| r.len() == 4)
    });
    // Every alert rule loads and evaluates against the real series (none is in error).
    let rule_file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/sidereal/alerts/sidereal-alerts.yaml"
    ))
    .expect("the alert rules");
    let alerts = rule_file
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(alerts >= 8, "{alerts} alert rules in the file");
    let rules_url = format!("http://127.0.0.1:{prometheus}/api/v1/rules");
    wait_until(
        "every alert rule evaluated",
        Duration::from_secs(30),
        || {
            let out = Command::new("curl")
                .args(["-s", &rules_url])
                .output()
                .unwrap();
            let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let rules: Vec<&serde_json::Value> = reply["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            for r in &rules {
                assert_ne!(r["health"], "err", "alert rule in error: {r}");
            }
            rules.len() == alerts && rules.iter().all(|r| r["health"] == "ok")
        },
    );
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            wait_until(
                &format!("panel {title:?}: {expr}"),
                Duration::from_secs(60),
                || match query(prometheus, expr) {
                    Ok(result) => !result.is_empty(),
                    Err(e) => panic!("panel {title:?} does not evaluate: {e}"),
                },
            );
        }
    }
}
