//! The database's health as the server last saw it: up, or down with the
//! reason. A background probe runs a trivial query every
//! [`PROBE_INTERVAL`] (at once after a failed commit, and every
//! [`RETRY_INTERVAL`] while down), each bounded by [`PROBE_TIMEOUT`] so
//! that an unreachable database is known in seconds, not after the pool's
//! acquire timeout.
//!
//! While it is down, `/readyz` answers `503` saying why, and publishes are
//! answered `503` with `Retry-After` at once instead of waiting for the
//! pool (nothing is stored, and nothing is acknowledged: never a false
//! `201`); the probe alone says when it is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often the database is probed while up: an outage with no publish
/// to reveal it is seen within this (plus [`PROBE_TIMEOUT`]).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How often it is probed while down: how soon after it is back the
/// server serves again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// The longest one probe may take before the database counts as
/// unreachable: well under the pool's 5 s acquire timeout, well over a
/// query's time on a healthy database.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The database's health; shared by the probe, the publisher and `/readyz`.
#[derive(Debug)]
pub struct Health {
    down: AtomicBool,
    reason: Mutex<String>,
    /// Wakes the probe at once (after a failed commit).
    wake: Notify,
    /// `streamgauge_database_up`.
    gauge: Gauge,
    /// Publishes refused while it is down.
    refused: Counter,
}

impl Health {
    /// Up, reporting in `gauge`, counting in `refused` the publishes
    /// refused while it is down.
    pub fn new(gauge: Gauge, refused: Counter) -> Self {
        gauge.set(1);
        Self {
            down: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            wake: Notify::new(),
            gauge,
            refused,
        }
    }

    /// Whether the database is known to be down; if so, counts `n`
    /// publishes refused for it.
    pub fn refuses(&self, n: u64) -> bool {
        let down = self.is_down();
        if down {
            self.refused.inc_by(n);
        }
        down
    }

    /// Why the database is down, or `None` while it is up.
    pub fn down(&self) -> Option<String> {
        self.down.load(Ordering::Acquire).then(|| {
            self.reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    /// Whether the database is known to be down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// A store operation failed with `reason`: down until the probe (woken
    /// now) sees it answer.
    pub fn failed(&self, reason: &dyn std::fmt::Display) {
        self.set_down(reason);
        self.wake.notify_one();
    }

    fn set_down(&self, reason: &dyn std::fmt::Display) {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = reason.to_string();
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(%reason, "the database is unreachable: publishes get 503 until it answers");
            self.gauge.set(0);
        }
    }

    fn set_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("the database answers again");
            self.gauge.set(1);
        }
    }
}

/// Probes `store` for `health` until `token` is cancelled.
pub async fn probe(store: Store, health: std::sync::Arc<Health>, token: CancellationToken) {
    loop {
        let wait = if health.is_down() {
            RETRY_INTERVAL
        } else {
            PROBE_INTERVAL
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = health.wake.notified() => {}
        }
        match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => health.set_up(),
            Ok(Err(e)) => health.set_down(&e),
            Err(_) => health.set_down(&format_args!(
                "no answer within {} ms",
                PROBE_TIMEOUT.as_millis()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_marks_it_down_with_its_reason_until_it_is_seen_up() {
        let (gauge, refused) = (Gauge::default(), Counter::default());
        let health = Health::new(gauge.clone(), refused.clone());
        assert_eq!((health.down(), gauge.get()), (None, 1));
        health.failed(&"connection refused");
        assert_eq!(health.down().as_deref(), Some("connection refused"));
        assert_eq!(gauge.get(), 0);
        assert!(health.refuses(3));
        assert_eq!(refused.get(), 3);
        health.set_up();
        assert!(!health.refuses(1));
        assert_eq!((health.down(), gauge.get()), (None, 1));
    }
}
