//! How often shards report entity state, and the checkpoint's report rounds.
//!
//! When nothing here needs the 30 Hz state (no game port serves players from the mirror and
//! shards shadow themselves), shards report only when asked: before each checkpoint the shell
//! asks every live shard for a `Report` round and writes once all have answered (or a short
//! wait ran out). A checkpoint then holds the state shards simulated a tick or two before it,
//! as when they reported every tick, for a thirtieth of the updates.

use sidereal_core::protocol::ReplicationMessage;

use super::Authority;

impl Authority {
    /// Shards that shadow themselves report entity updates every `ticks` ticks (1: every
    /// tick; 0: only when a checkpoint asks). Not 1 only when nothing here needs the 30 Hz
    /// state: no game port serving players from the mirror (gateways take theirs from the
    /// shards' streams).
    pub fn set_report_every(&mut self, ticks: u32) {
        self.report_every = ticks;
        self.neighbours_told = None;
    }

    /// How often shards report entity updates, in ticks (0: only when asked).
    pub fn report_every(&self) -> u32 {
        if self.shards_shadow_themselves() {
            self.report_every
        } else {
            1
        }
    }

    /// Asks every live shard to report its entities' state now, for a checkpoint, and returns
    /// the round to wait for with [`Authority::reports_in`]. `None` when shards report every
    /// tick anyway: the mirror is current.
    pub fn request_reports(&mut self) -> Option<u64> {
        if self.report_every() == 1 {
            return None;
        }
        self.report_round += 1;
        let round = self.report_round;
        let shards: Vec<_> = self.live.keys().cloned().collect();
        for shard in shards {
            self.send_to(&shard, ReplicationMessage::Report { round });
        }
        Some(round)
    }

    /// Whether every live shard has answered report `round` (a shard that linked after the
    /// request never will: the checkpoint's wait runs out then).
    pub fn reports_in(&self, round: u64) -> bool {
        self.live
            .keys()
            .all(|s| self.reported.get(s).is_some_and(|r| *r >= round))
    }
}
