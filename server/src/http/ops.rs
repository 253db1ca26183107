//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/connections`
//! (every open stream with its queue and batches), and with the `dhat-heap`
//! feature `/debug/heap`.

use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::params::Params;
use crate::cluster::ListenerState;
use crate::error::ApiError;
use crate::metrics::Exposition;
use crate::state::AppState;

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
/// then) and, on a cluster node, with its listener up and resynced; 503
/// while draining, while the database does not answer, or while the
/// listener is down or resyncing (events from other nodes would be late),
/// with the reason.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.shutdown.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    if let Some(reason) = state.health.down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "database_unreachable", "reason": reason })),
        );
    }
    match state.cluster.as_ref().map(|node| node.state()) {
        Some(listener) if listener != ListenerState::Up => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": listener.label(), "reason": listener.reason() })),
        ),
        _ => (StatusCode::OK, Json(json!({ "status": "ready" }))),
    }
}

/// The open streams (those tagged `?tag=` only, when given), each with its
/// queue depth and what its writer has written.
async fn connections(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let tag = Params::parse(query.as_deref(), &["tag"])?.tag()?;
    let streams = state.connections.list(tag.as_deref());
    Ok(Json(json!({ "connections": streams })))
}

/// The metrics, with queue depths read from the open streams now, in the
/// text format the request's `Accept` prefers.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    for (transport, depth) in state.connections.queue_depths() {
        state.metrics.set_queue_depth(transport, depth);
    }
    state.metrics.set_live_subscribers(state.hub.live_members());
    let exposition = negotiate(&headers);
    (
        [(CONTENT_TYPE, exposition.content_type())],
        state.metrics.encode(exposition),
    )
}

/// The exposition `Accept` prefers, chosen as Prometheus' client libraries
/// choose it: OpenMetrics 1.0.0 text when it is the acceptable type of
/// highest `q` (a more specific type wins a tie with a wildcard, the first
/// one a tie between two types), the Prometheus text format 0.0.4 otherwise,
/// and without an `Accept`. Prometheus itself asks for OpenMetrics first.
fn negotiate(headers: &HeaderMap) -> Exposition {
    let ranges = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    let mut best: Option<((f32, bool), Exposition)> = None;
    for range in ranges {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let (mut q, mut version) = (1.0_f32, None);
        for (name, value) in parts.filter_map(|param| param.split_once('=')) {
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.trim().parse().unwrap_or(0.0),
                "version" => version = Some(value.trim().trim_matches('"')),
                _ => {}
            }
        }
        let (exposition, specific) = match (media.as_str(), version) {
            ("application/openmetrics-text", None | Some("1.0.0")) => {
                (Exposition::OpenMetrics, true)
            }
            ("text/plain", None | Some("0.0.4")) => (Exposition::Prometheus, true),
            ("text/*" | "*/*", _) => (Exposition::Prometheus, false),
            _ => continue,
        };
        let rank = (q, specific);
        if q > 0.0 && best.is_none_or(|(best, _)| rank > best) {
            best = Some((rank, exposition));
        }
    }
    best.map_or(Exposition::Prometheus, |(_, exposition)| exposition)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accepting(accept: Option<&'static str>) -> Exposition {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
        }
        negotiate(&headers)
    }

    #[test]
    fn prometheus_text_unless_openmetrics_is_preferred() {
        use Exposition::{OpenMetrics, Prometheus};
        for (accept, expected) in [
            (None, Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain"), Prometheus),
            (Some("application/json"), Prometheus),
            (Some("application/openmetrics-text"), OpenMetrics),
            // What Prometheus 2 and 3 send by default.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.5,\
                     application/openmetrics-text;version=0.0.1;q=0.4,\
                     text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                OpenMetrics,
            ),
            (
                Some("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"),
                Prometheus,
            ),
            (Some("*/*, application/openmetrics-text"), OpenMetrics),
            (Some("application/openmetrics-text;q=0"), Prometheus),
            (
                Some("application/openmetrics-text;version=0.0.1"),
                Prometheus,
            ),
        ] {
            assert_eq!(accepting(accept), expected, "{accept:?}");
        }
    }
}
