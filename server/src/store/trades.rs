//! The replay dataset: a wallet's trades, numbered 1, 2, 3 … per wallet,
//! seeded synthetically one chunk (one transaction) at a time, and read
//! back through a [`Cursor`] (one query whose rows stream straight from the
//! database as they are pulled) or, up to a bound, all at once.
//!
//! A cursor pulls its rows with sqlx's `fetch()` stream on a connection it
//! holds for the whole replay, and sqlx reads them only as fast as that
//! stream is polled, so a consumer that stops polling pauses the query:
//!
//! - SQLite (sqlx-sqlite 0.9, `connection/worker.rs`): the connection's
//!   worker thread steps the statement and sends each row into a
//!   `flume::bounded` channel of `row_buffer_size` rows (50 by default);
//!   when it is full the worker blocks in `send` and steps no further.
//! - PostgreSQL (sqlx-postgres 0.9, `connection/executor.rs`): the rows are
//!   `DataRow` messages decoded one by one from the connection's buffered
//!   socket as the stream is polled; unread, they fill the kernel's socket
//!   buffers and the server's backend blocks in its own `send`.
//!
//! Either way a paused replay holds at most a channel or a socket buffer of
//! rows, whatever the count. The price: the connection is the replay's
//! until it ends, so replays are limited (`--max-replays`, below the pool
//! size), and on SQLite the statement is an open read transaction for as
//! long as the replay lasts, which holds WAL checkpoints back: the WAL file
//! grows with the writes made meanwhile and is only checkpointed past them
//! once the replay ends.

use futures_util::{Stream, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::{Error, Pool, Store, from_db, to_db, with_pool};

/// Trades per `INSERT` statement (7 bind parameters each).
const INSERT_CHUNK: u64 = 1000;

/// The first synthetic trade's time: 2026-01-01T00:00:00Z, in µs.
const FIRST_TRADE_TS: i64 = 1_767_225_600_000_000;

/// Markets and a reference price for each.
const MARKETS: [(&str, f64); 6] = [
    ("BTC-USD", 97_000.0),
    ("ETH-USD", 3_400.0),
    ("SOL-USD", 180.0),
    ("ARB-USD", 1.1),
    ("OP-USD", 2.2),
    ("DOGE-USD", 0.35),
];

/// One trade of a wallet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Trade {
    /// 1, 2, 3 … per wallet.
    pub id: i64,
    /// When it happened, µs since the Unix epoch.
    pub ts: i64,
    /// The market, such as `BTC-USD`.
    pub market: String,
    /// `buy` or `sell`.
    pub side: String,
    /// Price in the quote currency.
    pub price: f64,
    /// Quantity in the base currency.
    pub qty: f64,
}

impl Trade {
    /// The `id`-th synthetic trade of `wallet`: the same on every call.
    pub fn synthetic(wallet: &str, id: i64) -> Self {
        let mut rng = fastrand::Rng::with_seed(
            fnv1a(wallet.as_bytes()) ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let (market, reference) = MARKETS[rng.usize(..MARKETS.len())];
        let price = reference * (1.0 + (rng.f64() - 0.5) * 0.02);
        Self {
            id,
            ts: FIRST_TRADE_TS + id * 1_000_000,
            market: market.to_owned(),
            side: if rng.bool() { "buy" } else { "sell" }.to_owned(),
            price: (price * 100.0).round() / 100.0,
            qty: (rng.f64() * 10.0 * 10_000.0).round() / 10_000.0,
        }
    }
}

/// A trade as it goes on the wire: the trade's fields and its wallet.
#[derive(Debug, serde::Serialize)]
pub struct WalletTrade<'a> {
    /// The wallet.
    pub wallet: &'a str,
    /// The trade.
    #[serde(flatten)]
    pub trade: &'a Trade,
}

/// FNV-1a, 64-bit: a stable hash of the wallet to seed its trades.
/// Hand-written because std's hashers promise no stability across releases,
/// and a dataset must be the same on every machine.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Store {
    /// Appends `count` synthetic trades after `wallet`'s last one, in one
    /// transaction: one chunk of a seed. Returns the wallet's total
    /// afterwards. Nothing is appended if it fails.
    ///
    /// Chunks of one wallet take turns (SQLite: [`Store::write_turn`] and
    /// its one write lock, taken at `BEGIN IMMEDIATE`; PostgreSQL: a lock
    /// on the wallet for the transaction), and each reads the wallet's last
    /// id once its turn has come: two seeds of one wallet at once both add
    /// all their trades, and its ids stay 1, 2, 3 … without holes.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn append_trades(&self, wallet: &str, count: u64) -> Result<u64, Error> {
        let _turn = self.write_turn().await;
        let total = with_pool!(self, pool => {
            let mut tx = pool.begin_appending(wallet).await?;
            let last: i64 = sqlx::query_scalar(LAST_ID)
                .bind(wallet)
                .fetch_one(&mut *tx)
                .await?;
            let end = last.saturating_add(to_db(count));
            let mut start = last + 1;
            while start <= end {
                let stop = (start + to_db(INSERT_CHUNK) - 1).min(end);
                let mut insert = QueryBuilder::new("INSERT INTO trades (wallet, id, ts, market, side, price, qty) ");
                insert.push_values((start..=stop).map(|id| Trade::synthetic(wallet, id)), |mut row, trade| {
                    row.push_bind(wallet)
                        .push_bind(trade.id)
                        .push_bind(trade.ts)
                        .push_bind(trade.market)
                        .push_bind(trade.side)
                        .push_bind(trade.price)
                        .push_bind(trade.qty);
                });
                insert.build().execute(&mut *tx).await?;
                start = stop + 1;
            }
            tx.commit().await?;
            end
        });
        Ok(from_db(total))
    }

    /// Brings the database's statistics of the trades up to date, after a
    /// seed (PostgreSQL; nothing to do on SQLite).
    ///
    /// PostgreSQL plans a replay from the table's statistics: without them
    /// it takes a wallet's rows for a few dozen and sorts them all before
    /// the first row (a bitmap scan), instead of reading them in order from
    /// the primary key (an index scan). SQLite reads the key in order
    /// either way.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn analyze_trades(&self) -> Result<(), Error> {
        if let Pool::Postgres(pool) = &self.pool {
            sqlx::query("ANALYZE trades").execute(pool).await?;
        }
        Ok(())
    }

    /// How many trades `wallet` holds: its last id, as ids run 1, 2, 3 …
    /// without holes. One lookup in the primary key, whatever the count.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn trade_count(&self, wallet: &str) -> Result<u64, Error> {
        let last: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(LAST_ID)
                .bind(wallet)
                .fetch_one(pool)
                .await?
        });
        Ok(from_db(last))
    }

    /// A connection of the pool, held for one replay until the cursor is
    /// dropped.
    ///
    /// # Errors
    ///
    /// No connection could be had (the database failed, or the pool's
    /// acquire timeout passed).
    pub async fn cursor(&self) -> Result<Cursor, Error> {
        let connection = match &self.pool {
            Pool::Sqlite(pool) => Held::Sqlite(pool.acquire().await?),
            Pool::Postgres(pool) => Held::Postgres(pool.acquire().await?),
        };
        Ok(Cursor {
            connection,
            drained: false,
        })
    }

    /// `wallet`'s trades with ids up to `last`, in order, in memory at
    /// once: at most `last` of them, however many the wallet holds.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn trades_through(&self, wallet: &str, last: u64) -> Result<Vec<Trade>, Error> {
        let trades = with_pool!(self, pool => {
            sqlx::query_as("SELECT id, ts, market, side, price, qty FROM trades WHERE wallet = $1 AND id <= $2 ORDER BY id")
                .bind(wallet)
                .bind(to_db(last))
                .fetch_all(pool)
                .await?
        });
        Ok(trades)
    }
}

/// How a chunk's transaction begins on each backend: holding what makes
/// the chunks of one wallet take turns ([`Store::append_trades`]).
trait BeginAppending {
    /// The backend.
    type Database: sqlx::Database;

    /// A transaction in which no other chunk of `wallet` runs.
    async fn begin_appending(
        &self,
        wallet: &str,
    ) -> Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginAppending for sqlx::SqlitePool {
    type Database = Sqlite;

    /// Takes the write lock at once: a deferred transaction would take it
    /// only at its first insert, after reading the last id from a snapshot
    /// that another writer (retention) may have made stale meanwhile, and
    /// SQLite refuses such an upgrade (`SQLITE_BUSY_SNAPSHOT`) instead of
    /// waiting.
    async fn begin_appending(
        &self,
        _wallet: &str,
    ) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginAppending for sqlx::PgPool {
    type Database = Postgres;

    /// Takes a lock on the wallet until the transaction ends (an advisory
    /// lock, which no row needs to exist for): a chunk that waited for it
    /// then reads the last id the previous chunk committed.
    async fn begin_appending(
        &self,
        wallet: &str,
    ) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(WALLET_LOCKS)
            .bind(wallet)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// The class of PostgreSQL's advisory locks (two 32-bit keys: this class
/// and a hash of the wallet) that seed chunks take on their wallet. Locks
/// of one 64-bit key are another key space, so they cannot collide.
const WALLET_LOCKS: i32 = 0x5452_4144; // "TRAD"

/// A wallet's last trade id (0 without trades): its count, as ids run 1,
/// 2, 3 … without holes.
const LAST_ID: &str = "SELECT COALESCE(MAX(id), 0) FROM trades WHERE wallet = $1";

/// A wallet's trades after an id, in order.
const TRADES_AFTER: &str = "SELECT id, ts, market, side, price, qty FROM trades \
                            WHERE wallet = $1 AND id > $2 ORDER BY id";

/// One database connection held for one replay: [`Cursor::trades`] runs
/// the replay's query on it, and dropping the cursor gives the connection
/// back, however the replay ended.
///
/// A cursor dropped before [`Cursor::finish`] (the reader went away, the
/// query failed) had its query cut short. On SQLite the worker stops
/// stepping once the row channel's receiver is gone, and the connection is
/// returned to the pool as is. On PostgreSQL the connection is closed
/// instead (the pool opens a fresh one when needed): returning it would
/// make the pool's release check read and discard every row left of the
/// result first, holding the connection for as long as a full replay would.
#[derive(Debug)]
pub struct Cursor {
    connection: Held,
    /// Every row of the query was read: the connection is clean.
    drained: bool,
}

/// The connection a [`Cursor`] holds, of the backend in use.
#[derive(Debug)]
enum Held {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Cursor {
    /// `wallet`'s trades with `id > after`, in order, read from the
    /// database as the stream is polled (see the module docs).
    pub fn trades<'c>(
        &'c mut self,
        wallet: &'c str,
        after: u64,
    ) -> impl Stream<Item = Result<Trade, Error>> + Send + 'c {
        let rows = match &mut self.connection {
            Held::Sqlite(connection) => sqlx::query_as(TRADES_AFTER)
                .bind(wallet)
                .bind(to_db(after))
                .fetch(&mut **connection),
            // Planned for this wallet and `after` each time (an unnamed
            // statement): a cached generic plan could be the one that sorts
            // the whole range before yielding its first row.
            Held::Postgres(connection) => sqlx::query_as(TRADES_AFTER)
                .persistent(false)
                .bind(wallet)
                .bind(to_db(after))
                .fetch(&mut **connection),
        };
        rows.map_err(Error::from)
    }

    /// Records that [`Cursor::trades`] ran to its end, and gives the
    /// connection back to the pool.
    pub fn finish(mut self) {
        self.drained = true;
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if let (false, Held::Postgres(connection)) = (self.drained, &mut self.connection) {
            connection.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_trades_are_deterministic_and_plausible() {
        let a = Trade::synthetic("w1", 42);
        assert_eq!(a, Trade::synthetic("w1", 42));
        assert_ne!(a, Trade::synthetic("w2", 42));
        assert!(a.price > 0.0 && a.qty >= 0.0 && a.qty <= 10.0);
        assert!(a.side == "buy" || a.side == "sell");
        assert_eq!(a.ts, FIRST_TRADE_TS + 42_000_000);
    }
}
