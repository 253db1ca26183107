//! Topic events: append in one transaction per group (idempotency keys
//! resolved inside it: [`super::idempotency`]), read a range after a
//! `seq`, the topic's head.
//!
//! `seq` is contiguous per topic and assigned inside the appending
//! transaction from the `topics.head` row, so it is durable with the event
//! and never reused, even after retention has deleted every event. The
//! upsert of a head locks its row until the commit: two transactions
//! appending to one topic (from two nodes of a cluster) commit in the order
//! of the `seq`s they took. Heads are locked in topic name order, so two
//! groups touching the same topics never wait for each other in a cycle.
//! On PostgreSQL the transaction also notifies the other nodes
//! ([`super::notification`]).

use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row};

use super::idempotency::{self, Group, IdempotencyKey, Outcome};
use super::notification::{self, CHANNEL};
use super::{Error, Store, from_db, to_db, with_pool};
use crate::protocol::{Event, Stamp};

/// Events per `INSERT` statement (4 bind parameters each, well under every
/// backend's limit).
const INSERT_CHUNK: usize = 1000;

/// One event to append.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// Its topic (already validated).
    pub topic: &'a str,
    /// When the server accepted it, µs since the Unix epoch.
    pub pts: u64,
    /// Its payload: one line of JSON.
    pub data: &'a str,
    /// Its idempotency key, if it has one.
    pub key: Option<IdempotencyKey<'a>>,
}

/// A committed group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// What became of each append, in the order they were given: stored
    /// under a `seq`, or (by its idempotency key) not stored.
    pub outcomes: Vec<Outcome>,
    /// Notifications sent to the other nodes (PostgreSQL): one, unless the
    /// group's topics did not fit one payload; none on SQLite.
    pub notifications: usize,
}

/// What a group adds to one topic's row besides its head: the bytes of its
/// payloads (taken back for those its keys do not store:
/// [`super::idempotency`]) and its latest `pts`.
#[derive(Debug, Default)]
struct Tally {
    bytes: u64,
    last_pts: u64,
}

impl Tally {
    fn of<'a, 'b: 'a>(appends: impl Iterator<Item = &'a Append<'b>>) -> Self {
        appends.fold(Self::default(), |tally, append| Self {
            bytes: tally.bytes + append.data.len() as u64,
            last_pts: tally.last_pts.max(append.pts),
        })
    }
}

/// Heads read per query.
pub(super) const HEADS_CHUNK: usize = 1000;

impl Store {
    /// Appends every event of `batch` in one transaction, and returns what
    /// became of each, in order (and, on PostgreSQL, how many notifications
    /// the commit sent). An append with an idempotency key held within
    /// `key_window` (as of the batch's latest `pts`) is not stored: it is a
    /// replay of the key's `seq`, or a mismatch ([`super::idempotency`]).
    /// Nothing is appended if it fails.
    ///
    /// # Errors
    ///
    /// The database failed; the transaction was rolled back.
    pub async fn append(
        &self,
        batch: &[Append<'_>],
        key_window: Duration,
    ) -> Result<Commit, Error> {
        let group = Group::new(batch);
        let keys = (batch, idempotency::cutoff(batch, key_window));
        let commit = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut resolved = vec![None; batch.len()];
            // By name: the order in which head rows are locked.
            for (topic, slots) in &group.slots {
                let count = slots.len() as u64;
                let tally = Tally::of(slots.iter().map(|&i| &batch[i]));
                let head: i64 = sqlx::query_scalar(
                    "INSERT INTO topics (name, head, bytes, last_pts) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET head = topics.head + $2, \
                     bytes = topics.bytes + $3, last_pts = $4 RETURNING head",
                )
                .bind(*topic)
                .bind(to_db(count))
                .bind(to_db(tally.bytes))
                .bind(to_db(tally.last_pts))
                .fetch_one(&mut *tx)
                .await?;
                // The first seq of this group for the topic.
                let first = from_db(head) - count + 1;
                let numbered = idempotency::resolve(&mut *tx, keys, topic, slots, first).await?;
                for (&i, slot) in slots.iter().zip(numbered) {
                    resolved[i] = Some(slot);
                }
            }
            let outcomes = group.outcomes(batch, &resolved);
            let (stored, seqs): (Vec<Append<'_>>, Vec<u64>) = batch
                .iter()
                .zip(&outcomes)
                .filter_map(|(append, outcome)| match outcome {
                    Outcome::Stored(seq) => Some((*append, *seq)),
                    Outcome::Replayed(_) | Outcome::Mismatch => None,
                })
                .unzip();
            for (appends, seqs) in stored.chunks(INSERT_CHUNK).zip(seqs.chunks(INSERT_CHUNK)) {
                let mut insert = QueryBuilder::new("INSERT INTO events (topic, seq, pts, data) ");
                insert.push_values(appends.iter().zip(seqs), |mut row, (append, &seq)| {
                    row.push_bind(append.topic)
                        .push_bind(to_db(seq))
                        .push_bind(to_db(append.pts))
                        .push_bind(append.data);
                });
                insert.build().execute(&mut *tx).await?;
            }
            let notifications = if stored.is_empty() {
                0
            } else {
                Notify::notify(&mut *tx, &stored, &seqs, &self.origin).await?
            };
            tx.commit().await?;
            Commit { outcomes, notifications }
        });
        Ok(commit)
    }

    /// The heads of `topics` that have one (a topic never published has
    /// none), in no particular order.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn heads(&self, topics: &[String]) -> Result<Vec<(String, u64)>, Error> {
        let mut heads = Vec::with_capacity(topics.len());
        for chunk in topics.chunks(HEADS_CHUNK) {
            let rows: Vec<(String, i64)> = with_pool!(self, pool => {
                let mut query = QueryBuilder::new("SELECT name, head FROM topics WHERE name IN (");
                let mut names = query.separated(", ");
                for topic in chunk {
                    names.push_bind(topic.as_str());
                }
                query.push(")");
                query.build_query_as().fetch_all(pool).await?
            });
            heads.extend(rows.into_iter().map(|(name, head)| (name, from_db(head))));
        }
        Ok(heads)
    }

    /// Up to `limit` events of `topic` with `seq > after`, in order.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn read(&self, topic: &str, after: u64, limit: u32) -> Result<Vec<Event>, Error> {
        let rows = with_pool!(self, pool => {
            sqlx::query("SELECT seq, pts, data FROM events WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                .bind(topic)
                .bind(to_db(after))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| -> Result<Event, sqlx::Error> {
                    Ok(Event {
                        seq: from_db(row.try_get(0)?),
                        stamp: Stamp::Pts(from_db(row.try_get(1)?)),
                        data: Bytes::from(row.try_get::<String, _>(2)?),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(rows)
    }

    /// The last `seq` assigned in `topic` (0 for a topic never published).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn head(&self, topic: &str) -> Result<u64, Error> {
        let head: Option<i64> = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT head FROM topics WHERE name = $1")
                .bind(topic)
                .fetch_optional(pool)
                .await?
        });
        Ok(head.map_or(0, from_db))
    }
}

/// What a commit tells the other nodes: nothing on SQLite (one node
/// only), a `pg_notify` per payload on PostgreSQL.
pub(super) trait Notify {
    /// Notifies the commit of `batch` (given `seqs`) by `origin` inside its
    /// transaction on this connection; returns how many notifications it
    /// sent.
    fn notify(
        &mut self,
        batch: &[Append<'_>],
        seqs: &[u64],
        origin: &str,
    ) -> impl Future<Output = Result<usize, sqlx::Error>> + Send;

    /// Notifies the deletion of `topic` at `head` by `origin` inside its
    /// transaction on this connection.
    fn notify_deletion(
        &mut self,
        topic: &str,
        head: u64,
        origin: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

impl Notify for SqliteConnection {
    async fn notify(&mut self, _: &[Append<'_>], _: &[u64], _: &str) -> Result<usize, sqlx::Error> {
        Ok(0)
    }

    async fn notify_deletion(&mut self, _: &str, _: u64, _: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl Notify for PgConnection {
    async fn notify(
        &mut self,
        batch: &[Append<'_>],
        seqs: &[u64],
        origin: &str,
    ) -> Result<usize, sqlx::Error> {
        let payloads = notification::encode(batch, seqs, origin);
        for payload in &payloads {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&mut *self)
                .await?;
        }
        Ok(payloads.len())
    }

    async fn notify_deletion(
        &mut self,
        topic: &str,
        head: u64,
        origin: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(notification::encode_deletion(topic, head, origin))
            .execute(&mut *self)
            .await?;
        Ok(())
    }
}
