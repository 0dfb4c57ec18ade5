//! Prometheus metrics of replication, read from their owners at scrape time: the authority's
//! counters and mirror, the store's health, the link tasks' byte counts. Nothing here keeps a
//! copy of state, so there are no deltas to get wrong. Names follow Prometheus conventions:
//! base units, `_total` on counters only.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::authority::Authority;
use crate::state::{GameTraffic, LinkBytes, StoreHealth};

/// The text exposition of every replication metric, as of now.
pub fn render(
    a: &Authority,
    store: &StoreHealth,
    links: &LinkBytes,
    game: &GameTraffic,
    logins: &BTreeMap<&'static str, u64>,
    inputs: &BTreeMap<&'static str, u64>,
    sessions: &crate::rules::sessions::SessionTable,
) -> String {
    let mut families = Vec::new();
    let mut add = |c: &dyn Collector| families.extend(c.collect());

    let labelled_gauge = |name: &str, help: &str, labels: &[&str]| {
        IntGaugeVec::new(Opts::new(name, help).namespace("sidereal"), labels).expect("valid")
    };
    let entities = labelled_gauge(
        "sector_entities",
        "Entities per leaf sector, as last reported by its shard",
        &["sector", "shard"],
    );
    let players = labelled_gauge(
        "sector_players",
        "Players per leaf sector, as last reported by its shard",
        &["sector", "shard"],
    );
    let placement = &a.placement().sectors;
    for (shard, report) in a.load() {
        for s in &report.sectors {
            if placement.get(&s.sector) == Some(shard) {
                let labels = [s.sector.to_string(), shard.0.clone()];
                let labels = [labels[0].as_str(), labels[1].as_str()];
                entities
                    .with_label_values(&labels)
                    .set(i64::from(s.entities));
                players.with_label_values(&labels).set(i64::from(s.players));
            }
        }
    }
    add(&entities);
    add(&players);

    let gauge = |name: &str, help: &str, v: i64| {
        let g = IntGauge::with_opts(Opts::new(name, help).namespace("sidereal")).expect("valid");
        g.set(v);
        g
    };
    add(&gauge(
        "players_connected",
        "Players connected to the game port",
        a.players().len() as i64,
    ));
    add(&gauge(
        "shards_connected",
        "Shards with a live link",
        a.live_shards().len() as i64,
    ));
    add(&gauge(
        "shadows_from_streams",
        "1 while shards take their shadows from their neighbours' sector streams (every shard publishes); 0 while replication computes them",
        i64::from(a.shards_shadow_themselves()),
    ));
    add(&gauge(
        "shard_report_every_ticks",
        "Shards send entity updates every this many ticks (1 while replication serves players from its mirror or computes shadows)",
        i64::from(a.report_every()),
    ));
    add(&gauge(
        "leading",
        "1 while this replication leads the store (a standby serves 0)",
        1,
    ));
    add(&gauge(
        "takeover_waiting_shards",
        "Shards of the stored placement a new leader still waits for to link again (placement changes are refused while above 0)",
        a.awaiting_shards().map_or(0, |w| w.len() as i64),
    ));
    add(&gauge(
        "leaf_sectors",
        "Leaf sectors in the applied placement",
        placement.len() as i64,
    ));
    add(&gauge(
        "mirror_entities",
        "Entities in replication's mirror",
        a.mirror().len() as i64,
    ));
    add(&gauge(
        "archived_entities",
        "Entities of removed roots, kept out of the simulation",
        a.mirror().archived_len() as i64,
    ));
    add(&gauge(
        "roots",
        "Root sectors of the world",
        a.world().len() as i64,
    ));
    add(&gauge(
        "placement_generation",
        "Generation of the applied placement",
        a.placement().generation as i64,
    ));
    add(&gauge(
        "store_healthy",
        "1 while checkpoints succeed",
        i64::from(store.healthy),
    ));
    add(&gauge(
        "checkpoint_backlog",
        "Entities changed or removed since the last successful checkpoint",
        a.mirror().dirty_len() as i64,
    ));
    let wait = Gauge::with_opts(
        Opts::new(
            "checkpoint_report_wait_seconds",
            "How long the last checkpoint waited for shards' reports",
        )
        .namespace("sidereal"),
    )
    .expect("valid");
    wait.set(store.last_report_wait.as_secs_f64());
    add(&wait);
    add(&gauge(
        "store_rows_read_at_start",
        "Stored rows read on taking the store: all of them on a cold start, only the last changes when a warm standby takes over",
        store.rows_read_at_start as i64,
    ));
    let restore = Gauge::with_opts(
        Opts::new(
            "store_restore_seconds",
            "Seconds from taking the store to the world restored from it",
        )
        .namespace("sidereal"),
    )
    .expect("valid");
    restore.set(store.restore_time.as_secs_f64());
    add(&restore);
    if let Some(at) = store.last_checkpoint_at {
        let g = Gauge::with_opts(
            Opts::new(
                "last_checkpoint_timestamp_seconds",
                "Unix time of the last successful checkpoint",
            )
            .namespace("sidereal"),
        )
        .expect("valid");
        g.set(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        add(&g);
    }

    let counter = |name: &str, help: &str, v: u64| {
        let c = IntCounter::with_opts(Opts::new(name, help).namespace("sidereal")).expect("valid");
        c.inc_by(v);
        c
    };
    let c = &a.counters;
    add(&counter(
        "handovers_total",
        "Entities handed from one owner to another",
        c.handovers,
    ));
    add(&counter(
        "spawns_total",
        "Entities spawned by shards",
        c.spawns,
    ));
    add(&counter(
        "despawns_total",
        "Entities despawned by shards",
        c.despawns,
    ));
    add(&counter(
        "refusals_total",
        "Shard messages refused (non-owner, stale epoch, unowned sector)",
        c.refusals,
    ));
    add(&counter(
        "links_resumed_total",
        "Shards that linked again with the entities they kept simulating (after a takeover or a cut link)",
        c.resumes,
    ));
    add(&counter(
        "resumed_entities_total",
        "Entities kept from resuming shards' own state rather than the store's",
        c.resumed_entities,
    ));
    add(&counter(
        "archived_total",
        "Entities taken out of the world with their root",
        c.archived,
    ));
    add(&counter(
        "restored_total",
        "Archived entities brought back with their root",
        c.restored,
    ));
    add(&counter(
        "placement_conflicts_total",
        "Placement writes refused with 409 because another writer was first",
        c.placement_conflicts,
    ));
    add(&counter(
        "checkpoint_rows_total",
        "Entity rows written by checkpoints",
        store.rows_written,
    ));
    add(&counter(
        "checkpoint_report_rounds_total",
        "Times shards were asked to report their entities' state for a checkpoint",
        store.report_rounds,
    ));
    add(&counter(
        "checkpoint_report_rounds_late_total",
        "Report rounds the checkpoint stopped waiting for (a shard slow to answer)",
        store.report_rounds_late,
    ));
    add(&counter(
        "checkpoint_failures_total",
        "Checkpoints that failed and were retried",
        store.failures,
    ));
    let labelled_counter = |name: &str, help: &str, label: &str, values: &[(&str, u64)]| {
        let v = IntCounterVec::new(Opts::new(name, help).namespace("sidereal"), &[label])
            .expect("valid");
        for (l, n) in values {
            v.with_label_values(&[*l]).inc_by(*n);
        }
        v
    };
    add(&labelled_counter(
        "entity_updates_total",
        "Entity updates from shards, by result",
        "result",
        &[
            ("applied", c.updates_applied),
            ("refused", c.updates_refused),
        ],
    ));
    // Every reason from zero, so `rate()` sees the first rejection.
    let mut rejected: std::collections::BTreeMap<&str, u64> =
        crate::authority::LINK_REJECTION_REASONS
            .iter()
            .map(|r| (*r, 0))
            .collect();
    rejected.extend(c.links_rejected.iter().map(|(k, v)| (*k, *v)));
    let rejected: Vec<(&str, u64)> = rejected.into_iter().collect();
    add(&labelled_counter(
        "links_rejected_total",
        "Shard links closed for bad input (refused handshake, malformed data), by reason",
        "reason",
        &rejected,
    ));
    let mut dropped: std::collections::BTreeMap<&str, u64> = crate::authority::LINK_DROP_REASONS
        .iter()
        .map(|r| (*r, 0))
        .collect();
    dropped.extend(c.links_dropped.iter().map(|(k, v)| (*k, *v)));
    let dropped: Vec<(&str, u64)> = dropped.into_iter().collect();
    add(&labelled_counter(
        "links_dropped_total",
        "Shard links closed because the shard went silent or stopped taking what was sent, by reason",
        "reason",
        &dropped,
    ));
    add(&labelled_counter(
        "link_bytes_total",
        "Bytes on shard links, by direction (received from shards, sent to shards)",
        "direction",
        &[
            ("received", links.received.load(Ordering::Relaxed)),
            ("sent", links.sent.load(Ordering::Relaxed)),
        ],
    ));
    let logins: Vec<(&str, u64)> = logins.iter().map(|(k, v)| (*k, *v)).collect();
    add(&labelled_counter(
        "logins_total",
        "Registrations and logins, by result (created and ok got a token)",
        "result",
        &logins,
    ));
    families.extend(game_port_families(game, inputs, sessions));

    // A family without samples (no load reported yet) is not valid exposition text: leave it out.
    families.retain(|f| !f.get_metric().is_empty());
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "encoding metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The game port's metrics, the same on replication's own port and on a gateway: world state
/// sent, chat, players' commands, sessions.
pub fn game_port_families(
    game: &GameTraffic,
    inputs: &BTreeMap<&'static str, u64>,
    sessions: &crate::rules::sessions::SessionTable,
) -> Vec<MetricFamily> {
    let mut families = Vec::new();
    let mut add = |c: &dyn Collector| families.extend(c.collect());
    let counter = |name: &str, help: &str, v: u64| {
        let c = IntCounter::with_opts(Opts::new(name, help).namespace("sidereal")).expect("valid");
        c.inc_by(v);
        c
    };
    let labelled_counter = |name: &str, help: &str, label: &str, values: &[(&str, u64)]| {
        let v = IntCounterVec::new(Opts::new(name, help).namespace("sidereal"), &[label])
            .expect("valid");
        for (l, n) in values {
            v.with_label_values(&[*l]).inc_by(*n);
        }
        v
    };
    add(&counter(
        "game_state_bytes_total",
        "Bytes of encoded world state sent to players (before lightyear's framing)",
        game.state_bytes.load(Ordering::Relaxed),
    ));
    add(&counter(
        "game_state_updates_total",
        "World state updates sent to players, one per player per tick",
        game.state_updates.load(Ordering::Relaxed),
    ));
    add(&counter(
        "game_entity_updates_total",
        "Entities described by the world state updates sent (each costs bytes only if it moved off its prediction)",
        game.entity_updates.load(Ordering::Relaxed),
    ));
    let mut chat: BTreeMap<&str, u64> = crate::rules::chat::CHAT_RESULTS
        .iter()
        .map(|r| (*r, 0))
        .collect();
    chat.extend(
        game.chat
            .lock()
            .expect("chat counts")
            .iter()
            .map(|(k, v)| (*k, *v)),
    );
    let chat: Vec<(&str, u64)> = chat.into_iter().collect();
    add(&labelled_counter(
        "chat_total",
        "Chat lines from players, by result (delivered reached every ship within the interest radius)",
        "result",
        &chat,
    ));
    let inputs: Vec<(&str, u64)> = inputs.iter().map(|(k, v)| (*k, *v)).collect();
    add(&labelled_counter(
        "inputs_total",
        "Players' ship commands checked at this game port, by result (accepted and clamped go on to the ship's shard)",
        "result",
        &inputs,
    ));
    let g = IntGauge::with_opts(
        Opts::new(
            "game_sessions",
            "Game-port sessions admitted or connected (a player holds at most two while it reconnects)",
        )
        .namespace("sidereal"),
    )
    .expect("valid");
    g.set(sessions.holding() as i64);
    add(&g);
    let denied: Vec<(&str, u64)> = crate::rules::sessions::SESSION_REFUSALS
        .iter()
        .map(|r| (*r, sessions.denied.get(r).copied().unwrap_or(0)))
        .collect();
    add(&labelled_counter(
        "game_connections_denied_total",
        "Game-port connection requests refused, by reason (the player's or the address's session limit)",
        "reason",
        &denied,
    ));
    families
}
