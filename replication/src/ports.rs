//! Ports chosen before the sockets that use them are bound.

use std::net::SocketAddr;

/// `addr` with a free port chosen when its port is 0. The socket is released for the game
/// port to bind; nothing else binds UDP ports in between in practice.
pub(crate) fn resolve_udp(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    std::net::UdpSocket::bind(addr)?.local_addr()
}

/// A port of 0 becomes a free port now: tokens must name the real address before the
/// WebSocket server (which binds later, on the gateway thread) is up.
pub(crate) fn resolve_tcp(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    std::net::TcpListener::bind(addr)?.local_addr()
}
