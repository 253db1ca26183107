//! The HTTP edge's one error type: every refusal before a stream starts is
//! an [`ApiError`], answered with its status and `{"error": "..."}`.

use std::time::Duration;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::OverCapacity;
use crate::auth::Refusal;
use crate::publish::PublishError;

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
    /// A query parameter the endpoint does not take (a typo, say).
    #[error("unknown parameter `{0}`")]
    UnknownParam(String),
    /// The connection limit is reached.
    #[error("{limit}; retry later")]
    OverCapacity {
        /// The limit that was hit.
        limit: OverCapacity,
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// Access to `action` was refused: 401 without a credential the server
    /// takes, 403 with one that does not allow this.
    #[error("{}", denial_message(*refusal, action))]
    Denied {
        /// Why.
        refusal: Refusal,
        /// What was asked, such as "publishing".
        action: &'static str,
    },
    /// The request body is over its limit; nothing was stored.
    #[error("body is over the limit of {max} bytes; nothing was stored")]
    PayloadTooLarge {
        /// The limit.
        max: usize,
    },
    /// The request body is malformed; nothing was stored.
    #[error("{0}; nothing was stored")]
    BadBody(String),
    /// The server cannot take this now; the client should retry.
    #[error("{reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// A publish's idempotency key was used within the window for another
    /// body; nothing was stored.
    #[error("{}", PublishError::KeyReused)]
    KeyReused,
    /// `GET /api/trades/{wallet}` on a wallet holding more trades than the
    /// request's `limit`: nothing was read.
    #[error("{}", too_many_trades(.0))]
    TooManyTrades(Box<TooManyTrades>),
    /// A seed stopped before adding every trade asked for; the trades it
    /// added (whole chunks) stay.
    #[error(
        "{reason} after adding {added} of {asked} trades; the trades added stay, retry for the rest"
    )]
    SeedCut {
        /// Why it stopped.
        reason: &'static str,
        /// Trades added.
        added: u64,
        /// Trades asked for.
        asked: u64,
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// A WebSocket endpoint was requested without a valid upgrade.
    #[error("{0}")]
    Upgrade(#[from] WebSocketUpgradeRejection),
    /// The client's address has its limit of connections and streams
    /// open.
    #[error("too many connections from your address (at most {0}); retry later")]
    PeerLimit(usize),
    /// An HTTP/2 connection opened streams faster than allowed; it is
    /// being closed.
    #[error("too many streams opened on this connection (at most {0} a second); reconnect")]
    StreamRate(u32),
    /// The request body did not arrive whole in time; nothing was stored,
    /// and the connection is closed.
    #[error("the request body did not arrive within {} ms; nothing was stored", .0.as_millis())]
    BodyTimeout(Duration),
    /// A request head that cannot be served; the connection is closed.
    #[error("malformed request: {0}")]
    MalformedHead(&'static str),
    /// A publish would create a topic beyond `--max-topics`; nothing was
    /// stored.
    #[error(
        "the server holds its limit of {max} topics; this publish would create another, and nothing was stored"
    )]
    TooManyTopics {
        /// The limit.
        max: u64,
    },
    /// The admin API was asked about a topic that does not exist.
    #[error("no such topic")]
    NoSuchTopic,
    /// No such endpoint.
    #[error("no such endpoint")]
    NotFound,
    /// The endpoint exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
}

/// What [`ApiError::TooManyTrades`] tells the client.
#[derive(Debug)]
pub struct TooManyTrades {
    /// The wallet.
    pub wallet: String,
    /// Its trades.
    pub held: u64,
    /// The `limit` of the request.
    pub limit: u64,
    /// The highest `limit` a request may give.
    pub max_limit: u64,
}

impl TooManyTrades {
    /// The stream that serves every trade of the wallet, whatever their
    /// number.
    fn stream(&self) -> String {
        format!("/sse/replay/{}", self.wallet)
    }
}

/// The message of [`ApiError::TooManyTrades`]: the stream to use, and a
/// higher `limit` when one would do.
fn too_many_trades(refusal: &TooManyTrades) -> String {
    let TooManyTrades {
        wallet,
        held,
        limit,
        max_limit,
    } = refusal;
    let higher = if held <= max_limit {
        format!(", or ask for limit={held} (at most {max_limit})")
    } else {
        String::new()
    };
    format!(
        "wallet `{wallet}` holds {held} trades, more than limit={limit}: stream them from {} \
         (or /ws/replay/{wallet}), which reads them only as fast as you do{higher}",
        refusal.stream()
    )
}

impl ApiError {
    /// Access to `action` (such as "publishing") was refused.
    pub fn denied(refusal: Refusal, action: &'static str) -> Self {
        ApiError::Denied { refusal, action }
    }

    /// A refused publish; `retry_after` goes with the retryable ones.
    pub fn publish(error: PublishError, retry_after: Duration) -> Self {
        match error {
            PublishError::TooLarge { max, .. } => ApiError::PayloadTooLarge { max },
            PublishError::InvalidJson(reason) => {
                ApiError::BadBody(format!("body is not valid JSON: {reason}"))
            }
            PublishError::TooManyTopics { max } => ApiError::TooManyTopics { max },
            PublishError::KeyReused => ApiError::KeyReused,
            PublishError::Busy | PublishError::Unavailable => ApiError::Unavailable {
                reason: error.to_string(),
                retry_after,
            },
        }
    }

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
            ApiError::BadParam { .. } | ApiError::UnknownParam(_) => StatusCode::BAD_REQUEST,
            ApiError::OverCapacity { .. }
            | ApiError::Unavailable { .. }
            | ApiError::SeedCut { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Denied { refusal, .. } if refusal.is_forbidden() => StatusCode::FORBIDDEN,
            ApiError::Denied { .. } => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge { .. } | ApiError::TooManyTrades(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::BadBody(_) | ApiError::MalformedHead(_) => StatusCode::BAD_REQUEST,
            ApiError::PeerLimit(_) | ApiError::StreamRate(_) | ApiError::TooManyTopics { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Upgrade(rejection) => rejection.status(),
            ApiError::NotFound | ApiError::NoSuchTopic => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// The message of a refusal: the wording of the static tokens' two cases
/// is kept (clients match it), every JWT reason says what is wrong.
fn denial_message(refusal: Refusal, action: &str) -> String {
    match refusal {
        Refusal::Missing => format!("{action} requires a bearer token"),
        Refusal::WrongToken => format!("the bearer token is not valid for {action}"),
        other => format!("{action} refused: {}", other.describe()),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self {
            ApiError::Denied { refusal, .. } => {
                serde_json::json!({ "error": self.to_string(), "reason": refusal.label() })
            }
            ApiError::TooManyTopics { max } => {
                serde_json::json!({ "error": self.to_string(), "reason": "max_topics", "max_topics": max })
            }
            ApiError::TooManyTrades(refusal) => serde_json::json!({
                "error": self.to_string(),
                "wallet": refusal.wallet,
                "trades": refusal.held,
                "limit": refusal.limit,
                "max_limit": refusal.max_limit,
                "stream": refusal.stream(),
            }),
            ApiError::SeedCut { added, .. } => {
                serde_json::json!({ "error": self.to_string(), "added": added })
            }
            _ => serde_json::json!({ "error": self.to_string() }),
        };
        let body = Json(body);
        let mut response = (self.status_code(), body).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::OverCapacity { retry_after, .. }
            | ApiError::Unavailable { retry_after, .. }
            | ApiError::SeedCut { retry_after, .. } => {
                // Retry-After takes whole seconds; never advertise 0.
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ApiError::Denied { refusal, .. } if !refusal.is_forbidden() => {
                // RFC 6750, 3: a token was presented and refused.
                let challenge = if refusal == Refusal::Missing {
                    "Bearer"
                } else {
                    "Bearer error=\"invalid_token\""
                };
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            ApiError::PeerLimit(_) | ApiError::StreamRate(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            // The rest of the request is not read: the connection cannot
            // carry another.
            ApiError::BodyTimeout(_) | ApiError::MalformedHead(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
