//! The batching writer: drains whatever a connection's queue holds, up to a
//! maximum count and byte size, and encodes it into one buffer for one flush.
//!
//! Under light load a batch is one event and latency is minimal; under heavy
//! load, or behind a slow reader, batches grow and the number of writes falls
//! instead of memory growing. `ts` is stamped here, once per batch: it is the
//! moment the events are handed to the writer. The writer knows nothing of
//! sockets; a [`Transport`](crate::transport::Transport) delivers its batches.

use std::future::{Future, poll_fn};

use bytes::{Bytes, BytesMut};

use crate::disconnect::Disconnect;
use crate::protocol::{Framing, Item, now_micros};
use crate::queue::{Received, Receiver};

/// How large one batch may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most events per batch (at least 1; 1 disables batching).
    pub max_events: usize,
    /// Most bytes per batch, by [`Item::cost`]; a single larger event still
    /// goes out alone.
    pub max_bytes: usize,
}

/// One encoded batch, ready for a transport.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Every event of the batch, framed and concatenated.
    pub bytes: Bytes,
    /// End offset in `bytes` of each event's frame, in order.
    pub frame_ends: &'a [usize],
}

impl Batch<'_> {
    /// Number of events in the batch.
    pub fn events(&self) -> usize {
        self.frame_ends.len()
    }

    /// Each event's frame, as a slice of `bytes` (no copy).
    pub fn frames(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut start = 0;
        self.frame_ends.iter().map(move |&end| {
            let frame = self.bytes.slice(start..end);
            start = end;
            frame
        })
    }
}

/// Drains one connection's queue into encoded batches.
#[derive(Debug)]
pub struct Writer {
    queue: Receiver,
    framing: Framing,
    limits: BatchLimits,
    /// Items taken from the queue for the batch being encoded (reused).
    taken: Vec<Item>,
    /// The encode buffer; its allocation is reused once a transport has
    /// released the previous batch.
    buf: BytesMut,
    frame_ends: Vec<usize>,
}

impl Writer {
    /// A writer that drains `queue` into batches framed for `framing`.
    pub fn new(queue: Receiver, framing: Framing, limits: BatchLimits) -> Self {
        Self {
            queue,
            framing,
            limits,
            taken: Vec::new(),
            buf: BytesMut::new(),
            frame_ends: Vec::new(),
        }
    }

    /// Waits for queued items and encodes as many as the limits allow.
    ///
    /// # Errors
    ///
    /// The stream is over: [`Disconnect::Complete`] once the source has
    /// finished and the queue is drained, or the reason the source aborted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: items leave the queue only in the poll that completes,
    /// and are encoded before this returns.
    pub async fn next_batch(&mut self) -> Result<Batch<'_>, Disconnect> {
        self.ready().await?;
        Ok(self.batch())
    }

    /// Waits until queued items are taken for a batch, which
    /// [`Writer::batch`] then encodes. The future holds one pointer: a
    /// stream waits on it for most of its life.
    ///
    /// # Errors
    ///
    /// As [`Writer::next_batch`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: items leave the queue only in the poll that completes.
    pub fn ready(&mut self) -> impl Future<Output = Result<(), Disconnect>> + Send + '_ {
        poll_fn(|cx| {
            let limits = self.limits;
            self.queue
                .poll_recv_batch(cx, &mut self.taken, limits.max_events, limits.max_bytes)
                .map(|received| match received {
                    Received::Items => Ok(()),
                    Received::End(reason) => Err(reason),
                })
        })
    }

    /// Encodes the items [`Writer::ready`] took (none: an empty batch).
    pub fn batch(&mut self) -> Batch<'_> {
        let ts = now_micros();
        let estimate: usize = self.taken.iter().map(Item::cost).sum();
        self.buf.reserve(estimate);
        self.frame_ends.clear();
        for item in self.taken.drain(..) {
            self.framing.encode(&item, ts, &mut self.buf);
            self.frame_ends.push(self.buf.len());
        }
        Batch {
            bytes: self.buf.split().freeze(),
            frame_ends: &self.frame_ends,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Event, Stamp, json_data};
    use crate::queue::{self, Limits};

    fn filled(n: u64) -> (queue::Sender, Receiver) {
        let (tx, rx) = queue::channel(Limits {
            max_events: 1024,
            max_bytes: usize::MAX,
        });
        for seq in 1..=n {
            tx.try_push(Item::Event(Event {
                seq,
                stamp: Stamp::None,
                data: json_data("x"),
            }))
            .unwrap();
        }
        (tx, rx)
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_events: 16,
        max_bytes: usize::MAX,
    };

    #[tokio::test]
    async fn batches_everything_queued_up_to_the_limit() {
        let (_tx, rx) = filled(20);
        let mut writer = Writer::new(rx, Framing::WebSocket, LIMITS);
        let first = writer.next_batch().await.unwrap();
        assert_eq!(first.events(), 16);
        let seqs: Vec<u64> = first
            .frames()
            .map(|f| {
                serde_json::from_slice::<serde_json::Value>(&f).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
        assert_eq!(writer.next_batch().await.unwrap().events(), 4);
    }

    #[tokio::test]
    async fn sse_batch_is_one_chunk_of_consecutive_events_with_one_ts() {
        let (_tx, rx) = filled(3);
        let mut writer = Writer::new(rx, Framing::Sse, LIMITS);
        let batch = writer.next_batch().await.unwrap();
        let text = std::str::from_utf8(&batch.bytes).unwrap();
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 3);
        let ts: Vec<&str> = events
            .iter()
            .map(|e| {
                e.split("\"ts\":")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
            })
            .collect();
        assert!(ts.windows(2).all(|w| w[0] == w[1]));
        assert!(events[2].starts_with("id: 3\ndata: {\"seq\":3,"));
    }

    #[tokio::test]
    async fn ends_after_the_source_is_gone_and_the_queue_is_drained() {
        let (tx, rx) = filled(2);
        drop(tx);
        let mut writer = Writer::new(rx, Framing::Sse, LIMITS);
        assert_eq!(writer.next_batch().await.unwrap().events(), 2);
        assert_eq!(writer.next_batch().await.unwrap_err(), Disconnect::Complete);
    }
}
