//! Under Kubernetes, each replication pod labels itself with its role, `sidereal.dev/role`:
//! `standby` while it waits, `leader` once it leads the store. The chart's Services select
//! `sidereal.dev/role=leader`, so shards, gateways and players reach the leader alone, while
//! every pod stays Ready (a Deployment can roll them one by one). A merge patch of the pod's own
//! labels with its service account (the chart's Role allows `patch` on pods).

use std::path::PathBuf;

use tracing::{info, warn};

/// The label the chart's Services select the leader by.
pub const ROLE_LABEL: &str = "sidereal.dev/role";

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum PodRoleError {
    #[error(
        "{0} is not set: a pod labelling itself needs its name and namespace (--pod-name, --pod-namespace: the downward API's metadata.name and metadata.namespace) and the API server's address"
    )]
    MissingEnv(&'static str),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the API server's CA certificate or the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("cannot reach the API server to label pod {pod}: {why}")]
    Request { pod: String, why: String },
    #[error("the API server refused to label pod {pod} ({status}): {body}")]
    Refused {
        pod: String,
        status: u16,
        body: String,
    },
}

/// Which pod this process runs in (the downward API's metadata.name and metadata.namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
}

/// An error with every cause under it (reqwest's own message hides the TLS or socket error).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Labels this process's own pod.
pub struct PodRole {
    client: reqwest::Client,
    url: String,
    token_file: PathBuf,
    pod: String,
}

fn env(name: &'static str) -> Result<String, PodRoleError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(PodRoleError::MissingEnv(name))
}

impl PodRole {
    /// For `pod`, with the API server at `KUBERNETES_SERVICE_HOST`:`KUBERNETES_SERVICE_PORT`
    /// (or `SIDEREAL_KUBE_API`, a URL) and the pod's service account token and CA (or
    /// `SIDEREAL_KUBE_TOKEN_FILE`, `SIDEREAL_KUBE_CA_FILE`).
    pub fn new(pod: &PodRef) -> Result<Self, PodRoleError> {
        let (pod, namespace) = (pod.name.clone(), pod.namespace.clone());
        if pod.is_empty() {
            return Err(PodRoleError::MissingEnv("the pod's name"));
        }
        if namespace.is_empty() {
            return Err(PodRoleError::MissingEnv("the pod's namespace"));
        }
        let api = match env("SIDEREAL_KUBE_API") {
            Ok(url) => url.trim_end_matches('/').to_owned(),
            Err(_) => {
                let host = env("KUBERNETES_SERVICE_HOST")?;
                let port = env("KUBERNETES_SERVICE_PORT")?;
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("https://{host}:{port}")
            }
        };
        let file = |var: &'static str, name: &str| {
            std::env::var(var)
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(SERVICE_ACCOUNT).join(name))
        };
        let ca_file = file("SIDEREAL_KUBE_CA_FILE", "ca.crt");
        let ca = std::fs::read(&ca_file).map_err(|source| PodRoleError::Read {
            path: ca_file.display().to_string(),
            source,
        })?;
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&ca).map_err(PodRoleError::Client)?,
            )
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(PodRoleError::Client)?;
        Ok(Self {
            client,
            url: format!("{api}/api/v1/namespaces/{namespace}/pods/{pod}"),
            token_file: file("SIDEREAL_KUBE_TOKEN_FILE", "token"),
            pod,
        })
    }

    /// Sets this pod's role label. The token is read each time: the kubelet rotates it.
    pub async fn set(&self, role: &str) -> Result<(), PodRoleError> {
        let token =
            std::fs::read_to_string(&self.token_file).map_err(|source| PodRoleError::Read {
                path: self.token_file.display().to_string(),
                source,
            })?;
        let patch = serde_json::json!({"metadata": {"labels": {ROLE_LABEL: role}}});
        let reply = self
            .client
            .patch(&self.url)
            .bearer_auth(token.trim())
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await
            .map_err(|e| PodRoleError::Request {
                pod: self.pod.clone(),
                why: chain(&e),
            })?;
        let status = reply.status();
        if !status.is_success() {
            let body = reply.text().await.unwrap_or_default();
            return Err(PodRoleError::Refused {
                pod: self.pod.clone(),
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        info!(pod = %self.pod, role, "labelled this pod {ROLE_LABEL}={role}");
        Ok(())
    }

    /// Sets the role, trying again every second until it works (the API server may be away
    /// for a moment; meanwhile the Services do not route to this pod as that role).
    pub async fn set_until_done(&self, role: &str) {
        let mut logged = false;
        while let Err(e) = self.set(role).await {
            if !logged {
                warn!(error = %e, role, "cannot label this pod yet; retrying every second");
                logged = true;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}
