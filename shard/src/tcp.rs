//! The shard link over TCP: handshake, then one reader and one writer thread bridging the
//! socket to the app's channels. Silence from replication for the link timeout (it sends
//! shadows every tick), or a write it does not take within it, ends the link: the shard exits
//! and its supervisor starts a fresh one, while replication re-homes its sectors.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sidereal_core::ShardId;
use sidereal_core::handshake::{SHARD_LINK, fresh_nonce};
use sidereal_core::link_socket::{self, DEFAULT_LINK_TIMEOUT};
use sidereal_core::protocol::{
    FrameReader, MAX_FRAME_BYTES, PROTOCOL_VERSION, ReplicationMessage, ShardMessage, encode_frame,
};
use tracing::{error, info};

use crate::link::ShardLink;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach replication at {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("replication rejected this shard: {0}")]
    Rejected(String),
    #[error("replication closed the link during the handshake")]
    Closed,
    /// The peer welcomed this shard without proving it knows the secret.
    #[error("the peer at the replication address could not prove it knows the shard secret")]
    Impostor,
    #[error("bad handshake reply: {0}")]
    Protocol(String),
}

/// Messages this shard may have waiting for the socket before the link is taken for dead.
pub const MAX_QUEUED_MESSAGES: usize = 65_536;
/// Bytes gathered into one write at most.
const COALESCE_BYTES: usize = 4 << 20;

/// How the link is kept honest (the same settings as replication's).
#[derive(Debug, Clone, Copy)]
pub struct LinkOptions {
    /// Silence from replication this long means the link is dead; also the longest a write
    /// may take.
    pub timeout: Duration,
    /// Largest frame sent or accepted; bigger messages go out in parts.
    pub max_frame_bytes: usize,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_LINK_TIMEOUT,
            max_frame_bytes: MAX_FRAME_BYTES,
        }
    }
}

/// A connected link and a flag that turns false when the link dies.
pub struct TcpLink {
    pub link: ShardLink,
    pub alive: Arc<AtomicBool>,
    pub incarnation: u32,
}

fn read_one(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
) -> Result<ReplicationMessage, ConnectError> {
    let mut buf = [0u8; 4096];
    loop {
        match reader.next_frame::<ReplicationMessage>() {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            Err(e) => return Err(ConnectError::Protocol(e.to_string())),
        }
        let n = stream.read(&mut buf).map_err(|_| ConnectError::Closed)?;
        if n == 0 {
            return Err(ConnectError::Closed);
        }
        reader.push(&buf[..n]);
    }
}

/// Answers replication's challenge with this shard's proof of `secret`, and checks
/// replication's proof in its `Welcome`: both sides know the secret, and it never crossed the
/// wire. The incarnation replication gave this link.
fn handshake(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    shard: &ShardId,
    secret: &str,
    publishing: Option<String>,
) -> Result<u32, ConnectError> {
    let challenge = match read_one(stream, reader)? {
        ReplicationMessage::Challenge { protocol, nonce } if protocol == PROTOCOL_VERSION => nonce,
        ReplicationMessage::Challenge { protocol, .. } => {
            return Err(ConnectError::Rejected(format!(
                "replication speaks protocol {protocol}, this shard {PROTOCOL_VERSION}: run the same sidereal version on both"
            )));
        }
        other => {
            return Err(ConnectError::Protocol(format!(
                "expected Challenge, got {other:?}"
            )));
        }
    };
    let nonce = fresh_nonce();
    let hello =
        ShardMessage::hello(secret, &challenge, shard.clone(), nonce).publishing(publishing);
    stream
        .write_all(&encode_frame(&hello))
        .map_err(|_| ConnectError::Closed)?;
    match read_one(stream, reader)? {
        ReplicationMessage::Welcome {
            incarnation, proof, ..
        } => {
            if SHARD_LINK.verify_welcome(secret, &challenge, &nonce, &shard.0, &proof) {
                Ok(incarnation)
            } else {
                Err(ConnectError::Impostor)
            }
        }
        ReplicationMessage::Rejected { reason } => Err(ConnectError::Rejected(reason)),
        other => Err(ConnectError::Protocol(format!(
            "expected Welcome, got {other:?}"
        ))),
    }
}

/// Connects, authenticates with `secret`, and starts the bridge threads. `publishing`: where
/// this shard serves its sector streams, told to replication in the `Hello`.
pub fn connect(
    addr: &str,
    shard: &ShardId,
    secret: &str,
    options: LinkOptions,
    publishing: Option<String>,
) -> Result<TcpLink, ConnectError> {
    let io = |source| ConnectError::Io {
        addr: addr.to_owned(),
        source,
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).map_err(io)?;
    link_socket::harden(&stream, options.timeout).map_err(io)?;
    // Replication sends shadows every tick: a read that waits this long means it is gone.
    stream.set_read_timeout(Some(options.timeout)).map_err(io)?;
    stream
        .set_write_timeout(Some(options.timeout))
        .map_err(io)?;
    let mut reader = FrameReader::with_limit(options.max_frame_bytes);
    let incarnation = handshake(&mut stream, &mut reader, shard, secret, publishing)?;
    info!(%shard, incarnation, addr, "shard link up");
    let (mut link, to_shard, from_shard) = ShardLink::pair();
    link.max_frame_bytes = options.max_frame_bytes;
    to_shard
        .send(ReplicationMessage::Welcome {
            incarnation,
            tick_hz: 0,
            proof: [0; 32],
        })
        .expect("receiver alive");
    let alive = Arc::new(AtomicBool::new(true));

    let mut rd = stream.try_clone().map_err(io)?;
    let alive_r = alive.clone();
    std::thread::Builder::new()
        .name("link-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            'outer: loop {
                loop {
                    match reader.next_frame::<ReplicationMessage>() {
                        Ok(Some(m)) => {
                            if to_shard.send(m).is_err() {
                                break 'outer;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            error!(error = %e, "bad frame from replication; closing the link");
                            break 'outer;
                        }
                    }
                }
                match rd.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => reader.push(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        error!(timeout = ?options.timeout, "nothing from replication; taking the link for dead");
                        break;
                    }
                    Err(_) => break,
                }
            }
            alive_r.store(false, Ordering::SeqCst);
        })
        .expect("spawn reader");

    let mut wr = stream;
    let alive_w = alive.clone();
    std::thread::Builder::new()
        .name("link-write".into())
        .spawn(move || {
            let mut out = Vec::with_capacity(64 * 1024);
            while let Ok(first) = from_shard.recv() {
                // Replication takes less than this shard produces: end the link (its sectors
                // are re-homed) rather than grow without bound.
                if from_shard.len() > MAX_QUEUED_MESSAGES {
                    error!(
                        queued = from_shard.len(),
                        "replication does not keep up with this shard; taking the link for dead"
                    );
                    break;
                }
                out.clear();
                // Coalesce what else is queued into one write (up to a few MiB), every message
                // in frames within the limit.
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    for part in m.split(options.max_frame_bytes) {
                        out.extend(encode_frame(&part));
                    }
                    if out.len() < COALESCE_BYTES {
                        next = from_shard.try_recv().ok();
                    }
                }
                // A write replication does not take within the timeout fails (the socket's
                // write timeout): the link is dead.
                if let Err(e) = wr.write_all(&out) {
                    error!(error = %e, "cannot write to replication; taking the link for dead");
                    break;
                }
            }
            alive_w.store(false, Ordering::SeqCst);
            let _ = wr.shutdown(std::net::Shutdown::Both);
        })
        .expect("spawn writer");

    Ok(TcpLink {
        link,
        alive,
        incarnation,
    })
}
