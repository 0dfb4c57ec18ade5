//! Which gateway holds each player, and which gateways a connect token names (pure: no I/O).
//!
//! The newest `Joined` wins, the gateway it left is told `Superseded`, and the old gateway's
//! `Left` and commands for that player are ignored from then on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use sidereal_core::gateway_link::AuthorityMessage;
use tokio::sync::mpsc::UnboundedSender;

use crate::rules::sessions::address_key;

/// Addresses of each transport written into one connect token (netcode takes 32 in all).
const TOKEN_ADDRESSES_PER_TRANSPORT: usize = 16;

pub type GatewayId = u64;

/// One linked gateway.
#[derive(Debug)]
pub struct LinkedGateway {
    pub name: String,
    pub udp: Vec<SocketAddr>,
    pub websocket: Vec<SocketAddr>,
    pub players: BTreeSet<u64>,
    to_gateway: UnboundedSender<AuthorityMessage>,
}

/// Linked gateways and which one holds each player.
#[derive(Debug, Default)]
pub struct GatewayRegistry {
    next: GatewayId,
    gateways: BTreeMap<GatewayId, LinkedGateway>,
    holder: HashMap<u64, GatewayId>,
    /// Where each player last logged in from (its address as limits see it), for the fleet-wide
    /// per-address limit.
    logged_in_from: HashMap<u64, IpAddr>,
    /// Turns among gateways holding equally many players (a burst of logins comes before
    /// any of them joins).
    turn: usize,
}

/// What the registry decided about a gateway's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it to the authority.
    Apply,
    /// The player is held by another gateway now (or by none): ignore it.
    Ignore,
}

impl GatewayRegistry {
    pub fn len(&self) -> usize {
        self.gateways.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }

    pub fn gateways(&self) -> impl Iterator<Item = (&GatewayId, &LinkedGateway)> {
        self.gateways.iter()
    }

    /// The players gateway `id` holds; `None` once it is unlinked.
    pub fn players_of(&self, id: GatewayId) -> Option<Vec<u64>> {
        self.gateways
            .get(&id)
            .map(|g| g.players.iter().copied().collect())
    }

    pub(crate) fn link(
        &mut self,
        name: String,
        udp: Vec<SocketAddr>,
        websocket: Vec<SocketAddr>,
        to_gateway: UnboundedSender<AuthorityMessage>,
    ) -> GatewayId {
        self.next += 1;
        self.gateways.insert(
            self.next,
            LinkedGateway {
                name,
                udp,
                websocket,
                players: BTreeSet::new(),
                to_gateway,
            },
        );
        self.next
    }

    /// The gateway's link ended: the players it held, who leave the world.
    pub(crate) fn unlink(&mut self, id: GatewayId) -> Vec<u64> {
        let Some(g) = self.gateways.remove(&id) else {
            return Vec::new();
        };
        let left: Vec<u64> = g
            .players
            .into_iter()
            .filter(|p| self.holder.get(p) == Some(&id))
            .collect();
        for p in &left {
            self.holder.remove(p);
        }
        left
    }

    /// `player` joined on `id`; a gateway that held it before is told it was superseded.
    pub(crate) fn joined(&mut self, id: GatewayId, player: u64) {
        if let Some(old) = self.holder.insert(player, id).filter(|old| *old != id)
            && let Some(g) = self.gateways.get_mut(&old)
        {
            g.players.remove(&player);
            let _ = g
                .to_gateway
                .send(AuthorityMessage::Superseded { player_id: player });
        }
        if let Some(g) = self.gateways.get_mut(&id) {
            g.players.insert(player);
        }
    }

    /// Whether a report about `player` from `id` counts: only from the gateway holding it.
    pub(crate) fn holds(&self, id: GatewayId, player: u64) -> Verdict {
        if self.holder.get(&player) == Some(&id) {
            Verdict::Apply
        } else {
            Verdict::Ignore
        }
    }

    pub(crate) fn left(&mut self, id: GatewayId, player: u64) -> Verdict {
        let v = self.holds(id, player);
        if v == Verdict::Apply {
            self.holder.remove(&player);
        }
        if let Some(g) = self.gateways.get_mut(&id) {
            g.players.remove(&player);
        }
        v
    }

    /// A login minted a session for `player` from `address`.
    pub fn minted(&mut self, player: u64, address: IpAddr) {
        // Players who left keep their entry until the table outgrows the players held.
        if self.logged_in_from.len() > 2 * self.holder.len() + 1024 {
            let holder = &self.holder;
            self.logged_in_from.retain(|p, _| holder.contains_key(p));
        }
        self.logged_in_from.insert(player, address_key(address));
    }

    /// Players other than `except` playing now, on any gateway, who logged in from `address`
    /// (as limits see it): each gateway counts only its own sessions, so a login checks this
    /// against the per-address limit for the whole fleet.
    pub fn playing_from(&self, address: IpAddr, except: u64) -> usize {
        let key = address_key(address);
        self.holder
            .keys()
            .filter(|p| **p != except && self.logged_in_from.get(p) == Some(&key))
            .count()
    }

    /// Sends `msg` to gateway `id`, if it is still linked.
    pub(crate) fn tell(&self, id: GatewayId, msg: AuthorityMessage) {
        if let Some(g) = self.gateways.get(&id) {
            let _ = g.to_gateway.send(msg);
        }
    }

    /// Sends `msg` to every gateway.
    pub fn tell_all(&self, msg: &AuthorityMessage) {
        for g in self.gateways.values() {
            let _ = g.to_gateway.send(msg.clone());
        }
    }

    /// Sends `msg` to every gateway but `except`.
    pub(crate) fn broadcast(&self, except: GatewayId, msg: &AuthorityMessage) {
        for (id, g) in &self.gateways {
            if *id != except {
                let _ = g.to_gateway.send(msg.clone());
            }
        }
    }

    /// The game addresses the next connect token names: the gateway holding the fewest players
    /// first (equals take turns), then the others as fallbacks. `None` when no gateway is
    /// linked.
    pub fn token_servers(&mut self) -> Option<(Vec<SocketAddr>, Vec<SocketAddr>)> {
        if self.gateways.is_empty() {
            return None;
        }
        let n = self.gateways.len();
        let turn = self.turn % n;
        self.turn = self.turn.wrapping_add(1);
        let mut order: Vec<(usize, &LinkedGateway)> = self.gateways.values().enumerate().collect();
        order.sort_by_key(|(i, g)| (g.players.len(), (i + n - turn) % n));
        let order: Vec<&LinkedGateway> = order.into_iter().map(|(_, g)| g).collect();
        // Gateways behind one load balancer all announce its address: named once.
        let distinct = |all: Vec<SocketAddr>| {
            let mut seen = BTreeSet::new();
            let named: Vec<SocketAddr> = all.into_iter().filter(|a| seen.insert(*a)).collect();
            named
                .into_iter()
                .take(TOKEN_ADDRESSES_PER_TRANSPORT)
                .collect::<Vec<_>>()
        };
        Some((
            distinct(order.iter().flat_map(|g| g.udp.iter().copied()).collect()),
            distinct(
                order
                    .iter()
                    .flat_map(|g| g.websocket.iter().copied())
                    .collect(),
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    fn gateway(
        reg: &mut GatewayRegistry,
        port: u16,
    ) -> (GatewayId, UnboundedReceiver<AuthorityMessage>) {
        let (tx, rx) = unbounded_channel();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        (reg.link(format!("gw-{port}"), vec![addr], vec![], tx), rx)
    }

    #[test]
    fn the_newest_join_holds_the_player_and_the_old_gateway_is_told_and_ignored() {
        let mut reg = GatewayRegistry::default();
        let (a, mut a_rx) = gateway(&mut reg, 1);
        let (b, _b_rx) = gateway(&mut reg, 2);
        reg.joined(a, 7);
        assert_eq!(reg.holds(a, 7), Verdict::Apply);
        reg.joined(b, 7);
        assert_eq!(
            a_rx.try_recv().unwrap(),
            AuthorityMessage::Superseded { player_id: 7 }
        );
        assert_eq!(
            reg.holds(a, 7),
            Verdict::Ignore,
            "A's commands no longer count"
        );
        assert_eq!(
            reg.left(a, 7),
            Verdict::Ignore,
            "A's late Left does not end B's session"
        );
        assert_eq!(reg.holds(b, 7), Verdict::Apply);
        // B dies: its players leave; A, which held the player before, is not consulted.
        assert_eq!(reg.unlink(b), vec![7]);
        assert_eq!(reg.holds(a, 7), Verdict::Ignore);
        assert_eq!(reg.unlink(a), Vec::<u64>::new());
    }

    #[test]
    fn players_from_one_address_are_counted_across_gateways_while_they_play() {
        let mut reg = GatewayRegistry::default();
        let (a, _a_rx) = gateway(&mut reg, 1);
        let (b, _b_rx) = gateway(&mut reg, 2);
        let home: IpAddr = "198.51.100.4".parse().unwrap();
        let v6a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        for (player, addr) in [(1, home), (2, home), (3, v6a), (4, v6b)] {
            reg.minted(player, addr);
        }
        assert_eq!(reg.playing_from(home, 0), 0, "minted is not playing");
        reg.joined(a, 1);
        reg.joined(b, 2);
        reg.joined(b, 3);
        reg.joined(a, 4);
        assert_eq!(reg.playing_from(home, 0), 2, "one on each gateway");
        assert_eq!(reg.playing_from(home, 1), 1, "a player's own session aside");
        assert_eq!(reg.playing_from(v6b, 0), 2, "an IPv6 /64 is one address");
        reg.left(b, 2);
        assert_eq!(reg.playing_from(home, 0), 1);
        reg.unlink(a);
        assert_eq!(
            reg.playing_from(home, 0),
            0,
            "a dead gateway's players are gone"
        );
    }

    #[test]
    fn gateways_behind_one_address_are_named_once() {
        let mut reg = GatewayRegistry::default();
        let lb: SocketAddr = "203.0.113.7:7702".parse().unwrap();
        for name in ["gw-a", "gw-b"] {
            let (tx, _rx) = unbounded_channel();
            reg.link(name.into(), vec![lb], vec![], tx);
        }
        assert_eq!(reg.token_servers().unwrap().0, vec![lb]);
    }

    #[test]
    fn tokens_name_the_least_loaded_gateway_first() {
        let mut reg = GatewayRegistry::default();
        assert!(reg.token_servers().is_none());
        let (a, _a_rx) = gateway(&mut reg, 1);
        let (_b, _b_rx) = gateway(&mut reg, 2);
        reg.joined(a, 1);
        let (udp, ws) = reg.token_servers().unwrap();
        assert_eq!(
            udp,
            vec![
                "127.0.0.1:2".parse().unwrap(),
                "127.0.0.1:1".parse().unwrap()
            ]
        );
        assert!(ws.is_empty());
    }
}
