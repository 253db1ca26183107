//! Server-Sent Events: batches become chunks of one streaming response body.
//!
//! The stream's whole session (source, queue, writer) is polled from inside
//! the response body, in the HTTP connection's own task: no extra task and
//! no channel hop per connection. The HTTP layer ([`crate::direct`], or
//! hyper for a request it leaves to hyper) polls the body only when it can
//! take more bytes, so a slow reader stops the session at its next write
//! and the queue behind it fills: that is the backpressure. An SSE stream
//! ends with the end of the body; when the server ends one that should have
//! gone on (storage down, a lagging subscriber under `overflow=disconnect`),
//! an `end` notice saying why comes first.

use std::convert::Infallible;
use std::future::{Future, pending, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use futures_util::Stream;

use super::{Inbound, Transport};
use crate::disconnect::Disconnect;
use crate::protocol::{Framing, SSE_KEEPALIVE, sse_end_notice};
use crate::writer::Batch;

/// The one chunk handed from the session to the body, waiting to be taken.
type Slot = Arc<Mutex<Option<Bytes>>>;

fn lock(slot: &Slot) -> MutexGuard<'_, Option<Bytes>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The SSE side of a session: writes hand chunks to the response body.
#[derive(Debug)]
pub struct SseTransport {
    slot: Slot,
    /// Whether anything was written since the last keep-alive tick; an
    /// active stream needs no keep-alive comments.
    active: bool,
}

impl SseTransport {
    /// Hands `chunk` to the body, waiting until the previous one is taken.
    ///
    /// Pending here registers no waker on purpose: the body polls the
    /// session right after taking a chunk, and only then can there be room.
    async fn put(&mut self, chunk: Bytes) {
        let mut chunk = Some(chunk);
        poll_fn(|_| {
            let mut slot = lock(&self.slot);
            if slot.is_some() {
                return Poll::Pending;
            }
            *slot = chunk.take();
            Poll::Ready(())
        })
        .await;
    }
}

impl SseTransport {
    /// How the writer must frame events for this transport.
    pub const FRAMING: Framing = Framing::Sse;
}

impl Transport for SseTransport {
    async fn write_batch(&mut self, batch: &Batch<'_>) -> Result<(), Disconnect> {
        self.active = true;
        self.put(batch.bytes.clone()).await;
        Ok(())
    }

    async fn keep_alive(&mut self) -> Result<bool, Disconnect> {
        if std::mem::take(&mut self.active) {
            return Ok(false);
        }
        self.put(Bytes::from_static(SSE_KEEPALIVE)).await;
        Ok(true)
    }

    async fn recv(&mut self) -> Inbound {
        // An SSE client sends nothing once the request is made; its going
        // away is seen by the HTTP layer, which then drops the body and the
        // session.
        pending().await
    }

    async fn send_reply(&mut self, _reply: Bytes) -> Result<(), Disconnect> {
        unreachable!("SSE streams receive no messages to reply to")
    }

    async fn close(mut self, reason: Disconnect) {
        // The body ends when the session completes; bounded like every
        // write, by the listener's write deadline.
        if reason.notifies_sse() {
            self.put(sse_end_notice(reason.label(), reason.reason()))
                .await;
        }
    }
}

/// A streaming response body driven by the session that `make` builds
/// around an [`SseTransport`].
pub fn body<F, Fut>(make: F) -> Body
where
    F: FnOnce(SseTransport) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slot = Slot::default();
    let session = make(SseTransport {
        slot: Arc::clone(&slot),
        active: false,
    });
    Body::from_stream(SessionBody {
        session: Some(Box::pin(session)),
        slot,
        first: First::Waiting,
    })
}

/// Where a stream's first chunk is: it is written on its own, at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    /// Not handed to the HTTP layer yet.
    Waiting,
    /// Handed to the HTTP layer, not yet written.
    Handed,
    /// Written: the next chunks may be gathered into fewer writes.
    Written,
}

struct SessionBody {
    /// The running session; dropped (with everything it owns) once it ends.
    session: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    slot: Slot,
    first: First,
}

impl SessionBody {
    /// Hands `chunk` to the HTTP layer.
    fn hand(&mut self, chunk: Bytes) -> Poll<Option<Result<Bytes, Infallible>>> {
        if self.first == First::Waiting {
            self.first = First::Handed;
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Stream for SessionBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // The HTTP layer polls a ready body again at once and gathers what
        // it gets (up to 16 chunks; hyper up to about 400 KiB, `direct` 256
        // KiB), writing only once the body is pending: behind a source that
        // is always ahead (a replay at full speed) the first events would
        // wait for that buffer to fill (350-700 ms for a replay's first
        // row, debug build, PostgreSQL).
        // Pending once after the first chunk, woken at once, writes it at
        // once. After it, gathering chunks into fewer writes is what keeps
        // a saturated stream cheap: pending after every chunk cost 13 % of
        // the throughput and 33 % more server CPU per event (`ab`,
        // docs/performance.md).
        if this.first == First::Handed {
            this.first = First::Written;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let ready = lock(&this.slot).take();
        if let Some(chunk) = ready {
            return this.hand(chunk);
        }
        let Some(session) = this.session.as_mut() else {
            return Poll::Ready(None);
        };
        let done = session.as_mut().poll(cx).is_ready();
        if done {
            this.session = None;
        }
        let chunk = lock(&this.slot).take();
        match chunk {
            Some(chunk) => this.hand(chunk),
            None if done => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}
