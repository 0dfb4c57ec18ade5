//! Limits on logins, as plain data and pure decisions so they are tested without a clock or a
//! socket: a token bucket per client address against floods, and a lock per account against
//! password guessing.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket per key: `rate` attempts a second on average, bursts of up to `burst`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: HashMap<K, (f64, Instant)>,
    /// Past this many keys, full buckets are forgotten (they hold no information).
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate: f64, burst: u32, max_keys: usize) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            max_keys,
        }
    }

    /// Takes one attempt from `key`'s bucket, or says how long until one is available.
    pub fn take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= self.max_keys && !self.buckets.contains_key(key) {
            self.forget_full(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, last) = self.buckets.entry(key.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }

    fn forget_full(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, (tokens, last)| {
            *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
        });
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Failed logins per account. The first `free` failures cost nothing; each further one locks
/// the account for twice as long as the last (1 s, 2 s, 4 s, ...) up to `max_lock`. A correct
/// password clears the record. A locked account is refused before its password is hashed, so
/// guessing costs the server nothing.
#[derive(Debug)]
pub struct FailureLock {
    free: u32,
    max_lock: Duration,
    accounts: HashMap<String, (u32, Instant)>,
}

impl FailureLock {
    pub fn new(free: u32, max_lock: Duration) -> Self {
        Self {
            free,
            max_lock,
            accounts: HashMap::new(),
        }
    }

    /// `Err(wait)` while `name` is locked.
    pub fn check(&self, name: &str, now: Instant) -> Result<(), Duration> {
        match self.accounts.get(name) {
            Some((_, until)) if *until > now => Err(*until - now),
            _ => Ok(()),
        }
    }

    /// Counts a wrong password; returns how long the account is now locked.
    pub fn failed(&mut self, name: &str, now: Instant) -> Duration {
        let (free, max_lock) = (self.free, self.max_lock);
        let (failures, until) = self.accounts.entry(name.to_owned()).or_insert((0, now));
        *failures += 1;
        let lock = match failures.checked_sub(free + 1) {
            None => Duration::ZERO,
            Some(n) => Duration::from_secs(1u64 << n.min(20)).min(max_lock),
        };
        *until = now + lock;
        lock
    }

    pub fn succeeded(&mut self, name: &str) {
        self.accounts.remove(name);
    }

    /// Forgets accounts whose lock ended long ago (`idle` after it), to bound memory.
    pub fn forget_idle(&mut self, now: Instant, idle: Duration) {
        self.accounts
            .retain(|_, (_, until)| now.saturating_duration_since(*until) < idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(2.0, 3, 100);
        let ip = "10.0.0.1";
        for _ in 0..3 {
            assert_eq!(r.take(&ip, t0), Ok(()));
        }
        let wait = r.take(&ip, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client is not affected.
        assert_eq!(r.take(&"10.0.0.2", t0), Ok(()));
        // Half a second later one attempt is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(r.take(&ip, t1), Ok(()));
        assert!(r.take(&ip, t1).is_err());
    }

    #[test]
    fn full_buckets_are_forgotten_when_there_are_too_many_keys() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1.0, 1, 10);
        for i in 0..10 {
            r.take(&i, t0).unwrap();
        }
        assert_eq!(r.len(), 10);
        // Ten seconds on, every bucket is full again: they are dropped to make room.
        r.take(&99, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(r.len(), 1);
        // A busy client's bucket is kept: it still holds its debt.
        let mut r = RateLimiter::new(1.0, 1, 2);
        r.take(&1, t0).unwrap();
        assert!(r.take(&1, t0).is_err());
        r.take(&2, t0).unwrap();
        r.take(&3, t0).unwrap();
        assert!(
            r.take(&1, t0).is_err(),
            "the flooding client is still limited"
        );
    }

    #[test]
    fn repeated_failures_lock_an_account_for_longer_and_longer() {
        let t0 = Instant::now();
        let mut l = FailureLock::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(l.failed("ada", t0), Duration::ZERO);
            assert_eq!(l.check("ada", t0), Ok(()));
        }
        assert_eq!(l.failed("ada", t0), Duration::from_secs(1));
        assert_eq!(l.check("ada", t0), Err(Duration::from_secs(1)));
        assert_eq!(l.check("bob", t0), Ok(()), "other accounts are not locked");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.check("ada", t1), Ok(()));
        assert_eq!(l.failed("ada", t1), Duration::from_secs(2));
        assert_eq!(l.failed("ada", t1), Duration::from_secs(4));
        for _ in 0..10 {
            l.failed("ada", t1);
        }
        assert_eq!(l.check("ada", t1), Err(Duration::from_secs(60)), "capped");
        l.succeeded("ada");
        assert_eq!(l.check("ada", t1), Ok(()));
        assert_eq!(
            l.failed("ada", t1),
            Duration::ZERO,
            "a success clears the count"
        );
    }

    #[test]
    fn idle_records_are_forgotten() {
        let t0 = Instant::now();
        let mut l = FailureLock::new(0, Duration::from_secs(60));
        l.failed("ada", t0);
        l.forget_idle(t0 + Duration::from_secs(3600), Duration::from_secs(600));
        assert_eq!(
            l.failed("ada", t0),
            Duration::from_secs(1),
            "counting starts over"
        );
    }
}
