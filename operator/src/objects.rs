//! Reading the operator's objects so that one malformed object cannot stall a world. The CRDs
//! keep ShardPool's pod template opaque, so the API server accepts a template the operator
//! cannot read (`containers: "x"`); every list and watch goes through [`DeserializeGuard`],
//! valid objects carry on, and each invalid one is reported once per version: a warning log, a
//! Warning Event on it, and `sidereal_operator_invalid_objects_total`.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::core::{DeserializeGuard, NamespaceResourceScope};
use kube::runtime::events::EventType;
use tracing::warn;

use crate::Result;
use crate::context::Context;
use crate::report::publish;

/// The objects of kind `K` in `ns` that deserialize; the others are reported and skipped.
pub async fn list_valid<K>(ctx: &Context, ns: &str) -> Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<DeserializeGuard<K>> = Api::namespaced(ctx.client.clone(), ns);
    let mut valid = Vec::new();
    for item in api.list(&ListParams::default()).await?.items {
        match item.0 {
            Ok(obj) => valid.push(obj),
            Err(invalid) => report_invalid::<K>(ctx, &invalid).await,
        }
    }
    Ok(valid)
}

/// Reports an object that does not deserialize, once per resourceVersion.
pub async fn report_invalid<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    invalid: &kube::core::error_boundary::InvalidObject,
) {
    let meta = &invalid.metadata;
    let key = format!(
        "{}/{}/{}",
        meta.uid.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.resource_version.as_deref().unwrap_or_default()
    );
    if !ctx.invalid_seen.lock().expect("invalid lock").insert(key) {
        return;
    }
    let kind = K::kind(&());
    warn!(kind = %kind, name = ?meta.name, namespace = ?meta.namespace, error = %invalid.error, "skipping an object the operator cannot read");
    ctx.metrics
        .invalid_objects
        .with_label_values(&[kind.as_ref()])
        .inc();
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(kind.into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    };
    let note = format!(
        "the operator cannot read this object and skips it: {}",
        invalid.error
    );
    publish(ctx, &reference, EventType::Warning, "InvalidObject", note).await;
}
