//! The game protocol: what clients and replication's gateway say to each other over lightyear
//! (netcode over UDP or WebSocket), declared once. Both sides add [`GameProtocolPlugin`] after lightyear's
//! client or server plugins; lightyear refuses a peer whose protocol differs. World state goes
//! through [`codec`], quantized and delta-encoded, as the bytes of a [`StateUpdate`].

pub mod codec;
pub mod ship;

use bevy::app::{App, Plugin};
use lightyear::prelude::input::InputConfig;
use lightyear::prelude::input::native::InputPlugin;
use lightyear::prelude::*;
use serde::{Deserialize, Serialize};
pub use ship::{PilotCommand, RemotePose, ShipPose};

/// Messages that must arrive, in order: the welcome and chat.
pub struct ReliableChannel;

/// World state: a newer update replaces an older one; lost ones are never resent.
pub struct StateChannel;

/// State acknowledgements, client to server: unreliable (a lost one is replaced by the next
/// tick's). The pilot's commands take lightyear's own input path ([`PilotCommand`]).
pub struct InputChannel;

/// First message to a connected player: who it is and what it flies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Welcome {
    pub player_id: u64,
    /// Entity id of the player's ship.
    pub ship: u64,
    pub tick_hz: u32,
    /// World units around the ship within which the player is sent entities.
    pub interest_radius: f32,
    /// Ticks between the gateway's tick of a command and the gateway's tick of the first state
    /// that shows it (the command travels to the shard that flies the ship, and its state back).
    /// The client's prediction applies each command this many ticks late, as the fleet does.
    pub command_delay_ticks: u32,
}

/// To a connection whose player connected again elsewhere: that newer connection is the
/// player's now, and this one ends (the client disconnects at once; the server sends this one
/// nothing more and its slot is freed when it goes).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Superseded;

/// To every connection of a gateway that is stopping (a rollout, a scale-down): connect to
/// another game address of the same token now, without waiting for silence. The session goes
/// on there: same player, same ship.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Draining;

/// One tick's world state for a player, encoded by [`codec::StateEncoder`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StateUpdate {
    /// The gateway's lightyear tick when it sent this: the client's interpolation timeline
    /// follows that clock, not the world's tick inside `bytes`.
    pub server_tick: u32,
    pub bytes: Vec<u8>,
}

/// The client decoded the state update of `tick`; the server encodes later ones against it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct StateAck {
    pub tick: u64,
}

/// What a player sees at a tick, decoded: every entity within its interest radius, its own ship
/// included, ascending by id.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WorldUpdate {
    pub tick: u64,
    pub entities: Vec<SeenEntity>,
}

impl WorldUpdate {
    pub fn get(&self, id: u64) -> Option<&SeenEntity> {
        self.entities
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(|i| &self.entities[i])
    }
}

/// One entity as a player sees it.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SeenEntity {
    pub id: u64,
    /// 0 ship, 1 asteroid, 2 projectile (`sidereal_core::EntityKind`).
    pub kind: u8,
    pub pos: [f32; 2],
    pub vel: [f32; 2],
    pub angle: f32,
    /// Radians per second.
    pub spin: f32,
}

impl From<&sidereal_core::EntitySnapshot> for SeenEntity {
    /// An entity as a player is sent it.
    fn from(s: &sidereal_core::EntitySnapshot) -> Self {
        SeenEntity {
            id: s.id.0,
            kind: s.kind as u8,
            pos: s.state.pos,
            vel: s.state.vel,
            angle: s.state.angle,
            spin: s.state.ang_vel,
        }
    }
}

/// Most characters in one line of chat.
pub const MAX_CHAT_CHARS: usize = 200;

/// A line of chat, client to server. Replication trims it and refuses an empty one, one over
/// [`MAX_CHAT_CHARS`] characters or with control characters, and more than 5 at once then one a
/// second per player ([`ChatRefused`] says why).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatSend {
    pub text: String,
}

/// A line of chat said by a player whose ship was within the interest radius of the listener's
/// (a speaker hears itself: that is the delivery receipt).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatHeard {
    pub player_id: u64,
    pub ship: u64,
    pub text: String,
}

/// Why a line of chat was not relayed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatRefused {
    pub reason: String,
}

pub struct GameProtocolPlugin;

impl Plugin for GameProtocolPlugin {
    fn build(&self, app: &mut App) {
        app.add_channel::<ReliableChannel>(ChannelSettings {
            mode: ChannelMode::OrderedReliable(ReliableSettings::default()),
            ..Default::default()
        })
        .add_direction(NetworkDirection::Bidirectional);
        app.add_channel::<StateChannel>(ChannelSettings {
            mode: ChannelMode::SequencedUnreliable,
            ..Default::default()
        })
        .add_direction(NetworkDirection::ServerToClient);
        app.add_channel::<InputChannel>(ChannelSettings {
            mode: ChannelMode::UnorderedUnreliable,
            ..Default::default()
        })
        .add_direction(NetworkDirection::ClientToServer);
        app.register_message::<Welcome>()
            .add_direction(NetworkDirection::ServerToClient);
        app.register_message::<Superseded>()
            .add_direction(NetworkDirection::ServerToClient);
        app.register_message::<Draining>()
            .add_direction(NetworkDirection::ServerToClient);
        app.register_message::<ChatSend>()
            .add_direction(NetworkDirection::ClientToServer);
        app.register_message::<ChatHeard>()
            .add_direction(NetworkDirection::ServerToClient);
        app.register_message::<ChatRefused>()
            .add_direction(NetworkDirection::ServerToClient);
        app.register_message::<StateUpdate>()
            .add_direction(NetworkDirection::ServerToClient);
        app.register_message::<StateAck>()
            .add_direction(NetworkDirection::ClientToServer);
        // The pilot's commands: lightyear's native inputs, one per tick, not rebroadcast to
        // other players (they see ships move, not their commands).
        app.add_plugins(InputPlugin::<PilotCommand> {
            config: InputConfig {
                rebroadcast_inputs: false,
                ..Default::default()
            },
        });
        // The own ship: replicated to its pilot, predicted there (a no-op on the server).
        app.component::<ShipPose>()
            .replicate()
            .predict()
            .with_rollback_condition(ship::pose_differs);
        // Everything else a player sees: interpolated between world updates.
        app.interpolate_with::<RemotePose>(
            lightyear::interpolation::prelude::InterpolationFns::interpolate(ship::lerp_remote),
        );
    }
}
