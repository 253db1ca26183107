//! The HTTP edge's one error type: every refusal before a stream starts is
//! an [`ApiError`], answered with its status and `{"error": "..."}`.

use std::time::Duration;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::OverCapacity;

/// A request refused before any stream started.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is malformed or out of bounds.
    #[error("invalid parameter `{name}`: {reason}")]
    BadParam {
        /// The parameter.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection limit is reached.
    #[error("{limit}; retry later")]
    OverCapacity {
        /// The limit that was hit.
        limit: OverCapacity,
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// A WebSocket endpoint was requested without a valid upgrade.
    #[error("{0}")]
    Upgrade(#[from] WebSocketUpgradeRejection),
    /// No such endpoint.
    #[error("no such endpoint")]
    NotFound,
    /// The endpoint exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// A bad query parameter.
    pub fn bad_param(name: &str, reason: impl Into<String>) -> Self {
        ApiError::BadParam {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::OverCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upgrade(rejection) => rejection.status(),
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        let mut response = (self.status_code(), body).into_response();
        if let ApiError::OverCapacity { retry_after, .. } = self {
            // Retry-After takes whole seconds; never advertise 0.
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
