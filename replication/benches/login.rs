//! Login throughput over real HTTP against an in-process replication (SQLite store): accounts
//! registered per second, logins per second and their latency, and what a flood from one
//! address costs. Prints numbers; never fails.
//!   cargo bench -p sidereal-replication --bench login

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sidereal_core::SectorId;
use sidereal_replication::login::token::{NetcodeKey, random_bytes};
use sidereal_replication::{AuthorityConfig, LoginConfig, ReplicationConfig};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

async fn timed_posts(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<String>,
    concurrency: usize,
) -> (Vec<f64>, Vec<u16>, f64) {
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let mut statuses = Vec::new();
    for chunk in bodies.chunks(concurrency) {
        let calls = chunk.iter().map(|b| async move {
            let t = Instant::now();
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(b.clone())
                .send()
                .await
                .expect("answer");
            (t.elapsed().as_secs_f64() * 1000.0, r.status().as_u16())
        });
        for (ms, status) in futures::future::join_all(calls).await {
            lat.push(ms);
            statuses.push(status);
        }
    }
    (lat, statuses, t0.elapsed().as_secs_f64())
}

fn body(name: &str) -> String {
    format!(r#"{{"name":"{name}","password":"correct horse battery"}}"#)
}

#[tokio::main]
async fn main() {
    let data = std::env::temp_dir().join(format!("sidereal-bench-login-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let config = ReplicationConfig {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        public_http: None,
        tls: None,
        link: SocketAddr::from(([127, 0, 0, 1], 0)),
        link_settings: Default::default(),
        authority: AuthorityConfig {
            world: vec![SectorId::new(2, 0, 0).unwrap()],
            secret: "bench".into(),
            tick_hz: 30,
            shadow_margin: 50.0,
        },
        seed_entities: 0,
        seed: 1,
        database_url: None,
        data_dir: data.clone(),
        checkpoint_interval: Duration::from_secs(1),
        standby: false,
        leader_lease: Duration::from_secs(3),
        takeover_grace: Duration::from_secs(10),
        label_pod: None,
        standby_probes: false,
        control_token: "bench-control-token".into(),
        login: LoginConfig {
            netcode_key: Some(NetcodeKey(random_bytes())),
            // The bench is one address: lift the per-address limit for the throughput runs.
            per_client_rate: 1e6,
            per_client_burst: 1_000_000,
            ..LoginConfig::default()
        },
        gateway: None,
        sessions: Default::default(),
        gateway_link: None,
    };
    let (running, _all) = sidereal_replication::start(config).await.expect("start");
    let base = format!("http://{}", running.http);
    let client = reqwest::Client::new();
    let n = 64;
    println!("## logins (in-process replication, SQLite, Argon2id defaults, 2 hashing slots)");
    let names: Vec<String> = (0..n).map(|i| body(&format!("pilot{i}"))).collect();
    let (mut lat, statuses, secs) =
        timed_posts(&client, &format!("{base}/v1/accounts"), names.clone(), 8).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    println!(
        "register: {n} accounts in {secs:.2} s = {:.1}/s; latency p50 {:.1} ms p99 {:.1} ms (8 at once; each makes a durable ship)",
        n as f64 / secs,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );
    let (mut lat, statuses, secs) =
        timed_posts(&client, &format!("{base}/v1/login"), names, 8).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    println!(
        "login:    {n} logins in {secs:.2} s = {:.1}/s; latency p50 {:.1} ms p99 {:.1} ms (8 at once)",
        n as f64 / secs,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99)
    );
    let _ = std::fs::remove_dir_all(&data);
}
