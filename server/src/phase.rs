//! The phases of a connection served by hyper, and the deadline of each:
//! what bounds a connection between its requests.
//!
//! - **Busy**: a request is in flight (its head arrived, its answer or
//!   stream has not ended). Nothing here bounds it: its body has
//!   `--body-timeout` (read in the handler), its writes `--write-timeout`
//!   (the socket), a stream lasts as long as it streams.
//! - **Head** (HTTP/1.1): no request in flight and a request head begun:
//!   the first from accept (the TLS handshake included), each later one
//!   from its first byte. Closed `--header-timeout` after that.
//! - **Idle**: no request in flight and, on HTTP/1.1, no byte of a next
//!   head. Closed `--keepalive-timeout` after the last request ended. An
//!   HTTP/2 connection without streams is idle whatever control frames
//!   it gets (its dead peers are found by pings).
//!
//! [`Activity`] is updated by the connection's service (a request starts,
//! its [`Busy`] token is dropped when it ends) and by its socket (bytes
//! read); the connection's task waits on [`Activity::deadline`] and
//! [`Activity::changed`]. Hyper's own header timer is not used: it runs
//! from the end of one request to the next head, so an idle keep-alive
//! connection could never outlive `--header-timeout`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::CloseReason;

/// The bounds of the phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// A request head's time (`--header-timeout`).
    pub header: Duration,
    /// Time with no request in flight (`--keepalive-timeout`).
    pub keepalive: Duration,
}

/// What one connection is doing; shared by its service, its socket and
/// its task.
#[derive(Debug)]
pub struct Activity {
    bounds: Bounds,
    /// Whether request heads are timed (HTTP/1.1): HTTP/2 frames between
    /// streams are not heads.
    timed_heads: bool,
    in_flight: AtomicUsize,
    /// A byte of the next head arrived while idle (HTTP/1.1 only).
    head_begun: AtomicBool,
    /// Set when the connection must be closed at once (a stream flood).
    shed: AtomicBool,
    /// Set when the connection becomes a WebSocket: its socket's reader
    /// then lets go of this.
    upgraded: AtomicBool,
    /// When the current phase began (head: its start; idle: the end of the
    /// last request).
    since: Mutex<Instant>,
    changed: Notify,
}

impl Activity {
    /// A connection accepted at `accepted`, whose first phase is a head
    /// (HTTP/1.1, `timed_heads`) or idle (HTTP/2) from then.
    pub fn new(bounds: Bounds, timed_heads: bool, accepted: Instant) -> Self {
        Self {
            bounds,
            timed_heads,
            in_flight: AtomicUsize::new(0),
            head_begun: AtomicBool::new(timed_heads),
            shed: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            since: Mutex::new(accepted),
            changed: Notify::new(),
        }
    }

    fn set_since(&self, at: Instant) {
        *self.since.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// A request has started: the connection is busy until the token is
    /// dropped.
    pub fn start(self: &std::sync::Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_begun.store(false, Ordering::Release);
        self.changed.notify_one();
        Busy(std::sync::Arc::clone(self))
    }

    /// Bytes arrived from the peer (HTTP/1.1): while idle, they begin the
    /// next head, whose time runs from now.
    pub fn bytes_read(&self) {
        if self.timed_heads
            && self.in_flight.load(Ordering::Acquire) == 0
            && !self.head_begun.swap(true, Ordering::AcqRel)
        {
            self.set_since(Instant::now());
            self.changed.notify_one();
        }
    }

    /// Asks the connection's task to close the connection now (it went
    /// over a bound the service found).
    pub fn shed(&self) {
        self.shed.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// The connection is being upgraded (a `101` answer): it has no more
    /// heads to time.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    /// Whether the connection was upgraded.
    pub fn is_upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
    }

    /// Whether the connection must be closed now.
    pub fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// When the current phase ends the connection, and why; `None` while
    /// a request is in flight.
    pub fn deadline(&self) -> Option<(Instant, CloseReason)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self.since.lock().unwrap_or_else(PoisonError::into_inner);
        Some(if self.head_begun.load(Ordering::Acquire) {
            (since + self.bounds.header, CloseReason::HeaderTimeout)
        } else {
            (since + self.bounds.keepalive, CloseReason::KeepaliveTimeout)
        })
    }

    /// Resolves once the phase may have changed since this was called
    /// (a request started or ended, a head began, a shed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a change missed while it is not polled is kept for the
    /// next call (one permit).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A request in flight; dropping it ends the request, and the connection
/// is idle from then if no other is in flight.
#[derive(Debug)]
pub struct Busy(std::sync::Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.set_since(Instant::now());
            activity.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const BOUNDS: Bounds = Bounds {
        header: Duration::from_secs(10),
        keepalive: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn heads_then_busy_then_idle_then_a_new_head() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(BOUNDS, true, accepted));
        assert_eq!(
            activity.deadline(),
            Some((accepted + BOUNDS.header, CloseReason::HeaderTimeout)),
            "the first head is timed from accept"
        );
        let busy = activity.start();
        activity.bytes_read();
        assert_eq!(activity.deadline(), None, "busy: not bounded here");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(busy);
        let ended = Instant::now();
        assert_eq!(
            activity.deadline(),
            Some((ended + BOUNDS.keepalive, CloseReason::KeepaliveTimeout))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        let begun = Instant::now();
        activity.bytes_read();
        assert_eq!(
            activity.deadline(),
            Some((begun + BOUNDS.header, CloseReason::HeaderTimeout)),
            "a later head is timed from its first byte"
        );
        let (first, second) = (activity.start(), activity.start());
        drop(first);
        assert_eq!(activity.deadline(), None, "one request still in flight");
        drop(second);
        activity.changed().await;
        assert!(!activity.is_shed());
        activity.shed();
        assert!(activity.is_shed());
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_are_idle_between_streams_whatever_they_read() {
        let accepted = Instant::now();
        let activity = Activity::new(BOUNDS, false, accepted);
        activity.bytes_read();
        assert_eq!(
            activity.deadline(),
            Some((accepted + BOUNDS.keepalive, CloseReason::KeepaliveTimeout))
        );
    }
}
