//! The order in which one topic's committed events reach this node's live
//! subscribers, whichever way each event arrives: from this node's own
//! writer, inline in a database notification, or read back from the store.
//!
//! Pure bookkeeping, no I/O: [`crate::hub`] keeps one [`Sequence`] per
//! topic under that topic's lock, fans out the events it releases (strictly
//! in `seq` order, each once), hands members back when it says so, and
//! passes the store reads it asks for to the cluster relay
//! ([`crate::cluster`]).
//!
//! What each source vouches for decides what a missing `seq` means:
//!
//! - The **notification stream** carries every commit of every node in
//!   commit order, which is `seq` order per topic. A `seq` it skipped, or
//!   a range it announced without bodies, is committed and must be read
//!   from the store ([`Read`]).
//! - **This node's writer** may run ahead of the notifications of other
//!   nodes' commits that precede its own: its events wait, early, until
//!   the stream fills the hole. Without a notification stream (one node on
//!   SQLite) there is nothing to wait for, and the hole is jumped: the hub
//!   hands each member that misses a `seq` back to catch up from the store.
//! - A **store read** of the range after a `seq` returns everything the
//!   store still holds there: a `seq` missing from it was deleted
//!   (retention, or a database that went back) and is jumped the same way.
//!
//! A topic with no live subscriber on this node needs no order: its
//! sequence only remembers how far the topic has gone.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::protocol::Event;

/// Most events a topic keeps waiting for a hole to be filled; beyond it
/// they are dropped, and read back from the store when the hole closes.
/// A hole that wide means the notification stream is far behind this
/// node's writer.
const MAX_EARLY_EVENTS: usize = 4096;

/// Most payload bytes a topic keeps waiting for a hole to be filled.
const MAX_EARLY_BYTES: usize = 4 << 20;

/// Where an offered run of events comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// This node's writer, right after its commit.
    Writer,
    /// A database notification that carried the bodies.
    Notification,
}

/// Why a store read is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// A notification named events without their bodies (the commit's
    /// payload was too large to carry them): not a resync.
    Bodies,
    /// The notification stream skipped `seq`s: a notification was lost.
    Gap,
    /// The listener reconnected: notifications may have been lost meanwhile.
    Reconnect,
    /// The safety poll found the store ahead of what was delivered.
    Poll,
}

impl Cause {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Bodies => "bodies",
            Cause::Gap => "gap",
            Cause::Reconnect => "reconnect",
            Cause::Poll => "poll",
        }
    }
}

/// A store read a sequence asks for: the events after `after`, which it
/// knows to be committed at least up to `upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Read the events with `seq > after`.
    pub after: u64,
    /// Every `seq` up to this one is committed: one the store does not
    /// return was deleted.
    pub upto: u64,
    /// Why.
    pub cause: Cause,
    /// The sequence's epoch when asked: an answer to a read asked before a
    /// reset is stale.
    pub epoch: u64,
}

/// What a step of a sequence releases.
#[derive(Debug, Default)]
pub struct Released<'a> {
    /// Events to fan out now, in this order. Consecutive, except where the
    /// sequence jumped over `seq`s that will never come.
    pub events: Cow<'a, [Event]>,
    /// A store read to start.
    pub read: Option<Read>,
    /// The sequence jumped past `seq`s it has nothing to fan out for: every
    /// member must catch up from the store, which will tell it what is gone.
    pub resync: bool,
}

/// One topic's order on this node.
#[derive(Debug)]
pub struct Sequence {
    /// The last `seq` released.
    delivered: u64,
    /// The highest `seq` known to be committed.
    known: u64,
    /// The highest `seq` the notification stream, a resync or a poll has
    /// vouched for: one not yet released must be read from the store.
    vouched: u64,
    /// Events after a hole, by `seq`: all above `delivered + 1`.
    early: BTreeMap<u64, Event>,
    /// Payload bytes in `early`.
    early_bytes: usize,
    /// A store read is in flight.
    reading: bool,
    /// Why the next read is wanted, remembered while one is in flight.
    wanted: Option<Cause>,
    /// Whether a notification stream exists to fill this node's holes.
    clustered: bool,
    /// Resets so far.
    epoch: u64,
}

impl Sequence {
    /// A sequence that has released everything up to `delivered`.
    /// `clustered`: a notification stream fills holes (PostgreSQL).
    pub fn new(delivered: u64, clustered: bool) -> Self {
        Self {
            delivered,
            known: delivered,
            vouched: delivered,
            early: BTreeMap::new(),
            early_bytes: 0,
            reading: false,
            wanted: None,
            clustered,
            epoch: 0,
        }
    }

    /// The last `seq` released.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Takes `events` (committed, consecutive) from `via`; `watched`: the
    /// topic has live members here.
    pub fn offer<'a>(&mut self, events: &'a [Event], via: Via, watched: bool) -> Released<'a> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Released::default();
        };
        let gap = via == Via::Notification && first.seq > self.vouched + 1;
        self.known = self.known.max(last.seq);
        if via == Via::Notification {
            self.vouched = self.vouched.max(last.seq);
        }
        if !watched {
            return self.skip(last.seq);
        }
        if self.early.is_empty() && first.seq <= self.delivered + 1 {
            // The usual case: the events follow what was released.
            if last.seq <= self.delivered {
                return Released::default();
            }
            let start = usize::try_from(self.delivered + 1 - first.seq).unwrap_or(usize::MAX);
            self.delivered = last.seq;
            return Released {
                events: Cow::Borrowed(&events[start..]),
                read: self.want_read(if gap { Cause::Gap } else { Cause::Bodies }),
                resync: false,
            };
        }
        self.buffer(events);
        let mut released = self.drain();
        let mut resync = false;
        if via == Via::Writer && !self.clustered {
            // No notification stream will fill the hole: jump it.
            resync = self.jump_to(last.seq, &mut released);
        }
        self.bound();
        Released {
            events: Cow::Owned(released),
            read: self.want_read(if gap { Cause::Gap } else { Cause::Bodies }),
            resync,
        }
    }

    /// A notification announced `first..=last` without bodies; `own`: this
    /// node committed them, and its writer hands them over (unless its
    /// commit failed to say so: then the next step reads them).
    pub fn announce(
        &mut self,
        first: u64,
        last: u64,
        own: bool,
        watched: bool,
    ) -> Released<'static> {
        if first > self.vouched + 1 {
            return self.vouch(last, Cause::Gap, watched);
        }
        if own && watched {
            self.known = self.known.max(last);
            self.vouched = self.vouched.max(last);
            return Released::default();
        }
        self.vouch(last, Cause::Bodies, watched)
    }

    /// The store's head is `head` (read after a reconnect or by the poll,
    /// for `cause`), at least the last `seq` released.
    pub fn head(&mut self, head: u64, cause: Cause, watched: bool) -> Released<'static> {
        self.vouch(head, cause, watched)
    }

    /// The store went back to `head`, below what was released (a database
    /// restored or failed over): start again from there. Every member
    /// must catch up, and will be told.
    pub fn reset(&mut self, head: u64) {
        self.delivered = head;
        self.known = head;
        self.vouched = head;
        self.clear_early();
        self.wanted = None;
        self.reading = false;
        self.epoch += 1;
    }

    /// The store answered `read` with `events`; `full`: the answer was cut
    /// at the page size, so the store may hold more after it.
    pub fn page<'a>(
        &mut self,
        read: Read,
        events: &'a [Event],
        full: bool,
        watched: bool,
    ) -> Released<'a> {
        if read.epoch != self.epoch {
            return Released::default();
        }
        self.reading = false;
        let last = events.last().map_or(0, |e| e.seq);
        self.known = self.known.max(last);
        self.vouched = self.vouched.max(last);
        if !watched {
            return self.skip(last);
        }
        self.buffer(events);
        let mut released = self.drain();
        // Up to `end`, the store answered for every `seq`: one it did not
        // return is gone.
        let end = if full { last } else { read.upto.max(last) };
        let resync = self.jump_to(end, &mut released);
        self.bound();
        Released {
            events: Cow::Owned(released),
            read: self.want_read(Cause::Bodies),
            resync,
        }
    }

    /// The read in flight failed: the next notification, reconnect or poll
    /// asks again.
    pub fn read_failed(&mut self, read: Read) {
        if read.epoch == self.epoch {
            self.reading = false;
        }
    }

    /// Vouches for every `seq` up to `upto` (committed), asking for a read
    /// if any is missing.
    fn vouch(&mut self, upto: u64, cause: Cause, watched: bool) -> Released<'static> {
        self.known = self.known.max(upto);
        self.vouched = self.vouched.max(upto);
        if !watched {
            return self.skip(upto);
        }
        Released {
            read: self.want_read(cause),
            ..Released::default()
        }
    }

    /// No member to deliver to: nothing to order, only how far the topic
    /// has gone to remember.
    fn skip(&mut self, last: u64) -> Released<'static> {
        self.delivered = self.delivered.max(self.known).max(last);
        self.clear_early();
        self.wanted = None;
        Released::default()
    }

    /// Keeps the events not yet released.
    fn buffer(&mut self, events: &[Event]) {
        for event in events.iter().filter(|e| e.seq > self.delivered) {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.early.entry(event.seq) {
                self.early_bytes += event.data.len();
                slot.insert(event.clone());
            }
        }
    }

    /// Releases the early events that now follow what was released.
    fn drain(&mut self) -> Vec<Event> {
        let mut released = Vec::new();
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() != self.delivered + 1 {
                break;
            }
            let event = entry.remove();
            self.early_bytes -= event.data.len();
            self.delivered = event.seq;
            released.push(event);
        }
        released
    }

    /// Releases every early event up to `end` across the holes between
    /// them, then what follows. Returns whether `seq`s after the last
    /// event released were jumped with nothing to show for them.
    fn jump_to(&mut self, end: u64, released: &mut Vec<Event>) -> bool {
        if self.delivered >= end {
            return false;
        }
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() > end {
                break;
            }
            let event = entry.remove();
            self.early_bytes -= event.data.len();
            self.delivered = event.seq;
            released.push(event);
        }
        let jumped = self.delivered < end;
        self.delivered = self.delivered.max(end);
        released.extend(self.drain());
        jumped
    }

    /// Drops the early events if they outgrew their bounds: a read or the
    /// notification stream brings them again.
    fn bound(&mut self) {
        if self.early.len() > MAX_EARLY_EVENTS || self.early_bytes > MAX_EARLY_BYTES {
            self.clear_early();
        }
    }

    fn clear_early(&mut self) {
        self.early.clear();
        self.early_bytes = 0;
    }

    /// The store read to start now, if `seq`s that are vouched for are
    /// missing and none is in flight; `cause` is remembered otherwise.
    fn want_read(&mut self, cause: Cause) -> Option<Read> {
        if self.delivered >= self.vouched {
            self.wanted = None;
            return None;
        }
        let cause = self.wanted.map_or(cause, |wanted| wanted.max(cause));
        if self.reading {
            self.wanted = Some(cause);
            return None;
        }
        self.reading = true;
        self.wanted = None;
        Some(Read {
            after: self.delivered,
            upto: self.vouched,
            cause,
            epoch: self.epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::Stamp;

    fn events(seqs: impl IntoIterator<Item = u64>) -> Vec<Event> {
        seqs.into_iter()
            .map(|seq| Event {
                seq,
                stamp: Stamp::Pts(seq),
                data: Bytes::from(seq.to_string()),
            })
            .collect()
    }

    /// What a step released, owned.
    #[derive(Debug, PartialEq, Eq)]
    struct Step {
        seqs: Vec<u64>,
        read: Option<Read>,
        resync: bool,
    }

    fn step(released: Released<'_>) -> Step {
        Step {
            seqs: released.events.iter().map(|e| e.seq).collect(),
            read: released.read,
            resync: released.resync,
        }
    }

    fn released(seqs: impl IntoIterator<Item = u64>) -> Step {
        Step {
            seqs: seqs.into_iter().collect(),
            read: None,
            resync: false,
        }
    }

    fn read(after: u64, upto: u64, cause: Cause) -> Read {
        Read {
            after,
            upto,
            cause,
            epoch: 0,
        }
    }

    const WATCHED: bool = true;

    #[test]
    fn consecutive_events_pass_straight_through_without_copies() {
        let mut sequence = Sequence::new(0, true);
        let batch = events(1..=3);
        let out = sequence.offer(&batch, Via::Writer, WATCHED);
        assert!(matches!(out.events, Cow::Borrowed(_)));
        assert_eq!(step(out), released(1..=3));
        assert_eq!(sequence.delivered(), 3);
    }

    #[test]
    fn duplicates_from_any_source_are_released_once() {
        let mut sequence = Sequence::new(0, true);
        sequence.offer(&events(1..=3), Via::Writer, WATCHED);
        // This node's own commit, notified back to it.
        let again = step(sequence.offer(&events(1..=3), Via::Notification, WATCHED));
        assert_eq!(again, released([]));
        // An overlap: only what is new.
        let overlap = step(sequence.offer(&events(2..=5), Via::Notification, WATCHED));
        assert_eq!(overlap, released([4, 5]));
        // A store page repeating it all.
        let page = step(sequence.page(read(0, 5, Cause::Bodies), &events(1..=5), false, WATCHED));
        assert_eq!(page, released([]));
    }

    #[test]
    fn the_writer_waits_for_the_notification_of_an_earlier_commit_of_another_node() {
        let mut sequence = Sequence::new(4, true);
        // This node committed 6 just after another node committed 5.
        let early = step(sequence.offer(&events([6]), Via::Writer, WATCHED));
        assert_eq!(early, released([]));
        let filled = step(sequence.offer(&events([5]), Via::Notification, WATCHED));
        assert_eq!(filled, released([5, 6]));
        // Its own notification of 6 follows: a duplicate.
        let own = step(sequence.offer(&events([6]), Via::Notification, WATCHED));
        assert_eq!(own, released([]));
    }

    #[test]
    fn without_a_notification_stream_a_hole_left_by_the_writer_is_jumped() {
        // One node on SQLite: a commit that failed to say so left seq 2.
        let mut sequence = Sequence::new(1, false);
        let jumped = step(sequence.offer(&events([3]), Via::Writer, WATCHED));
        assert_eq!(jumped, released([3]));
        assert_eq!(sequence.delivered(), 3);
    }

    #[test]
    fn a_notification_that_skips_seqs_asks_for_a_read_and_holds_what_follows() {
        let mut sequence = Sequence::new(2, true);
        let held = step(sequence.offer(&events(5..=6), Via::Notification, WATCHED));
        let wanted = read(2, 6, Cause::Gap);
        assert_eq!(
            held,
            Step {
                read: Some(wanted),
                ..released([])
            }
        );
        // More arrives while the read is in flight: no second read.
        let more = step(sequence.offer(&events([7]), Via::Notification, WATCHED));
        assert_eq!(more, released([]));
        // The store answers with everything after 2 it holds at its snapshot.
        let page = step(sequence.page(wanted, &events(3..=6), false, WATCHED));
        assert_eq!(page, released(3..=7));
    }

    #[test]
    fn a_notification_without_bodies_is_read_from_the_store() {
        let mut sequence = Sequence::new(3, true);
        let announced = step(sequence.announce(4, 9, false, WATCHED));
        assert_eq!(announced.read, Some(read(3, 9, Cause::Bodies)));
        let page = step(sequence.page(read(3, 9, Cause::Bodies), &events(4..=9), false, WATCHED));
        assert_eq!(page, released(4..=9));
        // One announced past a lost notification is a gap.
        let gap = step(sequence.announce(12, 12, false, WATCHED));
        assert_eq!(gap.read, Some(read(9, 12, Cause::Gap)));
    }

    #[test]
    fn this_nodes_own_commit_announced_without_bodies_waits_for_its_writer() {
        let mut sequence = Sequence::new(2, true);
        // The notification beats the writer: no read, the writer follows.
        let own = step(sequence.announce(3, 4, true, WATCHED));
        assert_eq!(own, released([]));
        let writer = step(sequence.offer(&events(3..=4), Via::Writer, WATCHED));
        assert_eq!(writer, released(3..=4));
        // The writer's commit failed to say so: the next step reads it.
        sequence.announce(5, 5, true, WATCHED);
        let next = step(sequence.offer(&events([6]), Via::Notification, WATCHED));
        assert_eq!(next.read, Some(read(4, 6, Cause::Bodies)));
        // One skipping seqs is a gap, whoever committed it.
        let mut sequence = Sequence::new(2, true);
        let gap = step(sequence.announce(5, 5, true, WATCHED));
        assert_eq!(gap.read, Some(read(2, 5, Cause::Gap)));
    }

    #[test]
    fn a_full_page_is_followed_by_the_next_one() {
        let mut sequence = Sequence::new(0, true);
        let first = step(sequence.head(10, Cause::Reconnect, WATCHED));
        assert_eq!(first.read, Some(read(0, 10, Cause::Reconnect)));
        let page =
            step(sequence.page(read(0, 10, Cause::Reconnect), &events(1..=4), true, WATCHED));
        assert_eq!(
            page,
            Step {
                read: Some(read(4, 10, Cause::Bodies)),
                ..released(1..=4)
            }
        );
        let last = step(sequence.page(read(4, 10, Cause::Bodies), &events(5..=10), false, WATCHED));
        assert_eq!(last, released(5..=10));
    }

    #[test]
    fn what_the_store_no_longer_holds_is_jumped_and_members_resync() {
        let mut sequence = Sequence::new(0, true);
        let wanted = step(sequence.announce(1, 10, false, WATCHED)).read.unwrap();
        // Retention deleted 1..=3 and 9..=10 before the read.
        let page = step(sequence.page(wanted, &events(4..=8), false, WATCHED));
        assert_eq!(
            page,
            Step {
                resync: true,
                ..released(4..=8)
            },
            "9..=10 jumped with no event to show"
        );
        assert_eq!(sequence.delivered(), 10);
        // Nothing at all: jumped too.
        let wanted = step(sequence.announce(11, 12, false, WATCHED))
            .read
            .unwrap();
        let empty = step(sequence.page(wanted, &[], false, WATCHED));
        assert_eq!(
            empty,
            Step {
                resync: true,
                ..released([])
            }
        );
        assert_eq!(sequence.delivered(), 12);
    }

    #[test]
    fn a_failed_read_is_asked_again_by_the_next_trigger_with_its_cause() {
        let mut sequence = Sequence::new(0, true);
        let first = step(sequence.head(5, Cause::Reconnect, WATCHED))
            .read
            .unwrap();
        assert_eq!(first, read(0, 5, Cause::Reconnect));
        // A poll finds it behind while the read is in flight.
        assert_eq!(step(sequence.head(6, Cause::Poll, WATCHED)).read, None);
        sequence.read_failed(first);
        let again = step(sequence.announce(7, 7, false, WATCHED)).read;
        assert_eq!(again, Some(read(0, 7, Cause::Poll)));
    }

    #[test]
    fn after_a_reconnect_the_head_names_what_was_missed() {
        let mut sequence = Sequence::new(5, true);
        // Caught up: nothing to read.
        assert_eq!(step(sequence.head(5, Cause::Reconnect, WATCHED)).read, None);
        let wanted = step(sequence.head(8, Cause::Reconnect, WATCHED))
            .read
            .unwrap();
        assert_eq!(wanted, read(5, 8, Cause::Reconnect));
        // Notifications after the reconnect overlap the read: no gap.
        let overlap = step(sequence.offer(&events(8..=9), Via::Notification, WATCHED));
        assert_eq!(overlap, released([]));
        let page = step(sequence.page(wanted, &events(6..=8), false, WATCHED));
        assert_eq!(page, released(6..=9));
    }

    #[test]
    fn a_topic_without_members_only_remembers_how_far_it_has_gone() {
        let mut sequence = Sequence::new(0, true);
        let unwatched = step(sequence.offer(&events(5..=6), Via::Notification, false));
        assert_eq!(unwatched, released([]));
        assert_eq!(sequence.delivered(), 6);
        assert_eq!(step(sequence.announce(7, 20, false, false)).read, None);
        assert_eq!(sequence.delivered(), 20);
        // A member joins at 20: the next event follows at once.
        let next = step(sequence.offer(&events([21]), Via::Notification, WATCHED));
        assert_eq!(next, released([21]));
    }

    #[test]
    fn a_store_that_went_back_starts_the_sequence_again() {
        let mut sequence = Sequence::new(50, true);
        sequence.offer(&events([52]), Via::Writer, WATCHED);
        let stale = step(sequence.announce(51, 60, false, WATCHED))
            .read
            .unwrap();
        sequence.reset(3);
        assert_eq!(sequence.delivered(), 3);
        // The answer to a read asked before the reset changes nothing.
        assert_eq!(
            step(sequence.page(stale, &[], false, WATCHED)),
            released([])
        );
        assert_eq!(sequence.delivered(), 3);
        let next = step(sequence.offer(&events([4]), Via::Writer, WATCHED));
        assert_eq!(next, released([4]));
    }

    #[test]
    fn early_events_are_bounded() {
        let mut sequence = Sequence::new(0, true);
        // The writer runs far ahead of a stalled notification stream.
        let far = MAX_EARLY_EVENTS as u64 + 10;
        for seq in 2..=far {
            sequence.offer(&events([seq]), Via::Writer, WATCHED);
        }
        assert!(sequence.early.len() <= MAX_EARLY_EVENTS);
        // The stream comes back with 1; only 1 is vouched for yet.
        let one = step(sequence.offer(&events([1]), Via::Notification, WATCHED));
        assert_eq!(one, released([1]));
        // A poll vouches for the rest: what was dropped is read.
        let wanted = step(sequence.head(far, Cause::Poll, WATCHED)).read;
        assert_eq!(wanted, Some(read(1, far, Cause::Poll)));
        let page = step(sequence.page(read(1, far, Cause::Poll), &events(2..=far), false, WATCHED));
        assert_eq!(page.seqs, (2..=far).collect::<Vec<_>>());
    }
}
