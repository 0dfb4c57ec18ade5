//! `sidereal gateway`: the game port as a process of its own, one of several. It holds its
//! players' sessions (the same lightyear game port as replication's own, [`crate::gateway`]),
//! builds their views from the shards' sector streams ([`SectorFeed`], subscribed to the
//! sectors around its players' ships), and links to the authority
//! ([`sidereal_core::gateway_link`]) for what must be decided in one place: joins, leaves,
//! commands for ships, chat between gateways, placement.
//!
//! Threads: the game port (a Bevy app), the node loop here (one step per tick: reports out,
//! news in, subscriptions, views), the authority link's reader and writer, and the feed's
//! connections.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightyear::netcode::Key;
use sidereal_core::gateway_link::{
    ALIVE_EVERY, AuthorityMessage, GATEWAY_LINK, GATEWAY_LINK_VERSION, GatewayMessage,
};
use sidereal_core::handshake::fresh_nonce;
use sidereal_core::link_socket;
use sidereal_core::protocol::{FrameReader, MAX_FRAME_BYTES, MAX_HELLO_FRAME_BYTES, encode_frame};
use sidereal_core::stream_client::{FeedOptions, FeedStats, SectorFeed};
use sidereal_core::{Bounds, EntityId, EntitySnapshot, Point, SectorId, ShardId};
use tracing::{info, warn};

use crate::gateway::{FromElsewhere, GatewayConfig, GatewayEvent, GatewayIo, Views};
use crate::http::gateway_login::{LoginAnswer, LoginDesk};
use crate::rules::controls::InputGate;
use crate::rules::sessions::{SessionGate, SessionLimits};
use crate::state::GameTraffic;

/// Settings of a gateway process.
#[derive(Debug, Clone)]
pub struct GatewayNodeConfig {
    /// Names this gateway to the authority and to shards (1-63 of `[A-Za-z0-9.-]`).
    pub name: String,
    /// The authority's gateway link (`host:port`).
    pub authority: String,
    /// The fleet's shared secret (shard links, sector streams, gateway links).
    pub secret: String,
    pub netcode_key: Key,
    /// The game port. Its `public` addresses are derived from `public_udp` and `public_ws`.
    pub game: GatewayConfig,
    /// Addresses players are told to use; empty: the bound ones.
    pub public_udp: Vec<SocketAddr>,
    pub public_ws: Vec<SocketAddr>,
    pub link_timeout: Duration,
    pub sessions: SessionLimits,
}

/// What a running gateway reports (for its metrics, readiness and tests).
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// Linked to the authority now.
    pub linked: bool,
    /// Times the link came up.
    pub links: u64,
    pub players: usize,
    /// Entities its sector streams show now.
    pub entities: usize,
    /// Shards it subscribes to now.
    pub shards: usize,
    pub feed: FeedStats,
    /// Microseconds the newest step took (subscriptions, views).
    pub step_micros: u64,
    /// Players' commands by result (`crate::rules::controls::INPUT_RESULTS`).
    pub inputs: BTreeMap<&'static str, u64>,
}

/// A started gateway.
pub struct RunningGateway {
    pub udp: SocketAddr,
    pub websocket: Option<SocketAddr>,
    pub traffic: Arc<GameTraffic>,
    pub status: Arc<Mutex<NodeStatus>>,
    pub sessions: SessionGate,
    /// Players' logins here, passed on to the authority (`crate::http::gateway_login::router`).
    pub logins: LoginDesk,
    /// Into the game port: [`RunningGateway::drain`].
    elsewhere: crossbeam_channel::Sender<FromElsewhere>,
    /// Set by [`RunningGateway::drain`]; the node then claims no player (see `Node::draining`).
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl RunningGateway {
    /// Starts draining (the process is stopping): every player here is told to connect to
    /// another gateway, and so is any that still connects here.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.elsewhere.send(FromElsewhere::Drain);
    }

    /// Players connected here now.
    pub fn players(&self) -> usize {
        self.status.lock().map_or(0, |s| s.players)
    }
}

/// Margin around a player's interest circle subscribed as well, so entities coming into view
/// are there already when they cross the radius.
const AREA_MARGIN: f64 = 200.0;

/// Binds the game port and starts the gateway; it links to the authority (and relinks, with
/// back-off) on its own.
pub fn start(config: GatewayNodeConfig) -> std::io::Result<RunningGateway> {
    let udp = crate::ports::resolve_udp(config.game.udp)?;
    let websocket = config
        .game
        .websocket
        .map(crate::ports::resolve_tcp)
        .transpose()?;
    let public_udp = if config.public_udp.is_empty() {
        vec![udp]
    } else {
        config.public_udp.clone()
    };
    let public_ws = if config.public_ws.is_empty() {
        websocket.into_iter().collect()
    } else {
        config.public_ws.clone()
    };
    let (views_tx, views_rx) = crossbeam_channel::bounded::<Views>(2);
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let (elsewhere_tx, elsewhere_rx) = crossbeam_channel::unbounded();
    let traffic = Arc::new(GameTraffic::default());
    let sessions = SessionGate::new(config.sessions);
    let game = GatewayConfig {
        udp,
        websocket,
        public: public_udp.iter().chain(&public_ws).copied().collect(),
        ..config.game.clone()
    };
    crate::gateway::spawn(
        game,
        config.netcode_key,
        GatewayIo {
            views: views_rx,
            events: events_tx,
            elsewhere: Some(elsewhere_rx),
            traffic: traffic.clone(),
            sessions: sessions.clone(),
        },
    )?;
    let status = Arc::new(Mutex::new(NodeStatus::default()));
    let logins = LoginDesk::default();
    let link = AuthorityLink::new(
        &config,
        sessions.clone(),
        logins.clone(),
        public_udp,
        public_ws,
    );
    let feed = SectorFeed::new(
        &config.name,
        &config.secret,
        FeedOptions {
            timeout: config.link_timeout,
            max_frame_bytes: MAX_FRAME_BYTES,
            band: None,
        },
    );
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut node = Node {
        draining: draining.clone(),
        tick_hz: config.game.tick_hz.max(1),
        radius: f64::from(config.game.interest_radius),
        link,
        feed,
        players: BTreeMap::new(),
        hinted: HashMap::new(),
        placement: BTreeMap::new(),
        streams: HashMap::new(),
        views: views_tx,
        events: events_rx,
        elsewhere: elsewhere_tx.clone(),
        status: status.clone(),
        tick: 0,
        inputs: InputGate::new(config.game.tick_hz),
        logins: logins.clone(),
    };
    std::thread::Builder::new()
        .name("gateway-node".into())
        .spawn(move || node.run())?;
    info!(%udp, ?websocket, authority = %config.authority, "gateway started");
    Ok(RunningGateway {
        udp,
        websocket,
        traffic,
        status,
        sessions,
        logins,
        elsewhere: elsewhere_tx,
        draining,
    })
}

struct Node {
    /// This gateway is stopping. Its players are moving to other gateways, so it claims none
    /// of them (no `Joined`, none re-announced on a relink): a claim from here, reaching the
    /// authority after the player's new gateway's, would supersede the new session.
    draining: Arc<std::sync::atomic::AtomicBool>,
    tick_hz: u32,
    radius: f64,
    link: AuthorityLink,
    feed: SectorFeed,
    /// Players connected here now, with their ships.
    players: BTreeMap<u64, EntityId>,
    /// Where the authority last said each player's ship was.
    hinted: HashMap<u64, [f32; 2]>,
    placement: BTreeMap<SectorId, ShardId>,
    streams: HashMap<ShardId, String>,
    views: crossbeam_channel::Sender<Views>,
    events: tokio::sync::mpsc::UnboundedReceiver<GatewayEvent>,
    elsewhere: crossbeam_channel::Sender<FromElsewhere>,
    status: Arc<Mutex<NodeStatus>>,
    tick: u64,
    /// Commands are checked here (rate, range, NaN) before they cost the authority anything.
    inputs: InputGate,
    logins: LoginDesk,
}

impl Node {
    fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn run(&mut self) {
        let period = Duration::from_secs_f64(1.0 / f64::from(self.tick_hz));
        let mut next = Instant::now();
        loop {
            next += period;
            let started = Instant::now();
            if !self.step(started) {
                info!("the game port stopped; the gateway node stops");
                return;
            }
            self.report(started.elapsed());
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                // Behind: the next step is due now, not a burst of missed ones.
                next = now;
            }
        }
    }

    /// One tick: what players did goes to the authority, what the authority said comes in,
    /// subscriptions follow the players' ships, and the views go to the game port.
    fn step(&mut self, now: Instant) -> bool {
        if !self.pass_on_player_events() {
            return false;
        }
        self.pass_on_logins();
        self.take_authority_news(now);
        self.follow_players(now);
        self.feed.pump(now);
        self.send_views();
        true
    }

    fn pass_on_player_events(&mut self) -> bool {
        loop {
            let event = match self.events.try_recv() {
                Ok(e) => e,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return true,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return false,
            };
            let msg = match event {
                GatewayEvent::Joined { player_id, ship } => {
                    self.players.insert(player_id, ship);
                    if self.is_draining() {
                        continue;
                    }
                    GatewayMessage::Joined { player_id, ship }
                }
                GatewayEvent::Left { player_id } => {
                    self.players.remove(&player_id);
                    self.hinted.remove(&player_id);
                    GatewayMessage::Left { player_id }
                }
                GatewayEvent::Input { player_id, command } => {
                    let Ok(command) = self.inputs.admit(player_id, command, Instant::now()) else {
                        continue;
                    };
                    GatewayMessage::Input { player_id, command }
                }
                GatewayEvent::Chat(line) => GatewayMessage::Chat(line),
            };
            // While unlinked, reports are dropped: the relink re-announces every player, and a
            // command is repeated by the next one.
            self.link.send(msg);
        }
    }

    /// Players' logins go to the authority; while there is none to ask, they are refused at
    /// once (the client retries).
    fn pass_on_logins(&mut self) {
        for msg in self.logins.take_queued() {
            if self.link.linked {
                self.link.send(msg);
            } else if let GatewayMessage::Login { request, .. } = msg {
                self.logins.answer(
                    request,
                    LoginAnswer::refusal(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "this gateway is not linked to the authority; retry shortly",
                    ),
                );
            }
        }
    }

    fn take_authority_news(&mut self, now: Instant) {
        for news in self.link.poll(now) {
            match news {
                LinkNews::Linked => {
                    // The authority forgot this gateway's players when the link ended.
                    let players = if self.is_draining() {
                        BTreeMap::new()
                    } else {
                        self.players.clone()
                    };
                    for (player_id, ship) in &players {
                        self.link.send(GatewayMessage::Joined {
                            player_id: *player_id,
                            ship: *ship,
                        });
                    }
                }
                LinkNews::Message(AuthorityMessage::Placement {
                    sectors, streams, ..
                }) => {
                    self.placement = sectors.into_iter().collect();
                    self.streams = streams.into_iter().collect();
                }
                LinkNews::Message(AuthorityMessage::Ships { ships }) => {
                    self.hinted = ships.into_iter().collect();
                }
                LinkNews::Message(AuthorityMessage::Chat(line)) => {
                    let _ = self.elsewhere.send(FromElsewhere::Chat(line));
                }
                LinkNews::Message(AuthorityMessage::Superseded { player_id }) => {
                    self.players.remove(&player_id);
                    let _ = self.elsewhere.send(FromElsewhere::Superseded { player_id });
                }
                LinkNews::Message(_) => {}
            }
        }
    }

    /// Where a player's ship is: as its sector stream shows it, else as the authority last
    /// said.
    fn ship_at(&self, player: u64, ship: EntityId) -> Option<[f32; 2]> {
        self.feed
            .view
            .get(ship)
            .map(|e| e.state().pos)
            .or_else(|| self.hinted.get(&player).copied())
    }

    /// Subscribes to the sectors within the interest radius (and a margin) of every player's
    /// ship, at their owners.
    fn follow_players(&mut self, now: Instant) {
        let reach = self.radius + AREA_MARGIN;
        let areas: Vec<Bounds> = self
            .players
            .iter()
            .filter_map(|(p, ship)| self.ship_at(*p, *ship))
            .map(|[x, y]| {
                let (x, y) = (f64::from(x), f64::from(y));
                Bounds {
                    min: Point::new(x - reach, y - reach),
                    max: Point::new(x + reach, y + reach),
                }
            })
            .collect();
        self.feed
            .follow(&self.placement, &self.streams, Some(&areas), now);
    }

    fn send_views(&mut self) {
        self.tick += 1;
        let entities: Vec<EntitySnapshot> = self
            .feed
            .view
            .iter()
            .map(|e| EntitySnapshot {
                id: e.id,
                kind: e.kind,
                state: e.state(),
                ttl_ticks: None,
                player: false,
            })
            .collect();
        let view = &self.feed.view;
        let find = |id| {
            view.get(id).map(|e| EntitySnapshot {
                id: e.id,
                kind: e.kind,
                state: e.state(),
                ttl_ticks: None,
                player: false,
            })
        };
        let per_player = crate::rules::interest::views_over(
            &entities,
            find,
            &self.players,
            self.radius,
            self.tick,
        );
        // A full queue means the game port is behind: it skips to the newest anyway.
        let _ = self.views.try_send(Views {
            tick: self.tick,
            per_player,
        });
    }

    fn report(&self, took: Duration) {
        let mut s = self.status.lock().expect("status lock");
        s.linked = self.link.linked;
        s.links = self.link.links;
        s.players = self.players.len();
        s.entities = self.feed.view.len();
        s.shards = self.feed.connections();
        s.feed = self.feed.stats;
        s.step_micros = took.as_micros() as u64;
        s.inputs = self.inputs.counts();
    }
}

/// What the authority link brought since the last poll.
enum LinkNews {
    Linked,
    Message(AuthorityMessage),
}

enum LinkEvent {
    Up,
    Message(AuthorityMessage),
    Down(String),
}

/// The gateway's link to the authority: one connection at a time, dialled again with back-off
/// (0.1 s doubling to 2 s) when it ends.
struct AuthorityLink {
    authority: String,
    name: String,
    secret: String,
    sessions: SessionGate,
    logins: LoginDesk,
    udp: Vec<SocketAddr>,
    websocket: Vec<SocketAddr>,
    timeout: Duration,
    conn: Option<(u64, Sender<GatewayMessage>)>,
    next_conn: u64,
    events: Receiver<(u64, LinkEvent)>,
    events_tx: Sender<(u64, LinkEvent)>,
    retry_at: Instant,
    backoff: Duration,
    linked: bool,
    links: u64,
}

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_millis(500);

impl AuthorityLink {
    fn new(
        config: &GatewayNodeConfig,
        sessions: SessionGate,
        logins: LoginDesk,
        udp: Vec<SocketAddr>,
        websocket: Vec<SocketAddr>,
    ) -> Self {
        let (events_tx, events) = mpsc::channel();
        Self {
            authority: config.authority.clone(),
            name: config.name.clone(),
            secret: config.secret.clone(),
            sessions,
            logins,
            udp,
            websocket,
            timeout: config.link_timeout,
            conn: None,
            next_conn: 1,
            events,
            events_tx,
            retry_at: Instant::now(),
            backoff: RETRY_FIRST,
            linked: false,
            links: 0,
        }
    }

    fn send(&mut self, msg: GatewayMessage) {
        if !self.linked {
            return;
        }
        if let Some((_, tx)) = &self.conn {
            let _ = tx.send(msg);
        }
    }

    fn poll(&mut self, now: Instant) -> Vec<LinkNews> {
        let mut news = Vec::new();
        while let Ok((conn, event)) = self.events.try_recv() {
            if self.conn.as_ref().map(|(id, _)| *id) != Some(conn) {
                continue;
            }
            match event {
                LinkEvent::Up => {
                    self.linked = true;
                    self.links += 1;
                    self.backoff = RETRY_FIRST;
                    info!(authority = %self.authority, "linked to the authority");
                    news.push(LinkNews::Linked);
                }
                LinkEvent::Message(m) => news.push(LinkNews::Message(m)),
                LinkEvent::Down(why) => {
                    if self.linked {
                        warn!(authority = %self.authority, reason = %why, "authority link lost");
                    } else {
                        tracing::debug!(authority = %self.authority, reason = %why, "cannot link to the authority");
                    }
                    self.conn = None;
                    self.linked = false;
                    self.retry_at = now + self.backoff;
                    self.backoff = (self.backoff * 2).min(RETRY_MAX);
                }
            }
        }
        if self.conn.is_none() && now >= self.retry_at {
            self.dial();
        }
        news
    }

    fn dial(&mut self) {
        let id = self.next_conn;
        self.next_conn += 1;
        let (tx, rx) = mpsc::channel();
        self.conn = Some((id, tx));
        let dial = Dial {
            authority: self.authority.clone(),
            name: self.name.clone(),
            secret: self.secret.clone(),
            sessions: self.sessions.clone(),
            logins: self.logins.clone(),
            udp: self.udp.clone(),
            websocket: self.websocket.clone(),
            timeout: self.timeout,
        };
        let events = self.events_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("gateway-link".into())
            .spawn(move || {
                let why = match dial.run(id, rx, &events) {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e,
                };
                let _ = events.send((id, LinkEvent::Down(why)));
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the authority link thread");
            self.conn = None;
        }
    }
}

/// One connection to the authority, on its own threads.
struct Dial {
    authority: String,
    name: String,
    secret: String,
    sessions: SessionGate,
    logins: LoginDesk,
    udp: Vec<SocketAddr>,
    websocket: Vec<SocketAddr>,
    timeout: Duration,
}

impl Dial {
    fn run(
        self,
        id: u64,
        outbox: Receiver<GatewayMessage>,
        events: &Sender<(u64, LinkEvent)>,
    ) -> Result<(), String> {
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.authority))?
            .next()
            .ok_or_else(|| format!("{} resolves to nothing", self.authority))?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        let io = |e: std::io::Error| e.to_string();
        link_socket::harden(&stream, self.timeout).map_err(io)?;
        // The authority tells this gateway its ships four times a second: silence is death.
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut reader = FrameReader::with_limit(MAX_HELLO_FRAME_BYTES);
        self.handshake(&mut stream, &mut reader)?;
        reader.set_limit(MAX_FRAME_BYTES * 16);
        let _ = events.send((id, LinkEvent::Up));
        let mut writer = stream.try_clone().map_err(io)?;
        std::thread::Builder::new()
            .name("gateway-link-write".into())
            .spawn(move || write_link(&mut writer, &outbox))
            .map_err(io)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(m) = reader
                .next_frame::<AuthorityMessage>()
                .map_err(|e| format!("bad frame: {e}"))?
            {
                // A minted session goes into the table at once, here on the reading thread:
                // its player connects as soon as its login is answered.
                if let AuthorityMessage::Minted {
                    session,
                    player_id,
                    address,
                } = m
                {
                    self.sessions
                        .lock()
                        .minted(session, player_id, address, Instant::now());
                    continue;
                }
                // So is a login's answer: its player is waiting on the HTTP endpoint.
                if let AuthorityMessage::LoginAnswer {
                    request,
                    status,
                    retry_after,
                    body,
                } = m
                {
                    let answer = LoginAnswer {
                        status,
                        retry_after,
                        body,
                    };
                    self.logins.answer(request, answer);
                    continue;
                }
                if events.send((id, LinkEvent::Message(m))).is_err() {
                    return Ok(());
                }
            }
            match stream.read(&mut buf) {
                Ok(0) => return Err("the authority closed the link".into()),
                Ok(n) => reader.push(&buf[..n]),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    fn handshake(&self, stream: &mut TcpStream, reader: &mut FrameReader) -> Result<(), String> {
        let challenge = match read_message(stream, reader)? {
            AuthorityMessage::Challenge { protocol, nonce } if protocol == GATEWAY_LINK_VERSION => {
                nonce
            }
            AuthorityMessage::Challenge { protocol, .. } => {
                return Err(format!(
                    "the authority speaks gateway link protocol {protocol}, this gateway {GATEWAY_LINK_VERSION}"
                ));
            }
            _ => return Err("unexpected message during the handshake".into()),
        };
        let nonce = fresh_nonce();
        let hello = GatewayMessage::Hello {
            protocol: GATEWAY_LINK_VERSION,
            gateway: self.name.clone(),
            nonce,
            proof: GATEWAY_LINK.hello(&self.secret, &challenge, &nonce, &self.name),
            udp: self.udp.clone(),
            websocket: self.websocket.clone(),
        };
        stream
            .write_all(&encode_frame(&hello))
            .map_err(|e| e.to_string())?;
        match read_message(stream, reader)? {
            AuthorityMessage::Welcome { proof }
                if GATEWAY_LINK.verify_welcome(
                    &self.secret,
                    &challenge,
                    &nonce,
                    &self.name,
                    &proof,
                ) =>
            {
                Ok(())
            }
            AuthorityMessage::Welcome { .. } => {
                Err("the authority could not prove it knows the secret".into())
            }
            AuthorityMessage::Rejected { reason } => {
                Err(format!("the authority refused: {reason}"))
            }
            _ => Err("unexpected message during the handshake".into()),
        }
    }
}

fn read_message(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
) -> Result<AuthorityMessage, String> {
    let mut buf = [0u8; 1024];
    loop {
        if let Some(m) = reader.next_frame().map_err(|e| format!("bad frame: {e}"))? {
            return Ok(m);
        }
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the authority closed the connection".into());
        }
        reader.push(&buf[..n]);
    }
}

/// Sends queued reports, and `Alive` when there were none for a second, until the link ends.
fn write_link(writer: &mut TcpStream, outbox: &Receiver<GatewayMessage>) {
    let mut buf = Vec::new();
    loop {
        let first = match outbox.recv_timeout(ALIVE_EVERY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => GatewayMessage::Alive,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        buf.clear();
        buf.extend(encode_frame(&first));
        while let Ok(more) = outbox.try_recv() {
            buf.extend(encode_frame(&more));
        }
        if writer.write_all(&buf).is_err() {
            break;
        }
    }
    let _ = writer.shutdown(std::net::Shutdown::Both);
}

impl RunningGateway {
    /// The Prometheus text exposition of this gateway's metrics, as of now.
    pub fn render_metrics(&self) -> String {
        use prometheus::core::Collector;
        use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Opts};
        let s = self.status.lock().expect("status lock").clone();
        let mut families = Vec::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("sidereal");
        let gauge = |name: &str, help: &str, v: i64| {
            let g = IntGauge::with_opts(opts(name, help)).expect("valid");
            g.set(v);
            g.collect()
        };
        let counter = |name: &str, help: &str, v: u64| {
            let c = IntCounter::with_opts(opts(name, help)).expect("valid");
            c.inc_by(v);
            c.collect()
        };
        families.extend(gauge(
            "gateway_linked",
            "1 while this gateway is linked to the authority",
            i64::from(s.linked),
        ));
        families.extend(gauge(
            "gateway_players",
            "Players connected to this gateway",
            s.players as i64,
        ));
        families.extend(gauge(
            "gateway_stream_entities",
            "Entities this gateway's sector streams show (around its players)",
            s.entities as i64,
        ));
        families.extend(gauge(
            "gateway_stream_shards",
            "Shards this gateway subscribes to",
            s.shards as i64,
        ));
        families.extend(counter(
            "gateway_stream_bytes_total",
            "Bytes of sector-stream frames received from shards",
            s.feed.bytes,
        ));
        families.extend(counter(
            "gateway_links_total",
            "Times the link to the authority came up",
            s.links,
        ));
        let step = Gauge::with_opts(opts(
            "gateway_step_seconds",
            "How long the newest gateway step took (subscriptions and views)",
        ))
        .expect("valid");
        step.set(s.step_micros as f64 / 1e6);
        families.extend(step.collect());
        families.extend(crate::http::metrics::game_port_families(
            &self.traffic,
            &s.inputs,
            &self.sessions.lock(),
        ));
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
