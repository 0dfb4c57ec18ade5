//! A UDP relay that counts what passes: a stand-in for a load balancer in front of the game
//! port (clients reach the server at another address), and a byte meter for benchmarks.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, client)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let upstream = match upstreams.get(&client) {
                    Some(u) => u.clone(),
                    None => match Self::upstream(server, client, &front, &counts, &stop) {
                        Ok((u, thread)) => {
                            threads.lock().expect("threads").push(thread);
                            upstreams.insert(client, u.clone());
                            u
                        }
                        Err(_) => continue,
                    },
                };
                if upstream.send(&buf[..n]).is_ok() {
                    counts
                        .to_server_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
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
    ) -> io::Result<(Arc<UdpSocket>, JoinHandle<()>)> {
        let up = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        up.connect(server)?;
        up.set_read_timeout(Some(POLL))?;
        let (reader, front, counts, stop) =
            (up.clone(), front.clone(), counts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = reader.recv(&mut buf)
                    && front.send_to(&buf[..n], client).is_ok()
                {
                    counts
                        .to_client_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                    counts.to_client_datagrams.fetch_add(1, Ordering::Relaxed);
                }
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
