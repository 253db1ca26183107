//! Sources produce events into a connection's queue and know nothing of
//! sockets. Each is a plain value whose [`Source::run`] future fills the
//! queue until the source is done or the stream has gone.
//!
//! The ticker and the token stream are paced ([`Pacer`]): each of their
//! events carries `sched`, when the pacer meant it to go out, so that a
//! stalled server shows as lateness against that schedule and not only as
//! fewer events per second.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

use tokio::time::{Duration, Instant, sleep_until};

use crate::protocol::{Event, Item, Stamp, micros, now_micros};
use crate::queue::Sender;

pub mod replay;
pub mod ticker;
pub mod tokens;
pub mod topic;

/// Something that produces one stream's events.
pub trait Source: Send + 'static {
    /// Produces events into `queue` until done (then drops it, which ends
    /// the stream after the writer has drained it) or until the queue closes.
    fn run(self, queue: Sender) -> impl Future<Output = ()> + Send + 'static;
}

/// Queues `events` one by one at `rate` per second (0: as fast as the
/// queue takes them), each stamped with its `sched`, waiting on a full
/// queue; stops early once the stream has gone. `stall` blocks the task
/// now and then, for tests (`--inject-pacer-stall`). Returning drops
/// `queue`, which ends the stream after the writer has drained it.
pub async fn paced(
    mut queue: Sender,
    rate: u64,
    stall: Option<Stall>,
    events: impl Iterator<Item = Event>,
) {
    let mut pacer = Pacer::new(rate, stall);
    for mut event in events {
        event.stamp = pacer.next().await.map_or(Stamp::None, Stamp::Sched);
        if queue.push(Item::Event(event)).await.is_err() {
            return;
        }
    }
}

/// For testing measurements only (`--inject-pacer-stall EVERY:DURATION`):
/// after every `every` events released, the pacer blocks the thread that
/// runs it for `duration`, as a request handler that holds a runtime
/// worker does. The task cannot be polled meanwhile: neither the source
/// nor the writer beside it in the same task moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Events released between two stalls (at least 1).
    pub every: u64,
    /// How long each stall blocks (more than zero).
    pub duration: Duration,
}

impl FromStr for Stall {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let form = || format!("{s:?} is not EVERY:DURATION (such as 500:300ms)");
        let (every, duration) = s.split_once(':').ok_or_else(form)?;
        let every: u64 = every.parse().map_err(|_| form())?;
        let duration = humantime::parse_duration(duration)
            .map_err(|e| format!("{s:?}: {duration:?} is not a duration: {e}"))?;
        if every == 0 || duration.is_zero() {
            return Err(format!(
                "{s:?}: EVERY and DURATION must both be more than zero"
            ));
        }
        Ok(Self { every, duration })
    }
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.every,
            humantime::format_duration(self.duration)
        )
    }
}

/// Paces events at a steady rate, open-loop: the n-th event (from 0) is due
/// at `start + n / rate`, so a late wake-up produces every event that fell
/// due meanwhile and the average rate stays exact. That due time, on the
/// wall clock of `ts`, is the event's `sched`.
#[derive(Debug)]
pub struct Pacer {
    /// Events per second; 0 means unpaced.
    rate: u64,
    start: Instant,
    /// `start` on the wall clock, µs since the Unix epoch.
    start_us: u64,
    /// Events released so far.
    released: u64,
    /// The test-only stall, if injected.
    stall: Option<Stall>,
}

impl Pacer {
    /// A pacer starting now at `rate` events per second (0: unpaced),
    /// stalling as `stall` says.
    pub fn new(rate: u64, stall: Option<Stall>) -> Self {
        Self {
            rate,
            start: Instant::now(),
            start_us: now_micros(),
            released: 0,
            stall,
        }
    }

    /// Waits until the next event is due and counts it as released; its
    /// `sched` (µs since the Unix epoch), or `None` when unpaced: "as fast
    /// as the client reads" has no schedule.
    pub async fn next(&mut self) -> Option<u64> {
        if let Some(stall) = self.stall
            && self.released > 0
            && self.released.is_multiple_of(stall.every)
        {
            // Blocking on purpose: this is the stall under test.
            std::thread::sleep(stall.duration);
        }
        let sched = if self.rate > 0 {
            let offset = self.offset();
            let due = self.start + offset;
            if Instant::now() < due {
                sleep_until(due).await;
            }
            Some(self.start_us.saturating_add(micros(offset)))
        } else {
            None
        };
        self.released += 1;
        sched
    }

    /// When the next event is due, after `start` (the rate is not 0).
    fn offset(&self) -> Duration {
        let nanos = u128::from(self.released) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn releases_events_on_schedule() {
        let start = Instant::now();
        let mut pacer = Pacer::new(4, None);
        let mut scheds = Vec::new();
        for _ in 0..5 {
            scheds.push(pacer.next().await.expect("paced"));
        }
        // Events 0..=4 are due at 0, 250, 500, 750 and 1000 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        let steps: Vec<u64> = scheds.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            steps, [250_000; 4],
            "sched follows the schedule: {scheds:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_never_waits_and_has_no_schedule() {
        let start = Instant::now();
        let mut pacer = Pacer::new(0, None);
        for _ in 0..1000 {
            assert_eq!(pacer.next().await, None);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_stall_blocks_after_every_n_events_and_the_schedule_holds() {
        let stall = Stall {
            every: 2,
            duration: Duration::from_millis(30),
        };
        let mut pacer = Pacer::new(1_000_000, Some(stall));
        let start = std::time::Instant::now();
        let mut scheds = Vec::new();
        for _ in 0..5 {
            scheds.push(pacer.next().await.expect("paced"));
        }
        // Stalls after events 2 and 4; the schedule ignores them.
        assert!(start.elapsed() >= Duration::from_millis(60));
        let steps: Vec<u64> = scheds.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(steps, [1; 4]);
    }

    #[test]
    fn stalls_are_every_colon_duration() {
        let stall: Stall = "500:300ms".parse().unwrap();
        assert_eq!(
            stall,
            Stall {
                every: 500,
                duration: Duration::from_millis(300)
            }
        );
        assert_eq!(stall.to_string().parse::<Stall>(), Ok(stall));
        for bad in ["500", "x:1s", "0:1s", "5:0s", "5:soon", ""] {
            assert!(bad.parse::<Stall>().is_err(), "{bad}");
        }
    }
}
