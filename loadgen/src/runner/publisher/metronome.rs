//! The publisher's clock: waits until an instant to the operating system's
//! timer precision (µs), not tokio's (ms).
//!
//! Tokio's timers fire on 1 ms ticks, rounded up, and the runtime's driver
//! parks for whole milliseconds: a publish due at `t` went out 1–2 ms after
//! `t`, and since every publish figure counts from its intended send time,
//! that lateness landed in `publish_ms` and `end_to_end_us` as if it were
//! the server's. A thread of the metronome's own sleeps with the OS's
//! high-resolution timer and wakes the waiting task at the instant.

use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

/// A wake-up asked for: the instant, and whom to wake.
type Wake = (Instant, oneshot::Sender<()>);

/// Wakes tasks at instants, one after the other, from a thread of its own
/// (which ends when the metronome is dropped).
#[derive(Debug)]
pub struct Metronome {
    wakes: mpsc::Sender<Wake>,
}

impl Metronome {
    /// Starts the metronome's thread. Should the OS refuse a thread, it
    /// waits with tokio's timer instead (and says so).
    pub fn start() -> Self {
        let (wakes, asked) = mpsc::channel::<Wake>();
        let started = std::thread::Builder::new()
            .name("publish-clock".to_owned())
            .spawn(move || {
                // The kernel may wake a sleeper up to its timer slack late
                // (50 µs by default), to batch wake-ups: not this one.
                // SAFETY: prctl has no memory-safety preconditions; this
                // option only sets the calling thread's slack.
                unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
                for (at, wake) in asked {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    // A waiter that gave up (the run ended) is no one to wake.
                    let _ = wake.send(());
                }
            });
        if let Err(e) = started {
            tracing::warn!("publishes paced on tokio's 1 ms timer: no clock thread: {e}");
        }
        Self { wakes }
    }

    /// Resolves at `at`, or at once if `at` has passed. Wake-ups are served
    /// in the order asked: one waiter at a time is the intended use.
    pub async fn until(&self, at: Instant) {
        let (wake, woken) = oneshot::channel();
        if self.wakes.send((at, wake)).is_err() || woken.await.is_err() {
            // No clock thread (it never ends first): tokio's timer then.
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wakes_no_sooner_than_asked() {
        let metronome = Metronome::start();
        let start = Instant::now();
        for step in 1..=3u32 {
            let at = start + Duration::from_micros(300) * step;
            metronome.until(at).await;
            assert!(Instant::now() >= at, "woken before its instant");
        }
    }
}
