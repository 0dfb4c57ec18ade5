//! Prometheus metrics of one shard, written by the app as it ticks and gathered by the
//! process's `/metrics` endpoint. Names follow Prometheus conventions: base units, histograms
//! for durations (so Grafana can aggregate and re-window them), `_total` only on counters.

use bevy::prelude::*;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

/// Bucket bounds for tick durations in seconds: fine below the 33 ms budget of a 30 Hz tick,
/// coarse above it.
pub const TICK_BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.033,
    0.050, 0.100, 0.250,
];

/// The shard's metrics. Cloning shares them (prometheus metrics are reference-counted).
#[derive(Resource, Clone)]
pub struct ShardMetrics {
    pub registry: Registry,
    pub ticks: IntCounter,
    /// Wall-clock time of a tick: the work plus any wait for a core.
    pub tick_seconds: Histogram,
    /// CPU time the simulation thread spent in a tick: the work alone.
    pub tick_cpu_seconds: Histogram,
    pub entities: IntGauge,
    pub shadows: IntGauge,
    pub sectors: IntGauge,
    pub handovers_out: IntCounter,
    pub update_bytes: IntCounter,
    pub updates: IntCounter,
    pub stream_subscribers: IntGauge,
    pub stream_sectors: IntGauge,
    pub stream_bytes: IntCounter,
    pub stream_dropped: IntCounter,
    pub neighbour_streams: IntGauge,
    pub neighbour_bytes: IntCounter,
    pub resumes: IntCounter,
}

impl ShardMetrics {
    /// Metrics named `sidereal_shard_*`, each labelled with this shard's name.
    pub fn new(shard: &str) -> Self {
        let registry = Registry::new_custom(
            Some("sidereal_shard".into()),
            Some([("shard".to_owned(), shard.to_owned())].into()),
        )
        .expect("a valid prefix and label");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("a valid counter");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("a valid gauge");
            registry.register(Box::new(g.clone())).expect("unique");
            g
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(
                HistogramOpts::from(Opts::new(name, help)).buckets(TICK_BUCKETS.to_vec()),
            )
            .expect("a valid histogram");
            registry.register(Box::new(h.clone())).expect("unique");
            h
        };
        Self {
            ticks: counter("ticks_total", "Fixed ticks simulated"),
            tick_seconds: histogram(
                "tick_duration_seconds",
                "Wall-clock time of one fixed tick (work plus waiting for a core)",
            ),
            tick_cpu_seconds: histogram(
                "tick_cpu_seconds",
                "CPU time the simulation thread spent in one fixed tick (the work alone)",
            ),
            entities: gauge("entities", "Entities this shard simulates"),
            shadows: gauge("shadows", "Read-only shadows of neighbours' entities"),
            sectors: gauge("sectors", "Leaf sectors this shard owns"),
            handovers_out: counter("handovers_out_total", "Entities handed to other shards"),
            update_bytes: counter(
                "update_bytes_total",
                "Bytes of entity update batches sent to replication",
            ),
            updates: counter("updates_total", "Entity updates sent to replication"),
            stream_subscribers: gauge(
                "stream_subscribers",
                "Subscribers of this shard's sector streams",
            ),
            stream_sectors: gauge(
                "stream_sectors",
                "Sectors streamed to at least one subscriber",
            ),
            stream_bytes: counter(
                "stream_bytes_total",
                "Bytes of sector-stream frames queued to subscribers, all together",
            ),
            stream_dropped: counter(
                "stream_subscribers_dropped_total",
                "Subscribers disconnected for falling behind",
            ),
            neighbour_streams: gauge(
                "neighbour_streams",
                "Neighbouring shards whose sector streams this shard takes its shadows from",
            ),
            neighbour_bytes: counter(
                "neighbour_stream_bytes_total",
                "Bytes of neighbours' sector-stream frames received for shadows",
            ),
            resumes: counter(
                "resumes_total",
                "Times this shard linked to replication again with its entities kept (a takeover, a cut link)",
            ),
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("utf-8")
    }
}
