//! Replay of a stored dataset: a wallet's trades streamed straight from a
//! database cursor ([`crate::store::Cursor`]): one query on a connection
//! held for the replay, its rows pulled as they come, converted to events
//! in batches of whatever rows are ready (at most [`BATCH_ROWS`]) and
//! pushed into the connection's queue.
//!
//! Backpressure: when the queue is full, [`Sender::push`] waits and the
//! row stream is not polled, so the cursor pauses where it is (sqlx reads
//! no further: see the store's module docs). Memory stays flat whatever
//! the number of rows: the queue, one batch and the database driver's
//! bounded row buffer. A reader that stalls for good is dropped by the
//! write deadline; however the stream ends, the source's future is dropped
//! with its cursor, which gives the connection back to the pool, and its
//! permit of the replay limit.
//!
//! Fairness: each row spends a unit of the task's scheduling budget. The
//! cursor's rows often arrive faster than they are converted and the
//! socket takes them as fast (the database driver spends little or none of
//! the budget: one read brings many rows, and the queue, drained in the
//! same task, always has room), so without it one replay held its worker
//! thread, and the I/O and timers of every stream waiting on it, for as
//! long as the client's socket buffers took rows: 0.4-0.7 s in a debug
//! build (`tests/replay.rs` saw its first row that late on another
//! connection). The budget is spent here, per row, rather than by the
//! queue per event: a queue that did so cost the cheap ticker 1.4x the
//! server CPU per event in the `throughput` preset (side by side, `ab`).

use std::pin::pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::coop;

use super::{Pacer, Source};
use crate::disconnect::Disconnect;
use crate::protocol::{Event, Item, Name, Stamp};
use crate::queue::Sender;
use crate::store::{self, Store, Trade, WalletTrade};

/// Most rows converted to events in one batch: the rows the cursor has
/// ready, without waiting for more.
pub const BATCH_ROWS: usize = 64;

/// One replay of a wallet's trades.
#[derive(Debug)]
pub struct Replay {
    /// The wallet.
    pub wallet: Name,
    /// Resume after this trade id (0: from the first).
    pub after: u64,
    /// Trades per second; 0 means as fast as the client reads.
    pub rate: u64,
    /// Where the trades are.
    pub store: Store,
    /// Rows read from the store.
    pub rows_read: Counter,
    /// This replay's place under `--max-replays`, held until it ends.
    pub permit: OwnedSemaphorePermit,
}

impl Source for Replay {
    async fn run(self, mut queue: Sender) {
        // Held until the end, the cursor's connection given back before it.
        let _permit = self.permit;
        if let Err(e) = stream(
            &self.store,
            &self.wallet,
            self.after,
            self.rate,
            &self.rows_read,
            &mut queue,
        )
        .await
        {
            tracing::error!(wallet = %self.wallet, error = %e, "replay lost its store");
            queue.abort(Disconnect::StorageUnavailable);
        }
    }
}

/// Streams `wallet`'s trades after `after` into `queue` at `rate` (0:
/// unpaced) until the last or until the stream has gone.
async fn stream(
    store: &Store,
    wallet: &Name,
    after: u64,
    rate: u64,
    rows_read: &Counter,
    queue: &mut Sender,
) -> Result<(), store::Error> {
    let mut cursor = store.cursor().await?;
    let rows = cursor.trades(wallet.as_str(), after);
    if queue_all(rows, wallet, rate, rows_read, queue).await? {
        cursor.finish();
    }
    Ok(())
}

/// Queues every row of `rows` as an event, in batches of the rows ready;
/// returns whether all were queued (false: the stream has gone).
async fn queue_all(
    rows: impl Stream<Item = Result<Trade, store::Error>>,
    wallet: &Name,
    rate: u64,
    rows_read: &Counter,
    queue: &mut Sender,
) -> Result<bool, store::Error> {
    let mut batches = pin!(rows.ready_chunks(BATCH_ROWS));
    let mut pacer = Pacer::new(rate, None);
    while let Some(batch) = batches.next().await {
        rows_read.inc_by(batch.iter().filter(|row| row.is_ok()).count() as u64);
        for trade in batch {
            coop::consume_budget().await;
            pacer.next().await;
            if queue
                .push(Item::Event(event(wallet, &trade?)))
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// `trade` of `wallet` as an event: its id is the `seq`.
fn event(wallet: &Name, trade: &Trade) -> Event {
    let data = serde_json::to_vec(&WalletTrade {
        wallet: wallet.as_str(),
        trade,
    })
    .expect("in-memory JSON serialization");
    Event {
        seq: u64::try_from(trade.id).unwrap_or(0),
        stamp: Stamp::None,
        data: Bytes::from(data),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::stream;

    use super::*;
    use crate::queue::{self, Limits};

    /// Rows that are always ready, into a queue that always has room: the
    /// replay never has to wait, yet the task spawned beside it runs long
    /// before the last row is queued.
    #[tokio::test]
    async fn a_replay_that_never_waits_still_yields_to_other_tasks() {
        const ROWS: usize = 10_000;
        let (mut tx, rx) = queue::channel(Limits {
            max_events: ROWS,
            max_bytes: usize::MAX,
        });
        let probe = rx.probe();
        let rows = stream::iter((1..=ROWS as i64).map(|id| Ok(Trade::synthetic("w", id))));
        let wallet = Name::parse("w").unwrap();
        let replay =
            tokio::spawn(
                async move { queue_all(rows, &wallet, 0, &Counter::default(), &mut tx).await },
            );
        let queued_when_other_ran = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&queued_when_other_ran);
        let other = tokio::spawn(async move {
            seen.store(probe.depth().unwrap().events, Ordering::Relaxed);
        });
        assert!(matches!(replay.await.unwrap(), Ok(true)));
        other.await.unwrap();
        assert_eq!(rx.probe().depth().unwrap().events, ROWS);
        let queued = queued_when_other_ran.load(Ordering::Relaxed);
        assert!(queued < ROWS / 10, "the other task ran after {queued} rows");
    }
}
