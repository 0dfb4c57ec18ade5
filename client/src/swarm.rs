//! Many bots in one thread: each registers or logs in, connects, and flies a pattern that
//! wanders across sectors (and so across shards), firing now and then. The swarm steps every
//! bot once per tick and reports what each saw.

use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

use sidereal_core::login::Credentials;

use crate::{ClientError, GameClient, login};

#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Replication's HTTP address, e.g. `http://127.0.0.1:7700`.
    pub http: String,
    pub count: usize,
    /// Bots are named `<prefix>-<i>`.
    pub prefix: String,
    pub password: String,
    /// How long to fly; `None` flies until the process ends.
    pub duration: Option<Duration>,
    pub tick_hz: u32,
    /// Live metrics, updated every tick, when some process serves them.
    pub metrics: Option<SwarmMetrics>,
    /// A certificate (PEM) to trust for an HTTPS login besides the system's roots: a private CA,
    /// or a test's self-signed certificate.
    pub tls_ca: Option<Vec<u8>>,
    /// Bots `0..full_bots` run the whole client; the others are light
    /// ([`crate::ClientMode::Light`]): decode, acknowledge and pilot only.
    pub full_bots: usize,
}

/// What the swarm exports while it flies (`sidereal bot --metrics`). Cloning shares them.
#[derive(Clone)]
pub struct SwarmMetrics {
    pub registry: Registry,
    connected: IntGauge,
    updates: IntCounter,
    state_bytes: IntCounter,
    disconnects: IntCounter,
    chat_heard: IntCounter,
    latency: Histogram,
}

impl std::fmt::Debug for SwarmMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwarmMetrics")
    }
}

impl Default for SwarmMetrics {
    fn default() -> Self {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("sidereal");
        let counter =
            |name: &str, help: &str| IntCounter::with_opts(opts(name, help)).expect("valid");
        let m = Self {
            registry: Registry::new(),
            connected: IntGauge::with_opts(opts("bots_connected", "Bots connected now"))
                .expect("valid"),
            updates: counter("bot_updates_total", "World updates the bots decoded"),
            state_bytes: counter(
                "bot_state_bytes_total",
                "Bytes of encoded world state the bots received",
            ),
            disconnects: counter(
                "bot_disconnects_total",
                "Times a connected bot lost its connection",
            ),
            chat_heard: counter("bot_chat_heard_total", "Lines of chat the bots heard"),
            latency: Histogram::with_opts(
                HistogramOpts::new(
                    "bot_input_latency_seconds",
                    "From a turn command to the world update showing it",
                )
                .namespace("sidereal")
                .buckets(vec![0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0]),
            )
            .expect("valid"),
        };
        for c in [&m.updates, &m.state_bytes, &m.disconnects, &m.chat_heard] {
            m.registry.register(Box::new(c.clone())).expect("unique");
        }
        m.registry
            .register(Box::new(m.connected.clone()))
            .expect("unique");
        m.registry
            .register(Box::new(m.latency.clone()))
            .expect("unique");
        m
    }
}

impl SwarmMetrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What one bot did.
#[derive(Debug, Clone, Default)]
pub struct BotReport {
    pub name: String,
    pub player_id: u64,
    /// From starting to connect to the welcome.
    pub connect_time: Option<Duration>,
    pub updates: u64,
    /// Mean number of entities in its updates.
    pub mean_visible: f64,
    /// World units its ship covered, as its updates showed it.
    pub distance: f32,
    /// Times it lost its connection for good: at once when nothing opens it again, or after
    /// [`RECONNECT_WITHIN`] of failing over without a connection. A failover that is connected
    /// again within that counts in `reconnects` only (same session, same ship; `longest_gap`
    /// shows the pause).
    pub disconnects: u32,
    /// The longest wait between two world updates after the first: the pause it saw.
    pub longest_gap: Duration,
    /// Connections it opened again by itself (its gateway went silent or said it is draining).
    pub reconnects: u64,
    /// Why it opened them.
    pub reconnect_reasons: crate::ReconnectReasons,
    /// Bytes of encoded world state received.
    pub state_bytes: u64,
    /// Input-to-state latency of each turn command that showed.
    pub latency: Vec<crate::latency::LatencySample>,
    /// Lines of chat said, and heard (its own and nearby bots').
    pub chat_said: u32,
    pub chat_heard: usize,
    /// Updates, after the first that showed its ship, that did not show it.
    pub missing_own_ship: u64,
    /// Whether lightyear's prediction had its ship, and how often the server disagreed with it.
    pub predicted: bool,
    pub rollbacks: u32,
    /// Most entities lightyear's interpolation showed at once.
    pub interpolated: usize,
    /// Entities sent farther from its ship than the interest radius (a unit of slack).
    pub beyond_radius: u64,
    /// Its ship's position every half second or so.
    pub path: Vec<[f32; 2]>,
    /// Ids of the ships and asteroids it was sent (projectiles expire, so they are left out).
    pub seen: std::collections::BTreeSet<u64>,
    /// Whether it ran the whole client (prediction and interpolation) or the light one.
    pub full: bool,
    /// CPU time the swarm's thread spent stepping this bot.
    pub cpu: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct SwarmReport {
    pub bots: Vec<BotReport>,
    pub seconds: f64,
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl SwarmReport {
    /// Mean share of a core one bot of the kind (`full` or light) used while flying.
    pub fn cpu_per_bot(&self, full: bool) -> Option<f64> {
        let kind: Vec<&BotReport> = self.bots.iter().filter(|b| b.full == full).collect();
        (!kind.is_empty() && self.seconds > 0.0).then(|| {
            kind.iter().map(|b| b.cpu.as_secs_f64()).sum::<f64>() / kind.len() as f64 / self.seconds
        })
    }

    pub fn connected(&self) -> usize {
        self.bots
            .iter()
            .filter(|b| b.connect_time.is_some())
            .count()
    }

    pub fn disconnects(&self) -> u32 {
        self.bots.iter().map(|b| b.disconnects).sum()
    }

    /// Input-to-state latency at quantile `q`, over every bot's samples.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        let all: Vec<Duration> = self
            .bots
            .iter()
            .flat_map(|b| b.latency.iter().map(|s| s.latency))
            .collect();
        crate::latency::quantile(&all, q)
    }

    /// Mean bits of world state per entity per update, over every bot.
    pub fn bits_per_entity_update(&self) -> f64 {
        let bytes: u64 = self.bots.iter().map(|b| b.state_bytes).sum();
        let entity_updates: f64 = self
            .bots
            .iter()
            .map(|b| b.mean_visible * b.updates as f64)
            .sum();
        bytes as f64 * 8.0 / entity_updates.max(1.0)
    }
}

/// Bot `i`'s command at `t` seconds: full thrust for the first three seconds, then cruising;
/// a weave of straight legs and turns (left, straight, right, straight, 1.5 s each) whose phase
/// differs per bot, so every turn change is a latency probe; the trigger held for a tick every
/// two seconds. Pure, so a bot's path is reproducible.
pub fn pattern(i: usize, t: f64) -> (f32, f32, bool) {
    let phase = (i as f64 * 0.618_034).fract() * 4.0; // the golden ratio spreads the bots
    let thrust = if t < 3.0 { 1.0 } else { 0.4 };
    let turn = [0.6, 0.0, -0.6, 0.0][(t / 1.5 + phase) as usize % 4];
    let fire = (t * 30.0) as u64 % 60 == (i as u64 % 60);
    (thrust, turn, fire)
}

/// A bot connects to another game address after this long without a world update.
const BOT_FAILOVER_SILENCE: Duration = Duration::from_secs(5);
/// A failing-over bot not connected again within this has been disconnected.
pub const RECONNECT_WITHIN: Duration = Duration::from_secs(5);

struct Bot {
    client: GameClient,
    report: BotReport,
    started: Instant,
    was_connected: bool,
    outage: Outage,
    seen_updates: u64,
    visible_sum: u64,
    last_pos: Option<[f32; 2]>,
    last_update: Option<Instant>,
    reconnects_seen: u64,
}

/// A bot's running totals, to export what one tick added.
struct Seen {
    updates: u64,
    state_bytes: u64,
    disconnects: u32,
    chat: usize,
    latencies: usize,
}

impl Seen {
    fn of(bot: &Bot) -> Self {
        let r = bot.client.received();
        Self {
            updates: r.updates,
            state_bytes: r.state_bytes,
            disconnects: bot.report.disconnects,
            chat: r.chat.len(),
            latencies: r.turn_latency.samples().len(),
        }
    }

    fn since(&self, before: &Seen, bot: &Bot, m: &SwarmMetrics) {
        m.updates.inc_by(self.updates - before.updates);
        m.state_bytes.inc_by(self.state_bytes - before.state_bytes);
        m.disconnects
            .inc_by(u64::from(self.disconnects - before.disconnects));
        m.chat_heard.inc_by((self.chat - before.chat) as u64);
        for s in &bot.client.received().turn_latency.samples()[before.latencies..self.latencies] {
            m.latency.observe(s.latency.as_secs_f64());
        }
    }
}

/// Logs every bot in (registering the ones that do not exist yet), then flies them.
pub fn run_swarm(config: &SwarmConfig) -> Result<SwarmReport, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Token(format!("a runtime for logins: {e}")))?;
    let mut http = reqwest::Client::builder();
    if let Some(pem) = &config.tls_ca {
        let ca = reqwest::Certificate::from_pem(pem)
            .map_err(|e| ClientError::Token(format!("the --tls-ca certificate: {e}")))?;
        http = http.add_root_certificate(ca);
    }
    let http = http
        .build()
        .map_err(|e| ClientError::Token(format!("an HTTPS client: {e}")))?;
    let mut bots = Vec::with_capacity(config.count);
    for i in 0..config.count {
        let credentials = Credentials {
            name: format!("{}-{i}", config.prefix),
            password: config.password.clone(),
        };
        let reply = rt.block_on(log_in_or_register(&http, &config.http, &credentials))?;
        let report = BotReport {
            name: credentials.name.clone(),
            player_id: reply.player_id,
            full: i < config.full_bots,
            ..Default::default()
        };
        let client = GameClient::connect_as(
            reply,
            crate::Transport::Udp,
            if i < config.full_bots {
                crate::ClientMode::Full
            } else {
                crate::ClientMode::Light
            },
        )?;
        bots.push(Bot {
            client,
            report,
            started: Instant::now(),
            was_connected: false,
            outage: Outage::default(),
            seen_updates: 0,
            visible_sum: 0,
            last_pos: None,
            last_update: None,
            reconnects_seen: 0,
        });
    }
    let tick = Duration::from_secs_f64(1.0 / f64::from(config.tick_hz.max(1)));
    let t0 = Instant::now();
    while config.duration.is_none_or(|d| t0.elapsed() < d) {
        let next = Instant::now() + tick;
        let t = t0.elapsed().as_secs_f64();
        for (i, bot) in bots.iter_mut().enumerate() {
            let before = Seen::of(bot);
            let cpu = thread_cpu_time();
            step(bot, i, t);
            bot.report.cpu += thread_cpu_time().saturating_sub(cpu);
            if let Some(m) = &config.metrics {
                Seen::of(bot).since(&before, bot, m);
            }
        }
        if let Some(m) = &config.metrics {
            m.connected
                .set(bots.iter().filter(|b| b.was_connected).count() as i64);
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(SwarmReport {
        seconds: t0.elapsed().as_secs_f64(),
        bots: bots
            .into_iter()
            .map(|mut b| {
                b.client.disconnect();
                b.report.state_bytes = b.client.received().state_bytes;
                b.report.latency = b.client.received().turn_latency.samples().to_vec();
                b.report.chat_heard = b.client.received().chat.len();
                b.report.mean_visible = b.visible_sum as f64 / b.report.updates.max(1) as f64;
                b.report.rollbacks = b.client.prediction_stats().rollbacks;
                b.report.reconnects = b.client.reconnects();
                b.report.reconnect_reasons = b.client.reconnect_reasons();
                b.report
            })
            .collect(),
    })
}

/// Logs in, registering on a 401; waits out 429s (all bots share one address and its login
/// rate limit) for up to two minutes.
async fn log_in_or_register(
    http: &reqwest::Client,
    base: &str,
    credentials: &Credentials,
) -> Result<sidereal_core::login::LoginReply, ClientError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut register = false;
    loop {
        match login(http, base, credentials, register).await {
            Err(ClientError::Refused { status: 401, .. }) if !register => register = true,
            Err(ClientError::Refused { status: 409, .. }) if register => register = false,
            Err(ClientError::Refused { status: 429, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// Whether bot `i` says something in the tick at `t`: once every ten seconds, bots spread over
/// the ten.
pub fn chats(i: usize, t: f64) -> bool {
    (t * 30.0) as u64 % 300 == (i as u64 * 37) % 300
}

/// A bot's time without the connection it had: when it began, and whether it counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outage {
    since: Option<Instant>,
    counted: bool,
}

impl Outage {
    /// One frame's connection state; true when this outage counts as a disconnect now: at once
    /// when nothing will connect the bot again (`fails_over` false), or once failing over has
    /// not connected it within [`RECONNECT_WITHIN`]. Each outage counts once.
    pub fn observe(
        &mut self,
        was_connected: bool,
        connected: bool,
        fails_over: bool,
        now: Instant,
    ) -> bool {
        if connected {
            *self = Outage::default();
            return false;
        }
        if was_connected && self.since.is_none() {
            self.since = Some(now);
        }
        let Some(since) = self.since else {
            return false;
        };
        let counts = !self.counted
            && (!fails_over || now.saturating_duration_since(since) >= RECONNECT_WITHIN);
        self.counted |= counts;
        counts
    }
}

fn count_disconnect(bot: &mut Bot, connected: bool, now: Instant) {
    let fails_over = bot.client.fails_over();
    if bot
        .outage
        .observe(bot.was_connected, connected, fails_over, now)
    {
        bot.report.disconnects += 1;
    }
}

fn step(bot: &mut Bot, i: usize, t: f64) {
    let (thrust, turn, fire) = pattern(i, t);
    if bot.client.is_connected() {
        bot.client.pilot(thrust, turn, fire);
        if chats(i, t) {
            let line = format!("{} here, {:.0} s in", bot.report.name, t);
            bot.client.say(&line);
            bot.report.chat_said += 1;
        }
    }
    bot.client.update();
    let connected = bot.client.is_connected();
    count_disconnect(bot, connected, Instant::now());
    bot.was_connected = connected;
    if bot.report.connect_time.is_none() && bot.client.received().welcome.is_some() {
        bot.report.connect_time = Some(bot.started.elapsed());
        // As a player's client does once in: another gateway when this one goes silent or
        // drains.
        bot.client.fail_over_after(BOT_FAILOVER_SILENCE);
    }
    // A new connection counts its updates from zero.
    let reconnects = bot.client.reconnects();
    if reconnects != bot.reconnects_seen {
        bot.reconnects_seen = reconnects;
        bot.seen_updates = 0;
    }
    let received = bot.client.received();
    if received.updates > bot.seen_updates
        && let Some(update) = &received.latest
    {
        let new = received.updates - bot.seen_updates;
        bot.seen_updates = received.updates;
        let now = Instant::now();
        if let Some(last) = bot.last_update {
            bot.report.longest_gap = bot.report.longest_gap.max(now - last);
        }
        bot.last_update = Some(now);
        bot.report.updates += new;
        bot.visible_sum += new * update.entities.len() as u64;
        let ship = bot.client.login.ship;
        let radius = received
            .welcome
            .as_ref()
            .map_or(f32::INFINITY, |w| w.interest_radius);
        if let Some(me) = update.get(ship) {
            if let Some(p) = bot.last_pos {
                bot.report.distance +=
                    ((me.pos[0] - p[0]).powi(2) + (me.pos[1] - p[1]).powi(2)).sqrt();
            }
            bot.last_pos = Some(me.pos);
            if bot.report.updates >= 15 * bot.report.path.len() as u64 {
                bot.report.path.push(me.pos);
            }
            let far = |e: &&crate::SeenEntity| {
                ((e.pos[0] - me.pos[0]).powi(2) + (e.pos[1] - me.pos[1]).powi(2)).sqrt()
                    > radius + 1.0
            };
            bot.report.beyond_radius += update.entities.iter().filter(far).count() as u64;
            let lasting = update.entities.iter().filter(|e| e.kind != 2);
            bot.report.seen.extend(lasting.map(|e| e.id));
        } else if bot.last_pos.is_some() {
            bot.report.missing_own_ship += 1;
        }
        // Sampled with the updates, not every frame: the query walks the bot's entities.
        bot.report.predicted |= bot.client.own_ship().is_some();
        bot.report.interpolated = bot.report.interpolated.max(bot.client.remotes_shown());
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_failover_connected_again_within_the_grace_is_no_disconnect_and_one_that_is_not_counts_once()
     {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Failing over, connected again after 400 ms: no disconnect.
        let mut o = Outage::default();
        assert!(!o.observe(true, false, true, at(0)));
        assert!(!o.observe(false, false, true, at(400)));
        assert!(!o.observe(false, true, true, at(401)));
        // Failing over and still down after RECONNECT_WITHIN: one disconnect, counted once.
        assert!(!o.observe(true, false, true, at(1000)));
        assert!(!o.observe(false, false, true, at(5999)));
        assert!(o.observe(false, false, true, at(6000)));
        assert!(!o.observe(false, false, true, at(9000)));
        // Back, then lost with nothing to connect it again (superseded, ended): at once.
        assert!(!o.observe(false, true, true, at(9001)));
        assert!(o.observe(true, false, false, at(9002)));
        // Never connected: no outage to count.
        let mut never = Outage::default();
        assert!(!never.observe(false, false, false, at(0)));
    }

    use super::*;

    #[test]
    fn the_pattern_is_in_range_reproducible_and_differs_between_bots() {
        for i in 0..50 {
            for k in 0..600 {
                let t = f64::from(k) / 30.0;
                let (thrust, turn, _) = pattern(i, t);
                assert!((0.0..=1.0).contains(&thrust) && (-1.0..=1.0).contains(&turn));
                assert_eq!(pattern(i, t), pattern(i, t));
            }
        }
        let turns = |i| (0..600).map(move |k| pattern(i, f64::from(k) / 30.0).1);
        assert!(turns(0).zip(turns(1)).any(|(a, b)| a != b), "bots differ");
        let changes = turns(0)
            .zip(turns(0).skip(1))
            .filter(|(a, b)| (a - b).abs() > 0.25)
            .count();
        assert!(
            changes >= 12,
            "{changes} turn changes (latency probes) in 20 s"
        );
        let fires = (0..60)
            .filter(|k| pattern(3, f64::from(*k) / 30.0).2)
            .count();
        assert_eq!(fires, 1, "the trigger once every two seconds");
    }
}
