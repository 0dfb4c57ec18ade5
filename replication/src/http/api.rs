//! The control API (JSON over HTTP): load, placement, shards, entities and status behind a
//! bearer token; health, readiness and metrics open. Answers are the typed views of
//! `sidereal_core::control`, which every client reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, Request, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sidereal_core::control::{
    BEARER, EntitiesView, EntityView, ErrorView, LoadView, PutPlacementReply, SectorLoadView,
    ShardLoadView, ShardView, ShardsView, StatusView,
};
use sidereal_core::{Placement, SectorId, ShardId};

use crate::authority::PutPlacementError;
use crate::http::map::{self, MAP_INTERVAL, MAX_MAP_ENTITIES};
use crate::state::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    let control = Router::new()
        .route("/v1/load", get(load))
        .route("/v1/placement", get(get_placement).put(put_placement))
        .route("/v1/shards", get(shards))
        .route("/v1/entities", get(entities))
        .route("/v1/status", get(status))
        .route("/v1/map/ticket", post(map_ticket))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_control_token,
        ));
    Router::new()
        .merge(control)
        .merge(crate::http::login_http::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        // The live map: the page is static; its frames need the control token, or a ticket the
        // page mints with it and passes as `?ticket=` (an EventSource cannot send headers).
        .route("/map", get(|| async { Html(map::MAP_PAGE) }))
        .route("/v1/map", get(map_frame))
        .route("/v1/map/events", get(map_events))
        .with_state(shared)
}

/// What the public listener (`--public-http`) serves: the players' login and health, nothing
/// of the control API.
pub fn public_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(crate::http::login_http::router())
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

fn error(code: StatusCode, msg: impl ToString) -> Response {
    (
        code,
        Json(ErrorView {
            error: msg.to_string(),
        }),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct TicketQuery {
    ticket: Option<String>,
    /// The control token in the URL, refused: it would land in proxy and access logs.
    token: Option<String>,
}

/// The map's frames need the control token as `Authorization: Bearer`, or, for the page (an
/// EventSource cannot send headers), a short-lived read-only `?ticket=` from
/// `POST /v1/map/ticket`: `None` when given, else the 401.
fn map_refusal(s: &Shared, headers: &HeaderMap, query: &TicketQuery) -> Option<Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(BEARER));
    if bearer.is_some_and(|t| {
        crate::authority::constant_time_eq(t.as_bytes(), s.control_token.as_bytes())
    }) {
        return None;
    }
    if let Some(ticket) = &query.ticket
        && map::ticket_valid(&s.control_token, ticket, unix_now())
    {
        return None;
    }
    let why = if query.token.is_some() {
        "the control token does not go in URLs: POST /v1/map/ticket (Authorization: Bearer) for a ?ticket="
    } else if query.ticket.is_some() {
        "the map ticket is wrong or expired: POST /v1/map/ticket for a new one"
    } else {
        "the map needs a ?ticket= (POST /v1/map/ticket) or Authorization: Bearer"
    };
    Some(error(StatusCode::UNAUTHORIZED, why))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /v1/map/ticket` (control token): a read-only ticket for the map's frames, valid for
/// [`map::MAP_TICKET_TTL`].
async fn map_ticket(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let expires = unix_now() + map::MAP_TICKET_TTL.as_secs();
    Json(serde_json::json!({
        "ticket": map::map_ticket(&s.control_token, expires),
        "expiresAt": expires,
    }))
}

fn current_map_frame(s: &Shared) -> Arc<String> {
    s.map_frames.get_or_build(|| {
        let mut a = s.authority.lock().expect("authority lock");
        let mirror = a.mirror();
        let frame = map::frame(
            a.placement(),
            a.load(),
            mirror
                .iter()
                .map(|(_, r)| (r.snapshot.kind, r.snapshot.state.pos)),
            mirror.len(),
            MAX_MAP_ENTITIES,
        );
        // While a page watches, shards that report only for checkpoints are asked for their
        // state before each next frame too, so the map moves four times a second, not once.
        if a.request_reports().is_some() {
            s.flush(&mut a);
        }
        frame
    })
}

/// One frame of the live map (`map::MapFrame`).
async fn map_frame(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<TicketQuery>,
) -> Response {
    if let Some(refused) = map_refusal(&s, &headers, &q) {
        return refused;
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        current_map_frame(&s).as_str().to_owned(),
    )
        .into_response()
}

/// The live map's frames as server-sent events, four a second, until the page goes.
async fn map_events(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<TicketQuery>,
) -> Response {
    if let Some(refused) = map_refusal(&s, &headers, &q) {
        return refused;
    }
    let frames = futures::stream::unfold(s, |s| async move {
        tokio::time::sleep(MAP_INTERVAL).await;
        let event = Event::default().data(current_map_frame(&s).as_str());
        Some((Ok::<_, std::convert::Infallible>(event), s))
    });
    Sse::new(frames)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Every control endpoint needs `Authorization: Bearer <token>`; anything else is a 401 that
/// touches nothing. The comparison takes the same time wherever the tokens differ.
async fn require_control_token(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(BEARER));
    match given {
        Some(t) if crate::authority::constant_time_eq(t.as_bytes(), s.control_token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong control token"),
        None => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing control token: send Authorization: Bearer <token> (see --control-token)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
            r
        }
    }
}

/// Per-leaf load as last reported by the shard simulating it.
async fn load(State(s): State<Arc<Shared>>) -> Json<LoadView> {
    let a = s.authority.lock().expect("authority lock");
    let mut sectors = Vec::new();
    let mut shards = Vec::new();
    for (shard, r) in a.load() {
        shards.push(ShardLoadView {
            shard: shard.clone(),
            tick: r.tick,
            tick_mean_ms: r.tick_mean_ms,
            tick_p99_ms: r.tick_p99_ms,
            tick_wall_mean_ms: r.tick_wall_mean_ms,
            tick_wall_p99_ms: r.tick_wall_p99_ms,
        });
        for c in &r.sectors {
            if a.placement().sectors.get(&c.sector) == Some(shard) {
                sectors.push(SectorLoadView {
                    sector: c.sector,
                    shard: shard.clone(),
                    entities: c.entities,
                    players: c.players,
                    tick_p99_ms: r.tick_p99_ms,
                });
            }
        }
    }
    Json(LoadView {
        generation: a.placement().generation,
        sectors,
        shards,
    })
}

async fn get_placement(State(s): State<Arc<Shared>>) -> Json<Placement> {
    Json(
        s.authority
            .lock()
            .expect("authority lock")
            .placement()
            .clone(),
    )
}

/// Applies a whole desired placement: 200 (applied or already applied), 409 on a stale or
/// conflicting generation, 422 when it does not tile the world or names unknown shards.
async fn put_placement(
    State(s): State<Arc<Shared>>,
    body: Result<Json<Placement>, JsonRejection>,
) -> Response {
    let Json(desired) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid placement body: {}", e.body_text()),
            );
        }
    };
    let generation = desired.generation;
    let (result, applied) = {
        let mut a = s.authority.lock().expect("authority lock");
        let result = a.put_placement(desired);
        s.flush(&mut a);
        (result, a.placement().clone())
    };
    match result {
        Ok(changed) => {
            // Acknowledged only once durable; a retry of the same generation is a no-op that
            // saves again.
            if let Some(store) = &s.store
                && let Err(e) = store.save_placement(&applied).await
            {
                if e.is_deposed() {
                    s.step_down(e.to_string());
                }
                let msg =
                    format!("placement {generation} applied but not yet durable ({e}); retry");
                return error(StatusCode::SERVICE_UNAVAILABLE, msg);
            }
            Json(PutPlacementReply {
                generation,
                changed,
            })
            .into_response()
        }
        Err(e @ (PutPlacementError::Stale { .. } | PutPlacementError::Conflict(_))) => {
            error(StatusCode::CONFLICT, e)
        }
        Err(e @ (PutPlacementError::Invalid(_) | PutPlacementError::Jump { .. })) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        Err(e @ PutPlacementError::TakingOver { .. }) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e);
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            r
        }
    }
}

async fn shards(State(s): State<Arc<Shared>>) -> Json<ShardsView> {
    let a = s.authority.lock().expect("authority lock");
    let live = a.live_shards();
    let mut owned: BTreeMap<&ShardId, usize> = BTreeMap::new();
    for (_, r) in a.mirror().iter() {
        *owned.entry(&r.owner).or_default() += 1;
    }
    let shards = a
        .known_shards()
        .iter()
        .map(|id| ShardView {
            shard: id.clone(),
            connected: live.contains(id),
            sectors: a.placement().sectors.values().filter(|s| *s == id).count(),
            entities: owned.get(id).copied().unwrap_or(0),
            tick_p99_ms: a.load().get(id).map(|r| r.tick_p99_ms),
            stream: a.stream_addresses().get(id).cloned(),
        })
        .collect();
    Json(ShardsView { shards })
}

#[derive(serde::Deserialize)]
struct EntityFilter {
    owner: Option<String>,
    sector: Option<SectorId>,
}

/// Entities in the mirror, optionally only those of one owner or inside one sector.
async fn entities(
    State(s): State<Arc<Shared>>,
    Query(f): Query<EntityFilter>,
) -> Json<EntitiesView> {
    let a = s.authority.lock().expect("authority lock");
    let entities = a
        .mirror()
        .iter()
        .filter(|(_, r)| f.owner.as_deref().is_none_or(|o| r.owner.0 == o))
        .filter(|(_, r)| {
            f.sector
                .is_none_or(|sec| sec.contains(r.snapshot.state.point()))
        })
        .map(|(id, r)| EntityView {
            id: *id,
            kind: r.snapshot.kind,
            owner: r.owner.clone(),
            epoch: r.epoch,
            in_transit: r.in_transit,
            version: r.version,
            pos: r.snapshot.state.pos,
            vel: r.snapshot.state.vel,
        })
        .collect();
    Json(EntitiesView { entities })
}

/// The one-look summary.
async fn status(State(s): State<Arc<Shared>>) -> Json<StatusView> {
    let health = s.store_health.lock().expect("health lock").clone();
    let a = s.authority.lock().expect("authority lock");
    let players: u32 = a
        .load()
        .values()
        .flat_map(|r| r.sectors.iter().map(|c| c.players))
        .sum();
    Json(StatusView {
        shards_connected: a.live_shards().len(),
        roots: a.world().len(),
        leaf_sectors: a.placement().sectors.len(),
        entities: a.mirror().len(),
        archived_entities: a.mirror().archived_len(),
        players,
        players_connected: a.players().len(),
        placement_generation: a.placement().generation,
        last_checkpoint_age_seconds: health.last_checkpoint.map(|t| t.elapsed().as_secs_f64()),
        store: s.store.as_ref().map(|st| st.backend().to_owned()),
        store_healthy: health.healthy,
        checkpoint_backlog: a.mirror().dirty_len(),
        uptime_seconds: s.started.elapsed().as_secs(),
    })
}

/// Not ready while checkpoints fail: the world keeps running, but nothing new is durable.
/// Ready means this process serves shard links, logins and the control API. A database
/// outage does not make it unready: the world keeps running, checkpoints are retried with the
/// backlog kept, and dropping replication from its Services would only take the game off the
/// network. The store's health is `sidereal_store_healthy`, with an alert in the chart.
async fn ready(State(s): State<Arc<Shared>>) -> Response {
    let h = s.store_health.lock().expect("health lock").clone();
    if h.healthy {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::OK,
            format!(
                "ready (store unavailable, checkpoints retried: {})",
                h.last_error.unwrap_or_default()
            ),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let health = s.store_health.lock().expect("health lock").clone();
    // Never the inputs lock under the authority's: the game port's commands take them one
    // after the other, and holding both here deadlocked a scrape against a flood of commands.
    let inputs = s.inputs.lock().expect("inputs lock").counts();
    let a = s.authority.lock().expect("authority lock");
    let text = crate::http::metrics::render(
        &a,
        &health,
        &s.link_bytes,
        &s.game_traffic,
        &s.logins.counts(),
        &inputs,
        &s.sessions.lock(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
