//! The shard link under faults a fleet on a network meets: a shard that stops (SIGSTOP) or a
//! relay that silently stops forwarding is dropped within the link timeout and its sectors are
//! simulated elsewhere; messages bigger than a frame go in parts; unauthenticated peers cannot
//! replay a handshake, take a reserved name, or hold unbounded connections and buffers.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use sidereal_core::control::EntityView;
use sidereal_core::protocol::{PROTOCOL_VERSION, ReplicationMessage, ShardMessage, encode_frame};
use sidereal_core::{EntityKind, SectorId, ShardId, placement};
use sidereal_testkit::tcp_proxy::TcpRelay;

use super::{
    Control, Proc, TempDir, closed_by_server, connected, entities, metric, metric_at,
    pids_matching, placement_of, raw_challenge, raw_hello, read_msg, sidereal,
    start_replication_with, start_up_with, token_of, wait_until,
};

/// A shard process linked to `link` (replication itself or a relay in front of it).
/// A shard linking to `link`, with `extra` flags (its metrics on a free port unless they say).
fn shard_at(link: SocketAddr, id: &str, extra: &[&str]) -> Proc {
    let mut cmd = sidereal();
    cmd.args(["shard", "--id", id, "--replication", &link.to_string()])
        .args(["--seed", "5"])
        .args(extra);
    if !extra.contains(&"--metrics") {
        cmd.args(["--metrics", "127.0.0.1:0"]);
    }
    Proc(cmd.spawn().expect("start shard"))
}

fn world() -> Vec<SectorId> {
    vec!["s2-xm1-y0".parse().unwrap(), "s2-x0-y0".parse().unwrap()]
}

/// Long-lived entities (projectiles expire on their own) of `owned`.
fn bodies(owned: &HashMap<u64, EntityView>) -> BTreeSet<u64> {
    owned
        .iter()
        .filter(|(_, e)| e.kind != EntityKind::Projectile)
        .map(|(id, _)| *id)
        .collect()
}

/// Marks as settled each of `ids` seen owned by a linked shard other than `gone`, at a newer
/// epoch than in `before`, and out of transit: simulated elsewhere. Each id needs to be seen so
/// once (after that it may cross borders like any entity); true once all are.
fn settle(
    settled: &mut BTreeSet<u64>,
    now: &HashMap<u64, EntityView>,
    ids: &BTreeSet<u64>,
    before: &HashMap<u64, EntityView>,
    gone: &str,
    linked: &BTreeSet<String>,
) -> bool {
    for id in ids {
        if now.get(id).is_some_and(|e| {
            e.owner.0 != gone
                && linked.contains(&e.owner.0)
                && !e.in_transit
                && e.epoch > before[id].epoch
        }) {
            settled.insert(*id);
        }
    }
    settled.len() == ids.len()
}

/// A stopped shard (SIGSTOP: its kernel still ACKs, so only the link's own silence timeout can
/// tell) is dropped by replication, `sidereal up` moves its leaves, and its entities are
/// simulated by the others within 5 s, none lost. On SIGCONT it finds its link closed, dials
/// again and resumes (the same process), and its copies of the entities simulated elsewhere
/// since are disowned: never two owners.
#[test]
fn a_stopped_shard_is_dropped_and_its_sectors_simulated_elsewhere_within_5_s() {
    let data = TempDir::new("sigstop");
    let (_up, _banner, base, link) =
        start_up_with(&data, 3, 1500, &["--no-autoscale", "--link-timeout", "2"]);
    let control = Control::with_token(&base, Some(&token_of(&data)));
    wait_until(
        "three shards reporting load",
        Duration::from_secs(30),
        || control.load().shards.len() == 3,
    );
    wait_until("shard-1 simulating", Duration::from_secs(30), || {
        let mine = control.entities("owner=shard-1");
        !mine.is_empty() && mine.values().all(|e| !e.in_transit)
    });
    let victim = format!("shard --id shard-1 --replication 127.0.0.1:{link}");
    let pids = pids_matching(&victim);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let before = control.entities("");
    let orphans = bodies(&control.entities("owner=shard-1"));

    let stopped = Instant::now();
    Command::new("kill")
        .args(["-STOP", &pids[0].to_string()])
        .status()
        .unwrap();
    let mut settled = BTreeSet::new();
    wait_until(
        "shard-1's entities simulated by the others",
        Duration::from_secs(5),
        || {
            let linked = control.connected();
            let now = control.entities("");
            settle(&mut settled, &now, &orphans, &before, "shard-1", &linked)
        },
    );
    let rehomed_after = stopped.elapsed();
    assert!(
        metric_at(&base, "sidereal_links_dropped_total{reason=\"silent\"}") >= 1.0,
        "the link was dropped for its silence"
    );
    assert!(
        control
            .placement()
            .sectors
            .values()
            .all(|s| s.0 != "shard-1")
    );
    // They move on under their new owners.
    let adopted = control.entities("");
    wait_until("the adopted entities move", Duration::from_secs(5), || {
        let now = control.entities("");
        orphans
            .iter()
            .filter(|id| {
                let v = adopted[id].vel;
                v[0].hypot(v[1]) > 1.0
            })
            .all(|id| now[id].version > adopted[id].version)
    });

    Command::new("kill")
        .args(["-CONT", &pids[0].to_string()])
        .status()
        .unwrap();
    wait_until(
        "shard-1 links again and resumes",
        Duration::from_secs(30),
        || {
            control.connected().contains("shard-1")
                && metric_at(&base, "sidereal_links_resumed_total") >= 1.0
        },
    );
    assert_eq!(
        pids_matching(&victim),
        pids,
        "the same process, not a restart"
    );
    let after = control.entities("");
    for id in &orphans {
        let e = &after[id];
        assert_ne!(e.owner.0, "shard-1", "{id} went back to the stopped shard");
    }
    assert_eq!(
        bodies(&after).len(),
        bodies(&before).len(),
        "no entity lost or doubled"
    );
    eprintln!("SIGSTOP: rehomed and simulated elsewhere after {rehomed_after:?}");
}

/// A relay between a shard and replication that silently stops forwarding (a partition: no
/// FIN, no RST): replication drops the link within its timeout and a rehome puts the shard's
/// entities on the other shard, none lost. The cut-off shard notices the silence too, but
/// simulates on and dials again; when the partition heals it resumes, and its copies of the
/// entities simulated elsewhere since (at newer epochs) are disowned: never two owners.
#[test]
fn a_relay_that_stops_forwarding_drops_the_link_on_both_ends() {
    let data = TempDir::new("relay");
    let r = start_replication_with(1200, &data.0, None, &["--link-timeout", "2"]);
    let relay = TcpRelay::start(r.link).expect("relay");
    let _s0 = shard_at(r.link, "shard-0", &["--link-timeout", "2"]);
    let s1_metrics = format!("http://127.0.0.1:{}", super::free_port());
    let mut s1 = shard_at(
        relay.addr(),
        "shard-1",
        &[
            "--link-timeout",
            "2",
            "--metrics",
            s1_metrics.trim_start_matches("http://"),
        ],
    );
    wait_until("both linked", Duration::from_secs(30), || {
        connected(&r).len() == 2
    });
    let ids = [ShardId::new("shard-0"), ShardId::new("shard-1")];
    r.control
        .put_placement(&placement::even(&world(), &ids, 1))
        .expect("placement");
    wait_until("shard-1 simulating", Duration::from_secs(30), || {
        let mine = entities(&r, "owner=shard-1");
        !mine.is_empty() && mine.values().all(|e| !e.in_transit)
    });
    let before = entities(&r, "");
    let orphans = bodies(&entities(&r, "owner=shard-1"));

    relay.stall();
    let stalled = Instant::now();
    wait_until(
        "replication drops the silent link",
        Duration::from_secs(5),
        || !connected(&r).contains("shard-1"),
    );
    let dropped_after = stalled.elapsed();
    assert_eq!(
        metric(&r, "sidereal_links_dropped_total{reason=\"silent\"}"),
        1.0
    );
    let next = placement::rehome(
        &placement_of(&r),
        &BTreeSet::from([ShardId::new("shard-0")]),
    )
    .expect("shard-1 had leaves");
    r.control.put_placement(&next).expect("rehome");
    let mut settled = BTreeSet::new();
    wait_until("shard-1's entities adopted", Duration::from_secs(5), || {
        settle(
            &mut settled,
            &entities(&r, ""),
            &orphans,
            &before,
            "shard-1",
            &connected(&r),
        )
    });
    assert!(
        metric_at(&s1_metrics, "sidereal_shard_entities{shard=\"shard-1\"}") > 0.0,
        "the cut-off shard simulates on"
    );
    assert!(s1.0.try_wait().unwrap().is_none(), "and does not exit");

    relay.heal();
    wait_until(
        "shard-1 links again and resumes",
        Duration::from_secs(10),
        || metric(&r, "sidereal_links_resumed_total") == 1.0,
    );
    wait_until(
        "its stale copies are disowned",
        Duration::from_secs(5),
        || metric_at(&s1_metrics, "sidereal_shard_entities{shard=\"shard-1\"}") == 0.0,
    );
    assert_eq!(
        metric_at(
            &s1_metrics,
            "sidereal_shard_resumes_total{shard=\"shard-1\"}"
        ),
        1.0
    );
    assert_eq!(
        bodies(&entities(&r, "")),
        bodies(&before),
        "none lost, none doubled"
    );
    assert!(
        entities(&r, "owner=shard-1").is_empty(),
        "shard-1 owns no leaf now, and so nothing"
    );
    eprintln!("stalled relay: link dropped after {dropped_after:?}");
}

/// With frames capped at 64 KiB, 4000 entities are more than one `Adopt` or `Released` frame
/// carries. Everything moves onto shard-1 (an `Adopt` in parts), over to shard-0 by a live
/// handover (a `Released` in parts), and back to shard-1 after shard-0's kill -9 (a rehome
/// from the mirror, in parts): every link stays up and no entity is lost.
#[test]
fn a_shard_holding_more_than_one_frame_of_entities_hands_over_and_rehomes_in_parts() {
    let frames = ["--max-frame-bytes", "65536"];
    let data = TempDir::new("frames");
    let r = start_replication_with(4000, &data.0, None, &frames);
    let mut s0 = shard_at(r.link, "shard-0", &frames);
    let _s1 = shard_at(r.link, "shard-1", &frames);
    wait_until("both linked", Duration::from_secs(30), || {
        connected(&r).len() == 2
    });
    let all = bodies(&entities(&r, ""));
    assert_eq!(all.len(), 4000);
    let owned_by = |shard: &str| {
        let now = entities(&r, "");
        all.iter().all(|id| {
            now.get(id)
                .is_some_and(|e| e.owner.0 == shard && !e.in_transit)
        })
    };
    let place_all_on = |shard: &str, generation: u64| {
        r.control
            .put_placement(&placement::even(
                &world(),
                &[ShardId::new(shard)],
                generation,
            ))
            .expect("placement");
    };
    place_all_on("shard-1", 1);
    wait_until("shard-1 adopts all 4000", Duration::from_secs(30), || {
        owned_by("shard-1")
    });
    place_all_on("shard-0", 2);
    wait_until(
        "shard-1 releases all 4000 to shard-0",
        Duration::from_secs(30),
        || owned_by("shard-0"),
    );
    assert_eq!(connected(&r).len(), 2, "both links stayed up");

    s0.0.kill().unwrap();
    s0.0.wait().unwrap();
    wait_until("shard-0 gone", Duration::from_secs(10), || {
        !connected(&r).contains("shard-0")
    });
    place_all_on("shard-1", 3);
    wait_until(
        "shard-1 readopts all 4000 from the mirror",
        Duration::from_secs(30),
        || owned_by("shard-1"),
    );
    let rejected: f64 = ["malformed_frame", "malformed_update"]
        .iter()
        .map(|r_| {
            metric(
                &r,
                &format!("sidereal_links_rejected_total{{reason=\"{r_}\"}}"),
            )
        })
        .sum();
    assert_eq!(rejected, 0.0, "no frame was refused");
    assert!(connected(&r).contains("shard-1"));
}

/// Unauthenticated peers: a handshake recorded on one connection and replayed on another is
/// refused; names that mean "no shard" are refused; a frame over 1 KiB before the handshake
/// closes the connection; 200 half-open connections hold at most the handshake cap, the rest
/// are closed at once, and a real shard links once they time out.
#[test]
fn replayed_handshakes_reserved_names_and_half_open_floods_are_refused() {
    let data = TempDir::new("handshakes");
    let r = start_replication_with(50, &data.0, None, &[]);

    // Record a real handshake (a spy that knows the secret), then replay its bytes.
    let (mut s, mut reader, challenge) = raw_challenge(r.link);
    let hello = ShardMessage::hello(super::SECRET, &challenge, ShardId::new("spy"), [4; 32]);
    let recorded = encode_frame(&hello);
    s.write_all(&recorded).unwrap();
    assert!(matches!(
        read_msg(&mut s, &mut reader),
        Some(ReplicationMessage::Welcome { .. })
    ));
    drop(s);
    wait_until("the spy is gone", Duration::from_secs(5), || {
        connected(&r).is_empty()
    });
    let (mut s, mut reader, _) = raw_challenge(r.link);
    s.write_all(&recorded).unwrap();
    let reply = read_msg(&mut s, &mut reader);
    assert!(
        matches!(&reply, Some(ReplicationMessage::Rejected { reason }) if reason.contains("wrong shard secret")),
        "{reply:?}"
    );
    assert!(closed_by_server(&mut s));

    for name in ["unplaced", "archived"] {
        let (mut s, _, reply) = raw_hello(r.link, name, PROTOCOL_VERSION, super::SECRET);
        assert!(
            matches!(&reply, ReplicationMessage::Rejected { reason } if reason.contains("reserved")),
            "{reply:?}"
        );
        assert!(closed_by_server(&mut s));
    }

    // A length prefix of 2 KiB before the handshake: closed without waiting for the bytes.
    let (mut s, _, _) = raw_challenge(r.link);
    s.write_all(&2048u32.to_le_bytes()).unwrap();
    assert!(closed_by_server(&mut s));

    // 200 connections that never say Hello.
    let flood: Vec<TcpStream> = (0..200)
        .map(|_| {
            let s = TcpStream::connect(r.link).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    let cap = 64.0;
    wait_until(
        "connections over the handshake cap refused",
        Duration::from_secs(5),
        || {
            metric(
                &r,
                "sidereal_links_rejected_total{reason=\"handshake_limit\"}",
            ) >= 200.0 - cap
        },
    );
    // A shard still links once the half-open ones time out (5 s without a Hello).
    let _shard = shard_at(r.link, "shard-0", &["--connect-timeout", "30"]);
    wait_until("a real shard links", Duration::from_secs(20), || {
        connected(&r).contains("shard-0")
    });
    assert!(
        metric(
            &r,
            "sidereal_links_rejected_total{reason=\"handshake_timeout\"}"
        ) >= 1.0,
        "the half-open ones timed out"
    );
    drop(flood);
    assert_eq!(
        metric(
            &r,
            "sidereal_links_rejected_total{reason=\"reserved_name\"}"
        ),
        2.0
    );
}
