//! How the runner's tasks stop: cancelled, then given a bounded time to
//! flush their last measurements, then aborted.

use std::time::Duration;

use tokio::task::JoinSet;

/// How long clients and publishers may take to stop at the end.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until every task of `tasks` (stopping: cancelled) has ended, at
/// most [`STOP_TIMEOUT`]; aborts those still running then.
pub(super) async fn join_within(tasks: &mut JoinSet<()>, what: &str) {
    let stopped = tokio::time::timeout(STOP_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("some {what} did not stop within {STOP_TIMEOUT:?}");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
