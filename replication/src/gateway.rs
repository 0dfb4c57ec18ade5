//! The game port: a lightyear server (netcode over UDP, and over WebSocket for browsers) on its
//! own thread, as a Bevy app.
//! It never touches the authority: it tells replication's runtime who joined and left through
//! one channel, and gets each tick's views (what every player sees) through another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use crossbeam_channel::{Receiver, TryRecvError};
use lightyear::netcode::{Key, NetcodeServer, TokenUserData};
use lightyear::prelude::server::*;
use lightyear::prelude::*;
use sidereal_core::login::GAME_PROTOCOL_ID;
use sidereal_core::{EntityId, EntitySnapshot};
use sidereal_game::codec::StateEncoder;
use sidereal_game::{
    ChatHeard, ChatRefused, ChatSend, GameProtocolPlugin, PilotInput, ReliableChannel, SeenEntity,
    StateAck, StateChannel, StateUpdate, Welcome,
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::chat::{ChatGate, ChatRefusal, listeners};
use crate::login::token::{player_of, ship_of};
use crate::state::GameTraffic;

/// Settings of the game port.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// UDP address to bind.
    pub udp: SocketAddr,
    /// TCP address of the WebSocket port (plain `ws://`; terminate TLS in front of it).
    pub websocket: Option<SocketAddr>,
    /// Addresses clients are told to use when they differ from `udp` (a load balancer, a NAT):
    /// tokens naming them are accepted too.
    pub public: Vec<SocketAddr>,
    pub tick_hz: u32,
    pub interest_radius: f32,
    /// Seconds without a packet before a player is dropped.
    pub client_timeout_secs: i32,
}

/// From the gateway to replication's runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayEvent {
    Joined {
        player_id: u64,
        ship: EntityId,
    },
    Left {
        player_id: u64,
    },
    /// A command as the player sent it (checked by replication, not here).
    Input {
        player_id: u64,
        thrust: f32,
        turn: f32,
        fire: bool,
    },
}

/// One tick's views: per player, what it sees.
#[derive(Debug, Clone, Default)]
pub struct Views {
    pub tick: u64,
    pub per_player: Vec<(u64, Vec<EntitySnapshot>)>,
}

#[derive(Resource)]
struct Channels {
    views: Receiver<Views>,
    events: UnboundedSender<GatewayEvent>,
    traffic: Arc<GameTraffic>,
}

/// A player's state stream: what it has acknowledged, what the next update is encoded against.
#[derive(Component)]
struct Stream(StateEncoder);

/// A player's current, connected session.
type Current = (With<ClientOf>, With<Connected>, Without<Superseded>);

/// Who a connected client is.
#[derive(Component, Clone, Copy)]
struct Player {
    id: u64,
    ship: u64,
}

/// Where each player's ship was in the newest views, for chat.
#[derive(Resource, Default)]
struct ShipPositions(Vec<(u64, [f32; 2])>);

#[derive(Resource, Default)]
struct Chat(ChatGate);

#[derive(Resource, Clone)]
struct Settings {
    tick_hz: u32,
    interest_radius: f32,
}

/// Runs the game port on a thread of its own until the process ends.
pub fn spawn(
    config: GatewayConfig,
    key: Key,
    views: Receiver<Views>,
    events: UnboundedSender<GatewayEvent>,
    traffic: Arc<GameTraffic>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let channels = Channels {
        views,
        events,
        traffic,
    };
    std::thread::Builder::new()
        .name("gateway".into())
        .spawn(move || {
            build_app(config, key, channels).run();
        })
}

fn build_app(config: GatewayConfig, key: Key, channels: Channels) -> App {
    let tick = Duration::from_secs_f64(1.0 / f64::from(config.tick_hz.max(1)));
    let mut app = App::new();
    app.add_plugins(MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(tick / 2)));
    // lightyear's replication (Replicon) keeps its server and client state in Bevy states.
    app.add_plugins(bevy::state::app::StatesPlugin);
    app.add_plugins(ServerPlugins {
        tick_duration: tick,
    });
    app.add_plugins(GameProtocolPlugin);
    app.insert_resource(channels);
    app.insert_resource(Settings {
        tick_hz: config.tick_hz,
        interest_radius: config.interest_radius,
    });
    app.add_observer(player_connected);
    app.add_observer(player_disconnected);
    app.init_resource::<ShipPositions>();
    app.init_resource::<Sessions>();
    app.init_resource::<Chat>();
    app.add_systems(
        Update,
        (forward_inputs, receive_acks, send_views, relay_chat),
    );
    let udp = config.udp;
    let netcode = NetcodeConfig::default()
        .with_protocol_id(GAME_PROTOCOL_ID)
        .with_key(key)
        .with_client_timeout_secs(config.client_timeout_secs)
        .with_additional_expected_addresses(config.public.clone());
    let websocket = config.websocket;
    app.add_systems(Startup, move |mut commands: Commands| {
        let server = commands
            .spawn((
                Name::new("game-udp"),
                NetcodeServer::new(netcode.clone()),
                LocalAddr(udp),
                ServerUdpIo::default(),
            ))
            .id();
        commands.trigger(Start { entity: server });
        info!(%udp, "game port listening (netcode over UDP)");
        // The same netcode, key and protocol over WebSocket: one token serves both.
        if let Some(ws) = websocket {
            let io = WebSocketServerIo {
                config: ServerConfig::builder()
                    .with_bind_address(ws)
                    .with_no_encryption(),
            };
            let server = commands
                .spawn((
                    Name::new("game-ws"),
                    NetcodeServer::new(netcode.clone()),
                    LocalAddr(ws),
                    io,
                ))
                .id();
            commands.trigger(Start { entity: server });
            info!(%ws, "game port listening (netcode over WebSocket)");
        }
    });
    app
}

/// Each player's current session (its newest connection). A player who drops and connects
/// again before the old connection times out gets a new session at once; the old one is
/// marked [`Superseded`]: it is sent nothing, its commands are ignored, and its timeout does not
/// make the player leave.
#[derive(Resource, Default)]
struct Sessions(HashMap<u64, Entity>);

#[derive(Component)]
struct Superseded;

fn player_connected(
    trigger: On<Add, Connected>,
    mut clients: Query<(&TokenUserData, &mut MessageSender<Welcome>), With<ClientOf>>,
    channels: Res<Channels>,
    settings: Res<Settings>,
    mut sessions: ResMut<Sessions>,
    mut commands: Commands,
) {
    let Ok((user_data, mut welcome)) = clients.get_mut(trigger.entity) else {
        return;
    };
    let (player_id, ship) = (player_of(&user_data.0), ship_of(&user_data.0));
    if let Some(old) = sessions.0.insert(player_id, trigger.entity) {
        info!(
            player_id,
            "player connected again; the old connection is superseded"
        );
        commands.entity(old).try_insert(Superseded);
    } else {
        info!(player_id, ship, "player connected");
    }
    commands.entity(trigger.entity).insert((
        Stream(StateEncoder::new(settings.tick_hz)),
        Player {
            id: player_id,
            ship,
        },
    ));
    welcome.send::<ReliableChannel>(Welcome {
        player_id,
        ship,
        tick_hz: settings.tick_hz,
        interest_radius: settings.interest_radius,
    });
    let _ = channels.events.send(GatewayEvent::Joined {
        player_id,
        ship: EntityId(ship),
    });
}

fn player_disconnected(
    trigger: On<Add, Disconnected>,
    clients: Query<&Player, With<ClientOf>>,
    channels: Res<Channels>,
    mut sessions: ResMut<Sessions>,
) {
    let Ok(player) = clients.get(trigger.entity) else {
        return;
    };
    // Only the current session's end is the player's.
    if sessions.0.get(&player.id) == Some(&trigger.entity) {
        sessions.0.remove(&player.id);
        info!(player_id = player.id, "player disconnected");
        let _ = channels.events.send(GatewayEvent::Left {
            player_id: player.id,
        });
    }
}

/// Passes each player's commands on to replication's runtime as they came.
fn forward_inputs(
    channels: Res<Channels>,
    mut clients: Query<(&Player, &mut MessageReceiver<PilotInput>), Current>,
) {
    for (player, mut inputs) in &mut clients {
        let player_id = player.id;
        for i in inputs.receive() {
            let _ = channels.events.send(GatewayEvent::Input {
                player_id,
                thrust: i.thrust,
                turn: i.turn,
                fire: i.fire,
            });
        }
    }
}

/// Acknowledged updates become the baselines of the next ones.
fn receive_acks(mut clients: Query<(&mut Stream, &mut MessageReceiver<StateAck>), With<ClientOf>>) {
    for (mut stream, mut acks) in &mut clients {
        for ack in acks.receive() {
            stream.0.acknowledge(ack.tick);
        }
    }
}

type ConnectedClient<'a> = (
    &'a Player,
    &'a mut Stream,
    &'a mut MessageSender<StateUpdate>,
);

/// Sends each connected player the newest views, encoded against what it acknowledged; older
/// views still queued are skipped.
fn send_views(
    channels: Res<Channels>,
    mut clients: Query<ConnectedClient, Current>,
    mut ships: ResMut<ShipPositions>,
) {
    let mut newest = None;
    loop {
        match channels.views.try_recv() {
            Ok(v) => newest = Some(v),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                warn!("replication stopped sending views");
                break;
            }
        }
    }
    let Some(views) = newest else {
        return;
    };
    let by_player: std::collections::HashMap<u64, &Vec<EntitySnapshot>> =
        views.per_player.iter().map(|(p, v)| (*p, v)).collect();
    let (mut bytes, mut updates, mut entities) = (0, 0, 0);
    let mut seen_buf = Vec::new();
    ships.0.clear();
    for (player, mut stream, mut sender) in &mut clients {
        let Some(seen) = by_player.get(&player.id) else {
            continue;
        };
        // The interest views put the player's ship first.
        if let Some(me) = seen.first().filter(|e| e.id.0 == player.ship) {
            ships.0.push((player.id, me.state.pos));
        }
        seen_buf.clear();
        seen_buf.extend(seen.iter().map(seen_entity));
        let encoded = stream.0.encode(views.tick, &seen_buf);
        bytes += encoded.len() as u64;
        updates += 1;
        entities += seen.len() as u64;
        sender.send::<StateChannel>(StateUpdate { bytes: encoded });
    }
    let traffic = &channels.traffic;
    traffic.state_bytes.fetch_add(bytes, Ordering::Relaxed);
    traffic.state_updates.fetch_add(updates, Ordering::Relaxed);
    traffic
        .entity_updates
        .fetch_add(entities, Ordering::Relaxed);
}

type Speaker<'a> = (&'a Player, &'a mut MessageReceiver<ChatSend>);
type Listener<'a> = (
    &'a Player,
    &'a mut MessageSender<ChatHeard>,
    &'a mut MessageSender<ChatRefused>,
);

/// Relays each admitted line of chat to the players whose ships are within the interest radius
/// of the speaker's; tells the speaker why a line was refused.
fn relay_chat(
    mut speakers: Query<Speaker, Current>,
    mut listeners_q: Query<Listener, Current>,
    ships: Res<ShipPositions>,
    settings: Res<Settings>,
    channels: Res<Channels>,
    mut chat: ResMut<Chat>,
) {
    let now = std::time::Instant::now();
    let mut said: Vec<(Player, Result<String, ChatRefusal>)> = Vec::new();
    for (player, mut lines) in &mut speakers {
        for line in lines.receive() {
            let admitted = chat.0.admit(player.id, &line.text, now).map(str::to_owned);
            said.push((*player, admitted));
        }
    }
    if said.is_empty() {
        return;
    }
    for (speaker, admitted) in said {
        let at = ships
            .0
            .iter()
            .find(|(p, _)| *p == speaker.id)
            .map(|(_, at)| *at);
        let result = admitted.and_then(|text| at.map(|at| (text, at)).ok_or(ChatRefusal::NoShip));
        match result {
            Ok((text, at)) => {
                let hear = listeners(at, &ships.0, settings.interest_radius);
                for (player, mut heard, _) in &mut listeners_q {
                    if hear.contains(&player.id) {
                        heard.send::<ReliableChannel>(ChatHeard {
                            player_id: speaker.id,
                            ship: speaker.ship,
                            text: text.clone(),
                        });
                    }
                }
                chat.0.delivered();
            }
            Err(why) => {
                if why == ChatRefusal::NoShip {
                    chat.0.refused(why);
                }
                if let Some((_, _, mut refused)) =
                    listeners_q.iter_mut().find(|(p, _, _)| p.id == speaker.id)
                {
                    refused.send::<ReliableChannel>(ChatRefused {
                        reason: why.to_string(),
                    });
                }
            }
        }
    }
    *channels.traffic.chat.lock().expect("chat counts") = chat.0.counts().clone();
}

/// An entity as a player is sent it.
pub fn seen_entity(s: &EntitySnapshot) -> SeenEntity {
    SeenEntity {
        id: s.id.0,
        kind: s.kind as u8,
        pos: s.state.pos,
        vel: s.state.vel,
        angle: s.state.angle,
        spin: s.state.ang_vel,
    }
}
