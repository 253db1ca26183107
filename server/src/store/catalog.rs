//! The topics as operators see them: each topic's figures (head, retained
//! range, bytes, last publish), listed in pages; trimming a topic's oldest
//! events; removing a topic; and what retention asks of a topic (its rule
//! is applied by [`crate::retention`], which knows the rules).
//!
//! A topic's events are always a contiguous run `oldest..=head`: every
//! deletion here, by hand or by retention, takes a prefix. Deletions go in
//! transactions of at most [`DELETE_CHUNK`] rows, each keeping the topic's
//! `bytes` in step, so a large one never holds the write lock for long;
//! on SQLite each write takes its turn ([`Store::write_turn`]), so the
//! publish writer waits behind at most one of them.

use serde::Serialize;

use super::topics::Notify;
use super::{Error, Store, from_db, to_db, with_pool};

/// Rows per `DELETE`, so a large purge never holds the write lock for long.
pub const DELETE_CHUNK: u64 = 10_000;

/// Most topics listed per page.
pub const MAX_PAGE: u32 = 1000;

/// One topic's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicFigures {
    /// Its name.
    pub name: String,
    /// The last `seq` assigned.
    pub head: u64,
    /// The oldest `seq` still stored; `None` when none is.
    pub oldest: Option<u64>,
    /// Events stored (`head - oldest + 1`, or 0).
    pub events: u64,
    /// Bytes of the stored payloads.
    pub bytes: u64,
    /// When the last event was accepted (`pts`, µs since the Unix epoch);
    /// `None` when unknown.
    pub last_publish: Option<u64>,
}

/// A topic as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionView {
    /// Its name.
    pub name: String,
    /// The last `seq` assigned.
    pub head: u64,
    /// When the last event was accepted, µs since the Unix epoch.
    pub last_publish: Option<u64>,
    /// When a node last had a live subscriber to it, µs since the epoch.
    pub watched_at: Option<u64>,
    /// Its oldest stored event's `seq` and `pts`; `None` when none is.
    pub oldest: Option<(u64, u64)>,
}

/// Which oldest events to delete: those with `seq <= through` or accepted
/// before `before_pts`. Both are prefixes of a topic, and so is their union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Every event up to this `seq` (0: none by `seq`).
    pub through: u64,
    /// Every event accepted before this time, µs since the Unix epoch (0:
    /// none by age).
    pub before_pts: u64,
}

impl Prefix {
    /// Whether the event `seq`, accepted at `pts`, is in this prefix.
    pub fn takes(self, seq: u64, pts: u64) -> bool {
        seq <= self.through || pts < self.before_pts
    }
}

/// `SELECT` of the columns of [`TopicFigures`] from `topics t`, then
/// `$tail`.
macro_rules! select_figures {
    ($tail:literal) => {
        concat!(
            "SELECT t.name, t.head, t.bytes, t.last_pts, ",
            "(SELECT MIN(seq) FROM events WHERE topic = t.name) FROM topics t ",
            $tail
        )
    };
}

/// A row of [`FIGURES`]: name, head, bytes, last `pts`, oldest `seq`.
type FiguresRow = (String, i64, i64, Option<i64>, Option<i64>);

fn figures((name, head, bytes, last_pts, oldest): FiguresRow) -> TopicFigures {
    let head = from_db(head);
    let oldest = oldest.map(from_db);
    TopicFigures {
        name,
        head,
        oldest,
        events: oldest.map_or(0, |oldest| head.saturating_sub(oldest) + 1),
        bytes: from_db(bytes),
        last_publish: last_pts.map(from_db),
    }
}

impl Store {
    /// Up to `limit` topics whose names come after `after`, in name order.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn list_topics(&self, after: &str, limit: u32) -> Result<Vec<TopicFigures>, Error> {
        let rows: Vec<FiguresRow> = with_pool!(self, pool => {
            sqlx::query_as(select_figures!("WHERE t.name > $1 ORDER BY t.name LIMIT $2"))
                .bind(after)
                .bind(i64::from(limit.min(MAX_PAGE)))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(figures).collect())
    }

    /// The figures of `topic`; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn topic_figures(&self, topic: &str) -> Result<Option<TopicFigures>, Error> {
        let row: Option<FiguresRow> = with_pool!(self, pool => {
            sqlx::query_as(select_figures!("WHERE t.name = $1"))
                .bind(topic)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(figures))
    }

    /// How many topics exist.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn count_topics(&self) -> Result<u64, Error> {
        let count: i64 = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM topics").fetch_one(pool).await?
        });
        Ok(from_db(count))
    }

    /// Which of `topics` exist.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn existing_topics(&self, topics: &[&str]) -> Result<Vec<String>, Error> {
        let mut existing = Vec::new();
        for chunk in topics.chunks(super::topics::HEADS_CHUNK) {
            let names: Vec<String> = with_pool!(self, pool => {
                let mut query = sqlx::QueryBuilder::new("SELECT name FROM topics WHERE name IN (");
                let mut names = query.separated(", ");
                for topic in chunk {
                    names.push_bind(*topic);
                }
                query.push(")");
                query.build_query_scalar().fetch_all(pool).await?
            });
            existing.extend(names);
        }
        Ok(existing)
    }

    /// Every topic, as retention sees it, in one query: a run of
    /// retention over topics with nothing to delete costs no more.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn retention_view(&self) -> Result<Vec<RetentionView>, Error> {
        type ViewRow = (
            String,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<ViewRow> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT t.name, t.head, t.last_pts, t.watched_at, e.seq, e.pts FROM topics t \
                 LEFT JOIN events e ON e.topic = t.name \
                 AND e.seq = (SELECT MIN(seq) FROM events WHERE topic = t.name)",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(name, head, last_pts, watched_at, seq, pts)| RetentionView {
                    name,
                    head: from_db(head),
                    last_publish: last_pts.map(from_db),
                    watched_at: watched_at.map(from_db),
                    oldest: seq.zip(pts).map(|(seq, pts)| (from_db(seq), from_db(pts))),
                },
            )
            .collect())
    }

    /// Notes that this node has live subscribers to `topics` at `now` (µs
    /// since the Unix epoch): a watched topic is not idle.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn mark_watched(&self, topics: &[String], now: u64) -> Result<(), Error> {
        for chunk in topics.chunks(super::topics::HEADS_CHUNK) {
            let _turn = self.write_turn().await;
            with_pool!(self, pool => {
                let mut query = sqlx::QueryBuilder::new("UPDATE topics SET watched_at = ");
                query.push_bind(to_db(now)).push(" WHERE name IN (");
                let mut names = query.separated(", ");
                for topic in chunk {
                    names.push_bind(topic.as_str());
                }
                query.push(")");
                query.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Deletes the events of `topic` in `prefix`, oldest first; returns how
    /// many.
    ///
    /// # Errors
    ///
    /// The database failed; what was deleted before stays deleted.
    pub async fn trim_topic(&self, topic: &str, prefix: Prefix) -> Result<u64, Error> {
        let mut deleted = 0;
        while let Some((oldest, pts)) = self.oldest(topic).await? {
            if !prefix.takes(oldest, pts) {
                break;
            }
            // At most a chunk of rows is visited: one past the prefix ends it.
            let last = oldest + DELETE_CHUNK - 1;
            let chunk = self.delete_range(topic, oldest, last, prefix).await?;
            deleted += chunk;
            if chunk < DELETE_CHUNK {
                break;
            }
        }
        Ok(deleted)
    }

    /// The oldest stored event of `topic`: its `seq` and `pts`.
    async fn oldest(&self, topic: &str) -> Result<Option<(u64, u64)>, Error> {
        let row: Option<(i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT seq, pts FROM events WHERE topic = $1 ORDER BY seq LIMIT 1")
                .bind(topic)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(seq, pts)| (from_db(seq), from_db(pts))))
    }

    /// Deletes the events of `topic` from `first` to `last` that `prefix`
    /// takes, and their bytes from the topic's count, in one transaction.
    async fn delete_range(
        &self,
        topic: &str,
        first: u64,
        last: u64,
        prefix: Prefix,
    ) -> Result<u64, Error> {
        let _turn = self.write_turn().await;
        let deleted = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let sizes: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM events WHERE topic = $1 AND seq >= $2 AND seq <= $3 \
                 AND (seq <= $4 OR pts < $5) RETURNING CAST(octet_length(data) AS BIGINT)",
            )
            .bind(topic)
            .bind(to_db(first))
            .bind(to_db(last))
            .bind(to_db(prefix.through))
            .bind(to_db(prefix.before_pts))
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("UPDATE topics SET bytes = bytes - $2 WHERE name = $1")
                .bind(topic)
                .bind(sizes.iter().sum::<i64>())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            sizes.len() as u64
        });
        Ok(deleted)
    }

    /// Removes `topic`, its events, its idempotency keys and its head: a
    /// later publish starts it again at `seq` 1. Returns the head it had, `None` when it did not
    /// exist.
    ///
    /// # Errors
    ///
    /// The database failed; the events deleted before stay deleted.
    pub async fn remove_topic(&self, topic: &str) -> Result<Option<u64>, Error> {
        let head = self.head(topic).await?;
        self.trim_topic(
            topic,
            Prefix {
                through: head,
                before_pts: 0,
            },
        )
        .await?;
        // What was published meanwhile goes with the head, at once.
        let turn = self.write_turn().await;
        let removed: Option<i64> = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for table in [
                "DELETE FROM events WHERE topic = $1",
                "DELETE FROM idempotency_keys WHERE topic = $1",
            ] {
                sqlx::query(table).bind(topic).execute(&mut *tx).await?;
            }
            let removed: Option<i64> =
                sqlx::query_scalar("DELETE FROM topics WHERE name = $1 RETURNING head")
                    .bind(topic)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(head) = removed {
                tx.notify_deletion(topic, from_db(head), &self.origin).await?;
            }
            tx.commit().await?;
            removed
        });
        drop(turn);
        if removed.is_some() {
            self.removed_one();
        }
        Ok(removed.map(from_db))
    }

    /// Removes `topic` if it is still idle as of `idle_before` (µs since
    /// the Unix epoch): no event stored, no publish and no node watching
    /// it since then. Returns whether it did.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn remove_if_idle(&self, topic: &str, idle_before: u64) -> Result<bool, Error> {
        let _turn = self.write_turn().await;
        let removed = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let removed = sqlx::query(
                "DELETE FROM topics WHERE name = $1 \
                 AND COALESCE(last_pts, 0) < $2 AND COALESCE(watched_at, 0) < $2 \
                 AND NOT EXISTS (SELECT 1 FROM events WHERE topic = $1)",
            )
            .bind(topic)
            .bind(to_db(idle_before))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if removed > 0 {
                // Its keys name `seq`s a topic started again would reuse.
                sqlx::query("DELETE FROM idempotency_keys WHERE topic = $1")
                    .bind(topic)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            removed
        });
        if removed > 0 {
            self.removed_one();
        }
        Ok(removed > 0)
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
