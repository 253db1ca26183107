//! The per-connection bounded queue between a source and the batching writer.
//!
//! This is where backpressure lives. The queue is bounded both in events and
//! in bytes, so a connection's memory is bounded by configuration whatever
//! the client does. A pausable source ([`Sender::push`]) waits while the
//! queue is full; a shared source such as a topic fan-out uses
//! [`Sender::try_push`] and decides itself what an overflow means (catch-up
//! or disconnect). The writer drains whatever is queued in one call
//! ([`Receiver::recv_batch`]), up to its own event and byte limits. A source
//! may also end the stream at once with a reason ([`Sender::abort`]),
//! dropping whatever is still queued.
//!
//! Written by hand because no channel crate accounts in bytes (tokio's and
//! async-channel's bounds count items only) and because the writer must drain
//! a byte-limited batch under one lock.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use crate::disconnect::Disconnect;
use crate::protocol::Item;

/// The bounds of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events held at once (at least 1).
    pub max_events: usize,
    /// Most bytes held at once, by [`Item::cost`]. An empty queue accepts
    /// one event of any size, so a large event cannot wedge a stream.
    pub max_bytes: usize,
}

/// How full a queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Events waiting.
    pub events: usize,
    /// Bytes waiting, by [`Item::cost`].
    pub bytes: usize,
}

/// The receiver went away: the stream has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream's writer has gone")]
pub struct Closed;

/// Why [`Sender::try_push`] gave an item back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryPushError {
    /// The queue is at one of its limits.
    #[error("queue full")]
    Full(Item),
    /// The receiver went away.
    #[error("queue closed")]
    Closed(Item),
}

/// What [`Receiver::recv_batch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// At least one item was moved out.
    Items,
    /// The stream is over: [`Disconnect::Complete`] once the sender is gone
    /// and everything it queued has been taken, or the reason the sender
    /// gave to [`Sender::abort`].
    End(Disconnect),
}

/// Creates a queue with the given limits.
pub fn channel(limits: Limits) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        limits,
        state: Mutex::new(State::default()),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    bytes: usize,
    sender_gone: bool,
    /// Set by [`Sender::abort`]: the stream ends now, for this reason.
    aborted: Option<Disconnect>,
    /// Why the stream ends once what is queued is written (default:
    /// complete).
    finished: Option<Disconnect>,
    receiver_gone: bool,
    /// The writer, waiting for an event.
    rx_waker: Option<Waker>,
    /// The pausable source, waiting for room.
    tx_waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn has_room(&self, limits: Limits, cost: usize) -> bool {
        self.items.is_empty()
            || (self.items.len() < limits.max_events && self.bytes + cost <= limits.max_bytes)
    }

    /// Queues `item` and returns the writer's waker, to be woken after the
    /// lock is released.
    fn enqueue(&mut self, item: Item) -> Option<Waker> {
        self.bytes += item.cost();
        self.items.push_back(item);
        self.rx_waker.take()
    }

    fn clear(&mut self) {
        self.items = VecDeque::new();
        self.bytes = 0;
    }
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(current) if current.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// The producing end, held by the connection's source.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues `item`, waiting while the queue is full (the pause policy).
    ///
    /// # Errors
    ///
    /// [`Closed`] once the receiver is gone.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops `item` unqueued.
    pub async fn push(&mut self, item: Item) -> Result<(), Closed> {
        let mut item = Some(item);
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.receiver_gone {
                return Poll::Ready(Err(Closed));
            }
            let next = item.take().expect("push polled after completion");
            if state.has_room(self.shared.limits, next.cost()) {
                let waker = state.enqueue(next);
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                Poll::Ready(Ok(()))
            } else {
                item = Some(next);
                register(&mut state.tx_waker, cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    /// Queues `item` if there is room, without waiting.
    ///
    /// # Errors
    ///
    /// Gives the item back as [`TryPushError::Full`] or
    /// [`TryPushError::Closed`].
    pub fn try_push(&self, item: Item) -> Result<(), TryPushError> {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return Err(TryPushError::Closed(item));
        }
        if !state.has_room(self.shared.limits, item.cost()) {
            return Err(TryPushError::Full(item));
        }
        let waker = state.enqueue(item);
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Ends the stream for `reason` once what is queued is written.
    pub fn finish(self, reason: Disconnect) {
        self.shared.lock().finished = Some(reason);
        // Dropping `self` then marks the sender gone and wakes the writer.
    }

    /// Ends the stream now for `reason`: what is still queued is dropped and
    /// the writer's next batch is the end.
    pub fn abort(self, reason: Disconnect) {
        let mut state = self.shared.lock();
        state.aborted = Some(reason);
        state.clear();
        // Dropping `self` then marks the sender gone and wakes the writer.
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sender_gone = true;
        let waker = state.rx_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The consuming end, held by the batching writer.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// Waits until at least one item is queued, then moves queued items
    /// into `out`: at most `max_events`, and no more than `max_bytes` (by
    /// [`Item::cost`]) unless a single item is larger.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: items are moved only in the poll that completes.
    pub async fn recv_batch(
        &mut self,
        out: &mut Vec<Item>,
        max_events: usize,
        max_bytes: usize,
    ) -> Received {
        poll_fn(|cx| self.poll_recv_batch(cx, out, max_events, max_bytes)).await
    }

    /// [`Receiver::recv_batch`] as a poll, for a caller that keeps no
    /// future of its own: items are moved into `out` only when it returns
    /// `Ready`; `Pending` registers `cx`'s waker.
    pub fn poll_recv_batch(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Item>,
        max_events: usize,
        max_bytes: usize,
    ) -> Poll<Received> {
        let mut state = self.shared.lock();
        if let Some(reason) = state.aborted {
            return Poll::Ready(Received::End(reason));
        }
        if state.items.is_empty() {
            if state.sender_gone {
                let reason = state.finished.unwrap_or(Disconnect::Complete);
                return Poll::Ready(Received::End(reason));
            }
            register(&mut state.rx_waker, cx.waker());
            return Poll::Pending;
        }
        let (mut taken, mut bytes) = (0, 0);
        while let Some(front) = state.items.front() {
            let cost = front.cost();
            if taken == max_events || (taken > 0 && bytes + cost > max_bytes) {
                break;
            }
            out.extend(state.items.pop_front());
            taken += 1;
            bytes += cost;
        }
        state.bytes -= bytes;
        let waker = state.tx_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Poll::Ready(Received::Items)
    }

    /// A handle that reads this queue's depth without keeping it alive.
    pub fn probe(&self) -> Probe {
        Probe(Arc::downgrade(&self.shared))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        state.clear();
        let waker = state.tx_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Reads a queue's depth from outside the connection (for `/metrics`).
#[derive(Debug, Clone)]
pub struct Probe(Weak<Shared>);

impl Probe {
    /// The queue's current depth, or `None` once its writer is gone.
    pub fn depth(&self) -> Option<Depth> {
        let shared = self.0.upgrade()?;
        let state = shared.lock();
        if state.receiver_gone {
            return None;
        }
        Some(Depth {
            events: state.items.len(),
            bytes: state.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{ENVELOPE_ALLOWANCE, Event, Stamp};

    fn event(seq: u64, size: usize) -> Item {
        Item::Event(Event {
            seq,
            stamp: Stamp::None,
            data: Bytes::from(vec![b'x'; size]),
        })
    }

    fn seqs(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .map(|item| match item {
                Item::Event(e) => e.seq,
                Item::Gap(_) => 0,
            })
            .collect()
    }

    const LIMITS: Limits = Limits {
        max_events: 4,
        max_bytes: 4 * (ENVELOPE_ALLOWANCE + 10),
    };

    #[tokio::test]
    async fn drains_in_order_up_to_the_batch_limit() {
        let (tx, mut rx) = channel(LIMITS);
        for seq in 1..=4 {
            tx.try_push(event(seq, 10)).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(
            rx.recv_batch(&mut out, 3, usize::MAX).await,
            Received::Items
        );
        assert_eq!(seqs(&out), [1, 2, 3]);
        out.clear();
        assert_eq!(
            rx.recv_batch(&mut out, 3, usize::MAX).await,
            Received::Items
        );
        assert_eq!(seqs(&out), [4]);
    }

    #[tokio::test]
    async fn byte_limit_splits_batches_but_never_starves_a_large_event() {
        let (tx, mut rx) = channel(Limits {
            max_events: 10,
            max_bytes: 10_000,
        });
        tx.try_push(event(1, 100)).unwrap();
        tx.try_push(event(2, 100)).unwrap();
        tx.try_push(event(3, 5000)).unwrap();
        let mut out = Vec::new();
        let max_bytes = 2 * (100 + ENVELOPE_ALLOWANCE);
        assert_eq!(
            rx.recv_batch(&mut out, 10, max_bytes).await,
            Received::Items
        );
        assert_eq!(out.len(), 2);
        out.clear();
        assert_eq!(
            rx.recv_batch(&mut out, 10, max_bytes).await,
            Received::Items
        );
        assert_eq!(
            out.len(),
            1,
            "an event over the byte limit still goes alone"
        );
    }

    #[test]
    fn full_queue_refuses_by_count_and_by_bytes() {
        let (tx, _rx) = channel(LIMITS);
        for seq in 1..=4 {
            tx.try_push(event(seq, 10)).unwrap();
        }
        assert!(matches!(
            tx.try_push(event(5, 10)),
            Err(TryPushError::Full(Item::Event(e))) if e.seq == 5
        ));

        let (tx, _rx) = channel(Limits {
            max_events: 100,
            max_bytes: 1000,
        });
        tx.try_push(event(1, 900)).unwrap();
        assert!(matches!(
            tx.try_push(event(2, 100)),
            Err(TryPushError::Full(_))
        ));
    }

    #[test]
    fn empty_queue_accepts_one_oversized_event() {
        let (tx, rx) = channel(LIMITS);
        tx.try_push(event(1, 1 << 20)).unwrap();
        assert_eq!(rx.probe().depth().unwrap().events, 1);
        assert!(matches!(
            tx.try_push(event(2, 1)),
            Err(TryPushError::Full(_))
        ));
    }

    #[tokio::test]
    async fn push_waits_for_room_and_resumes_after_a_drain() {
        let (mut tx, mut rx) = channel(LIMITS);
        for seq in 1..=4 {
            tx.push(event(seq, 10)).await.unwrap();
        }
        let mut blocked = Box::pin(tx.push(event(5, 10)));
        let waker = std::task::Waker::noop();
        assert!(
            blocked
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        );
        let mut out = Vec::new();
        assert_eq!(
            rx.recv_batch(&mut out, 1, usize::MAX).await,
            Received::Items
        );
        assert_eq!(blocked.await, Ok(()));
        assert_eq!(rx.probe().depth().unwrap().events, 4);
    }

    #[tokio::test]
    async fn receiver_sees_the_end_only_after_draining() {
        let (tx, mut rx) = channel(LIMITS);
        tx.try_push(event(1, 1)).unwrap();
        drop(tx);
        let mut out = Vec::new();
        assert_eq!(
            rx.recv_batch(&mut out, 10, usize::MAX).await,
            Received::Items
        );
        assert_eq!(
            rx.recv_batch(&mut out, 10, usize::MAX).await,
            Received::End(Disconnect::Complete)
        );
    }

    #[tokio::test]
    async fn abort_ends_the_stream_at_once_with_its_reason() {
        let (tx, mut rx) = channel(LIMITS);
        tx.try_push(event(1, 1)).unwrap();
        let probe = rx.probe();
        tx.abort(Disconnect::SlowConsumer);
        assert_eq!(probe.depth().unwrap().events, 0, "queued items are dropped");
        let mut out = Vec::new();
        assert_eq!(
            rx.recv_batch(&mut out, 10, usize::MAX).await,
            Received::End(Disconnect::SlowConsumer)
        );
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn sender_sees_a_dropped_receiver_and_memory_is_released() {
        let (mut tx, rx) = channel(LIMITS);
        tx.try_push(event(1, 1)).unwrap();
        let probe = rx.probe();
        drop(rx);
        assert_eq!(probe.depth(), None);
        assert_eq!(tx.push(event(2, 1)).await, Err(Closed));
        assert!(matches!(
            tx.try_push(event(3, 1)),
            Err(TryPushError::Closed(_))
        ));
    }

    #[test]
    fn probe_reports_events_and_bytes() {
        let (tx, rx) = channel(LIMITS);
        tx.try_push(event(1, 10)).unwrap();
        tx.try_push(event(2, 10)).unwrap();
        assert_eq!(
            rx.probe().depth(),
            Some(Depth {
                events: 2,
                bytes: 2 * (10 + ENVELOPE_ALLOWANCE)
            })
        );
    }
}
