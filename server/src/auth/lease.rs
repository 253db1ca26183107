//! A live stream opened with a JWT lives no longer than the token: its
//! [`Lease`] ends it at `exp` (plus the accepted skew) as
//! [`Disconnect::TokenExpired`], or as [`Disconnect::Revoked`] as soon as
//! the denylist names the token's subject or id. A WebSocket client may
//! send `{"refresh": "<jwt>"}` before then to go on with a new token.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;

use super::denylist::Denylist;
use super::jwt::Grant;
use super::{Auth, Refusal};
use crate::disconnect::Disconnect;
use crate::metrics::AuthMetrics;
use crate::protocol::Name;

/// What keeps a stream within its token's life.
#[derive(Debug)]
pub struct Lease {
    auth: Arc<Auth>,
    topic: Name,
    sub: Box<str>,
    jti: Option<Box<str>>,
    deadline: Pin<Box<Sleep>>,
    /// The denylist in force, then each change: one waiter for the lease's
    /// whole life. A fresh `changed()` per batch would register and drop a
    /// waiter on the list every stream a JWT opened shares, twice per batch.
    denylist: WatchStream<Arc<Denylist>>,
    metrics: AuthMetrics,
}

/// A `{"refresh": "<jwt>", "id": …}` frame.
#[derive(Deserialize)]
struct RefreshFrame<'a> {
    refresh: String,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// `{"refreshed": {"exp": …}, "id": …}`.
#[derive(Serialize)]
struct Refreshed<'a> {
    refreshed: Expiry,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Expiry {
    exp: u64,
}

/// `{"error": …, "reason": …, "id": …}`.
#[derive(Serialize)]
struct RefreshRefused<'a> {
    error: String,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
}

/// What a refresh frame came to: the reply, and the new grant if taken.
#[derive(Debug)]
pub struct Refresh {
    /// The reply to send back.
    pub reply: Bytes,
    /// The new token's grant, when it was taken.
    pub grant: Option<Grant>,
}

impl Lease {
    /// The lease of a stream of `topic` that `grant` opened.
    pub fn new(auth: Arc<Auth>, topic: Name, grant: &Grant, metrics: AuthMetrics) -> Self {
        // Yields the list in force first: a change between the token's
        // check and now is not missed.
        let denylist = WatchStream::new(auth.denylist());
        let deadline = Box::pin(tokio::time::sleep_until(deadline(grant.exp, auth.leeway())));
        Self {
            sub: grant.sub.clone(),
            jti: grant.jti.clone(),
            auth,
            topic,
            deadline,
            denylist,
            metrics,
        }
    }

    /// Whether the stream must end now: at expiry, or when revoked. A
    /// poll rather than a future, so that a stream's loop waits on it with
    /// no state of its own (most streams have no lease, and every one pays
    /// for the wait's size).
    ///
    /// `Pending` registers `cx`'s waker with the deadline and, while the
    /// denylist can still change, with the denylist: each change is looked
    /// at once.
    pub fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Disconnect::TokenExpired);
        }
        // `None`: the denylist can no longer change; the deadline remains.
        while let Poll::Ready(Some(list)) = Pin::new(&mut self.denylist).poll_next(cx) {
            if list.denies(&self.sub, self.jti.as_deref()) {
                return Poll::Ready(Disconnect::Revoked);
            }
        }
        Poll::Pending
    }

    /// Takes `message` if it is a refresh frame: the new token must verify,
    /// be for the same subject and still allow this topic; the stream then
    /// goes on until the new `exp`. `None`: not a refresh frame.
    pub fn refresh(&mut self, message: &[u8]) -> Option<Refresh> {
        // Publish frames are most of what a client sends: only a frame that
        // mentions the key is parsed for it.
        if !contains(message, b"\"refresh\"") {
            return None;
        }
        let frame: RefreshFrame<'_> = serde_json::from_slice(message).ok()?;
        let outcome = self.check(&frame.refresh);
        self.metrics.refreshed(outcome.is_ok());
        let reply = match &outcome {
            Ok(grant) => {
                self.deadline
                    .as_mut()
                    .reset(deadline(grant.exp, self.auth.leeway()));
                self.jti.clone_from(&grant.jti);
                serde_json::to_vec(&Refreshed {
                    refreshed: Expiry { exp: grant.exp },
                    id: frame.id,
                })
            }
            Err(refusal) => serde_json::to_vec(&RefreshRefused {
                error: format!("token refresh refused: {}", refusal.describe()),
                reason: refusal.label(),
                id: frame.id,
            }),
        };
        Some(Refresh {
            reply: Bytes::from(reply.expect("in-memory JSON serialization")),
            grant: outcome.ok(),
        })
    }

    fn check(&self, token: &str) -> Result<Grant, Refusal> {
        let grant = self.auth.verify(token)?;
        if grant.sub != self.sub {
            return Err(Refusal::WrongToken);
        }
        if !grant.may_subscribe(self.topic.as_str()) {
            return Err(Refusal::TopicNotAllowed);
        }
        Ok(grant)
    }
}

/// The furthest a deadline is set: a token may say it never expires
/// (`exp` near `u64::MAX`), which no clock can count to.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The instant `exp` (Unix seconds) plus `leeway` falls at.
fn deadline(exp: u64, leeway: Duration) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let end = Duration::from_secs(exp).saturating_add(leeway);
    Instant::now() + end.saturating_sub(now).min(FOREVER)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
