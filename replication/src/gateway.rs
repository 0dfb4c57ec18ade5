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
use lightyear::core::tick::TickDuration;
use lightyear::netcode::{Key, NetcodeServer, TokenUserData};
use lightyear::prelude::input::native::NativeBuffer;
use lightyear::prelude::server::*;
use lightyear::prelude::*;
use sidereal_core::login::GAME_PROTOCOL_ID;
use sidereal_core::{EntityId, EntitySnapshot};
use sidereal_game::codec::StateEncoder;
use sidereal_game::{
    ChatHeard, ChatRefused, ChatSend, Draining, GameProtocolPlugin, PilotCommand, ReliableChannel,
    ShipPose, StateAck, StateChannel, StateUpdate, Superseded, Welcome,
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::login::token::{player_of, ship_of};
use crate::rules::chat::{ChatGate, ChatRefusal, listeners};
use crate::rules::interest::PlayerView;
use crate::rules::sessions::SessionGate;
use crate::state::GameTraffic;
pub use sidereal_core::gateway_link::ChatLine;

/// Settings of the game port.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// UDP address to bind.
    pub udp: SocketAddr,
    /// TCP address of the WebSocket port.
    pub websocket: Option<SocketAddr>,
    /// TLS for the WebSocket port (`wss://`); `None` serves plain `ws://`.
    pub websocket_tls: Option<Arc<rustls::ServerConfig>>,
    /// Addresses clients are told to use when they differ from `udp` (a load balancer, a NAT):
    /// tokens naming them are accepted too.
    pub public: Vec<SocketAddr>,
    pub tick_hz: u32,
    pub interest_radius: f32,
    /// Seconds without a packet before a player is dropped.
    pub client_timeout_secs: i32,
    /// Connections each transport (UDP, WebSocket) takes at most; netcode answers more with
    /// "server full".
    pub max_clients: usize,
    /// Ticks from the gateway's tick of a command to the gateway's tick of the first state that
    /// shows it (the round trip to the shard that flies the ship). Told to clients, whose
    /// prediction applies commands as late; see [`DEFAULT_COMMAND_DELAY_TICKS`].
    pub command_delay_ticks: u32,
}

/// Measured on loopback: a command reaches the shard within the gateway's next tick and the
/// shard's state of the tick after comes back in the views of the one after that.
pub const DEFAULT_COMMAND_DELAY_TICKS: u32 = 2;

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
    /// A command as the player sent it (checked by whoever receives the event, not here).
    Input {
        player_id: u64,
        command: PilotCommand,
    },
    /// A line of chat admitted and delivered here, for the players of other gateways (sent
    /// only by a gateway with [`GatewayIo::elsewhere`]).
    Chat(ChatLine),
}

/// What players on other gateways did that players here must learn.
#[derive(Debug, Clone, PartialEq)]
pub enum FromElsewhere {
    /// Said on another gateway: heard here by players within the radius of `at`.
    Chat(ChatLine),
    /// The player connected on another gateway: its session here ends without a `Left`.
    Superseded { player_id: u64 },
    /// This gateway is stopping: every player here, and any that connects from now on, is told
    /// to connect to another gateway (`Draining`).
    Drain,
}

/// The game port's connections to the rest of its process.
pub struct GatewayIo {
    /// Each tick's views, newest last.
    pub views: Receiver<Views>,
    pub events: UnboundedSender<GatewayEvent>,
    /// `Some` for a gateway among several (`sidereal gateway`): chat and sessions from the
    /// others come in here, and chat said here goes out as [`GatewayEvent::Chat`].
    pub elsewhere: Option<Receiver<FromElsewhere>>,
    pub traffic: Arc<GameTraffic>,
    pub sessions: SessionGate,
}

/// One tick's views: per player, what it sees.
#[derive(Debug, Clone, Default)]
pub struct Views {
    pub tick: u64,
    pub per_player: Vec<(u64, PlayerView)>,
}

#[derive(Resource)]
struct Channels {
    views: Receiver<Views>,
    events: UnboundedSender<GatewayEvent>,
    elsewhere: Option<Receiver<FromElsewhere>>,
    traffic: Arc<GameTraffic>,
}

/// A player's state stream: what it has acknowledged, what the next update is encoded against.
#[derive(Component)]
struct Stream(StateEncoder);

/// A player's current, connected session.
type Current = (With<ClientOf>, With<Connected>, Without<SupersededSession>);

/// Who a connected client is.
#[derive(Component, Clone, Copy)]
struct Player {
    id: u64,
    ship: u64,
}

/// A player's ship as lightyear replicates it to that player alone ([`ShipPose`], predicted by
/// its client), controlled by the player's link: lightyear's native inputs for it arrive here.
/// Spawned when the ship first shows in the views; despawned with the link.
#[derive(Component)]
struct PilotedShip {
    player_id: u64,
    link: Entity,
    /// The last command passed on: the authority holds it until another replaces it.
    forwarded: Option<PilotCommand>,
}

/// Each link's piloted ship entity.
#[derive(Component)]
struct Body(Entity);

/// Where each player's ship was in the newest views, for chat.
#[derive(Resource, Default)]
struct ShipPositions(Vec<(u64, [f32; 2])>);

#[derive(Resource, Default)]
struct Chat(ChatGate);

/// This gateway is stopping: players are sent on to other gateways.
#[derive(Resource, Default)]
struct DrainingNow(bool);

#[derive(Resource, Clone)]
struct Settings {
    tick_hz: u32,
    interest_radius: f32,
    command_delay_ticks: u32,
}

/// Runs the game port on a thread of its own until the process ends.
pub fn spawn(
    config: GatewayConfig,
    key: Key,
    io: GatewayIo,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let sessions = io.sessions;
    let channels = Channels {
        views: io.views,
        events: io.events,
        elsewhere: io.elsewhere,
        traffic: io.traffic,
    };
    std::thread::Builder::new()
        .name("gateway".into())
        .spawn(move || {
            build_app(config, key, channels, sessions).run();
        })
}

/// The session limits, for the connection observers (lightyear's request hook holds a clone).
#[derive(Resource, Clone)]
struct SessionLimitsGate(SessionGate);

fn build_app(config: GatewayConfig, key: Key, channels: Channels, sessions: SessionGate) -> App {
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
    app.insert_resource(SessionLimitsGate(sessions.clone()));
    app.insert_resource(Settings {
        tick_hz: config.tick_hz,
        interest_radius: config.interest_radius,
        command_delay_ticks: config.command_delay_ticks,
    });
    app.add_observer(player_connected);
    app.add_observer(player_disconnected);
    app.init_resource::<ShipPositions>();
    app.init_resource::<Sessions>();
    app.init_resource::<Chat>();
    app.init_resource::<DrainingNow>();
    app.add_systems(Update, (receive_acks, relay_chat, hear_elsewhere));
    // In the fixed tick, so the ship states written here carry the tick lightyear stamps them
    // with, and each command is read for its own tick.
    app.add_systems(FixedUpdate, (forward_inputs, send_views).chain());
    let udp = config.udp;
    let netcode = NetcodeConfig::default()
        .with_protocol_id(GAME_PROTOCOL_ID)
        .with_key(key)
        .with_client_timeout_secs(config.client_timeout_secs)
        .with_max_clients(config.max_clients)
        // Sessions per player and per address are capped before netcode gives out a slot.
        .with_connection_request_handler(Arc::new(sessions))
        .with_additional_expected_addresses(config.public.clone());
    let websocket = config.websocket;
    let websocket_tls = config.websocket_tls.clone();
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
            let builder = ServerConfig::builder().with_bind_address(ws);
            let io = WebSocketServerIo {
                config: match websocket_tls.clone() {
                    Some(tls) => builder.with_tls_config(tls),
                    None => builder.with_no_encryption(),
                },
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
/// marked [`SupersededSession`] and told [`Superseded`]: it is sent nothing, its commands are ignored, and its timeout does not
/// make the player leave.
#[derive(Resource, Default)]
struct Sessions(HashMap<u64, Entity>);

#[derive(Component)]
struct SupersededSession;

/// What the connection observer sends a player's links: the welcome to the new one, and the
/// notice to the one it supersedes.
type Greeting<'a> = (
    &'a TokenUserData,
    &'a RemoteId,
    &'a mut MessageSender<Welcome>,
    &'a mut MessageSender<Superseded>,
);

fn player_connected(
    trigger: On<Add, Connected>,
    mut clients: Query<Greeting, With<ClientOf>>,
    (channels, settings): (Res<Channels>, Res<Settings>),
    limits: Res<SessionLimitsGate>,
    mut sessions: ResMut<Sessions>,
    (draining, mut move_on): (Res<DrainingNow>, Query<&mut MessageSender<Draining>>),
    mut commands: Commands,
) {
    let Ok((user_data, remote, _, _)) = clients.get(trigger.entity) else {
        return;
    };
    if draining.0
        && let Ok(mut tell) = move_on.get_mut(trigger.entity)
    {
        // A token names this gateway among others: the client tries the next one.
        tell.send::<ReliableChannel>(Draining);
    }
    if let PeerId::Netcode(session) = remote.0 {
        limits.0.lock().connected(session);
    }
    let (player_id, ship) = (player_of(&user_data.0), ship_of(&user_data.0));
    if let Some(old) = sessions.0.insert(player_id, trigger.entity) {
        info!(
            player_id,
            "player connected again; the old connection is superseded"
        );
        commands.entity(old).try_insert(SupersededSession);
        // Told, the old client disconnects at once instead of holding a slot until it times out.
        if let Ok((_, _, _, mut tell)) = clients.get_mut(old) {
            tell.send::<ReliableChannel>(Superseded);
        }
    } else {
        info!(player_id, ship, "player connected");
    }
    commands.entity(trigger.entity).insert((
        Stream(StateEncoder::new(settings.tick_hz)),
        Player {
            id: player_id,
            ship,
        },
        // lightyear replicates the player's own ship over this link.
        ReplicationSender,
    ));
    if let Ok((_, _, mut welcome, _)) = clients.get_mut(trigger.entity) {
        welcome.send::<ReliableChannel>(Welcome {
            player_id,
            ship,
            tick_hz: settings.tick_hz,
            interest_radius: settings.interest_radius,
            command_delay_ticks: settings.command_delay_ticks,
        });
    }
    let _ = channels.events.send(GatewayEvent::Joined {
        player_id,
        ship: EntityId(ship),
    });
}

fn player_disconnected(
    trigger: On<Add, Disconnected>,
    clients: Query<(Option<&Player>, Option<&RemoteId>), With<ClientOf>>,
    channels: Res<Channels>,
    limits: Res<SessionLimitsGate>,
    mut sessions: ResMut<Sessions>,
) {
    let Ok((player, remote)) = clients.get(trigger.entity) else {
        return;
    };
    // Whatever session this was, its slot is free.
    if let Some(RemoteId(PeerId::Netcode(session))) = remote {
        limits.0.lock().ended(*session);
    }
    let Some(player) = player else {
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

/// Passes each player's command for this tick (lightyear's input buffer; the last one held when
/// none came for it) on to replication's runtime when it changed. One per tick at most, however
/// many input messages a client sends.
fn forward_inputs(
    channels: Res<Channels>,
    timeline: Res<LocalTimeline>,
    tick_duration: Res<TickDuration>,
    mut ships: Query<(&mut PilotedShip, &mut NativeBuffer<PilotCommand>)>,
    current: Query<(), Current>,
) {
    let tick = timeline.tick();
    for (mut ship, mut buffer) in &mut ships {
        let command = buffer
            .get(tick)
            .map(|a| a.0)
            .or_else(|| buffer.predict(tick, tick_duration.0).map(|a| a.0));
        // Older ticks are done with. (lightyear's own step that does this needs one server; the
        // gateway runs two, UDP and WebSocket.)
        buffer.pop_keeping_last(tick);
        let Some(command) = command else { continue };
        if ship.forwarded == Some(command) || current.get(ship.link).is_err() {
            continue;
        }
        ship.forwarded = Some(command);
        let _ = channels.events.send(GatewayEvent::Input {
            player_id: ship.player_id,
            command,
        });
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
    Entity,
    &'a Player,
    &'a mut Stream,
    &'a mut MessageSender<StateUpdate>,
    Option<&'a Body>,
);

/// Sends each connected player the newest views, encoded against what it acknowledged; older
/// views still queued are skipped.
fn send_views(
    channels: Res<Channels>,
    timeline: Res<LocalTimeline>,
    time: Res<Time>,
    mut clients: Query<ConnectedClient, Current>,
    mut bodies: Query<&mut ShipPose>,
    mut ships: ResMut<ShipPositions>,
    mut commands: Commands,
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
        // The fleet's ticks and this one are not phase-locked: a tick without new views carries
        // the ships on by their motion, so the state each pilot's client compares its
        // prediction with moves every tick.
        for mut pose in &mut bodies {
            *pose = sidereal_game::ship::fly(*pose, None, time.delta_secs());
        }
        return;
    };
    let mut by_player: std::collections::HashMap<u64, PlayerView> =
        views.per_player.into_iter().collect();
    let (mut bytes, mut updates, mut entities) = (0, 0, 0);
    ships.0.clear();
    let server_tick = timeline.tick().0;
    for (link, player, mut stream, mut sender, body) in &mut clients {
        let Some(view) = by_player.remove(&player.id) else {
            continue;
        };
        if let Some(me) = view.ship.filter(|e| e.id.0 == player.ship) {
            ships.0.push((player.id, me.state.pos));
            let pose = ship_pose(&me);
            match body.map(|b| bodies.get_mut(b.0)) {
                Some(Ok(mut current)) => *current = pose,
                Some(Err(_)) => {}
                None => {
                    let body = commands
                        .spawn((
                            Name::new("piloted-ship"),
                            PilotedShip {
                                player_id: player.id,
                                link,
                                forwarded: None,
                            },
                            pose,
                            Replicate::manual(vec![link]),
                            PredictionTarget::manual(vec![link]),
                            ControlledBy {
                                owner: link,
                                lifetime: Lifetime::SessionBased,
                            },
                        ))
                        .id();
                    commands.entity(link).insert(Body(body));
                }
            }
        }
        entities += view.seen.entities.len() as u64;
        let encoded = stream.0.encode_snapshot(view.seen);
        bytes += encoded.len() as u64;
        updates += 1;
        sender.send::<StateChannel>(StateUpdate {
            server_tick,
            bytes: encoded,
        });
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
                let line = ChatLine {
                    player_id: speaker.id,
                    ship: speaker.ship,
                    at,
                    text,
                };
                deliver(&line, &ships.0, settings.interest_radius, &mut listeners_q);
                chat.0.delivered();
                if channels.elsewhere.is_some() {
                    let _ = channels.events.send(GatewayEvent::Chat(line));
                }
            }
            Err(why) => {
                if why == ChatRefusal::NoShip {
                    chat.0.refused(why);
                }
                if !chat.0.answer_refusal(speaker.id, now) {
                    continue;
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

/// Sends `line` to the players here whose ships are within `radius` of where it was said.
fn deliver(
    line: &ChatLine,
    ships: &[(u64, [f32; 2])],
    radius: f32,
    listeners_q: &mut Query<Listener, Current>,
) {
    let hear = listeners(line.at, ships, radius);
    for (player, mut heard, _) in listeners_q {
        if hear.contains(&player.id) {
            heard.send::<ReliableChannel>(ChatHeard {
                player_id: line.player_id,
                ship: line.ship,
                text: line.text.clone(),
            });
        }
    }
}

/// What players on other gateways did: their chat heard here, and sessions here that a
/// connection elsewhere superseded (told, and forgotten without a `Left`); and this gateway's
/// own drain (every player told to move on).
fn hear_elsewhere(
    (channels, ships, settings): (Res<Channels>, Res<ShipPositions>, Res<Settings>),
    mut listeners_q: Query<Listener, Current>,
    mut notices: Query<&mut MessageSender<Superseded>>,
    mut move_on: Query<&mut MessageSender<Draining>>,
    mut draining: ResMut<DrainingNow>,
    mut sessions: ResMut<Sessions>,
    mut commands: Commands,
) {
    let Some(elsewhere) = &channels.elsewhere else {
        return;
    };
    while let Ok(news) = elsewhere.try_recv() {
        match news {
            FromElsewhere::Drain => {
                if !draining.0 {
                    info!(
                        players = sessions.0.len(),
                        "draining: telling every player to move to another gateway"
                    );
                }
                draining.0 = true;
                for link in sessions.0.values() {
                    if let Ok(mut tell) = move_on.get_mut(*link) {
                        tell.send::<ReliableChannel>(Draining);
                    }
                }
            }
            FromElsewhere::Chat(line) => {
                deliver(&line, &ships.0, settings.interest_radius, &mut listeners_q);
            }
            FromElsewhere::Superseded { player_id } => {
                let Some(link) = sessions.0.remove(&player_id) else {
                    continue;
                };
                info!(
                    player_id,
                    "player connected on another gateway; this session ends"
                );
                commands.entity(link).try_insert(SupersededSession);
                if let Ok(mut tell) = notices.get_mut(link) {
                    tell.send::<ReliableChannel>(Superseded);
                }
            }
        }
    }
}

/// A piloted ship's state as lightyear replicates it to its pilot.
fn ship_pose(s: &EntitySnapshot) -> ShipPose {
    ShipPose {
        pos: s.state.pos,
        vel: s.state.vel,
        angle: s.state.angle,
        spin: s.state.ang_vel,
    }
}
