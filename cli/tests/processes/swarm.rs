//! Bot swarms against a real fleet: `sidereal bot` as users run it, and 50 in-process bots
//! (the product's `sidereal-client` over real UDP) flying across shard boundaries, each checked
//! against what the mirror and the placement say.

use std::time::Duration;

use sidereal_client::swarm::{SwarmConfig, run_swarm};
use std::collections::BTreeMap;

use sidereal_client::latency::quantile;
use sidereal_core::{Placement, Point, SectorId, ShardId};

use super::{TempDir, metric_at, start_replication_with, start_shards_and_place, wait_until};

#[test]
fn a_bot_swarm_logs_in_flies_and_reports_every_bot() {
    let data = TempDir::new("bots");
    let r = start_replication_with(200, &data.0, None, &[]);
    let _shards = start_shards_and_place(&r, 2);
    let bot = |count: &str| {
        let mut cmd = super::sidereal();
        cmd.args([
            "bot",
            "--count",
            count,
            "--http",
            &r.http,
            "--duration",
            "6",
        ]);
        cmd
    };
    let run = |count: &str| bot(count).output().expect("sidereal bot");
    // The first swarm also serves its live metrics: read them while it flies.
    let port = super::free_port();
    let live = bot("8")
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sidereal bot");
    let metrics = format!("http://127.0.0.1:{port}");
    wait_until("live bot metrics", Duration::from_secs(30), || {
        metric_at(&metrics, "sidereal_bots_connected ") == 8.0
            && metric_at(&metrics, "sidereal_bot_updates_total ") > 100.0
            && metric_at(&metrics, "sidereal_bot_state_bytes_total ") > 0.0
            && metric_at(&metrics, "sidereal_bot_input_latency_seconds_count ") > 0.0
    });
    let text = std::process::Command::new("curl")
        .args(["-sf", &format!("{metrics}/metrics")])
        .output()
        .expect("curl");
    let (clean, said) = super::metrics::promtool(&String::from_utf8_lossy(&text.stdout));
    assert!(
        clean,
        "promtool check metrics on the swarm's metrics: {said}"
    );
    let out = live.wait_with_output().expect("the swarm ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("SWARM "))
        .expect("a summary line");
    for want in [
        "bots=8",
        "connected=8",
        "moved=8",
        "disconnects=0",
        "predicted=8",
    ] {
        assert!(summary.contains(want), "{want} in {summary}");
    }
    assert_eq!(stdout.lines().filter(|l| l.starts_with("bot-")).count(), 8);
    // The bots registered the first time; a second swarm logs the same bots in.
    let again = run("3");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("connected=3"), "{stdout}");
    assert_eq!(
        logins(&r.http, "created"),
        8.0,
        "no new accounts the second time"
    );
    assert!(logins(&r.http, "ok") >= 3.0);
}

fn logins(base: &str, result: &str) -> f64 {
    metric_at(
        base,
        &format!("sidereal_logins_total{{result=\"{result}\"}}"),
    )
}

/// 50 bots fly for 20 s over leaves spread across two shards: every bot stays connected, sees
/// its own ship in every update (the same id through every handover), is never sent an entity
/// beyond the interest radius, and is sent only entities the mirror has; most cross between
/// shards more than once.
#[test]
fn fifty_bots_fly_across_shard_boundaries_and_see_only_their_neighbourhood() {
    fly_across_shard_boundaries(0, 50, 40);
}

#[test]
fn sixty_bots_on_three_gateways_fly_across_shard_boundaries_without_a_disconnect() {
    fly_across_shard_boundaries(3, 60, 12);
}

/// `bots` bots (`full_bots` of them full clients, the others light) fly for 20 s over a
/// checkerboard of two shards, served by replication's own game port (`gateways` 0) or by
/// that many `sidereal gateway` processes; every bot is checked against the mirror.
fn fly_across_shard_boundaries(gateways: usize, bots: usize, full_bots: usize) {
    const RADIUS: f32 = 600.0;
    let data = TempDir::new("fifty");
    let radius = RADIUS.to_string();
    let mut extra = vec!["--interest-radius", &radius];
    if gateways > 0 {
        extra.extend(["--no-game", "--gateway-link", "127.0.0.1:0"]);
    }
    let r = start_replication_with(200, &data.0, None, &extra);
    let _shards = start_shards_and_place(&r, 2);
    let gateways: Vec<super::gateways::Gateway> = (0..gateways)
        .map(|i| {
            super::gateways::start_gateway(
                r.gateways.as_deref().expect("a gateway link"),
                &format!("gw-{i}"),
                None,
                RADIUS,
            )
        })
        .collect();
    wait_until("every gateway linked", Duration::from_secs(20), || {
        gateways
            .iter()
            .all(|g| metric_at(&g.metrics, "sidereal_gateway_linked") == 1.0)
    });
    // A checkerboard of 1,000-unit leaves over the two 4,000-unit roots, alternating between
    // the shards: new ships start where four leaves meet, and every leaf boundary a bot flies
    // across is a shard boundary.
    let current = r.control.placement();
    let mut sectors = BTreeMap::new();
    for root in current.world.clone().expect("replication names its world") {
        let per_edge = 1i64 << root.scale;
        for dx in 0..per_edge {
            for dy in 0..per_edge {
                let (x, y) = (root.x * per_edge + dx, root.y * per_edge + dy);
                let leaf = SectorId::new(0, x, y).expect("a leaf inside the root");
                sectors.insert(
                    leaf,
                    ShardId::new(format!("shard-{}", (x + y).rem_euclid(2))),
                );
            }
        }
    }
    r.control
        .put_placement(&Placement {
            generation: current.generation + 1,
            sectors,
            world: None,
        })
        .expect("the checkerboard placement");
    wait_until("the checkerboard in force", Duration::from_secs(30), || {
        r.control.status().placement_generation == current.generation + 1
    });
    let placement = r.control.placement();
    let handovers_before = metric_at(&r.http, "sidereal_handovers_total ");
    let report = run_swarm(&SwarmConfig {
        http: r.http.clone(),
        count: bots,
        prefix: "fifty".into(),
        password: "correct horse battery".into(),
        duration: Some(Duration::from_secs(20)),
        tick_hz: 30,
        metrics: None,
        tls_ca: None,
        // Light bots among them: the gateway serves them alike.
        full_bots,
    })
    .expect("the swarm runs");
    let handovers = metric_at(&r.http, "sidereal_handovers_total ") - handovers_before;
    assert_eq!(placement, r.control.placement(), "the placement held still");

    let world = r.control.entities("");
    // Which shard flies a point: the owner of the leaf that contains it.
    let shard_at = |p: [f32; 2]| {
        let point = Point::new(f64::from(p[0]), f64::from(p[1]));
        placement
            .sectors
            .iter()
            .find(|(leaf, _)| leaf.contains(point))
            .map(|(_, shard)| shard.clone())
    };
    let mut crossings = Vec::new();
    for b in &report.bots {
        assert!(b.connect_time.is_some(), "{} never connected", b.name);
        assert_eq!(b.disconnects, 0, "{} was disconnected", b.name);
        assert!(b.updates > 300, "{}: {} updates in 20 s", b.name, b.updates);
        assert_eq!(
            b.missing_own_ship, 0,
            "{} lost sight of its own ship",
            b.name
        );
        if b.full {
            // lightyear's entity for the ship is the gateway's, whichever shard flies it.
            assert!(b.predicted, "{}: its ship was never predicted", b.name);
            assert!(b.interpolated > 0, "{}: nothing interpolated", b.name);
        } else {
            // lightyear still replicates its ship to it; nothing is interpolated.
            assert_eq!(b.interpolated, 0, "{} is light", b.name);
        }
        assert_eq!(
            b.beyond_radius, 0,
            "{} was sent entities beyond the radius",
            b.name
        );
        let unknown: Vec<_> = b.seen.iter().filter(|id| !world.contains_key(id)).collect();
        assert!(
            unknown.is_empty(),
            "{} was sent ships or asteroids the mirror does not have: {unknown:?}",
            b.name
        );
        let shards: Vec<_> = b.path.iter().map(|p| shard_at(*p)).collect();
        crossings.push(shards.windows(2).filter(|w| w[0] != w[1]).count());
    }
    let crossed_twice = crossings.iter().filter(|c| **c >= 2).count();
    let mean_crossings = crossings.iter().sum::<usize>() as f64 / crossings.len() as f64;
    // Input-to-state latency, split by whether the ship changed shards on the way.
    let (mut across, mut within) = (Vec::new(), Vec::new());
    for s in report.bots.iter().flat_map(|b| &b.latency) {
        if shard_at(s.from) == shard_at(s.to) {
            within.push(s.latency);
        } else {
            across.push(s.latency);
        }
    }
    let ms = |v: &[Duration], q| quantile(v, q).map_or(0, |d| d.as_millis());
    println!(
        "{bots} bots on {} gateways: {handovers} handovers, shard crossings per bot {crossings:?}; latency p50/p99 {}/{} ms within a shard ({} samples), {}/{} ms across a handover ({} samples); {:.1} bits per entity update, chat said {} heard {}, {} rollbacks",
        gateways.len(),
        ms(&within, 0.5),
        ms(&within, 0.99),
        within.len(),
        ms(&across, 0.5),
        ms(&across, 0.99),
        across.len(),
        report.bits_per_entity_update(),
        report.bots.iter().map(|b| b.chat_said).sum::<u32>(),
        report.bots.iter().map(|b| b.chat_heard).sum::<usize>(),
        report.bots.iter().map(|b| b.rollbacks).sum::<u32>(),
    );
    let (full, light) = (
        report.cpu_per_bot(true).expect("full bots"),
        report.cpu_per_bot(false).expect("light bots"),
    );
    println!(
        "swarm CPU per bot: full {:.2} % of a core, light {:.2} %",
        full * 100.0,
        light * 100.0
    );
    assert_eq!(
        report.bots.iter().filter(|b| !b.full).count(),
        bots - full_bots
    );
    for (i, g) in gateways.iter().enumerate() {
        // Logins spread players over the gateways: each served some.
        let served = metric_at(&g.metrics, "sidereal_game_state_updates_total ");
        println!("gateway {i} sent {served} world updates");
        assert!(served > 0.0, "gateway {i} served no one");
    }
    assert!(light < full, "a light bot costs less than a full one");
    assert!(
        crossed_twice * 5 >= bots * 3 && mean_crossings >= 2.0,
        "{crossed_twice} of {bots} bots crossed between shards twice, {mean_crossings} times on average: {crossings:?}"
    );
    assert!(!across.is_empty(), "commands sent across a handover showed");
    assert!(handovers > 0.0);
    assert!(
        report
            .latency(0.5)
            .is_some_and(|d| d < Duration::from_millis(500)),
        "input-to-state latency p50 {:?}",
        report.latency(0.5)
    );
}
