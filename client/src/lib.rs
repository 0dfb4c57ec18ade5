//! The headless game client: logs in over replication's HTTP API and plays over the game port
//! (lightyear, netcode over UDP or WebSocket). Bots and tests drive it by calling
//! [`GameClient::update`]; it keeps what the server said in [`Received`].
//!
//! The own ship is predicted with lightyear's prediction ([`GameClient::own_ship`]): commands
//! move it at once, and a server state that disagrees rolls it back and replays. Everything else
//! in view is interpolated by lightyear's interpolation between world updates
//! ([`GameClient::remote`]).

pub mod latency;
mod prediction;
pub mod swarm;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use lightyear::netcode::ConnectToken;
use lightyear::prelude::client::*;
use lightyear::prelude::*;
use sidereal_core::login::{Credentials, LoginReply};
use sidereal_game::codec::StateDecoder;
pub use sidereal_game::{ChatHeard, ChatRefused, SeenEntity, Welcome, WorldUpdate};
use sidereal_game::{
    ChatSend, Draining, GameProtocolPlugin, InputChannel, ReliableChannel, StateAck, StateUpdate,
    Superseded,
};
pub use sidereal_game::{PilotCommand, RemotePose, ShipPose};

use prediction::{Command, Remotes};
pub use prediction::{PredictionStats, RemoteEntity};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("login request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("login refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the connect token is not valid base64: {0}")]
    TokenEncoding(#[from] base64::DecodeError),
    #[error("the connect token is malformed: {0}")]
    Token(String),
}

/// Registers (`register: true`) or logs in at `http` (e.g. `http://127.0.0.1:7700`).
pub async fn login(
    client: &reqwest::Client,
    http: &str,
    credentials: &Credentials,
    register: bool,
) -> Result<LoginReply, ClientError> {
    let path = if register { "accounts" } else { "login" };
    let r = client
        .post(format!("{http}/v1/{path}"))
        .json(credentials)
        .send()
        .await?;
    let status = r.status().as_u16();
    if !r.status().is_success() {
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        return Err(ClientError::Refused {
            status,
            message: body["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned(),
        });
    }
    Ok(r.json().await?)
}

/// What the server has sent so far.
#[derive(Resource, Debug, Default)]
pub struct Received {
    pub welcome: Option<Welcome>,
    /// The newest world update, decoded.
    pub latest: Option<WorldUpdate>,
    /// World updates decoded.
    pub updates: u64,
    /// Bytes of the encoded world updates received (before lightyear's framing).
    pub state_bytes: u64,
    /// Updates that did not decode (their baseline was lost); the next acknowledged one
    /// recovers.
    pub undecodable: u64,
    /// Input-to-state latency of the pilot's turn commands.
    pub turn_latency: latency::TurnProbe,
    /// Chat heard (own lines included), oldest first.
    pub chat: Vec<ChatHeard>,
    /// Why lines this player said were refused.
    pub chat_refused: Vec<String>,
    /// The player connected again elsewhere, and this connection ended.
    pub superseded: bool,
    /// The game server said it is stopping: a client failing over moves on at once.
    pub draining: bool,
}

/// The client's side of the state stream, from the welcome on.
#[derive(Resource, Default)]
struct Decoder(Option<StateDecoder>);

/// One player's connection to the game port.
pub struct GameClient {
    app: App,
    entity: Entity,
    pub login: LoginReply,
    transport: Transport,
    mode: ClientMode,
    failover: Option<Failover>,
}

/// A client that moves to the next game address of its token when its own falls silent.
#[derive(Debug, Clone, Copy)]
struct Failover {
    /// No world update for this long (a gateway sends one every tick) means the gateway is gone.
    silence: Duration,
    last_heard: Instant,
    seen_updates: u64,
    /// Not before this instant; the wait doubles while attempts fail (to 2 s), reset by an update.
    next_try: Instant,
    backoff: Duration,
    /// The player said goodbye: no more reconnecting.
    left: bool,
    reconnects: u64,
    why: ReconnectReasons,
}

/// Why a client connected again, counted by reason ([`GameClient::reconnect_reasons`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconnectReasons {
    /// Its server said it is stopping (a gateway draining).
    pub drained: u64,
    /// The connection ended (a goodbye, a timeout).
    pub dropped: u64,
    /// A new connection not up within [`CONNECT_WITHIN`] (an address that does not answer).
    pub unanswered: u64,
    /// Connected, but no world update for the whole silence.
    pub silent: u64,
}

/// The first wait between two reconnect attempts, and the longest.
const FAILOVER_FIRST: Duration = Duration::from_millis(250);
const FAILOVER_MAX: Duration = Duration::from_secs(2);

/// A connection not up within this (or the silence, if shorter) is given up for the next
/// address. A handshake takes a few round trips; an address that swallows packets (a load
/// balancer still sending new connections to a pod that is gone) would otherwise cost the
/// whole silence before the next try.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// How much of a player's client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientMode {
    /// Everything a player's client does: the own ship predicted, the others interpolated.
    #[default]
    Full,
    /// Decode, acknowledge and pilot only: no prediction, no interpolated entities. What the
    /// gateway sees of it is the same (the same updates, acknowledgements and commands) at a
    /// fraction of a full client's CPU, so one core drives hundreds for load tests.
    Light,
}

/// How a client reaches the game port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Netcode over UDP, to the first of the login's `servers`.
    Udp,
    /// Netcode over WebSocket (plain ws://), to the first of the login's `websocket` addresses:
    /// what a browser build uses.
    WebSocket,
}

impl GameClient {
    /// Starts connecting with the token of `login` to its first UDP server.
    pub fn connect(login: LoginReply) -> Result<Self, ClientError> {
        Self::connect_via(login, Transport::Udp)
    }

    /// Starts connecting with the token of `login` over `transport`.
    pub fn connect_via(login: LoginReply, transport: Transport) -> Result<Self, ClientError> {
        Self::connect_as(login, transport, ClientMode::Full)
    }

    /// Starts connecting with the token of `login` over `transport`, running `mode`.
    pub fn connect_as(
        login: LoginReply,
        transport: Transport,
        mode: ClientMode,
    ) -> Result<Self, ClientError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(&login.token)?;
        let token =
            ConnectToken::try_from_bytes(&bytes).map_err(|e| ClientError::Token(e.to_string()))?;
        let mut app = App::new();
        app.add_plugins(MinimalPlugins.build().disable::<ScheduleRunnerPlugin>());
        // lightyear's replication (Replicon) keeps its server and client state in Bevy states.
        app.add_plugins(bevy::state::app::StatesPlugin);
        app.add_plugins(ClientPlugins {
            tick_duration: Duration::from_secs_f64(1.0 / 30.0),
        });
        app.add_plugins(GameProtocolPlugin);
        app.add_plugins(prediction::CommandPlugin);
        if mode == ClientMode::Full {
            app.add_plugins(prediction::PredictionPlugin);
        }
        app.init_resource::<Received>();
        app.init_resource::<Decoder>();
        app.add_systems(
            Update,
            (
                receive.before(prediction::FeedInterpolation),
                leave_when_superseded,
                note_draining,
            ),
        );
        // The app is stepped by hand, not run: plugins that finish their setup late (lightyear's
        // transport adds its systems in `finish`) need these two calls.
        app.finish();
        app.cleanup();
        let netcode = NetcodeClient::new(Authentication::Token(token), NetcodeConfig::default())
            .map_err(|e| ClientError::Token(e.to_string()))?;
        let addresses = match transport {
            Transport::Udp => &login.servers,
            Transport::WebSocket => &login.websocket,
        };
        let server = addresses
            .first()
            .and_then(|s| s.parse::<SocketAddr>().ok())
            .ok_or_else(|| ClientError::Token(format!("no {transport:?} game address")))?;
        // As lightyear's own tests do: the transport first, then netcode on top of it.
        let entity = app
            .world_mut()
            .spawn((
                Client,
                // Receiving messages needs the manager; nothing else brings it on a client.
                MessageManager::default(),
                // The own ship comes through lightyear's replication.
                ReplicationReceiver,
                PeerAddr(server),
            ))
            .id();
        match transport {
            Transport::Udp => {
                app.world_mut().entity_mut(entity).insert((
                    LocalAddr(SocketAddr::from(([0, 0, 0, 0], 0))),
                    UdpIo::default(),
                ));
            }
            Transport::WebSocket => {
                // Commands are small and due now: no Nagle delay.
                let config = ClientConfig::builder()
                    .with_no_encryption()
                    .with_nagle(false);
                let io = WebSocketClientIo::from_url(config, format!("ws://{server}"));
                app.world_mut().entity_mut(entity).insert(io);
            }
        }
        app.world_mut().entity_mut(entity).insert(netcode);
        // lightyear's netcode client points the link at the token's first address (its insert
        // hook, applied at the flush); a token naming several gateways may be used at any of
        // them, so the chosen one goes back.
        app.world_mut().flush();
        if transport == Transport::Udp {
            app.world_mut().entity_mut(entity).insert(PeerAddr(server));
        }
        app.world_mut().trigger(Connect { entity });
        Ok(Self {
            app,
            entity,
            login,
            transport,
            mode,
            failover: None,
        })
    }

    /// Runs one frame: sends and receives what is due.
    pub fn update(&mut self) {
        self.app.update();
        self.fail_over_when_silent();
    }

    /// From now on, when no world update comes for `silence` (or the connection ends, or is
    /// not up within [`CONNECT_WITHIN`], or the server says it is draining), connect again by
    /// itself with the same token, to the next game address it names (another gateway; the same
    /// one when it names only one), waiting 0.25 s doubling to 2 s between attempts. A superseded session or [`GameClient::disconnect`] ends it for good. What
    /// [`GameClient::received`] holds starts afresh on each new connection.
    pub fn fail_over_after(&mut self, silence: Duration) {
        let now = Instant::now();
        self.failover = Some(Failover {
            silence,
            last_heard: now,
            seen_updates: self.received().updates,
            next_try: now,
            backoff: FAILOVER_FIRST,
            left: false,
            reconnects: 0,
            why: ReconnectReasons::default(),
        });
    }

    /// Whether a lost connection is opened again by itself ([`GameClient::fail_over_after`],
    /// and neither superseded nor ended by [`GameClient::disconnect`]).
    pub fn fails_over(&self) -> bool {
        self.failover.is_some_and(|f| !f.left) && !self.received().superseded
    }

    /// Connections opened again by [`GameClient::fail_over_after`].
    pub fn reconnects(&self) -> u64 {
        self.failover.map_or(0, |f| f.reconnects)
    }

    /// Why they were opened again.
    pub fn reconnect_reasons(&self) -> ReconnectReasons {
        self.failover
            .map_or_else(ReconnectReasons::default, |f| f.why)
    }

    /// The game address this connection uses.
    pub fn server(&self) -> Option<&str> {
        let addresses = match self.transport {
            Transport::Udp => &self.login.servers,
            Transport::WebSocket => &self.login.websocket,
        };
        addresses.first().map(String::as_str)
    }

    fn fail_over_when_silent(&mut self) {
        let Some(mut f) = self.failover else { return };
        let now = Instant::now();
        let updates = self.received().updates;
        if updates != f.seen_updates && !self.received().draining {
            f.seen_updates = updates;
            f.last_heard = now;
            f.backoff = FAILOVER_FIRST;
            self.failover = Some(f);
            return;
        }
        // Told that its server is stopping, gone, never connected, or silent.
        let quiet = now.saturating_duration_since(f.last_heard);
        let why = if self.received().draining {
            Some(&mut f.why.drained)
        } else if self.is_disconnected() {
            Some(&mut f.why.dropped)
        } else if !self.is_connected() && quiet >= CONNECT_WITHIN.min(f.silence) {
            Some(&mut f.why.unanswered)
        } else if quiet >= f.silence {
            Some(&mut f.why.silent)
        } else {
            None
        };
        if f.left || self.received().superseded || now < f.next_try {
            return;
        }
        let Some(count) = why else { return };
        *count += 1;
        let addresses = match self.transport {
            Transport::Udp => &mut self.login.servers,
            Transport::WebSocket => &mut self.login.websocket,
        };
        // The silent address goes last.
        if !addresses.is_empty() {
            addresses.rotate_left(1);
        }
        f.next_try = now + f.backoff;
        f.backoff = (f.backoff * 2).min(FAILOVER_MAX);
        f.last_heard = now;
        f.seen_updates = 0;
        f.reconnects += 1;
        tracing::info!(server = ?self.server(), reconnects = f.reconnects, why = ?f.why, "game server gone; connecting again");
        // The old connection says goodbye first, so its server frees the session at once: a
        // load balancer may send the new one to that same server, which refuses a session it
        // still holds until it times out.
        if self.is_connected() {
            self.app.world_mut().trigger(Disconnect {
                entity: self.entity,
            });
            self.app.update();
        }
        match Self::connect_as(self.login.clone(), self.transport, self.mode) {
            Ok(fresh) => {
                self.app = fresh.app;
                self.entity = fresh.entity;
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect again"),
        }
        self.failover = Some(f);
    }

    /// Queues this frame's command for the ship (sent at the next `update`).
    pub fn pilot(&mut self, thrust: f32, turn: f32, fire: bool) {
        let mut received = self.app.world_mut().resource_mut::<Received>();
        let ship = received.welcome.as_ref().map(|w| w.ship);
        let at = received
            .latest
            .as_ref()
            .zip(ship)
            .and_then(|(u, s)| u.get(s))
            .map_or([0.0; 2], |e| e.pos);
        received.turn_latency.commanded(turn, Instant::now(), at);
        self.app.world_mut().resource_mut::<Command>().0 =
            Some(PilotCommand { thrust, turn, fire });
    }

    /// The own ship as predicted: where it is now, commands included, ahead of the newest state
    /// the server sent. `None` until lightyear has replicated it.
    pub fn own_ship(&mut self) -> Option<ShipPose> {
        prediction::own_ship(self.app.world_mut())
    }

    /// Entity `id` (not the own ship) as interpolated now: between the two world updates around
    /// the interpolation time, a little behind the newest. `None` before it is due or after it
    /// left the view.
    pub fn remote(&mut self, id: u64) -> Option<RemotePose> {
        prediction::remote(self.app.world_mut(), id)
    }

    /// How many entities are interpolated now (no copies: for loops that only count).
    pub fn remotes_shown(&mut self) -> usize {
        prediction::remotes_shown(self.app.world_mut())
    }

    /// Every entity interpolated now, with its world id and kind.
    pub fn remotes(&mut self) -> Vec<(RemoteEntity, RemotePose)> {
        prediction::remotes(self.app.world_mut())
    }

    /// Rollbacks so far: how often the server disagreed with the prediction.
    pub fn prediction_stats(&self) -> PredictionStats {
        prediction::stats(self.app.world())
    }

    /// Says a line of chat (sent at the next `update`): heard by players near the ship.
    pub fn say(&mut self, text: &str) {
        if let Some(mut sender) = self
            .app
            .world_mut()
            .get_mut::<MessageSender<ChatSend>>(self.entity)
        {
            sender.send::<ReliableChannel>(ChatSend { text: text.into() });
        }
    }

    /// Says goodbye to the server (netcode's disconnect packets), so it frees the player at once
    /// instead of after its timeout.
    pub fn disconnect(&mut self) {
        if let Some(f) = &mut self.failover {
            f.left = true;
        }
        self.app.world_mut().trigger(Disconnect {
            entity: self.entity,
        });
        self.app.update();
    }

    pub fn is_connected(&self) -> bool {
        self.app.world().get::<Connected>(self.entity).is_some()
    }

    /// The connection ended or was refused (a full server, a session limit, a timeout).
    pub fn is_disconnected(&self) -> bool {
        self.app.world().get::<Disconnected>(self.entity).is_some()
    }

    pub fn received(&self) -> &Received {
        self.app.world().resource::<Received>()
    }
}

type Receivers<'a> = (
    Option<&'a mut MessageReceiver<Welcome>>,
    Option<&'a mut MessageReceiver<StateUpdate>>,
    Option<&'a mut MessageSender<StateAck>>,
    Option<&'a mut MessageReceiver<ChatHeard>>,
    Option<&'a mut MessageReceiver<ChatRefused>>,
);

/// A newer connection of this player took over: this one disconnects at once.
fn leave_when_superseded(
    mut clients: Query<(Entity, &mut MessageReceiver<Superseded>), With<Client>>,
    mut received: ResMut<Received>,
    mut commands: Commands,
) {
    for (entity, mut notices) in &mut clients {
        if notices.receive().next().is_some() {
            received.superseded = true;
            commands.trigger(Disconnect { entity });
        }
    }
}

/// The game server is stopping (a gateway drained by a rollout): noted, so that a client that
/// fails over connects to the next address at once.
fn note_draining(
    mut clients: Query<&mut MessageReceiver<Draining>, With<Client>>,
    mut received: ResMut<Received>,
) {
    for mut notices in &mut clients {
        if notices.receive().next().is_some() {
            received.draining = true;
        }
    }
}

/// Takes the welcome, decodes world updates and acknowledges each one decoded.
fn receive(
    mut clients: Query<Receivers, With<Client>>,
    mut received: ResMut<Received>,
    mut decoder: ResMut<Decoder>,
    mut remotes: ResMut<Remotes>,
) {
    for (welcome, updates, acks, heard, refused) in &mut clients {
        if let Some(mut h) = heard {
            received.chat.extend(h.receive());
        }
        if let Some(mut r) = refused {
            received.chat_refused.extend(r.receive().map(|r| r.reason));
        }
        if let Some(mut w) = welcome {
            for m in w.receive() {
                decoder.0 = Some(StateDecoder::new(m.tick_hz));
                received.welcome = Some(m);
            }
        }
        let (Some(mut updates), Some(mut acks)) = (updates, acks) else {
            continue;
        };
        let tick_hz = received.welcome.as_ref().map_or(30, |w| w.tick_hz);
        for m in updates.receive() {
            received.state_bytes += m.bytes.len() as u64;
            // State before the welcome cannot be decoded: it is dropped, not acknowledged.
            let Some(decoder) = decoder.0.as_mut() else {
                continue;
            };
            match decoder.decode(&m.bytes) {
                Ok(Some(snapshot)) => {
                    acks.send::<InputChannel>(StateAck {
                        tick: snapshot.tick,
                    });
                    received.updates += 1;
                    let update = snapshot.to_update(tick_hz);
                    let ship = received.welcome.as_ref().map(|w| w.ship);
                    remotes.push(m.server_tick, &update, ship);
                    if let Some(me) = ship.and_then(|s| update.get(s)) {
                        received
                            .turn_latency
                            .observed(me.spin, Instant::now(), me.pos);
                    }
                    received.latest = Some(update);
                }
                Ok(None) => {}
                Err(e) => {
                    received.undecodable += 1;
                    tracing::debug!(error = %e, "world update not decoded");
                }
            }
        }
    }
}
