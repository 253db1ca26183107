//! Topic events: append in one transaction per group (idempotency keys
//! resolved inside it: [`super::idempotency`]), read a range after a
//! `seq`, the topic's head, and retention.
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
use crate::protocol::Event;

/// Events per `INSERT` statement (4 bind parameters each, well under every
/// backend's limit).
const INSERT_CHUNK: usize = 1000;

/// Rows per retention `DELETE`, so a large purge never holds the write lock
/// for long.
pub const DELETE_CHUNK: u64 = 10_000;

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

/// Heads read per query.
const HEADS_CHUNK: usize = 1000;

/// How long events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept per topic (the newest).
    pub max_events: u64,
    /// Oldest event kept, by `pts`.
    pub max_age: Duration,
}

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
                let head: i64 = sqlx::query_scalar(
                    "INSERT INTO topics (name, head) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET head = topics.head + $2 RETURNING head",
                )
                .bind(*topic)
                .bind(to_db(count))
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
                        pts: Some(from_db(row.try_get(1)?)),
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

    /// Deletes events beyond `retention` as of `now` (µs since the Unix
    /// epoch), oldest first, in `DELETE`s of at most [`DELETE_CHUNK`] rows
    /// (each its own transaction); returns how many.
    ///
    /// # Errors
    ///
    /// The database failed; what was deleted before stays deleted.
    pub async fn trim(&self, retention: Retention, now: u64) -> Result<u64, Error> {
        let max_age = u64::try_from(retention.max_age.as_micros()).unwrap_or(u64::MAX);
        let cutoff = to_db(now.saturating_sub(max_age));
        let max_events = to_db(retention.max_events);
        let chunk = to_db(DELETE_CHUNK);
        let deleted = with_pool!(self, pool => {
            let mut deleted = 0;
            // Only the topics that still hold an event beyond the count: a
            // topic trimmed before costs nothing here (one index probe).
            let over: Vec<(String, i64)> = sqlx::query_as(
                "SELECT name, head - $1 FROM topics WHERE head > $1 AND EXISTS \
                 (SELECT 1 FROM events WHERE topic = topics.name AND seq <= topics.head - $1)",
            )
            .bind(max_events)
            .fetch_all(pool)
            .await?;
            for (topic, last) in &over {
                deleted += in_chunks(move || async move {
                    sqlx::query(
                        "DELETE FROM events WHERE (topic, seq) IN \
                         (SELECT topic, seq FROM events WHERE topic = $1 AND seq <= $2 \
                          ORDER BY seq LIMIT $3)",
                    )
                    .bind(topic)
                    .bind(*last)
                    .bind(chunk)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
                })
                .await?;
            }
            deleted += in_chunks(move || async move {
                sqlx::query(
                    "DELETE FROM events WHERE (topic, seq) IN \
                     (SELECT topic, seq FROM events WHERE pts < $1 LIMIT $2)",
                )
                .bind(cutoff)
                .bind(chunk)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
            })
            .await?;
            deleted
        });
        Ok(deleted)
    }
}

/// What a commit tells the other nodes: nothing on SQLite (one node
/// only), a `pg_notify` per payload on PostgreSQL.
trait Notify {
    /// Notifies the commit of `batch` (given `seqs`) by `origin` inside its
    /// transaction on this connection; returns how many notifications it
    /// sent.
    fn notify(
        &mut self,
        batch: &[Append<'_>],
        seqs: &[u64],
        origin: &str,
    ) -> impl Future<Output = Result<usize, sqlx::Error>> + Send;
}

impl Notify for SqliteConnection {
    async fn notify(&mut self, _: &[Append<'_>], _: &[u64], _: &str) -> Result<usize, sqlx::Error> {
        Ok(0)
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
}

/// Runs `delete` (one `DELETE` of at most [`DELETE_CHUNK`] rows) until a
/// run deletes fewer; returns how many rows all deleted.
pub(super) async fn in_chunks<F, Run>(mut delete: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Run,
    Run: Future<Output = Result<u64, sqlx::Error>>,
{
    let mut deleted = 0;
    loop {
        let chunk = delete().await?;
        deleted += chunk;
        if chunk < DELETE_CHUNK {
            return Ok(deleted);
        }
    }
}
