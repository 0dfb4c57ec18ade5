//! Issue 21's takeover with players flying: replication as the control plane (Postgres, a
//! gateway, three shards publishing their sector streams) with a standby behind it; 30 bots fly
//! through the gateway; the leader is killed with kill -9. The standby leads within 5 s, the
//! shards simulate on and resume onto it, the gateway links again, and nobody is disconnected.
//! What the shards simulated is the reference: their own streams show every entity moving on
//! without a jump back (nothing rewound to the store), and the new leader holds exactly the
//! durable entities they simulate.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sidereal_client::swarm::{SwarmConfig, run_swarm};
use sidereal_core::sector_view::{ConnId, Source};
use sidereal_core::stream_client::{FeedOptions, SectorFeed};
use sidereal_core::{ControlError, EntityKind};

use super::gateways::{RADIUS, durable_ids, start_gateway};
use super::persistence::{PG, fresh_database, start_standby};
use super::streams::follow;
use super::{
    Replication, SECRET, TempDir, free_port, metric, metric_at, start_replication_with,
    start_shards_and_place, wait_until,
};

/// One entity as a stream showed it: on which connection, at which of the publisher's ticks,
/// when, where, and how fast.
struct Sighting {
    conn: Option<ConnId>,
    tick: u64,
    at: Instant,
    pos: [f32; 2],
    speed: f32,
}

/// Where each entity the streams showed was last, at which publisher's tick and when, and how
/// fast it went.
#[derive(Default)]
struct Continuity {
    last: HashMap<u64, Sighting>,
    /// The largest jump seen, as a share of what its speed allowed.
    worst: f64,
    jumps: Vec<String>,
}

impl Continuity {
    /// A ship or asteroid moves at most 1.5 x its speed for the time between two sightings,
    /// plus some units of slack (quantization, collisions). One put back to the store's state
    /// would jump back by up to a checkpoint interval of flight. The time between sightings is
    /// the publisher's ticks when the same stream showed it both times (frames arrive in bursts
    /// on a busy machine), or the wall clock when another shard's did (their ticks differ).
    fn watch(&mut self, feed: &SectorFeed) {
        let now = Instant::now();
        for e in feed.view.iter() {
            let s = e.state();
            let speed = s.vel[0].hypot(s.vel[1]);
            // An entity between streams shows where it left: the next stream's sighting is
            // measured from the last one that showed it.
            let Source::Stream { conn, .. } = e.source else {
                continue;
            };
            // Projectiles are not stored (a rewind to the store cannot touch them), and live
            // two seconds bouncing off whatever they hit.
            if e.kind == EntityKind::Projectile {
                continue;
            }
            let conn = Some(conn);
            if let Some(last) = self.last.get(&e.id.0) {
                let (p, v) = (&last.pos, &last.speed);
                let same = conn.is_some() && conn == last.conn;
                if same && e.tick == last.tick {
                    continue;
                }
                let dt = if same && e.tick > last.tick {
                    (e.tick - last.tick) as f64 / 30.0
                } else {
                    (now - last.at).as_secs_f64()
                };
                let allowed = f64::from(speed.max(*v).max(5.0)) * 1.5 * (dt + 0.1) + 4.0;
                let d = f64::from((s.pos[0] - p[0]).hypot(s.pos[1] - p[1]));
                self.worst = self.worst.max(d / allowed);
                if d > allowed {
                    self.jumps.push(format!(
                        "e{} jumped {d:.1} units in {dt:.2} s (allowed {allowed:.1})",
                        e.id.0
                    ));
                }
            }
            let seen = Sighting {
                conn,
                tick: e.tick,
                at: now,
                pos: s.pos,
                speed,
            };
            self.last.insert(e.id.0, seen);
        }
    }
}

#[test]
fn a_leader_killed_under_30_flying_bots_hands_over_with_nobody_disconnected_and_nothing_lost() {
    let _pg = PG.lock().unwrap_or_else(|e| e.into_inner());
    let url = fresh_database("takeover");
    let data = TempDir::new("takeover");
    let (http, link, gateways) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let same = [
        "--http",
        http.as_str(),
        "--link",
        link.as_str(),
        "--gateway-link",
        gateways.as_str(),
        "--no-game",
        "--checkpoint-interval",
        "1",
    ];
    let mut leader = start_replication_with(600, &data.0, Some(&url), &same);
    let shards = start_shards_and_place(&leader, 3);
    let gateway = start_gateway(&gateways, "gw-0", None, RADIUS);
    wait_until("the gateway linked", Duration::from_secs(20), || {
        metric_at(&gateway.metrics, "sidereal_gateway_linked") == 1.0
    });
    let standby_ready = start_standby(600, &data.0, Some(&url), &same);

    let swarm = {
        let http = format!("http://{http}");
        std::thread::spawn(move || {
            run_swarm(&SwarmConfig {
                http,
                count: 30,
                prefix: "takeover".into(),
                password: "takeover-password".into(),
                duration: Some(Duration::from_secs(20)),
                tick_hz: 30,
                metrics: None,
                tls_ca: None,
                full_bots: 0,
            })
            .expect("the swarm flies")
        })
    };
    wait_until("30 bots on the gateway", Duration::from_secs(40), || {
        metric_at(&gateway.metrics, "sidereal_gateway_players") == 30.0
    });
    let mut feed = SectorFeed::new("test-watcher", SECRET, FeedOptions::default());
    let mut continuity = Continuity::default();
    let watch_for = |what: &str,
                     secs: f64,
                     r: &Replication,
                     feed: &mut SectorFeed,
                     c: &mut Continuity,
                     done: &mut dyn FnMut() -> bool| {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            follow(r, feed);
            c.watch(feed);
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        assert!(secs < 30.0 || done(), "{what}");
    };
    watch_for(
        "flying",
        3.0,
        &leader,
        &mut feed,
        &mut continuity,
        &mut || false,
    );
    let before = durable_ids(&leader);
    assert_eq!(before.len(), 630, "600 seeded and 30 bots' ships");
    let generation = leader.control.placement().generation;

    leader.proc_.0.kill().expect("kill -9 the leader");
    let killed = Instant::now();
    let _ = leader.proc_.0.wait();
    // The shards' streams go on while nobody leads: keep watching them.
    let mut standby = None;
    while standby.is_none() {
        assert!(killed.elapsed() < Duration::from_secs(10), "no standby led");
        feed.pump(Instant::now());
        continuity.watch(&feed);
        standby = standby_ready.try_recv().ok();
        std::thread::sleep(Duration::from_millis(30));
    }
    let standby: Replication = standby.unwrap();
    let led = killed.elapsed();
    let mut next = standby.control.placement();
    assert_eq!(next.generation, generation, "the stored placement");
    next.generation += 1;
    let placed = loop {
        follow(&standby, &mut feed);
        continuity.watch(&feed);
        match standby.control.put_placement(&next) {
            Ok(_) => break killed.elapsed(),
            Err(ControlError::Unavailable(_)) if killed.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(30));
            }
            Err(e) => panic!("the new leader takes a placement once the shards are back: {e}"),
        }
    };
    assert!(placed <= Duration::from_secs(5), "takeover took {placed:?}");
    assert_eq!(metric(&standby, "sidereal_links_resumed_total"), 3.0);
    watch_for(
        "the gateway links to the new leader",
        10.0,
        &standby,
        &mut feed,
        &mut continuity,
        &mut || metric_at(&gateway.metrics, "sidereal_gateway_linked") == 1.0,
    );
    watch_for(
        "flying on",
        4.0,
        &standby,
        &mut feed,
        &mut continuity,
        &mut || false,
    );
    assert_eq!(durable_ids(&standby), before, "every durable entity, once");
    let streamed: BTreeSet<u64> = feed
        .view
        .iter()
        .filter(|e| e.kind != EntityKind::Projectile)
        .map(|e| e.id.0)
        .collect();
    assert_eq!(
        streamed, before,
        "what the shards simulate is what the leader holds"
    );
    let report = swarm.join().expect("the swarm");
    let gaps: Vec<f64> = report
        .bots
        .iter()
        .map(|b| b.longest_gap.as_secs_f64())
        .collect();
    let disconnects: u32 = report.bots.iter().map(|b| b.disconnects).sum();
    let max_gap = gaps.iter().copied().fold(0.0, f64::max);
    println!(
        "takeover: the standby led {led:?} after the kill, placements again after {placed:?}; \
         30 bots: {disconnects} disconnects, longest pause between world updates {max_gap:.3} s; \
         stream continuity: worst move {:.0} % of the bound over {} entities",
        continuity.worst * 100.0,
        continuity.last.len()
    );
    assert!(
        continuity.jumps.is_empty(),
        "{:?}",
        &continuity.jumps[..continuity.jumps.len().min(5)]
    );
    assert_eq!(report.connected(), 30);
    assert_eq!(disconnects, 0, "nobody disconnected");
    assert!(
        report.bots.iter().all(|b| b.updates > 300),
        "every bot saw the world move throughout"
    );
    drop(shards);
}
