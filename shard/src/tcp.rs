//! The shard link over TCP: handshake, then a reader thread and a writer bridging the socket to
//! the app's channels. Silence from replication for the link timeout, or a write it does not
//! take within it, ends the link. The shard then simulates on and dials again (a standby that
//! took over binds the same address); the new link resumes: the app's first message on it
//! tells replication everything the shard holds. Only when replication stays unreachable for
//! the relink timeout does the shard stop, for its supervisor to start a fresh one.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use sidereal_core::ShardId;
use sidereal_core::handshake::{SHARD_LINK, fresh_nonce};
use sidereal_core::link_socket::{self, DEFAULT_LINK_TIMEOUT};
use sidereal_core::protocol::{
    FrameReader, MAX_FRAME_BYTES, PROTOCOL_VERSION, ReplicationMessage, ShardMessage, encode_frame,
};
use tracing::{error, info, warn};

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

/// Where the link stands, shared with the process's `/healthz` and the app's status plugin.
#[derive(Debug, Default)]
pub struct LinkHealth {
    /// A link to replication is up now.
    pub linked: AtomicBool,
    /// Replication could not be reached again within the relink timeout: the shard stops.
    pub given_up: AtomicBool,
    /// Links made after the first (each one resumed).
    pub relinks: AtomicU64,
}

/// A connected link, kept up by a thread that dials again when it dies.
pub struct TcpLink {
    pub link: ShardLink,
    pub health: Arc<LinkHealth>,
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
    resuming: bool,
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
    let hello = ShardMessage::hello(secret, &challenge, shard.clone(), nonce)
        .publishing(publishing)
        .resuming(resuming);
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

/// Who this shard is and where replication is: what every dial needs.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub addr: String,
    pub shard: ShardId,
    pub secret: String,
    pub options: LinkOptions,
    /// Where this shard serves its sector streams, told to replication in the `Hello`.
    pub publishing: Option<String>,
    /// How long to keep dialling after a link died before giving up (the shard then stops and
    /// its supervisor starts a fresh one).
    pub relink_timeout: Duration,
}

/// A socket that completed the handshake, and what came with it.
struct Dialled {
    stream: TcpStream,
    reader: FrameReader,
    incarnation: u32,
}

impl Dialer {
    fn dial(&self, resuming: bool) -> Result<Dialled, ConnectError> {
        let addr = &self.addr;
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
        let timeout = self.options.timeout;
        link_socket::harden(&stream, timeout).map_err(io)?;
        // Replication sends shadows every tick: a read that waits this long means it is gone.
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut reader = FrameReader::with_limit(self.options.max_frame_bytes);
        let incarnation = handshake(
            &mut stream,
            &mut reader,
            &self.shard,
            &self.secret,
            self.publishing.clone(),
            resuming,
        )?;
        info!(shard = %self.shard, incarnation, addr, resuming, "shard link up");
        Ok(Dialled {
            stream,
            reader,
            incarnation,
        })
    }
}

/// Connects, authenticates, and starts the thread that bridges the socket to the app's
/// channels and, when the link dies, dials again with back-off: the shard keeps simulating
/// meanwhile, and each new link resumes (the app sends its entities in `Resume` first).
pub fn connect(dialer: Dialer) -> Result<TcpLink, ConnectError> {
    let first = dialer.dial(false)?;
    let (mut link, to_app, from_app) = ShardLink::pair();
    link.max_frame_bytes = dialer.options.max_frame_bytes;
    let health = Arc::new(LinkHealth::default());
    let incarnation = first.incarnation;
    let h = health.clone();
    std::thread::Builder::new()
        .name("link".into())
        .spawn(move || keep_linked(dialer, first, to_app, from_app, &h))
        .expect("spawn the link thread");
    Ok(TcpLink {
        link,
        health,
        incarnation,
    })
}

/// Bridges one link after another until replication cannot be reached for the relink timeout.
fn keep_linked(
    dialer: Dialer,
    first: Dialled,
    to_app: Sender<ReplicationMessage>,
    from_app: Receiver<ShardMessage>,
    health: &LinkHealth,
) {
    let mut next = Some((first, false));
    while let Some((dialled, resuming)) = next.take() {
        // The app learns its (new) incarnation; on a new link it answers with `Resume`.
        let welcome = ReplicationMessage::Welcome {
            incarnation: dialled.incarnation,
            tick_hz: 0,
            proof: [0; 32],
        };
        if to_app.send(welcome).is_err() {
            return;
        }
        health.linked.store(true, Ordering::SeqCst);
        let gate = resuming.then_some(ResumeGate::new(dialled.incarnation));
        bridge(dialled, &to_app, &from_app, gate, dialer.options);
        health.linked.store(false, Ordering::SeqCst);
        warn!(addr = %dialer.addr, "link to replication lost; simulating on and dialling again");
        next = redial(&dialer).map(|d| (d, true));
        if next.is_some() {
            health.relinks.fetch_add(1, Ordering::SeqCst);
        }
    }
    error!(timeout = ?dialer.relink_timeout, "replication unreachable; giving up");
    health.given_up.store(true, Ordering::SeqCst);
}

/// Dials again with back-off (50 ms, doubling to 250 ms: a refused connection costs nothing,
/// and a standby that takes over is found within a quarter second) until it works or the
/// relink timeout passes. A refusal is retried too: the old link may not be closed on
/// replication's side yet.
fn redial(dialer: &Dialer) -> Option<Dialled> {
    let deadline = Instant::now() + dialer.relink_timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        match dialer.dial(true) {
            Ok(d) => return Some(d),
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, retry_in = ?backoff, "replication not reachable again yet");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(250));
            }
            Err(e) => {
                error!(error = %e, "replication not reachable again");
                return None;
            }
        }
    }
}

/// What a resumed link lets through: nothing the app sent before its `Resume` for this link
/// (deltas against a baseline replication no longer has, acknowledgements of a past link), and
/// everything from that `Resume` on. The `Resume` carries all the dropped messages said.
#[derive(Debug, Clone, Copy)]
pub struct ResumeGate {
    incarnation: u32,
    open: bool,
}

impl ResumeGate {
    pub fn new(incarnation: u32) -> Self {
        Self {
            incarnation,
            open: false,
        }
    }

    /// Whether `msg` goes out on the link.
    pub fn admit(&mut self, msg: &ShardMessage) -> bool {
        if let ShardMessage::Resume { incarnation, .. } = msg
            && *incarnation == self.incarnation
        {
            self.open = true;
        }
        self.open
    }
}

/// Runs one link until it dies: a reader thread into the app's channel, and the writer here.
fn bridge(
    dialled: Dialled,
    to_app: &Sender<ReplicationMessage>,
    from_app: &Receiver<ShardMessage>,
    mut gate: Option<ResumeGate>,
    options: LinkOptions,
) {
    let Dialled {
        stream, mut reader, ..
    } = dialled;
    let alive = Arc::new(AtomicBool::new(true));
    let Ok(mut rd) = stream.try_clone() else {
        return;
    };
    let (alive_r, to_app) = (alive.clone(), to_app.clone());
    let reader_thread = std::thread::Builder::new()
        .name("link-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            'outer: loop {
                loop {
                    match reader.next_frame::<ReplicationMessage>() {
                        Ok(Some(m)) => {
                            if to_app.send(m).is_err() {
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
    let mut out = Vec::with_capacity(64 * 1024);
    while alive.load(Ordering::SeqCst) {
        // Woken now and then to notice a link the reader found dead.
        let first = match from_app.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        // Replication takes less than this shard produces: end the link (its sectors are
        // re-homed) rather than grow without bound.
        // (What queued while unlinked is dropped by the gate, not counted.)
        if gate.is_none_or(|g| g.open) && from_app.len() > MAX_QUEUED_MESSAGES {
            error!(
                queued = from_app.len(),
                "replication does not keep up with this shard; taking the link for dead"
            );
            break;
        }
        out.clear();
        // Coalesce what else is queued into one write (up to a few MiB), every message in
        // frames within the limit.
        let mut next = Some(first);
        while let Some(m) = next.take() {
            if gate.as_mut().is_none_or(|g| g.admit(&m)) {
                for part in m.split(options.max_frame_bytes) {
                    out.extend(encode_frame(&part));
                }
            }
            if out.len() < COALESCE_BYTES {
                next = from_app.try_recv().ok();
            }
        }
        if out.is_empty() {
            continue;
        }
        // A write replication does not take within the timeout fails (the socket's write
        // timeout): the link is dead.
        if let Err(e) = wr.write_all(&out) {
            error!(error = %e, "cannot write to replication; taking the link for dead");
            break;
        }
    }
    alive.store(false, Ordering::SeqCst);
    let _ = wr.shutdown(std::net::Shutdown::Both);
    let _ = reader_thread.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_link_sends_nothing_before_its_own_resume() {
        let resume = |incarnation| ShardMessage::Resume {
            incarnation,
            owned: Vec::new(),
            handed_over: Vec::new(),
            last: true,
        };
        let load = ShardMessage::Reported { round: 1 };
        let mut gate = ResumeGate::new(7);
        assert!(!gate.admit(&load), "queued while unlinked: dropped");
        assert!(
            !gate.admit(&resume(6)),
            "a resume meant for an earlier link: dropped"
        );
        assert!(gate.admit(&resume(7)));
        assert!(gate.admit(&load), "everything after it goes out");
    }
}
