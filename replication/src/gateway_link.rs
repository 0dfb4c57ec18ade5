//! The authority's side of the gateway link ([`sidereal_core::gateway_link`]): it admits
//! `sidereal gateway` processes, learns which players each holds, applies their players' joins,
//! leaves and commands as it does the embedded game port's, relays chat between gateways, and
//! tells each gateway where the sectors are and where its players' ships are.
//!
//! Which gateway holds a player is decided here, in [`GatewayRegistry`] (pure): the newest
//! `Joined` wins, the gateway it left is told `Superseded`, and the old gateway's `Left` and
//! commands for that player are ignored from then on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sidereal_core::gateway_link::{
    ALIVE_EVERY, AuthorityMessage, GATEWAY_LINK_VERSION, GatewayMessage, MAX_GATEWAY_ADDRESSES,
    authority_proof, verify_gateway_proof,
};
use sidereal_core::handshake::fresh_nonce;
use sidereal_core::link_socket;
use sidereal_core::protocol::{FrameReader, MAX_FRAME_BYTES, MAX_HELLO_FRAME_BYTES, encode_frame};
use sidereal_core::stream::valid_subscriber_name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::{info, warn};

use crate::gateway::GatewayEvent;
use crate::server::{HANDSHAKE_TIMEOUT, LinkSettings, on_gateway_event};
use crate::state::Shared;

/// How often a gateway is told where its players' ships are, and checked for placement news.
const SHIPS_EVERY: Duration = Duration::from_millis(250);
const PLACEMENT_CHECK_EVERY: Duration = Duration::from_millis(100);
/// Most gateways linked at once.
pub const MAX_GATEWAYS: usize = 64;
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

    fn link(
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
    fn unlink(&mut self, id: GatewayId) -> Vec<u64> {
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
    fn joined(&mut self, id: GatewayId, player: u64) {
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
    fn holds(&self, id: GatewayId, player: u64) -> Verdict {
        if self.holder.get(&player) == Some(&id) {
            Verdict::Apply
        } else {
            Verdict::Ignore
        }
    }

    fn left(&mut self, id: GatewayId, player: u64) -> Verdict {
        let v = self.holds(id, player);
        if v == Verdict::Apply {
            self.holder.remove(&player);
        }
        if let Some(g) = self.gateways.get_mut(&id) {
            g.players.remove(&player);
        }
        v
    }

    /// Sends `msg` to every gateway but `except`.
    fn broadcast(&self, except: GatewayId, msg: &AuthorityMessage) {
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

/// Serves gateway links on `listener` until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, settings: LinkSettings) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let s = shared.clone();
                tokio::spawn(async move {
                    if let Err(why) = serve_gateway(s, stream, settings).await {
                        warn!(%peer, reason = %why, "gateway link closed");
                    }
                });
            }
            Err(e) => warn!(error = %e, "gateway link accept failed"),
        }
    }
}

async fn serve_gateway(
    shared: Arc<Shared>,
    stream: TcpStream,
    settings: LinkSettings,
) -> Result<(), String> {
    let _ = link_socket::harden(&stream, settings.timeout);
    let (mut rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::with_limit(MAX_HELLO_FRAME_BYTES);
    let challenge = fresh_nonce();
    let hello = AuthorityMessage::Challenge {
        protocol: GATEWAY_LINK_VERSION,
        nonce: challenge,
    };
    wr.write_all(&encode_frame(&hello))
        .await
        .map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_one(&mut rd, &mut reader))
        .await
        .map_err(|_| format!("no Hello within {HANDSHAKE_TIMEOUT:?}"))??;
    let secret = shared
        .authority
        .lock()
        .expect("authority lock")
        .config()
        .secret
        .clone();
    let refusal = |reason: String| AuthorityMessage::Rejected { reason };
    let GatewayMessage::Hello {
        protocol,
        gateway: name,
        nonce,
        proof,
        udp,
        websocket,
    } = first
    else {
        return Err("the first message was not a Hello".into());
    };
    let refused = if protocol != GATEWAY_LINK_VERSION {
        Some(format!(
            "gateway link protocol {protocol}, the authority speaks {GATEWAY_LINK_VERSION}"
        ))
    } else if !valid_subscriber_name(&name) {
        Some("a gateway name is 1-63 of [A-Za-z0-9.-]".into())
    } else if !verify_gateway_proof(&secret, &challenge, &nonce, &name, &proof) {
        Some("wrong secret".into())
    } else if udp.len() > MAX_GATEWAY_ADDRESSES || websocket.len() > MAX_GATEWAY_ADDRESSES {
        Some(format!(
            "more than {MAX_GATEWAY_ADDRESSES} addresses per transport"
        ))
    } else if shared.gateways.lock().expect("gateways lock").len() >= MAX_GATEWAYS {
        Some(format!("{MAX_GATEWAYS} gateways are linked already"))
    } else {
        None
    };
    if let Some(reason) = refused {
        let _ = wr.write_all(&encode_frame(&refusal(reason.clone()))).await;
        return Err(format!("refused: {reason}"));
    }
    let welcome = AuthorityMessage::Welcome {
        proof: authority_proof(&secret, &challenge, &nonce, &name),
    };
    wr.write_all(&encode_frame(&welcome))
        .await
        .map_err(|e| e.to_string())?;
    reader.set_limit(settings.max_frame_bytes.max(MAX_FRAME_BYTES));
    let (to_gateway, outbox) = unbounded_channel();
    let id = shared.gateways.lock().expect("gateways lock").link(
        name.clone(),
        udp.clone(),
        websocket.clone(),
        to_gateway.clone(),
    );
    info!(gateway = %name, ?udp, ?websocket, "gateway linked");
    let writer = tokio::spawn(write_gateway(wr, outbox, settings.timeout));
    let news = tokio::spawn(tell_news(shared.clone(), id, to_gateway));
    let why = read_gateway(&shared, id, &mut rd, &mut reader).await;
    news.abort();
    writer.abort();
    let left = shared.gateways.lock().expect("gateways lock").unlink(id);
    for player_id in &left {
        on_gateway_event(
            &shared,
            GatewayEvent::Left {
                player_id: *player_id,
            },
        );
    }
    info!(gateway = %name, players = left.len(), reason = %why, "gateway unlinked; its players left");
    Ok(())
}

async fn read_one(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    reader: &mut FrameReader,
) -> Result<GatewayMessage, String> {
    let mut buf = [0u8; 1024];
    loop {
        if let Some(m) = reader.next_frame().map_err(|e| e.to_string())? {
            return Ok(m);
        }
        let n = rd.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        reader.push(&buf[..n]);
    }
}

/// Applies the gateway's reports until it closes, breaks, sends garbage or falls silent.
async fn read_gateway(
    shared: &Arc<Shared>,
    id: GatewayId,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    reader: &mut FrameReader,
) -> String {
    let mut buf = vec![0u8; 64 * 1024];
    let silence = ALIVE_EVERY * 3;
    loop {
        loop {
            match reader.next_frame::<GatewayMessage>() {
                Ok(Some(m)) => apply(shared, id, m),
                Ok(None) => break,
                Err(e) => return format!("malformed frame: {e}"),
            }
        }
        match tokio::time::timeout(silence, rd.read(&mut buf)).await {
            Err(_) => return format!("nothing for {silence:?}"),
            Ok(Ok(0)) => return "closed by the gateway".into(),
            Ok(Ok(n)) => reader.push(&buf[..n]),
            Ok(Err(e)) => return format!("read error: {e}"),
        }
    }
}

fn apply(shared: &Arc<Shared>, id: GatewayId, m: GatewayMessage) {
    let event = {
        let mut reg = shared.gateways.lock().expect("gateways lock");
        match m {
            GatewayMessage::Joined { player_id, ship } => {
                reg.joined(id, player_id);
                GatewayEvent::Joined { player_id, ship }
            }
            GatewayMessage::Left { player_id } => {
                if reg.left(id, player_id) == Verdict::Ignore {
                    return;
                }
                GatewayEvent::Left { player_id }
            }
            GatewayMessage::Input {
                player_id,
                thrust,
                turn,
                fire,
            } => {
                if reg.holds(id, player_id) == Verdict::Ignore {
                    return;
                }
                GatewayEvent::Input {
                    player_id,
                    thrust,
                    turn,
                    fire,
                }
            }
            GatewayMessage::Chat(line) => {
                if reg.holds(id, line.player_id) == Verdict::Apply {
                    reg.broadcast(id, &AuthorityMessage::Chat(line));
                }
                return;
            }
            GatewayMessage::Alive | GatewayMessage::Hello { .. } => return,
        }
    };
    on_gateway_event(shared, event);
}

async fn write_gateway(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut outbox: UnboundedReceiver<AuthorityMessage>,
    timeout: Duration,
) {
    let mut buf = Vec::new();
    while let Some(first) = outbox.recv().await {
        buf.clear();
        buf.extend(encode_frame(&first));
        while let Ok(more) = outbox.try_recv() {
            buf.extend(encode_frame(&more));
        }
        match tokio::time::timeout(timeout, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    let _ = wr.shutdown().await;
}

/// Placement whenever it changes, and the gateway's players' ships a few times a second.
async fn tell_news(
    shared: Arc<Shared>,
    id: GatewayId,
    to_gateway: UnboundedSender<AuthorityMessage>,
) {
    let mut told: Option<(u64, BTreeMap<sidereal_core::ShardId, String>)> = None;
    let mut every = tokio::time::interval(PLACEMENT_CHECK_EVERY);
    let mut next_ships = Instant::now();
    loop {
        every.tick().await;
        let players: Vec<u64> = match shared
            .gateways
            .lock()
            .expect("gateways lock")
            .gateways
            .get(&id)
        {
            Some(g) => g.players.iter().copied().collect(),
            None => return,
        };
        let a = shared.authority.lock().expect("authority lock");
        let placement = a.placement();
        let now = (placement.generation, a.stream_addresses().clone());
        let mut out = Vec::new();
        if told.as_ref() != Some(&now) {
            out.push(AuthorityMessage::Placement {
                generation: placement.generation,
                sectors: placement
                    .sectors
                    .iter()
                    .map(|(s, shard)| (*s, shard.clone()))
                    .collect(),
                streams: now.1.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            });
            told = Some(now);
        }
        if Instant::now() >= next_ships {
            next_ships = Instant::now() + SHIPS_EVERY;
            let ships = players
                .iter()
                .filter_map(|p| {
                    let ship = a.players().get(p)?;
                    let at = a.mirror().get(*ship)?.snapshot.state.pos;
                    Some((*p, at))
                })
                .collect();
            out.push(AuthorityMessage::Ships { ships });
        }
        drop(a);
        for m in out {
            if to_gateway.send(m).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
