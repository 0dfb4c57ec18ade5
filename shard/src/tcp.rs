//! The shard link over TCP: handshake, then one reader and one writer thread bridging the
//! socket to the app's channels.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sidereal_core::ShardId;
use sidereal_core::protocol::{
    FrameReader, PROTOCOL_VERSION, ReplicationMessage, ShardMessage, encode_frame,
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
    #[error("bad handshake reply: {0}")]
    Protocol(String),
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

/// Connects, authenticates with `secret`, and starts the bridge threads.
pub fn connect(addr: &str, shard: &ShardId, secret: &str) -> Result<TcpLink, ConnectError> {
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
    stream.set_nodelay(true).map_err(io)?;
    let hello = ShardMessage::Hello {
        protocol: PROTOCOL_VERSION,
        shard: shard.clone(),
        secret: secret.to_owned(),
    };
    stream.write_all(&encode_frame(&hello)).map_err(io)?;
    let mut reader = FrameReader::default();
    let incarnation = match read_one(&mut stream, &mut reader)? {
        ReplicationMessage::Welcome { incarnation, .. } => incarnation,
        ReplicationMessage::Rejected { reason } => return Err(ConnectError::Rejected(reason)),
        other => {
            return Err(ConnectError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
    };
    info!(%shard, incarnation, addr, "shard link up");
    let (link, to_shard, from_shard) = ShardLink::pair();
    to_shard
        .send(ReplicationMessage::Welcome {
            incarnation,
            tick_hz: 0,
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
                    Ok(0) | Err(_) => break,
                    Ok(n) => reader.push(&buf[..n]),
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
                out.clear();
                out.extend(encode_frame(&first));
                // Coalesce whatever else is queued into one write.
                while let Ok(m) = from_shard.try_recv() {
                    out.extend(encode_frame(&m));
                }
                if wr.write_all(&out).is_err() {
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
