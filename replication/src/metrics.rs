//! Prometheus metrics of replication, filled from the authority at scrape time.

use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::BTreeMap;

use crate::authority::Authority;

pub struct Metrics {
    registry: Registry,
    entities: IntGaugeVec,
    players: IntGaugeVec,
    shard_tick_p99: GaugeVec,
    shards_connected: IntGauge,
    placement_generation: IntGauge,
    handovers: IntCounter,
    updates: IntCounterVec,
    spawns: IntCounter,
    despawns: IntCounter,
    refusals: IntCounter,
    links_rejected: IntCounter,
    /// Bytes on shard links, by direction (`in`: from shards, `out`: to shards).
    pub link_bytes: IntCounterVec,
    last: crate::authority::Counters,
    store_healthy: IntGauge,
    checkpoint_backlog: IntGauge,
    checkpoint_age: prometheus::Gauge,
    checkpoint_rows: IntCounter,
    checkpoint_failures: IntCounter,
    last_store: crate::server::StoreHealth,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("sidereal".into()), None).expect("valid prefix");
        let entities = IntGaugeVec::new(
            Opts::new(
                "sector_entities",
                "Entities per leaf sector, as last reported by its shard",
            ),
            &["sector", "shard"],
        )
        .unwrap();
        let players = IntGaugeVec::new(
            Opts::new("sector_players", "Players per leaf sector"),
            &["sector", "shard"],
        )
        .unwrap();
        let shard_tick_p99 = GaugeVec::new(
            Opts::new("shard_tick_p99_ms", "Shard tick time p99 in milliseconds"),
            &["shard"],
        )
        .unwrap();
        let shards_connected =
            IntGauge::new("shards_connected", "Shards with a live link").unwrap();
        let placement_generation = IntGauge::new(
            "placement_generation",
            "Generation of the applied placement",
        )
        .unwrap();
        let handovers = IntCounter::new(
            "handovers_total",
            "Entities handed from one owner to another",
        )
        .unwrap();
        let updates = IntCounterVec::new(
            Opts::new("entity_updates_total", "Entity updates from shards"),
            &["result"],
        )
        .unwrap();
        let spawns = IntCounter::new("spawns_total", "Entities spawned by shards").unwrap();
        let despawns = IntCounter::new("despawns_total", "Entities despawned by shards").unwrap();
        let refusals = IntCounter::new(
            "refusals_total",
            "Shard messages refused (non-owner, stale epoch, unowned sector)",
        )
        .unwrap();
        let links_rejected = IntCounter::new(
            "links_rejected_total",
            "Shard links closed for bad handshakes or malformed frames",
        )
        .unwrap();
        let link_bytes = IntCounterVec::new(
            Opts::new("link_bytes_total", "Bytes on shard links"),
            &["direction"],
        )
        .unwrap();
        for c in [&entities, &players] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        registry.register(Box::new(shard_tick_p99.clone())).unwrap();
        for g in [&shards_connected, &placement_generation] {
            registry.register(Box::new(g.clone())).unwrap();
        }
        for c in [&handovers, &spawns, &despawns, &refusals, &links_rejected] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        registry.register(Box::new(updates.clone())).unwrap();
        let store_healthy = IntGauge::new("store_healthy", "1 while checkpoints succeed").unwrap();
        let checkpoint_backlog = IntGauge::new(
            "checkpoint_backlog",
            "Entities changed or removed since the last successful checkpoint",
        )
        .unwrap();
        let checkpoint_age = prometheus::Gauge::new(
            "checkpoint_age_seconds",
            "Seconds since the last successful checkpoint (-1: none yet)",
        )
        .unwrap();
        let checkpoint_rows = IntCounter::new(
            "checkpoint_rows_total",
            "Entity rows written by checkpoints",
        )
        .unwrap();
        let checkpoint_failures = IntCounter::new(
            "checkpoint_failures_total",
            "Checkpoints that failed and were retried",
        )
        .unwrap();
        for g in [&store_healthy, &checkpoint_backlog] {
            registry.register(Box::new(g.clone())).unwrap();
        }
        registry.register(Box::new(checkpoint_age.clone())).unwrap();
        for c in [&checkpoint_rows, &checkpoint_failures] {
            registry.register(Box::new(c.clone())).unwrap();
        }
        registry.register(Box::new(link_bytes.clone())).unwrap();
        Self {
            registry,
            entities,
            players,
            shard_tick_p99,
            shards_connected,
            placement_generation,
            handovers,
            updates,
            spawns,
            despawns,
            refusals,
            links_rejected,
            link_bytes,
            last: Default::default(),
            store_healthy,
            checkpoint_backlog,
            checkpoint_age,
            checkpoint_rows,
            checkpoint_failures,
            last_store: Default::default(),
        }
    }

    /// Copies the authority's state into the metrics and renders the text exposition.
    pub fn render(&mut self, a: &Authority, store: &crate::server::StoreHealth) -> String {
        self.store_healthy.set(i64::from(store.healthy));
        self.checkpoint_backlog.set(a.mirror().dirty_len() as i64);
        self.checkpoint_age.set(
            store
                .last_checkpoint
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(-1.0),
        );
        self.checkpoint_rows
            .inc_by(store.rows_written - self.last_store.rows_written);
        self.checkpoint_failures
            .inc_by(store.failures - self.last_store.failures);
        self.last_store = store.clone();
        let c = a.counters.clone();
        self.handovers.inc_by(c.handovers - self.last.handovers);
        self.spawns.inc_by(c.spawns - self.last.spawns);
        self.despawns.inc_by(c.despawns - self.last.despawns);
        self.refusals.inc_by(c.refusals - self.last.refusals);
        self.links_rejected
            .inc_by(c.links_rejected - self.last.links_rejected);
        self.updates
            .with_label_values(&["applied"])
            .inc_by(c.updates_applied - self.last.updates_applied);
        self.updates
            .with_label_values(&["refused"])
            .inc_by(c.updates_refused - self.last.updates_refused);
        self.last = c;
        self.entities.reset();
        self.players.reset();
        self.shard_tick_p99.reset();
        let placement: &BTreeMap<_, _> = &a.placement().sectors;
        for (shard, report) in a.load() {
            self.shard_tick_p99
                .with_label_values(&[shard.0.as_str()])
                .set(f64::from(report.tick_p99_ms));
            for s in &report.sectors {
                if placement.get(&s.sector) == Some(shard) {
                    let name = s.sector.to_string();
                    self.entities
                        .with_label_values(&[name.as_str(), shard.0.as_str()])
                        .set(i64::from(s.entities));
                    self.players
                        .with_label_values(&[name.as_str(), shard.0.as_str()])
                        .set(i64::from(s.players));
                }
            }
        }
        self.shards_connected.set(a.live_shards().len() as i64);
        self.placement_generation
            .set(a.placement().generation as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("utf-8")
    }
}
