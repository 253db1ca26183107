//! The router: the one place that lists every route group and layer.

use axum::Router;

use crate::error::ApiError;
use crate::http::{ops, ticker, tokens};
use crate::state::AppState;

/// The whole HTTP application over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ticker::router())
        .merge(tokens::router())
        .merge(ops::router())
        .fallback(async || ApiError::NotFound)
        .method_not_allowed_fallback(async || ApiError::MethodNotAllowed)
        .with_state(state)
}
