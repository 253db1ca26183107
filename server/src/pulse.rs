//! The pulse every stream shares: the keep-alive tick and the shutdown.
//!
//! One task per server ticks a `watch` channel at the keep-alive interval
//! and, once the shutdown starts, says so on the same channel. A stream
//! waits on its own receiver (a pointer and a version, no allocation)
//! instead of holding a timer of its own (a boxed `Sleep` in tokio's wheel)
//! and a waiter on the cancellation token: that was 112 B of heap and about
//! 100 B of future per idle stream (docs/performance.md, "Heap per idle
//! stream").
//!
//! Ticks coalesce: one a stream was too busy to see is seen at its next
//! wait, so a stream gets at most one keep-alive per interval and never
//! goes longer than an interval (plus its current write) without one. The
//! first comes within an interval of the stream's start, at the server's
//! tick rather than an interval after the stream's own start. This module
//! carries no data and knows nothing of transports.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;

/// What a stream's wait on the pulse found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The keep-alive interval has come round.
    KeepAlive,
    /// The server is shutting down.
    Shutdown,
}

/// A receiver of the shared pulse. The one kept in a transport's settings
/// is only followed ([`Pulse::follow`]); each stream waits on its own.
#[derive(Debug, Clone)]
pub struct Pulse {
    /// `true` once the server shuts down; every tick bumps the version.
    rx: watch::Receiver<bool>,
}

impl Pulse {
    /// Starts the tick, every `interval` until `cancel` is cancelled; its
    /// task then says so to every stream and ends.
    pub fn start(interval: Duration, cancel: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(tick(tx, interval, cancel));
        Self { rx }
    }

    /// A stream's own wait, from now: ticks before it are not seen.
    pub fn follow(&self) -> Self {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        Self { rx }
    }

    /// Waits for the next tick, or the shutdown (at once if it has begun),
    /// and gives the pulse back for the next wait. It owns the pulse, so a
    /// stream keeps one wait for the whole interval rather than making one
    /// (and locking the channel's waiter list to add and remove it) each
    /// time it wakes.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the pulse; a stream keeps it until it completes.
    pub async fn beat(mut self) -> (Beat, Self) {
        if *self.rx.borrow() {
            return (Beat::Shutdown, self);
        }
        let beat = match self.rx.changed().await {
            Ok(()) if !*self.rx.borrow_and_update() => Beat::KeepAlive,
            // The shutdown, or the tick's task gone with the runtime.
            _ => Beat::Shutdown,
        };
        (beat, self)
    }
}

/// The pulse's task: a tick every `interval`, then the shutdown.
async fn tick(tx: watch::Sender<bool>, interval: Duration, cancel: CancellationToken) {
    let mut ticks = interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticks.tick() => tx.send_modify(|_| {}),
        }
    }
    tx.send_replace(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_follower_sees_each_interval_then_the_shutdown() {
        let cancel = CancellationToken::new();
        let pulse = Pulse::start(Duration::from_secs(5), cancel.clone());
        let mut stream = pulse.follow();
        let start = Instant::now();
        for n in 1..=2 {
            let (beat, again) = stream.beat().await;
            assert_eq!(beat, Beat::KeepAlive);
            assert_eq!(start.elapsed(), Duration::from_secs(5 * n));
            stream = again;
        }
        cancel.cancel();
        assert_eq!(stream.beat().await.0, Beat::Shutdown);
        assert_eq!(pulse.follow().beat().await.0, Beat::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_missed_while_busy_come_as_one() {
        let pulse = Pulse::start(Duration::from_secs(1), CancellationToken::new());
        let stream = pulse.follow();
        // The tick's task starts, then three ticks pass unseen.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(3500)).await;
        let start = Instant::now();
        let (beat, stream) = stream.beat().await;
        assert_eq!(beat, Beat::KeepAlive);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The next, an interval after the late one.
        assert_eq!(stream.beat().await.0, Beat::KeepAlive);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
