//! Every `/metrics` endpoint passes `promtool check metrics` and follows Prometheus
//! conventions; a killed shard is not counted as a rejected link; the control API needs its
//! token while health and metrics stay open.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Proc, TOKEN, free_port, sidereal, start_replication, wait_until};

fn fetch(url: &str, header: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "--max-time", "5", "-w", "\n%{http_code}"]);
    if let Some(h) = header {
        c.args(["-H", h]);
    }
    let out = c.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// `promtool check metrics` on `text`: (passed, what it said).
pub(crate) fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
}

fn type_of(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
        .map(str::to_owned)
}

/// Sum of every sample of `name` (any labels).
fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn every_metrics_endpoint_passes_promtool_and_counts_what_its_names_say() {
    let r = start_replication(600);
    let ports = [free_port(), free_port()];
    let mut shards: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Proc(
                sidereal()
                    .args(["shard", "--id", &format!("shard-{i}")])
                    .args(["--replication", &r.link.to_string()])
                    .args(["--metrics", &format!("127.0.0.1:{port}")])
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    wait_until("shards linked", Duration::from_secs(30), || {
        super::connected(&r).len() == 2
    });
    let world: Vec<sidereal_core::SectorId> =
        vec!["s2-xm1-y0".parse().unwrap(), "s2-x0-y0".parse().unwrap()];
    let ids = ["shard-0", "shard-1"].map(sidereal_core::ShardId::new);
    let p = sidereal_core::placement::even(&world, &ids, 1);
    r.control.put_placement(&p).expect("placing the world");
    let shard_metrics = format!("http://127.0.0.1:{}/metrics", ports[0]);
    wait_until(
        "a second of ticks and a load report",
        Duration::from_secs(30),
        || {
            let (_, m) = fetch(&shard_metrics, None);
            sum_of(&m, "sidereal_shard_ticks_total") >= 40.0 && r.control.load().shards.len() == 2
        },
    );

    // Replication's and a shard's exposition: clean for promtool, base units, real types.
    let (code, rep) = fetch(&format!("{}/metrics", r.http), None);
    assert_eq!(code, 200, "/metrics needs no token");
    let (_, shard) = fetch(&shard_metrics, None);
    for (who, text) in [("replication", &rep), ("shard", &shard)] {
        let (ok, said) = promtool(text);
        assert!(ok, "promtool check metrics on {who}:\n{said}\n{text}");
        assert!(
            !text.contains("_ms"),
            "{who} exports a unit other than seconds:\n{text}"
        );
    }
    assert_eq!(
        type_of(&shard, "sidereal_shard_tick_duration_seconds").as_deref(),
        Some("histogram")
    );
    assert_eq!(
        type_of(&shard, "sidereal_shard_tick_cpu_seconds").as_deref(),
        Some("histogram")
    );
    for counter in [
        "sidereal_shard_ticks_total",
        "sidereal_shard_handovers_out_total",
        "sidereal_shard_update_bytes_total",
        "sidereal_shard_updates_total",
    ] {
        assert_eq!(
            type_of(&shard, counter).as_deref(),
            Some("counter"),
            "{counter}"
        );
    }
    assert!(sum_of(&shard, "sidereal_shard_tick_cpu_seconds_count") >= 40.0);
    assert!(shard.contains("shard=\"shard-0\""), "{shard}");
    for counter in ["sidereal_handovers_total", "sidereal_link_bytes_total"] {
        assert_eq!(
            type_of(&rep, counter).as_deref(),
            Some("counter"),
            "{counter}"
        );
    }
    assert!(sum_of(&rep, "sidereal_link_bytes_total") > 0.0);

    // A shard killed with SIGKILL breaks its link; it was not rejected for bad input.
    let rejected_before = sum_of(&rep, "sidereal_links_rejected_total");
    let killed = &mut shards[1].0;
    killed.kill().unwrap();
    killed.wait().unwrap();
    wait_until("replication notices", Duration::from_secs(10), || {
        !super::connected(&r).contains("shard-1")
    });
    let (_, after) = fetch(&format!("{}/metrics", r.http), None);
    assert_eq!(
        sum_of(&after, "sidereal_links_rejected_total"),
        rejected_before,
        "{after}"
    );
}

#[test]
fn the_control_api_needs_its_token_and_health_does_not() {
    let r = start_replication(50);
    let good = format!("Authorization: Bearer {TOKEN}");
    let _shard = super::start_shard(&r, "shard-0");
    wait_until("shard linked", Duration::from_secs(30), || {
        super::connected(&r).len() == 1
    });
    let before = r.control.placement();
    for path in [
        "/v1/status",
        "/v1/load",
        "/v1/placement",
        "/v1/shards",
        "/v1/entities",
    ] {
        let url = format!("{}{path}", r.http);
        assert_eq!(fetch(&url, None).0, 401, "{path} without a token");
        assert_eq!(
            fetch(
                &url,
                Some("Authorization: Bearer wrong-token-of-some-length")
            )
            .0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            fetch(&url, Some("Authorization: Basic Zm9vOmJhcg==")).0,
            401
        );
        assert_eq!(fetch(&url, Some(&good)).0, 200, "{path} with the token");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(fetch(&format!("{}{path}", r.http), None).0, 200, "{path}");
    }
    // A valid placement written without the token, or with a wrong one, changes nothing.
    let world: Vec<sidereal_core::SectorId> =
        vec!["s2-xm1-y0".parse().unwrap(), "s2-x0-y0".parse().unwrap()];
    let next = sidereal_core::placement::even(
        &world,
        &[sidereal_core::ShardId::new("shard-0")],
        before.generation + 1,
    );
    for token in [None, Some("wrong-token-of-some-length")] {
        let intruder = super::Control::with_token(&r.http, token);
        let err = intruder.put_placement(&next).unwrap_err();
        assert!(
            matches!(err, sidereal_core::ControlError::Unauthorized(_)),
            "{err}"
        );
    }
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .args(["-H", "content-type: application/json"])
        .args(["--data-binary", &serde_json::to_string(&next).unwrap()])
        .arg(format!("{}/v1/placement", r.http))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    assert_eq!(r.control.placement(), before);
    // The same document with the token is applied: the token was all that stopped it.
    r.control.put_placement(&next).expect("authorised write");
    let applied = r.control.placement();
    assert_eq!(
        (applied.generation, applied.sectors),
        (next.generation, next.sectors)
    );
}
