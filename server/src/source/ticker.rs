//! The synthetic ticker of docs/protocol.md: `count` events (or endless) at `rate`
//! per second (or as fast as the client reads), each carrying a filler
//! string of `size` bytes as its `data`.

use bytes::Bytes;

use super::{Source, Stall, paced};
use crate::protocol::{Event, Stamp};
use crate::queue::Sender;

/// Ticker parameters, validated by the HTTP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticker {
    /// Events per second; 0 means as fast as the client reads.
    pub rate: u64,
    /// Events to send before the stream ends; 0 means no end.
    pub count: u64,
    /// Length in bytes of the filler string in `data`.
    pub size: usize,
    /// The pacer's test-only stall (`--inject-pacer-stall`), if injected.
    pub stall: Option<Stall>,
}

impl Ticker {
    /// The `data` of every event: a JSON string of `size` `x` characters,
    /// built once per stream and shared by its events.
    fn filler(&self) -> Bytes {
        let mut json = Vec::with_capacity(self.size + 2);
        json.push(b'"');
        json.resize(self.size + 1, b'x');
        json.push(b'"');
        Bytes::from(json)
    }
}

impl Source for Ticker {
    async fn run(self, queue: Sender) {
        let data = self.filler();
        let last = if self.count == 0 {
            u64::MAX
        } else {
            self.count
        };
        let events = (1..=last).map(|seq| Event {
            seq,
            stamp: Stamp::None,
            data: data.clone(),
        });
        paced(queue, self.rate, self.stall, events).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Item;
    use crate::queue::{self, Limits, Received};

    #[test]
    fn filler_is_a_json_string_of_the_requested_size() {
        let data = Ticker {
            rate: 0,
            count: 1,
            size: 5,
            stall: None,
        }
        .filler();
        assert_eq!(&data[..], b"\"xxxxx\"");
        let empty = Ticker {
            rate: 0,
            count: 1,
            size: 0,
            stall: None,
        }
        .filler();
        assert_eq!(serde_json::from_slice::<String>(&empty).unwrap(), "");
    }

    /// The `sched` of every event a ticker at `rate` queues, `count` of
    /// them.
    async fn scheds(rate: u64, count: u64) -> Vec<Option<u64>> {
        let (tx, mut rx) = queue::channel(Limits {
            max_events: 100,
            max_bytes: 1 << 20,
        });
        let ticker = Ticker {
            rate,
            count,
            size: 1,
            stall: None,
        };
        tokio::spawn(ticker.run(tx)).await.unwrap();
        let mut out = Vec::new();
        while rx.recv_batch(&mut out, 100, usize::MAX).await == Received::Items {}
        out.iter()
            .map(|item| match item {
                Item::Event(e) => e.stamp.sched(),
                Item::Gap(_) => panic!("a ticker has no gaps"),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn paced_events_carry_sched_a_period_apart_and_unpaced_ones_none() {
        let paced: Vec<u64> = scheds(50, 5)
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
        let steps: Vec<u64> = paced.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(steps, [1_000_000 / 50; 4], "{paced:?}");
        assert_eq!(scheds(0, 5).await, [None; 5]);
    }
}
