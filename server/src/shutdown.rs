//! Graceful shutdown: one [`CancellationToken`] that every stream watches,
//! and one [`TaskTracker`] for the tasks that outlive their HTTP request
//! (upgraded WebSockets, which hyper's graceful shutdown does not see).
//!
//! Order: [`Signals`] (or a test) cancels the token; the listener stops
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

/// The signals that stop the server (Ctrl-C, SIGTERM), listened to from
/// the moment this value exists: install it before announcing readiness,
/// or a signal sent right after the announcement would kill the process.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    ///
    /// # Errors
    ///
    /// If the runtime cannot install signal handlers.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the next Ctrl-C or SIGTERM.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUP, listened to from the moment this value exists (install it
/// before announcing readiness: the signal's default action ends the
/// process). Each one asks for the TLS certificate to be reloaded.
#[derive(Debug)]
pub struct Reloads {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Reloads {
    /// Installs the handler.
    ///
    /// # Errors
    ///
    /// If the runtime cannot install signal handlers.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves `true` at the next SIGHUP (`false` if there will be none).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal that arrives meanwhile is kept for the next
    /// call.
    pub async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        {
            self.hangup.recv().await.is_some()
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}
