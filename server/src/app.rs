//! The router: the one place that lists every route group and layer.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::error::ApiError;
use crate::http::{admin, chat, demo, ops, replay, ticker, tokens, topics};
use crate::metrics::ConnectionMetrics;
use crate::scope::ClientAddr;
use crate::state::AppState;

/// The whole HTTP application over `state`: the route groups, the `404`
/// and `405` fallbacks, the middleware that counts 4xx and 5xx answers and logs the 5xx, and,
/// when
/// `--cors-origin` names any, CORS (outermost, so that preflights are
/// answered before routing).
pub fn router(state: AppState) -> Router {
    let cors = state.config.cors.layer();
    let router = Router::new()
        .merge(ticker::router())
        .merge(tokens::router())
        .merge(chat::router())
        .merge(topics::router())
        .merge(replay::router())
        .merge(ops::router())
        .merge(demo::router())
        .merge(admin::router(&state))
        .fallback(async || ApiError::NotFound)
        .method_not_allowed_fallback(async || ApiError::MethodNotAllowed)
        .layer(middleware::from_fn_with_state(
            state.metrics.connections().clone(),
            count_refusals,
        ))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Counts every 4xx and 5xx answer by status, and logs every 5xx once,
/// here rather than in each handler, with the client's address. A 503 is
/// load being shed or a retryable outage (its cause is logged where it
/// happens), so it is logged at debug level only.
async fn count_refusals(
    State(metrics): State<ConnectionMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map(|ClientAddr(addr)| *addr);
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        metrics.refused(status.as_u16());
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::debug!(?client, %method, %path, %status, "request shed");
    } else if status.is_server_error() {
        tracing::error!(?client, %method, %path, %status, "request failed");
    }
    response
}
