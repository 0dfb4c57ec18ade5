//! Load measurement: tick time and per-sector counts, reported about once a second.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use avian2d::prelude::*;
use bevy::prelude::*;
use sidereal_core::protocol::ShardMessage;
use sidereal_core::{Point, SectorCounts, SectorId, ShardLoadReport};

use crate::ShardConfig;
use crate::components::{Owned, TickSet};
use crate::link::{ShardLink, TickCount};
use crate::ownership::Ownership;

/// Recent tick durations.
#[derive(Resource, Debug, Default)]
pub struct TickTimes {
    started: Option<Instant>,
    window: VecDeque<f32>,
    pub last_report: Option<ShardLoadReport>,
}

impl TickTimes {
    const WINDOW: usize = 300;

    pub fn record(&mut self, ms: f32) {
        if self.window.len() == Self::WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(ms);
    }

    /// (mean, p99) in milliseconds over the window.
    pub fn summary(&self) -> (f32, f32) {
        if self.window.is_empty() {
            return (0.0, 0.0);
        }
        let mut v: Vec<f32> = self.window.iter().copied().collect();
        v.sort_by(f32::total_cmp);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let idx = ((v.len() as f32 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        (mean, v[idx])
    }
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
    t.started = Some(Instant::now());
}

fn stop_tick_timer(mut t: ResMut<TickTimes>) {
    if let Some(s) = t.started.take() {
        t.record(s.elapsed().as_secs_f32() * 1000.0);
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
    let (mean, p99) = times.summary();
    let report = ShardLoadReport {
        tick: tick.0,
        tick_mean_ms: mean,
        tick_p99_ms: p99,
        sectors: counts.into_values().collect(),
    };
    times.last_report = Some(report.clone());
    link.send(ShardMessage::Load(report));
}
