//! Sources produce events into a connection's queue and know nothing of
//! sockets. Each is a plain value whose [`Source::run`] future fills the
//! queue until the source is done or the stream has gone.

use std::future::Future;

use tokio::time::{Duration, Instant, sleep_until};

use crate::protocol::{Event, Item};
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
/// queue takes them), waiting on a full queue; stops early once the stream
/// has gone. Returning drops `queue`, which ends the stream after the
/// writer has drained it.
pub async fn paced(mut queue: Sender, rate: u64, events: impl Iterator<Item = Event>) {
    let mut pacer = Pacer::new(rate);
    for event in events {
        pacer.next().await;
        if queue.push(Item::Event(event)).await.is_err() {
            return;
        }
    }
}

/// Paces events at a steady rate, open-loop: the n-th event is due at
/// `start + n / rate`, so a late wake-up produces every event that fell due
/// meanwhile and the average rate stays exact.
#[derive(Debug)]
pub struct Pacer {
    /// Events per second; 0 means unpaced.
    rate: u64,
    start: Instant,
    /// Events released so far.
    released: u64,
}

impl Pacer {
    /// A pacer starting now at `rate` events per second (0: unpaced).
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            start: Instant::now(),
            released: 0,
        }
    }

    /// Waits until the next event is due and counts it as released.
    pub async fn next(&mut self) {
        if self.rate > 0 {
            let nanos = u128::from(self.released) * 1_000_000_000 / u128::from(self.rate);
            let due = self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            if Instant::now() < due {
                sleep_until(due).await;
            }
        }
        self.released += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn releases_events_on_schedule() {
        let start = Instant::now();
        let mut pacer = Pacer::new(4);
        for _ in 0..5 {
            pacer.next().await;
        }
        // Events 0..=4 are due at 0, 250, 500, 750 and 1000 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_never_waits() {
        let start = Instant::now();
        let mut pacer = Pacer::new(0);
        for _ in 0..1000 {
            pacer.next().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
