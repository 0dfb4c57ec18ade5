//! Policy tables: each case is a trace of load reports over time and the transitions the
//! policy must (and must not) make. Microseconds each; no cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sidereal_core::{SectorId, ShardId};

use super::history::LoadHistory;
use super::placement::{assign, moved};
use super::pods::{PodPlan, PodState, desired_shards, plan_pods};
use super::transitions::{Transition, decide};
use super::{Capacity, LeafLoad, PoolPolicy};

fn id(s: &str) -> SectorId {
    s.parse().unwrap()
}

const HOT: LeafLoad = LeafLoad {
    entities: 9_000,
    players: 0,
    tick_p99_ms: 5.0,
};
const WARM: LeafLoad = LeafLoad {
    entities: 2_000,
    players: 10,
    tick_p99_ms: 5.0,
};
const COLD: LeafLoad = LeafLoad {
    entities: 10,
    players: 0,
    tick_p99_ms: 1.0,
};

/// A world simulated by the policy alone: reports come from `load_of(t, leaf)` (None: the
/// shard did not report), transitions are applied at once. Returns (second, transition).
fn run(
    roots: &[&str],
    start_leaves: &[&str],
    policy: &PoolPolicy,
    seconds: u64,
    step: u64,
    load_of: impl Fn(u64, SectorId) -> Option<LeafLoad>,
) -> (Vec<(u64, Transition)>, BTreeSet<SectorId>) {
    let roots: Vec<SectorId> = roots.iter().map(|r| id(r)).collect();
    let mut leaves: BTreeSet<SectorId> = start_leaves.iter().map(|l| id(l)).collect();
    let t0 = Instant::now();
    let mut history = LoadHistory::default();
    let mut events = Vec::new();
    let mut t = 0;
    while t <= seconds {
        let now = t0 + Duration::from_secs(t);
        let reports: BTreeMap<SectorId, LeafLoad> = leaves
            .iter()
            .filter_map(|l| load_of(t, *l).map(|load| (*l, load)))
            .collect();
        history.observe(&leaves, &reports, policy, now);
        for tr in decide(&roots, &leaves, policy, &history, 0, now) {
            match tr {
                Transition::Split { sector, children } => {
                    leaves.remove(&sector);
                    leaves.extend(children);
                }
                Transition::Merge { parent, children } => {
                    for c in children {
                        leaves.remove(&c);
                    }
                    leaves.insert(parent);
                }
            }
            history.record_change(tr.sectors(), now);
            events.push((t, tr));
        }
        t += step;
    }
    (events, leaves)
}

fn splits(events: &[(u64, Transition)]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|(t, tr)| match tr {
            Transition::Split { sector, .. } => Some((*t, sector.to_string())),
            Transition::Merge { .. } => None,
        })
        .collect()
}

fn merges(events: &[(u64, Transition)]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|(t, tr)| match tr {
            Transition::Merge { parent, .. } => Some((*t, parent.to_string())),
            Transition::Split { .. } => None,
        })
        .collect()
}

#[test]
fn transition_traces() {
    let policy = PoolPolicy::default(); // split sustain 30 s, merge 120 s, cooldown 120 s
    struct Case {
        name: &'static str,
        load: Box<dyn Fn(u64, SectorId) -> Option<LeafLoad>>,
        seconds: u64,
        splits: Vec<(u64, &'static str)>,
        merges: Vec<(u64, &'static str)>,
    }
    let cases = vec![
        Case {
            name: "load between the thresholds: nothing happens",
            load: Box::new(|_, _| Some(WARM)),
            seconds: 600,
            splits: vec![],
            merges: vec![],
        },
        Case {
            name: "hot for the whole window: splits when the window ends",
            load: Box::new(|_, l| Some(if l.scale == 2 { HOT } else { WARM })),
            seconds: 200,
            splits: vec![(30, "s2-x0-y0")],
            merges: vec![],
        },
        Case {
            name: "a spike shorter than the window: no split",
            load: Box::new(|t, _| Some(if (10..35).contains(&t) { HOT } else { WARM })),
            seconds: 300,
            splits: vec![],
            merges: vec![],
        },
        Case {
            name: "oscillating load (hot 20 s, cold 20 s): never splits, never merges",
            load: Box::new(|t, _| Some(if (t / 20) % 2 == 0 { HOT } else { COLD })),
            seconds: 1200,
            splits: vec![],
            merges: vec![],
        },
        Case {
            name: "a shard that stops reporting breaks the streak: no split on stale data",
            load: Box::new(|t, _| {
                if (20..80).contains(&t) {
                    None
                } else if t < 100 {
                    Some(HOT)
                } else {
                    Some(WARM)
                }
            }),
            seconds: 300,
            splits: vec![],
            merges: vec![],
        },
        Case {
            name: "one hot corner: splits again after the cooldown, down to the lowest scale",
            load: Box::new(|_, l| Some(if l.x == 0 && l.y == 0 { HOT } else { WARM })),
            seconds: 900,
            // s2 splits at 30; s1-x0-y0 is born at 30, cooled down at 150; s0 never splits.
            splits: vec![(30, "s2-x0-y0"), (150, "s1-x0-y0")],
            merges: vec![],
        },
    ];
    for c in cases {
        let (events, _) = run(&["s2-x0-y0"], &["s2-x0-y0"], &policy, c.seconds, 5, &c.load);
        let want_splits: Vec<(u64, String)> =
            c.splits.iter().map(|(t, s)| (*t, s.to_string())).collect();
        let want_merges: Vec<(u64, String)> =
            c.merges.iter().map(|(t, s)| (*t, s.to_string())).collect();
        assert_eq!(splits(&events), want_splits, "{}", c.name);
        assert_eq!(merges(&events), want_merges, "{}", c.name);
    }
}

#[test]
fn everything_cold_merges_back_up_to_the_root_and_never_above_it() {
    let policy = PoolPolicy::default();
    let start: Vec<String> = id("s2-x0-y0")
        .children()
        .unwrap()
        .iter()
        .flat_map(|c| c.children().unwrap())
        .map(|l| l.to_string())
        .collect();
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    let (events, leaves) = run(&["s2-x0-y0"], &start, &policy, 1200, 5, |_, _| Some(COLD));
    let m = merges(&events);
    // Four scale-1 families merge, two at a time (the cap), each after 120 s cold...
    assert_eq!(m.len(), 5, "{m:?}");
    assert!(m[..4].iter().all(|(_, p)| p.starts_with("s1-")), "{m:?}");
    assert_eq!(m.iter().filter(|(t, _)| *t == 120).count(), 2, "{m:?}");
    // ...then the root's children, once every one of them is out of its cooldown and the
    // family has been cold for the window since.
    let (t_root, root) = &m[4];
    assert_eq!(root, "s2-x0-y0");
    assert!(*t_root >= m[3].0 + 120, "{m:?}");
    assert_eq!(leaves, BTreeSet::from([id("s2-x0-y0")]));
}

#[test]
fn a_freshly_split_family_does_not_merge_back_within_the_cooldown() {
    let policy = PoolPolicy {
        merge: super::Thresholds {
            sustain: Duration::from_secs(10),
            ..PoolPolicy::default().merge
        },
        ..PoolPolicy::default()
    };
    // Hot until the split, cold right after.
    let (events, _) = run(&["s2-x0-y0"], &["s2-x0-y0"], &policy, 400, 5, |t, _| {
        Some(if t <= 30 { HOT } else { COLD })
    });
    assert_eq!(splits(&events), vec![(30, "s2-x0-y0".to_owned())]);
    let m = merges(&events);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].0 >= 30 + 120, "merged back within the cooldown: {m:?}");
}

#[test]
fn the_cap_bounds_transitions_in_flight() {
    let policy = PoolPolicy::default();
    let roots: Vec<SectorId> = (0..5).map(|x| SectorId::new(1, x, 0).unwrap()).collect();
    let leaves: BTreeSet<SectorId> = roots.iter().copied().collect();
    let mut history = LoadHistory::default();
    let t0 = Instant::now();
    for s in (0..=40).step_by(5) {
        let reports = leaves.iter().map(|l| (*l, HOT)).collect();
        history.observe(&leaves, &reports, &policy, t0 + Duration::from_secs(s));
    }
    let now = t0 + Duration::from_secs(40);
    assert_eq!(decide(&roots, &leaves, &policy, &history, 0, now).len(), 2);
    assert_eq!(decide(&roots, &leaves, &policy, &history, 1, now).len(), 1);
    assert!(decide(&roots, &leaves, &policy, &history, 2, now).is_empty());
    // Below the lowest scale nothing splits, however hot.
    let floor = PoolPolicy {
        min_scale: 1,
        ..policy
    };
    assert!(decide(&roots, &leaves, &floor, &history, 0, now).is_empty());
}

fn shards(names: &[&str]) -> Vec<ShardId> {
    names.iter().map(|n| ShardId::new(*n)).collect()
}

#[test]
fn placement_moves_as_few_leaves_as_possible() {
    let cap = Capacity {
        sectors: 4,
        entities: 10_000,
    };
    let leaves: BTreeMap<SectorId, u64> = (0..6)
        .map(|x| (SectorId::new(0, x, 0).unwrap(), 1_000))
        .collect();
    let s = shards(&["a", "b", "c"]);
    let current: BTreeMap<SectorId, ShardId> = leaves
        .keys()
        .enumerate()
        .map(|(i, l)| (*l, s[i % 2].clone()))
        .collect();
    // Nothing wrong: nothing moves, even though shard c is empty.
    let same = assign(&leaves, &current, &s, cap);
    assert_eq!(same, current);
    // Shard b is gone: only its three leaves move, to the shards with most room.
    let after = assign(&leaves, &current, &shards(&["a", "c"]), cap);
    assert_eq!(moved(&current, &after), 3);
    assert_eq!(after.values().filter(|s| s.0 == "c").count(), 3);
    assert!(after.values().all(|s| s.0 != "b"));
}

#[test]
fn placement_sheds_only_what_is_over_capacity_and_spreads_new_leaves() {
    let cap = Capacity {
        sectors: 8,
        entities: 10_000,
    };
    let s = shards(&["a", "b"]);
    // a holds 12k entities in 4 leaves: the smallest leaves go until it fits.
    let leaves: BTreeMap<SectorId, u64> = [(0, 6_000), (1, 3_000), (2, 2_000), (3, 1_000)]
        .into_iter()
        .map(|(x, e)| (SectorId::new(0, x, 0).unwrap(), e))
        .collect();
    let current = leaves.keys().map(|l| (*l, s[0].clone())).collect();
    let after = assign(&leaves, &current, &s, cap);
    assert_eq!(moved(&current, &after), 1, "{after:?}");
    assert_eq!(after[&SectorId::new(0, 2, 0).unwrap()].0, "b", "{after:?}");

    // A split's four children, 2.5k each, onto two empty shards: two each.
    let children: BTreeMap<SectorId, u64> = id("s1-x0-y0")
        .children()
        .unwrap()
        .into_iter()
        .map(|c| (c, 2_500))
        .collect();
    let placed = assign(&children, &BTreeMap::new(), &s, cap);
    assert_eq!(placed.values().filter(|s| s.0 == "a").count(), 2);
    assert_eq!(placed.values().filter(|s| s.0 == "b").count(), 2);
    // Deterministic, and every leaf placed even when nothing fits (over capacity beats
    // unsimulated); with no shard at all, nothing is placed.
    assert_eq!(assign(&children, &BTreeMap::new(), &s, cap), placed);
    let tiny = Capacity {
        sectors: 1,
        entities: 1,
    };
    assert_eq!(assign(&children, &BTreeMap::new(), &s, tiny).len(), 4);
    assert!(assign(&children, &BTreeMap::new(), &[], cap).is_empty());
}

#[test]
fn pod_count_covers_sectors_and_entities_plus_spares_within_bounds() {
    let p = PoolPolicy::default(); // 16 sectors, 20k entities per shard; 1 spare; 1..=8
    let table = [
        // (leaves, entities, desired)
        (0, 0, 1),
        (1, 100, 2),
        (16, 100, 2),
        (17, 100, 3),
        (4, 45_000, 4),
        (400, 1_000_000, 8),
    ];
    for (leaves, entities, want) in table {
        assert_eq!(
            desired_shards(leaves, entities, &p),
            want,
            "{leaves} leaves, {entities} entities"
        );
    }
}

#[test]
fn the_pod_plan_replaces_ended_pods_creates_missing_ones_and_drains_the_cheapest() {
    let p = PoolPolicy::default(); // 1..=8 shards, idle retire 300 s
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(1000);
    let pod = |name: &str, sectors, idle: Option<u64>, connected| PodState {
        shard: ShardId::new(name),
        sectors,
        idle_since: idle.map(|s| t0 + Duration::from_secs(s)),
        connected,
        ended: false,
        outdated: false,
    };
    // Too few: create the difference; an ended pod is replaced (deleted, and counted missing).
    let mut dead = pod("dead", 3, None, false);
    dead.ended = true;
    let few = [pod("a", 2, None, true), dead];
    let plan = plan_pods(&few, Some(3), &p, now);
    assert_eq!((plan.create, plan.replace.clone()), (2, shards(&["dead"])));
    assert!(plan.drain.is_empty() && plan.retire.is_empty());
    // Never beyond the pool's max.
    assert_eq!(plan_pods(&[], Some(50), &p, now).create, 8);
    // Never below its min, even when nothing is needed.
    assert_eq!(plan_pods(&[], Some(0), &p, now).create, 1);

    // Too many: the surplus drains, never-linked pods first, then the least loaded.
    let many = [
        pod("busy", 5, None, true),
        pod("light", 1, None, true),
        pod("idle-long", 0, Some(100), true),
        pod("idle-short", 0, Some(900), true),
        pod("pending", 0, Some(950), false),
    ];
    let plan = plan_pods(&many, Some(2), &p, now);
    assert_eq!(plan.create, 0);
    assert_eq!(plan.drain, shards(&["pending", "idle-long", "idle-short"]));
    // Only those idle past the retire time go now.
    assert_eq!(plan.retire, shards(&["idle-long"]));
    let plan = plan_pods(&many, Some(1), &p, now);
    assert_eq!(
        plan.drain,
        shards(&["pending", "idle-long", "idle-short", "light"])
    );
    assert_eq!(
        plan.retire,
        shards(&["idle-long"]),
        "light still owns a sector"
    );
    // Later, everything drained and idle retires, and the busy pod stays.
    let later = t0 + Duration::from_secs(5000);
    let plan = plan_pods(&many, Some(1), &p, later);
    assert_eq!(plan.retire, shards(&["pending", "idle-long", "idle-short"]));
    assert!(plan_pods(&many, Some(5), &p, later).drain.is_empty());
    // Leaves not known yet (a new leader before its first sync): nothing drains or retires.
    let blind = plan_pods(&many, None, &p, later);
    assert!(
        blind.drain.is_empty() && blind.retire.is_empty(),
        "{blind:?}"
    );
    assert_eq!(
        plan_pods(&[], None, &p, later).create,
        1,
        "the minimum is kept"
    );
}

#[test]
fn a_pod_that_owns_sectors_is_never_retired() {
    let p = PoolPolicy {
        min_shards: 0,
        ..PoolPolicy::default()
    };
    let t0 = Instant::now();
    let owning: Vec<PodState> = (0..4)
        .map(|i| PodState {
            shard: ShardId::new(format!("p{i}")),
            sectors: i + 1,
            idle_since: Some(t0),
            connected: true,
            ended: false,
            outdated: false,
        })
        .collect();
    let plan = plan_pods(&owning, Some(0), &p, t0 + Duration::from_secs(1_000_000));
    assert_eq!(plan.drain.len(), 4);
    assert!(plan.retire.is_empty());
}

/// A template change rolls the pool one pod at a time: a pod of the new template is started
/// beside the old ones; once it has linked, one outdated pod drains (its sectors move to the
/// others by placement, with no loss) and goes as soon as it owns nothing; then the next.
#[test]
fn an_outdated_pool_rolls_one_pod_at_a_time_onto_linked_new_pods() {
    let p = PoolPolicy::default();
    let now = Instant::now();
    let pod = |name: &str, sectors, connected, outdated| PodState {
        shard: ShardId::new(name),
        sectors,
        idle_since: (sectors == 0).then_some(now),
        connected,
        ended: false,
        outdated,
    };
    // Two old pods, two wanted: one new pod beside them, nothing drained yet.
    let start = [pod("old-a", 3, true, true), pod("old-b", 1, true, true)];
    let plan = plan_pods(&start, Some(2), &p, now);
    assert_eq!((plan.create, plan.drain.len()), (1, 0));
    // The new pod is still linking: no second one, nothing drains.
    let linking = [
        start[0].clone(),
        start[1].clone(),
        pod("new-1", 0, false, false),
    ];
    let plan = plan_pods(&linking, Some(2), &p, now);
    assert_eq!((plan.create, plan.drain.len()), (0, 0));
    // Linked: the cheapest outdated pod drains, nothing more starts.
    let up = [
        start[0].clone(),
        start[1].clone(),
        pod("new-1", 0, true, false),
    ];
    let plan = plan_pods(&up, Some(2), &p, now);
    assert_eq!((plan.create, plan.drain.clone()), (0, shards(&["old-b"])));
    assert!(plan.retire.is_empty(), "it still owns a sector");
    // Drained (owns nothing): it goes at once, without the idle wait.
    let drained = [
        start[0].clone(),
        pod("old-b", 0, true, true),
        pod("new-1", 1, true, false),
    ];
    let plan = plan_pods(&drained, Some(2), &p, now);
    assert_eq!(plan.retire, shards(&["old-b"]));
    // Then the next: one more new pod for the last outdated one.
    let next = [start[0].clone(), pod("new-1", 1, true, false)];
    let plan = plan_pods(&next, Some(2), &p, now);
    assert_eq!((plan.create, plan.drain.len()), (1, 0));
    // All new: nothing to do.
    let done = [pod("new-1", 2, true, false), pod("new-2", 2, true, false)];
    assert_eq!(plan_pods(&done, Some(2), &p, now), PodPlan::default());
}
