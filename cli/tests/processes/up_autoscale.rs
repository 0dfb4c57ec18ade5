//! `sidereal up` autoscales with the operator's policy: a root over `--split-entities` for
//! `--split-after` splits into its four children, a shard is started because the children need
//! more than `--sectors-per-shard` allows on one, and every entity is simulated throughout.

use std::collections::BTreeSet;
use std::time::Duration;

use sidereal_core::{EntityKind, SectorId};

use super::{Control, TempDir, start_up_with, token_of, wait_until};

#[test]
fn sidereal_up_splits_a_hot_root_and_starts_a_shard_for_its_children() {
    let data = TempDir::new("up-autoscale");
    // 800 entities in one root: hot against 300; its children (about 200 each) are not.
    let (_up, banner, base, _) = start_up_with(
        &data,
        1,
        800,
        &[
            "--world",
            "s2-x0-y0",
            "--max-shards",
            "3",
            "--split-entities",
            "300",
            "--merge-entities",
            "100",
            "--split-after",
            "1",
            "--cooldown",
            "1",
            "--sectors-per-shard",
            "2",
        ],
    );
    assert!(
        banner[0].starts_with("sidereal is up: 1 shards"),
        "{banner:?}"
    );
    let control = Control::with_token(&base, Some(&token_of(&data)));
    let root: SectorId = "s2-x0-y0".parse().unwrap();
    let children: BTreeSet<SectorId> = root.children().unwrap().into_iter().collect();
    wait_until(
        "split into four children on two linked shards, every entity simulated",
        Duration::from_secs(60),
        || {
            let placement = control.placement();
            let linked = control.connected();
            let leaves: BTreeSet<SectorId> = placement.sectors.keys().copied().collect();
            let owners: BTreeSet<String> =
                placement.sectors.values().map(|s| s.0.clone()).collect();
            leaves == children
                && linked.len() == 2
                && owners.len() == 2
                && owners.is_subset(&linked)
                && control
                    .entities("")
                    .values()
                    .filter(|e| e.kind != EntityKind::Projectile)
                    .filter(|e| !e.in_transit && linked.contains(&e.owner.0))
                    .count()
                    == 800
        },
    );
    // The world is still the one root: splitting changes the leaves, not the world.
    assert_eq!(control.placement().world, Some(vec![root]));
}
