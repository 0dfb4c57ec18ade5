//! A UDP relay that counts what passes: a stand-in for a load balancer in front of the game
//! port (clients reach the server at another address), a byte meter for benchmarks, and, with a
//! delay, a long network path.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Counts {
    pub to_server_bytes: AtomicU64,
    pub to_client_bytes: AtomicU64,
    pub to_client_datagrams: AtomicU64,
}

/// Relays datagrams between clients and one server, each client through an upstream socket of
/// its own, so the server tells clients apart as it would behind a NAT.
pub struct UdpProxy {
    /// Where clients send.
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

const POLL: Duration = Duration::from_millis(20);

impl UdpProxy {
    /// Listens on a free loopback port and relays to `server`.
    pub fn start(server: SocketAddr) -> io::Result<Self> {
        Self::with_delay(server, Duration::ZERO)
    }

    /// As [`UdpProxy::start`], holding every datagram for `one_way` in each direction (in
    /// order), as a path with a round trip of twice that would.
    pub fn with_delay(server: SocketAddr, one_way: Duration) -> io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        front.set_read_timeout(Some(POLL))?;
        let proxy = Self {
            addr: front.local_addr()?,
            counts: Arc::default(),
            stop: Arc::default(),
            threads: Arc::default(),
        };
        let (counts, stop, threads) = (
            proxy.counts.clone(),
            proxy.stop.clone(),
            proxy.threads.clone(),
        );
        let relay = std::thread::spawn(move || {
            let mut upstreams: HashMap<SocketAddr, Delayed> = HashMap::new();
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, client)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let upstream = match upstreams.get(&client) {
                    Some(u) => u.clone(),
                    None => match Self::upstream(server, client, &front, &counts, &stop, one_way) {
                        Ok((u, thread)) => {
                            let to_server = counts.clone();
                            let (u, delayer) =
                                Delayed::new(one_way, stop.clone(), move |data: &[u8]| {
                                    if u.send(data).is_ok() {
                                        to_server
                                            .to_server_bytes
                                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                                    }
                                });
                            let mut t = threads.lock().expect("threads");
                            t.push(thread);
                            t.extend(delayer);
                            upstreams.insert(client, u.clone());
                            u
                        }
                        Err(_) => continue,
                    },
                };
                upstream.send(&buf[..n]);
            }
        });
        proxy.threads.lock().expect("threads").push(relay);
        Ok(proxy)
    }

    /// A socket towards the server for `client`, and the thread relaying the server's replies.
    fn upstream(
        server: SocketAddr,
        client: SocketAddr,
        front: &Arc<UdpSocket>,
        counts: &Arc<Counts>,
        stop: &Arc<AtomicBool>,
        one_way: Duration,
    ) -> io::Result<(Arc<UdpSocket>, JoinHandle<()>)> {
        let up = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        up.connect(server)?;
        up.set_read_timeout(Some(POLL))?;
        let (reader, front, counts, stop) =
            (up.clone(), front.clone(), counts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (to_client, delayer) = Delayed::new(one_way, stop.clone(), move |data: &[u8]| {
                if front.send_to(data, client).is_ok() {
                    counts
                        .to_client_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    counts.to_client_datagrams.fetch_add(1, Ordering::Relaxed);
                }
            });
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = reader.recv(&mut buf) {
                    to_client.send(&buf[..n]);
                }
            }
            drop(to_client);
            if let Some(d) = delayer {
                let _ = d.join();
            }
        });
        Ok((up, thread))
    }

    /// Bytes relayed from the server to clients so far.
    pub fn to_client_bytes(&self) -> u64 {
        self.counts.to_client_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Taken out first: the relay may still want the lock to add a thread.
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads"));
        for t in threads {
            let _ = t.join();
        }
    }
}

type SendFn = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Sends at once, or after a fixed delay through a thread of its own (order kept).
#[derive(Clone)]
enum Delayed {
    Now(Arc<SendFn>),
    Later(Duration, mpsc::Sender<(Instant, Vec<u8>)>),
}

impl Delayed {
    fn new(
        delay: Duration,
        stop: Arc<AtomicBool>,
        send: impl Fn(&[u8]) + Send + Sync + 'static,
    ) -> (Self, Option<JoinHandle<()>>) {
        if delay.is_zero() {
            return (Self::Now(Arc::new(Box::new(send))), None);
        }
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match rx.recv_timeout(POLL) {
                    Ok((due, data)) => {
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        send(&data);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        (Self::Later(delay, tx), Some(thread))
    }

    fn send(&self, data: &[u8]) {
        match self {
            Self::Now(send) => send(data),
            Self::Later(delay, tx) => {
                let _ = tx.send((Instant::now() + *delay, data.to_vec()));
            }
        }
    }
}
