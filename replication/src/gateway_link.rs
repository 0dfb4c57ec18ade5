//! The authority's side of the gateway link ([`sidereal_core::gateway_link`]): it admits
//! `sidereal gateway` processes, learns which players each holds, applies their players' joins,
//! leaves and commands as it does the embedded game port's, relays chat between gateways, and
//! tells each gateway where the sectors are and where its players' ships are.
//!
//! Which gateway holds a player is decided here, in [`crate::rules::gateway_registry`] (pure): the newest
//! `Joined` wins, the gateway it left is told `Superseded`, and the old gateway's `Left` and
//! commands for that player are ignored from then on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sidereal_core::gateway_link::{
    ALIVE_EVERY, AuthorityMessage, GATEWAY_LINK, GATEWAY_LINK_VERSION, GatewayMessage,
    MAX_GATEWAY_ADDRESSES,
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
use crate::link_settings::{HANDSHAKE_TIMEOUT, LinkSettings};
use crate::players::on_gateway_event;
use crate::rules::gateway_registry::{GatewayId, Verdict};
use crate::state::Shared;

/// How often a gateway is told where its players' ships are, and checked for placement news.
const SHIPS_EVERY: Duration = Duration::from_millis(250);
const PLACEMENT_CHECK_EVERY: Duration = Duration::from_millis(100);
/// Most gateways linked at once.
pub const MAX_GATEWAYS: usize = 64;
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
    } else if !GATEWAY_LINK.verify_hello(&secret, &challenge, &nonce, &name, &proof) {
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
        proof: GATEWAY_LINK.welcome(&secret, &challenge, &nonce, &name),
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
            GatewayMessage::Input { player_id, command } => {
                if reg.holds(id, player_id) == Verdict::Ignore {
                    return;
                }
                GatewayEvent::Input { player_id, command }
            }
            GatewayMessage::Chat(line) => {
                if reg.holds(id, line.player_id) == Verdict::Apply {
                    reg.broadcast(id, &AuthorityMessage::Chat(line));
                }
                return;
            }
            GatewayMessage::Login {
                request,
                client,
                register,
                body,
            } => {
                answer_login(shared.clone(), id, request, client, register, body);
                return;
            }
            GatewayMessage::Alive | GatewayMessage::Hello { .. } => return,
        }
    };
    on_gateway_event(shared, event);
}

/// Answers a login a gateway passed on, as the login endpoint here would (the same limits,
/// counted against the player's own address), without holding up the gateway's reports.
fn answer_login(
    shared: Arc<Shared>,
    id: GatewayId,
    request: u64,
    client: std::net::IpAddr,
    register: bool,
    body: Vec<u8>,
) {
    tokio::spawn(async move {
        let (status, retry_after, body) =
            crate::http::login_http::answer_for_gateway(&shared, client, register, &body).await;
        let reg = shared.gateways.lock().expect("gateways lock");
        reg.tell(
            id,
            AuthorityMessage::LoginAnswer {
                request,
                status,
                retry_after,
                body,
            },
        );
    });
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
        let Some(players) = shared
            .gateways
            .lock()
            .expect("gateways lock")
            .players_of(id)
        else {
            return;
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
