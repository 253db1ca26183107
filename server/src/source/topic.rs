//! A topic subscription: history from the store, then the live tail from
//! the hub, with no gap and no duplicate at the handover, and back to the
//! store whenever the subscriber falls behind.
//!
//! The source reads the store from its cursor, page by page, into the
//! queue (pausing when the queue is full), until it has caught up; it then
//! joins the hub, which refuses the join if events after the cursor were
//! fanned out meanwhile (the source reads again). Live, the hub pushes into
//! the queue directly; if the queue overflows, the hub hands the queue back
//! with the last `seq` it pushed, and by policy the source either catches up
//! from the store again (nothing lost) or ends the stream. A range the store
//! no longer holds is announced with a gap notice, never skipped silently,
//! and so is a resume point beyond the topic's head, or a store that went
//! back below what the subscriber received: the stream continues from the
//! head.

use std::future::Future;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use super::Source;
use crate::disconnect::Disconnect;
use crate::hub::{Hub, Why};
use crate::metrics::TopicMetrics;
use crate::protocol::{Gap, GapReason, Item, Name};
use crate::queue::{Closed, Sender};
use crate::store::{self, Store};

/// Events read from the store per query.
const PAGE: u32 = 256;

/// What happens to a subscriber whose queue overflows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// It catches up from the store and rejoins the live tail: nothing lost.
    CatchUp,
    /// It is disconnected (WebSocket 1008) and may resume from its last seq.
    Disconnect,
}

impl OverflowPolicy {
    /// The policy named `name` (`catch-up`, `disconnect`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "catch-up" => Some(OverflowPolicy::CatchUp),
            "disconnect" => Some(OverflowPolicy::Disconnect),
            _ => None,
        }
    }
}

/// One subscription to a topic.
#[derive(Debug)]
pub struct Topic {
    /// The topic.
    pub name: Name,
    /// Resume after this `seq` (the HTTP layer puts the head here for a
    /// subscriber that asked for new events only).
    pub since: u64,
    /// What to do on overflow.
    pub policy: OverflowPolicy,
    /// What every subscription shares: one pointer per subscriber, which
    /// holds this for as long as it is open.
    pub context: Arc<TopicContext>,
}

/// Where subscriptions read from and what they count.
#[derive(Debug)]
pub struct TopicContext {
    /// Where history comes from.
    pub store: Store,
    /// Where the live tail comes from.
    pub hub: Arc<Hub>,
    /// Gap notices sent.
    pub metrics: TopicMetrics,
    /// `streamgauge_slow_consumers_total{action="catch_up"}`.
    pub catch_ups: Counter,
}

/// Why the subscription stopped.
enum Stop {
    /// The stream is gone.
    Closed,
    /// The store failed.
    Storage(store::Error),
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Self {
        Stop::Closed
    }
}

impl From<store::Error> for Stop {
    fn from(e: store::Error) -> Self {
        Stop::Storage(e)
    }
}

impl Source for Topic {
    // An `async` block rather than an `async fn`, which would keep a second
    // copy of `self` for the subscription's whole life. Reading the store
    // takes far more state than waiting on the hub, so those futures are
    // boxed while they run: a live subscriber holds only its membership.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps a second copy of its arguments"
    )]
    fn run(self, mut queue: Sender) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let mut cursor = match Box::pin(self.start(&mut queue)).await {
                Ok(cursor) => cursor,
                Err(stop) => return self.stop(queue, stop),
            };
            loop {
                // Noted before the store is read: a deletion after it makes
                // the join below fail, and the store is read again.
                let generation = self.context.hub.generation(self.name.as_str());
                cursor = match Box::pin(self.catch_up(&mut queue, cursor)).await {
                    Ok(cursor) => cursor,
                    Err(stop) => return self.stop(queue, stop),
                };
                let joining = (cursor, generation);
                let mut membership = match self.context.hub.join(&self.name, joining, queue) {
                    Ok(membership) => membership,
                    Err(refused) => {
                        queue = refused.queue;
                        if let Err(stop) = Box::pin(self.after_refusal(refused.delivered)).await {
                            return self.stop(queue, stop);
                        }
                        continue;
                    }
                };
                let Some(back) = membership.handed_back().await else {
                    return; // The stream is gone.
                };
                queue = back.queue;
                cursor = back.cursor;
                match back.why {
                    Why::Lagged => match self.policy {
                        OverflowPolicy::CatchUp => {
                            self.context.catch_ups.inc();
                        }
                        OverflowPolicy::Disconnect => return queue.abort(Disconnect::Lagged),
                    },
                    Why::Resync => {}
                    Why::Deleted(head) => return Box::pin(self.deleted(queue, head)).await,
                }
            }
        }
    }
}

impl Topic {
    /// Ends the subscription: a store failure ends the stream with its
    /// reason; a closed queue needs nothing more.
    fn stop(&self, queue: Sender, stop: Stop) {
        if let Stop::Storage(e) = stop {
            tracing::error!(topic = %self.name, error = %e, "topic subscription lost its store");
            queue.abort(Disconnect::StorageUnavailable);
        }
    }

    /// The topic was deleted at `head`: its whole history is announced gone,
    /// then the stream ends.
    async fn deleted(&self, mut queue: Sender, head: u64) {
        if self
            .gap(&mut queue, 1, head.max(1), GapReason::Deleted)
            .await
            .is_ok()
        {
            queue.finish(Disconnect::TopicDeleted);
        }
    }

    /// The cursor to start from, after a gap notice if `since` is beyond
    /// the head.
    async fn start(&self, queue: &mut Sender) -> Result<u64, Stop> {
        let head = self.context.store.head(self.name.as_str()).await?;
        if self.since > head {
            self.gap(queue, head + 1, self.since, GapReason::BeyondHead)
                .await?;
            return Ok(head);
        }
        Ok(self.since)
    }

    /// After the hub refused a join because it fanned out events up to
    /// `delivered`: those were committed, so a head below them now means
    /// the store went back (restored, failed over). The hub then starts the
    /// topic again from the head; otherwise every join would be refused,
    /// for good.
    async fn after_refusal(&self, delivered: u64) -> Result<(), Stop> {
        let head = self.context.store.head(self.name.as_str()).await?;
        if head < delivered {
            tracing::warn!(
                topic = %self.name,
                head,
                delivered,
                "the store's head went back below what was delivered; starting the topic again from it"
            );
            self.context.hub.reset(self.name.as_str(), head);
        }
        Ok(())
    }

    /// Reads the store from `cursor` into the queue until it has nothing
    /// more; returns the new cursor.
    async fn catch_up(&self, queue: &mut Sender, mut cursor: u64) -> Result<u64, Stop> {
        loop {
            // The head is read first: every event it counts was committed
            // before the page is read, so one missing from the page was
            // deleted (by retention), not merely not yet visible.
            let head = self.context.store.head(self.name.as_str()).await?;
            if head < cursor {
                // The store went back below what this subscriber received
                // (a database restored or failed over): said, never waited
                // out in silence.
                self.gap(queue, head + 1, cursor, GapReason::BeyondHead)
                    .await?;
                return Ok(head);
            }
            if head == cursor {
                return Ok(cursor);
            }
            let page = self
                .context
                .store
                .read(self.name.as_str(), cursor, PAGE)
                .await?;
            if page.is_empty() {
                self.gap(queue, cursor + 1, head, GapReason::Retention)
                    .await?;
                cursor = head;
            }
            for event in page {
                if event.seq > cursor + 1 {
                    self.gap(queue, cursor + 1, event.seq - 1, GapReason::Retention)
                        .await?;
                }
                cursor = event.seq;
                queue.push(Item::Event(event)).await?;
            }
        }
    }

    async fn gap(
        &self,
        queue: &mut Sender,
        from: u64,
        to: u64,
        reason: GapReason,
    ) -> Result<(), Closed> {
        self.context.metrics.gap_sent(reason.as_str());
        queue.push(Item::Gap(Gap { from, to, reason })).await
    }
}
