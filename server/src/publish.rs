//! Publishing: a body is validated (size, JSON) and queued to the single
//! writer, which group-commits whatever publishes are waiting in one
//! transaction, fans the committed events out through the hub in `seq`
//! order, and only then acknowledges each with its `seq`. An event is thus
//! durable before its publisher hears `201`, and the hub sees every topic's
//! events in order.
//!
//! A publish may carry an idempotency key: the store resolves it inside
//! the same transaction, and a key already used (within the window) for the
//! same body is answered with its first `seq` as a replay, stored and fanned
//! out nothing; for another body it is refused.
//!
//! Also the WebSocket side of publishing: [`SocketPublisher`] turns
//! `{"publish": …}` frames into publishes and answers each with an ack.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::auth::Refusal as Denied;
use crate::auth::jwt::Grant;
use crate::disconnect::Disconnect;
use crate::health::Health;
use crate::hub::Hub;
use crate::idempotency::Key;
use crate::metrics::{KeyRefusal, TopicMetrics};
use crate::protocol::{Event, Name, Stamp, now_micros};
use crate::session::Inbox;
use crate::store::{self, Append, Digest, IdempotencyKey, Outcome, Store};
use crate::topic_limit::TopicLimit;

/// Most publishes committed in one transaction.
const MAX_GROUP: usize = 512;

/// Why a publish was refused; nothing was stored in any case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The body is over the size limit.
    #[error("body is {size} bytes; the limit is {max}")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not one valid JSON value.
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Too many publishes are waiting for the writer.
    #[error("too many publishes are waiting; retry later")]
    Busy,
    /// The publish would create a topic beyond `--max-topics`.
    #[error("the server holds its limit of {max} topics; this publish would create another")]
    TooManyTopics {
        /// The limit.
        max: u64,
    },
    /// The idempotency key was used within the window for another body.
    #[error("this idempotency key was already used with a different body; nothing was stored")]
    KeyReused,
    /// The store failed (or the server is stopping). The event was not
    /// acknowledged; in the rare case where the database committed it but
    /// could not say so, it is still delivered, once, under its own seq.
    #[error("storage unavailable; the event was not stored")]
    Unavailable,
}

/// A publish that was stored, now or before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The event's `seq`.
    pub seq: u64,
    /// Whether it was stored before under the same idempotency key, and
    /// nothing was stored now.
    pub replayed: bool,
}

#[derive(Debug)]
struct Request {
    topic: Name,
    pts: u64,
    data: String,
    /// The idempotency key and the digest of `data`.
    key: Option<(Key, Digest)>,
    reply: oneshot::Sender<Result<Published, PublishError>>,
}

/// How the writer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Publishes waiting for the writer before new ones are refused.
    pub capacity: usize,
    /// Largest body, bytes.
    pub max_body: usize,
    /// How long an idempotency key is honoured.
    pub key_window: Duration,
    /// Most topics that may exist.
    pub max_topics: u64,
    /// For testing only: the process is killed right after a commit, before
    /// any answer.
    pub exit_after_commit: bool,
}

/// Hands publishes to the writer; clones share it (one pointer each: every
/// WebSocket topic subscriber holds one). The writer stops once every
/// clone is dropped and the publishes already queued are committed.
#[derive(Debug, Clone)]
pub struct Publisher(Arc<Shared>);

/// What every clone of a [`Publisher`] shares.
#[derive(Debug)]
struct Shared {
    requests: mpsc::Sender<Request>,
    max_body: usize,
    /// While the database is known to be down, publishes are refused at
    /// once (and counted there).
    health: Arc<Health>,
    /// Counts the publishes refused because the queue was full.
    busy: Counter,
    /// Counts the publishes refused for an invalid idempotency key.
    invalid_keys: Counter,
}

impl Publisher {
    /// Starts the writer over `store` and `hub` with `options`; a failed
    /// commit tells `health`, and while it says the database is down
    /// publishes are refused at once.
    pub fn start(
        store: Store,
        hub: Arc<Hub>,
        health: Arc<Health>,
        metrics: TopicMetrics,
        options: Options,
    ) -> (Self, JoinHandle<()>) {
        let (requests, rx) = mpsc::channel(options.capacity);
        let busy = metrics.publish_failures("busy");
        let invalid_keys = metrics.key_refusals(KeyRefusal::Invalid);
        let writer = tokio::spawn(write_loop(
            rx,
            Committer {
                store,
                hub,
                health: Arc::clone(&health),
                metrics,
                topics: TopicLimit::new(options.max_topics),
                key_window: options.key_window,
                exit_after_commit: options.exit_after_commit,
            },
        ));
        let publisher = Self(Arc::new(Shared {
            requests,
            max_body: options.max_body,
            health,
            busy,
            invalid_keys,
        }));
        (publisher, writer)
    }

    /// Validates `body` and publishes it to `topic` under `key`; returns
    /// its `seq` once it is committed (or, for a key used before for the
    /// same body, the `seq` it was stored as then).
    ///
    /// # Errors
    ///
    /// See [`PublishError`]; nothing was stored.
    pub async fn publish(
        &self,
        topic: &Name,
        body: &[u8],
        key: Option<Key>,
    ) -> Result<Published, PublishError> {
        self.publish_line(topic, validate(body, self.0.max_body)?, key)
            .await
    }

    /// Publishes `data`, valid JSON on one line within the limit, to
    /// `topic` under `key`; returns its `seq` once it is committed (or
    /// replayed).
    ///
    /// # Errors
    ///
    /// [`PublishError::Busy`], [`PublishError::Unavailable`] or
    /// [`PublishError::KeyReused`]; nothing was stored.
    async fn publish_line(
        &self,
        topic: &Name,
        data: String,
        key: Option<Key>,
    ) -> Result<Published, PublishError> {
        if self.0.health.refuses(1) {
            return Err(PublishError::Unavailable);
        }
        let (reply, response) = oneshot::channel();
        let request = Request {
            topic: topic.clone(),
            pts: now_micros(),
            // Digested here, not on the single writer.
            key: key.map(|key| (key, store::digest(&data))),
            data,
            reply,
        };
        self.0.requests.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.0.busy.inc();
                PublishError::Busy
            }
            mpsc::error::TrySendError::Closed(_) => PublishError::Unavailable,
        })?;
        response.await.map_err(|_| PublishError::Unavailable)?
    }
}

/// Checks `body` against the limit and as JSON (as serde_json reads it, its
/// event one level deeper included), and returns it on one line.
pub(crate) fn validate(body: &[u8], max: usize) -> Result<String, PublishError> {
    if body.len() > max {
        return Err(PublishError::TooLarge {
            size: body.len(),
            max,
        });
    }
    let text = std::str::from_utf8(body).map_err(|e| PublishError::InvalidJson(e.to_string()))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| PublishError::InvalidJson(e.to_string()))?;
    // The event that carries the body nests it one level deeper.
    check_readable(text, MAX_DEPTH - 1).map_err(|e| PublishError::InvalidJson(e.to_string()))?;
    Ok(minify(text))
}

/// Removes the whitespace between the tokens of valid JSON, so that it fits
/// one SSE `data:` line; every value is kept byte for byte. Hand-written
/// because re-serializing through serde_json would change numbers beyond
/// f64 precision, and this is a dozen lines.
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The deepest nesting of arrays and objects serde_json reads (its
/// recursion limit, 128, allows 127 levels): a publish frame may nest as
/// deep, its own object included; a body one level less, as the event
/// that carries it nests it one deeper.
const MAX_DEPTH: usize = 127;

/// What serde_json refuses in a value it reads, but lets through in one it
/// skips (`IgnoredAny`) or keeps as written (`RawValue`): its grammar
/// check does not look for these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Unreadable {
    /// A `\u` escape of half a UTF-16 surrogate pair, at this byte.
    #[error("the \\u escape at byte {0} is half of a UTF-16 surrogate pair")]
    LoneSurrogate(usize),
    /// Arrays and objects nested deeper than this.
    #[error("arrays and objects nest deeper than {0} levels")]
    TooDeep(usize),
}

/// Checks `json`, already known to follow the JSON grammar, for what its
/// grammar check lets through ([`Unreadable`]), so that what the server
/// takes is JSON as serde_json reads it, whatever member the fault is in.
fn check_readable(json: &str, max_depth: usize) -> Result<(), Unreadable> {
    check_escapes(json)?;
    check_depth(json.as_bytes(), max_depth)
}

/// Every `\u` escape of a UTF-16 surrogate in `json` (grammatical JSON) is
/// half of a pair. There, a backslash begins an escape unless the escape
/// before took it: going from backslash to backslash, past each escape,
/// finds them all (and most texts have none, which one `memchr` says).
fn check_escapes(json: &str) -> Result<(), Unreadable> {
    let bytes = json.as_bytes();
    let Some(mut at) = json.find('\\') else {
        return Ok(());
    };
    loop {
        at += escape_len(&bytes[at..]).ok_or(Unreadable::LoneSurrogate(at))?;
        match bytes
            .get(at..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
        {
            Some(found) => at += found,
            None => return Ok(()),
        }
    }
}

/// Arrays and objects nest at most `max_depth` deep in `bytes`
/// (grammatical JSON). Its length, or else a count of its opening
/// brackets, settles most texts at once; only one with more brackets than
/// that is followed through its strings.
fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), Unreadable> {
    // Deeper nesting takes more brackets than `max_depth`, and as many
    // closing ones.
    if bytes.len() <= 2 * max_depth || opening_brackets(bytes) <= max_depth {
        return Ok(());
    }
    let (mut depth, mut in_string, mut escaped) = (0, false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Unreadable::TooDeep(max_depth));
                }
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    Ok(())
}

/// How many `[` and `{` bytes `bytes` holds, strings included: counted
/// in byte-wide lanes, 255 bytes at a time, which the compiler vectorizes
/// (a byte loop costs seven times the instructions).
fn opening_brackets(bytes: &[u8]) -> usize {
    bytes
        .chunks(usize::from(u8::MAX))
        .map(|chunk| {
            // `[` and `{` differ in the 0x20 bit alone.
            let count = chunk
                .iter()
                .fold(0u8, |n, &b| n + u8::from(b | 0x20 == b'{'));
            usize::from(count)
        })
        .sum()
}

/// The length of the escape `escape` starts with (its backslash and what
/// follows), a surrogate pair's two escapes taken as one; `None` for half
/// of a pair.
fn escape_len(escape: &[u8]) -> Option<usize> {
    if escape.get(1) != Some(&b'u') {
        return Some(2);
    }
    match utf16_unit(escape, 2)? {
        0xD800..=0xDBFF => {
            let low = escape.get(6..8) == Some(&b"\\u"[..])
                && (0xDC00..=0xDFFF).contains(&utf16_unit(escape, 8)?);
            low.then_some(12)
        }
        0xDC00..=0xDFFF => None,
        _ => Some(6),
    }
}

/// The four hex digits at `at` in `bytes`, as a UTF-16 code unit.
fn utf16_unit(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u16::from_str_radix(digits, 16).ok()
}

/// What the writer commits through.
struct Committer {
    store: Store,
    hub: Arc<Hub>,
    health: Arc<Health>,
    metrics: TopicMetrics,
    topics: TopicLimit,
    /// How long an idempotency key is honoured.
    key_window: Duration,
    /// `--inject-exit-after-commit`.
    exit_after_commit: bool,
}

async fn write_loop(mut requests: mpsc::Receiver<Request>, mut committer: Committer) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut last_pts = 0;
    while requests.recv_many(&mut group, MAX_GROUP).await > 0 {
        // `pts` follows `seq`: handlers stamp it before queueing, and two of
        // them can reach the queue out of order (or the clock can step
        // back); retention by age then always deletes a prefix of a topic.
        for request in &mut group {
            request.pts = request.pts.max(last_pts);
            last_pts = request.pts;
        }
        if committer.health.refuses(group.len() as u64) {
            // Queued before the outage was known: refused now, not after
            // the pool's acquire timeout.
            for request in group.drain(..) {
                let _ = request.reply.send(Err(PublishError::Unavailable));
            }
            continue;
        }
        committer.commit(&mut group).await;
    }
}

impl Committer {
    /// Refuses the publishes of `group` that would create a topic beyond
    /// the bound; false if the store failed (the whole group was refused).
    async fn admit(&mut self, group: &mut Vec<Request>) -> bool {
        let topics = group.iter().map(|r| r.topic.as_str());
        let admitted = match self.topics.admit(&self.store, topics).await {
            Ok(Some(admitted)) if admitted.iter().any(|&ok| !ok) => admitted,
            Ok(_) => return true,
            Err(e) => {
                self.failed(group, &e);
                return false;
            }
        };
        let max = self.topics.max();
        let (kept, refused): (Vec<_>, Vec<_>) =
            group.drain(..).zip(admitted).partition(|(_, ok)| *ok);
        group.extend(kept.into_iter().map(|(request, _)| request));
        self.metrics
            .publish_failed("max_topics", refused.len() as u64);
        for (request, _) in refused {
            let _ = request.reply.send(Err(PublishError::TooManyTopics { max }));
        }
        true
    }

    /// The store failed under `group`: every publish of it is refused.
    fn failed(&self, group: &mut Vec<Request>, e: &crate::store::Error) {
        tracing::error!(error = %e, events = group.len(), "committing publishes failed");
        self.health.failed(e);
        self.metrics.publish_failed("storage", group.len() as u64);
        // The database may have committed before failing to say so: live
        // subscribers of these topics catch up from the store rather than
        // wait for the next publish to reveal a hole.
        for request in group.iter() {
            self.hub.resync(request.topic.as_str());
        }
        for request in group.drain(..) {
            let _ = request.reply.send(Err(PublishError::Unavailable));
        }
    }

    /// Commits `group` in one transaction, fans it out, acknowledges it.
    async fn commit(&mut self, group: &mut Vec<Request>) {
        if !self.admit(group).await || group.is_empty() {
            return;
        }
        let appends: Vec<Append<'_>> = group
            .iter()
            .map(|r| Append {
                topic: r.topic.as_str(),
                pts: r.pts,
                data: &r.data,
                key: r.key.as_ref().map(|(key, digest)| IdempotencyKey {
                    key: key.as_str(),
                    digest: *digest,
                }),
            })
            .collect();
        // SQLite: behind at most one seed chunk (`Store::write_turn`).
        let turn = self.store.write_turn().await;
        let committed = self.store.append(&appends, self.key_window).await;
        drop(turn);
        drop(appends);
        match committed {
            Ok(commit) => {
                if self.exit_after_commit {
                    die();
                }
                self.metrics
                    .notifications_sent
                    .inc_by(commit.notifications as u64);
                self.topics
                    .committed(group.iter().map(|r| r.topic.as_str()));
                self.deliver(group, &commit.outcomes);
            }
            Err(e) => self.failed(group, &e),
        }
    }

    /// Fans the events of a committed `group` that were stored out, then
    /// answers each publish as its `outcome` says. Replays are not fanned
    /// out again.
    fn deliver(&self, group: &mut Vec<Request>, outcomes: &[Outcome]) {
        let publishes = group.len();
        let mut by_topic: HashMap<&str, Vec<Event>> = HashMap::new();
        let mut replies = Vec::with_capacity(publishes);
        let (mut replayed, mut mismatched) = (0, 0);
        for (request, outcome) in group.iter_mut().zip(outcomes) {
            replies.push(match *outcome {
                Outcome::Stored(seq) => {
                    by_topic
                        .entry(request.topic.as_str())
                        .or_default()
                        .push(Event {
                            seq,
                            stamp: Stamp::Pts(request.pts),
                            data: Bytes::from(std::mem::take(&mut request.data)),
                        });
                    Ok(Published {
                        seq,
                        replayed: false,
                    })
                }
                Outcome::Replayed(seq) => {
                    replayed += 1;
                    Ok(Published {
                        seq,
                        replayed: true,
                    })
                }
                Outcome::Mismatch => {
                    mismatched += 1;
                    Err(PublishError::KeyReused)
                }
            });
        }
        let stored = (publishes - replayed - mismatched) as u64;
        self.metrics.published.inc_by(stored);
        if stored > 0 {
            self.metrics.commit_events.observe(stored);
        }
        self.metrics.publish_replayed.inc_by(replayed as u64);
        if mismatched > 0 {
            self.metrics
                .key_refusals(KeyRefusal::Mismatch)
                .inc_by(mismatched as u64);
        }
        for (topic, events) in &by_topic {
            self.hub.publish(topic, events);
        }
        drop(by_topic);
        for (request, reply) in group.drain(..).zip(replies) {
            // A publisher that went away still had its event committed.
            let _ = request.reply.send(reply);
        }
    }
}

/// `--inject-exit-after-commit`: the process is killed (SIGKILL) right
/// after a commit, before any publisher is answered, as a crash between
/// the two would leave it.
fn die() -> ! {
    // SAFETY: kill(2) and getpid(2) take and return plain integers.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // Not reached: SIGKILL can be neither blocked nor caught.
    std::process::abort()
}

/// A `{"publish": …}` frame, with an optional `id` echoed in the ack.
#[derive(Deserialize)]
pub(crate) struct PublishFrame<'a> {
    /// The value to publish, as the client wrote it.
    #[serde(borrow)]
    pub(crate) publish: &'a RawValue,
    /// Echoed in the acknowledgement.
    #[serde(borrow, default)]
    pub(crate) id: Option<&'a RawValue>,
    /// The publish's idempotency key, if any (checked by [`Key::from_json`]).
    #[serde(borrow, default)]
    pub(crate) idempotency_key: Option<&'a RawValue>,
}

impl<'a> PublishFrame<'a> {
    /// Decodes a WebSocket text frame; one that is not a publish frame is
    /// the reason to close the stream. Only a JSON object is one: serde
    /// would also read a struct from an array (`["publish"]`); and only
    /// JSON as serde_json reads it, in every member: serde_json does not
    /// look for a lone surrogate escape or for nesting past its limit in
    /// the members it skips or keeps raw (the `ws_publish_frame` fuzz
    /// target found a lone surrogate in a skipped member).
    pub(crate) fn decode(message: &'a [u8]) -> Result<Self, Disconnect> {
        std::str::from_utf8(message)
            .ok()
            .filter(|text| text.trim_start().starts_with('{'))
            .and_then(|text| {
                let frame = serde_json::from_str(text).ok()?;
                check_readable(text, MAX_DEPTH).ok().map(|()| frame)
            })
            .ok_or(Disconnect::InvalidMessage)
    }

    /// The body to store: the `publish` value (valid JSON: decoding checked
    /// it) on one line, or 1009 when it is over `max` bytes.
    pub(crate) fn body(&self, max: usize) -> Result<String, Disconnect> {
        let value = self.publish.get();
        if value.len() > max {
            return Err(Disconnect::MessageTooBig);
        }
        Ok(minify(value))
    }
}

#[derive(Serialize)]
struct Ack<'a> {
    ack: AckBody<'a>,
}

#[derive(Serialize)]
struct AckBody<'a> {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    /// Only when true: stored before under the same idempotency key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
}

#[derive(Serialize)]
struct Refusal<'a> {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
}

/// Publishing from a WebSocket subscriber: each `{"publish": <JSON>}` frame
/// is published to the stream's topic and answered with
/// `{"ack": {"seq": N}}` (plus the frame's `id`, if it had one, and
/// `"replayed": true` for a replay of its idempotency key). A publish the
/// server cannot take now, or whose key is invalid or used for another
/// body, is answered `{"error": "…"}` and the stream goes on; a frame that
/// breaks the rules closes it.
#[derive(Debug)]
pub struct SocketPublisher {
    publisher: Publisher,
    topic: Name,
    /// Whether this socket presented a token that may publish.
    permission: Result<(), Denied>,
}

impl SocketPublisher {
    /// Publishes to `topic` through `publisher`, if `permission` allows.
    pub fn new(publisher: Publisher, topic: Name, permission: Result<(), Denied>) -> Self {
        Self {
            publisher,
            topic,
            permission,
        }
    }

    /// Publishes `data` under the frame's key, if valid; the answer.
    async fn publish(&self, data: String, frame: &PublishFrame<'_>) -> Vec<u8> {
        let refusal = |error: String| {
            serde_json::to_vec(&Refusal {
                error,
                id: frame.id,
            })
        };
        let key = match frame.idempotency_key.map(Key::from_json).transpose() {
            Ok(key) => key,
            Err(reason) => {
                self.publisher.0.invalid_keys.inc();
                return refusal(format!(
                    "invalid idempotency_key: {reason}; nothing was stored"
                ))
                .expect("in-memory JSON serialization");
            }
        };
        // Only a refusal the client may retry (or must fix) is left:
        // answered, the stream goes on.
        match self.publisher.publish_line(&self.topic, data, key).await {
            Ok(Published { seq, replayed }) => serde_json::to_vec(&Ack {
                ack: AckBody {
                    seq,
                    id: frame.id,
                    replayed,
                },
            }),
            Err(e) => refusal(e.to_string()),
        }
        .expect("in-memory JSON serialization")
    }
}

impl Inbox for SocketPublisher {
    fn refreshed(&mut self, grant: &Grant) {
        self.permission = grant.publish_permission(self.topic.as_str());
    }

    async fn receive(&mut self, message: Bytes) -> Result<Option<Bytes>, Disconnect> {
        if self.permission.is_err() {
            return Err(Disconnect::Unauthorized);
        }
        let frame = PublishFrame::decode(&message)?;
        let data = frame.body(self.publisher.0.max_body)?;
        Ok(Some(Bytes::from(self.publish(data, &frame).await)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_validated_and_put_on_one_line_unchanged() {
        let body =
            b"{ \"a\" : [1, 2.50,\n 123456789012345678901234567890 ],\r\n\t\"s\": \"x y\\\" z\" }";
        assert_eq!(
            validate(body, 1000).unwrap(),
            r#"{"a":[1,2.50,123456789012345678901234567890],"s":"x y\" z"}"#
        );
        assert_eq!(validate(b" 42 ", 10).unwrap(), "42");
    }

    #[test]
    fn only_an_object_is_a_publish_frame() {
        let frame = PublishFrame::decode(b" {\"publish\": [1], \"id\": 2}").unwrap();
        assert_eq!(
            (frame.publish.get(), frame.id.map(RawValue::get)),
            ("[1]", Some("2"))
        );
        for bad in [
            &br#"["publish"]"#[..],
            br#"[1, 2]"#,
            br#"{"id": 1}"#,
            br#""publish""#,
            b"\xff",
        ] {
            assert!(
                matches!(PublishFrame::decode(bad), Err(Disconnect::InvalidMessage)),
                "{bad:?}"
            );
        }
    }

    /// A frame `{"publish": …}` whose value nests `levels` deep.
    fn nested_frame(levels: usize) -> String {
        let (open, close) = ("[".repeat(levels), "]".repeat(levels));
        format!(r#"{{"publish":{open}0{close}}}"#)
    }

    #[test]
    fn a_frame_is_json_as_serde_json_reads_it_in_every_member() {
        let too_deep = nested_frame(MAX_DEPTH);
        let escapes = r#"a \"quoted\" \\ word, "#.repeat(20);
        let late_surrogate = format!(r#"{{"publish":"{escapes}","x":"\uDE00"}}"#);
        let objects: String = (0..200).map(|i| format!(r#"{{"i":{i}}},"#)).collect();
        let shallow = format!(r#"{{"publish":[{objects}"[{{\"[{{"],"x":"{escapes}\ud83d\ude00"}}"#);
        for bad in [
            // The ws_publish_frame fuzz target's find (issue 25): a lone
            // surrogate escape in a member the server skips.
            &br#"{"publish":[0,0],"i":{"prpublisi\\\uDadDD {":0.5}}"#[..],
            br#"{"publish":"\uD800"}"#,
            br#"{"publish":1,"id":"\uDC00\uD800"}"#,
            br#"{"publish":"\uD800\u0041"}"#,
            br#"{"publish":"\uD800\n"}"#,
            late_surrogate.as_bytes(),
            too_deep.as_bytes(),
        ] {
            let text = String::from_utf8_lossy(bad);
            assert!(
                serde_json::from_slice::<serde_json::Value>(bad).is_err(),
                "serde_json reads {text}"
            );
            assert!(
                matches!(PublishFrame::decode(bad), Err(Disconnect::InvalidMessage)),
                "{text}"
            );
        }
        let deepest = nested_frame(MAX_DEPTH - 1);
        for good in [
            &br#"{"publish":"\uD83D\uDE00 \\uD800 \" [[","x":{"a\"{":"\u00e9"}}"#[..],
            deepest.as_bytes(),
            shallow.as_bytes(),
        ] {
            let text = String::from_utf8_lossy(good);
            assert!(
                serde_json::from_slice::<serde_json::Value>(good).is_ok(),
                "{text}"
            );
            assert!(PublishFrame::decode(good).is_ok(), "{text}");
        }
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        assert_eq!(
            validate(&[b'1'; 11], 10),
            Err(PublishError::TooLarge { size: 11, max: 10 })
        );
        for bad in [&b""[..], b"{", b"{\"a\":1} x", b"nope", b"\xff"] {
            assert!(
                matches!(validate(bad, 100), Err(PublishError::InvalidJson(_))),
                "{bad:?}"
            );
        }
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        for (bad, reason) in [
            (
                r#"{"a":"\uD800"}"#,
                "the \\u escape at byte 6 is half of a UTF-16 surrogate pair",
            ),
            (&too_deep, "arrays and objects nest deeper than 126 levels"),
        ] {
            assert_eq!(
                validate(bad.as_bytes(), 1000),
                Err(PublishError::InvalidJson(reason.to_owned()))
            );
        }
        let deepest = &too_deep[1..too_deep.len() - 1];
        assert_eq!(validate(deepest.as_bytes(), 1000).unwrap(), deepest);
    }
}
