//! The dashboard's events, in order, kept for the invocation's life: a
//! page opened late, or one that reconnects (sending `Last-Event-ID`),
//! reads them from where it is, so it never misses one. Subscribers wait
//! for the count to change (a `watch`), so a slow page never holds the
//! runner up and nothing is dropped.
//!
//! Kept whole: about one event a second (the runner keeps every row of a
//! run in memory anyway), a few hundred bytes each.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::event::Event;

/// Every event so far, and the count subscribers wait on.
#[derive(Debug)]
pub(super) struct Feed {
    /// The events, in order; an event's id is its index.
    events: Mutex<Vec<Arc<Event>>>,
    /// How many there are.
    count: watch::Sender<usize>,
}

impl Feed {
    /// An empty feed.
    pub(super) fn new() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
        }
    }

    /// Adds `event`, waking the subscribers.
    pub(super) fn push(&self, event: Event) {
        let count = {
            let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            events.push(Arc::new(event));
            events.len()
        };
        // Unlocked before notifying: a woken subscriber takes the lock.
        self.count.send_replace(count);
    }

    /// The events from id `from` on, with their ids.
    pub(super) fn since(&self, from: usize) -> Vec<(usize, Arc<Event>)> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        (events.iter().enumerate().skip(from))
            .map(|(id, event)| (id, Arc::clone(event)))
            .collect()
    }

    /// A receiver of the count, to wait for more.
    pub(super) fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::event::Kind;

    #[tokio::test]
    async fn a_subscriber_reads_from_where_it_is_and_is_woken_by_the_next() {
        let feed = Feed::new();
        let event = |n: u32| Event::of(Kind::Sample, &n);
        feed.push(event(0));
        feed.push(event(1));
        let mut count = feed.subscribe();
        assert_eq!(*count.borrow_and_update(), 2);
        let late: Vec<usize> = feed.since(1).into_iter().map(|(id, _)| id).collect();
        assert_eq!(late, [1]);
        feed.push(event(2));
        count.changed().await.expect("the feed is alive");
        let next = feed.since(2);
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].0, next[0].1.data.as_str()), (2, "2"));
    }
}
