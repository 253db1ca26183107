//! One connection served by hyper: HTTP/1.1 (WebSocket upgrades included)
//! or HTTP/2 (over TLS by ALPN, or with prior knowledge), every request
//! going to the router through [`ConnService`], which opens its scope
//! ([`crate::scope`]), counts it in the connection's [`Activity`] and, on
//! HTTP/2, bounds the streams opened per second.
//!
//! The connection's task runs the connection beside its phases' deadlines
//! ([`crate::phase`]): a head or an idle spell over its bound, or a stream
//! flood, ends it (an HTTP/1.1 connection is dropped; an HTTP/2 one gets a
//! GOAWAY and ends once its open streams have), and so does the shutdown
//! (after the request in flight on HTTP/1.1, the open streams on HTTP/2).
//! Each close at a bound is counted in `streamgauge_connection_closes_total`.
//!
//! HTTP/2 settings: at most `--max-concurrent-streams` streams at once; a
//! ping after `--keepalive-interval` without a frame from the peer, and
//! the connection closed when its ack has not come within what is left of
//! `--pong-timeout`; the extended CONNECT of RFC 8441, so that WebSockets
//! run over HTTP/2 streams; hyper's own bounds against reset floods (20
//! streams reset before they were accepted, 1,024 reset by errors: then
//! GOAWAY). Each stream's answer is its own body, with its own bounded
//! queue and batching writer; HTTP/2 flow control stops a stream whose
//! window is spent at its next chunk (its queue then fills, as behind a
//! slow HTTP/1.1 reader) without stopping the others.

use std::convert::Infallible;
use std::future::{Future, pending};
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use bytes::{Buf as _, Bytes};
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::{CloseReason, ConnectionMetrics, Protocol};
use crate::phase::{Activity, Bounds};
use crate::scope::{self, Client};

/// How hyper serves connections: its two builders, configured once.
#[derive(Debug, Clone)]
pub struct Http {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    bounds: Bounds,
    stream_rate: u32,
}

impl Http {
    /// The builders `config` asks for.
    pub fn new(config: &Config) -> Self {
        // No timer on HTTP/1.1: hyper's header timer would run from the end
        // of one request, so idle connections would close at the header
        // timeout; `phase` times heads and idle spells instead.
        let h1 = http1::Builder::new();
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams)
            .keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(ping_timeout(config))
            .enable_connect_protocol();
        Self {
            h1,
            h2,
            bounds: Bounds {
                header: config.header_timeout,
                keepalive: config.keepalive_timeout,
            },
            stream_rate: config.max_stream_rate,
        }
    }
}

/// How long an HTTP/2 ping's ack may take: what is left of
/// `--pong-timeout` after the `--keepalive-interval` of silence that sent
/// it (validation keeps the timeout above the interval).
fn ping_timeout(config: &Config) -> Duration {
    config
        .pong_timeout
        .saturating_sub(config.keepalive_interval)
        .max(Duration::from_millis(1))
}

/// What one connection serves with.
pub struct Connection<'a> {
    /// The hyper builders.
    pub http: &'a Http,
    /// The application.
    pub router: Router,
    /// Cancelled when the server shuts down.
    pub token: &'a CancellationToken,
    /// Where closes at a bound are counted.
    pub metrics: &'a ConnectionMetrics,
    /// When it was accepted: its first head is timed from then.
    pub accepted: Instant,
}

impl Connection<'_> {
    /// Serves `io` (whose first bytes, already read, are `prefix`) with
    /// hyper on `client`'s protocol, until it closes.
    pub async fn serve<IO>(self, io: IO, prefix: Bytes, client: Client)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let protocol = client.protocol;
        let activity = Arc::new(Activity::new(
            self.http.bounds,
            protocol == Protocol::Http1,
            self.accepted,
        ));
        let _open = self.metrics.open(protocol);
        let service = ConnService {
            router: self.router.clone(),
            conn: Arc::new(PerConnection {
                client,
                activity: Arc::clone(&activity),
                rate: (protocol == Protocol::Http2)
                    .then(|| Mutex::new(Bucket::full(self.http.stream_rate))),
            }),
        };
        let io = TokioIo::new(HyperIo {
            prefix: (!prefix.is_empty()).then(|| Box::new(prefix)),
            inner: io,
            activity: (protocol == Protocol::Http1).then(|| Arc::clone(&activity)),
        });
        let ended = match protocol {
            Protocol::Http1 => {
                let conn = self.http.h1.serve_connection(io, service).with_upgrades();
                self.drive(conn, &activity).await
            }
            Protocol::Http2 => {
                let conn = self.http.h2.serve_connection(io, service);
                self.drive(conn, &activity).await
            }
        };
        if let Err(e) = ended {
            if e.is_timeout() {
                self.metrics.closed(CloseReason::PingTimeout);
            }
            tracing::trace!("connection ended: {e}");
        }
    }

    /// Runs `conn` until it ends, a phase runs over its bound, the service
    /// sheds it, or the server shuts down.
    async fn drive<C: Graceful>(&self, conn: C, activity: &Activity) -> hyper::Result<()> {
        let mut conn = pin!(conn);
        loop {
            let deadline = activity.deadline();
            let expiry = async {
                match deadline {
                    Some((at, _)) => sleep_until(at).await,
                    None => pending().await,
                }
            };
            tokio::select! {
                result = conn.as_mut() => return result,
                () = self.token.cancelled() => break,
                () = activity.changed() => {
                    if activity.is_shed() {
                        self.metrics.closed(CloseReason::StreamRate);
                        break;
                    }
                }
                () = expiry => {
                    let reason = deadline.map_or(CloseReason::KeepaliveTimeout, |(_, r)| r);
                    self.metrics.closed(reason);
                    tracing::debug!(reason = reason.label(), "closing a connection at its bound");
                    if !C::CLOSES_GRACEFULLY {
                        // An HTTP/1.1 connection has nothing in flight:
                        // dropped, as a graceful close would wait for a
                        // head that is not coming.
                        return Ok(());
                    }
                    break;
                }
            }
        }
        conn.as_mut().graceful_shutdown();
        tokio::select! {
            result = conn.as_mut() => result,
            // A shutdown during a graceful close of one connection.
            () = self.token.cancelled(), if !self.token.is_cancelled() => Ok(()),
        }
    }
}

/// A hyper connection that can be closed gracefully.
trait Graceful: Future<Output = hyper::Result<()>> {
    /// Whether a connection closed at a bound is closed gracefully
    /// (HTTP/2: GOAWAY, then the open streams end) rather than dropped.
    const CLOSES_GRACEFULLY: bool;

    /// Starts the graceful close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

type HyperConn<IO> = TokioIo<HyperIo<IO>>;

impl<IO> Graceful for http1::UpgradeableConnection<HyperConn<IO>, ConnService>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    const CLOSES_GRACEFULLY: bool = false;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<IO> Graceful for http2::Connection<HyperConn<IO>, ConnService, TokioExecutor>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    const CLOSES_GRACEFULLY: bool = true;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// What a connection's requests share.
struct PerConnection {
    client: Client,
    activity: Arc<Activity>,
    /// HTTP/2: the streams it may still open now.
    rate: Option<Mutex<Bucket>>,
}

/// The service hyper calls for each request of one connection.
#[derive(Clone)]
pub struct ConnService {
    router: Router,
    conn: Arc<PerConnection>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let conn = &self.conn;
        let busy = conn.activity.start();
        let mut request = request.map(Body::new);
        if let Some(rate) = &conn.rate {
            let mut bucket = rate.lock().unwrap_or_else(PoisonError::into_inner);
            if !bucket.take() {
                conn.activity.shed();
                let refusal = ApiError::StreamRate(bucket.rate).into_response();
                return Box::pin(std::future::ready(Ok(refusal)));
            }
        }
        match conn.client.open(&mut request, Some(busy)) {
            Ok(scope) => {
                let activity = Arc::clone(&conn.activity);
                Box::pin(self.router.clone().oneshot(request).map(move |response| {
                    response.map(|response| {
                        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                            activity.upgraded();
                        }
                        scope::wrap(response, scope)
                    })
                }))
            }
            Err(refusal) => Box::pin(std::future::ready(Ok(refusal.into_response()))),
        }
    }
}

/// A token bucket of streams: `rate` a second, as many at once.
#[derive(Debug)]
struct Bucket {
    rate: u32,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full(rate: u32) -> Self {
        Self {
            rate,
            tokens: f64::from(rate),
            refilled: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let rate = f64::from(self.rate);
        let earned = now.duration_since(self.refilled).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(rate);
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The connection as hyper reads it: the bytes read before hyper took
/// over first, then the socket's; on HTTP/1.1 each read tells the
/// connection's [`Activity`] (a byte while idle begins a head).
pub struct HyperIo<IO> {
    /// What was read before (boxed: an upgraded WebSocket keeps this
    /// struct for its whole life).
    prefix: Option<Box<Bytes>>,
    inner: IO,
    /// Let go of once the connection is upgraded (its last holder).
    activity: Option<Arc<Activity>>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for HyperIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = &mut self.prefix {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                // Let go of the first read's buffer.
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(activity) = &self.activity {
            if activity.is_upgraded() {
                // A WebSocket now: nobody times its heads any more.
                self.activity = None;
            } else if buf.filled().len() > before {
                activity.bytes_read();
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HyperIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_its_rate() {
        let mut bucket = Bucket::full(10);
        assert!((0..10).all(|_| bucket.take()));
        assert!(!bucket.take(), "the burst is spent");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(bucket.take(), "one earned in a tenth of a second");
        assert!(!bucket.take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            (0..20).filter(|_| bucket.take()).count(),
            10,
            "no more than a burst"
        );
    }

    #[tokio::test]
    async fn the_prefix_is_read_first_then_the_connection() {
        use tokio::io::AsyncReadExt as _;
        let mut io = HyperIo {
            prefix: Some(Box::new(Bytes::from_static(b"GET / "))),
            inner: &b"HTTP/1.1\r\n"[..],
            activity: None,
        };
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n");
    }
}
