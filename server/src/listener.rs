//! The TCP listener: accepts connections, turns Nagle off, and wraps each
//! one in [`DeadlineIo`] so that a peer that stops reading cannot hold a
//! connection (and its buffers) forever.
//!
//! The deadline must live at this level: behind a stalled SSE reader, hyper
//! stops polling the response body, so nothing inside the body could ever
//! notice the stall.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Sleep, sleep};

/// Accepts TCP connections for `axum::serve`.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    write_timeout: Duration,
    /// Counts connections closed because their peer stopped reading.
    stalled: Counter,
}

impl Listener {
    /// Wraps `inner`; a write that makes no progress for `write_timeout`
    /// fails, which closes its connection, and is counted in `stalled`.
    pub fn new(inner: TcpListener, write_timeout: Duration, stalled: Counter) -> Self {
        Self {
            inner,
            write_timeout,
            stalled,
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = DeadlineIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%addr, "cannot disable Nagle: {e}");
                    }
                    let io = DeadlineIo {
                        stream,
                        write_timeout: self.write_timeout,
                        stall: None,
                        stalled: self.stalled.clone(),
                    };
                    return (io, addr);
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
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
}

impl DeadlineIo {
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
    use tokio::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_fails_after_the_timeout() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let stalled = Counter::default();
        let mut listener = Listener::new(inner, Duration::from_millis(100), stalled.clone());
        // The peer connects and never reads.
        let _peer = TcpStream::connect(addr).await.unwrap();
        let (mut io, _) = axum::serve::Listener::accept(&mut listener).await;
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
}
