//! The router: the one place that lists every route group and layer.

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::error::ApiError;
use crate::http::{admin, chat, demo, ops, replay, ticker, tokens, topics};
use crate::scope::ClientAddr;
use crate::state::AppState;

/// The whole HTTP application over `state`: the route groups, the `404`
/// and `405` fallbacks, the middleware that logs 5xx answers and, when
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
        .layer(middleware::from_fn(log_server_errors))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Logs every 5xx answer once, here rather than in each handler, with the
/// client's address. A 503 is load being shed or a retryable outage (its
/// cause is logged where it happens), so it is logged at debug level only.
async fn log_server_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map(|ClientAddr(addr)| *addr);
    let response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::debug!(?client, %method, %path, %status, "request shed");
    } else if status.is_server_error() {
        tracing::error!(?client, %method, %path, %status, "request failed");
    }
    response
}
