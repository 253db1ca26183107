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
//! Events reach the hub from this node's writer and, on PostgreSQL, from
//! the other nodes of a cluster ([`crate::cluster`]): each topic's
//! [`Sequence`] puts them in `seq` order and drops duplicates, and the store
//! reads it asks for to fill a hole go to the cluster relay as
//! [`ReadRequest`]s. The hub knows nothing of the store or of sockets.
//! Every topic that events reached since start keeps a small entry (its
//! sequence), which is what makes a join safe against a publish racing it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};

use crate::protocol::{Event, Item, Name};
use crate::queue::{Sender, TryPushError};
use crate::sequence::{Cause, Read, Released, Sequence, Via};

/// Why a member was handed back to its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Its queue was full: it is reading slower than the topic is written.
    Lagged,
    /// An event arrived that does not follow the last one it received.
    Resync,
    /// The topic was deleted; its head was this.
    Deleted(u64),
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

/// A join refused: events after the joiner's cursor were fanned out.
#[derive(Debug)]
pub struct Refused {
    /// The queue sender, back to the joiner.
    pub queue: Sender,
    /// The last `seq` fanned out: the joiner must read the store up to it.
    pub delivered: u64,
}

/// A store read a topic's sequence asks for, for the cluster relay.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// The topic.
    pub topic: String,
    /// What to read.
    pub read: Read,
}

#[derive(Debug)]
struct Member {
    id: u64,
    queue: Sender,
    /// The last `seq` pushed into `queue`.
    cursor: u64,
    back: oneshot::Sender<Handback>,
}

#[derive(Debug)]
struct TopicState {
    /// The order of the topic's events on this node; its last `seq`
    /// released is the last one fanned out (or known to the first joiner).
    sequence: Sequence,
    /// Whether any event reached this entry since start. Such an entry is
    /// kept for good (its sequence is what makes a racing join safe), so
    /// their number is bounded by the topics published, like the store's.
    published: bool,
    /// How many times the topic was deleted since start: a joiner that
    /// began reading the store before a deletion may hold a `seq` of the
    /// deleted topic, so it reads the store again (which tells it).
    generation: u64,
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
    /// Where store reads go, on a cluster node; `None` on a single node
    /// (SQLite), which has no notification stream to wait for.
    ///
    /// Unbounded: a topic has at most one read in flight, so the requests
    /// queued are bounded by the topics with live members.
    reads: Option<mpsc::UnboundedSender<ReadRequest>>,
}

/// A live subscription; dropping it leaves the topic.
#[derive(Debug)]
pub struct Membership {
    hub: Arc<Hub>,
    /// The topic: the subscription's own name, shared, not a copy.
    name: Name,
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
        let Some(topic) = topics.get(self.name.as_str()) else {
            return;
        };
        let mut state = lock(topic);
        state.members.retain(|m| m.id != self.id);
        let forget = state.members.is_empty() && !state.published;
        drop(state);
        if forget {
            topics.remove(self.name.as_str());
        }
    }
}

enum Outcome {
    Keep,
    Gone,
    HandBack(Why),
}

impl Hub {
    /// An empty hub for a single node: only its own writer publishes.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty hub for a cluster node: events also come from the other
    /// nodes, and the store reads that fill holes go to `reads`.
    pub fn clustered(reads: mpsc::UnboundedSender<ReadRequest>) -> Self {
        Self {
            reads: Some(reads),
            ..Self::default()
        }
    }

    fn lock_topics(&self) -> MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins `name` as a member that has received everything up to
    /// `cursor`, read from the store as of the topic's `generation` (noted
    /// before reading).
    ///
    /// # Errors
    ///
    /// [`Refused`], with `queue`, when events after `cursor` have already
    /// been fanned out, or the topic was deleted since `generation`: the
    /// caller must read the store again, then join again.
    pub fn join(
        self: &Arc<Self>,
        name: &Name,
        (cursor, generation): (u64, u64),
        queue: Sender,
    ) -> Result<Membership, Refused> {
        let mut topics = self.lock_topics();
        // A topic without an entry has had nothing fanned out since start:
        // the joiner's view of the store is the latest there is.
        let topic = topics
            .entry(name.as_str().to_owned())
            .or_insert_with(|| self.new_topic(cursor));
        let mut state = lock(topic);
        let delivered = state.sequence.delivered();
        if delivered > cursor || state.generation != generation {
            return Err(Refused { queue, delivered });
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
            name: name.clone(),
            id,
            back: handed_back,
        })
    }

    fn new_topic(&self, delivered: u64) -> Topic {
        Arc::new(Mutex::new(TopicState {
            sequence: Sequence::new(delivered, self.reads.is_some()),
            published: false,
            generation: 0,
            members: Vec::new(),
        }))
    }

    /// The entry of `name`, marked published (created as having delivered
    /// `delivered` if it has none).
    fn published_topic(&self, name: &str, delivered: u64) -> Topic {
        let mut topics = self.lock_topics();
        let topic = topics
            .entry(name.to_owned())
            .or_insert_with(|| self.new_topic(delivered));
        lock(topic).published = true;
        Arc::clone(topic)
    }

    /// Pushes `events` (committed by this node's writer, consecutive, of
    /// topic `name`) to every member of `name`, in order with what other
    /// nodes committed.
    pub fn publish(&self, name: &str, events: &[Event]) {
        self.offer(name, events, Via::Writer);
    }

    /// Takes `events` (committed, consecutive, of topic `name`) from `via`
    /// and fans out what follows what was fanned out before.
    pub fn offer(&self, name: &str, events: &[Event], via: Via) {
        let Some(first) = events.first() else {
            return;
        };
        self.step(name, first.seq.saturating_sub(1), |sequence, watched| {
            sequence.offer(events, via, watched)
        });
    }

    /// A notification announced `first..=last` of `name` without bodies;
    /// `own`: this node committed them.
    pub fn announce(&self, name: &str, first: u64, last: u64, own: bool) {
        self.step(name, first.saturating_sub(1), |sequence, watched| {
            sequence.announce(first, last, own, watched)
        });
    }

    /// The store's head of `name` is `head` (read for `cause`), at least
    /// what the hub had delivered when [`Hub::watched`] said so.
    pub fn head(&self, name: &str, head: u64, cause: Cause) {
        self.step(name, head, |sequence, watched| {
            sequence.head(head, cause, watched)
        });
    }

    /// The store answered `read` of `name` with `events` (`full`: cut at
    /// the page size).
    pub fn page(&self, name: &str, read: Read, events: &[Event], full: bool) {
        self.step(name, read.after, |sequence, watched| {
            sequence.page(read, events, full, watched)
        });
    }

    /// `read` of `name` failed; the next notification or poll asks again.
    pub fn read_failed(&self, name: &str, read: Read) {
        let topic = self.lock_topics().get(name).cloned();
        if let Some(topic) = topic {
            lock(&topic).sequence.read_failed(read);
        }
    }

    /// The store of `name` went back to `head`, below what was fanned out
    /// (a database restored or failed over): every member catches up from
    /// the store, which tells it so, and the topic starts again from there.
    pub fn reset(&self, name: &str, head: u64) {
        let topic = self.lock_topics().get(name).cloned();
        if let Some(topic) = topic {
            let mut state = lock(&topic);
            state.sequence.reset(head);
            hand_back_all(&mut state.members);
        }
    }

    /// The topics with live members here, each with the last `seq` fanned
    /// out: what a resync or a poll compares with the store's heads.
    pub fn watched(&self) -> Vec<(String, u64)> {
        let topics: Vec<(String, Topic)> = self
            .lock_topics()
            .iter()
            .map(|(name, topic)| (name.clone(), Arc::clone(topic)))
            .collect();
        topics
            .into_iter()
            .filter_map(|(name, topic)| {
                let state = lock(&topic);
                (!state.members.is_empty()).then(|| (name, state.sequence.delivered()))
            })
            .collect()
    }

    /// Runs one step of `name`'s sequence under its lock (creating the
    /// entry as having delivered `delivered` if it has none), fans out what
    /// it releases, hands members back if it jumped, and passes on the read
    /// it asks for.
    fn step<'a>(
        &self,
        name: &str,
        delivered: u64,
        run: impl FnOnce(&mut Sequence, bool) -> Released<'a>,
    ) {
        let topic = self.published_topic(name, delivered);
        let mut state = lock(&topic);
        let watched = !state.members.is_empty();
        let released = run(&mut state.sequence, watched);
        fan_out(&mut state.members, &released.events);
        if released.resync {
            hand_back_all(&mut state.members);
        }
        drop(state);
        if let (Some(read), Some(reads)) = (released.read, &self.reads) {
            // The relay is gone only at shutdown.
            let _ = reads.send(ReadRequest {
                topic: name.to_owned(),
                read,
            });
        }
    }

    /// Hands every live member of `name` back to catch up from the store:
    /// for when the store may hold events the hub has not seen.
    pub fn resync(&self, name: &str) {
        let topic = self.lock_topics().get(name).cloned();
        if let Some(topic) = topic {
            hand_back_all(&mut lock(&topic).members);
        }
    }

    /// `name` was deleted from the store at `head`: every member is handed
    /// back ([`Why::Deleted`]), and the topic starts again at `seq` 1.
    pub fn delete(&self, name: &str, head: u64) {
        let topic = self
            .lock_topics()
            .entry(name.to_owned())
            .or_insert_with(|| self.new_topic(0))
            .clone();
        let mut state = lock(&topic);
        state.sequence.reset(0);
        state.published = true;
        state.generation += 1;
        for member in state.members.drain(..) {
            hand_back(member, Why::Deleted(head));
        }
    }

    /// Forgets `name`, removed from the store while no one here subscribed
    /// to it: a later publish starts it again at `seq` 1.
    pub fn forget(&self, name: &str) {
        let mut topics = self.lock_topics();
        if topics
            .get(name)
            .is_some_and(|topic| lock(topic).members.is_empty())
        {
            topics.remove(name);
        }
    }

    /// The deletions of `name` since start: what a subscriber notes before
    /// it reads the store, and joins with.
    pub fn generation(&self, name: &str) -> u64 {
        let topic = self.lock_topics().get(name).cloned();
        topic.map_or(0, |topic| lock(&topic).generation)
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

/// Pushes `events` to every member, handing back those that cannot take
/// them.
fn fan_out(members: &mut Vec<Member>, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let mut i = 0;
    while i < members.len() {
        match deliver(&mut members[i], events) {
            Outcome::Keep => i += 1,
            Outcome::Gone => drop(members.swap_remove(i)),
            Outcome::HandBack(why) => hand_back(members.swap_remove(i), why),
        }
    }
}

/// Hands every member back to catch up from the store.
fn hand_back_all(members: &mut Vec<Member>) {
    for member in members.drain(..) {
        hand_back(member, Why::Resync);
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
    use crate::protocol::{Item, Stamp};
    use crate::queue::{self, Limits, Receiver};

    fn name(name: &str) -> Name {
        Name::parse(name).unwrap()
    }

    fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<Event> {
        seqs.map(|seq| Event {
            seq,
            stamp: Stamp::Pts(seq),
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
        let _member = hub.join(&name("t"), (0, 0), tx).unwrap();
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
        let _member = hub.join(&name("t"), (3, 0), tx).unwrap();
        hub.publish("t", &events(2..=4));
        assert_eq!(drain(&mut rx).await, [4]);
    }

    #[test]
    fn joining_behind_what_was_fanned_out_is_refused() {
        let hub = Arc::new(Hub::new());
        hub.publish("t", &events(1..=5));
        let (tx, _rx) = queue(100);
        let refused = hub.join(&name("t"), (3, 0), tx).unwrap_err();
        assert_eq!(refused.delivered, 5);
        assert!(hub.join(&name("t"), (5, 0), refused.queue).is_ok());
    }

    #[tokio::test]
    async fn a_full_member_is_handed_back_with_its_cursor_and_others_carry_on() {
        let hub = Arc::new(Hub::new());
        let (slow_tx, _slow_rx) = queue(2);
        let (fast_tx, mut fast_rx) = queue(100);
        let mut slow = hub.join(&name("t"), (0, 0), slow_tx).unwrap();
        let _fast = hub.join(&name("t"), (0, 0), fast_tx).unwrap();
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
        let mut member = hub.join(&name("t"), (0, 0), tx).unwrap();
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
            drop(hub.join(&name(&format!("random-{n}")), (0, 0), tx).unwrap());
        }
        assert_eq!(hub.tracked_topics(), 0);
        // A published topic keeps its entry: its last seq guards later joins.
        hub.publish("kept", &events(1..=1));
        let (tx, _rx) = queue(10);
        drop(hub.join(&name("kept"), (1, 0), tx).unwrap());
        assert_eq!(hub.tracked_topics(), 1);
        let (tx, _rx) = queue(10);
        assert!(hub.join(&name("kept"), (0, 0), tx).is_err());
    }

    #[tokio::test]
    async fn a_deleted_topic_hands_its_members_back_and_starts_again_at_one() {
        let hub = Arc::new(Hub::new());
        let (tx, _rx) = queue(10);
        hub.publish("t", &events(1..=3));
        let mut member = hub.join(&name("t"), (3, 0), tx).unwrap();
        let before = hub.generation("t");
        hub.delete("t", 3);
        let back = member.handed_back().await.unwrap();
        assert_eq!((back.cursor, back.why), (3, Why::Deleted(3)));
        // A joiner that read the store before the deletion reads it again.
        let refused = hub.join(&name("t"), (3, before), back.queue).unwrap_err();
        let (tx, mut rx) = queue(10);
        let _member = hub.join(&name("t"), (0, hub.generation("t")), tx).unwrap();
        hub.publish("t", &events(1..=1));
        assert_eq!(drain(&mut rx).await, [1]);
        drop(refused);
    }

    #[tokio::test]
    async fn resync_hands_every_member_back() {
        let hub = Arc::new(Hub::new());
        let (tx, _rx) = queue(10);
        let mut member = hub.join(&name("t"), (4, 0), tx).unwrap();
        hub.resync("t");
        let back = member.handed_back().await.unwrap();
        assert_eq!((back.cursor, back.why), (4, Why::Resync));
        assert_eq!(hub.live_members(), 0);
    }

    #[tokio::test]
    async fn a_closed_stream_leaves_and_a_dropped_membership_leaves_at_once() {
        let hub = Arc::new(Hub::new());
        let (tx, rx) = queue(100);
        let mut member = hub.join(&name("t"), (0, 0), tx).unwrap();
        drop(rx);
        hub.publish("t", &events(1..=1));
        assert!(member.handed_back().await.is_none());
        assert_eq!(hub.live_members(), 0);

        let (tx, _rx) = queue(100);
        let member = hub.join(&name("t"), (1, 0), tx).unwrap();
        assert_eq!(hub.live_members(), 1);
        drop(member);
        assert_eq!(hub.live_members(), 0);
    }

    #[tokio::test]
    async fn on_a_cluster_node_events_from_every_source_reach_members_once_in_order() {
        let (reads, mut requests) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub::clustered(reads));
        let (tx, mut rx) = queue(100);
        let _member = hub.join(&name("t"), (0, 0), tx).unwrap();
        assert_eq!(hub.watched(), [("t".to_owned(), 0)]);
        // This node committed 2 before the notification of another node's
        // 1 arrived: 2 waits for it.
        hub.publish("t", &events(2..=2));
        hub.offer("t", &events(1..=2), Via::Notification);
        // A notification that skipped 3..=4 asks the relay to read them.
        hub.offer("t", &events(5..=5), Via::Notification);
        let request = requests.try_recv().expect("a read request");
        assert_eq!(request.topic, "t");
        assert_eq!((request.read.after, request.read.upto), (2, 5));
        assert_eq!(request.read.cause, Cause::Gap);
        hub.page("t", request.read, &events(3..=5), false);
        assert_eq!(drain(&mut rx).await, [1, 2, 3, 4, 5]);
        assert_eq!(hub.watched(), [("t".to_owned(), 5)]);
    }

    #[tokio::test]
    async fn a_reset_hands_every_member_back_and_starts_the_topic_again() {
        let (reads, _requests) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub::clustered(reads));
        let (tx, _rx) = queue(10);
        let mut member = hub.join(&name("t"), (0, 0), tx).unwrap();
        hub.publish("t", &events(1..=9));
        hub.reset("t", 2);
        let back = member.handed_back().await.unwrap();
        assert_eq!((back.cursor, back.why), (9, Why::Resync));
        // The store's head is where joins start again.
        assert!(hub.join(&name("t"), (2, 0), back.queue).is_ok());
    }
}
