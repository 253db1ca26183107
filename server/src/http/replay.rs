//! The replay dataset: `GET /sse/replay/{wallet}` and `GET /ws/replay/{wallet}`
//! stream a wallet's trades from a database cursor; `GET /api/trades/{wallet}`
//! answers them all at once (to compare first-item latency and memory);
//! `POST /api/trades/{wallet}/seed?count=N` adds synthetic trades.
//!
//! A replay holds a database connection for its whole stream, so at most
//! `--max-replays` run at once; over it a replay is shed like a stream over
//! the connection limit (SSE `503` with `Retry-After`, WebSocket close 1013).

use axum::extract::rejection::PathRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::credentials;
use super::params::Params;
use super::stream::{WS_METHODS, sse_stream, ws_over_capacity, ws_send_only};
use super::topics::path_name;
use crate::error::ApiError;
use crate::scope::{RequestScope, StreamScope};
use crate::source::replay::Replay;
use crate::state::AppState;
use crate::store::{MAX_SEED, WalletTrade};

/// The replay routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sse/replay/{wallet}", get(sse_replay))
        .route("/ws/replay/{wallet}", on(WS_METHODS, ws_replay))
        .route("/api/trades/{wallet}", get(all_trades))
        .route("/api/trades/{wallet}/seed", post(seed))
}

/// The replay a request asks for (`since`, a trade id, and `rate`) and
/// its stream's `tag`, from one parse of the query; the replay holds a
/// permit of the replay limit.
fn replay(
    state: &AppState,
    wallet: Result<Path<String>, PathRejection>,
    query: Option<&str>,
) -> Result<(Replay, Option<String>), ApiError> {
    let wallet = path_name("wallet", wallet)?;
    let params = Params::parse(query, &["since", "rate", "tag"])?;
    let since = params.u64_in("since", 0, 0..=u64::MAX)?;
    let rate = params.u64_in("rate", 0, 0..=state.config.max_rate)?;
    let tag = params.tag()?;
    let source = state
        .replay_source(wallet, since, rate)
        .map_err(|limit| state.over_capacity(limit))?;
    Ok((source, tag))
}

async fn sse_replay(
    State(state): State<AppState>,
    scope: StreamScope,
    wallet: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (source, tag) = replay(&state, wallet, query.as_deref())?;
    sse_stream(&state, scope, source, tag.into())
}

async fn ws_replay(
    State(state): State<AppState>,
    scope: StreamScope,
    wallet: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    match replay(&state, wallet, query.as_deref()) {
        Ok((source, tag)) => Ok(ws_send_only(&state, scope, upgrade?, source, tag)),
        Err(ApiError::OverCapacity { .. }) => Ok(ws_over_capacity(&state, upgrade?)),
        Err(e) => Err(e),
    }
}

/// Every trade of the wallet as one JSON array, built in memory.
async fn all_trades(
    State(state): State<AppState>,
    wallet: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let wallet = path_name("wallet", wallet)?;
    let trades = state
        .store
        .all_trades(wallet.as_str())
        .await
        .map_err(|e| state.storage_error(&e))?;
    // Off the runtime's worker threads: serializing 100,000 rows held a
    // worker for 1.9 s in a debug build (`tests/replay.rs`), stalling every
    // stream whose I/O and timers waited on it.
    let body = tokio::task::spawn_blocking(move || {
        let rows: Vec<WalletTrade<'_>> = trades
            .iter()
            .map(|trade| WalletTrade {
                wallet: wallet.as_str(),
                trade,
            })
            .collect();
        serde_json::to_vec(&rows).expect("in-memory JSON serialization")
    })
    .await
    .expect("serializing trades does not panic");
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// Adds `count` synthetic trades to the wallet (a write: a publish token,
/// or a JWT with `streamgauge.admin`).
async fn seed(
    State(state): State<AppState>,
    wallet: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    RequestScope(scope): RequestScope,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let wallet = path_name("wallet", wallet)?;
    credentials::require_seeder(&state, scope.as_deref(), &headers)?;
    let count =
        Params::parse(query.as_deref(), &["count"])?.required_u64_in("count", 1..=MAX_SEED)?;
    let total = state
        .store
        .seed_trades(wallet.as_str(), count)
        .await
        .map_err(|e| {
            if e.is_conflict() {
                ApiError::Conflict("another seed of this wallet ran at the same time; retry")
            } else {
                state.storage_error(&e)
            }
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "wallet": wallet.as_str(), "added": count, "total": total })),
    ))
}
