//! Interest management: which entities each player is sent. A grid over the mirror, built
//! once per tick, answers "what is within r of this point" by visiting the few cells the circle
//! touches, so the cost per player is what it sees, not the size of the world. Pure: plain data
//! in, plain data out.

use std::collections::BTreeMap;

use bevy::platform::collections::HashMap;
use sidereal_core::{EntityId, EntitySnapshot, Point};

use crate::mirror::Mirror;

/// Entities (borrowed from the mirror) bucketed by square cells of `cell` world units.
#[derive(Debug)]
pub struct SpatialIndex<'a> {
    cell: f64,
    cells: HashMap<(i64, i64), Vec<&'a EntitySnapshot>>,
}

impl<'a> SpatialIndex<'a> {
    pub fn build(snapshots: impl IntoIterator<Item = &'a EntitySnapshot>, cell: f64) -> Self {
        let cell = cell.max(1.0);
        let mut cells: HashMap<(i64, i64), Vec<&'a EntitySnapshot>> = HashMap::default();
        for s in snapshots {
            let p = s.state.point();
            cells.entry(Self::key(cell, p)).or_default().push(s);
        }
        Self { cell, cells }
    }

    fn key(cell: f64, p: Point) -> (i64, i64) {
        ((p.x / cell).floor() as i64, (p.y / cell).floor() as i64)
    }

    /// Every entity within `radius` of `center` (inclusive), in no particular order.
    pub fn within(&self, center: Point, radius: f64) -> impl Iterator<Item = &'a EntitySnapshot> {
        let lo = Self::key(self.cell, Point::new(center.x - radius, center.y - radius));
        let hi = Self::key(self.cell, Point::new(center.x + radius, center.y + radius));
        let r2 = radius * radius;
        (lo.0..=hi.0)
            .flat_map(move |x| (lo.1..=hi.1).map(move |y| (x, y)))
            .filter_map(|k| self.cells.get(&k))
            .flatten()
            .copied()
            .filter(move |s| {
                let p = s.state.point();
                let (dx, dy) = (p.x - center.x, p.y - center.y);
                dx * dx + dy * dy <= r2
            })
    }
}

/// Per connected player (id -> its ship), what it is sent this tick: the entities of the world
/// within `radius` of its ship, the ship first. A player whose ship is not in the world (not
/// adopted yet, or gone) sees nothing this tick.
pub fn views(
    mirror: &Mirror,
    players: &BTreeMap<u64, EntityId>,
    radius: f64,
) -> BTreeMap<u64, Vec<EntitySnapshot>> {
    views_over(
        mirror.iter().map(|(_, r)| &r.snapshot),
        |id| mirror.get(id).map(|r| &r.snapshot),
        players,
        radius,
    )
}

/// [`views`] over any set of entities (a gateway's: what its sector streams show), with
/// `find` looking one up by id.
pub fn views_over<'a>(
    entities: impl IntoIterator<Item = &'a EntitySnapshot>,
    find: impl Fn(EntityId) -> Option<&'a EntitySnapshot>,
    players: &BTreeMap<u64, EntityId>,
    radius: f64,
) -> BTreeMap<u64, Vec<EntitySnapshot>> {
    if players.is_empty() {
        return BTreeMap::new();
    }
    let index = SpatialIndex::build(entities, radius);
    players
        .iter()
        .map(|(player, ship)| {
            let seen = match find(*ship) {
                Some(me) => {
                    let mut v = vec![*me];
                    v.extend(
                        index
                            .within(me.state.point(), radius)
                            .filter(|s| s.id != *ship),
                    );
                    v
                }
                None => Vec::new(),
            };
            (*player, seen)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use sidereal_core::ShardId;

    use super::*;
    use crate::test_support::asteroid_at;

    fn at(n: u64, x: f32, y: f32) -> EntitySnapshot {
        asteroid_at(EntityId::minted(1, n), x, y)
    }

    #[test]
    fn the_index_finds_exactly_what_a_scan_finds() {
        let snaps: Vec<EntitySnapshot> = (0..2000u64)
            .map(|i| {
                let x = ((i * 7919) % 4000) as f32 - 2000.0;
                let y = ((i * 104_729) % 4000) as f32 - 2000.0;
                at(i, x, y)
            })
            .collect();
        for cell in [50.0, 300.0, 1000.0] {
            let index = SpatialIndex::build(&snaps, cell);
            for (c, r) in [
                ((0.0, 0.0), 300.0),
                ((-1990.0, 1500.0), 120.0),
                ((5.5, -7.25), 0.0),
            ] {
                let center = Point::new(c.0, c.1);
                let mut got: Vec<u64> = index.within(center, r).map(|s| s.id.0).collect();
                let mut want: Vec<u64> = snaps
                    .iter()
                    .filter(|s| {
                        let p = s.state.point();
                        (p.x - center.x).powi(2) + (p.y - center.y).powi(2) <= r * r
                    })
                    .map(|s| s.id.0)
                    .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want, "cell {cell}, center {c:?}, radius {r}");
            }
        }
    }

    #[test]
    fn a_player_sees_its_ship_first_and_nothing_beyond_its_radius() {
        let mut mirror = Mirror::default();
        let owner = ShardId::new("a");
        let ship = at(1, 100.0, 100.0);
        mirror.insert_new(ship, owner.clone());
        mirror.insert_new(at(2, 150.0, 100.0), owner.clone());
        mirror.insert_new(at(3, 100.0, 700.0), owner.clone());
        let players = BTreeMap::from([(7, ship.id), (8, EntityId::minted(1, 99))]);
        let v = views(&mirror, &players, 500.0);
        let ids: Vec<u64> = v[&7].iter().map(|s| s.id.0 & 0xff).collect();
        assert_eq!(
            ids,
            vec![1, 2],
            "its ship first; entity 3 is 600 units away"
        );
        assert!(
            v[&8].is_empty(),
            "a player whose ship is not in the world sees nothing"
        );
        assert!(views(&mirror, &BTreeMap::new(), 500.0).is_empty());
    }
}
