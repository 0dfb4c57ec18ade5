//! Leader election on a `coordination.k8s.io/v1` Lease, so two or more operator replicas can
//! run and only one reconciles. The holder renews the Lease every third of its duration; the
//! others watch it and take over once it has not changed for a whole duration (time measured on
//! their own clock, as client-go does, so clock skew between nodes does not matter). Writes go
//! through `replace` with the read `resourceVersion`, so of two candidates only one wins.
//!
//! Leadership ends when a renewal cannot be written before the lease would expire: the work is
//! dropped at once (every reconcile step is idempotent, so a successor simply carries on).

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, PostParams};
use prometheus::IntGauge;
use tracing::{info, warn};

use crate::Result;

/// Where the lease is and who we are.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name under Kubernetes).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease.
    pub duration: Duration,
}

impl Election {
    fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// What a candidate remembers of the lease between looks: when its content last changed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<Instant>,
}

impl Observed {
    /// Notes the lease as read at `now`.
    pub fn see(&mut self, spec: &LeaseSpec, now: Instant) {
        let record = Some((spec.holder_identity.clone(), spec.renew_time.clone()));
        if record != self.record {
            self.record = record;
            self.since = Some(now);
        }
    }
}

/// Whether `me` may write itself into a lease whose spec is `spec`: it holds it already, nobody
/// does, or the holder has not renewed it for a whole duration of our own observation.
pub fn may_take(spec: &LeaseSpec, me: &str, observed: &Observed, now: Instant) -> bool {
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == me => true,
        Some(_) => {
            let duration = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
            );
            observed
                .since
                .is_some_and(|since| now.saturating_duration_since(since) >= duration)
        }
    }
}

/// Runs `work` whenever this replica leads, until `shutdown`; `leader` is 1 while it does. On
/// shutdown a holder gives the lease up so a successor need not wait for it to expire.
pub async fn run<F, Fut>(
    client: Client,
    election: Election,
    leader: IntGauge,
    mut work: F,
    shutdown: impl Future<Output = ()>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut observed = Observed::default();
    tokio::pin!(shutdown);
    loop {
        // Follow until we hold the lease.
        loop {
            match try_take(&api, &election, &mut observed).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "reading or writing the leader lease"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(election.renew_every()) => {}
            }
        }
        info!(identity = %election.identity, lease = %election.name, "leading");
        leader.set(1);
        let lost = renew_until_lost(&api, &election, &mut observed);
        let stop = tokio::select! {
            _ = work() => false,
            _ = lost => false,
            _ = &mut shutdown => true,
        };
        leader.set(0);
        if stop {
            release(&api, &election).await;
            return;
        }
        warn!(identity = %election.identity, "lost the leader lease; following again");
    }
}

/// One attempt to hold (or keep) the lease: true if we hold it now.
async fn try_take(api: &Api<Lease>, election: &Election, observed: &mut Observed) -> Result<bool> {
    let now = Instant::now();
    let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let seconds = i32::try_from(election.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&election.name).await? else {
        let mut lease = Lease::default();
        lease.metadata.name = Some(election.name.clone());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(election.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(stamp.clone()),
            renew_time: Some(stamp),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        });
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        };
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    observed.see(&spec, now);
    if !may_take(&spec, &election.identity, observed, now) {
        return Ok(false);
    }
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        spec.holder_identity = Some(election.identity.clone());
        spec.acquire_time = Some(stamp.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(stamp);
    lease.spec = Some(spec.clone());
    // The resourceVersion read above makes this a compare-and-swap.
    match api
        .replace(&election.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => {
            observed.see(&spec, now);
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Renews every third of the duration; returns once a renewal has failed for so long that the
/// lease may have expired (someone else may lead now).
async fn renew_until_lost(api: &Api<Lease>, election: &Election, observed: &mut Observed) {
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(election.renew_every()).await;
        match try_take(api, election, observed).await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => return,
            Err(e) => warn!(error = %e, "renewing the leader lease"),
        }
        // Stop before a follower could take over, not after.
        if last_renewed.elapsed() + election.renew_every() >= election.duration {
            return;
        }
    }
}

/// Gives the lease up (empty holder) if we still hold it.
async fn release(api: &Api<Lease>, election: &Election) {
    let Ok(Some(mut lease)) = api.get_opt(&election.name).await else {
        return;
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    lease.spec = Some(spec);
    match api
        .replace(&election.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => info!(identity = %election.identity, "leader lease released"),
        Err(e) => warn!(error = %e, "releasing the leader lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            lease_duration_seconds: Some(10),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(renewed).unwrap(),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_lease_or_our_own_may_be_taken_at_once() {
        let now = Instant::now();
        let seen = Observed::default();
        assert!(may_take(&spec(None, 0), "a", &seen, now));
        assert!(may_take(&spec(Some(""), 0), "a", &seen, now));
        assert!(may_take(&spec(Some("a"), 0), "a", &seen, now));
        assert!(
            !may_take(&spec(Some("b"), 0), "a", &seen, now),
            "never seen: wait"
        );
    }

    #[test]
    fn another_holder_is_overtaken_only_after_a_whole_duration_without_renewal() {
        let t0 = Instant::now();
        let mut seen = Observed::default();
        seen.see(&spec(Some("b"), 100), t0);
        assert!(!may_take(
            &spec(Some("b"), 100),
            "a",
            &seen,
            t0 + Duration::from_secs(9)
        ));
        // b renews at 9 s: the clock starts again from our observation.
        seen.see(&spec(Some("b"), 109), t0 + Duration::from_secs(9));
        assert!(!may_take(
            &spec(Some("b"), 109),
            "a",
            &seen,
            t0 + Duration::from_secs(15)
        ));
        assert!(may_take(
            &spec(Some("b"), 109),
            "a",
            &seen,
            t0 + Duration::from_secs(19)
        ));
        // Seeing the same record again does not reset the clock.
        seen.see(&spec(Some("b"), 109), t0 + Duration::from_secs(18));
        assert!(may_take(
            &spec(Some("b"), 109),
            "a",
            &seen,
            t0 + Duration::from_secs(19)
        ));
    }
}
