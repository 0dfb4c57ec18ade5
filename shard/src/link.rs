//! The shard's end of its link to replication: two channels and the update encoder.

use bevy::prelude::*;
use crossbeam_channel::{Receiver, Sender};
use sidereal_core::codec::{UpdateEncoder, batch_entries};
use sidereal_core::protocol::{
    MAX_FRAME_BYTES, ReplicationMessage, ShardMessage, entries_per_frame,
};
use sidereal_core::{EntityId, EntityState, Epoch};

use crate::components::{Owned, TickSet, state_of};
use crate::metrics::ShardMetrics;
use avian2d::prelude::*;

/// Channels to and from replication. The TCP bridge (or a test harness) sits on the far side.
#[derive(Resource, Clone)]
pub struct ShardLink {
    pub to_replication: Sender<ShardMessage>,
    pub from_replication: Receiver<ReplicationMessage>,
    /// Largest frame the link carries: update batches are cut to fit.
    pub max_frame_bytes: usize,
}

impl ShardLink {
    pub fn send(&self, msg: ShardMessage) {
        // A closed channel means the link is gone; the bridge reports it and the process exits.
        let _ = self.to_replication.send(msg);
    }

    /// A connected pair: (shard end, far end).
    pub fn pair() -> (
        ShardLink,
        Sender<ReplicationMessage>,
        Receiver<ShardMessage>,
    ) {
        let (to_rep, from_shard) = crossbeam_channel::unbounded();
        let (to_shard, from_rep) = crossbeam_channel::unbounded();
        (
            ShardLink {
                to_replication: to_rep,
                from_replication: from_rep,
                max_frame_bytes: MAX_FRAME_BYTES,
            },
            to_shard,
            from_shard,
        )
    }
}

/// Delta-encoder state for this link.
#[derive(Resource, Default)]
pub struct Encoder(pub UpdateEncoder);

/// The current tick number.
#[derive(Resource, Default, Debug, Clone, Copy)]
pub struct TickCount(pub u64);

/// Entity updates go to replication every this many ticks (replication says; 1 by default;
/// 0: only when replication asks with `Report`).
#[derive(Resource, Debug, Clone, Copy)]
pub struct ReportEvery(pub u32);

/// Replication's latest unanswered `Report { round }`: this tick reports, whatever the cadence,
/// and `Reported { round }` follows the updates.
#[derive(Resource, Debug, Clone, Copy, Default)]
pub struct ReportRequest(pub Option<u64>);

impl Default for ReportEvery {
    fn default() -> Self {
        Self(1)
    }
}

/// Link statistics, for metrics.
#[derive(Resource, Default, Debug, Clone, Copy)]
pub struct LinkStats {
    pub update_batches: u64,
    pub update_bytes: u64,
    pub updates: u64,
}

pub struct LinkPlugin;

impl Plugin for LinkPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Encoder>()
            .init_resource::<TickCount>()
            .init_resource::<LinkStats>()
            .init_resource::<ReportEvery>()
            .init_resource::<ReportRequest>()
            .add_systems(FixedFirst, count_tick)
            .add_systems(
                FixedLast,
                (
                    send_changed_entities.run_if(reporting_tick),
                    answer_report_request,
                )
                    .chain()
                    .in_set(TickSet::Report),
            );
    }
}

fn count_tick(mut tick: ResMut<TickCount>, metrics: Res<ShardMetrics>) {
    tick.0 += 1;
    metrics.ticks.inc();
}

/// Whether entity updates go to replication this tick. Handovers, spawns and ends go at once
/// whatever the cadence.
fn reporting_tick(
    tick: Res<TickCount>,
    every: Res<ReportEvery>,
    request: Res<ReportRequest>,
) -> bool {
    request.0.is_some() || (every.0 > 0 && tick.0.is_multiple_of(u64::from(every.0)))
}

/// Sends every owned entity whose quantized state changed since last sent, as one batch.
fn send_changed_entities(
    link: Res<ShardLink>,
    tick: Res<TickCount>,
    mut encoder: ResMut<Encoder>,
    mut stats: ResMut<LinkStats>,
    metrics: Res<ShardMetrics>,
    owned: Query<(
        &Owned,
        &Position,
        &Rotation,
        &LinearVelocity,
        &AngularVelocity,
    )>,
    mut batch: Local<Vec<(EntityId, Epoch, EntityState)>>,
) {
    batch.clear();
    batch.extend(
        owned
            .iter()
            .map(|(o, p, r, v, w)| (o.id, o.epoch, state_of(p, r, v, w))),
    );
    // A shard holding more entities than one frame describes sends several batches a tick.
    for part in batch.chunks_mut(entries_per_frame(link.max_frame_bytes)) {
        if let Some(bytes) = encoder.0.encode(tick.0, part) {
            stats.update_batches += 1;
            stats.update_bytes += bytes.len() as u64;
            let count = batch_entries(&bytes);
            stats.updates += count;
            metrics.update_bytes.inc_by(bytes.len() as u64);
            metrics.updates.inc_by(count);
            link.send(ShardMessage::Updates(bytes));
        }
    }
}

/// Answers replication's report round once this tick's updates are on the link ahead of it.
fn answer_report_request(link: Res<ShardLink>, mut request: ResMut<ReportRequest>) {
    if let Some(round) = request.0.take() {
        link.send(ShardMessage::Reported { round });
    }
}
