//! The admin API, for operators: `GET /admin/topics` (paged),
//! `GET /admin/topics/{topic}` (with its subscribers on this node),
//! `DELETE /admin/topics/{topic}` and
//! `POST /admin/topics/{topic}/trim?before=SEQ`.
//!
//! It exists only with an admin token (`--admin-token LABEL=TOKEN`):
//! without one every path here is the router's 404. Every call, refused
//! ones included, is logged (target `streamgauge::admin`) with the token's
//! label, never the token.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::credentials;
use super::params::Params;
use super::topics::path_name;
use crate::error::ApiError;
use crate::protocol::{MAX_NAME_LEN, Name};
use crate::scope::RequestScope;
use crate::state::AppState;
use crate::store::{MAX_PAGE, Prefix, TopicFigures};

/// Topics per page unless `limit` says otherwise.
const DEFAULT_PAGE: u64 = 100;

/// The admin routes: none without an admin token.
pub fn router(state: &AppState) -> Router<AppState> {
    if !state.auth.has_admin_api() {
        return Router::new();
    }
    Router::new()
        .route("/admin/topics", get(list))
        .route("/admin/topics/{topic}", get(show).delete(delete))
        .route("/admin/topics/{topic}/trim", post(trim))
        .route_layer(middleware::from_fn_with_state(state.clone(), audited))
}

/// Lets only an admin token through, and logs every call with its label
/// (or, refused, with the reason).
async fn audited(
    State(state): State<AppState>,
    RequestScope(scope): RequestScope,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let label = match credentials::require_admin(&state, scope.as_deref(), request.headers()) {
        Ok(label) => label,
        Err(refused) => {
            let status = refused.status_code().as_u16();
            tracing::warn!(target: "streamgauge::admin", %method, %path, status, "admin call refused");
            return refused.into_response();
        }
    };
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::info!(target: "streamgauge::admin", admin = %label, %method, %path, status, "admin call");
    response
}

/// A topic's figures, with its live subscribers on this node.
fn topic_json(figures: &TopicFigures, subscribers: u64) -> Value {
    json!({
        "name": figures.name,
        "head": figures.head,
        "oldest": figures.oldest,
        "events": figures.events,
        "bytes": figures.bytes,
        "last_publish_us": figures.last_publish,
        "subscribers": subscribers,
    })
}

/// `GET /admin/topics?after=NAME&limit=N`: a page of topics in name order;
/// `next` is the `after` of the next page, `null` on the last.
async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let params = Params::parse(query.as_deref(), &["after", "limit"])?;
    let limit = params.u64_in("limit", DEFAULT_PAGE, 1..=u64::from(MAX_PAGE))? as u32;
    let after = params.get("after").unwrap_or_default();
    if after.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_param(
            "after",
            "is longer than any topic name",
        ));
    }
    let topics = state
        .store
        .list_topics(after, limit)
        .await
        .map_err(|e| state.storage_error(&e))?;
    let counts: HashMap<String, u64> = state.connections.subscriber_counts();
    let next = (topics.len() == limit as usize)
        .then(|| topics.last().map(|t| t.name.clone()))
        .flatten();
    let topics: Vec<Value> = topics
        .iter()
        .map(|t| topic_json(t, counts.get(&t.name).copied().unwrap_or(0)))
        .collect();
    Ok(Json(json!({ "topics": topics, "next": next })))
}

/// The figures of `topic`, or 404.
async fn figures_of(state: &AppState, topic: &Name) -> Result<TopicFigures, ApiError> {
    state
        .store
        .topic_figures(topic.as_str())
        .await
        .map_err(|e| state.storage_error(&e))?
        .ok_or(ApiError::NoSuchTopic)
}

/// `GET /admin/topics/{topic}`: its figures and its subscribers on this
/// node (transport, client, queue, batches).
async fn show(
    State(state): State<AppState>,
    topic: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let topic = path_name("topic", topic)?;
    let figures = figures_of(&state, &topic).await?;
    let subscribers = state.connections.subscribers(topic.as_str());
    let mut answer = topic_json(&figures, subscribers.len() as u64);
    answer["subscriber_list"] = json!(subscribers);
    Ok(Json(answer))
}

/// `DELETE /admin/topics/{topic}`: its events and head go; its live
/// subscribers here get a `deleted` gap notice and are closed.
async fn delete(
    State(state): State<AppState>,
    topic: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let topic = path_name("topic", topic)?;
    let head = state
        .store
        .remove_topic(topic.as_str())
        .await
        .map_err(|e| state.storage_error(&e))?
        .ok_or(ApiError::NoSuchTopic)?;
    let subscribers = state.connections.subscriber_count(topic.as_str());
    state.hub.delete(topic.as_str(), head);
    state.metrics.topics().topics_deleted.inc();
    Ok(Json(json!({
        "deleted": topic.as_str(),
        "head": head,
        "subscribers_closed": subscribers,
    })))
}

/// `POST /admin/topics/{topic}/trim?before=SEQ`: deletes its events below
/// `SEQ`; subscribers that had not read them get a `retention` gap notice.
async fn trim(
    State(state): State<AppState>,
    topic: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let topic = path_name("topic", topic)?;
    let before =
        Params::parse(query.as_deref(), &["before"])?.required_u64_in("before", 1..=u64::MAX)?;
    // A topic that does not exist has nothing to trim: the figures below
    // answer 404 for it.
    let trimmed = state
        .store
        .trim_topic(
            topic.as_str(),
            Prefix {
                through: before - 1,
                before_pts: 0,
            },
        )
        .await
        .map_err(|e| state.storage_error(&e))?;
    let figures = figures_of(&state, &topic).await?;
    let subscribers = state.connections.subscriber_count(topic.as_str());
    let mut answer = topic_json(&figures, subscribers);
    answer["trimmed"] = json!(trimmed);
    Ok((StatusCode::OK, Json(answer)))
}
