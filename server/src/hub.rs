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
    /// Whether any event was fanned out since start. Such an entry is kept
    /// for good (its `last_seq` is what makes a racing join safe), so their
    /// number is bounded by the topics published, like the store's.
    published: bool,
    members: Vec<Member>,
}

type Topic = Arc<Mutex<TopicState>>;
type Topics = HashMap<String, Topic>;

fn lock(topic: &Topic) -> MutexGuard<'_, TopicState> {
    topic.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live subscribers of every topic.
///
/// Locks: the map, then a topic's state; never the other way round. Joins
/// and leaves hold both, so an entry without members that was never
/// published can be removed without a join racing into it; a publish marks
/// its entry published under the map lock before fanning out, so no entry
/// it uses is ever removed.
#[derive(Debug, Default)]
pub struct Hub {
    topics: Mutex<Topics>,
    next_id: AtomicU64,
}

/// A live subscription; dropping it leaves the topic.
#[derive(Debug)]
pub struct Membership {
    hub: Arc<Hub>,
    name: String,
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
        let mut topics = self.hub.lock_topics();
        let Some(topic) = topics.get(&self.name) else {
            return;
        };
        let mut state = lock(topic);
        state.members.retain(|m| m.id != self.id);
        let forget = state.members.is_empty() && !state.published;
        drop(state);
        if forget {
            topics.remove(&self.name);
        }
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

    fn lock_topics(&self) -> MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins `name` as a member that has received everything up to
    /// `cursor`.
    ///
    /// # Errors
    ///
    /// Gives `queue` back when events after `cursor` have already been
    /// fanned out: the caller must read them from the store, then join again.
    pub fn join(
        self: &Arc<Self>,
        name: &str,
        cursor: u64,
        queue: Sender,
    ) -> Result<Membership, Sender> {
        let mut topics = self.lock_topics();
        // A topic without an entry has had nothing fanned out since start:
        // the joiner's view of the store is the latest there is.
        let topic = topics.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(Mutex::new(TopicState {
                last_seq: cursor,
                ..TopicState::default()
            }))
        });
        let mut state = lock(topic);
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
        Ok(Membership {
            hub: Arc::clone(self),
            name: name.to_owned(),
            id,
            back: handed_back,
        })
    }

    /// The entry of `name`, marked published (created with `last_seq` if it
    /// has none).
    fn published_topic(&self, name: &str, last_seq: u64) -> Topic {
        let mut topics = self.lock_topics();
        let topic = topics.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(Mutex::new(TopicState {
                last_seq,
                ..TopicState::default()
            }))
        });
        lock(topic).published = true;
        Arc::clone(topic)
    }

    /// Pushes `events` (committed, consecutive, of topic `name`) to every
    /// member of `name`.
    pub fn publish(&self, name: &str, events: &[Event]) {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        let topic = self.published_topic(name, first.seq - 1);
        let mut state = lock(&topic);
        state.last_seq = state.last_seq.max(last.seq);
        let mut i = 0;
        while i < state.members.len() {
            match deliver(&mut state.members[i], events) {
                Outcome::Keep => i += 1,
                Outcome::Gone => drop(state.members.swap_remove(i)),
                Outcome::HandBack(why) => hand_back(state.members.swap_remove(i), why),
            }
        }
    }

    /// Hands every live member of `name` back to catch up from the store:
    /// for when the store may hold events the hub has not seen.
    pub fn resync(&self, name: &str) {
        let topic = self.lock_topics().get(name).cloned();
        if let Some(topic) = topic {
            for member in lock(&topic).members.drain(..) {
                hand_back(member, Why::Resync);
            }
        }
    }

    /// Live subscribers across all topics.
    pub fn live_members(&self) -> usize {
        let topics: Vec<Topic> = self.lock_topics().values().cloned().collect();
        topics.iter().map(|topic| lock(topic).members.len()).sum()
    }

    /// Topics the hub keeps an entry for.
    #[cfg(test)]
    fn tracked_topics(&self) -> usize {
        self.lock_topics().len()
    }
}

fn hand_back(member: Member, why: Why) {
    // If the source is gone too, the queue simply drops.
    let _ = member.back.send(Handback {
        queue: member.queue,
        cursor: member.cursor,
        why,
    });
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
        let hub = Arc::new(Hub::new());
        let (tx, mut rx) = queue(100);
        let _member = hub.join("t", 0, tx).unwrap();
        hub.publish("t", &events(1..=3));
        hub.publish("t", &events(4..=5));
        assert_eq!(drain(&mut rx).await, [1, 2, 3, 4, 5]);
        assert_eq!(hub.live_members(), 1);
    }

    #[tokio::test]
    async fn events_a_member_already_has_are_skipped() {
        let hub = Arc::new(Hub::new());
        let (tx, mut rx) = queue(100);
        // The member read 1..=3 from the store before the hub fanned them out.
        let _member = hub.join("t", 3, tx).unwrap();
        hub.publish("t", &events(2..=4));
        assert_eq!(drain(&mut rx).await, [4]);
    }

    #[test]
    fn joining_behind_what_was_fanned_out_is_refused() {
        let hub = Arc::new(Hub::new());
        hub.publish("t", &events(1..=5));
        let (tx, _rx) = queue(100);
        let tx = hub.join("t", 3, tx).unwrap_err();
        assert!(hub.join("t", 5, tx).is_ok());
    }

    #[tokio::test]
    async fn a_full_member_is_handed_back_with_its_cursor_and_others_carry_on() {
        let hub = Arc::new(Hub::new());
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
        let hub = Arc::new(Hub::new());
        let (tx, _rx) = queue(100);
        let mut member = hub.join("t", 0, tx).unwrap();
        hub.publish("t", &events(1..=1));
        hub.publish("t", &events(3..=3));
        let back = member.handed_back().await.unwrap();
        assert_eq!((back.cursor, back.why), (1, Why::Resync));
    }

    #[test]
    fn subscribers_to_topics_never_published_leave_no_trace() {
        let hub = Arc::new(Hub::new());
        for n in 0..100 {
            let (tx, _rx) = queue(10);
            drop(hub.join(&format!("random-{n}"), 0, tx).unwrap());
        }
        assert_eq!(hub.tracked_topics(), 0);
        // A published topic keeps its entry: its last seq guards later joins.
        hub.publish("kept", &events(1..=1));
        let (tx, _rx) = queue(10);
        drop(hub.join("kept", 1, tx).unwrap());
        assert_eq!(hub.tracked_topics(), 1);
        let (tx, _rx) = queue(10);
        assert!(hub.join("kept", 0, tx).is_err());
    }

    #[tokio::test]
    async fn resync_hands_every_member_back() {
        let hub = Arc::new(Hub::new());
        let (tx, _rx) = queue(10);
        let mut member = hub.join("t", 4, tx).unwrap();
        hub.resync("t");
        let back = member.handed_back().await.unwrap();
        assert_eq!((back.cursor, back.why), (4, Why::Resync));
        assert_eq!(hub.live_members(), 0);
    }

    #[tokio::test]
    async fn a_closed_stream_leaves_and_a_dropped_membership_leaves_at_once() {
        let hub = Arc::new(Hub::new());
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
