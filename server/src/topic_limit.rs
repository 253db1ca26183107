//! `--max-topics`: which publishes of a group may create a topic.
//!
//! The writer asks before each commit. Topics it has seen exist cost
//! nothing; only a topic not seen since start (or since the store last
//! removed one) costs a lookup, and only a group that would create a topic
//! costs a count. Each node's writer is the only one creating topics
//! through it; on a cluster, nodes creating topics at the same moment may
//! together pass the bound by as many topics as there are other nodes.

use std::collections::HashSet;

use crate::store::{Error, Store};

/// The bound, and the topics known to exist.
#[derive(Debug)]
pub struct TopicLimit {
    max: u64,
    known: HashSet<String>,
    /// The store's removals when `known` was last found true.
    removals: u64,
}

impl TopicLimit {
    /// At most `max` topics.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            known: HashSet::new(),
            removals: 0,
        }
    }

    /// The bound.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Which of `topics` (a group's, in order, repeats allowed) may be
    /// published to: those that exist, and as many new ones, first come,
    /// as the bound leaves room for. Returns one answer per topic, or
    /// `None` when every topic is known to exist (a commit's usual case,
    /// which allocates nothing).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn admit<'a>(
        &mut self,
        store: &Store,
        topics: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<Option<Vec<bool>>, Error> {
        if store.removals() != self.removals {
            self.removals = store.removals();
            self.known.clear();
        }
        if topics.clone().all(|t| self.known.contains(t)) {
            return Ok(None);
        }
        let mut unknown: Vec<&str> = topics
            .clone()
            .filter(|t| !self.known.contains(*t))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        self.known.extend(store.existing_topics(&unknown).await?);
        let mut room = None;
        let mut created: HashSet<&str> = HashSet::new();
        let mut answers = Vec::new();
        for topic in topics {
            if self.known.contains(topic) || created.contains(topic) {
                answers.push(true);
                continue;
            }
            let room = match room {
                Some(ref mut room) => room,
                None => room.insert(self.max.saturating_sub(store.count_topics().await?)),
            };
            let admitted = *room > 0;
            if admitted {
                *room -= 1;
                created.insert(topic);
            }
            answers.push(admitted);
        }
        Ok(Some(answers))
    }

    /// `topics` were committed: they exist.
    pub fn committed<'a>(&mut self, topics: impl IntoIterator<Item = &'a str>) {
        for topic in topics {
            if !self.known.contains(topic) {
                self.known.insert(topic.to_owned());
            }
        }
    }
}
