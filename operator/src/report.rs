//! How the operator tells users what it did: Kubernetes Events and the `Ready` condition, the
//! same way for Sectors, ShardPools and objects it cannot read.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::serde;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

use crate::context::Context;

/// Publishes an Event on `object` (its reason is also its action). A failure is logged, never
/// fatal: the state change it reports has already happened.
pub async fn publish(
    ctx: &Context,
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, object).await {
        warn!(error = %e, "publishing an event");
    }
}

/// Server-side applies `status` to the status subresource of `name` (a `kind` of
/// sidereal.dev/v1alpha1) with the operator's field manager. False when the object is gone
/// (deleted since it was listed: a merge, a user): there is nothing to report on.
pub async fn apply_status<K>(
    api: &kube::Api<K>,
    kind: &str,
    name: &str,
    status: &impl serde::Serialize,
) -> crate::Result<bool>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": "sidereal.dev/v1alpha1",
        "kind": kind,
        "status": status,
    });
    let params = kube::api::PatchParams::apply(crate::context::FIELD_MANAGER).force();
    match api
        .patch_status(name, &params, &kube::api::Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The `Ready` condition saying `ready`/`reason`/`message`, keeping the transition time of
/// the previous one (among `old`) when its status did not flip.
pub fn ready_condition(
    old: &[Condition],
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let previous = old.iter().find(|c| c.type_ == "Ready");
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: match previous {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(k8s_openapi::jiff::Timestamp::now()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let mut first = ready_condition(&[], false, "NoShards", "none".into(), Some(1));
        first.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let still = ready_condition(
            std::slice::from_ref(&first),
            false,
            "NotPlaced",
            "x".into(),
            Some(2),
        );
        assert_eq!(still.last_transition_time, first.last_transition_time);
        assert_eq!(
            (still.reason.as_str(), still.observed_generation),
            ("NotPlaced", Some(2))
        );
        let flipped = ready_condition(&[still], true, "Simulated", "ok".into(), Some(2));
        assert_eq!(flipped.status, "True");
        assert_ne!(flipped.last_transition_time, first.last_transition_time);
    }
}
