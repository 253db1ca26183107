//! Handing memory back after a burst of connections (`--malloc-trim`).
//! glibc's malloc returns only the top of each arena to the system on its
//! own: the pages a burst freed below memory still in use stay resident,
//! so the server's RSS stays near the burst's peak long after its
//! connections closed. Once a second a background task reads the open
//! HTTP connections and the most open at once since its last look (kept
//! by two relaxed atomics a connection, so a burst shorter than a second
//! is seen); when they have fallen to at most half of their highest count
//! since the last trim, by at least [`MIN_FALL`], it calls
//! `malloc_trim(0)` on a blocking thread, which hands the free pages of
//! every arena back. No request or event pays anything, and a steady load
//! never trims. With another C library, nothing is trimmed.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use crate::metrics::ConnectionMetrics;

/// How often the open connections are read.
const EVERY: Duration = Duration::from_secs(1);

/// The fewest connections a fall must count to end a burst.
pub const MIN_FALL: u64 = 64;

/// Tells the end of a burst from the open connections and their peaks,
/// read one after the other.
#[derive(Debug, Default)]
pub struct BurstEnd {
    /// The most connections open since the last end.
    peak: u64,
}

impl BurstEnd {
    /// Takes the connections open now and the most open at once since the
    /// last look; `true` when they have fallen to at most half of their
    /// peak since the last `true`, by at least [`MIN_FALL`]: a burst has
    /// ended. The peak then starts again from `open`.
    pub fn ended(&mut self, open: u64, peak: u64) -> bool {
        self.peak = self.peak.max(peak).max(open);
        let ended = self.peak - open >= MIN_FALL && open <= self.peak / 2;
        if ended {
            self.peak = open;
        }
        ended
    }
}

/// Trims after each burst of `connections`, counting trims in `trims`,
/// until `cancel`.
pub async fn run(connections: ConnectionMetrics, trims: Counter, cancel: CancellationToken) {
    let mut ticks = interval(EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut burst = BurstEnd::default();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (open, peak) = connections.open_and_peak();
        if !burst.ended(open, peak) {
            continue;
        }
        let started = Instant::now();
        match tokio::task::spawn_blocking(trim).await {
            Ok(released) => {
                trims.inc();
                tracing::debug!(
                    released,
                    took = ?started.elapsed(),
                    "a burst of connections ended: freed memory handed back"
                );
            }
            Err(e) => tracing::warn!(error = %e, "malloc_trim did not run"),
        }
    }
}

/// Hands the free pages of every arena back to the system; whether any
/// were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim has no preconditions; it takes each arena's lock
    // itself.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Another C library than glibc: nothing to trim.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_ends_when_connections_fall_to_half_their_peak() {
        let mut burst = BurstEnd::default();
        // Rising, then falling short of half: no end.
        for open in [0, 100, 4_000, 3_900, 2_001] {
            assert!(!burst.ended(open, open), "{open}");
        }
        assert!(burst.ended(2_000, 2_000));
        // The peak starts again from there: another fall to half ends.
        assert!(!burst.ended(1_500, 1_500));
        assert!(burst.ended(1_000, 1_000));
        assert!(!burst.ended(1_000, 1_000));
        // A fall to half of too few connections is no burst: 100 to 40.
        let mut small = BurstEnd::default();
        assert!(!small.ended(100, 100));
        assert!(!small.ended(40, 40));
        // 100 to 36 falls by MIN_FALL.
        assert!(small.ended(36, 36));
        // A burst that came and went between two looks: seen by its peak.
        let mut brief = BurstEnd::default();
        assert!(!brief.ended(1, 1));
        assert!(brief.ended(1, 500));
    }

    #[test]
    fn a_trim_runs_where_there_is_nothing_to_give_back() {
        // Whatever it released, it returns: no precondition, no panic.
        let _ = trim();
    }
}
