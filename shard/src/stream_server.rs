//! The sector streams' TCP server: accepts subscribers, checks their proof of the fleet's
//! secret, and bridges each socket to the app's [`StreamHub`] (subscriptions in, frames out) on
//! two threads of its own. A subscriber that breaks protocol, stalls a write for the timeout
//! or falls [`MAX_QUEUED_FRAMES`](crate::streams::MAX_QUEUED_FRAMES) behind is disconnected;
//! nothing it does reaches the simulation except its subscription set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use sidereal_core::ShardId;
use sidereal_core::handshake::fresh_nonce;
use sidereal_core::link_socket;
use sidereal_core::protocol::{FrameReader, MAX_HELLO_FRAME_BYTES, encode_frame};
use sidereal_core::stream::{
    MAX_SUBSCRIBED_SECTORS, MAX_SUBSCRIBERS, PublisherMessage, STREAM_LINK,
    STREAM_PROTOCOL_VERSION, SubscriberMessage, valid_band, valid_subscriber_name,
};
use tracing::{info, warn};

use crate::streams::{Frame, HubEvent, MAX_QUEUED_FRAMES, StreamHub};

/// How the server treats subscribers.
#[derive(Debug, Clone)]
pub struct StreamServerConfig {
    pub shard: ShardId,
    pub secret: String,
    pub tick_hz: u32,
    /// A write a subscriber does not take within this ends its connection.
    pub timeout: Duration,
    /// Largest frame accepted from a subscriber after the handshake.
    pub max_frame_bytes: usize,
}

/// Binds `addr` and serves subscribers until the process ends. The bound address (a port of 0
/// picks a free one) and the hub to insert into the shard app.
pub fn serve(addr: &str, config: StreamServerConfig) -> std::io::Result<(SocketAddr, StreamHub)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let (events, hub) = crossbeam_channel::unbounded();
    let config = Arc::new(config);
    let next_id = Arc::new(AtomicU64::new(1));
    let connected = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("stream-accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let (config, events, connected) =
                    (config.clone(), events.clone(), connected.clone());
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let _ = std::thread::Builder::new()
                    .name("stream-sub".into())
                    .spawn(move || serve_subscriber(id, stream, &config, &events, &connected));
            }
        })?;
    info!(%bound, "publishing sector streams");
    Ok((bound, StreamHub(hub)))
}

fn read_frame(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    buf: &mut [u8],
) -> Result<SubscriberMessage, String> {
    loop {
        match reader.next_frame::<SubscriberMessage>() {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            Err(e) => return Err(format!("bad frame: {e}")),
        }
        match stream.read(buf) {
            Ok(0) => return Err("closed".into()),
            Ok(n) => reader.push(&buf[..n]),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// The handshake: the subscriber's name once it proved the secret.
fn admit(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    config: &StreamServerConfig,
    connected: &AtomicUsize,
) -> Result<String, String> {
    let challenge = fresh_nonce();
    let send = |s: &mut TcpStream, m: &PublisherMessage| {
        s.write_all(&encode_frame(m)).map_err(|e| e.to_string())
    };
    send(
        stream,
        &PublisherMessage::Challenge {
            protocol: STREAM_PROTOCOL_VERSION,
            nonce: challenge,
        },
    )?;
    let mut buf = [0u8; 1024];
    let refusal = match read_frame(stream, reader, &mut buf)? {
        SubscriberMessage::Hello { protocol, .. } if protocol != STREAM_PROTOCOL_VERSION => {
            format!("this shard speaks stream protocol {STREAM_PROTOCOL_VERSION}, not {protocol}")
        }
        SubscriberMessage::Hello {
            subscriber,
            nonce,
            proof,
            ..
        } => {
            if !valid_subscriber_name(&subscriber) {
                "a subscriber name is 1-63 of [A-Za-z0-9.-]".to_owned()
            } else if !STREAM_LINK.verify_hello(
                &config.secret,
                &challenge,
                &nonce,
                &subscriber,
                &proof,
            ) {
                "wrong proof of the secret".to_owned()
            } else if connected.load(Ordering::SeqCst) >= MAX_SUBSCRIBERS {
                format!("this shard serves at most {MAX_SUBSCRIBERS} subscribers")
            } else {
                send(
                    stream,
                    &PublisherMessage::Welcome {
                        shard: config.shard.clone(),
                        tick_hz: config.tick_hz,
                        proof: STREAM_LINK.welcome(&config.secret, &challenge, &nonce, &subscriber),
                    },
                )?;
                return Ok(subscriber);
            }
        }
        SubscriberMessage::Subscribe { .. } => "Hello first".to_owned(),
    };
    let _ = send(
        stream,
        &PublisherMessage::Rejected {
            reason: refusal.clone(),
        },
    );
    Err(refusal)
}

fn serve_subscriber(
    id: u64,
    mut stream: TcpStream,
    config: &StreamServerConfig,
    events: &Sender<HubEvent>,
    connected: &AtomicUsize,
) {
    let peer = stream.peer_addr().ok();
    let prepared = link_socket::harden(&stream, config.timeout)
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(5))))
        .and_then(|()| stream.set_write_timeout(Some(config.timeout)));
    if prepared.is_err() {
        return;
    }
    let mut reader = FrameReader::with_limit(MAX_HELLO_FRAME_BYTES);
    let name = match admit(&mut stream, &mut reader, config, connected) {
        Ok(name) => name,
        Err(reason) => {
            warn!(?peer, reason, "sector stream subscriber refused");
            return;
        }
    };
    connected.fetch_add(1, Ordering::SeqCst);
    reader.set_limit(config.max_frame_bytes);
    // Subscribers speak only when their set changes: no read deadline after the handshake
    // (keepalive and the write timeout notice a vanished one).
    let _ = stream.set_read_timeout(None);
    let (frames, outbox) = crossbeam_channel::bounded::<Frame>(MAX_QUEUED_FRAMES);
    let joined = events.send(HubEvent::Joined {
        subscriber: id,
        name: name.clone(),
        frames,
    });
    if joined.is_ok()
        && let Ok(mut writer) = stream.try_clone()
    {
        let spawned = std::thread::Builder::new()
            .name("stream-write".into())
            .spawn(move || {
                let mut out = Vec::with_capacity(64 * 1024);
                while let Ok(first) = outbox.recv() {
                    out.clear();
                    out.extend_from_slice(&first);
                    while out.len() < (1 << 20) {
                        match outbox.try_recv() {
                            Ok(f) => out.extend_from_slice(&f),
                            Err(_) => break,
                        }
                    }
                    if writer.write_all(&out).is_err() {
                        break;
                    }
                }
                let _ = writer.shutdown(std::net::Shutdown::Both);
            });
        if spawned.is_ok() {
            read_subscriptions(id, &mut stream, &mut reader, events, &name);
        }
    }
    let _ = events.send(HubEvent::Left { subscriber: id });
    let _ = stream.shutdown(std::net::Shutdown::Both);
    connected.fetch_sub(1, Ordering::SeqCst);
}

fn read_subscriptions(
    id: u64,
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    events: &Sender<HubEvent>,
    name: &str,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let reason = match read_frame(stream, reader, &mut buf) {
            Ok(SubscriberMessage::Subscribe { sectors, band })
                if sectors.len() <= MAX_SUBSCRIBED_SECTORS && valid_band(band) =>
            {
                if events
                    .send(HubEvent::Subscribe {
                        subscriber: id,
                        sectors,
                        band,
                    })
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Ok(SubscriberMessage::Subscribe { band, .. }) if !valid_band(band) => {
                format!("a band of {band:?} units (not a positive width)")
            }
            Ok(SubscriberMessage::Subscribe { sectors, .. }) => format!(
                "subscribed to {} sectors, more than {MAX_SUBSCRIBED_SECTORS}",
                sectors.len()
            ),
            Ok(SubscriberMessage::Hello { .. }) => "a second Hello".to_owned(),
            Err(e) => e,
        };
        info!(
            subscriber = name,
            reason, "sector stream subscriber disconnected"
        );
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidereal_core::SectorId;
    use sidereal_core::stream::STREAM_LINK;

    const SECRET: &str = "stream-test-secret";

    fn server() -> (SocketAddr, StreamHub) {
        serve(
            "127.0.0.1:0",
            StreamServerConfig {
                shard: ShardId::new("shard-t"),
                secret: SECRET.into(),
                tick_hz: 30,
                timeout: Duration::from_secs(3),
                max_frame_bytes: 1 << 20,
            },
        )
        .unwrap()
    }

    fn next(stream: &mut TcpStream, reader: &mut FrameReader) -> Option<PublisherMessage> {
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(Some(m)) = reader.next_frame::<PublisherMessage>() {
                return Some(m);
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => reader.push(&buf[..n]),
            }
        }
    }

    /// Connects and answers the challenge with `secret`: the connection and the shard's answer.
    fn hello(addr: SocketAddr, secret: &str) -> (TcpStream, FrameReader, Option<PublisherMessage>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = FrameReader::default();
        let Some(PublisherMessage::Challenge {
            nonce: challenge, ..
        }) = next(&mut s, &mut r)
        else {
            panic!("a challenge first");
        };
        let nonce = fresh_nonce();
        let msg = SubscriberMessage::Hello {
            protocol: STREAM_PROTOCOL_VERSION,
            subscriber: "t".into(),
            nonce,
            proof: STREAM_LINK.hello(secret, &challenge, &nonce, "t"),
        };
        s.write_all(&encode_frame(&msg)).unwrap();
        let answer = next(&mut s, &mut r);
        (s, r, answer)
    }

    /// Whether the server closed the connection: the socket ends (not a read timeout), with
    /// at most a refusal before.
    fn closed(s: &mut TcpStream, r: &mut FrameReader) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => r.push(&buf[..n]),
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }

    #[test]
    fn garbage_a_wrong_secret_and_an_oversized_subscription_are_refused_and_nothing_else_breaks() {
        let (addr, hub) = server();
        // Garbage instead of a Hello: a frame claiming 4 GiB is refused before any allocation.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = FrameReader::default();
        assert!(matches!(
            next(&mut s, &mut r),
            Some(PublisherMessage::Challenge { .. })
        ));
        s.write_all(&[0xff; 64]).unwrap();
        assert!(closed(&mut s, &mut r), "garbage closes the connection");
        // A wrong secret: refused with a reason.
        let (_, _, answer) = hello(addr, "not-the-secret-at-all");
        assert!(
            matches!(&answer, Some(PublisherMessage::Rejected { reason }) if reason.contains("proof")),
            "{answer:?}"
        );
        assert!(
            hub.0.try_recv().is_err(),
            "refused peers never reach the app"
        );
        // The right secret, then more sectors than allowed: welcomed, then disconnected.
        let (mut s, mut r, answer) = hello(addr, SECRET);
        assert!(
            matches!(answer, Some(PublisherMessage::Welcome { .. })),
            "{answer:?}"
        );
        let too_many = vec![SectorId::new(0, 0, 0).unwrap(); MAX_SUBSCRIBED_SECTORS + 1];
        let msg = SubscriberMessage::Subscribe {
            sectors: too_many,
            band: None,
        };
        s.write_all(&encode_frame(&msg)).unwrap();
        assert!(
            closed(&mut s, &mut r),
            "an oversized subscription closes the connection"
        );
        let events: Vec<HubEvent> = hub.0.iter().take(2).collect();
        assert!(matches!(events[0], HubEvent::Joined { .. }), "{events:?}");
        assert!(matches!(events[1], HubEvent::Left { .. }), "{events:?}");
        // A band that is not a positive width: disconnected too.
        let (mut s, mut r, _) = hello(addr, SECRET);
        let msg = SubscriberMessage::Subscribe {
            sectors: vec![SectorId::new(0, 0, 0).unwrap()],
            band: Some(f32::NAN),
        };
        s.write_all(&encode_frame(&msg)).unwrap();
        assert!(closed(&mut s, &mut r), "a NaN band closes the connection");
        let events: Vec<HubEvent> = hub.0.iter().take(2).collect();
        assert!(matches!(events[1], HubEvent::Left { .. }), "{events:?}");
        // The server still serves.
        let (_, _, answer) = hello(addr, SECRET);
        assert!(matches!(answer, Some(PublisherMessage::Welcome { .. })));
    }
}
