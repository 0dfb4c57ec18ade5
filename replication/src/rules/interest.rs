//! Interest management: which entities each player is sent. A grid over the world's entities,
//! built once per tick, answers "what is within r of this point" by visiting the few cells the
//! circle touches, so the cost per player is what it sees, not the size of the world. Each
//! entity someone sees is quantized for the state codec once per tick, however many see it,
//! and each view is gathered in id order (the codec's order) by sorting (id, index) pairs, so
//! a player's share of the tick is a small sort, a gather and its delta encoding. Pure: plain
//! data in, plain data out.

use std::collections::BTreeMap;

use bevy::platform::collections::HashMap;
use sidereal_core::{EntityId, EntitySnapshot, Point};
use sidereal_game::SeenEntity;
use sidereal_game::codec::{QuantizedEntity, Snapshot};

use crate::mirror::Mirror;

/// A point with its id and its index in the caller's list.
type Indexed = (u64, u32, Point);

/// Points, each with its id and its index in the caller's list, bucketed by square cells of
/// `cell` world units.
#[derive(Debug)]
pub struct SpatialIndex {
    cell: f64,
    cells: HashMap<(i64, i64), Vec<Indexed>>,
}

impl SpatialIndex {
    pub fn build(points: impl IntoIterator<Item = (u64, Point)>, cell: f64) -> Self {
        let cell = cell.max(1.0);
        let mut cells: HashMap<(i64, i64), Vec<Indexed>> = HashMap::default();
        for (i, (id, p)) in points.into_iter().enumerate() {
            cells
                .entry(Self::key(cell, p))
                .or_default()
                .push((id, i as u32, p));
        }
        Self { cell, cells }
    }

    fn key(cell: f64, p: Point) -> (i64, i64) {
        ((p.x / cell).floor() as i64, (p.y / cell).floor() as i64)
    }

    /// The id and index of every point within `radius` of `center` (inclusive), in no
    /// particular order.
    pub fn within(&self, center: Point, radius: f64) -> impl Iterator<Item = (u64, u32)> + '_ {
        let lo = Self::key(self.cell, Point::new(center.x - radius, center.y - radius));
        let hi = Self::key(self.cell, Point::new(center.x + radius, center.y + radius));
        let r2 = radius * radius;
        (lo.0..=hi.0)
            .flat_map(move |x| (lo.1..=hi.1).map(move |y| (x, y)))
            .filter_map(|k| self.cells.get(&k))
            .flatten()
            .filter(move |(_, _, p)| {
                let (dx, dy) = (p.x - center.x, p.y - center.y);
                dx * dx + dy * dy <= r2
            })
            .map(|(id, i, _)| (*id, *i))
    }
}

/// What one player is sent this tick.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayerView {
    /// Its ship as simulated (the pose lightyear replicates to its pilot); `None` while the
    /// ship is not in the world (not adopted yet, or gone), and then it sees nothing.
    pub ship: Option<EntitySnapshot>,
    /// Everything within the radius of its ship, the ship included, quantized at the view's
    /// tick, in id order: the state codec's input.
    pub seen: Snapshot,
}

/// Per connected player (id -> its ship), what it is sent at `tick`: the mirror's entities
/// within `radius` of its ship.
pub fn views(
    mirror: &Mirror,
    players: &BTreeMap<u64, EntityId>,
    radius: f64,
    tick: u64,
) -> Vec<(u64, PlayerView)> {
    views_over(
        mirror.iter().map(|(_, r)| &r.snapshot),
        |id| mirror.get(id).map(|r| r.snapshot),
        players,
        radius,
        tick,
    )
}

/// [`views`] over any set of entities (a gateway's: what its sector streams show), with
/// `find` looking one up by id.
pub fn views_over<'a>(
    entities: impl IntoIterator<Item = &'a EntitySnapshot>,
    find: impl Fn(EntityId) -> Option<EntitySnapshot>,
    players: &BTreeMap<u64, EntityId>,
    radius: f64,
    tick: u64,
) -> Vec<(u64, PlayerView)> {
    if players.is_empty() {
        return Vec::new();
    }
    let all: Vec<&EntitySnapshot> = entities.into_iter().collect();
    let index = SpatialIndex::build(all.iter().map(|e| (e.id.0, e.state.point())), radius);
    // Each entity someone sees, quantized the first time it is seen this tick.
    let mut slot: Vec<u32> = vec![u32::MAX; all.len()];
    let mut quantized: Vec<QuantizedEntity> = Vec::new();
    let mut near: Vec<(u64, u32)> = Vec::new();
    players
        .iter()
        .map(|(player, ship)| {
            let me = find(*ship);
            let mut seen = Vec::new();
            if let Some(me) = &me {
                near.clear();
                near.extend(index.within(me.state.point(), radius));
                // Quantized in the grid's order (the entities' memory order within a cell: in
                // id order their reads would miss the cache), the first time each is seen.
                for &(_, i) in &near {
                    let i = i as usize;
                    if slot[i] == u32::MAX {
                        slot[i] = quantized.len() as u32;
                        quantized.push(QuantizedEntity::quantize(tick, &SeenEntity::from(all[i])));
                    }
                }
                // (id, index) pairs: small to sort, and sorted they are the codec's order.
                near.sort_unstable_by_key(|&(id, _)| id);
                seen.extend(
                    near.iter()
                        .map(|&(_, i)| quantized[slot[i as usize] as usize]),
                );
            }
            let view = PlayerView {
                ship: me,
                seen: Snapshot {
                    tick,
                    entities: seen,
                },
            };
            (*player, view)
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
            let index = SpatialIndex::build(snaps.iter().map(|s| (s.id.0, s.state.point())), cell);
            for (c, r) in [
                ((0.0, 0.0), 300.0),
                ((-1990.0, 1500.0), 120.0),
                ((5.5, -7.25), 0.0),
            ] {
                let center = Point::new(c.0, c.1);
                let mut got: Vec<u64> = index
                    .within(center, r)
                    .map(|(id, i)| {
                        assert_eq!(snaps[i as usize].id.0, id);
                        id
                    })
                    .collect();
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
    fn a_player_sees_what_is_within_its_radius_quantized_once_in_id_order() {
        let mut mirror = Mirror::default();
        let owner = ShardId::new("a");
        let ship = at(5, 100.0, 100.0);
        mirror.insert_new(ship, owner.clone());
        mirror.insert_new(at(9, 150.0, 100.0), owner.clone());
        mirror.insert_new(at(2, 100.0, 300.0), owner.clone());
        mirror.insert_new(at(3, 100.0, 700.0), owner.clone());
        let players = BTreeMap::from([(7, ship.id), (8, EntityId::minted(1, 99))]);
        let v: BTreeMap<u64, PlayerView> =
            views(&mirror, &players, 500.0, 42).into_iter().collect();
        let ids: Vec<u64> = v[&7].seen.entities.iter().map(|e| e.id & 0xff).collect();
        assert_eq!(
            ids,
            vec![2, 5, 9],
            "its ship and what is near, in id order; entity 3 is 600 units away"
        );
        assert_eq!(v[&7].ship, Some(ship));
        assert_eq!(v[&7].seen.tick, 42);
        // The same quantization the codec's own path makes.
        let mine = v[&7].seen.entities[1];
        assert_eq!(
            mine,
            QuantizedEntity::quantize(42, &SeenEntity::from(&ship))
        );
        assert!(
            v[&8].ship.is_none() && v[&8].seen.entities.is_empty(),
            "a player whose ship is not in the world sees nothing"
        );
        assert!(views(&mirror, &BTreeMap::new(), 500.0, 42).is_empty());
    }
}
