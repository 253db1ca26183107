//! Topic fan-out to live subscribers.
//!
//! A subscriber that has caught up with the store joins its topic here,
//! handing over its queue sender; from then on each published event is
//! pushed straight into its queue, without waiting (`try_push`), so a slow
//! subscriber never slows the publisher or the others. The hub never drops
//! an event silently: a member whose queue is full, or that would receive an
//! event out of sequence, is handed back to its source with its queue and
//! the last `seq` it received, and the source catches up from the store.
//!
//! The hub knows nothing of the store or of sockets. Every topic published
//! since start keeps a small entry (its last `seq`), which is what makes a
//! join safe against a publish racing it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::protocol::{Event, Item};
use crate::queue::{Sender, TryPushError};

/// Why a member was handed back to its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Its queue was full: it is reading slower than the topic is written.
    Lagged,
    /// An event arrived that does not follow the last one it received.
    Resync,
}

/// A member handed back: its queue, and where it stands.
#[derive(Debug)]
pub struct Handback {
    /// The queue sender the member joined with.
    pub queue: Sender,
    /// The last `seq` pushed into its queue.
    pub cursor: u64,
    /// Why it was handed back.
    pub why: Why,
}

#[derive(Debug)]
struct Member {
    id: u64,
    queue: Sender,
    /// The last `seq` pushed into `queue`.
    cursor: u64,
    back: oneshot::Sender<Handback>,
}

#[derive(Debug, Default)]
struct TopicState {
    /// The last `seq` fanned out (or known to the first joiner).
    last_seq: u64,
    members: Vec<Member>,
}

type Topic = Arc<Mutex<TopicState>>;

fn lock(topic: &Topic) -> MutexGuard<'_, TopicState> {
    topic.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live subscribers of every topic.
#[derive(Debug, Default)]
pub struct Hub {
    topics: Mutex<HashMap<String, Topic>>,
    next_id: AtomicU64,
}

/// A live subscription; dropping it leaves the topic.
#[derive(Debug)]
pub struct Membership {
    topic: Topic,
    id: u64,
    back: oneshot::Receiver<Handback>,
}

impl Membership {
    /// Waits until the hub hands the member back; `None` if it left because
    /// its stream ended (its queue closed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn handed_back(&mut self) -> Option<Handback> {
        (&mut self.back).await.ok()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        lock(&self.topic).members.retain(|m| m.id != self.id);
    }
}

enum Outcome {
    Keep,
    Gone,
    HandBack(Why),
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry of `name`, created with `last_seq` if it has none.
    fn topic(&self, name: &str, last_seq: u64) -> Topic {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(topic) = topics.get(name) {
            return Arc::clone(topic);
        }
        let topic = Arc::new(Mutex::new(TopicState {
            last_seq,
            members: Vec::new(),
        }));
        topics.insert(name.to_owned(), Arc::clone(&topic));
        topic
    }

    /// Joins `name` as a member that has received everything up to
    /// `cursor`.
    ///
    /// # Errors
    ///
    /// Gives `queue` back when events after `cursor` have already been
    /// fanned out: the caller must read them from the store, then join again.
    pub fn join(&self, name: &str, cursor: u64, queue: Sender) -> Result<Membership, Sender> {
        let topic = self.topic(name, cursor);
        let mut state = lock(&topic);
        if state.last_seq > cursor {
            return Err(queue);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (back, handed_back) = oneshot::channel();
        state.members.push(Member {
            id,
            queue,
            cursor,
            back,
        });
        drop(state);
        Ok(Membership {
            topic,
            id,
            back: handed_back,
        })
    }

    /// Pushes `events` (committed, consecutive, of topic `name`) to every
    /// member of `name`.
    pub fn publish(&self, name: &str, events: &[Event]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        let topic = self.topic(name, first.seq - 1);
        let mut state = lock(&topic);
        state.last_seq = state.last_seq.max(last.seq);
        let mut i = 0;
        while i < state.members.len() {
            match deliver(&mut state.members[i], events) {
                Outcome::Keep => i += 1,
                Outcome::Gone => drop(state.members.swap_remove(i)),
                Outcome::HandBack(why) => {
                    let member = state.members.swap_remove(i);
                    // If the source is gone too, the queue simply drops.
                    let _ = member.back.send(Handback {
                        queue: member.queue,
                        cursor: member.cursor,
                        why,
                    });
                }
            }
        }
    }

    /// Live subscribers across all topics.
    pub fn live_members(&self) -> usize {
        let topics: Vec<Topic> = self
            .topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        topics.iter().map(|topic| lock(topic).members.len()).sum()
    }
}

/// Pushes to one member the events it has not received, in order.
fn deliver(member: &mut Member, events: &[Event]) -> Outcome {
    for event in events {
        if event.seq <= member.cursor {
            continue;
        }
        if event.seq != member.cursor + 1 {
            return Outcome::HandBack(Why::Resync);
        }
        match member.queue.try_push(Item::Event(event.clone())) {
            Ok(()) => member.cursor = event.seq,
            Err(TryPushError::Full(_)) => return Outcome::HandBack(Why::Lagged),
            Err(TryPushError::Closed(_)) => return Outcome::Gone,
        }
    }
    Outcome::Keep
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::Item;
    use crate::queue::{self, Limits, Receiver};

    fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        seqs.map(|seq| Event {
            seq,
            pts: Some(seq),
            data: Bytes::from_static(b"1"),
        })
        .collect()
    }

    fn queue(max_events: usize) -> (Sender, Receiver) {
        queue::channel(Limits {
            max_events,
            max_bytes: 1 << 20,
        })
    }

    async fn drain(rx: &mut Receiver) -> Vec<u64> {
        let mut out = Vec::new();
        rx.recv_batch(&mut out, 1000, usize::MAX).await;
        out.iter()
            .map(|item| match item {
                Item::Event(e) => e.seq,
                Item::Gap(_) => 0,
            })
            .collect()
    }

    #[tokio::test]
    async fn members_receive_what_follows_their_cursor_in_order() {
        let hub = Hub::new();
        let (tx, mut rx) = queue(100);
        let _member = hub.join("t", 0, tx).unwrap();
        hub.publish("t", &events(1..=3));
        hub.publish("t", &events(4..=5));
        assert_eq!(drain(&mut rx).await, [1, 2, 3, 4, 5]);
        assert_eq!(hub.live_members(), 1);
    }

    #[tokio::test]
    async fn events_a_member_already_has_are_skipped() {
        let hub = Hub::new();
        let (tx, mut rx) = queue(100);
        // The member read 1..=3 from the store before the hub fanned them out.
        let _member = hub.join("t", 3, tx).unwrap();
        hub.publish("t", &events(2..=4));
        assert_eq!(drain(&mut rx).await, [4]);
    }

    #[test]
    fn joining_behind_what_was_fanned_out_is_refused() {
        let hub = Hub::new();
        hub.publish("t", &events(1..=5));
        let (tx, _rx) = queue(100);
        let tx = hub.join("t", 3, tx).unwrap_err();
        assert!(hub.join("t", 5, tx).is_ok());
    }

    #[tokio::test]
    async fn a_full_member_is_handed_back_with_its_cursor_and_others_carry_on() {
        let hub = Hub::new();
        let (slow_tx, _slow_rx) = queue(2);
        let (fast_tx, mut fast_rx) = queue(100);
        let mut slow = hub.join("t", 0, slow_tx).unwrap();
        let _fast = hub.join("t", 0, fast_tx).unwrap();
        hub.publish("t", &events(1..=5));
        let back = slow.handed_back().await.unwrap();
        assert_eq!((back.cursor, back.why), (2, Why::Lagged));
        assert_eq!(drain(&mut fast_rx).await, [1, 2, 3, 4, 5]);
        assert_eq!(hub.live_members(), 1);
    }

    #[tokio::test]
    async fn a_hole_in_the_sequence_hands_members_back_to_resync() {
        let hub = Hub::new();
        let (tx, _rx) = queue(100);
        let mut member = hub.join("t", 0, tx).unwrap();
        hub.publish("t", &events(1..=1));
        hub.publish("t", &events(3..=3));
        let back = member.handed_back().await.unwrap();
        assert_eq!((back.cursor, back.why), (1, Why::Resync));
    }

    #[tokio::test]
    async fn a_closed_stream_leaves_and_a_dropped_membership_leaves_at_once() {
        let hub = Hub::new();
        let (tx, rx) = queue(100);
        let mut member = hub.join("t", 0, tx).unwrap();
        drop(rx);
        hub.publish("t", &events(1..=1));
        assert!(member.handed_back().await.is_none());
        assert_eq!(hub.live_members(), 0);

        let (tx, _rx) = queue(100);
        let member = hub.join("t", 1, tx).unwrap();
        assert_eq!(hub.live_members(), 1);
        drop(member);
        assert_eq!(hub.live_members(), 0);
    }
}
