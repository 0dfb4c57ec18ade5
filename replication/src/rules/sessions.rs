//! Who may hold game-port connections. Each login mints a session (netcode's client id) for a
//! player from an address; a connection request is admitted only while the player holds fewer
//! than [`SessionLimits::per_player`] sessions (its current one, and one it is reconnecting
//! from, which netcode times out) and its address fewer than [`SessionLimits::per_address`].
//! So one account logging in again and again cannot fill the game port's slots, and neither can
//! one address. Plain data and pure decisions, the clock passed in; the gateway asks it through
//! lightyear's connection-request hook.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightyear::connection::shared::{ConnectionRequestHandler, DeniedReason};
use lightyear::prelude::PeerId;

/// Limits on sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions one player may hold: the current one and one being replaced.
    pub per_player: usize,
    /// Sessions all players from one address (an IPv4 address, an IPv6 /64) may hold.
    pub per_address: usize,
    /// How long an admitted request may take to become a connection before its slot is freed.
    pub connect_within: Duration,
    /// How long a minted session may wait for its first request (the token's validity).
    pub token_valid_for: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            per_player: 2,
            per_address: 64,
            connect_within: Duration::from_secs(10),
            token_valid_for: Duration::from_secs(60),
        }
    }
}

/// An address as limits see it: IPv4 as is, IPv6 by its /64 (one subscriber's prefix, whose
/// low bits an attacker rotates freely), IPv4-mapped IPv6 as IPv4.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was refused (`sidereal_game_connections_denied_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// The player holds its limit of sessions already.
    PlayerLimit,
    /// The address holds its limit of sessions already.
    AddressLimit,
}

impl SessionRefusal {
    pub fn label(&self) -> &'static str {
        match self {
            SessionRefusal::PlayerLimit => "player_limit",
            SessionRefusal::AddressLimit => "address_limit",
        }
    }
}

/// Every `reason` label of `sidereal_game_connections_denied_total`.
pub const SESSION_REFUSALS: [&str; 2] = ["player_limit", "address_limit"];

#[derive(Debug, Clone, Copy)]
struct Session {
    player: u64,
    address: IpAddr,
    minted: Instant,
    /// When its connection request was admitted; `None` while only minted.
    admitted: Option<Instant>,
    /// Why its connection request was refused, if it was.
    refused: Option<SessionRefusal>,
    connected: bool,
}

/// Sessions minted, admitted and connected, and the counts of refusals. Admissions are counted
/// per player and per address as they happen, so a request is answered without a scan; the
/// table is swept for stale sessions at most once a second.
#[derive(Debug, Default)]
pub struct SessionTable {
    limits: SessionLimits,
    sessions: HashMap<u64, Session>,
    held_by_player: HashMap<u64, usize>,
    held_by_address: HashMap<IpAddr, usize>,
    next_sweep: Option<Instant>,
    pub denied: HashMap<&'static str, u64>,
}

impl SessionTable {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// A login minted `session` for `player` from `ip`.
    pub fn minted(&mut self, session: u64, player: u64, ip: IpAddr, now: Instant) {
        self.forget_stale(now);
        self.sessions.insert(
            session,
            Session {
                player,
                address: address_key(ip),
                minted: now,
                admitted: None,
                refused: None,
                connected: false,
            },
        );
    }

    /// Whether a connection request for `session` may go on. A session this table did not mint
    /// (minted before a restart) is admitted: its token is genuine and its player unknown here.
    pub fn admit(&mut self, session: u64, now: Instant) -> Result<(), SessionRefusal> {
        self.forget_stale(now);
        let Some(s) = self.sessions.get(&session).copied() else {
            return Ok(());
        };
        // Netcode's client repeats a request until it is answered: the same answer again.
        if let Some(why) = s.refused {
            return Err(why);
        }
        if s.admitted.is_some() {
            return Ok(());
        }
        let by_player = self.held_by_player.get(&s.player).copied().unwrap_or(0);
        let by_address = self.held_by_address.get(&s.address).copied().unwrap_or(0);
        let result = if by_player >= self.limits.per_player {
            Err(SessionRefusal::PlayerLimit)
        } else if by_address >= self.limits.per_address {
            Err(SessionRefusal::AddressLimit)
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {
                self.sessions.get_mut(&session).expect("found").admitted = Some(now);
                *self.held_by_player.entry(s.player).or_default() += 1;
                *self.held_by_address.entry(s.address).or_default() += 1;
            }
            Err(why) => {
                // Remembered until the token expires, so its repeats are refused too.
                self.sessions.get_mut(&session).expect("found").refused = Some(why);
                *self.denied.entry(why.label()).or_default() += 1;
            }
        }
        result
    }

    /// The session's connection is up.
    pub fn connected(&mut self, session: u64) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.connected = true;
        }
    }

    /// The session's connection ended: its slot is free.
    pub fn ended(&mut self, session: u64) {
        if let Some(s) = self.sessions.remove(&session) {
            self.release(&s);
        }
    }

    /// Sessions admitted or connected now.
    pub fn holding(&self) -> usize {
        self.held_by_player.values().sum()
    }

    /// Frees the slots an admitted session held.
    fn release(&mut self, s: &Session) {
        if s.admitted.is_none() {
            return;
        }
        release_one(&mut self.held_by_player, &s.player);
        release_one(&mut self.held_by_address, &s.address);
    }

    /// Minted sessions never used within the token's validity, and admitted requests that did not
    /// become connections in time, hold nothing. At most once a second: a sweep reads every
    /// session.
    fn forget_stale(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = Some(now + Duration::from_secs(1));
        let limits = self.limits;
        let stale: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| match s.admitted {
                None => now.saturating_duration_since(s.minted) >= limits.token_valid_for,
                Some(at) => {
                    !s.connected && now.saturating_duration_since(at) >= limits.connect_within
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.ended(id);
        }
    }
}

/// One slot fewer for `key`; a key holding none is forgotten.
fn release_one<K: std::hash::Hash + Eq>(held: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = held.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            held.remove(key);
        }
    }
}

/// The table as lightyear's connection-request hook, shared with the login API and the
/// gateway's connection observers.
#[derive(Debug, Clone, Default)]
pub struct SessionGate(pub Arc<Mutex<SessionTable>>);

impl SessionGate {
    pub fn new(limits: SessionLimits) -> Self {
        Self(Arc::new(Mutex::new(SessionTable::new(limits))))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SessionTable> {
        self.0.lock().expect("sessions lock")
    }
}

impl ConnectionRequestHandler for SessionGate {
    fn handle_request(&self, client_id: PeerId) -> Option<DeniedReason> {
        let PeerId::Netcode(session) = client_id else {
            return None;
        };
        self.lock()
            .admit(session, Instant::now())
            .err()
            .map(|why| DeniedReason::Custom(why.label().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADA: u64 = 1;
    const BOB: u64 = 2;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_account_logging_in_300_times_holds_two_sessions_and_others_still_get_in() {
        let mut t = SessionTable::new(SessionLimits::default());
        let now = Instant::now();
        let mut admitted = 0;
        for session in 0..300 {
            t.minted(session, ADA, ip("10.0.0.1"), now);
            if t.admit(session, now).is_ok() {
                t.connected(session);
                admitted += 1;
            }
        }
        assert_eq!(admitted, 2, "the current session and the one it replaces");
        assert_eq!(t.denied["player_limit"], 298);
        t.minted(1000, BOB, ip("10.0.0.1"), now);
        assert_eq!(t.admit(1000, now), Ok(()));
        // When the replaced session ends (netcode's timeout), ada may reconnect again.
        t.ended(0);
        t.minted(301, ADA, ip("10.0.0.1"), now);
        assert_eq!(t.admit(301, now), Ok(()));
    }

    #[test]
    fn one_address_holds_at_most_its_limit_and_ipv6_counts_by_64() {
        let limits = SessionLimits {
            per_address: 3,
            ..SessionLimits::default()
        };
        let mut t = SessionTable::new(limits);
        let now = Instant::now();
        // Rotating the low 64 bits of an IPv6 address does not make new addresses.
        for (i, a) in [
            "2001:db8::1",
            "2001:db8::2:3",
            "2001:db8::ffff:1",
            "2001:db8::9",
        ]
        .iter()
        .enumerate()
        {
            t.minted(i as u64, 100 + i as u64, ip(a), now);
        }
        assert!(t.admit(0, now).is_ok() && t.admit(1, now).is_ok() && t.admit(2, now).is_ok());
        assert_eq!(t.admit(3, now), Err(SessionRefusal::AddressLimit));
        t.minted(9, 200, ip("2001:db8:0:1::1"), now);
        assert_eq!(t.admit(9, now), Ok(()), "another /64");
        assert_eq!(
            address_key(ip("::ffff:192.0.2.7")),
            ip("192.0.2.7"),
            "IPv4-mapped is IPv4"
        );
    }

    #[test]
    fn repeated_requests_count_once_and_abandoned_ones_free_their_slot() {
        let mut t = SessionTable::new(SessionLimits::default());
        let now = Instant::now();
        t.minted(1, ADA, ip("10.0.0.1"), now);
        for _ in 0..10 {
            assert_eq!(t.admit(1, now), Ok(()));
        }
        assert_eq!(t.holding(), 1);
        t.minted(2, ADA, ip("10.0.0.1"), now);
        assert_eq!(t.admit(2, now), Ok(()));
        t.minted(3, ADA, ip("10.0.0.1"), now);
        assert_eq!(t.admit(3, now), Err(SessionRefusal::PlayerLimit));
        assert_eq!(
            t.admit(3, now),
            Err(SessionRefusal::PlayerLimit),
            "a refused request repeated is refused again"
        );
        assert_eq!(t.denied["player_limit"], 1, "and counted once");
        // Neither request became a connection: after the connect window both slots are free.
        let later = now + Duration::from_secs(11);
        t.minted(4, ADA, ip("10.0.0.1"), later);
        assert_eq!(t.admit(4, later), Ok(()));
        assert_eq!(t.holding(), 1);
        // A session minted before a restart is not known here and is let through.
        assert_eq!(t.admit(77, later), Ok(()));
    }
}
