//! Real processes over loopback: `sidereal replication` and `sidereal shard`, killed with
//! SIGKILL, fed garbage by raw sockets; crash recovery and database outages with a real store.

#[path = "processes/chat.rs"]
mod chat;
#[path = "processes/dashboards.rs"]
mod dashboards;
#[path = "processes/gateways.rs"]
mod gateways;
#[path = "processes/link_faults.rs"]
mod link_faults;
#[path = "processes/login.rs"]
mod login;
#[path = "processes/map.rs"]
mod map;
#[path = "processes/metrics.rs"]
mod metrics;
#[path = "processes/persistence.rs"]
mod persistence;
#[path = "processes/player_faults.rs"]
mod player_faults;
#[path = "processes/players.rs"]
mod players;
#[path = "processes/prediction.rs"]
mod prediction;
#[path = "processes/sessions.rs"]
mod sessions;
#[path = "processes/streams.rs"]
mod streams;
#[path = "processes/swarm.rs"]
mod swarm;
#[path = "processes/takeover.rs"]
mod takeover;
#[path = "processes/tls.rs"]
mod tls;
#[path = "processes/up_autoscale.rs"]
mod up_autoscale;
#[path = "processes/up_race.rs"]
mod up_race;

pub(crate) use sidereal_testkit::wait_until;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sidereal_core::control::{EntityView, LoadView, PutPlacementReply, StatusView};
use sidereal_core::protocol::{
    FrameReader, PROTOCOL_VERSION, ReplicationMessage, ShardMessage, encode_frame,
};
use sidereal_core::{
    ControlClient, ControlError, EntityId, EntityKind, EntitySnapshot, EntityState, Placement,
    SectorId, ShardId, placement,
};

pub(crate) const SECRET: &str = "process-test-secret";
/// Control token of every replication (and `sidereal up`) the tests start.
pub(crate) const TOKEN: &str = "process-test-control-token";
/// The netcode key of every replication these tests start (a test value, not a secret).
pub(crate) const NETCODE_KEY: &str =
    "5e1dea15e1dea15e1dea15e1dea15e1dea15e1dea15e1dea15e1dea15e1dea15";

/// A child process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn sidereal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sidereal"));
    c.env("SIDEREAL_SHARD_SECRET", SECRET)
        .env("SIDEREAL_CONTROL_TOKEN", TOKEN)
        .env("SIDEREAL_NETCODE_KEY", NETCODE_KEY)
        .env("SIDEREAL_GAME_UDP", "127.0.0.1:0")
        .env("SIDEREAL_GAME_WS", "127.0.0.1:0")
        // SIDEREAL_TEST_LOG=info,lightyear=debug shows more of the processes' logs.
        .env(
            "RUST_LOG",
            std::env::var("SIDEREAL_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null());
    c
}

pub(crate) struct Replication {
    pub(crate) proc_: Proc,
    pub(crate) http: String,
    pub(crate) link: SocketAddr,
    /// The game port (UDP).
    pub(crate) game: Option<SocketAddr>,
    /// The public login listener (`--public-http`), as `http://...`.
    pub(crate) public: Option<String>,
    /// The gateway link (`--gateway-link`), as `host:port`.
    pub(crate) gateways: Option<String>,
    /// The product's control client, with the test token.
    pub(crate) control: Control,
    _data: Option<TempDir>,
}

/// The product's `ControlClient`, driven from these synchronous tests: every typed call the
/// operator and `sidereal up` make, panicking with the server's reason when one fails.
pub(crate) struct Control {
    rt: tokio::runtime::Runtime,
    pub(crate) client: ControlClient,
}

impl Control {
    pub(crate) fn new(base: &str) -> Self {
        Self::with_token(base, Some(TOKEN))
    }

    pub(crate) fn with_token(base: &str, token: Option<&str>) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self {
            rt,
            client: ControlClient::new(base, token.map(str::to_owned)),
        }
    }

    pub(crate) fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Names of the shards with a live link.
    pub(crate) fn connected(&self) -> BTreeSet<String> {
        self.run(self.client.connected_shards())
            .expect("GET /v1/shards")
            .into_iter()
            .map(|s| s.0)
            .collect()
    }

    pub(crate) fn placement(&self) -> Placement {
        self.run(self.client.placement())
            .expect("GET /v1/placement")
    }

    /// Entities of the mirror by id; `query` like `owner=shard-1`, or empty.
    pub(crate) fn entities(&self, query: &str) -> HashMap<u64, EntityView> {
        self.run(self.client.entities(query))
            .expect("GET /v1/entities")
            .entities
            .into_iter()
            .map(|e| (e.id.0, e))
            .collect()
    }

    pub(crate) fn load(&self) -> LoadView {
        self.run(self.client.load()).expect("GET /v1/load")
    }

    pub(crate) fn status(&self) -> StatusView {
        self.run(self.client.status()).expect("GET /v1/status")
    }

    pub(crate) fn put_placement(&self, p: &Placement) -> Result<PutPlacementReply, ControlError> {
        self.run(self.client.put_placement(p))
    }
}

/// A directory removed when dropped.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sidereal-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn start_replication(entities: usize) -> Replication {
    let data = TempDir::new("repl");
    let mut r = start_replication_with(entities, &data.0, None, &[]);
    r._data = Some(data);
    r
}

/// Starts replication storing into `database_url` (Postgres) or SQLite under `data`.
pub(crate) fn start_replication_with(
    entities: usize,
    data: &std::path::Path,
    database_url: Option<&str>,
    extra: &[&str],
) -> Replication {
    let mut cmd = sidereal();
    cmd.arg("replication");
    // Free ports unless the caller names them.
    for flag in ["--http", "--link"] {
        if !extra.contains(&flag) {
            cmd.args([flag, "127.0.0.1:0"]);
        }
    }
    cmd.args([
        "--seed-entities",
        &entities.to_string(),
        "--world",
        "s2-xm1-y0,s2-x0-y0",
    ])
    .args(extra)
    .arg("--data")
    .arg(data)
    .env_remove("DATABASE_URL")
    .stdout(Stdio::piped());
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    let mut child = cmd.spawn().expect("start replication");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().expect("a ready line").expect("stdout");
    let addr = |key: &str| {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {ready:?}"))
            .to_owned()
    };
    let http = format!("http://{}", addr("http="));
    let link = addr("link=").parse().unwrap();
    let game = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("game="))
        .map(|g| g.parse().unwrap());
    let public = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("public="))
        .map(|p| format!("http://{p}"));
    let gateways = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("gateways="))
        .map(str::to_owned);
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Replication {
        proc_: Proc(child),
        control: Control::new(&http),
        http,
        link,
        game,
        public,
        gateways,
        _data: None,
    }
}

pub(crate) fn start_shard(r: &Replication, id: &str) -> Proc {
    start_shard_with(r, id, &["--metrics", "127.0.0.1:0"])
}

/// A shard with more flags (a later flag overrides an earlier one).
pub(crate) fn start_shard_with(r: &Replication, id: &str, more: &[&str]) -> Proc {
    Proc(
        sidereal()
            .args([
                "shard",
                "--id",
                id,
                "--replication",
                &r.link.to_string(),
                "--seed",
                "3",
            ])
            .args(more)
            .spawn()
            .expect("start shard"),
    )
}

pub(crate) fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

/// A raw PUT of any JSON text, typed or not, as a user's curl would send it: (status, body).
pub(crate) fn put(url: &str, body: &serde_json::Value) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/stderr",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "-H",
            &auth(),
        ])
        .args(["--data-binary", &body.to_string(), url])
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The control token `sidereal up` generated into its data directory.
pub(crate) fn token_of(data: &TempDir) -> String {
    std::fs::read_to_string(data.0.join("control-token"))
        .expect("sidereal up writes its control token")
        .trim()
        .to_owned()
}

pub(crate) fn connected(r: &Replication) -> BTreeSet<String> {
    r.control.connected()
}

pub(crate) fn placement_of(r: &Replication) -> Placement {
    r.control.placement()
}

pub(crate) fn entities(r: &Replication, query: &str) -> HashMap<u64, EntityView> {
    r.control.entities(query)
}

fn start_fleet(shards: usize, entities_n: usize) -> (Replication, Vec<Proc>) {
    let r = start_replication(entities_n);
    let procs = start_shards_and_place(&r, shards);
    (r, procs)
}

/// Starts `shard-0..shards`, waits until they link and places the world evenly on them.
pub(crate) fn start_shards_and_place(r: &Replication, shards: usize) -> Vec<Proc> {
    let procs: Vec<Proc> = (0..shards)
        .map(|i| start_shard(r, &format!("shard-{i}")))
        .collect();
    place_evenly(r, shards);
    procs
}

/// Waits until `shard-0..shards` are linked and places the world evenly on them.
pub(crate) fn place_evenly(r: &Replication, shards: usize) {
    wait_until("shards linked", Duration::from_secs(30), || {
        connected(r).len() == shards
    });
    let ids: Vec<ShardId> = (0..shards)
        .map(|i| ShardId::new(format!("shard-{i}")))
        .collect();
    let world = vec!["s2-xm1-y0".parse().unwrap(), "s2-x0-y0".parse().unwrap()];
    let p = placement::even(&world, &ids, 1);
    r.control.put_placement(&p).expect("the first placement");
}

#[test]
fn kill_9_of_a_shard_rehomes_its_sectors_and_loses_nothing() {
    let (r, mut procs) = start_fleet(3, 1500);
    // Let the fleet run until every shard has reported load and entities have crossed.
    wait_until("load from all shards", Duration::from_secs(30), || {
        r.control.load().shards.len() == 3
    });
    wait_until("handovers", Duration::from_secs(30), || {
        let m = Command::new("curl")
            .args(["-sf", &format!("{}/metrics", r.http)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&m.stdout)
            .lines()
            .any(|l| l.starts_with("sidereal_handovers_total ") && !l.ends_with(" 0"))
    });

    procs[1].0.kill().expect("SIGKILL shard-1");
    procs[1].0.wait().unwrap();
    wait_until(
        "replication notices the dead link",
        Duration::from_secs(10),
        || !connected(&r).contains("shard-1"),
    );
    let orphans = entities(&r, "owner=shard-1");
    assert!(!orphans.is_empty(), "shard-1 owned entities when it died");
    let before_total = entities(&r, "").len();

    let current = placement_of(&r);
    let live: BTreeSet<ShardId> = connected(&r).into_iter().map(ShardId::new).collect();
    let next = placement::rehome(&current, &live).expect("shard-1 had leaves");
    r.control.put_placement(&next).expect("re-homing");

    // Each orphan is checked until it is seen readopted once (a new epoch, not the dead owner);
    // after that it may cross borders like any entity. A projectile may expire meanwhile.
    let mut settled = BTreeSet::new();
    wait_until("orphans adopted", Duration::from_secs(10), || {
        let now = entities(&r, "");
        for (id, before) in &orphans {
            let done = match now.get(id) {
                Some(e) => e.owner.0 != "shard-1" && e.epoch > before.epoch && !e.in_transit,
                None => before.kind == EntityKind::Projectile,
            };
            if done {
                settled.insert(*id);
            }
        }
        settled.len() == orphans.len()
    });
    let after = entities(&r, "");
    for (id, before) in &orphans {
        let Some(now) = after.get(id) else {
            assert_eq!(before.kind, EntityKind::Projectile, "{id} vanished");
            continue;
        };
        assert!(
            now.version >= before.version,
            "{id}: state went back in time"
        );
        assert!(now.epoch > before.epoch, "{id}: adopted at a new epoch");
        assert_ne!(now.owner.0, "shard-1");
    }
    let asteroids_before = orphans
        .values()
        .filter(|e| e.kind != EntityKind::Projectile)
        .count();
    let asteroids_after = orphans
        .keys()
        .filter(|id| {
            after
                .get(id)
                .is_some_and(|e| e.kind != EntityKind::Projectile)
        })
        .count();
    assert_eq!(
        asteroids_before, asteroids_after,
        "every long-lived entity of the dead shard survives"
    );
    assert!(
        after.len() + 200 >= before_total,
        "no mass loss: {} -> {}",
        before_total,
        after.len()
    );
    assert!(placement_of(&r).sectors.values().all(|s| s.0 != "shard-1"));
    // The survivors keep running.
    assert_eq!(
        connected(&r),
        BTreeSet::from(["shard-0".to_owned(), "shard-2".to_owned()])
    );
}

/// A raw connection to the shard link, past replication's opening `Challenge`: the stream,
/// its reader and the nonce to answer.
pub(crate) fn raw_challenge(link: SocketAddr) -> (TcpStream, FrameReader, [u8; 32]) {
    let mut s = TcpStream::connect(link).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = FrameReader::default();
    match read_msg(&mut s, &mut reader) {
        Some(ReplicationMessage::Challenge {
            protocol: PROTOCOL_VERSION,
            nonce,
        }) => (s, reader, nonce),
        other => panic!("a link opens with a Challenge, got {other:?}"),
    }
}

/// A shard's handshake by hand, speaking `protocol` and proving `secret`: the stream, its
/// reader and replication's reply.
pub(crate) fn raw_hello(
    link: SocketAddr,
    shard: &str,
    protocol: u32,
    secret: &str,
) -> (TcpStream, FrameReader, ReplicationMessage) {
    let (mut s, mut reader, challenge) = raw_challenge(link);
    let mut hello = ShardMessage::hello(secret, &challenge, ShardId::new(shard), [3; 32]);
    if let ShardMessage::Hello { protocol: p, .. } = &mut hello {
        *p = protocol;
    }
    s.write_all(&encode_frame(&hello)).unwrap();
    let msg = read_msg(&mut s, &mut reader).expect("a reply to Hello");
    (s, reader, msg)
}

pub(crate) fn read_msg(s: &mut TcpStream, reader: &mut FrameReader) -> Option<ReplicationMessage> {
    let mut buf = [0u8; 65536];
    loop {
        if let Some(m) = reader.next_frame::<ReplicationMessage>().unwrap() {
            return Some(m);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => reader.push(&buf[..n]),
        }
    }
}

/// True when the server closed the connection (EOF) within the read timeout.
pub(crate) fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

pub(crate) fn metric(r: &Replication, name: &str) -> f64 {
    metric_at(&r.http, name)
}

/// The value of the sample `name` (with its labels) on `<base>/metrics`, 0 when absent.
pub(crate) fn metric_at(base: &str, name: &str) -> f64 {
    // A server that stops answering (a deadlock) fails the test instead of hanging the suite.
    let m = Command::new("curl")
        .args(["-sf", "--max-time", "10", &format!("{base}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&m.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn bad_input_is_refused_with_a_reason_and_the_fleet_carries_on() {
    let (r, _procs) = start_fleet(1, 300);
    let applied = || metric(&r, "sidereal_entity_updates_total{result=\"applied\"}");
    wait_until("updates flowing", Duration::from_secs(20), || {
        applied() > 0.0
    });

    // Wrong secret and wrong version: rejected with the reason, then closed.
    let (mut s, _, reply) = raw_hello(r.link, "intruder", PROTOCOL_VERSION, "guess");
    assert!(
        matches!(&reply, ReplicationMessage::Rejected { reason } if reason.contains("wrong shard secret")),
        "{reply:?}"
    );
    assert!(closed_by_server(&mut s));
    let (mut s, _, reply) = raw_hello(r.link, "old", PROTOCOL_VERSION + 1, SECRET);
    assert!(
        matches!(&reply, ReplicationMessage::Rejected { reason } if reason.contains("protocol version")),
        "{reply:?}"
    );
    assert!(closed_by_server(&mut s));
    // A second shard-0 while the real one is linked.
    let (mut s, _, reply) = raw_hello(r.link, "shard-0", PROTOCOL_VERSION, SECRET);
    assert!(
        matches!(&reply, ReplicationMessage::Rejected { reason } if reason.contains("already connected")),
        "{reply:?}"
    );
    assert!(closed_by_server(&mut s));

    // Garbage bytes and an oversized frame: closed.
    let mut s = TcpStream::connect(r.link).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0x07, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(closed_by_server(&mut s));
    let mut s = TcpStream::connect(r.link).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
    assert!(closed_by_server(&mut s));
    // Each rejection counted once, under its reason.
    let rejected = |reason: &str| {
        metric(
            &r,
            &format!("sidereal_links_rejected_total{{reason=\"{reason}\"}}"),
        )
    };
    wait_until("rejections counted", Duration::from_secs(5), || {
        rejected("malformed_frame") == 2.0
    });
    for reason in ["wrong_secret", "wrong_version", "already_connected"] {
        assert_eq!(rejected(reason), 1.0, "{reason}");
    }

    // An authenticated impostor: claims a sector it does not own, updates with stale epochs.
    let (mut s, mut reader, reply) = raw_hello(r.link, "impostor", PROTOCOL_VERSION, SECRET);
    let ReplicationMessage::Welcome { incarnation, .. } = reply else {
        panic!("{reply:?}")
    };
    let refusals = metric(&r, "sidereal_refusals_total");
    let someone_elses = *entities(&r, "owner=shard-0")
        .keys()
        .next()
        .expect("shard-0 owns entities");
    let spawn = EntitySnapshot {
        id: EntityId::minted(incarnation, 1),
        kind: EntityKind::Ship,
        state: EntityState {
            pos: [10.0, 10.0],
            ..Default::default()
        },
        ttl_ticks: None,
        player: true,
    };
    s.write_all(&encode_frame(&ShardMessage::Spawned { snapshot: spawn }))
        .unwrap();
    // The refused spawn is answered: the impostor is told to drop it.
    let disowned = loop {
        match read_msg(&mut s, &mut reader) {
            Some(ReplicationMessage::Disown { ids }) => break ids,
            Some(_) => continue,
            None => panic!("no Disown for the refused spawn"),
        }
    };
    assert_eq!(disowned, vec![spawn.id]);
    s.write_all(&encode_frame(&ShardMessage::Despawned {
        id: EntityId(someone_elses),
        epoch: 1,
    }))
    .unwrap();
    let mut enc = sidereal_core::codec::UpdateEncoder::default();
    let bytes = enc
        .encode(
            1,
            &mut [(
                EntityId(someone_elses),
                0,
                EntityState {
                    pos: [5.0, 5.0],
                    ..Default::default()
                },
            )],
        )
        .unwrap();
    s.write_all(&encode_frame(&ShardMessage::Updates(bytes)))
        .unwrap();
    wait_until("refusals counted", Duration::from_secs(5), || {
        metric(&r, "sidereal_refusals_total") >= refusals + 3.0
    });
    let victim = &entities(&r, "")[&someone_elses];
    assert_eq!(
        victim.owner.0, "shard-0",
        "nothing the impostor said took effect"
    );
    assert!(!entities(&r, "").contains_key(&spawn.id.0));
    // The impostor's link stays up (refusals are per message); a malformed batch closes it.
    s.write_all(&encode_frame(&ShardMessage::Updates(vec![0xff, 0xff])))
        .unwrap();
    while read_msg(&mut s, &mut reader).is_some() {}

    // Through all of it, the real shard kept simulating.
    let before = applied();
    wait_until("updates still flowing", Duration::from_secs(10), || {
        applied() > before
    });
    assert_eq!(connected(&r), BTreeSet::from(["shard-0".to_owned()]));

    // The control API explains bad placements.
    let url = format!("{}/v1/placement", r.http);
    let (code, body) = put(&url, &serde_json::json!({"generation": 0, "sectors": {}}));
    assert_eq!(code, 409, "{body}");
    let (code, body) = put(
        &url,
        &serde_json::json!({"generation": 9, "sectors": {"s2-x0-y0": "nobody", "s2-xm1-y0": "shard-0"}}),
    );
    assert_eq!(
        (code, body.contains("unknown shard nobody")),
        (422, true),
        "{body}"
    );
    let (code, body) = put(
        &url,
        &serde_json::json!({"generation": 9, "sectors": {"s2-x0-y0": "shard-0", "s1-x0-y0": "shard-0", "s2-xm1-y0": "shard-0"}}),
    );
    assert_eq!((code, body.contains("overlap")), (422, true), "{body}");
    let (code, body) = put(
        &url,
        &serde_json::json!({"generation": 9, "sectors": {"not-a-sector": "shard-0"}}),
    );
    assert_eq!(
        (code, body.contains("invalid sector name")),
        (422, true),
        "{body}"
    );
    // A generation that would leave no room for the next one.
    let (code, body) = put(
        &url,
        &serde_json::json!({"generation": u64::MAX, "sectors": {"s2-x0-y0": "shard-0", "s2-xm1-y0": "shard-0"}}),
    );
    assert_eq!((code, body.contains("jumps")), (422, true), "{body}");
    let current = placement_of(&r);
    assert!(current.generation < 100, "{current:?}");
}

/// A port free now, for a process that must be told its port in advance, with the 15 above it
/// (`--metrics-base-port` numbers shards from it). Taken below Linux's ephemeral range
/// (32768-60999): a port the kernel hands out for `:0` listeners and outgoing connections
/// (every shard's, every subscriber's) can be taken between this check and the child's bind.
pub(crate) fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let offset = std::process::id() % 700 * 16;
    loop {
        let n = NEXT.fetch_add(16, std::sync::atomic::Ordering::Relaxed);
        let port = (20_000 + (offset + n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub(crate) fn pids_matching(pattern: &str) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `sidereal up --shards N --entities M` on free ports with `data` as its data directory, as a
/// user runs it (the control token generated there): the process, the first two lines it
/// printed, its control API base URL and its shard-link port.
pub(crate) fn start_up(
    data: &TempDir,
    shards: usize,
    entities: usize,
) -> (Proc, Vec<String>, String, u16) {
    start_up_with(data, shards, entities, &[])
}

/// [`start_up`] with more flags.
pub(crate) fn start_up_with(
    data: &TempDir,
    shards: usize,
    entities: usize,
    extra: &[&str],
) -> (Proc, Vec<String>, String, u16) {
    let (http, link, metrics) = (free_port(), free_port(), free_port());
    let (gateway_link, gateway_metrics, gateway_login) = (free_port(), free_port(), free_port());
    let mut child = sidereal()
        .env_remove("SIDEREAL_CONTROL_TOKEN")
        .args(["up", "--shards", &shards.to_string()])
        .args(["--gateway-link", &format!("127.0.0.1:{gateway_link}")])
        .args(["--gateway-metrics-base-port", &gateway_metrics.to_string()])
        .args(["--gateway-login-base-port", &gateway_login.to_string()])
        .args(extra)
        .args(["--entities", &entities.to_string()])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--link", &format!("127.0.0.1:{link}")])
        .args(["--metrics-base-port", &metrics.to_string()])
        .arg("--data")
        .arg(&data.0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sidereal up");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let up = Proc(child);
    let banner: Vec<String> = out.by_ref().take(2).map(|l| l.unwrap()).collect();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in out {});
    (up, banner, format!("http://127.0.0.1:{http}"), link)
}

/// `sidereal up`: starts the fleet, says where it is, survives a shard's kill -9 by re-homing
/// and restarting it, and stops every process on Ctrl-C.
#[test]
fn sidereal_up_runs_supervises_and_stops_the_fleet() {
    let data = TempDir::new("up");
    let (mut up, banner, base, link) = start_up_with(&data, 2, 300, &["--bots", "2"]);
    assert!(
        banner[0].starts_with("sidereal is up: 2 shards"),
        "{banner:?}"
    );
    assert!(
        banner[1].contains(&format!("{base}/v1/status")),
        "{banner:?}"
    );
    let control = Control::with_token(&base, Some(&token_of(&data)));
    let status = || control.status();
    let anonymous = Control::with_token(&base, None);
    assert!(matches!(
        anonymous.run(anonymous.client.status()),
        Err(ControlError::Unauthorized(_))
    ));
    assert_eq!(status().shards_connected, 2);
    // `--bots 2`: two players log in, each with its ship, and connect to the game port.
    wait_until("two bots connected", Duration::from_secs(30), || {
        status().players_connected == 2
    });
    let bodies = |c: &Control| {
        c.entities("")
            .values()
            .filter(|e| e.kind != EntityKind::Projectile)
            .count()
    };
    // The bots' ships are made on their first connection.
    wait_until("the bots' ships", Duration::from_secs(10), || {
        bodies(&control) == 302
    });
    assert_eq!(bodies(&control), 302, "300 seeded and the bots' two ships");
    assert!(
        data.0.join("sidereal.db").exists(),
        "the embedded store lives in the data directory"
    );

    let victim = format!("shard --id shard-1 --replication 127.0.0.1:{link}");
    let pids = pids_matching(&victim);
    assert_eq!(pids.len(), 1, "{pids:?}");
    Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    // Restarted under the same name; whether its leaves were re-homed meanwhile or it linked
    // again first and took them back, every entity ends up simulated by a linked shard.
    wait_until(
        "restarted, with every entity simulated",
        Duration::from_secs(30),
        || {
            let linked = control.connected();
            linked.len() == 2
                && pids_matching(&victim)
                    .first()
                    .is_some_and(|p| *p != pids[0])
                && control
                    .entities("")
                    .values()
                    .filter(|e| e.kind != EntityKind::Projectile)
                    .filter(|e| !e.in_transit && linked.contains(&e.owner.0))
                    .count()
                    == 302
        },
    );

    Command::new("kill")
        .args(["-INT", &up.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = up.0.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "sidereal up did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(code.success(), "{code}");
    wait_until("children gone", Duration::from_secs(10), || {
        pids_matching(&format!("127.0.0.1:{link}")).is_empty()
    });
}

/// `sidereal up --standby`: a standby replication waits beside the leader; kill -9 of the
/// leader and the standby takes the store and the same addresses, the shards (the same
/// processes: they simulate on) resume onto it, the whole world is back, `up` keeps running and
/// a new standby waits behind the new leader.
#[test]
fn sidereal_up_with_a_standby_survives_the_leader_s_kill_9() {
    let data = TempDir::new("up-standby");
    let (up, _banner, base, link) = start_up_with(&data, 2, 300, &["--standby"]);
    let control = Control::with_token(&base, Some(&token_of(&data)));
    let settled = || {
        control
            .run(control.client.status())
            .is_ok_and(|s| s.shards_connected == 2 && s.entities >= 300)
    };
    wait_until("the fleet is up", Duration::from_secs(30), settled);
    let replications = || pids_matching(&format!("replication.*--data {}", data.0.display()));
    let standbys = || {
        pids_matching(&format!(
            "replication.*--standby.*--data {}",
            data.0.display()
        ))
    };
    // `up` starts the standby once the fleet is up.
    wait_until("a standby waits", Duration::from_secs(10), || {
        standbys().len() == 1 && replications().len() == 2
    });
    let (all, standbys_now) = (replications(), standbys());
    let leader = *all.iter().find(|p| !standbys_now.contains(p)).unwrap();
    let shard_procs = || {
        pids_matching(&format!(
            "shard --id shard-.* --replication 127.0.0.1:{link} "
        ))
    };
    let shards_before = shard_procs();
    Command::new("kill")
        .args(["-9", &leader.to_string()])
        .status()
        .unwrap();
    let killed = Instant::now();
    wait_until("the standby leads", Duration::from_secs(30), settled);
    println!(
        "the standby led the fleet again {:?} after the kill",
        killed.elapsed()
    );
    let durable = control
        .entities("")
        .values()
        .filter(|e| e.kind != EntityKind::Projectile)
        .count();
    assert_eq!(durable, 300, "the whole world, once");
    assert_eq!(
        shard_procs(),
        shards_before,
        "the same shard processes: they resumed, nobody restarted them"
    );
    wait_until("a new standby waits", Duration::from_secs(10), || {
        standbys().len() == 2
    });
    let mut up = up;
    assert!(
        up.0.try_wait().unwrap().is_none(),
        "sidereal up keeps running"
    );
}

/// Splits and merges driven through `PUT /v1/placement` on real processes: every entity of the
/// split leaf ends up with the shard of the child it is in, and back on one shard after the
/// merge, with the entity count conserved throughout (projectiles off).
#[test]
fn split_and_merge_through_the_control_api() {
    let r = start_replication(800);
    let _shards: Vec<Proc> = (0..2)
        .map(|i| {
            Proc(
                sidereal()
                    .args([
                        "shard",
                        "--id",
                        &format!("shard-{i}"),
                        "--replication",
                        &r.link.to_string(),
                    ])
                    .args(["--metrics", "127.0.0.1:0", "--fire-every-ticks", "0"])
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    wait_until("shards linked", Duration::from_secs(30), || {
        connected(&r).len() == 2
    });
    let world: Vec<SectorId> = vec!["s2-xm1-y0".parse().unwrap(), "s2-x0-y0".parse().unwrap()];
    let mut p = Placement {
        generation: 1,
        sectors: Default::default(),
        world: None,
    };
    p.sectors.insert(world[0], ShardId::new("shard-0"));
    p.sectors.insert(world[1], ShardId::new("shard-1"));
    r.control.put_placement(&p).expect("the first placement");
    let settled = |expect: &dyn Fn(&EntityView) -> Option<String>| {
        let all = entities(&r, "");
        all.len() == 800
            && all
                .values()
                .all(|e| !e.in_transit && expect(e).is_none_or(|o| e.owner.0 == o))
    };
    wait_until("initial placement settled", Duration::from_secs(20), || {
        settled(&|_| None)
    });

    // Split the west root onto both shards.
    let split = placement::split(
        &p,
        world[0],
        ["shard-0", "shard-1", "shard-0", "shard-1"].map(ShardId::new),
    )
    .unwrap();
    r.control.put_placement(&split).expect("the split");
    let owner_by_child = |e: &EntityView| -> Option<String> {
        let (x, y) = (f64::from(e.pos[0]), f64::from(e.pos[1]));
        let cell = SectorId::of_point(sidereal_core::Point::new(x, y), 0).ok()?;
        let leaf = placement::leaf_covering(&split.sectors, cell)?;
        Some(split.sectors[&leaf].0.clone())
    };
    wait_until(
        "split settled: entities owned by their child's shard",
        Duration::from_secs(20),
        || settled(&owner_by_child),
    );
    let west_on_1 = entities(&r, "owner=shard-1")
        .values()
        .filter(|e| e.pos[0] < 0.0)
        .count();
    assert!(
        west_on_1 > 50,
        "the split moved entities of the west root to shard-1 ({west_on_1})"
    );

    // Merge back, onto shard-1 this time.
    let merged = placement::merge(&split, world[0], ShardId::new("shard-1")).unwrap();
    let reply = r.control.put_placement(&merged).expect("the merge");
    assert!(reply.changed);
    wait_until(
        "merge settled: everything on shard-1",
        Duration::from_secs(20),
        || settled(&|_| Some("shard-1".to_owned())),
    );
    // Idempotent: the same placement again changes nothing.
    let reply = r
        .control
        .put_placement(&merged)
        .expect("the same placement again");
    assert!(!reply.changed, "{reply:?}");
    // An older generation is a conflict a writer must resolve by re-reading.
    let err = r.control.put_placement(&split).unwrap_err();
    assert!(matches!(err, ControlError::Conflict(_)), "{err}");
}

/// docs/configuration.md is every command's `--help`, as the binary prints it: every flag, its
/// default and its environment variable. Regenerate with `make docs`.
#[test]
fn the_configuration_reference_is_the_binarys_help() {
    let mut doc = String::from(
        "# Configuration reference\n\n\
         Every flag of every `sidereal` command, its default and the environment variable that sets it\n\
         (`[env: NAME]`), exactly as `sidereal <command> --help` prints them. Generated by `make docs`;\n\
         a test fails when this file and the binary disagree. The Helm chart sets only variables listed\n\
         here (a test checks it).\n",
    );
    for cmd in [
        "up",
        "replication",
        "shard",
        "gateway",
        "operator",
        "bot",
        "crdgen",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sidereal"))
            .args([cmd, "--help"])
            .env("COLUMNS", "100")
            .output()
            .expect("sidereal --help");
        assert!(out.status.success(), "sidereal {cmd} --help");
        doc += &format!(
            "\n## `sidereal {cmd}`\n\n```text\n{}```\n",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    if std::env::var_os("SIDEREAL_BLESS").is_some() {
        std::fs::write(&path, &doc).expect("writing docs/configuration.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == doc,
        "docs/configuration.md differs from the binary's --help: run `make docs` and commit it"
    );
}
