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
    /// Past this many keys, full buckets are forgotten (they hold no information), and if that
    /// is not enough, any one key: the table never grows past it.
    max_keys: usize,
    /// The next time a full table may be swept for full buckets (a sweep scans every key, so
    /// at most once a second, however fast new sources come).
    next_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate: f64, burst: u32, max_keys: usize) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            max_keys: max_keys.max(1),
            next_sweep: None,
        }
    }

    /// Takes one attempt from `key`'s bucket, or says how long until one is available.
    pub fn take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= self.max_keys && !self.buckets.contains_key(key) {
            if self.next_sweep.is_none_or(|t| now >= t) {
                self.forget_full(now);
                self.next_sweep = Some(now + Duration::from_secs(1));
            }
            if self.buckets.len() >= self.max_keys {
                // Still full (sources rotating faster than buckets refill): evict any one. All
                // its owner gains is a fresh bucket, as a new address would have.
                let evict = self.buckets.keys().next().cloned();
                if let Some(k) = evict {
                    self.buckets.remove(&k);
                }
            }
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
        // A busy client's bucket is kept while full ones can go: it still holds its debt.
        let mut r = RateLimiter::new(1.0, 1, 3);
        r.take(&2, t0).unwrap();
        let later = t0 + Duration::from_secs(10);
        r.take(&1, later).unwrap();
        assert!(r.take(&1, later).is_err());
        r.take(&3, later).unwrap();
        r.take(&4, later).unwrap();
        assert!(r.len() <= 3);
        assert!(
            r.take(&1, later).is_err(),
            "the flooding client is still limited"
        );
    }

    #[test]
    fn a_hundred_thousand_rotating_sources_never_grow_the_table_past_its_cap() {
        let mut l = RateLimiter::new(1.0, 1, 1000);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            // Every source spends its burst: no bucket is full, so sweeping frees nothing.
            let _ = l.take(&i, t0 + Duration::from_micros(u64::from(i)));
            assert!(l.len() <= 1000);
        }
        // A returning source still gets its own limit.
        assert!(l.take(&7_000_000, t0 + Duration::from_secs(2)).is_ok());
        assert!(l.take(&7_000_000, t0 + Duration::from_secs(2)).is_err());
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
