//! The accept loop and what each connection is served by: an SSE request
//! whose head arrived whole goes to [`direct`](crate::direct), which streams
//! it without hyper's per-connection buffers; everything else (WebSocket
//! upgrades, publishes, operations, a head that came in pieces) goes to
//! hyper, as `axum::serve` would hand it.
//!
//! Graceful shutdown: once the token is cancelled no connection is
//! accepted, hyper connections finish the request in flight and close, SSE
//! streams end with their sessions (which watch the same token), and
//! [`serve`] returns when every connection has closed.

use std::future::Future;
use std::pin::pin;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::direct::{self, Sniffed};
use crate::listener::{DeadlineIo, Listener};

/// Serves `router` on every connection `listener` accepts until `token` is
/// cancelled, then waits for the connections open to close.
pub async fn serve(mut listener: Listener, router: Router, token: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (io, _addr) = tokio::select! {
            biased;
            () = token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        connections.spawn(connection(io, router.clone(), token.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection to its end.
///
/// An `async` block rather than an `async fn`, which would keep a second
/// copy of `io` for the connection's whole life.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps a second copy of its arguments"
)]
fn connection(
    mut io: DeadlineIo,
    router: Router,
    token: CancellationToken,
) -> impl Future<Output = ()> + Send {
    async move {
        match direct::sniff(&mut io).await {
            Sniffed::Stream(request) => direct::serve(&mut io, router, request).await,
            // Boxed: hyper's connection state would otherwise size every
            // connection's task, the streams served directly included.
            Sniffed::Other => Box::pin(with_hyper(io, router, token)).await,
            Sniffed::Gone => {}
        }
    }
}

/// Serves `io` with hyper's HTTP/1 connection, upgrades included; on
/// shutdown, the request in flight is finished and the connection closed.
async fn with_hyper(io: DeadlineIo, router: Router, token: CancellationToken) {
    let service = TowerToHyperService::new(router);
    let mut conn = pin!(
        http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
    );
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::trace!("connection ended: {e}");
    }
}
