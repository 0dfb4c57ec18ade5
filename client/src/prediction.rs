//! The own ship predicted and the others interpolated, by lightyear's prediction and
//! interpolation.
//!
//! - The own ship is a lightyear-replicated entity ([`ShipPose`], `Predicted` here). Each fixed
//!   tick this client flies it with [`fly`] and the command the fleet will have applied by then:
//!   the one given `command_delay_ticks` earlier (see `Welcome`). When the server's state for a
//!   tick differs from the prediction for that tick, lightyear rolls back and replays.
//! - The pilot's commands go out as lightyear native inputs ([`PilotCommand`] in `ActionState`).
//! - Other entities come in our own encoded world updates; each decoded sample goes into
//!   lightyear's `ConfirmedHistory<RemotePose>` at the gateway's tick, and lightyear's
//!   interpolation writes [`RemotePose`] between samples.

use std::collections::{HashMap, VecDeque};

use bevy::prelude::*;
use lightyear::core::timeline::is_in_rollback;
use lightyear::prelude::client::input::InputSystems;
use lightyear::prelude::input::native::{ActionState, InputMarker};
use lightyear::prelude::*;
use sidereal_game::ship::fly;
use sidereal_game::{PilotCommand, RemotePose, ShipPose, WorldUpdate};

use crate::Received;

/// Commands out as lightyear inputs: every client, light ones too.
pub(crate) struct CommandPlugin;

impl Plugin for CommandPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Command>();
        app.init_resource::<CommandLog>();
        app.init_resource::<Remotes>();
        app.add_systems(
            FixedPreUpdate,
            write_command
                .in_set(InputSystems::WriteClientInputs)
                .run_if(not(is_in_rollback)),
        );
    }
}

/// The own ship predicted and the others interpolated: what a player's client does, and what
/// a light bot skips.
pub(crate) struct PredictionPlugin;

impl Plugin for PredictionPlugin {
    fn build(&self, app: &mut App) {
        // Prediction runs only with a manager (default policy: compare, at most 20 ticks back).
        app.insert_resource(PredictionManager::default());
        app.add_systems(FixedUpdate, fly_own_ship);
        app.add_systems(
            Update,
            (feed_interpolation, despawn_departed)
                .chain()
                .in_set(FeedInterpolation)
                .before(InterpolationSystems::Prepare),
        );
    }
}

/// Where decoded world updates become interpolation samples.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FeedInterpolation;

/// The pilot's current command; `None` until the first one (an unpiloted ship drifts).
#[derive(Resource, Default)]
pub(crate) struct Command(pub Option<PilotCommand>);

/// Commands by the tick they were given at, oldest first: the prediction reads the one in
/// force `command_delay_ticks` ago, in replays too.
#[derive(Resource, Default)]
struct CommandLog(VecDeque<(Tick, PilotCommand)>);

/// More than a rollback can reach back (20 ticks) plus the delay.
const COMMAND_LOG_TICKS: usize = 128;

impl CommandLog {
    fn record(&mut self, tick: Tick, pilot: PilotCommand) {
        while self.0.back().is_some_and(|(t, _)| *t >= tick) {
            self.0.pop_back();
        }
        self.0.push_back((tick, pilot));
        while self.0.len() > COMMAND_LOG_TICKS {
            self.0.pop_front();
        }
    }

    /// The command in force at `tick`: the newest given at or before it.
    fn at(&self, tick: Tick) -> Option<PilotCommand> {
        self.0
            .iter()
            .rev()
            .find(|(t, _)| *t <= tick)
            .map(|(_, p)| *p)
    }
}

/// Writes the command into lightyear's input state of the controlled ship (lightyear buffers
/// and sends it), and logs it for the prediction.
fn write_command(
    command: Res<Command>,
    timeline: Res<LocalTimeline>,
    mut log: ResMut<CommandLog>,
    mut ships: Query<(Entity, Option<&mut ActionState<PilotCommand>>), With<Controlled>>,
    mut commands: Commands,
) {
    let Some(pilot) = command.0 else { return };
    for (ship, state) in &mut ships {
        match state {
            Some(mut state) => {
                state.0 = pilot;
                log.record(timeline.tick(), pilot);
            }
            // From the first command on, lightyear sends this ship's inputs every tick.
            None => {
                commands
                    .entity(ship)
                    .insert(InputMarker::<PilotCommand>::default());
            }
        }
    }
}

/// One fixed tick of the own ship, with the command the fleet applies at this tick.
fn fly_own_ship(
    timeline: Res<LocalTimeline>,
    time: Res<Time>,
    log: Res<CommandLog>,
    received: Res<Received>,
    mut ships: Query<&mut ShipPose, With<Predicted>>,
) {
    let delay = received
        .welcome
        .as_ref()
        .map_or(0, |w| w.command_delay_ticks);
    let command = log.at(timeline.tick() - delay);
    for mut pose in &mut ships {
        *pose = fly(*pose, command, time.delta_secs());
    }
}

/// Another entity in view, by its world id.
#[derive(Component, Debug, Clone, Copy)]
pub struct RemoteEntity {
    pub id: u64,
    pub kind: u8,
}

/// Left the view: lightyear interpolates it up to the tick it left, then it goes.
#[derive(Component)]
struct Departed;

/// The interpolated entities by world id, and decoded samples not yet handed to lightyear.
#[derive(Resource, Default)]
pub(crate) struct Remotes {
    by_id: HashMap<u64, Entity>,
    pending: Vec<(Tick, Vec<(RemoteEntity, RemotePose)>)>,
}

impl Remotes {
    /// Queues the entities of a decoded update, sent at the gateway's `server_tick`, the own
    /// ship left out (it is predicted).
    pub(crate) fn push(&mut self, server_tick: u32, update: &WorldUpdate, own_ship: Option<u64>) {
        let seen = update
            .entities
            .iter()
            .filter(|e| Some(e.id) != own_ship)
            .map(|e| {
                (
                    RemoteEntity {
                        id: e.id,
                        kind: e.kind,
                    },
                    RemotePose {
                        pos: e.pos,
                        vel: e.vel,
                        angle: e.angle,
                    },
                )
            })
            .collect();
        self.pending.push((Tick(server_tick), seen));
    }
}

/// Hands the queued samples to lightyear's interpolation: entities new in view are spawned
/// with their first sample, ones that left get a removal at the tick they left.
fn feed_interpolation(
    mut remotes: ResMut<Remotes>,
    mut histories: Query<&mut ConfirmedHistory<RemotePose>>,
    mut commands: Commands,
) {
    let pending = std::mem::take(&mut remotes.pending);
    // Spawned in this call: not queryable until the commands apply.
    let mut fresh: HashMap<u64, (RemoteEntity, ConfirmedHistory<RemotePose>)> = HashMap::new();
    for (tick, seen) in pending {
        let mut in_view = std::collections::HashSet::with_capacity(seen.len());
        for (remote, pose) in seen {
            in_view.insert(remote.id);
            let known = remotes.by_id.get(&remote.id).copied();
            if let Some(mut history) = known.and_then(|e| histories.get_mut(e).ok()) {
                history.insert_present(tick, pose);
            } else {
                let (_, history) = fresh
                    .entry(remote.id)
                    .or_insert_with(|| (remote, ConfirmedHistory::default()));
                history.insert_present(tick, pose);
            }
        }
        remotes.by_id.retain(|id, entity| {
            if in_view.contains(id) {
                return true;
            }
            if let Ok(mut history) = histories.get_mut(*entity) {
                history.insert_removed(tick);
            }
            commands.entity(*entity).insert(Departed);
            false
        });
        fresh.retain(|id, (_, history)| {
            if in_view.contains(id) {
                return true;
            }
            history.insert_removed(tick);
            false
        });
    }
    for (id, (remote, history)) in fresh {
        // No live RemotePose yet: lightyear inserts it when the interpolation time reaches the
        // first sample.
        let entity = commands.spawn((Interpolated, remote, history)).id();
        remotes.by_id.insert(id, entity);
    }
}

/// Entities that left the view go once lightyear has interpolated them to where they left.
fn despawn_departed(
    gone: Query<Entity, (With<Departed>, Without<RemotePose>)>,
    mut commands: Commands,
) {
    for entity in &gone {
        commands.entity(entity).despawn();
    }
}

pub(crate) fn own_ship(world: &mut World) -> Option<ShipPose> {
    world
        .query_filtered::<&ShipPose, With<Predicted>>()
        .iter(world)
        .next()
        .copied()
}

pub(crate) fn remote(world: &mut World, id: u64) -> Option<RemotePose> {
    world
        .query::<(&RemoteEntity, &RemotePose, Has<Departed>)>()
        .iter(world)
        .filter(|(r, _, _)| r.id == id)
        // One that came back into view is newer than the one still leaving.
        .min_by_key(|(_, _, departed)| *departed)
        .map(|(_, pose, _)| *pose)
}

pub(crate) fn remotes_shown(world: &mut World) -> usize {
    world
        .query_filtered::<(), (With<RemoteEntity>, With<RemotePose>)>()
        .iter(world)
        .count()
}

pub(crate) fn remotes(world: &mut World) -> Vec<(RemoteEntity, RemotePose)> {
    world
        .query::<(&RemoteEntity, &RemotePose)>()
        .iter(world)
        .map(|(r, p)| (*r, *p))
        .collect()
}

/// How often the server disagreed with the own ship's prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PredictionStats {
    /// Rollbacks so far.
    pub rollbacks: u32,
    /// Ticks replayed by them.
    pub rollback_ticks: u32,
}

pub(crate) fn stats(world: &World) -> PredictionStats {
    world
        .get_resource::<PredictionMetrics>()
        .map_or_else(PredictionStats::default, |m| PredictionStats {
            rollbacks: m.rollbacks,
            rollback_ticks: m.rollback_ticks,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pilot(turn: f32) -> PilotCommand {
        PilotCommand {
            thrust: 0.0,
            turn,
            fire: false,
        }
    }

    #[test]
    fn the_command_in_force_is_the_newest_given_at_or_before_the_tick() {
        let mut log = CommandLog::default();
        assert_eq!(log.at(Tick(10)), None);
        log.record(Tick(10), pilot(1.0));
        log.record(Tick(12), pilot(-1.0));
        assert_eq!(log.at(Tick(9)), None);
        assert_eq!(log.at(Tick(11)), Some(pilot(1.0)));
        assert_eq!(log.at(Tick(40)), Some(pilot(-1.0)));
        // A tick given again (after a clock shift) replaces what came after it.
        log.record(Tick(11), pilot(0.5));
        assert_eq!(log.at(Tick(12)), Some(pilot(0.5)));
        for t in 0..1000 {
            log.record(Tick(100 + t), pilot(0.0));
        }
        assert_eq!(log.0.len(), COMMAND_LOG_TICKS);
    }
}
