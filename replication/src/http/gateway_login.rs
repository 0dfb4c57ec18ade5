//! Logins at a gateway: a player may register and log in at any gateway (`sidereal gateway
//! --login`), as at replication's own login endpoint. The gateway holds no accounts: it passes
//! each request over its authenticated link to the authority, with the player's own address
//! (the limits count it, not the gateway's), and gives the player the authority's answer as it
//! is: the same status, `Retry-After` and body, a connect token naming every gateway.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sidereal_core::gateway_link::GatewayMessage;
use sidereal_core::login::MAX_LOGIN_BODY_BYTES;
use tokio::sync::oneshot;

/// How long a player waits for the authority's answer before the gateway gives up.
pub const LOGIN_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The authority's answer to one login, as the player gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAnswer {
    pub status: u16,
    pub retry_after: Option<u32>,
    pub body: Vec<u8>,
}

impl LoginAnswer {
    /// An answer the gateway gives itself (`{"error": why}`, as the authority words its
    /// own), when there is no authority's: worth a retry in a second.
    pub fn refusal(status: StatusCode, why: &str) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::bad_request(status, why)
        }
    }

    /// A request the gateway refuses itself, before it costs the authority anything.
    fn bad_request(status: StatusCode, why: &str) -> Self {
        Self {
            status: status.as_u16(),
            retry_after: None,
            body: serde_json::json!({ "error": why }).to_string().into_bytes(),
        }
    }
}

/// Logins waiting to go to the authority, and those waiting for its answer. Shared by the
/// HTTP endpoint (asks), the gateway's node loop (sends) and its link's reading thread
/// (answers).
#[derive(Clone, Default)]
pub struct LoginDesk(Arc<Mutex<Desk>>);

#[derive(Default)]
struct Desk {
    next: u64,
    queued: Vec<GatewayMessage>,
    waiting: HashMap<u64, oneshot::Sender<LoginAnswer>>,
}

impl LoginDesk {
    /// Queues a registration (`register`) or login from `client`; the answer comes on the
    /// receiver.
    pub fn ask(
        &self,
        client: IpAddr,
        register: bool,
        body: Vec<u8>,
    ) -> (u64, oneshot::Receiver<LoginAnswer>) {
        let (tx, rx) = oneshot::channel();
        let mut d = self.0.lock().expect("login desk lock");
        d.next += 1;
        let request = d.next;
        d.waiting.insert(request, tx);
        d.queued.push(GatewayMessage::Login {
            request,
            client,
            register,
            body,
        });
        (request, rx)
    }

    /// The logins to pass on now.
    pub fn take_queued(&self) -> Vec<GatewayMessage> {
        std::mem::take(&mut self.0.lock().expect("login desk lock").queued)
    }

    /// Answers `request` (the authority's answer, or the gateway's own refusal).
    pub fn answer(&self, request: u64, answer: LoginAnswer) {
        let waiting = self
            .0
            .lock()
            .expect("login desk lock")
            .waiting
            .remove(&request);
        if let Some(tx) = waiting {
            let _ = tx.send(answer);
        }
    }

    /// Forgets a request whose player stopped waiting.
    fn give_up(&self, request: u64) {
        self.0
            .lock()
            .expect("login desk lock")
            .waiting
            .remove(&request);
    }

    /// Requests waiting for an answer now.
    pub fn waiting(&self) -> usize {
        self.0.lock().expect("login desk lock").waiting.len()
    }
}

/// `POST /v1/accounts` and `POST /v1/login`, as replication serves them.
pub fn router(desk: LoginDesk) -> Router {
    Router::new()
        .route("/v1/accounts", post(register))
        .route("/v1/login", post(login))
        .layer(DefaultBodyLimit::max(MAX_LOGIN_BODY_BYTES))
        .with_state(desk)
}

type Body = Result<Bytes, BytesRejection>;

async fn register(
    State(desk): State<LoginDesk>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    pass_on(&desk, peer.ip(), true, body).await
}

async fn login(
    State(desk): State<LoginDesk>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    pass_on(&desk, peer.ip(), false, body).await
}

async fn pass_on(desk: &LoginDesk, client: IpAddr, register: bool, body: Body) -> Response {
    let answer = match body {
        Ok(body) => ask_authority(desk, client, register, body).await,
        // Too big (or unreadable): refused here, in the authority's words, never passed on.
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => LoginAnswer::bad_request(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {MAX_LOGIN_BODY_BYTES} bytes"),
        ),
        Err(r) => LoginAnswer::bad_request(r.status(), &r.body_text()),
    };
    reply(answer)
}

async fn ask_authority(
    desk: &LoginDesk,
    client: IpAddr,
    register: bool,
    body: Bytes,
) -> LoginAnswer {
    let (request, answer) = desk.ask(client, register, body.to_vec());
    match tokio::time::timeout(LOGIN_ANSWER_WITHIN, answer).await {
        Ok(Ok(a)) => a,
        _ => {
            desk.give_up(request);
            LoginAnswer::refusal(
                StatusCode::GATEWAY_TIMEOUT,
                "the authority did not answer in time; retry shortly",
            )
        }
    }
}

/// The answer as the player gets it.
fn reply(answer: LoginAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response();
    if let Some(secs) = answer.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}
