//! What one request, and the stream it may become, holds from its
//! connection: who the client is ([`ClientAddr`]), a slot under the
//! client's per-address limit when the connection's own slot does not
//! cover it, the connection's [`Busy`] token, and its access-log line.
//!
//! The connection layer opens a [`Scope`] for each request ([`Client::open`]) and
//! wraps the answer's body ([`wrap`]); a stream handler adopts the scope
//! ([`StreamScope`], kept by the stream's guard), so that whatever lives
//! longest, the answer's body or the stream, holds it. The access-log line
//! is written when the last holder lets go: one line per request or
//! stream, with its duration, bytes and why it ended.
//!
//! Which requests take a slot of their own: those on an HTTP/2 connection
//! (one connection carries many streams: the limit counts streams) and
//! those a trusted proxy forwards with `X-Forwarded-For` (the proxy's
//! connection is not the client's). A request on a client's own HTTP/1.1
//! connection is covered by the slot the connection took at accept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, Version};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::error::ApiError;
use crate::logging::ACCESS_TARGET;
use crate::metrics::{CloseReason, ConnectionMetrics, Protocol};
use crate::peers::{PeerSlot, Peers};
use crate::phase::Busy;
use crate::proxy::Trusted;

/// The client's address, in every request's extensions: the socket's
/// peer, or the client a trusted proxy named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// What every connection's requests share.
#[derive(Debug)]
pub struct Shared {
    /// Open connections and streams by client address.
    pub peers: Arc<Peers>,
    /// Peers that may say who their client is.
    pub trusted: Trusted,
    /// Whether each request and stream gets an access-log line.
    pub access_log: bool,
    /// Where refusals are counted.
    pub metrics: ConnectionMetrics,
}

/// Who a connection serves.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's address (the socket's peer, or what a PROXY header
    /// said), or the proxy's when `forwarded`.
    pub addr: SocketAddr,
    /// The peer is a trusted proxy naming each request's client in
    /// `X-Forwarded-For`.
    pub forwarded: bool,
    /// The connection's protocol.
    pub protocol: Protocol,
    /// What every connection shares.
    pub shared: Arc<Shared>,
}

/// One request's hold on its connection; see the module docs.
#[derive(Debug)]
pub struct Scope {
    _slot: Option<PeerSlot>,
    _busy: Option<Busy>,
    /// Whether a stream should hold this scope for its whole life.
    lasting: bool,
    access: Option<AccessLine>,
}

/// The access-log line of one request, filled in as it goes.
#[derive(Debug)]
struct AccessLine {
    client: SocketAddr,
    method: Method,
    path: String,
    version: Version,
    started: Instant,
    status: AtomicU16,
    bytes: AtomicU64,
    /// Why it ended: a stream's reason, or how its body ended.
    reason: Mutex<Option<&'static str>>,
    /// The subject of the JWT that let it in, if one did.
    subject: OnceLock<Box<str>>,
}

impl Client {
    /// Opens the scope of `request`: records its client in its extensions
    /// and takes what it holds. `None` when it would hold nothing.
    ///
    /// # Errors
    ///
    /// [`ApiError::PeerLimit`] (a `429`) when the client's address is at
    /// its limit.
    pub fn open(
        &self,
        request: &mut Request,
        busy: Option<Busy>,
    ) -> Result<Option<Arc<Scope>>, ApiError> {
        let client = if self.forwarded {
            self.shared
                .trusted
                .forwarded_client(request.headers(), self.addr)
        } else {
            self.addr
        };
        request.extensions_mut().insert(ClientAddr(client));
        let slot = if self.forwarded || self.protocol == Protocol::Http2 {
            match self.shared.peers.admit(client.ip()) {
                Some(slot) => Some(slot),
                None => {
                    self.shared.metrics.closed(CloseReason::PeerLimit);
                    return Err(ApiError::PeerLimit(self.shared.peers.limit()));
                }
            }
        } else {
            None
        };
        let access = self.shared.access_log.then(|| AccessLine {
            client,
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            version: request.version(),
            started: Instant::now(),
            status: AtomicU16::new(0),
            bytes: AtomicU64::new(0),
            reason: Mutex::new(None),
            subject: OnceLock::new(),
        });
        let lasting = slot.is_some() || access.is_some() || self.protocol == Protocol::Http2;
        if !lasting && busy.is_none() {
            return Ok(None);
        }
        let scope = Arc::new(Scope {
            _slot: slot,
            _busy: busy,
            lasting,
            access,
        });
        request.extensions_mut().insert(Arc::clone(&scope));
        Ok(Some(scope))
    }
}

impl Scope {
    /// Records why the stream that held this scope ended, and (for a
    /// stream whose bytes do not go through the answer's body, a
    /// WebSocket) the bytes it wrote.
    pub fn stream_ended(&self, reason: &'static str, bytes: u64) {
        if let Some(line) = &self.access {
            line.bytes.fetch_add(bytes, Ordering::Relaxed);
            *line.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        }
    }

    /// Records the subject (`sub`) of the JWT that let the request in.
    pub fn set_subject(&self, sub: &str) {
        if let Some(line) = &self.access {
            let _ = line.subject.set(sub.into());
        }
    }

    fn body_ended(&self, complete: bool) {
        if let Some(line) = &self.access {
            let mut reason = line.reason.lock().unwrap_or_else(PoisonError::into_inner);
            reason.get_or_insert(if complete { "complete" } else { "peer_gone" });
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Some(line) = &self.access else {
            return;
        };
        let reason = line
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or("peer_gone");
        tracing::info!(
            target: ACCESS_TARGET,
            client = %line.client,
            method = %line.method,
            path = %line.path,
            protocol = ?line.version,
            status = line.status.load(Ordering::Relaxed),
            duration_ms = line.started.elapsed().as_secs_f64() * 1e3,
            bytes = line.bytes.load(Ordering::Relaxed),
            reason,
            sub = line.subject.get().map(|s| &**s),
            "access"
        );
    }
}

/// The answer to a request, its body holding `scope` (when there is one)
/// until it ends.
pub fn wrap(response: Response, scope: Option<Arc<Scope>>) -> Response {
    let Some(scope) = scope else {
        return response;
    };
    if let Some(line) = &scope.access {
        line.status
            .store(response.status().as_u16(), Ordering::Relaxed);
    }
    response.map(|body| {
        Body::new(ScopedBody {
            body,
            scope: Some(scope),
        })
    })
}

/// A body that holds its request's scope until it ends or is dropped,
/// counting the bytes it yields for the access log.
struct ScopedBody {
    body: Body,
    scope: Option<Arc<Scope>>,
}

impl Drop for ScopedBody {
    fn drop(&mut self) {
        // HTTP layers stop polling a body whose size they know once they
        // have it all, without waiting for its end.
        if let Some(scope) = self.scope.take() {
            scope.body_ended(self.body.is_end_stream());
        }
    }
}

impl HttpBody for ScopedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(line)) = (
                    frame.data_ref(),
                    self.scope.as_ref().and_then(|s| s.access.as_ref()),
                ) {
                    line.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => {
                if let Some(scope) = self.scope.take() {
                    scope.body_ended(true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The scope a stream handler takes from its request: kept by the
/// stream's guard for the stream's whole life when it holds anything a
/// stream must keep (a slot, an access-log line, an HTTP/2 stream's place
/// on its connection).
#[derive(Debug, Default)]
pub struct StreamScope(pub Option<Arc<Scope>>);

/// The scope a handler that is not a stream notes things in (the access
/// log's subject); shared with the answer, which holds it to the end.
#[derive(Debug, Default)]
pub struct RequestScope(pub Option<Arc<Scope>>);

impl<S: Send + Sync> FromRequestParts<S> for RequestScope {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Arc<Scope>>().cloned()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StreamScope {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .remove::<Arc<Scope>>()
                .filter(|scope| scope.lasting),
        ))
    }
}
