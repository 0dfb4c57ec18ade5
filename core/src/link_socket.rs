//! Liveness settings both ends of the shard link share. Each end treats silence as death:
//! replication sends every live shard its shadows each tick and a shard reports its load every
//! second, so a link that carries nothing for [`DEFAULT_LINK_TIMEOUT`] belongs to a peer that is
//! stopped, deadlocked or cut off. The kernel is told the same through TCP keepalive and
//! `TCP_USER_TIMEOUT`, so a node that drops off the network (no FIN, no RST) also ends the
//! connection instead of leaving it open for the kernel's default of about 15 minutes.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// Silence after which either end closes the link (`--link-timeout`).
pub const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_secs(3);
/// The shortest link timeout allowed: a shard reports load once a second, so anything near
/// that would close healthy links.
pub const MIN_LINK_TIMEOUT: Duration = Duration::from_millis(1500);

/// Sets no-delay, keepalive probes and the user timeout on a shard-link socket.
pub fn harden<S: AsFd>(socket: &S, timeout: Duration) -> io::Result<()> {
    let s = SockRef::from(socket);
    s.set_tcp_nodelay(true)?;
    // Probes start after a third of the timeout without traffic; three unanswered ones end it.
    let probe = (timeout / 3).max(Duration::from_secs(1));
    s.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(probe)
            .with_interval(probe)
            .with_retries(3),
    )?;
    #[cfg(target_os = "linux")]
    s.set_tcp_user_timeout(Some(timeout))?;
    Ok(())
}

/// Parses a number of seconds at least [`MIN_LINK_TIMEOUT`] (for command-line flags).
pub fn parse_link_timeout(s: &str) -> Result<Duration, String> {
    let d = s
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))?;
    if d < MIN_LINK_TIMEOUT {
        return Err(format!(
            "{s} s is shorter than {MIN_LINK_TIMEOUT:?}: shards report load every second"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hardened_socket_has_keepalive_and_the_user_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        harden(&s, Duration::from_secs(3)).unwrap();
        let r = SockRef::from(&s);
        assert!(r.keepalive().unwrap());
        assert!(r.tcp_nodelay().unwrap());
        assert_eq!(r.tcp_keepalive_time().unwrap(), Duration::from_secs(1));
        #[cfg(target_os = "linux")]
        assert_eq!(r.tcp_user_timeout().unwrap(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn link_timeouts_below_the_load_interval_or_not_numbers_are_refused() {
        assert_eq!(parse_link_timeout("3"), Ok(Duration::from_secs(3)));
        assert!(parse_link_timeout("0.5").unwrap_err().contains("shorter"));
        assert!(parse_link_timeout("NaN").is_err());
        assert!(parse_link_timeout("-1").is_err());
    }
}
