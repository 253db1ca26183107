//! Topics: `POST /topics/{topic}/events`, `GET /sse/topics/{topic}` and
//! `GET /ws/topics/{topic}` (which also takes `{"publish": …}` frames).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, post};
use axum::{Extension, Json, Router};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::json;

use super::credentials;
use super::params::{Params, parse_u64_in};
use super::stream::{StreamOptions, WS_METHODS, sse_stream, ws_stream};
use crate::auth::Access;
use crate::auth::lease::Lease;
use crate::error::ApiError;
use crate::idempotency::Key;
use crate::metrics::{CloseReason, KeyRefusal};
use crate::protocol::Name;
use crate::publish::{Published, SocketPublisher};
use crate::scope::{ClientAddr, RequestScope, StreamScope};
use crate::source::topic::{OverflowPolicy, Topic};
use crate::state::AppState;

/// The query parameters of a subscription.
pub(crate) const SUBSCRIBE_PARAMS: &[&str] = &["since", "overflow", "token", "tag"];

/// Room for the `{"publish": …, "id": …}` envelope around a publish body
/// in a WebSocket frame.
const PUBLISH_FRAME_OVERHEAD: usize = 1024;

/// The topic routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/topics/{topic}/events", post(publish))
        .route("/sse/topics/{topic}", get(sse_subscribe))
        .route("/ws/topics/{topic}", on(WS_METHODS, ws_subscribe))
}

/// The path segment `param` as a [`Name`].
pub(crate) fn path_name(
    param: &str,
    path: Result<Path<String>, PathRejection>,
) -> Result<Name, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_param(param, e.body_text()))?;
    Name::parse(&raw).map_err(|reason| ApiError::bad_param(param, reason))
}

/// Reads a request body of at most `max` bytes, whole within the body
/// timeout (counted from now, as the handler starts once the head is in).
/// Bounded here, over the whole body: tower-http's body timeout restarts
/// at every frame, so a body trickling a byte at a time would never end.
pub(crate) async fn read_body(
    state: &AppState,
    body: Body,
    headers: &HeaderMap,
    max: usize,
) -> Result<BytesMut, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(ApiError::PayloadTooLarge { max });
    }
    let limit = state.config.body_timeout;
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut buf = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::BadBody("the body could not be read".to_owned()))?;
            if buf.len() + chunk.len() > max {
                return Err(ApiError::PayloadTooLarge { max });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    match tokio::time::timeout(limit, read).await {
        Ok(read) => read,
        Err(_) => {
            state.metrics.connections().closed(CloseReason::BodyTimeout);
            Err(ApiError::BodyTimeout(limit))
        }
    }
}

/// `POST /topics/{topic}/events`: `201 {"seq": N}`, or for a replay of
/// its `Idempotency-Key`, `200 {"seq": N}` with `Idempotent-Replayed:
/// true`.
async fn publish(
    State(state): State<AppState>,
    topic: Result<Path<String>, PathRejection>,
    RequestScope(scope): RequestScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let topic = path_name("topic", topic)?;
    credentials::require_publisher(&state, scope.as_deref(), &headers, topic.as_str())?;
    // Before the body is read: a bad key costs no read.
    let key = idempotency_key(&headers).inspect_err(|_| {
        state
            .metrics
            .topics()
            .key_refusals(KeyRefusal::Invalid)
            .inc();
    })?;
    let body = read_body(&state, body, &headers, state.config.max_publish_bytes).await?;
    let Published { seq, replayed } = state
        .publisher
        .publish(&topic, &body, key)
        .await
        .map_err(|e| ApiError::publish(e, state.config.retry_after))?;
    let answer = Json(json!({ "seq": seq }));
    Ok(if replayed {
        let header = [(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))];
        (StatusCode::OK, header, answer).into_response()
    } else {
        (StatusCode::CREATED, answer).into_response()
    })
}

/// The header that marks a replayed publish's answer.
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request's `Idempotency-Key`, if it has one (at most one).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<Key>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_param(
            "Idempotency-Key",
            "is given more than once",
        ));
    }
    Key::from_header(value.as_bytes())
        .map(Some)
        .map_err(|reason| ApiError::bad_param("Idempotency-Key", reason))
}

/// A subscription request, validated before any stream starts.
struct Subscription {
    topic: Name,
    since: Option<u64>,
    policy: OverflowPolicy,
    /// What let it in.
    access: Access,
}

/// Where a subscription resumes: the `Last-Event-ID` header wins over the
/// `since` parameter, as an `EventSource` reconnecting keeps its first URL.
pub(crate) fn since(
    last_event_id: Option<&HeaderValue>,
    params: &Params<'_>,
) -> Result<Option<u64>, ApiError> {
    match last_event_id {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::bad_param("Last-Event-ID", "is not text"))?;
            parse_u64_in("Last-Event-ID", text, 0..=u64::MAX).map(Some)
        }
        None => params.opt_u64_in("since", 0..=u64::MAX),
    }
}

/// The `overflow` parameter, `default` when absent.
pub(crate) fn overflow(
    params: &Params<'_>,
    default: OverflowPolicy,
) -> Result<OverflowPolicy, ApiError> {
    match params.get("overflow") {
        None => Ok(default),
        Some(name) => OverflowPolicy::parse(name).ok_or_else(|| {
            ApiError::bad_param(
                "overflow",
                format!("{name:?} is not catch-up or disconnect"),
            )
        }),
    }
}

impl Subscription {
    /// Reads the topic, `since` (the `Last-Event-ID` header wins over the
    /// query, as an `EventSource` reconnecting keeps its first URL), the
    /// `overflow` policy, and checks the token (noting a JWT's subject in
    /// `scope`).
    fn parse(
        state: &AppState,
        scope: &StreamScope,
        topic: Result<Path<String>, PathRejection>,
        params: &Params<'_>,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let topic = path_name("topic", topic)?;
        let token = credentials::token(headers, params, state.config.jwt_cookie.as_deref());
        let decision = state.auth.may_read(topic.as_str(), token);
        let access =
            credentials::decide(state, scope.0.as_deref(), decision, "reading this topic")?;
        let since = since(headers.get("last-event-id"), params)?;
        let policy = overflow(params, state.config.overflow)?;
        Ok(Self {
            topic,
            since,
            policy,
            access,
        })
    }

    /// The stream's options: `tag`, the lease of the JWT that let it in,
    /// and the subscription as the admin API lists it (`peer`, its client).
    fn options(
        &self,
        state: &AppState,
        tag: Option<String>,
        peer: Option<ClientAddr>,
    ) -> StreamOptions {
        let lease = self.access.grant().map(|grant| {
            Box::new(Lease::new(
                Arc::clone(&state.auth),
                self.topic.clone(),
                grant,
                state.metrics.auth().clone(),
            ))
        });
        StreamOptions {
            tag,
            lease,
            subscription: Some((self.topic.clone(), peer.map(|ClientAddr(addr)| addr))),
        }
    }

    /// The subscription's source. Without `since` it starts at the head as
    /// of now, before the response: everything published after the client
    /// has its answer is delivered.
    async fn source(self, state: &AppState) -> Result<Topic, ApiError> {
        let since = match self.since {
            Some(since) => since,
            None => state
                .store
                .head(self.topic.as_str())
                .await
                .map_err(|e| state.storage_error(&e))?,
        };
        Ok(state.topic_source(self.topic, since, self.policy))
    }
}

async fn sse_subscribe(
    State(state): State<AppState>,
    scope: StreamScope,
    peer: Option<Extension<ClientAddr>>,
    topic: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), SUBSCRIBE_PARAMS)?;
    let subscription = Subscription::parse(&state, &scope, topic, &params, &headers)?;
    let options = subscription.options(&state, params.tag()?, peer.map(|Extension(p)| p));
    sse_stream(&state, scope, subscription.source(&state).await?, options)
}

async fn ws_subscribe(
    State(state): State<AppState>,
    scope: StreamScope,
    peer: Option<Extension<ClientAddr>>,
    topic: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), SUBSCRIBE_PARAMS)?;
    let subscription = Subscription::parse(&state, &scope, topic, &params, &headers)?;
    let options = subscription.options(&state, params.tag()?, peer.map(|Extension(p)| p));
    // Checked now, refused only when the client publishes (not counted as
    // a refusal of the subscription); a JWT is not verified twice.
    let token = credentials::token(&headers, &params, state.config.jwt_cookie.as_deref());
    let permission =
        state
            .auth
            .may_also_publish(subscription.topic.as_str(), token, &subscription.access);
    let inbox = SocketPublisher::new(
        state.publisher.clone(),
        subscription.topic.clone(),
        permission,
    );
    let max_message = state.config.max_publish_bytes + PUBLISH_FRAME_OVERHEAD;
    let upgrade = upgrade?;
    let source = subscription.source(&state).await?;
    Ok(ws_stream(
        &state,
        scope,
        upgrade,
        source,
        inbox,
        max_message,
        options,
    ))
}
