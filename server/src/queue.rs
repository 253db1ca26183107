//! The per-connection bounded queue between a source and the batching writer.
//!
//! This is where backpressure lives. The queue is bounded both in events and
//! in bytes, so a connection's memory is bounded by configuration whatever
//! the client does. A pausable source ([`Sender::push`]) waits while the
//! queue is full; a shared source such as a topic fan-out uses
//! [`Sender::try_push`] and decides itself what an overflow means (catch-up
//! or disconnect). The writer drains whatever is queued in one call
//! ([`Receiver::recv_batch`]), up to its own event and byte limits.
//!
//! Written by hand because no channel crate accounts in bytes (tokio's and
//! async-channel's bounds count items only) and because the writer must drain
//! a byte-limited batch under one lock.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};

use crate::protocol::Event;

/// The bounds of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events held at once (at least 1).
    pub max_events: usize,
    /// Most bytes held at once, by [`Event::cost`]. An empty queue accepts
    /// one event of any size, so a large event cannot wedge a stream.
    pub max_bytes: usize,
}

/// How full a queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Events waiting.
    pub events: usize,
    /// Bytes waiting, by [`Event::cost`].
    pub bytes: usize,
}

/// The receiver went away: the stream has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream's writer has gone")]
pub struct Closed;

/// Why [`Sender::try_push`] gave an event back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryPushError {
    /// The queue is at one of its limits.
    #[error("queue full")]
    Full(Event),
    /// The receiver went away.
    #[error("queue closed")]
    Closed(Event),
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
    events: VecDeque<Event>,
    bytes: usize,
    sender_gone: bool,
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
        self.events.is_empty()
            || (self.events.len() < limits.max_events && self.bytes + cost <= limits.max_bytes)
    }

    /// Queues `event` and returns the writer's waker, to be woken after the
    /// lock is released.
    fn enqueue(&mut self, event: Event) -> Option<Waker> {
        self.bytes += event.cost();
        self.events.push_back(event);
        self.rx_waker.take()
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
    /// Queues `event`, waiting while the queue is full (the pause policy).
    ///
    /// # Errors
    ///
    /// [`Closed`] once the receiver is gone.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops `event` unqueued.
    pub async fn push(&mut self, event: Event) -> Result<(), Closed> {
        let mut event = Some(event);
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.receiver_gone {
                return Poll::Ready(Err(Closed));
            }
            let next = event.take().expect("push polled after completion");
            if state.has_room(self.shared.limits, next.cost()) {
                let waker = state.enqueue(next);
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                Poll::Ready(Ok(()))
            } else {
                event = Some(next);
                register(&mut state.tx_waker, cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    /// Queues `event` if there is room, without waiting.
    ///
    /// # Errors
    ///
    /// Gives the event back as [`TryPushError::Full`] or
    /// [`TryPushError::Closed`].
    pub fn try_push(&self, event: Event) -> Result<(), TryPushError> {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return Err(TryPushError::Closed(event));
        }
        if !state.has_room(self.shared.limits, event.cost()) {
            return Err(TryPushError::Full(event));
        }
        let waker = state.enqueue(event);
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
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
    /// Waits until at least one event is queued, then moves queued events
    /// into `out`: at most `max_events`, and no more than `max_bytes` (by
    /// [`Event::cost`]) unless a single event is larger.
    ///
    /// Returns `false` once the sender is gone and the queue is empty: the
    /// source has finished and everything it produced has been taken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: events are moved only in the poll that completes.
    pub async fn recv_batch(
        &mut self,
        out: &mut Vec<Event>,
        max_events: usize,
        max_bytes: usize,
    ) -> bool {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.events.is_empty() {
                if state.sender_gone {
                    return Poll::Ready(false);
                }
                register(&mut state.rx_waker, cx.waker());
                return Poll::Pending;
            }
            let (mut taken, mut bytes) = (0, 0);
            while let Some(front) = state.events.front() {
                let cost = front.cost();
                if taken == max_events || (taken > 0 && bytes + cost > max_bytes) {
                    break;
                }
                out.extend(state.events.pop_front());
                taken += 1;
                bytes += cost;
            }
            state.bytes -= bytes;
            let waker = state.tx_waker.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            Poll::Ready(true)
        })
        .await
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
        state.events = VecDeque::new();
        state.bytes = 0;
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
            events: state.events.len(),
            bytes: state.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::task::Context;

    use bytes::Bytes;

    use super::*;
    use crate::protocol::ENVELOPE_ALLOWANCE;

    fn event(seq: u64, size: usize) -> Event {
        Event {
            seq,
            data: Bytes::from(vec![b'x'; size]),
        }
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
        assert!(rx.recv_batch(&mut out, 3, usize::MAX).await);
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        out.clear();
        assert!(rx.recv_batch(&mut out, 3, usize::MAX).await);
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
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
        assert!(rx.recv_batch(&mut out, 10, max_bytes).await);
        assert_eq!(out.len(), 2);
        out.clear();
        assert!(rx.recv_batch(&mut out, 10, max_bytes).await);
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
            Err(TryPushError::Full(e)) if e.seq == 5
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
        assert!(rx.recv_batch(&mut out, 1, usize::MAX).await);
        assert_eq!(blocked.await, Ok(()));
        assert_eq!(rx.probe().depth().unwrap().events, 4);
    }

    #[tokio::test]
    async fn receiver_sees_the_end_only_after_draining() {
        let (tx, mut rx) = channel(LIMITS);
        tx.try_push(event(1, 1)).unwrap();
        drop(tx);
        let mut out = Vec::new();
        assert!(rx.recv_batch(&mut out, 10, usize::MAX).await);
        assert!(!rx.recv_batch(&mut out, 10, usize::MAX).await);
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
