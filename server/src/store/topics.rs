//! Topic events: append in one transaction per group, read a range after a
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

use std::collections::BTreeMap;

use bytes::Bytes;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row};

use super::notification::{self, CHANNEL};
use super::{Error, Store, from_db, to_db, with_pool};
use crate::protocol::Event;

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
}

/// A committed group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The events' sequence numbers, in the order they were given.
    pub seqs: Vec<u64>,
    /// Notifications sent to the other nodes (PostgreSQL): one, unless the
    /// group's topics did not fit one payload; none on SQLite.
    pub notifications: usize,
}

/// What a group adds to one topic's row.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    bytes: u64,
    last_pts: u64,
}

impl Tally {
    fn add(&mut self, append: &Append<'_>) {
        self.events += 1;
        self.bytes += append.data.len() as u64;
        self.last_pts = self.last_pts.max(append.pts);
    }
}

/// Heads read per query.
pub(super) const HEADS_CHUNK: usize = 1000;

impl Store {
    /// Appends every event of `batch` in one transaction, and returns their
    /// sequence numbers in order (and, on PostgreSQL, how many
    /// notifications the commit sent). Nothing is appended if it fails.
    ///
    /// # Errors
    ///
    /// The database failed; the transaction was rolled back.
    pub async fn append(&self, batch: &[Append<'_>]) -> Result<Commit, Error> {
        let commit = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Sorted by name: the order in which head rows are locked.
            let mut next: BTreeMap<&str, Tally> = BTreeMap::new();
            for append in batch {
                next.entry(append.topic).or_default().add(append);
            }
            for (topic, tally) in &mut next {
                let head: i64 = sqlx::query_scalar(
                    "INSERT INTO topics (name, head, bytes, last_pts) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET head = topics.head + $2, \
                     bytes = topics.bytes + $3, last_pts = $4 RETURNING head",
                )
                .bind(*topic)
                .bind(to_db(tally.events))
                .bind(to_db(tally.bytes))
                .bind(to_db(tally.last_pts))
                .fetch_one(&mut *tx)
                .await?;
                // From here on: the next seq of this group for the topic.
                tally.events = from_db(head) - tally.events + 1;
            }
            let seqs: Vec<u64> = batch
                .iter()
                .map(|append| {
                    let tally = next.get_mut(append.topic).expect("every topic counted");
                    tally.events += 1;
                    tally.events - 1
                })
                .collect();
            for (appends, seqs) in batch.chunks(INSERT_CHUNK).zip(seqs.chunks(INSERT_CHUNK)) {
                let mut insert = QueryBuilder::new("INSERT INTO events (topic, seq, pts, data) ");
                insert.push_values(appends.iter().zip(seqs), |mut row, (append, &seq)| {
                    row.push_bind(append.topic)
                        .push_bind(to_db(seq))
                        .push_bind(to_db(append.pts))
                        .push_bind(append.data);
                });
                insert.build().execute(&mut *tx).await?;
            }
            let notifications = Notify::notify(&mut *tx, batch, &seqs, &self.origin).await?;
            tx.commit().await?;
            Commit { seqs, notifications }
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
