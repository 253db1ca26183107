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
//! wait, so a stream gets at most one keep-alive per interval (a transport
//! may skip the tick after a stream wrote something, as SSE does: then
//! up to two intervals pass between keep-alives). The
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

    /// A tick or the shutdown this stream has not seen yet, if any,
    /// without waiting: one atomic load when there is none, so a busy
    /// stream looks at every turn and waits on the pulse only when it has
    /// nothing else to do.
    pub fn seen(&mut self) -> Option<Beat> {
        match self.rx.has_changed() {
            Ok(false) => None,
            Ok(true) if !*self.rx.borrow_and_update() => Some(Beat::KeepAlive),
            // The shutdown, or the tick's task gone with the runtime.
            _ => Some(Beat::Shutdown),
        }
    }

    /// Waits for the next tick, or the shutdown (at once if it has begun).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a tick is marked seen only in the poll that returns it.
    pub async fn beat(&mut self) -> Beat {
        if *self.rx.borrow() {
            return Beat::Shutdown;
        }
        match self.rx.changed().await {
            Ok(()) if !*self.rx.borrow_and_update() => Beat::KeepAlive,
            _ => Beat::Shutdown,
        }
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
            assert_eq!(stream.beat().await, Beat::KeepAlive);
            assert_eq!(start.elapsed(), Duration::from_secs(5 * n));
        }
        assert_eq!(stream.seen(), None);
        cancel.cancel();
        assert_eq!(stream.beat().await, Beat::Shutdown);
        assert_eq!(pulse.follow().beat().await, Beat::Shutdown);
        assert_eq!(pulse.follow().seen(), Some(Beat::Shutdown));
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_missed_while_busy_come_as_one() {
        let pulse = Pulse::start(Duration::from_secs(1), CancellationToken::new());
        let mut stream = pulse.follow();
        // The tick's task starts, then three ticks pass unseen.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(3500)).await;
        tokio::task::yield_now().await;
        assert_eq!(stream.seen(), Some(Beat::KeepAlive));
        assert_eq!(stream.seen(), None);
        // The next, an interval after the late one.
        let start = Instant::now();
        assert_eq!(stream.beat().await, Beat::KeepAlive);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
