//! The live sector map: a page replication serves itself (`/map`: one HTML file, no build step,
//! nothing from elsewhere) drawing the sector quadtree, which shard owns each leaf, load as a
//! heat map and a sample of the moving entities, from frames streamed as server-sent events
//! (`/v1/map/events`, four a second). A frame is built at most once per interval however many
//! pages watch, and carries at most [`MAX_MAP_ENTITIES`] entities, so it stays cheap with 100k.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sidereal_core::load::ShardLoadReport;
use sidereal_core::{EntityKind, Placement, ShardId};

/// Entities in one frame at most: a stride sample of the mirror.
pub const MAX_MAP_ENTITIES: usize = 3000;
/// How often pages get a frame.
pub const MAP_INTERVAL: Duration = Duration::from_millis(250);

/// The page, served as is.
pub const MAP_PAGE: &str = include_str!("map.html");

/// One frame of the map.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MapFrame {
    /// Placement generation: it changes on every split, merge and move.
    pub generation: u64,
    pub leaves: Vec<MapLeaf>,
    /// Shards owning leaves, sorted (a leaf's colour is its shard's index here).
    pub shards: Vec<String>,
    /// `[x, y, kind]` of the sampled entities, positions rounded to whole world units (a map
    /// needs no finer, and the frame stays small); kind as `EntityKind`: 0 ship, 1 asteroid,
    /// 2 projectile.
    pub entities: Vec<[i32; 3]>,
    /// Entities in the mirror, sampled or not.
    pub total_entities: usize,
}

/// A leaf sector: where it is, who simulates it, how loaded it is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MapLeaf {
    pub name: String,
    /// Lower-left corner and edge, in world units.
    pub x: f64,
    pub y: f64,
    pub edge: f64,
    pub shard: String,
    pub entities: u32,
    pub players: u32,
}

/// A frame from the placement, the shards' load reports and the mirror's entities (`total` of
/// them in all): every leaf, and every `ceil(total / max)`-th entity.
pub fn frame<'a>(
    placement: &Placement,
    load: &BTreeMap<ShardId, ShardLoadReport>,
    entities: impl Iterator<Item = (EntityKind, [f32; 2])> + 'a,
    total: usize,
    max: usize,
) -> MapFrame {
    let counts: BTreeMap<_, _> = load
        .values()
        .flat_map(|r| {
            r.sectors
                .iter()
                .map(|c| (c.sector, (c.entities, c.players)))
        })
        .collect();
    let leaves: Vec<MapLeaf> = placement
        .sectors
        .iter()
        .map(|(sector, shard)| {
            let b = sector.bounds();
            let (entities, players) = counts.get(sector).copied().unwrap_or_default();
            MapLeaf {
                name: sector.name(),
                x: b.min.x,
                y: b.min.y,
                edge: b.edge(),
                shard: shard.0.clone(),
                entities,
                players,
            }
        })
        .collect();
    let mut shards: Vec<String> = leaves.iter().map(|l| l.shard.clone()).collect();
    shards.sort();
    shards.dedup();
    let step = total.div_ceil(max.max(1)).max(1);
    let entities = entities
        .step_by(step)
        .take(max)
        .map(|(kind, p)| {
            [
                p[0].round() as i32,
                p[1].round() as i32,
                i32::from(kind as u8),
            ]
        })
        .collect();
    MapFrame {
        generation: placement.generation,
        leaves,
        shards,
        entities,
        total_entities: total,
    }
}

/// The newest frame as JSON, rebuilt when older than [`MAP_INTERVAL`]: every watching page
/// shares it.
#[derive(Default)]
pub struct FrameCache(Mutex<Option<(Instant, Arc<String>)>>);

impl FrameCache {
    pub fn get_or_build(&self, build: impl FnOnce() -> MapFrame) -> Arc<String> {
        let mut cached = self.0.lock().expect("map cache lock");
        if let Some((at, json)) = cached.as_ref()
            && at.elapsed() < MAP_INTERVAL
        {
            return json.clone();
        }
        let json = Arc::new(serde_json::to_string(&build()).expect("a map frame serializes"));
        *cached = Some((Instant::now(), json.clone()));
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidereal_core::SectorId;
    use sidereal_core::load::SectorCounts;

    fn placement() -> Placement {
        let root = SectorId::new(1, 0, 0).unwrap();
        let mut p = Placement {
            generation: 7,
            ..Placement::default()
        };
        for (i, c) in root.children().unwrap().into_iter().enumerate() {
            p.sectors.insert(c, ShardId(format!("shard-{}", i % 2)));
        }
        p
    }

    #[test]
    fn a_frame_has_every_leaf_with_its_shard_and_load_and_a_bounded_sample() {
        let p = placement();
        let hot = *p.sectors.keys().next().unwrap();
        let mut load = BTreeMap::new();
        load.insert(
            ShardId("shard-0".into()),
            ShardLoadReport {
                tick: 1,
                tick_mean_ms: 1.0,
                tick_p99_ms: 2.0,
                tick_wall_mean_ms: 1.0,
                tick_wall_p99_ms: 2.0,
                sectors: vec![SectorCounts {
                    sector: hot,
                    entities: 900,
                    players: 3,
                }],
            },
        );
        let all: Vec<_> = (0..10_000)
            .map(|i| (EntityKind::Asteroid, [i as f32, 0.0]))
            .collect();
        let f = frame(&p, &load, all.iter().copied(), all.len(), 3000);
        assert_eq!(f.generation, 7);
        assert_eq!(f.leaves.len(), 4);
        assert_eq!(f.shards, ["shard-0", "shard-1"]);
        let leaf = f.leaves.iter().find(|l| l.name == hot.name()).unwrap();
        assert_eq!((leaf.entities, leaf.players), (900, 3));
        assert_eq!(leaf.edge, hot.edge());
        assert!(
            f.leaves
                .iter()
                .filter(|l| l.name != leaf.name)
                .all(|l| l.entities == 0)
        );
        // 10,000 sampled to at most 3,000, spread over the whole set.
        assert!(f.entities.len() <= 3000 && f.entities.len() >= 2500);
        assert!(f.entities.last().unwrap()[0] > 9000);
        assert_eq!(f.total_entities, 10_000);
        // A small world is sent whole.
        let few = frame(&p, &load, all.iter().copied().take(10), 10, 3000);
        assert_eq!(few.entities.len(), 10);
    }

    #[test]
    fn the_cache_builds_once_per_interval() {
        let cache = FrameCache::default();
        let mut builds = 0;
        for _ in 0..5 {
            cache.get_or_build(|| {
                builds += 1;
                frame(&placement(), &BTreeMap::new(), std::iter::empty(), 0, 10)
            });
        }
        assert_eq!(builds, 1);
    }
}

/// How long a map ticket opens the map's frames.
pub const MAP_TICKET_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// A read-only ticket for the map's frames, valid until `expires` (Unix seconds): what a page
/// puts in its URL instead of the control token, so proxy logs never hold the token. It is
/// `expires.mac`, the MAC keyed by the control token, so tickets need no state and a new token
/// voids them all.
pub fn map_ticket(control_token: &str, expires: u64) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(control_token.as_bytes()).expect("any key");
    mac.update(b"sidereal map ticket v1");
    mac.update(&expires.to_le_bytes());
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{expires}.{tag}")
}

/// Whether `ticket` was minted with `control_token` and is still valid at `now` (Unix seconds).
pub fn ticket_valid(control_token: &str, ticket: &str, now: u64) -> bool {
    let Some((expires, _)) = ticket.split_once('.') else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    expires >= now
        && expires <= now + MAP_TICKET_TTL.as_secs()
        && crate::authority::constant_time_eq(
            map_ticket(control_token, expires).as_bytes(),
            ticket.as_bytes(),
        )
}

#[cfg(test)]
mod ticket_tests {
    use super::*;

    #[test]
    fn a_ticket_opens_the_map_until_it_expires_and_only_for_its_token() {
        let t = map_ticket("the-control-token", 1_000);
        assert!(ticket_valid("the-control-token", &t, 900));
        assert!(ticket_valid("the-control-token", &t, 1_000));
        assert!(!ticket_valid("the-control-token", &t, 1_001), "expired");
        assert!(!ticket_valid("another-token-xx", &t, 900), "another token");
        let forged = t.replacen("1000", "9999", 1);
        assert!(
            !ticket_valid("the-control-token", &forged, 900),
            "a moved expiry"
        );
        for junk in ["", ".", "1000", "1000.", "x.y", "18446744073709551615.00"] {
            assert!(!ticket_valid("the-control-token", junk, 900), "{junk:?}");
        }
        // Never valid for longer than a ticket lives, whatever expiry it names.
        let far = map_ticket("the-control-token", 900 + MAP_TICKET_TTL.as_secs() + 1);
        assert!(!ticket_valid("the-control-token", &far, 900));
    }
}
