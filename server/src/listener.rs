//! The TCP listener: accepts connections, turns Nagle off, admits each
//! peer address under its connection limit, and wraps each connection in
//! [`DeadlineIo`] so that a peer that stops reading cannot hold a
//! connection (and its buffers) forever.
//!
//! The write deadline must live at this level: behind a stalled SSE
//! reader, the HTTP layer stops polling the response body, so nothing
//! inside the body could ever notice the stall; under TLS, it bounds the
//! encrypted writes the same. The time a request head may take is bounded
//! above this level, where heads are seen in plain text
//! ([`crate::serve`], [`crate::phase`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep, sleep};

use crate::peers::{PeerSlot, Peers, refusal};
use crate::proxy::Trusted;

/// Accepts TCP connections for [`serve`](crate::serve::serve).
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    /// A write that makes no progress for this long fails.
    write_timeout: Duration,
    peers: Arc<Peers>,
    /// Peers whose client is someone else: admitted per client, later.
    trusted: Trusted,
    /// Counts connections closed because their peer stopped reading.
    stalled: Counter,
    /// Counts connections refused at their address's limit.
    refused: Counter,
}

impl Listener {
    /// Wraps `inner`; a write that makes no progress for `write_timeout`
    /// fails, which closes its connection, and is counted in `stalled`; a
    /// peer address over its connection limit in `peers` is answered 429,
    /// closed and counted in `refused`, except a `trusted` proxy, whose
    /// clients are admitted once known.
    pub fn new(
        inner: TcpListener,
        write_timeout: Duration,
        peers: Arc<Peers>,
        trusted: Trusted,
        stalled: Counter,
        refused: Counter,
    ) -> Self {
        Self {
            inner,
            write_timeout,
            peers,
            trusted,
            stalled,
            refused,
        }
    }

    /// The next connection admitted, and its peer's address. Accept errors
    /// are retried (after a pause when they are not the peer's doing).
    pub async fn accept(&mut self) -> (DeadlineIo, std::net::SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let accepted = Instant::now();
                    let slot = if self.trusted.contains(addr.ip()) {
                        None
                    } else if let Some(slot) = self.peers.admit(addr.ip()) {
                        Some(slot)
                    } else {
                        self.refused.inc();
                        refuse(stream, self.peers.limit());
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%addr, "cannot disable Nagle: {e}");
                    }
                    let io = DeadlineIo {
                        stream,
                        write_timeout: self.write_timeout,
                        stall: None,
                        stalled: self.stalled.clone(),
                        accepted,
                        slot,
                    };
                    return (io, addr);
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }
}

/// Answers a connection over its peer's limit with a 429 and closes it,
/// without blocking the accept loop: the answer fits a fresh socket's send
/// buffer (a write that would block is skipped, and the close alone says
/// no); the request already received is read first, so the close is a FIN
/// and not a reset that could destroy the answer.
fn refuse(stream: TcpStream, limit: usize) {
    tracing::debug!(limit, "refusing a connection over its address's limit");
    let _ = stream.try_write(&refusal(limit));
    let mut discard = [0u8; 1024];
    while stream.try_read(&mut discard).is_ok_and(|n| n > 0) {}
    if let Ok(stream) = stream.into_std() {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

/// A failed accept: per-connection errors are retried at once; others (such
/// as running out of file descriptors) are logged and retried after a pause,
/// so the accept loop neither spins nor dies.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!("accept failed: {e}; retrying in 100 ms");
    sleep(Duration::from_millis(100)).await;
}

/// A TCP stream whose writes fail once they have made no progress for the
/// write timeout.
#[derive(Debug)]
pub struct DeadlineIo {
    stream: TcpStream,
    write_timeout: Duration,
    /// Armed while a write is blocked; allocated on the first stall only.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: Counter,
    /// When it was accepted: its first request head is timed from then.
    accepted: Instant,
    /// Its client address's connection slot, given back when it closes
    /// (`None` while the client is not known yet, or when each request
    /// takes its own).
    slot: Option<PeerSlot>,
}

impl DeadlineIo {
    /// When the connection was accepted.
    pub fn accepted(&self) -> Instant {
        self.accepted
    }

    /// Holds `slot` (its client's place under the per-address limit) for
    /// the connection's life.
    pub fn hold(&mut self, slot: PeerSlot) {
        self.slot = Some(slot);
    }

    /// Tracks the outcome of a write: progress disarms the deadline, a block
    /// arms it, and an expired deadline turns the block into an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stall = self.stall.get_or_insert_with(|| Box::pin(sleep(timeout)));
        ready!(stall.as_mut().poll(cx));
        self.stalled.inc();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer stopped reading: write timeout",
        )))
    }
}

impl AsyncRead for DeadlineIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeadlineIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn listener(
        inner: TcpListener,
        write: Duration,
        peers: Arc<Peers>,
        stalled: Counter,
    ) -> Listener {
        Listener::new(
            inner,
            write,
            peers,
            Trusted::default(),
            stalled,
            Counter::default(),
        )
    }

    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_fails_after_the_timeout() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let stalled = Counter::default();
        let mut listener = listener(
            inner,
            Duration::from_millis(100),
            Peers::new(16),
            stalled.clone(),
        );
        // The peer connects and never reads.
        let _peer = TcpStream::connect(addr).await.unwrap();
        let (mut io, _) = listener.accept().await;
        let chunk = vec![0u8; 1 << 20];
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Err(e) = io.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("the write deadline fired");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(stalled.get(), 1);
    }

    #[tokio::test]
    async fn a_trusted_proxy_is_not_admitted_by_its_own_address() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let peers = Peers::new(1);
        let mut listener = Listener::new(
            inner,
            Duration::from_secs(30),
            Arc::clone(&peers),
            Trusted::new(vec!["127.0.0.0/8".parse().unwrap()]),
            Counter::default(),
            Counter::default(),
        );
        let _first = TcpStream::connect(addr).await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        let (first, _) = listener.accept().await;
        let (second, _) = listener.accept().await;
        assert!(first.slot.is_none() && second.slot.is_none());
        assert!(peers.admit(addr.ip()).is_some(), "no slot was taken");
    }
}
