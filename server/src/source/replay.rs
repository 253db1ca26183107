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

use std::pin::pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::OwnedSemaphorePermit;

use super::{Pacer, Source};
use crate::disconnect::Disconnect;
use crate::protocol::{Event, Item, Name};
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
    let mut pacer = Pacer::new(rate);
    while let Some(batch) = batches.next().await {
        rows_read.inc_by(batch.iter().filter(|row| row.is_ok()).count() as u64);
        for trade in batch {
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
        pts: None,
        data: Bytes::from(data),
    }
}
