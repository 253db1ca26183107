//! Retention: deletes topic events beyond the configured count and age, at
//! an interval (first at start), until shutdown.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use crate::protocol::now_micros;
use crate::store::{Retention, Store};

/// Trims `store` to `retention` every `every`, counting deleted events in
/// `deleted`, until `cancel`.
pub async fn run(
    store: Store,
    retention: Retention,
    every: Duration,
    deleted: Counter,
    cancel: CancellationToken,
) {
    let mut ticks = interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // A trim in progress is abandoned at shutdown: each chunk it has
        // deleted is committed already, the rest waits for the next start.
        let trimmed = tokio::select! {
            () = cancel.cancelled() => return,
            trimmed = store.trim(retention, now_micros()) => trimmed,
        };
        match trimmed {
            Ok(0) => {}
            Ok(n) => {
                deleted.inc_by(n);
                tracing::debug!(deleted = n, "retention trimmed topic events");
            }
            Err(e) => tracing::warn!(error = %e, "retention failed; retrying at the next interval"),
        }
    }
}
