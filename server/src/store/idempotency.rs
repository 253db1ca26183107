//! Idempotency keys: each topic's keys, with the `seq` the first publish
//! under a key was stored as and the SHA-256 of its data, so that a retry
//! is answered with that `seq` instead of being stored again; and their
//! expiry.
//!
//! Keys are resolved inside the appending transaction ([`Store::append`]),
//! once the topic's head row is locked: on any node, one transaction at a
//! time resolves a topic's keys. Each publish's key is claimed (`INSERT …
//! ON CONFLICT DO UPDATE … WHERE` the key held has expired) with the `seq`
//! the publish gets if every claim of its topic is taken; a key the claim
//! does not take is read back, and its publish is a replay (same digest)
//! or a mismatch (another). A held key is never an error, so it never
//! aborts the rest of the group, and the primary key `(topic, key)` is what
//! decides. When a replay precedes a new publish in the same topic, the
//! head and the later claims are moved down so that `seq`s stay
//! contiguous. A key repeated within one group takes its first use's
//! record, stored or held.
//!
//! The pure parts (which appends repeat a key, which `seq` each stored one
//! gets) are apart from the queries and tested alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use sqlx::QueryBuilder;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use super::catalog::{DELETE_CHUNK, in_chunks};
use super::topics::Append;
use super::{Error, Store, from_db, to_db, with_pool};
use crate::protocol::micros;

/// Keys per claim or read-back statement (5 bind parameters each, well
/// under every backend's limit).
const KEY_CHUNK: usize = 1000;

/// SHA-256 of a publish's data as stored.
pub type Digest = [u8; 32];

/// The digest a key's record keeps of `data` (the event's data as stored:
/// one line of JSON).
pub fn digest(data: &str) -> Digest {
    Sha256::digest(data.as_bytes()).into()
}

/// An append's idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyKey<'a> {
    /// The key (already validated), scoped to the append's topic.
    pub key: &'a str,
    /// [`digest`] of the append's data.
    pub digest: Digest,
}

/// What became of one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored under this `seq`.
    Stored(u64),
    /// Its key was used within the window for the same data, stored under
    /// this `seq`; nothing was stored now.
    Replayed(u64),
    /// Its key was used within the window for other data; nothing was
    /// stored.
    Mismatch,
}

/// What a key stands for: the `seq` its first publish was stored as, and
/// that publish's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    seq: u64,
    digest: Digest,
}

/// One append that takes part in its topic's numbering, once resolved: its
/// outcome, and the record of its key (if it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resolved {
    outcome: Outcome,
    record: Option<Record>,
}

/// A group's appends as the numbering sees them.
#[derive(Debug)]
pub(super) struct Group<'b> {
    /// Each topic (in name order, the order head rows are locked in) with
    /// the appends that take a place in its numbering, in group order.
    pub(super) slots: BTreeMap<&'b str, Vec<usize>>,
    /// For each append, the earlier append of the group with the same topic
    /// and key, whose outcome decides its own; `None` for the others.
    repeats: Vec<Option<usize>>,
}

impl<'b> Group<'b> {
    /// Sorts `batch` into topics, setting aside every repeat of a key
    /// within it.
    pub(super) fn new(batch: &[Append<'b>]) -> Self {
        let mut slots: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut first_use: HashMap<(&str, &str), usize> = HashMap::new();
        let mut repeats = Vec::with_capacity(batch.len());
        for (i, append) in batch.iter().enumerate() {
            let repeat = append
                .key
                .and_then(|key| first_use.get(&(append.topic, key.key)).copied());
            if repeat.is_none() {
                if let Some(key) = append.key {
                    first_use.insert((append.topic, key.key), i);
                }
                slots.entry(append.topic).or_default().push(i);
            }
            repeats.push(repeat);
        }
        Self { slots, repeats }
    }

    /// Every append's outcome, given those of the appends in `slots`
    /// (indexed by append): a repeat is a replay of its first use's record
    /// when its data is the same, a mismatch otherwise.
    pub(super) fn outcomes(
        &self,
        batch: &[Append<'_>],
        resolved: &[Option<Resolved>],
    ) -> Vec<Outcome> {
        batch
            .iter()
            .zip(&self.repeats)
            .zip(resolved)
            .map(|((append, repeat), own)| match (repeat, append.key) {
                (Some(first), Some(key)) => {
                    let record = resolved[*first]
                        .and_then(|first| first.record)
                        .expect("a key's first use is resolved with a record");
                    held_outcome(key, record)
                }
                _ => own.expect("every slot is resolved").outcome,
            })
            .collect()
    }
}

/// The outcome of a publish with `key` whose record is `record`, held
/// already.
fn held_outcome(key: IdempotencyKey<'_>, record: Record) -> Outcome {
    if key.digest == record.digest {
        Outcome::Replayed(record.seq)
    } else {
        Outcome::Mismatch
    }
}

/// The cutoff of keys for a group appended at `pts` (its latest), µs since
/// the Unix epoch: a key created before it has expired.
pub(super) fn cutoff(batch: &[Append<'_>], window: Duration) -> u64 {
    let now = batch.iter().map(|append| append.pts).max().unwrap_or(0);
    now.saturating_sub(micros(window))
}

/// A key claimed for the `seq` its publish gets if every claim of its
/// topic in the group is taken.
#[derive(Debug)]
pub(super) struct Claim<'a> {
    key: &'a str,
    seq: u64,
    digest: &'a Digest,
    created: u64,
}

/// One topic's numbering once the held keys are known.
#[derive(Debug, PartialEq, Eq)]
struct Numbering<'a> {
    /// Each slot's resolution, in order.
    resolved: Vec<Resolved>,
    /// How many slots were stored.
    stored: u64,
    /// Claimed keys whose publish got another `seq` than claimed (a replay
    /// came before it).
    moved: Vec<(&'a str, u64)>,
}

/// Numbers one topic's slots (`keys`: each one's key, in order) from
/// `first`: a slot whose key is `held` is a replay or a mismatch of it and
/// takes no `seq`; the others are stored in order.
fn number<'a>(
    keys: impl Iterator<Item = Option<IdempotencyKey<'a>>>,
    first: u64,
    held: &HashMap<String, Record>,
) -> Numbering<'a> {
    let mut numbering = Numbering {
        resolved: Vec::new(),
        stored: 0,
        moved: Vec::new(),
    };
    for (claimed, key) in (first..).zip(keys) {
        if let Some((key, record)) = key.and_then(|key| held.get(key.key).map(|r| (key, *r))) {
            numbering.resolved.push(Resolved {
                outcome: held_outcome(key, record),
                record: Some(record),
            });
            continue;
        }
        let seq = first + numbering.stored;
        numbering.stored += 1;
        if let Some(key) = key
            && seq != claimed
        {
            numbering.moved.push((key.key, seq));
        }
        numbering.resolved.push(Resolved {
            outcome: Outcome::Stored(seq),
            record: key.map(|key| Record {
                seq,
                digest: key.digest,
            }),
        });
    }
    numbering
}

/// Resolves the keys of `topic`'s `slots` (appends of `batch`) numbered
/// from `first`, its head locked and already moved past them: claims them,
/// reads back those held, and if fewer are stored than counted, moves the
/// head and the later claims down. Returns each slot's resolution, in
/// order.
///
/// A key neither claimed nor read back (deleted between the two by
/// another node's expiry, whose clock runs ahead) has its publish stored
/// anew, and keeps no row: the window's edge is as fuzzy as the clocks.
pub(super) async fn resolve<C: KeyQueries>(
    conn: &mut C,
    (batch, cutoff): (&[Append<'_>], u64),
    topic: &str,
    slots: &[usize],
    first: u64,
) -> Result<Vec<Resolved>, sqlx::Error> {
    let claims: Vec<Claim<'_>> = (first..)
        .zip(slots)
        .filter_map(|(seq, &i)| {
            let append = &batch[i];
            append.key.as_ref().map(|key| Claim {
                key: key.key,
                seq,
                digest: &key.digest,
                created: append.pts,
            })
        })
        .collect();
    let mut held = HashMap::new();
    if !claims.is_empty() {
        let taken: HashSet<String> = conn
            .claim(topic, &claims, cutoff)
            .await?
            .into_iter()
            .collect();
        let untaken: Vec<&str> = claims
            .iter()
            .map(|claim| claim.key)
            .filter(|key| !taken.contains(*key))
            .collect();
        if !untaken.is_empty() {
            held = conn.records(topic, &untaken).await?;
        }
    }
    let numbering = number(slots.iter().map(|&i| batch[i].key), first, &held);
    if numbering.stored < slots.len() as u64 {
        let unstored: u64 = slots
            .iter()
            .zip(&numbering.resolved)
            .filter(|(_, slot)| !matches!(slot.outcome, Outcome::Stored(_)))
            .map(|(&i, _)| batch[i].data.len() as u64)
            .sum();
        conn.set_head(topic, first + numbering.stored - 1, unstored)
            .await?;
        for (key, seq) in &numbering.moved {
            conn.renumber(topic, key, *seq).await?;
        }
    }
    Ok(numbering.resolved)
}

/// The queries of key resolution, inside the appending transaction;
/// written once (`key_queries!`) for each backend's connection.
pub(super) trait KeyQueries: Send {
    /// Claims `claims` in `topic`: inserts each key's record, or replaces
    /// one created before `cutoff`; returns the keys claimed.
    fn claim(
        &mut self,
        topic: &str,
        claims: &[Claim<'_>],
        cutoff: u64,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send;

    /// The records of `keys` in `topic`.
    fn records(
        &mut self,
        topic: &str,
        keys: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, Record>, sqlx::Error>> + Send;

    /// Sets `topic`'s head (locked by this transaction) to `head`, and
    /// takes the bytes of the payloads it did not store from its count.
    fn set_head(
        &mut self,
        topic: &str,
        head: u64,
        unstored_bytes: u64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Moves `key`'s record in `topic` to `seq`.
    fn renumber(
        &mut self,
        topic: &str,
        key: &str,
        seq: u64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Implements [`KeyQueries`] for each connection type given, with one text
/// of each query.
macro_rules! key_queries {
    ($($connection:ty),*) => {$(
        impl KeyQueries for $connection {
            async fn claim(
                &mut self,
                topic: &str,
                claims: &[Claim<'_>],
                cutoff: u64,
            ) -> Result<Vec<String>, sqlx::Error> {
                let mut taken = Vec::with_capacity(claims.len());
                for chunk in claims.chunks(KEY_CHUNK) {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO idempotency_keys (topic, key, seq, digest, created) ",
                    );
                    insert.push_values(chunk, |mut row, claim| {
                        row.push_bind(topic)
                            .push_bind(claim.key)
                            .push_bind(to_db(claim.seq))
                            .push_bind(&claim.digest[..])
                            .push_bind(to_db(claim.created));
                    });
                    insert
                        .push(
                            " ON CONFLICT (topic, key) DO UPDATE SET seq = excluded.seq, \
                             digest = excluded.digest, created = excluded.created \
                             WHERE idempotency_keys.created < ",
                        )
                        .push_bind(to_db(cutoff))
                        .push(" RETURNING key");
                    taken.extend(
                        insert
                            .build_query_scalar::<String>()
                            .fetch_all(&mut *self)
                            .await?,
                    );
                }
                Ok(taken)
            }

            async fn records(
                &mut self,
                topic: &str,
                keys: &[&str],
            ) -> Result<HashMap<String, Record>, sqlx::Error> {
                let mut records = HashMap::with_capacity(keys.len());
                for chunk in keys.chunks(KEY_CHUNK) {
                    let mut select = QueryBuilder::new(
                        "SELECT key, seq, digest FROM idempotency_keys WHERE topic = ",
                    );
                    select.push_bind(topic).push(" AND key IN (");
                    let mut list = select.separated(", ");
                    for key in chunk {
                        list.push_bind(*key);
                    }
                    select.push(")");
                    let rows: Vec<(String, i64, Vec<u8>)> =
                        select.build_query_as().fetch_all(&mut *self).await?;
                    for (key, seq, digest) in rows {
                        // A digest of another length is not this server's:
                        // it matches no body.
                        let digest = Digest::try_from(digest.as_slice()).unwrap_or([0; 32]);
                        records.insert(key, Record { seq: from_db(seq), digest });
                    }
                }
                Ok(records)
            }

            async fn set_head(
                &mut self,
                topic: &str,
                head: u64,
                unstored_bytes: u64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query("UPDATE topics SET head = $2, bytes = bytes - $3 WHERE name = $1")
                    .bind(topic)
                    .bind(to_db(head))
                    .bind(to_db(unstored_bytes))
                    .execute(&mut *self)
                    .await?;
                Ok(())
            }

            async fn renumber(
                &mut self,
                topic: &str,
                key: &str,
                seq: u64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query("UPDATE idempotency_keys SET seq = $3 WHERE topic = $1 AND key = $2")
                    .bind(topic)
                    .bind(key)
                    .bind(to_db(seq))
                    .execute(&mut *self)
                    .await?;
                Ok(())
            }
        }
    )*};
}

key_queries!(SqliteConnection, PgConnection);

impl Store {
    /// Deletes the idempotency keys older than `window` as of `now` (µs
    /// since the Unix epoch), oldest first, in `DELETE`s of at most
    /// [`DELETE_CHUNK`] rows (each its own transaction); returns how many.
    /// A key past the window is not honoured even before it is deleted.
    ///
    /// # Errors
    ///
    /// The database failed; what was deleted before stays deleted.
    pub async fn expire_keys(&self, window: Duration, now: u64) -> Result<u64, Error> {
        let cutoff = to_db(now.saturating_sub(micros(window)));
        let chunk = to_db(DELETE_CHUNK);
        let deleted = with_pool!(self, pool => {
            in_chunks(move || async move {
                let _turn = self.write_turn().await;
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE (topic, key) IN \
                     (SELECT topic, key FROM idempotency_keys WHERE created < $1 \
                      ORDER BY created LIMIT $2)",
                )
                .bind(cutoff)
                .bind(chunk)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
            })
            .await?
        });
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append<'a>(topic: &'a str, key: Option<&'a str>, data: &'a str) -> Append<'a> {
        Append {
            topic,
            pts: 1,
            data,
            key: key.map(|key| IdempotencyKey {
                key,
                digest: digest(data),
            }),
        }
    }

    #[test]
    fn repeats_of_a_key_within_a_group_take_no_place_of_their_own() {
        let batch = [
            append("b", Some("k"), "1"),
            append("a", Some("k"), "1"),
            append("b", Some("k"), "2"),
            append("b", None, "3"),
            append("a", Some("j"), "4"),
            append("b", Some("k"), "1"),
        ];
        let group = Group::new(&batch);
        assert_eq!(
            group.slots.into_iter().collect::<Vec<_>>(),
            vec![("a", vec![1, 4]), ("b", vec![0, 3])]
        );
        assert_eq!(
            group.repeats,
            vec![None, None, Some(0), None, None, Some(0)]
        );
    }

    #[test]
    fn a_repeat_replays_or_mismatches_its_first_uses_record() {
        let batch = [
            append("t", Some("k"), "1"),
            append("t", Some("k"), "1"),
            append("t", Some("k"), "2"),
            append("t", None, "3"),
        ];
        let group = Group::new(&batch);
        // The slots (0 and 3) resolved, 0 as `first` with its key's record.
        let outcomes = |first: Outcome, (seq, data)| {
            let record = Some(Record {
                seq,
                digest: digest(data),
            });
            let plain = Resolved {
                outcome: Outcome::Stored(8),
                record: None,
            };
            let resolved = [
                Some(Resolved {
                    outcome: first,
                    record,
                }),
                None,
                None,
                Some(plain),
            ];
            group.outcomes(&batch, &resolved)
        };
        assert_eq!(
            outcomes(Outcome::Stored(7), (7, "1")),
            vec![
                Outcome::Stored(7),
                Outcome::Replayed(7),
                Outcome::Mismatch,
                Outcome::Stored(8)
            ]
        );
        // A first use that was a mismatch: its repeats are judged by the
        // record held, not by the first use's data.
        assert_eq!(
            outcomes(Outcome::Mismatch, (3, "2"))[1..3],
            [Outcome::Mismatch, Outcome::Replayed(3)]
        );
    }

    #[test]
    fn held_keys_take_no_seq_and_later_claims_move_down() {
        let (a, b) = (digest("a"), digest("b"));
        let key = |key, digest| Some(IdempotencyKey { key, digest });
        let held = HashMap::from([
            ("old".to_owned(), Record { seq: 2, digest: a }),
            ("other".to_owned(), Record { seq: 3, digest: a }),
        ]);
        let numbering = number(
            [None, key("old", a), key("new", b), key("other", b), None].into_iter(),
            10,
            &held,
        );
        assert_eq!(
            numbering
                .resolved
                .iter()
                .map(|r| r.outcome)
                .collect::<Vec<_>>(),
            vec![
                Outcome::Stored(10),
                Outcome::Replayed(2),
                Outcome::Stored(11),
                Outcome::Mismatch,
                Outcome::Stored(12)
            ]
        );
        assert_eq!(numbering.stored, 3);
        // "new" was claimed as 12 (the third slot from 10): it is 11.
        assert_eq!(numbering.moved, vec![("new", 11)]);
        assert_eq!(
            numbering.resolved[2].record,
            Some(Record { seq: 11, digest: b })
        );
    }

    #[test]
    fn keys_expire_a_window_before_the_groups_latest_publish() {
        let mut batch = [append("t", None, "1"), append("t", None, "2")];
        batch[0].pts = 5_000_000;
        batch[1].pts = 9_000_000;
        assert_eq!(cutoff(&batch, Duration::from_secs(2)), 7_000_000);
        assert_eq!(cutoff(&batch, Duration::from_secs(3600)), 0);
    }
}
