//! Retention: deletes topic events beyond the configured count and age, and
//! publishes' idempotency keys older than their window, at an interval
//! (first at start), until shutdown.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use crate::protocol::now_micros;
use crate::store::{self, Retention, Store};

/// Idempotency keys expired beside the events.
#[derive(Debug, Clone)]
pub struct KeyExpiry {
    /// How long a key is honoured; older ones are deleted.
    pub window: Duration,
    /// Counts the keys deleted.
    pub expired: Counter,
}

/// Trims `store` to `retention` every `every`, counting deleted events in
/// `deleted`, and deletes the keys `keys` says have expired, until
/// `cancel`.
pub async fn run(
    store: Store,
    (retention, keys): (Retention, KeyExpiry),
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
        // A pass in progress is abandoned at shutdown: each chunk it has
        // deleted is committed already, the rest waits for the next start.
        let passes = async {
            let trimmed = store.trim(retention, now_micros()).await;
            count(trimmed, &deleted, "topic events");
            let expired = store.expire_keys(keys.window, now_micros()).await;
            count(expired, &keys.expired, "idempotency keys");
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = passes => {}
        }
    }
}

/// Counts what a pass over `what` deleted in `counter`, or logs why it
/// failed.
fn count(deleted: Result<u64, store::Error>, counter: &Counter, what: &str) {
    match deleted {
        Ok(0) => {}
        Ok(n) => {
            counter.inc_by(n);
            tracing::debug!(deleted = n, "retention deleted {what}");
        }
        Err(e) => {
            tracing::warn!(error = %e, "retention of {what} failed; retrying at the next interval");
        }
    }
}
