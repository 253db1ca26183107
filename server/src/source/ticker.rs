//! The synthetic ticker of docs/protocol.md: `count` events (or endless) at `rate`
//! per second (or as fast as the client reads), each carrying a filler
//! string of `size` bytes as its `data`.

use bytes::Bytes;

use super::{Source, paced};
use crate::protocol::Event;
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
            pts: None,
            data: data.clone(),
        });
        paced(queue, self.rate, events).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_a_json_string_of_the_requested_size() {
        let data = Ticker {
            rate: 0,
            count: 1,
            size: 5,
        }
        .filler();
        assert_eq!(&data[..], b"\"xxxxx\"");
        let empty = Ticker {
            rate: 0,
            count: 1,
            size: 0,
        }
        .filler();
        assert_eq!(serde_json::from_slice::<String>(&empty).unwrap(), "");
    }
}
