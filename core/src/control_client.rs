//! `ControlClient`: the one client of replication's control API, used by `sidereal up`, the
//! operator and the tests. Placement writes are optimistic: [`ControlClient::update_placement`]
//! re-reads, recomputes and retries when another writer got there first.

use std::time::Duration;

use reqwest::StatusCode;

use crate::control::{
    BEARER, EntitiesView, ErrorView, LoadView, PutPlacementReply, ShardsView, StatusView,
};
use crate::load::Placement;

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("replication at {base} is unreachable: {source}")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the control token was missing or wrong (401): {0}")]
    Unauthorized(String),
    /// Another writer applied a newer or different placement first (409): re-read and retry.
    #[error("placement conflict (409): {0}")]
    Conflict(String),
    /// The placement does not tile the world or names unknown shards (422): retrying the
    /// same document will not help.
    #[error("placement refused (422): {0}")]
    Invalid(String),
    /// Replication is up but cannot make the write durable now (503): retry later.
    #[error("replication unavailable (503): {0}")]
    Unavailable(String),
    #[error("unexpected answer {status}: {message}")]
    Unexpected { status: u16, message: String },
    #[error("placement still conflicting after {attempts} attempts: {last}")]
    TooManyConflicts { attempts: u32, last: String },
}

impl ControlError {
    /// Short, stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            ControlError::Unreachable { .. } => "unreachable",
            ControlError::Unauthorized(_) => "unauthorized",
            ControlError::Conflict(_) => "conflict",
            ControlError::Invalid(_) => "invalid",
            ControlError::Unavailable(_) => "unavailable",
            ControlError::Unexpected { .. } => "unexpected",
            ControlError::TooManyConflicts { .. } => "too_many_conflicts",
        }
    }
}

/// A client of one replication server's control API.
#[derive(Debug, Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ControlClient {
    /// `base` like `http://127.0.0.1:7700`; `token` is sent as a bearer token on every call.
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a default reqwest client builds");
        Self {
            http,
            base: base.into().trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.header(reqwest::header::AUTHORIZATION, format!("{BEARER}{t}")),
            None => r,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ControlError> {
        let unreachable = |source| ControlError::Unreachable {
            base: self.base.clone(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(unreachable);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorView>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        Err(match status {
            StatusCode::UNAUTHORIZED => ControlError::Unauthorized(message),
            StatusCode::CONFLICT => ControlError::Conflict(message),
            StatusCode::UNPROCESSABLE_ENTITY => ControlError::Invalid(message),
            StatusCode::SERVICE_UNAVAILABLE => ControlError::Unavailable(message),
            s => ControlError::Unexpected {
                status: s.as_u16(),
                message,
            },
        })
    }

    /// Whether `/healthz` answers 200 (no token needed).
    pub async fn healthy(&self) -> bool {
        self.http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    pub async fn status(&self) -> Result<StatusView, ControlError> {
        self.send(self.request(reqwest::Method::GET, "/v1/status"))
            .await
    }

    pub async fn load(&self) -> Result<LoadView, ControlError> {
        self.send(self.request(reqwest::Method::GET, "/v1/load"))
            .await
    }

    pub async fn shards(&self) -> Result<ShardsView, ControlError> {
        self.send(self.request(reqwest::Method::GET, "/v1/shards"))
            .await
    }

    /// The shards whose link is up now.
    pub async fn connected_shards(
        &self,
    ) -> Result<std::collections::BTreeSet<crate::ids::ShardId>, ControlError> {
        Ok(self
            .shards()
            .await?
            .shards
            .into_iter()
            .filter(|s| s.connected)
            .map(|s| s.shard)
            .collect())
    }

    /// Entities of the mirror; `query` like `owner=shard-1` or `sector=s0-x1-y2` (or empty).
    pub async fn entities(&self, query: &str) -> Result<EntitiesView, ControlError> {
        let path = if query.is_empty() {
            "/v1/entities".to_owned()
        } else {
            format!("/v1/entities?{query}")
        };
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    pub async fn placement(&self) -> Result<Placement, ControlError> {
        self.send(self.request(reqwest::Method::GET, "/v1/placement"))
            .await
    }

    /// One write of a whole placement; a 409 comes back as [`ControlError::Conflict`].
    pub async fn put_placement(&self, p: &Placement) -> Result<PutPlacementReply, ControlError> {
        self.send(self.request(reqwest::Method::PUT, "/v1/placement").json(p))
            .await
    }

    /// Read, compute, write, and on a conflict (another writer was first) read again and
    /// recompute: the optimistic-concurrency loop every placement writer needs. `next` gets
    /// the current placement and returns the desired one without a generation (it is set to
    /// the current one plus one), or `None` when nothing needs to change. Gives up after
    /// `max_attempts` conflicts in a row.
    pub async fn update_placement(
        &self,
        max_attempts: u32,
        mut next: impl FnMut(&Placement) -> Option<Placement>,
    ) -> Result<Option<PutPlacementReply>, ControlError> {
        let mut last = String::new();
        for attempt in 0..max_attempts.max(1) {
            let current = self.placement().await?;
            let Some(mut desired) = next(&current) else {
                return Ok(None);
            };
            desired.generation = current.generation + 1;
            match self.put_placement(&desired).await {
                Ok(reply) => return Ok(Some(reply)),
                Err(ControlError::Conflict(m)) => {
                    tracing::debug!(attempt, conflict = %m, "placement conflict; re-reading");
                    last = m;
                    // Spread retries of writers that collided, so one of them wins next time.
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .subsec_nanos();
                    let jitter = u64::from(attempt.min(10)) * 20 + u64::from(nanos % 50);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ControlError::TooManyConflicts {
            attempts: max_attempts,
            last,
        })
    }
}
