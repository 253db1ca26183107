//! The TCP listener: accepts connections, turns Nagle off, and wraps each
//! one in [`DeadlineIo`] so that a peer that stops reading cannot hold a
//! connection (and its buffers) forever, and neither can one that never
//! finishes its first request head (slowloris): one header deadline for
//! the streams served without hyper ([`DeadlineIo::peek_head`]) and the
//! requests hyper serves alike.
//!
//! The deadline must live at this level: behind a stalled SSE reader, the
//! HTTP layer stops polling the response body, so nothing inside the body
//! could ever notice the stall.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::peers::{PeerSlot, Peers, refusal};

/// How long a connection may take.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// A write that makes no progress for this long fails.
    pub write: Duration,
    /// The first request head must be complete this long after accept.
    pub header: Duration,
}

/// Accepts TCP connections for [`serve`](crate::serve::serve).
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    deadlines: Deadlines,
    peers: Arc<Peers>,
    /// Counts connections closed because their peer stopped reading.
    stalled: Counter,
}

impl Listener {
    /// Wraps `inner`; a write that makes no progress for the write deadline
    /// fails, which closes its connection, and is counted in `stalled`; a
    /// connection whose first request head is not complete by the header
    /// deadline is closed; a peer address over its connection limit in
    /// `peers` is answered 429 and closed.
    pub fn new(
        inner: TcpListener,
        deadlines: Deadlines,
        stalled: Counter,
        peers: Arc<Peers>,
    ) -> Self {
        Self {
            inner,
            deadlines,
            peers,
            stalled,
        }
    }

    /// The next connection admitted, and its peer's address. Accept errors
    /// are retried (after a pause when they are not the peer's doing).
    pub async fn accept(&mut self) -> (DeadlineIo, std::net::SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let Some(peer) = self.peers.admit(addr.ip()) else {
                        refuse(stream, self.peers.limit());
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%addr, "cannot disable Nagle: {e}");
                    }
                    let io = DeadlineIo {
                        stream,
                        write_timeout: self.deadlines.write,
                        stall: None,
                        stalled: self.stalled.clone(),
                        head: Some(HeadDeadline {
                            until: Instant::now() + self.deadlines.header,
                            timer: None,
                            matched: 0,
                        }),
                        _peer: peer,
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

/// The error of a request head not complete by its deadline, logged.
fn head_timeout() -> io::Error {
    tracing::debug!("closing a connection whose request head did not arrive in time");
    io::Error::new(
        io::ErrorKind::TimedOut,
        "request head not complete within the header timeout",
    )
}

/// A TCP stream whose writes fail once they have made no progress for the
/// write timeout, and whose reads fail if the first request head is not
/// complete by its deadline.
#[derive(Debug)]
pub struct DeadlineIo {
    stream: TcpStream,
    write_timeout: Duration,
    /// Armed while a write is blocked; allocated on the first stall only.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: Counter,
    /// Until the first request head has been read (`None` after).
    head: Option<HeadDeadline>,
    /// Its peer address's connection slot, given back when it closes.
    _peer: PeerSlot,
}

/// The deadline of the first request head, and how much of its end
/// (`\r\n\r\n`) the bytes read so far matched.
#[derive(Debug)]
struct HeadDeadline {
    until: Instant,
    /// Armed when a read first waits; allocated then only.
    timer: Option<Pin<Box<Sleep>>>,
    matched: u8,
}

impl HeadDeadline {
    /// Whether `bytes` complete the head.
    fn completed_by(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            self.matched = match (self.matched, byte) {
                (0 | 2, b'\r') => self.matched + 1,
                (1 | 3, b'\n') => self.matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if self.matched == 4 {
                return true;
            }
        }
        false
    }

    /// Whether the deadline has passed (registering `cx` if not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let until = self.until;
        self.timer
            .get_or_insert_with(|| Box::pin(sleep_until(until)))
            .as_mut()
            .poll(cx)
            .is_ready()
    }
}

impl DeadlineIo {
    /// Copies the first bytes received into `buf` without consuming them,
    /// waiting for some until the header deadline (then failing with
    /// `TimedOut`); 0 if the peer closed first.
    pub async fn peek_head(&self, buf: &mut [u8]) -> io::Result<usize> {
        let peek = self.stream.peek(buf);
        let Some(head) = &self.head else {
            return peek.await;
        };
        tokio::time::timeout_at(head.until, peek)
            .await
            .unwrap_or_else(|_| Err(head_timeout()))
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
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        let Some(head) = self.head.as_mut() else {
            return poll;
        };
        match poll {
            Poll::Ready(Ok(())) if head.completed_by(&buf.filled()[before..]) => {
                self.head = None;
            }
            Poll::Pending if head.expired(cx) => return Poll::Ready(Err(head_timeout())),
            _ => {}
        }
        poll
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_fails_after_the_timeout() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let stalled = Counter::default();
        let deadlines = Deadlines {
            write: Duration::from_millis(100),
            header: Duration::from_secs(30),
        };
        let mut listener = Listener::new(inner, deadlines, stalled.clone(), Peers::new(16));
        // A complete head: no header deadline.
        let mut peer = TcpStream::connect(addr).await.unwrap();
        peer.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (mut complete, _) = listener.accept().await;
        let mut head = [0u8; 64];
        let n = complete.read(&mut head).await.unwrap();
        assert_eq!(&head[..n], b"GET / HTTP/1.1\r\n\r\n");
        assert!(complete.head.is_none());
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
    async fn a_request_head_that_never_ends_fails_the_read_after_the_header_timeout() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let deadlines = Deadlines {
            write: Duration::from_secs(30),
            header: Duration::from_millis(100),
        };
        let mut listener = Listener::new(inner, deadlines, Counter::default(), Peers::new(16));
        let mut peer = TcpStream::connect(addr).await.unwrap();
        // Split so that the end of the head straddles reads: not an end.
        peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r")
            .await
            .unwrap();
        let (mut io, _) = listener.accept().await;
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 64];
            loop {
                if let Err(e) = io.read(&mut buf).await {
                    return e;
                }
            }
        })
        .await
        .expect("the header deadline fired");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(90));
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let mut head = HeadDeadline {
            until: Instant::now(),
            timer: None,
            matched: 0,
        };
        assert!(!head.completed_by(b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!head.completed_by(b"\n\r"));
        assert!(head.completed_by(b"\n"));
        let mut head = HeadDeadline { matched: 0, ..head };
        assert!(!head.completed_by(b"a\r\r\n\n"));
        assert!(head.completed_by(b"\r\r\n\r\n"));
    }
}
