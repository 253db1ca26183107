//! The accept loop, and the first steps of every connection, each bounded
//! by the time its first request head may take (`--header-timeout` from
//! accept):
//!
//! 1. who the client is: a trusted proxy's PROXY protocol header when
//!    `--proxy-protocol` is set ([`crate::proxy`]), and the client's slot
//!    under its per-address limit (other peers took theirs at accept;
//!    requests a proxy forwards with `X-Forwarded-For` take theirs one by
//!    one, [`crate::scope`]);
//! 2. the TLS handshake, when the server has a certificate
//!    ([`crate::tls`]);
//! 3. the protocol: ALPN `h2` is HTTP/2; otherwise the first bytes read
//!    tell: a whole SSE request head goes to [`direct`](crate::direct),
//!    which streams it without hyper's per-connection buffers; a whole head
//!    that cannot be served is answered there with a JSON `400`; HTTP/2's
//!    preface (h2c with prior knowledge) and everything else (WebSocket
//!    upgrades, publishes, operations, a head that came in pieces) go to
//!    hyper ([`crate::conn`]) with the bytes read.
//!
//! Graceful shutdown: once the token is cancelled no connection is
//! accepted, hyper connections finish what is in flight and close, SSE
//! streams end with their sessions (which watch the same token), and
//! [`serve`] returns when every connection has closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{Connection, Http};
use crate::direct::{self, H2_PREFACE, Sniffed};
use crate::error::ApiError;
use crate::listener::{DeadlineIo, Listener};
use crate::metrics::{CloseReason, ConnectionMetrics, Protocol};
use crate::peers::refusal;
use crate::proxy;
use crate::scope::{Client, Shared};
use crate::tls::{self, Tls};

/// What every connection is served with.
#[derive(Debug)]
pub struct Serving {
    /// The application.
    pub router: Router,
    /// Cancelled when the server shuts down.
    pub token: CancellationToken,
    /// How hyper serves.
    pub http: Http,
    /// The certificate to serve HTTPS with; `None`: plain HTTP.
    pub tls: Option<Tls>,
    /// Whether trusted proxies send a PROXY protocol header.
    pub proxy_protocol: bool,
    /// The time a request head may take.
    pub header_timeout: std::time::Duration,
    /// What requests share: limits, trusted proxies, the access log.
    pub shared: Arc<Shared>,
}

impl Serving {
    fn metrics(&self) -> &ConnectionMetrics {
        &self.shared.metrics
    }
}

/// Serves every connection `listener` accepts until `token` is
/// cancelled, then waits for the connections open to close.
pub async fn serve(mut listener: Listener, serving: Arc<Serving>) {
    let connections = TaskTracker::new();
    loop {
        let (io, addr) = tokio::select! {
            biased;
            () = serving.token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let serving = Arc::clone(&serving);
        if serving.tls.is_some() {
            connections.spawn(secure(io, addr, serving));
        } else {
            connections.spawn(connection(io, addr, serving));
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection to its end.
///
/// Its parts are stored once (an `async fn` would keep a second copy of
/// `io` for the connection's whole life; the first step owns it and hands
/// it back), and the steps that run once are boxed, so that an SSE
/// stream's task is sized by what it keeps.
fn connection(
    io: DeadlineIo,
    peer: SocketAddr,
    serving: Arc<Serving>,
) -> impl Future<Output = ()> + Send {
    let found = Box::pin(client(io, peer, Arc::clone(&serving)));
    async move {
        let Some((mut io, mut client)) = found.await else {
            return;
        };
        let deadline = io.accepted() + serving.header_timeout;
        if let Next::Hyper(prefix) = dispatch(&mut io, &mut client, &serving, deadline).await {
            // Boxed: hyper's connection state would otherwise size every
            // connection's task, the streams served directly included.
            Box::pin(hyper(&serving, io.accepted()).serve(io, prefix, client)).await;
        }
    }
}

/// Who the connection serves: the PROXY header's client of a trusted
/// proxy (when `--proxy-protocol`), which then takes its slot; `None` when
/// the connection is to be closed (a bad header, a client at its limit).
/// Hands the connection back with it.
async fn client(
    mut io: DeadlineIo,
    peer: SocketAddr,
    serving: Arc<Serving>,
) -> Option<(DeadlineIo, Client)> {
    let deadline = io.accepted() + serving.header_timeout;
    let shared = &serving.shared;
    let trusted = shared.trusted.contains(peer.ip());
    let client = |addr, forwarded| Client {
        addr,
        forwarded,
        protocol: Protocol::Http1,
        shared: Arc::clone(shared),
    };
    if !trusted {
        // Admitted at accept.
        return Some((io, client(peer, false)));
    }
    if !serving.proxy_protocol {
        return Some((io, client(peer, true)));
    }
    let addr = match timeout_at(deadline, proxy::read_header(&mut io)).await {
        Ok(Ok(addr)) => addr.unwrap_or(peer),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "closing a proxied connection: {e}");
            serving.metrics().closed(CloseReason::ProxyHeader);
            return None;
        }
        Err(_) => {
            serving.metrics().closed(CloseReason::HeaderTimeout);
            return None;
        }
    };
    let Some(slot) = shared.peers.admit(addr.ip()) else {
        serving.metrics().closed(CloseReason::PeerLimit);
        if serving.tls.is_none() {
            let _ = io.write_all(&refusal(shared.peers.limit())).await;
            let _ = io.shutdown().await;
        }
        return None;
    };
    io.hold(slot);
    Some((io, client(addr, false)))
}

/// Serves one connection over TLS to its end: the handshake on `io`
/// (within the time of its first head), then HTTP over it: HTTP/2 when
/// ALPN says so, otherwise what the first bytes are. A task of its own
/// kind, so that plain connections are not sized by the TLS state.
fn secure(
    io: DeadlineIo,
    peer: SocketAddr,
    serving: Arc<Serving>,
) -> impl Future<Output = ()> + Send {
    let found = Box::pin(client(io, peer, Arc::clone(&serving)));
    async move {
        let (Some((io, mut client)), Some(tls)) = (found.await, &serving.tls) else {
            return;
        };
        let accepted = io.accepted();
        let deadline = accepted + serving.header_timeout;
        // Boxed: the handshake's state is freed once it is done.
        let handshake = Box::pin(timeout_at(deadline, tls::stream::accept(io, tls.config())));
        let mut stream = match handshake.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(client = %client.addr, "TLS handshake failed: {e}");
                serving.metrics().closed(CloseReason::TlsHandshake);
                return;
            }
            Err(_) => {
                serving.metrics().closed(CloseReason::HeaderTimeout);
                return;
            }
        };
        let prefix = if stream.alpn_protocol() == Some(tls::H2) {
            client.protocol = Protocol::Http2;
            Bytes::new()
        } else {
            match dispatch(&mut stream, &mut client, &serving, deadline).await {
                Next::Hyper(prefix) => prefix,
                Next::Done => return,
            }
        };
        Box::pin(hyper(&serving, accepted).serve(stream, prefix, client)).await;
    }
}

/// What is left to do with a connection once its first bytes were read.
enum Next {
    /// Nothing: it was answered, or is gone.
    Done,
    /// Serve it with hyper, these bytes first.
    Hyper(Bytes),
}

/// Reads the first bytes of `io` and serves what they are: an SSE stream
/// directly, a malformed head with a JSON `400`; anything else is left to
/// hyper, on the protocol they show (HTTP/2's preface, or HTTP/1.1).
async fn dispatch<IO>(
    io: &mut IO,
    client: &mut Client,
    serving: &Serving,
    deadline: Instant,
) -> Next
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Each arm takes its parts out, so that what was read is not kept
    // beside the stream.
    let (request, trailing) = match direct::sniff(io, deadline).await {
        Sniffed::Stream(request, trailing) => (request, trailing),
        Sniffed::Malformed(reason) => {
            // Boxed: a stream's task is not sized by this.
            Box::pin(direct::refuse(io, ApiError::MalformedHead(reason))).await;
            return Next::Done;
        }
        Sniffed::Other(prefix) => {
            if prefix.starts_with(H2_PREFACE) || H2_PREFACE.starts_with(&prefix) {
                client.protocol = Protocol::Http2;
            }
            return Next::Hyper(prefix);
        }
        Sniffed::TimedOut => {
            serving.metrics().closed(CloseReason::HeaderTimeout);
            return Next::Done;
        }
        Sniffed::Gone => return Next::Done,
    };
    let _open = serving.metrics().open(Protocol::Http1);
    // Boxed: the router's future runs once, and would otherwise size every
    // stream's task.
    let response = Box::pin(direct::answer(client, serving.router.clone(), request)).await;
    direct::respond(io, Box::new(response), trailing).await;
    Next::Done
}

/// Hyper's side of a connection accepted at `accepted`.
fn hyper(serving: &Serving, accepted: Instant) -> Connection<'_> {
    Connection {
        http: &serving.http,
        router: serving.router.clone(),
        token: &serving.token,
        metrics: serving.metrics(),
        accepted,
    }
}
