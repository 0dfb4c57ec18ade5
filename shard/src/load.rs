//! Load measurement: per-tick wall and CPU time, and per-sector counts, reported to
//! replication about once a second.
//!
//! The CPU time of the simulation thread is what scaling acts on: it is the work a tick takes.
//! Wall time adds whatever the machine made the thread wait (other processes on the same
//! cores), which would make the operator split sectors because of a noisy neighbour.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use avian2d::prelude::*;
use bevy::prelude::*;
use sidereal_core::protocol::ShardMessage;
use sidereal_core::{Point, SectorCounts, SectorId, ShardLoadReport};

use crate::ShardConfig;
use crate::components::{Owned, TickSet};
use crate::link::{ShardLink, TickCount};
use crate::metrics::ShardMetrics;
use crate::ownership::Ownership;

/// CPU time the calling thread has used so far (`CLOCK_THREAD_CPUTIME_ID`, read via the vDSO).
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// A sliding window of durations in milliseconds, summarised as mean and p99.
#[derive(Debug, Default, Clone)]
pub struct Window(VecDeque<f32>);

impl Window {
    /// Ticks kept: ten seconds at 30 Hz.
    pub const LEN: usize = 300;

    pub fn record(&mut self, ms: f32) {
        if self.0.len() == Self::LEN {
            self.0.pop_front();
        }
        self.0.push_back(ms);
    }

    /// (mean, p99) in milliseconds; zeros when empty.
    pub fn summary(&self) -> (f32, f32) {
        if self.0.is_empty() {
            return (0.0, 0.0);
        }
        let mut v: Vec<f32> = self.0.iter().copied().collect();
        v.sort_by(f32::total_cmp);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let idx = ((v.len() as f32 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        (mean, v[idx])
    }
}

/// Recent tick durations, wall and CPU.
#[derive(Resource, Debug, Default)]
pub struct TickTimes {
    started: Option<(Instant, Duration)>,
    pub wall: Window,
    pub cpu: Window,
    pub last_report: Option<ShardLoadReport>,
}

pub struct LoadPlugin;

impl Plugin for LoadPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<TickTimes>()
            .add_systems(FixedFirst, start_tick_timer)
            .add_systems(
                FixedLast,
                (stop_tick_timer, report_load)
                    .chain()
                    .after(TickSet::Report),
            );
    }
}

fn start_tick_timer(mut t: ResMut<TickTimes>) {
    t.started = Some((Instant::now(), thread_cpu_time()));
}

fn stop_tick_timer(mut t: ResMut<TickTimes>, metrics: Res<ShardMetrics>) {
    if let Some((wall0, cpu0)) = t.started.take() {
        let wall = wall0.elapsed();
        let cpu = thread_cpu_time().saturating_sub(cpu0);
        t.wall.record(wall.as_secs_f32() * 1000.0);
        t.cpu.record(cpu.as_secs_f32() * 1000.0);
        metrics.tick_seconds.observe(wall.as_secs_f64());
        metrics.tick_cpu_seconds.observe(cpu.as_secs_f64());
    }
}

fn report_load(
    config: Res<ShardConfig>,
    tick: Res<TickCount>,
    link: Res<ShardLink>,
    own: Res<Ownership>,
    mut times: ResMut<TickTimes>,
    q: Query<(&Owned, &Position)>,
) {
    if !tick.0.is_multiple_of(u64::from(config.tick_hz.max(1))) {
        return;
    }
    let mut counts: BTreeMap<SectorId, SectorCounts> = own
        .sectors
        .iter()
        .map(|s| {
            (
                *s,
                SectorCounts {
                    sector: *s,
                    entities: 0,
                    players: 0,
                },
            )
        })
        .collect();
    for (o, p) in &q {
        let pt = Point::new(p.0.x.into(), p.0.y.into());
        if let Some(c) = counts.values_mut().find(|c| c.sector.contains(pt)) {
            c.entities += 1;
            c.players += u32::from(o.player);
        }
    }
    let (cpu_mean, cpu_p99) = times.cpu.summary();
    let (wall_mean, wall_p99) = times.wall.summary();
    let report = ShardLoadReport {
        tick: tick.0,
        tick_mean_ms: cpu_mean,
        tick_p99_ms: cpu_p99,
        tick_wall_mean_ms: wall_mean,
        tick_wall_p99_ms: wall_p99,
        sectors: counts.into_values().collect(),
    };
    times.last_report = Some(report.clone());
    link.send(ShardMessage::Load(report));
}
