//! Bits per entity update on the client link, measured on the wire in one run: the same motion
//! (drifting, spinning bodies and turning, thrusting ships) sent by lightyear's plain component
//! replication (position, velocity and heading as replicated components) and by Sidereal's
//! state codec (quantized, delta-encoded `StateUpdate` messages). Server and client are real
//! lightyear apps talking netcode over UDP on loopback through a relay that counts every byte
//! the server sends, headers, acks and keep-alives included.
//!
//! `cargo bench -p sidereal-game --bench wire` (`WIRE_ENTITIES`, `WIRE_SECONDS` to change the
//! run). Prints one line per codec; never fails on a slow machine.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use lightyear::netcode::{ConnectToken, Key};
use lightyear::prelude::client::*;
use lightyear::prelude::server::*;
use lightyear::prelude::*;
use serde::{Deserialize, Serialize};
use sidereal_game::codec::{StateDecoder, StateEncoder};
use sidereal_game::{
    GameProtocolPlugin, InputChannel, SeenEntity, StateAck, StateChannel, StateUpdate,
};
use sidereal_testkit::udp_proxy::UdpProxy;

const HZ: u32 = 30;
const PROTOCOL: u64 = 0x5157_0001;
const KEY: Key = [7; 32];

/// The plain-replication side's state: what a game would replicate without a codec of its own.
#[derive(Component, Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Position([f32; 2]);
#[derive(Component, Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Velocity([f32; 2]);
#[derive(Component, Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Heading(f32);

struct BenchProtocol;

impl Plugin for BenchProtocol {
    fn build(&self, app: &mut App) {
        app.add_plugins(GameProtocolPlugin);
        app.component::<Position>().replicate();
        app.component::<Velocity>().replicate();
        app.component::<Heading>().replicate();
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Codec {
    LightyearReplication,
    Sidereal,
}

/// The world both codecs send: one body in five is a ship that turns and thrusts, the rest drift
/// and spin as asteroids do.
#[derive(Resource, Clone)]
struct Motion {
    tick: u64,
    bodies: Vec<SeenEntity>,
}

impl Motion {
    fn new(n: usize) -> Self {
        let bodies = (0..n)
            .map(|i| {
                let f = i as f32;
                SeenEntity {
                    id: 10_000 + i as u64 * 3,
                    kind: u8::from(i % 5 != 0),
                    pos: [(f * 0.37).sin() * 700.0, (f * 0.53).cos() * 700.0],
                    vel: [(f * 1.7).sin() * 60.0, (f * 2.3).cos() * 60.0],
                    angle: f,
                    spin: if i % 5 == 0 {
                        0.0
                    } else {
                        (f * 0.9).sin() * 0.5
                    },
                }
            })
            .collect();
        Self { tick: 0, bodies }
    }

    fn step(&mut self) {
        self.tick += 1;
        let dt = 1.0 / HZ as f32;
        let t = self.tick as f32 * dt;
        for (i, b) in self.bodies.iter_mut().enumerate() {
            if b.kind == 0 {
                // A pilot weaving under thrust.
                b.spin = (t * 0.5 + i as f32).sin() * 2.0;
                b.vel[0] += b.angle.cos() * 4.0;
                b.vel[1] += b.angle.sin() * 4.0;
            }
            b.angle = (b.angle + b.spin * dt).rem_euclid(std::f32::consts::TAU);
            b.pos[0] += b.vel[0] * dt;
            b.pos[1] += b.vel[1] * dt;
        }
    }
}

/// Server-side entities of the plain-replication run, in the order of `Motion::bodies`.
#[derive(Resource, Default)]
struct Replicated(Vec<Entity>);

#[derive(Resource, Default)]
struct Decoded {
    decoder: Option<StateDecoder>,
    latest: Vec<SeenEntity>,
}

fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
}

fn headless(app: &mut App) {
    app.add_plugins(MinimalPlugins.build().disable::<ScheduleRunnerPlugin>());
    app.add_plugins(bevy::state::app::StatesPlugin);
}

fn server_app(codec: Codec, bind: SocketAddr, public: SocketAddr, n: usize) -> App {
    let mut app = App::new();
    headless(&mut app);
    app.add_plugins(ServerPlugins {
        tick_duration: Duration::from_secs_f64(1.0 / f64::from(HZ)),
    });
    app.add_plugins(BenchProtocol);
    app.insert_resource(Motion::new(n));
    app.init_resource::<Replicated>();
    app.add_observer(|t: On<Add, LinkOf>, mut commands: Commands| {
        commands.entity(t.entity).insert(ReplicationSender);
    });
    app.add_observer(|t: On<Add, Connected>, mut commands: Commands| {
        commands
            .entity(t.entity)
            .insert(Stream(StateEncoder::new(HZ)));
    });
    match codec {
        Codec::LightyearReplication => {
            app.add_systems(Update, replicate_motion);
        }
        Codec::Sidereal => {
            app.add_systems(Update, send_encoded_motion);
        }
    }
    app.finish();
    app.cleanup();
    let netcode = server::NetcodeConfig::default()
        .with_protocol_id(PROTOCOL)
        .with_key(KEY)
        .with_additional_expected_addresses([public]);
    let server = app
        .world_mut()
        .spawn((
            NetcodeServer::new(netcode),
            LocalAddr(bind),
            ServerUdpIo::default(),
        ))
        .id();
    app.world_mut().trigger(Start { entity: server });
    app
}

#[derive(Component)]
struct Stream(StateEncoder);

fn replicate_motion(
    mut motion: ResMut<Motion>,
    mut replicated: ResMut<Replicated>,
    mut commands: Commands,
    mut bodies: Query<(&mut Position, &mut Velocity, &mut Heading)>,
) {
    motion.step();
    if replicated.0.is_empty() {
        for b in &motion.bodies {
            let e = commands
                .spawn((
                    Position(b.pos),
                    Velocity(b.vel),
                    Heading(b.angle),
                    Replicate::to_clients(NetworkTarget::All),
                ))
                .id();
            replicated.0.push(e);
        }
        return;
    }
    for (b, e) in motion.bodies.iter().zip(&replicated.0) {
        if let Ok((mut p, mut v, mut h)) = bodies.get_mut(*e) {
            p.0 = b.pos;
            v.0 = b.vel;
            h.0 = b.angle;
        }
    }
}

type Player<'a> = (
    &'a mut Stream,
    &'a mut MessageSender<StateUpdate>,
    // Receivers appear with the first message received.
    Option<&'a mut MessageReceiver<StateAck>>,
);

fn send_encoded_motion(
    mut motion: ResMut<Motion>,
    mut players: Query<Player, (With<ClientOf>, With<Connected>)>,
) {
    motion.step();
    for (mut stream, mut sender, acks) in &mut players {
        for ack in acks
            .into_iter()
            .flat_map(|mut a| a.receive().collect::<Vec<_>>())
        {
            stream.0.acknowledge(ack.tick);
        }
        let bytes = stream.0.encode(motion.tick, &motion.bodies);
        sender.send::<StateChannel>(StateUpdate {
            server_tick: motion.tick as u32,
            bytes,
        });
    }
}

fn client_app(server: SocketAddr) -> (App, Entity) {
    let mut app = App::new();
    headless(&mut app);
    app.add_plugins(ClientPlugins {
        tick_duration: Duration::from_secs_f64(1.0 / f64::from(HZ)),
    });
    app.add_plugins(BenchProtocol);
    app.init_resource::<Decoded>();
    app.add_systems(Update, decode_state);
    app.finish();
    app.cleanup();
    let token = ConnectToken::build(server, PROTOCOL, 1, KEY)
        .generate()
        .expect("a token");
    let netcode = NetcodeClient::new(
        Authentication::Token(token),
        client::NetcodeConfig::default(),
    )
    .expect("netcode");
    let entity = app
        .world_mut()
        .spawn((
            Client,
            MessageManager::default(),
            ReplicationReceiver,
            LocalAddr(SocketAddr::from(([127, 0, 0, 1], 0))),
            PeerAddr(server),
            UdpIo::default(),
        ))
        .id();
    app.world_mut().entity_mut(entity).insert(netcode);
    app.world_mut().trigger(Connect { entity });
    (app, entity)
}

type ClientSide<'a> = (
    &'a mut MessageReceiver<StateUpdate>,
    &'a mut MessageSender<StateAck>,
);

fn decode_state(mut client: Query<ClientSide, With<Client>>, mut decoded: ResMut<Decoded>) {
    for (mut updates, mut acks) in &mut client {
        for m in updates.receive() {
            let decoder = decoded.decoder.get_or_insert_with(|| StateDecoder::new(HZ));
            if let Ok(Some(s)) = decoder.decode(&m.bytes) {
                acks.send::<InputChannel>(StateAck { tick: s.tick });
                let latest = s.to_update(HZ).entities;
                decoded.latest = latest;
            }
        }
    }
}

/// What the client holds of every body: from replicated components or decoded updates.
fn client_view(codec: Codec, client: &mut App) -> Vec<([f32; 2], [f32; 2], f32)> {
    match codec {
        Codec::LightyearReplication => {
            let world = client.world_mut();
            let mut q = world.query::<(&Position, &Velocity, &Heading)>();
            q.iter(world).map(|(p, v, h)| (p.0, v.0, h.0)).collect()
        }
        Codec::Sidereal => client
            .world()
            .resource::<Decoded>()
            .latest
            .iter()
            .map(|e| (e.pos, e.vel, e.angle))
            .collect(),
    }
}

struct Run {
    bytes: u64,
    datagrams: u64,
    ticks: u64,
    seconds: f64,
    worst_position_error: f32,
}

fn run(codec: Codec, n: usize, seconds: f64) -> Run {
    let bind = free_udp_port();
    let relay = UdpProxy::start(bind).expect("a relay");
    let mut server = server_app(codec, bind, relay.addr, n);
    let (mut client, _) = client_app(relay.addr);
    let frame = Duration::from_secs_f64(1.0 / f64::from(HZ));
    let step = |server: &mut App, client: &mut App| {
        let next = Instant::now() + frame;
        server.update();
        client.update();
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    };
    // Connected, and every body on the client: the steady state starts here.
    let deadline = Instant::now() + Duration::from_secs(20);
    while client_view(codec, &mut client).len() < n {
        assert!(Instant::now() < deadline, "{codec:?}: bodies never arrived");
        step(&mut server, &mut client);
    }
    for _ in 0..HZ {
        step(&mut server, &mut client);
    }
    let (bytes0, datagrams0) = (
        relay.to_client_bytes(),
        relay
            .counts
            .to_client_datagrams
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    let tick0 = server.world().resource::<Motion>().tick;
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < seconds {
        step(&mut server, &mut client);
    }
    let ticks = server.world().resource::<Motion>().tick - tick0;
    let bytes = relay.to_client_bytes() - bytes0;
    let datagrams = relay
        .counts
        .to_client_datagrams
        .load(std::sync::atomic::Ordering::Relaxed)
        - datagrams0;
    // A few more frames so the client catches up with the server's last tick, then compare.
    for _ in 0..3 {
        step(&mut server, &mut client);
    }
    let truth = server.world().resource::<Motion>().clone();
    let view = client_view(codec, &mut client);
    let worst_position_error = nearest_errors(&truth.bodies, &view);
    Run {
        bytes,
        datagrams,
        ticks,
        seconds: t0.elapsed().as_secs_f64(),
        worst_position_error,
    }
}

/// The client is a tick or two behind: each true body's distance to the nearest body the client
/// holds, at most.
fn nearest_errors(truth: &[SeenEntity], view: &[([f32; 2], [f32; 2], f32)]) -> f32 {
    truth
        .iter()
        .map(|b| {
            view.iter()
                .map(|(p, _, _)| ((p[0] - b.pos[0]).powi(2) + (p[1] - b.pos[1]).powi(2)).sqrt())
                .fold(f32::INFINITY, f32::min)
        })
        .fold(0.0, f32::max)
}

fn main() {
    let n: usize = std::env::var("WIRE_ENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seconds: f64 = std::env::var("WIRE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    println!(
        "{n} bodies ({} ships turning and thrusting, the rest drifting and spinning), {HZ} Hz, {seconds} s each, netcode over UDP on loopback",
        n.div_ceil(5)
    );
    let mut results = Vec::new();
    for codec in [Codec::LightyearReplication, Codec::Sidereal] {
        let r = run(codec, n, seconds);
        let bits = r.bytes as f64 * 8.0 / (r.ticks as f64 * n as f64);
        println!(
            "{:<22} {:>8.1} bits/entity-update {:>8.1} kbit/s {:>6.1} datagrams/s {:>5} ticks  client within {:.1} units",
            format!("{codec:?}"),
            bits,
            r.bytes as f64 * 8.0 / 1000.0 / r.seconds,
            r.datagrams as f64 / r.seconds,
            r.ticks,
            r.worst_position_error
        );
        results.push(bits);
    }
    println!(
        "WIRE entities={n} lightyear_bits={:.1} sidereal_bits={:.1} ratio={:.2}",
        results[0],
        results[1],
        results[1] / results[0]
    );
}
