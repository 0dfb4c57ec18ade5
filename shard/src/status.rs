//! The shard process's liveness: it simulates on through a lost link while it dials again, and
//! stops only when replication stays unreachable for the relink timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bevy::prelude::*;

use crate::tcp::LinkHealth;

/// Shared with the process's `/healthz`, which fails once the link is given up.
#[derive(Resource, Clone, Default)]
pub struct StatusBoard {
    pub health: Arc<LinkHealth>,
}

pub struct StatusPlugin(pub StatusBoard);

impl Plugin for StatusPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.0.clone())
            .add_systems(Last, exit_when_link_given_up);
    }
}

/// A shard that cannot reach replication again would simulate a world nobody keeps: stop, and
/// let the supervisor (Kubernetes, `sidereal up`) start a fresh one.
fn exit_when_link_given_up(board: Res<StatusBoard>, mut exit: MessageWriter<AppExit>) {
    if board.health.given_up.load(Ordering::SeqCst) {
        error!("replication unreachable for the relink timeout; exiting");
        exit.write(AppExit::error());
    }
}
