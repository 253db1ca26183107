//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/connections`
//! (every open stream with its queue and batches), and with the `dhat-heap`
//! feature `/debug/heap`.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::params::Params;
use crate::error::ApiError;
use crate::state::AppState;

/// The content type of the OpenMetrics text exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The operations routes.
pub fn router() -> Router<AppState> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/connections", get(connections));
    #[cfg(feature = "dhat-heap")]
    let router = router.route("/debug/heap", get(heap));
    router
}

/// The live heap as dhat counts it; 503 when no profiler runs (the server
/// embedded in another program).
#[cfg(feature = "dhat-heap")]
async fn heap() -> (StatusCode, Json<Value>) {
    match crate::heap::stats() {
        Some(stats) => (StatusCode::OK, Json(json!(stats))),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "no heap profiler runs in this process" })),
        ),
    }
}

/// 200 while the process serves.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 once listening with the store migrated (the router only exists
/// then), 503 while draining.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.shutdown.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
    } else {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    }
}

/// The open streams (those tagged `?tag=` only, when given), each with its
/// queue depth and what its writer has written.
async fn connections(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let tag = Params::parse(query.as_deref())?.tag()?;
    let streams = state.connections.list(tag.as_deref());
    Ok(Json(json!({ "connections": streams })))
}

/// The metrics, with queue depths read from the open streams now.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    for (transport, depth) in state.connections.queue_depths() {
        state.metrics.set_queue_depth(transport, depth);
    }
    state.metrics.set_live_subscribers(state.hub.live_members());
    ([(CONTENT_TYPE, OPENMETRICS)], state.metrics.encode())
}
