//! Wires a source to a queue, a batching writer and a transport, and
//! answers the request: an SSE response whose body runs the session, or a
//! WebSocket upgrade whose task runs it. Also the generic handler pair that
//! serves any source built from query parameters on both transports.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use futures_util::FutureExt;

use super::params::Params;
use crate::auth::lease::Lease;
use crate::config::Config;
use crate::connections::StreamGuard;
use crate::disconnect::Disconnect;
use crate::error::ApiError;
use crate::metrics::TransportKind;
use crate::protocol::{Framing, Name};
use crate::queue;
use crate::scope::StreamScope;
use crate::session::{self, Inbox, Refuse};
use crate::source::Source;
use crate::state::AppState;
use crate::transport::sse::{self, SseTransport};
use crate::transport::ws::{self, WsTransport};
use crate::writer::Writer;

/// Read buffer of a server-side WebSocket. Clients send pongs, control
/// frames and at most publish frames; tungstenite's 128 KiB default would be
/// reserved (and zeroed) per connection. An idle stream keeps this much
/// (it was 1 KiB: most of an idle WebSocket's heap after its task, when
/// what a subscriber sends is a pong of a few bytes); a larger frame makes
/// tungstenite reserve its declared length, read at most this much a read.
const WS_READ_BUFFER: usize = 256;

/// Largest message a client may send on a stream that takes none: any
/// message closes such a stream (1003), this only bounds what is read first.
const NO_MESSAGES: usize = 4096;

/// What a stream carries besides its source: its tag, the lease of the
/// JWT that opened it, and for a topic subscription its topic and client.
#[derive(Debug, Default)]
pub(crate) struct StreamOptions {
    /// The `tag` of `GET /connections`.
    pub tag: Option<String>,
    /// Ends the stream with its token, if a JWT opened it.
    pub lease: Option<Box<Lease>>,
    /// A topic subscription's topic and client, as the admin API lists
    /// them.
    pub subscription: Option<(Name, Option<SocketAddr>)>,
}

impl From<Option<String>> for StreamOptions {
    fn from(tag: Option<String>) -> Self {
        Self {
            tag,
            ..Self::default()
        }
    }
}

/// A source whose parameters come from the query string.
pub(crate) trait FromQuery: Source + Sized {
    /// Every query parameter the endpoint takes, `tag` included.
    const PARAMS: &'static [&'static str];

    /// Builds the source, or names the parameter that is wrong.
    fn from_query(params: &Params<'_>, config: &Config) -> Result<Self, ApiError>;
}

/// `GET /sse/{name}` and `GET /ws/{name}` serving `S`.
pub(crate) fn routes<S: FromQuery>(name: &str) -> Router<AppState> {
    Router::new()
        .route(&format!("/sse/{name}"), get(sse_handler::<S>))
        .route(&format!("/ws/{name}"), on(WS_METHODS, ws_handler::<S>))
}

/// The methods of a WebSocket handshake: `GET` on HTTP/1.1, `CONNECT`
/// (RFC 8441's extended CONNECT) on HTTP/2.
pub(crate) const WS_METHODS: MethodFilter = MethodFilter::GET.or(MethodFilter::CONNECT);

/// The source the query asks for, and the stream's tag.
fn source_from<S: FromQuery>(
    state: &AppState,
    query: Option<&str>,
) -> Result<(S, Option<String>), ApiError> {
    let params = Params::parse(query, S::PARAMS)?;
    Ok((S::from_query(&params, &state.config)?, params.tag()?))
}

async fn sse_handler<S: FromQuery>(
    State(state): State<AppState>,
    scope: StreamScope,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (source, tag): (S, _) = source_from(&state, query.as_deref())?;
    sse_stream(&state, scope, source, tag.into())
}

async fn ws_handler<S: FromQuery>(
    State(state): State<AppState>,
    scope: StreamScope,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (source, tag): (S, _) = source_from(&state, query.as_deref())?;
    Ok(ws_send_only(&state, scope, upgrade?, source, tag))
}

/// Admits a stream on `transport`, holding its request's `scope`, noting
/// its subscription if it has one.
fn admit(
    state: &AppState,
    scope: StreamScope,
    transport: TransportKind,
    options: &mut StreamOptions,
) -> Result<StreamGuard, ApiError> {
    let mut guard = state
        .connections
        .admit(transport, options.tag.take())
        .map_err(|limit| state.over_capacity(limit))?;
    guard.adopt(scope.0);
    if let Some((topic, peer)) = options.subscription.take() {
        guard.subscribes(&topic, peer);
    }
    Ok(guard)
}

/// The queue between source and writer, watched by the stream's guard.
fn pipeline(state: &AppState, guard: &StreamGuard, framing: Framing) -> (queue::Sender, Writer) {
    let (tx, rx) = queue::channel(state.config.queue);
    guard.watch_queue(rx.probe());
    (tx, Writer::new(rx, framing, state.config.batch))
}

/// Streams `source` as Server-Sent Events.
pub(crate) fn sse_stream<S: Source>(
    state: &AppState,
    scope: StreamScope,
    source: S,
    mut options: StreamOptions,
) -> Result<Response, ApiError> {
    let guard = admit(state, scope, TransportKind::Sse, &mut options)?;
    let (tx, writer) = pipeline(state, &guard, SseTransport::FRAMING);
    let mut session = state.session(TransportKind::Sse, guard.batch_counts());
    session.lease = options.lease;
    let body = sse::body(move |transport| {
        session::run(source.run(tx), writer, transport, Refuse, session)
            .map(move |reason| guard.finish(reason))
    });
    let headers = [
        (CONTENT_TYPE, "text/event-stream"),
        (CACHE_CONTROL, "no-cache"),
    ];
    // Tells reverse proxies such as nginx not to buffer the stream.
    Ok((headers, [("x-accel-buffering", "no")], body).into_response())
}

/// Streams `source` over the WebSocket that `upgrade` opens, on a stream
/// that takes no messages (any closes it with 1003).
pub(crate) fn ws_send_only<S: Source>(
    state: &AppState,
    scope: StreamScope,
    upgrade: WebSocketUpgrade,
    source: S,
    tag: Option<String>,
) -> Response {
    ws_stream(
        state,
        scope,
        upgrade,
        source,
        Refuse,
        NO_MESSAGES,
        tag.into(),
    )
}

/// `upgrade` with a server-side stream's buffers, taking messages of at
/// most `max_message` bytes.
fn configure(state: &AppState, upgrade: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .write_buffer_size(state.config.batch.max_bytes)
}

/// Sheds a WebSocket stream over a limit: the socket `upgrade` opens is
/// closed at once with 1013 (try again later).
pub(crate) fn ws_over_capacity(state: &AppState, upgrade: WebSocketUpgrade) -> Response {
    let shutdown = state.shutdown.clone();
    configure(state, upgrade, NO_MESSAGES)
        .on_upgrade(move |socket| shutdown.track(ws::reject(socket, Disconnect::OverCapacity)))
}

/// Streams `source` over the WebSocket that `upgrade` opens, with the
/// client's messages (at most `max_message` bytes) going to `inbox`; over
/// the connection limit, the socket is opened and closed at once with 1013.
pub(crate) fn ws_stream<S: Source, I: Inbox + 'static>(
    state: &AppState,
    scope: StreamScope,
    upgrade: WebSocketUpgrade,
    source: S,
    inbox: I,
    max_message: usize,
    mut options: StreamOptions,
) -> Response {
    let Ok(guard) = admit(state, scope, TransportKind::Ws, &mut options) else {
        return ws_over_capacity(state, upgrade);
    };
    let upgrade = configure(state, upgrade, max_message);
    let shutdown = state.shutdown.clone();
    let (tx, writer) = pipeline(state, &guard, WsTransport::FRAMING);
    let mut session = state.session(TransportKind::Ws, guard.batch_counts());
    session.lease = options.lease;
    let pong_timeout = state.config.pong_timeout;
    // Boxed until the upgrade, so that the upgrade's task is small while it
    // waits for hyper to hand the connection over.
    let parts = Box::new((source, tx, writer, inbox, session, guard));
    upgrade.on_upgrade(move |socket| {
        let (source, tx, writer, inbox, session, guard) = *parts;
        let transport = WsTransport::new(socket, pong_timeout);
        // A task of its own: axum's upgrade task keeps its own parts (the
        // socket's configuration, this callback, the subprotocol: 150 B)
        // for as long as the future it awaits, and the session would be
        // laid out beside them. That task ends here.
        tokio::spawn(
            shutdown.track(
                session::run(source.run(tx), writer, transport, inbox, session)
                    .map(move |reason| guard.finish(reason)),
            ),
        );
        std::future::ready(())
    })
}
