//! `GET /demo`: a page that shows backpressure and batching live, a slow
//! and a fast reader of the same stream side by side. The page is one
//! HTML file with its script and style inline, embedded in the binary: no
//! build step, nothing fetched from elsewhere. What it shows comes from the
//! streams themselves and from `GET /connections` (each of its streams'
//! batch sizes and queue depth), nothing demo-specific in the server.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

/// The page.
const PAGE: &str = include_str!("demo/index.html");

/// The demo route.
pub fn router() -> Router<AppState> {
    Router::new().route("/demo", get(page))
}

async fn page() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
