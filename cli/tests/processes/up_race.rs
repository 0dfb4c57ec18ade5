//! `sidereal up` against a second placement writer and kill -9s: the supervisor loses
//! optimistic-concurrency races (409s) and must re-read, recompute and retry, never exit; at
//! the end the fleet is whole and every long-lived entity is still there.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sidereal_core::{Placement, SectorId, ShardId, placement};

use super::{Proc, TempDir, free_port, get, pids_matching, put, sidereal, wait_until};

/// The second writer's next placement: split a leaf, merge four siblings, or move a leaf,
/// onto shards it believes are linked (it may be wrong: one may have just died).
fn next_placement(current: &Placement, shards: &[ShardId], step: u32) -> Option<Placement> {
    let leaves: Vec<SectorId> = current.sectors.keys().copied().collect();
    if leaves.is_empty() || shards.is_empty() {
        return None;
    }
    let pick = |i: u32| shards[i as usize % shards.len()].clone();
    let leaf = leaves[step as usize % leaves.len()];
    match step % 3 {
        0 if leaf.scale > 0 && leaves.len() < 24 => placement::split(
            current,
            leaf,
            [pick(step), pick(step + 1), pick(step + 2), pick(step + 3)],
        )
        .ok(),
        1 => {
            // Merge the first complete family of four siblings, if any.
            let parent = leaves.iter().filter_map(|l| l.parent()).find(|p| {
                p.children()
                    .is_some_and(|c| c.iter().all(|c| current.sectors.contains_key(c)))
            })?;
            placement::merge(current, parent, pick(step)).ok()
        }
        _ => {
            let mut next = current.clone();
            next.sectors.insert(leaf, pick(step + 1));
            Some(next)
        }
    }
}

fn long_lived(entities: &Value) -> Vec<Value> {
    entities["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] != "Projectile")
        .cloned()
        .collect()
}

#[test]
fn sidereal_up_survives_kills_and_a_concurrent_placement_writer() {
    const ENTITIES: usize = 600;
    let data = TempDir::new("up-race");
    let (http, link, metrics) = (free_port(), free_port(), free_port());
    let mut child = sidereal()
        .args(["up", "--shards", "3", "--entities", &ENTITIES.to_string()])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--link", &format!("127.0.0.1:{link}")])
        .args(["--metrics-base-port", &metrics.to_string()])
        .arg("--data")
        .arg(&data.0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sidereal up");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut up = Proc(child);
    let banner = out.next().expect("a banner").unwrap();
    assert!(banner.starts_with("sidereal is up: 3 shards"), "{banner}");
    std::thread::spawn(move || for _ in out {});
    let base = format!("http://127.0.0.1:{http}");

    // The second writer: reads, computes, writes as fast as it can; counts its own 409s.
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, conflicts) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let writer = {
        let (stop, writes, conflicts, base) = (
            stop.clone(),
            writes.clone(),
            conflicts.clone(),
            base.clone(),
        );
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut step = 0u32;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                step += 1;
                let current: Placement =
                    serde_json::from_value(get(&format!("{base}/v1/placement"))).unwrap();
                let shards: Vec<ShardId> = get(&format!("{base}/v1/shards"))["shards"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| s["connected"] == true)
                    .map(|s| ShardId::new(s["shard"].as_str().unwrap()))
                    .collect();
                let Some(mut next) = next_placement(&current, &shards, step) else {
                    continue;
                };
                next.generation = current.generation + 1;
                match put(
                    &format!("{base}/v1/placement"),
                    &serde_json::to_value(&next).unwrap(),
                )
                .0
                {
                    200 => writes.fetch_add(1, Ordering::SeqCst),
                    409 => conflicts.fetch_add(1, Ordering::SeqCst),
                    // 422: a shard it chose is unknown to replication; its view was stale.
                    _ => 0,
                };
            }
        })
    };

    // Kill a shard each time the writer has made a few more writes.
    let mut rng_step = 0usize;
    for round in 1..=4u32 {
        wait_until("the writer progresses", Duration::from_secs(30), || {
            writes.load(Ordering::SeqCst) >= round * 6
        });
        assert!(
            up.0.try_wait().unwrap().is_none(),
            "sidereal up exited during the race"
        );
        rng_step += 1;
        let victim = format!(
            "shard --id shard-{} --replication 127.0.0.1:{link}",
            rng_step % 3
        );
        if let Some(pid) = pids_matching(&victim).first() {
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    eprintln!(
        "second writer: {} placements applied, {} conflicts",
        writes.load(Ordering::SeqCst),
        conflicts.load(Ordering::SeqCst)
    );

    // The supervisor is still there and converges: three linked shards, every leaf on one of
    // them, nothing in transit, every ship and asteroid conserved.
    let settled = || {
        let shards: BTreeSet<String> = get(&format!("{base}/v1/shards"))["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["connected"] == true)
            .map(|s| s["shard"].as_str().unwrap().to_owned())
            .collect();
        let p: Placement = serde_json::from_value(get(&format!("{base}/v1/placement"))).unwrap();
        let all = get(&format!("{base}/v1/entities"));
        let lived = long_lived(&all);
        shards.len() == 3
            && p.sectors.values().all(|s| shards.contains(&s.0))
            && lived.len() == ENTITIES
            && lived
                .iter()
                .all(|e| e["inTransit"] == false && shards.contains(e["owner"].as_str().unwrap()))
    };
    wait_until(
        "a whole fleet: 3 linked shards own every leaf and entity",
        Duration::from_secs(60),
        settled,
    );
    assert!(
        up.0.try_wait().unwrap().is_none(),
        "sidereal up must survive the race"
    );
    let ids: BTreeSet<u64> = long_lived(&get(&format!("{base}/v1/entities")))
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        ENTITIES,
        "no long-lived entity lost or duplicated"
    );

    // kill -9 of the supervisor takes its whole fleet with it: nothing left holding the ports.
    let fleet = format!("127.0.0.1:{link}");
    assert_eq!(
        pids_matching(&fleet).len(),
        5,
        "up, replication and 3 shards"
    );
    Command::new("kill")
        .args(["-9", &up.0.id().to_string()])
        .status()
        .unwrap();
    up.0.wait().unwrap();
    wait_until(
        "no process of the fleet outlives sidereal up",
        Duration::from_secs(10),
        || pids_matching(&fleet).is_empty(),
    );
}
