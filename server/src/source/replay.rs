//! Replay of a stored dataset: a wallet's trades streamed straight from the
//! store in pages of a keyset cursor, each page pushed into the queue before
//! the next is read. A slow reader pauses the reads, so memory stays flat
//! whatever the number of rows, and no database connection is held while
//! the reader catches up.

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use super::{Pacer, Source};
use crate::disconnect::Disconnect;
use crate::protocol::{Event, Item, Name};
use crate::queue::Sender;
use crate::store::{Store, WalletTrade};

/// Trades read from the store per query.
const PAGE: u32 = 500;

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
}

impl Source for Replay {
    async fn run(self, mut queue: Sender) {
        let mut pacer = Pacer::new(self.rate);
        let mut cursor = self.after;
        loop {
            let page = match self
                .store
                .trades_after(self.wallet.as_str(), cursor, PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(wallet = %self.wallet, error = %e, "replay lost its store");
                    return queue.abort(Disconnect::StorageUnavailable);
                }
            };
            self.rows_read.inc_by(page.len() as u64);
            let last_page = page.len() < PAGE as usize;
            for trade in &page {
                pacer.next().await;
                let data = serde_json::to_vec(&WalletTrade {
                    wallet: self.wallet.as_str(),
                    trade,
                })
                .expect("in-memory JSON serialization");
                cursor = u64::try_from(trade.id).unwrap_or(0);
                let event = Event {
                    seq: cursor,
                    pts: None,
                    data: Bytes::from(data),
                };
                if queue.push(Item::Event(event)).await.is_err() {
                    return;
                }
            }
            if last_page {
                return;
            }
        }
    }
}
