//! `sidereal up` against a second placement writer and kill -9s: the supervisor loses
//! optimistic-concurrency races (409s) and must re-read, recompute and retry, never exit; at
//! the end the fleet is whole and every long-lived entity is still there.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sidereal_core::control::EntityView;
use sidereal_core::{ControlError, EntityKind, Placement, SectorId, ShardId, placement};

use super::{Control, TempDir, metric_at, pids_matching, token_of, wait_until};

/// The second writer's next placement: split a leaf, merge four siblings, or move a leaf,
/// onto the given shards.
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

fn long_lived(control: &Control) -> Vec<EntityView> {
    control
        .entities("")
        .into_values()
        .filter(|e| e.kind != EntityKind::Projectile)
        .collect()
}

#[test]
fn sidereal_up_survives_kills_and_a_concurrent_placement_writer() {
    const ENTITIES: usize = 600;
    let data = TempDir::new("up-race");
    let (mut up, banner, base, link) = super::start_up(&data, 3, ENTITIES);
    assert!(
        banner[0].starts_with("sidereal is up: 3 shards"),
        "{banner:?}"
    );
    let control = Control::with_token(&base, Some(&token_of(&data)));

    // The second writer, like an operator script: reads, computes, writes as fast as it can,
    // onto any of the fleet's shards whether linked or not (a dead one's leaves are then the
    // supervisor's to move, against this writer); counts its own 409s.
    let fleet: Vec<ShardId> = (0..3).map(|i| ShardId::new(format!("shard-{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, conflicts) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let writer = {
        let (stop, writes, conflicts) = (stop.clone(), writes.clone(), conflicts.clone());
        let token = token_of(&data);
        let base = base.clone();
        std::thread::spawn(move || {
            let control = Control::with_token(&base, Some(&token));
            let deadline = Instant::now() + Duration::from_secs(180);
            let mut step = 0u32;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                step += 1;
                let current = control.placement();
                let Some(mut next) = next_placement(&current, &fleet, step) else {
                    continue;
                };
                next.generation = current.generation + 1;
                match control.put_placement(&next) {
                    Ok(_) => writes.fetch_add(1, Ordering::SeqCst),
                    Err(ControlError::Conflict(_)) => conflicts.fetch_add(1, Ordering::SeqCst),
                    // Its view was stale (a shard it chose is unknown), or the write was not
                    // yet durable: the next round reads again.
                    Err(ControlError::Invalid(_) | ControlError::Unavailable(_)) => 0,
                    Err(e) => panic!("second writer: {e}"),
                };
            }
        })
    };

    // Kill shards, one after another, while the writer hammers the placement, until the
    // supervisor has lost placement races of its own: replication counts every 409, the writer
    // counts its own, and it has at most one write in flight, so an excess of two or more
    // means the supervisor lost at least one. Each round waits for the supervisor to restart
    // the victim and for every leaf to be on a linked shard again.
    let supervisor_conflicts = || {
        let writers = f64::from(conflicts.load(Ordering::SeqCst));
        metric_at(&base, "sidereal_placement_conflicts_total") - writers
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0usize;
    while kills < 4 || supervisor_conflicts() < 2.0 {
        assert!(
            Instant::now() < deadline,
            "after {kills} kills the supervisor has still not met a conflicting writer"
        );
        let victim = format!(
            "shard --id shard-{} --replication 127.0.0.1:{link}",
            kills % 3
        );
        let Some(&pid) = pids_matching(&victim).first() else {
            continue;
        };
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        kills += 1;
        eprintln!(
            "kill {kills}: writer {} writes {} conflicts; replication counted {} conflicts",
            writes.load(Ordering::SeqCst),
            conflicts.load(Ordering::SeqCst),
            metric_at(&base, "sidereal_placement_conflicts_total")
        );
        wait_until(
            "the victim restarted, linked, and its leaves re-homed",
            Duration::from_secs(30),
            || {
                let linked = control.connected();
                pids_matching(&victim).first().is_some_and(|p| *p != pid)
                    && linked.len() == 3
                    && control
                        .placement()
                        .sectors
                        .values()
                        .all(|s| linked.contains(&s.0))
            },
        );
        assert!(
            up.0.try_wait().unwrap().is_none(),
            "sidereal up exited during the race"
        );
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    eprintln!(
        "{kills} kills; second writer: {} placements applied, {} conflicts; supervisor: {} conflicts",
        writes.load(Ordering::SeqCst),
        conflicts.load(Ordering::SeqCst),
        supervisor_conflicts()
    );

    // The supervisor is still there and converges: three linked shards, every leaf on one of
    // them, nothing in transit, every ship and asteroid conserved.
    let settled = || {
        let shards: BTreeSet<String> = control.connected();
        let p = control.placement();
        let lived = long_lived(&control);
        shards.len() == 3
            && p.sectors.values().all(|s| shards.contains(&s.0))
            && lived.len() == ENTITIES
            && lived
                .iter()
                .all(|e| !e.in_transit && shards.contains(&e.owner.0))
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
    let ids: BTreeSet<u64> = long_lived(&control).iter().map(|e| e.id.0).collect();
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
