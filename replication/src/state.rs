//! State shared by replication's tasks (shard links, the ticker, checkpoints, the HTTP API):
//! the authority behind one lock, the store and its health, and the links' writers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::authority::{Authority, LinkId};
use crate::link_outbox::LinkOutbox;
use crate::login::{LoginConfig, Logins};
use crate::rules::controls::InputGate;
use crate::rules::sessions::{SessionGate, SessionLimits};
use crate::store::{EntityRow, Store, StoreError};

/// How the store is doing, for /readyz, /v1/status and /metrics.
#[derive(Debug, Clone, Default)]
pub struct StoreHealth {
    pub healthy: bool,
    pub last_checkpoint: Option<Instant>,
    /// The same moment on the wall clock, for the timestamp metric.
    pub last_checkpoint_at: Option<std::time::SystemTime>,
    pub last_error: Option<String>,
    pub checkpoints: u64,
    pub rows_written: u64,
    pub failures: u64,
    /// Report rounds asked of shards before checkpoints, and those the wait ran out on (a
    /// shard slow to answer, or one that linked meanwhile).
    pub report_rounds: u64,
    pub report_rounds_late: u64,
    /// How long the last round took to come in.
    pub last_report_wait: Duration,
    /// Rows read from the store on taking it (all of them on a cold start; a warm standby's
    /// last changes on a takeover), and how long restoring the world took.
    pub rows_read_at_start: u64,
    pub restore_time: Duration,
}

/// Bytes moved on shard links, counted by the link tasks.
#[derive(Debug, Default)]
pub struct LinkBytes {
    /// From shards.
    pub received: AtomicU64,
    /// To shards.
    pub sent: AtomicU64,
}

/// What the game port has sent players, counted by the gateway thread.
#[derive(Debug, Default)]
pub struct GameTraffic {
    /// Bytes of encoded state updates (before lightyear's own framing).
    pub state_bytes: AtomicU64,
    pub state_updates: AtomicU64,
    /// Entities the state updates described, sent or left to the client's prediction.
    pub entity_updates: AtomicU64,
    /// Chat lines by result (`crate::rules::chat::CHAT_RESULTS`).
    pub chat: Mutex<BTreeMap<&'static str, u64>>,
}

/// State shared by the link tasks, the ticker and the HTTP handlers.
pub struct Shared {
    pub authority: Mutex<Authority>,
    pub link_bytes: LinkBytes,
    pub game_traffic: Arc<GameTraffic>,
    writers: Mutex<HashMap<LinkId, Arc<LinkOutbox>>>,
    pub started: Instant,
    pub store: Option<Store>,
    /// Bearer token of the control API.
    pub control_token: String,
    pub store_health: Mutex<StoreHealth>,
    /// One checkpoint at a time: one that returns has written everything dirty when it was
    /// called, even if another was already writing part of it.
    checkpointing: tokio::sync::Mutex<()>,
    /// The players' login API.
    pub logins: Logins,
    /// Players' commands: rate limits and counts.
    pub inputs: Mutex<InputGate>,
    /// The live map's newest frame, shared by every page watching.
    pub map_frames: crate::http::map::FrameCache,
    /// Game-port sessions: minted at login, admitted and ended by the gateway.
    pub sessions: SessionGate,
    /// Gateways linked (`sidereal gateway`) and which one holds each player.
    pub gateways: Mutex<crate::rules::gateway_registry::GatewayRegistry>,
    /// Players' ships being stored on their first connection.
    pub pending_ships: Mutex<std::collections::HashSet<sidereal_core::EntityId>>,
    /// Woken when a shard answers a report round.
    pub reports: tokio::sync::Notify,
    /// Why this replication stepped down (another took the store), once it did; the process
    /// waits on [`Shared::deposed`] and exits.
    pub stepped_down: Mutex<Option<String>>,
    deposed_signal: tokio::sync::Notify,
}

impl Shared {
    pub fn new(
        authority: Authority,
        store: Option<Store>,
        control_token: String,
        login: LoginConfig,
        sessions: SessionLimits,
    ) -> Arc<Self> {
        let tick_hz = authority.config().tick_hz;
        Arc::new(Self {
            authority: Mutex::new(authority),
            link_bytes: LinkBytes::default(),
            game_traffic: Arc::default(),
            writers: Mutex::new(HashMap::new()),
            started: Instant::now(),
            store,
            control_token,
            logins: Logins::new(login),
            inputs: Mutex::new(InputGate::new(tick_hz)),
            map_frames: crate::http::map::FrameCache::default(),
            sessions: SessionGate::new(sessions),
            pending_ships: Mutex::default(),
            gateways: Mutex::default(),
            checkpointing: tokio::sync::Mutex::new(()),
            reports: tokio::sync::Notify::new(),
            stepped_down: Mutex::new(None),
            deposed_signal: tokio::sync::Notify::new(),
            store_health: Mutex::new(StoreHealth {
                healthy: true,
                ..Default::default()
            }),
        })
    }

    /// Another replication leads the store: remember why and wake whoever waits on
    /// [`Shared::deposed`].
    pub fn step_down(&self, why: String) {
        *self.stepped_down.lock().expect("step-down lock") = Some(why);
        self.deposed_signal.notify_one();
    }

    /// Resolves once this replication has stepped down, with why.
    pub async fn deposed(&self) -> String {
        loop {
            if let Some(why) = self.stepped_down.lock().expect("step-down lock").clone() {
                return why;
            }
            self.deposed_signal.notified().await;
        }
    }

    /// Asks shards for their entities' state (when they do not report every tick) and waits
    /// until all have answered or `max_wait` ran out, so that the checkpoint that follows holds
    /// what shards simulated a tick or two ago.
    pub async fn gather_reports(&self, max_wait: Duration) {
        let round = {
            let mut a = self.authority.lock().expect("authority lock");
            let round = a.request_reports();
            self.flush(&mut a);
            round
        };
        let Some(round) = round else {
            return;
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + max_wait;
        let in_time = loop {
            // Registered before the check, so an answer between the two still wakes us.
            let answered = self.reports.notified();
            if self
                .authority
                .lock()
                .expect("authority lock")
                .reports_in(round)
            {
                break true;
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                break false;
            }
        };
        let mut h = self.store_health.lock().expect("health lock");
        h.report_rounds += 1;
        h.report_rounds_late += u64::from(!in_time);
        h.last_report_wait = started.elapsed();
    }

    /// Writes everything dirty in one transaction. On failure the work goes back into the
    /// dirty set (nothing is dropped) and the store is reported unhealthy.
    pub async fn checkpoint(&self) -> Result<usize, StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let _one_at_a_time = self.checkpointing.lock().await;
        let (changed, removed) = self
            .authority
            .lock()
            .expect("authority lock")
            .mirror_mut()
            .take_dirty();
        let rows: Vec<EntityRow> = changed.iter().filter_map(EntityRow::from_record).collect();
        let removed_ids: Vec<i64> = removed.iter().map(|id| id.0 as i64).collect();
        let result = if rows.is_empty() && removed_ids.is_empty() {
            // Nothing to write: still make sure nobody took the store meanwhile, so an idle
            // deposed leader steps down too.
            store.check_leading().await
        } else {
            store.write_checkpoint(&rows, &removed_ids).await
        };
        let mut h = self.store_health.lock().expect("health lock");
        match result {
            Ok(()) => {
                h.healthy = true;
                h.last_checkpoint = Some(Instant::now());
                h.last_checkpoint_at = Some(std::time::SystemTime::now());
                h.last_error = None;
                h.checkpoints += 1;
                h.rows_written += rows.len() as u64;
                Ok(rows.len())
            }
            Err(e) => {
                drop(h);
                self.authority
                    .lock()
                    .expect("authority lock")
                    .mirror_mut()
                    .requeue(changed.iter().map(|r| r.snapshot.id), removed);
                let mut h = self.store_health.lock().expect("health lock");
                h.healthy = false;
                h.failures += 1;
                h.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Where messages for `link` go from now on.
    pub fn add_writer(&self, link: LinkId, outbox: Arc<LinkOutbox>) {
        self.writers
            .lock()
            .expect("writers lock")
            .insert(link, outbox);
    }

    /// Closes `link`'s outbox: its writer flushes what is queued and stops.
    pub fn remove_writer(&self, link: LinkId) {
        if let Some(o) = self.writers.lock().expect("writers lock").remove(&link) {
            o.close();
        }
    }

    /// Routes everything the authority queued to the links' writer tasks.
    pub fn flush(&self, a: &mut Authority) {
        let out = a.take_outbox();
        if out.is_empty() {
            return;
        }
        let writers = self.writers.lock().expect("writers lock");
        for (link, msg) in out {
            // A full outbox fails its link; the link's reader closes it and the shard's
            // sectors wait for a placement, as for any dead link.
            if let Some(w) = writers.get(&link) {
                w.push(msg);
            }
        }
    }
}
