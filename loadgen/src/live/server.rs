//! The dashboard's HTTP server: `GET /` the page (one self-contained HTML
//! file, `page.html`), `GET /events` the feed as SSE (each event's id its
//! index, so a page that reconnects resumes after `Last-Event-ID`), and
//! `GET /metrics` the figures in the Prometheus text format. It serves
//! until stopped; every stream then ends, so the server's graceful
//! shutdown completes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures_util::Stream;
use futures_util::stream::{self, StreamExt as _};
use streamgauge_server::metrics::Exposition;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::feed::Feed;
use super::figures::Figures;

/// The page: inline style and script, nothing fetched from elsewhere.
const PAGE: &str = include_str!("page.html");

/// How long a stop waits for the open pages' connections to close.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// What the handlers read.
#[derive(Debug, Clone)]
struct Shared {
    feed: Arc<Feed>,
    figures: Figures,
    /// Ends every stream when the server stops.
    stop: CancellationToken,
}

/// The dashboard's server, running until [`Server::stop`].
#[derive(Debug)]
pub(super) struct Server {
    /// Where it listens.
    pub(super) addr: SocketAddr,
    /// Stops it (and ends its streams).
    stop: CancellationToken,
    /// The serving task.
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` and serves `feed` and `figures` there.
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub(super) async fn start(
        addr: SocketAddr,
        feed: Arc<Feed>,
        figures: Figures,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("--dashboard: binding {addr}"))?;
        let addr = listener.local_addr().context("--dashboard: its address")?;
        let stop = CancellationToken::new();
        let shared = Shared {
            feed,
            figures,
            stop: stop.clone(),
        };
        let app = Router::new()
            .route("/", get(page))
            .route("/events", get(events))
            .route("/metrics", get(metrics))
            .with_state(shared);
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
        });
        Ok(Self { addr, stop, task })
    }

    /// Stops serving: ends the streams and waits (a bounded time) for the
    /// connections to close.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        match tokio::time::timeout(STOP_WITHIN, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("the dashboard's server failed: {e}"),
            Ok(Err(e)) => tracing::warn!("the dashboard's server task failed: {e}"),
            Err(_) => {
                tracing::warn!("the dashboard's connections were still open after {STOP_WITHIN:?}")
            }
        }
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, Exposition::Prometheus.content_type())],
        shared.figures.render(),
    )
}

async fn events(
    State(shared): State<Shared>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let from = resume_after(&headers);
    Sse::new(stream_from(shared, from)).keep_alive(KeepAlive::default())
}

/// The first event a page wants: the one after its `Last-Event-ID`, or
/// the first.
fn resume_after(headers: &HeaderMap) -> usize {
    (headers.get("last-event-id"))
        .and_then(|value| value.to_str().ok())
        .and_then(|id| id.trim().parse::<usize>().ok())
        .map_or(0, |id| id + 1)
}

/// The feed's events from id `from` on, then each as it comes, until the
/// server stops.
fn stream_from(shared: Shared, from: usize) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let count = shared.feed.subscribe();
    stream::unfold(
        (shared, count, from),
        |(shared, mut count, next)| async move {
            loop {
                let ready = shared.feed.since(next);
                if !ready.is_empty() {
                    let after = next + ready.len();
                    let events = ready.into_iter().map(|(id, event)| {
                        Ok(SseEvent::default()
                            .id(id.to_string())
                            .event(event.kind.as_str())
                            .data(&event.data))
                    });
                    let batch = stream::iter(events.collect::<Vec<_>>());
                    return Some((batch, (shared, count, after)));
                }
                tokio::select! {
                    () = shared.stop.cancelled() => return None,
                    changed = count.changed() => changed.ok()?,
                }
            }
        },
    )
    .flatten()
}
