//! A snapshot of the shard's state, published every tick for the process's `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bevy::prelude::*;

use crate::link::{LinkStats, TickCount};
use crate::load::TickTimes;
use crate::ownership::Ownership;

#[derive(Debug, Clone, Default)]
pub struct ShardStatus {
    pub tick: u64,
    pub entities: usize,
    pub shadows: usize,
    pub sectors: usize,
    pub handovers_out: u64,
    pub tick_mean_ms: f32,
    pub tick_p99_ms: f32,
    pub link: LinkStats,
}

/// Shared with the metrics server; `alive` turns false when the link to replication dies.
#[derive(Resource, Clone, Default)]
pub struct StatusBoard {
    pub status: Arc<Mutex<ShardStatus>>,
    pub alive: Arc<AtomicBool>,
}

pub struct StatusPlugin(pub StatusBoard);

impl Plugin for StatusPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.0.clone())
            .add_systems(Last, (publish_status, exit_when_link_dies));
    }
}

fn publish_status(
    board: Res<StatusBoard>,
    tick: Res<TickCount>,
    own: Res<Ownership>,
    times: Res<TickTimes>,
    stats: Res<LinkStats>,
) {
    let (mean, p99) = times.summary();
    *board.status.lock().expect("status lock") = ShardStatus {
        tick: tick.0,
        entities: own.entities.len(),
        shadows: own.shadow_count(),
        sectors: own.sectors.len(),
        handovers_out: own.handovers_out,
        tick_mean_ms: mean,
        tick_p99_ms: p99,
        link: *stats,
    };
}

/// A shard without its link would simulate a world nobody sees: stop, and let the supervisor
/// (Kubernetes, `sidereal up`) start a fresh one.
fn exit_when_link_dies(board: Res<StatusBoard>, mut exit: MessageWriter<AppExit>) {
    if !board.alive.load(Ordering::SeqCst) {
        error!("link to replication lost; exiting");
        exit.write(AppExit::error());
    }
}
