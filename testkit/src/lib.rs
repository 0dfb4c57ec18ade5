//! What Sidereal's tests and benchmarks share: waiting on a condition with a deadline (never a
//! bare sleep), a counting UDP relay, a TCP relay that can stall, and, with the `fleet` feature, an in-process fleet stepped
//! one tick at a time.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

#[cfg(feature = "fleet")]
pub mod fleet;
#[cfg(feature = "fleet")]
pub mod streams;
pub mod tcp_proxy;
pub mod udp_proxy;

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it holds; panics naming `what` when `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A condition that did not hold in time, with the last error the check returned.
#[derive(Debug)]
pub struct TimedOut {
    pub what: String,
    pub after: Duration,
    pub last_error: Option<String>,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.after, self.what
        )?;
        match &self.last_error {
            Some(e) => write!(f, " (last error: {e})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for TimedOut {}

/// Polls an async `check` until it returns `Ok(true)`. Errors are remembered (the service may
/// not be up yet) and reported if the deadline passes.
pub async fn wait_until_async<F, Fut, E>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<(), TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, E>>,
    E: Debug,
{
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(format!("{e:?}")),
        }
        if start.elapsed() > timeout {
            return Err(TimedOut {
                what: what.to_owned(),
                after: timeout,
                last_error,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_becomes_true_ends_the_wait() {
        let mut n = 0;
        wait_until("three polls", Duration::from_secs(5), || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
    }

    #[test]
    #[should_panic(expected = "timed out after 200ms waiting for never")]
    fn a_condition_that_never_holds_fails_naming_it() {
        wait_until("never", Duration::from_millis(200), || false);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_async_wait_reports_the_last_error() {
        let e = wait_until_async("a port", Duration::from_millis(300), || async {
            Err::<bool, _>("connection refused")
        })
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "timed out after 300ms waiting for a port (last error: \"connection refused\")"
        );
    }
}
