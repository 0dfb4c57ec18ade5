//! The shard process's liveness: it stops when its link to replication dies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bevy::prelude::*;

/// Shared with the process's `/healthz`; `alive` turns false when the link to replication dies.
#[derive(Resource, Clone, Default)]
pub struct StatusBoard {
    pub alive: Arc<AtomicBool>,
}

pub struct StatusPlugin(pub StatusBoard);

impl Plugin for StatusPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.0.clone())
            .add_systems(Last, exit_when_link_dies);
    }
}

/// A shard without its link would simulate a world nobody sees: stop, and let the supervisor
/// (Kubernetes, `sidereal up`) start a fresh one.
fn exit_when_link_dies(board: Res<StatusBoard>, mut exit: MessageWriter<AppExit>) {
    if !board.alive.load(Ordering::SeqCst) {
        error!("link to replication lost; exiting");
        exit.write(AppExit::error());
    }
}
