//! A TCP relay for fault tests: it forwards every connection to a target until told to stall,
//! after which it forwards nothing in either direction yet keeps every connection open, as a
//! network partition does (no FIN, no RST), or a middlebox that silently stops forwarding.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a pump looks at the relay's switches while it has nothing to move.
const PUMP_WAKE: Duration = Duration::from_millis(20);

/// A relay on a loopback port. Dropping it closes every connection.
pub struct TcpRelay {
    addr: SocketAddr,
    stalled: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl TcpRelay {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stalled = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stalled.clone(), stopped.clone());
        std::thread::Builder::new()
            .name("tcp-relay".into())
            .spawn(move || {
                while !sp.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let Ok(server) = TcpStream::connect(target) else {
                                continue;
                            };
                            for (from, to) in [(&client, &server), (&server, &client)] {
                                let (from, to) = (from.try_clone(), to.try_clone());
                                if let (Ok(from), Ok(to)) = (from, to) {
                                    let (st, sp) = (st.clone(), sp.clone());
                                    std::thread::spawn(move || pump(from, to, &st, &sp));
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(PUMP_WAKE)
                        }
                        Err(_) => break,
                    }
                }
            })?;
        Ok(Self {
            addr,
            stalled,
            stopped,
        })
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding in both directions from now on, keeping the connections open.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Forwards again (the partition heals): connections still open carry on.
    pub fn heal(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes or the relay stops; while stalled it reads
/// nothing, so the sender's buffers fill and its writes eventually block.
fn pump(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool, stopped: &AtomicBool) {
    let _ = from.set_read_timeout(Some(PUMP_WAKE));
    let mut buf = vec![0u8; 64 * 1024];
    while !stopped.load(Ordering::SeqCst) {
        if stalled.load(Ordering::SeqCst) {
            std::thread::sleep(PUMP_WAKE);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait_until;

    #[test]
    fn a_stalled_relay_forwards_nothing_and_closes_nothing() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        let relay = TcpRelay::start(target).unwrap();
        let mut c = TcpStream::connect(relay.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        c.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");

        relay.stall();
        // Bytes already in flight may still arrive; after that, nothing does.
        c.write_all(b"lost").unwrap();
        let mut silent_reads = 0;
        wait_until("the relay goes quiet", Duration::from_secs(5), || {
            let mut b = [0u8; 16];
            match c.read(&mut b) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    silent_reads += 1
                }
                Ok(0) => panic!("a stalled relay must not close the connection"),
                Ok(_) => silent_reads = 0,
                Err(e) => panic!("{e}"),
            }
            silent_reads >= 2
        });
    }
}
