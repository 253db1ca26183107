//! Graceful shutdown: one [`CancellationToken`] that every stream watches,
//! and one [`TaskTracker`] for the tasks that outlive their HTTP request
//! (upgraded WebSockets, which hyper's graceful shutdown does not see).
//!
//! Order: [`signal`] (or a test) cancels the token; the listener stops
//! accepting and `/readyz` answers 503; every stream ends on the token (SSE
//! ends its body, WebSocket sends close 1001); the server waits for all of
//! it under a deadline.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TrackedFuture;

/// The server's shutdown handle; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the shutdown has started (the server is draining).
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The token streams watch; cancelled when the shutdown starts.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Makes `task` one that the shutdown waits for.
    pub fn track<F: Future>(&self, task: F) -> TrackedFuture<F> {
        self.tracker.track_future(task)
    }

    /// Waits until every tracked task has finished (call after triggering).
    pub async fn tracked_tasks_done(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
///
/// # Panics
///
/// If the signal handlers cannot be installed (only at process start, when
/// the runtime has no signal driver).
pub async fn signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c()
            .await
            .expect("installing the Ctrl-C handler");
    };
    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
