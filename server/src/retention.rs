//! Retention: how long each topic's events are kept (`--retention` rules by
//! topic pattern, first match wins, over the global `--retention-events`
//! and `--retention-age`), applied at an interval (first at start) until
//! shutdown; and the removal of topics left idle (`--topic-idle-expiry`):
//! no event stored, no publish and no live subscriber on any node for that
//! long; and publishes' idempotency keys older than their window.
//!
//! Each node notes in the store, at every run, the topics it has live
//! subscribers to, so that a node of a cluster never removes a topic
//! another node is serving.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use crate::glob;
use crate::hub::Hub;
use crate::protocol::{micros, now_micros};
use crate::store::{self, Prefix, RetentionView, Store};

/// How long events are kept; a zero bound is no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept per topic (the newest); 0: unlimited.
    pub max_events: u64,
    /// Oldest event kept, by `pts`; zero: unlimited.
    pub max_age: Duration,
}

impl Retention {
    /// The oldest events this retention deletes from a topic whose head is
    /// `head`, as of `now` (µs since the Unix epoch).
    fn prefix(self, head: u64, now: u64) -> Prefix {
        let age = micros(self.max_age);
        Prefix {
            through: match self.max_events {
                0 => 0,
                keep => head.saturating_sub(keep),
            },
            before_pts: if age == 0 { 0 } else { now.saturating_sub(age) },
        }
    }
}

/// A `--retention` rule: `PATTERN=events:N,age:DURATION`, either bound
/// optional (the global one then applies), 0 for unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRule {
    pattern: String,
    events: Option<u64>,
    age: Option<Duration>,
}

impl FromStr for RetentionRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (pattern, bounds) = s.split_once('=').ok_or_else(|| {
            format!(
                "{s:?} is not PATTERN=events:N,age:DURATION (such as audit.*=events:0,age:365d)"
            )
        })?;
        if pattern.is_empty() {
            return Err(format!("{s:?}: the topic pattern is empty"));
        }
        let mut rule = Self {
            pattern: pattern.to_owned(),
            events: None,
            age: None,
        };
        for bound in bounds.split(',') {
            match bound.split_once(':') {
                Some(("events", n)) => {
                    let n = n.parse().map_err(|_| {
                        format!("{s:?}: events {n:?} is not a whole number (0: unlimited)")
                    })?;
                    rule.events = Some(n);
                }
                Some(("age", age)) => {
                    let age = parse_age(age)
                        .map_err(|e| format!("{s:?}: age {age:?} is not a duration: {e}"))?;
                    rule.age = Some(age);
                }
                _ => return Err(format!("{s:?}: {bound:?} is not events:N or age:DURATION")),
            }
        }
        if rule.events.is_none() && rule.age.is_none() {
            return Err(format!("{s:?}: give events:N, age:DURATION or both"));
        }
        Ok(rule)
    }
}

/// A duration such as `365d`, or `0` for unlimited.
fn parse_age(text: &str) -> Result<Duration, humantime::DurationError> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
}

/// Each topic's retention: the first rule whose pattern matches, else the
/// default; a rule's missing bound is the default's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The `--retention` rules, in order.
    pub rules: Vec<RetentionRule>,
    /// `--retention-events` and `--retention-age`.
    pub default: Retention,
}

impl RetentionPolicy {
    /// The retention of `topic`.
    pub fn of(&self, topic: &str) -> Retention {
        match self
            .rules
            .iter()
            .find(|rule| glob::matches(&rule.pattern, topic))
        {
            Some(rule) => Retention {
                max_events: rule.events.unwrap_or(self.default.max_events),
                max_age: rule.age.unwrap_or(self.default.max_age),
            },
            None => self.default,
        }
    }
}

/// What retention runs over and counts.
#[derive(Debug)]
pub struct Retainer {
    /// The store it trims.
    pub store: Store,
    /// This node's live subscribers.
    pub hub: Arc<Hub>,
    /// How long events are kept.
    pub policy: RetentionPolicy,
    /// How long a topic may be idle before it is removed; `None`: never.
    pub idle_expiry: Option<Duration>,
    /// Events deleted.
    pub deleted: Counter,
    /// Topics removed as idle.
    pub expired: Counter,
    /// Idempotency keys expired beside the events.
    pub keys: KeyExpiry,
}

/// Idempotency keys expired beside the events.
#[derive(Debug, Clone)]
pub struct KeyExpiry {
    /// How long a key is honoured; older ones are deleted.
    pub window: Duration,
    /// Counts the keys deleted.
    pub expired: Counter,
}

/// Runs `retainer` every `every` until `cancel`.
pub async fn run(retainer: Retainer, every: Duration, cancel: CancellationToken) {
    let mut ticks = interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // A run in progress is abandoned at shutdown: each chunk it has
        // deleted is committed already, the rest waits for the next start.
        let ran = tokio::select! {
            () = cancel.cancelled() => return,
            ran = retainer.run_once(now_micros()) => ran,
        };
        if let Err(e) = ran {
            tracing::warn!(error = %e, "retention failed; retrying at the next interval");
        }
    }
}

impl Retainer {
    /// One run as of `now` (µs since the Unix epoch).
    async fn run_once(&self, now: u64) -> Result<(), store::Error> {
        let watched: Vec<String> = self.hub.watched().into_iter().map(|(t, _)| t).collect();
        if self.idle_expiry.is_some() {
            self.store.mark_watched(&watched, now).await?;
        }
        for topic in self.store.retention_view().await? {
            let prefix = self.policy.of(&topic.name).prefix(topic.head, now);
            if topic
                .oldest
                .is_some_and(|(seq, pts)| prefix.takes(seq, pts))
            {
                let n = self.store.trim_topic(&topic.name, prefix).await?;
                if n > 0 {
                    self.deleted.inc_by(n);
                    tracing::debug!(topic = %topic.name, deleted = n, "retention trimmed a topic");
                }
            }
            self.expire_if_idle(&topic, &watched, now).await?;
        }
        let expired = self.store.expire_keys(self.keys.window, now).await?;
        self.keys.expired.inc_by(expired);
        Ok(())
    }

    /// Removes `topic` if it has been idle past the expiry.
    async fn expire_if_idle(
        &self,
        topic: &RetentionView,
        watched: &[String],
        now: u64,
    ) -> Result<(), store::Error> {
        let Some(expiry) = self.idle_expiry else {
            return Ok(());
        };
        let idle_before = now.saturating_sub(micros(expiry));
        let idle = |at: Option<u64>| at.is_none_or(|at| at < idle_before);
        if !idle(topic.last_publish) || !idle(topic.watched_at) || watched.contains(&topic.name) {
            return Ok(());
        }
        if self.store.remove_if_idle(&topic.name, idle_before).await? {
            self.hub.forget(&topic.name);
            self.expired.inc();
            tracing::info!(topic = %topic.name, "removed an idle topic");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Retention = Retention {
        max_events: 100,
        max_age: Duration::from_secs(60),
    };

    fn policy(rules: &[&str]) -> RetentionPolicy {
        RetentionPolicy {
            rules: rules.iter().map(|r| r.parse().unwrap()).collect(),
            default: DEFAULT,
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_missing_bounds_are_the_default() {
        let policy = policy(&["audit.*=events:0,age:365d", "chat.*=events:10", "*=age:1h"]);
        assert_eq!(
            policy.of("audit.login"),
            Retention {
                max_events: 0,
                max_age: Duration::from_secs(365 * 86_400)
            }
        );
        assert_eq!(
            policy.of("chat.x"),
            Retention {
                max_events: 10,
                max_age: DEFAULT.max_age
            }
        );
        assert_eq!(policy.of("news").max_age, Duration::from_secs(3600));
        assert_eq!(self::policy(&[]).of("news"), DEFAULT);
    }

    #[test]
    fn zero_is_unlimited() {
        let unlimited = Retention {
            max_events: 0,
            max_age: Duration::ZERO,
        };
        assert_eq!(
            unlimited.prefix(1_000, 5_000_000),
            Prefix {
                through: 0,
                before_pts: 0
            }
        );
        assert_eq!(
            DEFAULT.prefix(1_000, 61_000_000),
            Prefix {
                through: 900,
                before_pts: 1_000_000
            }
        );
        assert_eq!(DEFAULT.prefix(50, 1).through, 0);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (bad, says) in [
            ("audit", "is not PATTERN="),
            ("=events:1", "pattern is empty"),
            ("a=events:x", "not a whole number"),
            ("a=age:soon", "not a duration"),
            ("a=size:1", "is not events:N or age:DURATION"),
            ("a=", "is not events:N or age:DURATION"),
        ] {
            let err = bad.parse::<RetentionRule>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!("a=age:0".parse::<RetentionRule>().is_ok());
    }
}
