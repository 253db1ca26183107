//! Entry points for the fuzz targets in `fuzz/` (built with the `fuzzing`
//! feature only): each runs the server's own parsing of one kind of
//! untrusted input, with no socket and no store, so that libFuzzer can call
//! it millions of times. The targets assert the invariants; this module only
//! opens the crate-private code to them.

use axum::http::HeaderValue;

use crate::config::Config;
use crate::direct;
use crate::disconnect::Disconnect;
use crate::error::ApiError;
use crate::http::params::Params;
use crate::http::stream::FromQuery;
use crate::http::topics;
use crate::protocol::Name;
use crate::publish::PublishFrame;
use crate::source::ticker::Ticker;
use crate::source::tokens::Tokens;
use crate::source::topic::OverflowPolicy;

/// What a WebSocket subscriber's text frame `message` becomes: the body
/// that would be stored and fanned out (validated, on one line), or the
/// reason the stream is closed: `SocketPublisher`'s own steps, up to the
/// store.
///
/// # Errors
///
/// The close reason, for a frame that breaks the rules.
pub fn publish_frame(message: &[u8], max_body: usize) -> Result<String, Disconnect> {
    PublishFrame::decode(message)?.body(max_body)
}

/// What the hand-written HTTP/1.1 path ([`crate::direct`]) makes of
/// `bytes`, the first read of a connection: a stream request it serves
/// itself, a head it refuses, or anything else, which hyper is given.
pub fn first_head(bytes: &[u8]) -> direct::Head {
    direct::parse(bytes)
}

/// Every stream endpoint's reading of one request, each part independently.
#[derive(Debug)]
pub struct StreamRequest {
    /// `GET /{sse,ws}/ticker`.
    pub ticker: Result<Ticker, ApiError>,
    /// `GET /{sse,ws}/tokens`.
    pub tokens: Result<Tokens, ApiError>,
    /// The `{topic}` path segment of the topic endpoints.
    pub topic: Result<Name, String>,
    /// Where a topic subscription resumes.
    pub since: Result<Option<u64>, ApiError>,
    /// A topic subscription's overflow policy.
    pub overflow: Result<OverflowPolicy, ApiError>,
    /// The stream's `tag`.
    pub tag: Result<Option<String>, ApiError>,
}

/// Reads a request for a stream: the `topic` path segment (already
/// percent-decoded, as axum's `Path` gives it), the raw `query` (without
/// `?`) and an optional `Last-Event-ID` header, under `config`.
///
/// # Errors
///
/// When the query string itself is refused (a repeated parameter, or one no
/// stream endpoint takes), before any endpoint reads it.
pub fn stream_request(
    topic: &str,
    query: &str,
    last_event_id: Option<&HeaderValue>,
    config: &Config,
) -> Result<StreamRequest, ApiError> {
    let known = [Ticker::PARAMS, Tokens::PARAMS, topics::SUBSCRIBE_PARAMS].concat();
    let params = Params::parse(Some(query), &known)?;
    Ok(StreamRequest {
        ticker: Ticker::from_query(&params, config),
        tokens: Tokens::from_query(&params, config),
        topic: Name::parse(topic),
        since: topics::since(last_event_id, &params),
        overflow: topics::overflow(&params, config.overflow),
        tag: params.tag(),
    })
}
