//! A connection that reads very slowly: a little at a time, a few
//! milliseconds apart, never more than its allowance, over a small socket
//! receive buffer, so what it has not read piles up on the server rather
//! than in its own kernel.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Interval, MissedTickBehavior};

use crate::support::buffers::{SLOW_READER_WINDOW, connect_with_recv_buffer};

/// A paced connection reads at most this many bytes at a time...
pub const SLOW_READ: usize = 4 * 1024;

/// ... once per tick of this interval: 0.8 MB/s at most.
const SLOW_PACE: Duration = Duration::from_millis(5);

/// How many bytes a [`Paced`] connection may have read in all. Whoever
/// writes to it raises it as it goes, so that the reader stays behind the
/// writer whatever the speed of either; once unlimited, reads are no longer
/// paced.
#[derive(Debug, Clone)]
pub struct Allowance(Arc<AtomicU64>);

impl Allowance {
    /// An allowance of `bytes` to start with.
    pub fn new(bytes: u64) -> Self {
        Self(Arc::new(AtomicU64::new(bytes)))
    }

    /// Lets the reader read `bytes` more.
    pub fn grant(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Lets the reader read everything, unpaced.
    pub fn unlimit(&self) {
        self.0.store(u64::MAX, Ordering::SeqCst);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A connection that reads [`SLOW_READ`] bytes at most per tick of
/// [`SLOW_PACE`], within its [`Allowance`], over a receive buffer fixed at
/// [`SLOW_READER_WINDOW`]: fixed, the kernel no longer grows it (up to
/// `net.ipv4.tcp_rmem`'s maximum otherwise).
pub struct Paced {
    stream: TcpStream,
    pace: Interval,
    /// A tick has passed and no read has completed since.
    ticked: bool,
    allowance: Allowance,
    /// Bytes read so far.
    read: u64,
}

impl Paced {
    /// Connects to `addr`; returns the connection and its receive buffer's
    /// size in force.
    pub async fn connect(addr: SocketAddr, allowance: Allowance) -> (Self, u64) {
        let (stream, recv_buffer) = connect_with_recv_buffer(addr, SLOW_READER_WINDOW).await;
        let mut pace = tokio::time::interval(SLOW_PACE);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let paced = Self {
            stream,
            pace,
            ticked: false,
            allowance,
            read: 0,
        };
        (paced, recv_buffer)
    }
}

impl AsyncRead for Paced {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.allowance.get() == u64::MAX {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        // Ticks until one finds some allowance left (a tick that finds
        // none waits for the next: the writer may have granted more).
        let room = loop {
            if !this.ticked {
                ready!(this.pace.poll_tick(cx));
                this.ticked = true;
            }
            let left = this.allowance.get().saturating_sub(this.read);
            let room = buf.remaining().min(SLOW_READ).min(left as usize);
            if room > 0 {
                break room;
            }
            this.ticked = false;
        };
        let mut piece = [0u8; SLOW_READ];
        let mut piece = ReadBuf::new(&mut piece[..room]);
        ready!(Pin::new(&mut this.stream).poll_read(cx, &mut piece))?;
        buf.put_slice(piece.filled());
        this.read += piece.filled().len() as u64;
        this.ticked = false;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Paced {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
