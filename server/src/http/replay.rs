//! The replay dataset: `GET /sse/replay/{wallet}` and `GET /ws/replay/{wallet}`
//! stream a wallet's trades from a database cursor; `GET /api/trades/{wallet}`
//! answers them all at once, up to a `limit` (to compare first-item latency
//! and memory); `POST /api/trades/{wallet}/seed?count=N` adds synthetic
//! trades, up to `--max-seed`, one chunk (transaction) at a time.
//!
//! A replay holds a database connection for its whole stream, so at most
//! `--max-replays` run at once, the array's reads among them; over it a
//! replay is shed like a stream over the connection limit (SSE `503` with
//! `Retry-After`, WebSocket close 1013). Every refusal at one of these
//! bounds is counted (`streamgauge_dataset_refusals_total`).

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
use crate::error::{ApiError, TooManyTrades};
use crate::metrics::DatasetBound;
use crate::scope::{RequestScope, StreamScope};
use crate::source::replay::Replay;
use crate::state::AppState;
use crate::store::WalletTrade;

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

/// Every trade of the wallet as one JSON array, built in memory: at most
/// `limit` of them (`--trades-limit` when not given, at most
/// `--max-trades-limit`). A wallet holding more is refused with `413`,
/// naming the stream to use, before any of its rows is read. The read
/// holds a permit of the replay limit, like a replay.
async fn all_trades(
    State(state): State<AppState>,
    wallet: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let wallet = path_name("wallet", wallet)?;
    let limits = state.config.trades;
    let limit = Params::parse(query.as_deref(), &["limit"])?.u64_in(
        "limit",
        limits.default_limit,
        1..=limits.max_limit,
    )?;
    let _permit = state
        .replay_permit()
        .map_err(|limit| state.over_capacity(limit))?;
    let held = state
        .store
        .trade_count(wallet.as_str())
        .await
        .map_err(|e| state.storage_error(&e))?;
    if held > limit {
        state.metrics.datasets().refused(DatasetBound::TradesLimit);
        return Err(ApiError::TooManyTrades(Box::new(TooManyTrades {
            wallet: wallet.as_str().to_owned(),
            held,
            limit,
            max_limit: limits.max_limit,
        })));
    }
    // The trades counted, not those a seed adds meanwhile: at most `limit`.
    let trades = state
        .store
        .trades_through(wallet.as_str(), held)
        .await
        .map_err(|e| state.storage_error(&e))?;
    state
        .metrics
        .topics()
        .replay_rows
        .inc_by(trades.len() as u64);
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

/// Adds `count` synthetic trades to the wallet, at most `--max-seed`, in
/// chunks of `--seed-chunk` (a write: an admin token once any is
/// configured, else a publish token; or a JWT with `streamgauge.admin`).
async fn seed(
    State(state): State<AppState>,
    wallet: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    RequestScope(scope): RequestScope,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let wallet = path_name("wallet", wallet)?;
    credentials::require_seeder(&state, scope.as_deref(), &headers)?;
    let count = seed_count(&state, query.as_deref())?;
    let total = seed_in_chunks(&state, wallet.as_str(), count).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "wallet": wallet.as_str(), "added": count, "total": total })),
    ))
}

/// The `count` of a seed: 1 to `--max-seed`.
fn seed_count(state: &AppState, query: Option<&str>) -> Result<u64, ApiError> {
    let count = Params::parse(query, &["count"])?.required_u64_in("count", 1..=u64::MAX)?;
    let max = state.config.trades.max_seed;
    if count > max {
        state.metrics.datasets().refused(DatasetBound::MaxSeed);
        return Err(ApiError::bad_param(
            "count",
            format!(
                "{count} is over this server's --max-seed ({max}); seed in calls of at most {max}"
            ),
        ));
    }
    Ok(count)
}

/// Adds `count` trades to `wallet`, one transaction per chunk; returns the
/// wallet's total. Between chunks, a publish (SQLite) or another seed of
/// the wallet may take its turn ([`crate::store::Store::append_trades`]).
///
/// # Errors
///
/// [`ApiError::SeedCut`] when the store fails or the server starts
/// shutting down before the last chunk: the chunks committed stay.
async fn seed_in_chunks(state: &AppState, wallet: &str, count: u64) -> Result<u64, ApiError> {
    let chunk = state.config.trades.seed_chunk;
    let cut = |reason, added| ApiError::SeedCut {
        reason,
        added,
        asked: count,
        retry_after: state.config.retry_after,
    };
    let mut added = 0;
    let mut total = 0;
    while added < count {
        if state.shutdown.is_draining() {
            return Err(cut("the server is shutting down", added));
        }
        let n = chunk.min(count - added);
        total = state
            .store
            .append_trades(wallet, n)
            .await
            .map_err(|error| {
                tracing::error!(%error, wallet, added, asked = count, "seeding failed");
                cut("storage unavailable", added)
            })?;
        added += n;
        state.metrics.datasets().seeded.inc_by(n);
    }
    if let Err(error) = state.store.analyze_trades().await {
        // Every trade is in: only the planner's statistics are stale.
        tracing::warn!(%error, "analyzing the trades after a seed failed");
    }
    Ok(total)
}
