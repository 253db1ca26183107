//! A subscriber that reads very slowly: a little at a time, a few
//! milliseconds apart, over a small socket receive buffer, so what it has
//! not read piles up on the server rather than in its own kernel.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::support::{TestServer, Transport, within};

/// A slow subscriber reads at most this many bytes at a time...
const SLOW_READ: usize = 4 * 1024;

/// ... once per tick of this interval: 0.8 MB/s, a fraction of what the
/// publisher writes.
const SLOW_PACE: Duration = Duration::from_millis(5);

/// Its socket's receive buffer. Set, it is fixed (the kernel no longer
/// grows it, up to 32 MiB here), so what the slow subscriber has not read
/// piles up on the server, in its queue.
const SLOW_WINDOW: u32 = 16 * 1024;

/// A connection that reads [`SLOW_READ`] bytes at most per tick of
/// [`SLOW_PACE`], over a receive buffer of [`SLOW_WINDOW`], until told to
/// stop pacing.
pub struct Paced {
    stream: TcpStream,
    pace: Interval,
    /// A tick has passed and no read has completed since.
    ticked: bool,
    /// Once set, reads are no longer paced.
    unpaced: Arc<AtomicBool>,
}

impl Paced {
    /// Connects to `addr`.
    async fn connect(addr: SocketAddr, unpaced: Arc<AtomicBool>) -> Self {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .set_recv_buffer_size(SLOW_WINDOW)
            .expect("a receive buffer size");
        let stream = within("a connection", socket.connect(addr))
            .await
            .expect("connecting");
        let mut pace = tokio::time::interval(SLOW_PACE);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            stream,
            pace,
            ticked: false,
            unpaced,
        }
    }
}

impl AsyncRead for Paced {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.unpaced.load(Ordering::SeqCst) {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        if !this.ticked {
            ready!(this.pace.poll_tick(cx));
            this.ticked = true;
        }
        let mut piece = [0u8; SLOW_READ];
        let room = buf.remaining().min(SLOW_READ);
        let mut piece = ReadBuf::new(&mut piece[..room]);
        ready!(Pin::new(&mut this.stream).poll_read(cx, &mut piece))?;
        buf.put_slice(piece.filled());
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

/// A subscriber reading through a [`Paced`] connection.
pub enum Slow {
    /// HTTP/1.0, so the body is the bare SSE text, until the server closes.
    Sse { stream: Paced, buffer: Vec<u8> },
    /// A WebSocket client.
    Ws(Box<WebSocketStream<Paced>>),
}

impl Slow {
    /// Opens `/{transport}/{path}` on `server` through a [`Paced`]
    /// connection, paced until `unpaced` is set.
    pub async fn open(
        server: &TestServer,
        transport: Transport,
        path: &str,
        unpaced: Arc<AtomicBool>,
    ) -> Self {
        let mut stream = Paced::connect(server.addr, unpaced).await;
        match transport {
            Transport::Sse => {
                let request = format!("GET /sse/{path} HTTP/1.0\r\nHost: {}\r\n\r\n", server.addr);
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut slow = Slow::Sse {
                    stream,
                    buffer: Vec::new(),
                };
                let head = slow.sse_through(b"\r\n\r\n").await;
                let head = String::from_utf8_lossy(&head);
                assert!(head.starts_with("HTTP/1.0 200"), "{path}: {head}");
                slow
            }
            Transport::Ws => {
                let url = format!("ws://{}/ws/{path}", server.addr);
                let (ws, _) = within("a WebSocket handshake", client_async(url, stream))
                    .await
                    .expect("a WebSocket");
                Slow::Ws(Box::new(ws))
            }
        }
    }

    /// SSE: the bytes through the first `end`.
    async fn sse_through(&mut self, end: &[u8]) -> Vec<u8> {
        let Slow::Sse { stream, buffer } = self else {
            panic!("not an SSE stream");
        };
        loop {
            if let Some(at) = buffer.windows(end.len()).position(|w| w == end) {
                return buffer.drain(..at + end.len()).collect();
            }
            let mut piece = [0u8; SLOW_READ];
            let n = within("SSE bytes", stream.read(&mut piece)).await.unwrap();
            assert!(n > 0, "the SSE stream ended");
            buffer.extend_from_slice(&piece[..n]);
        }
    }

    /// The next event; fails on anything but an event or a keep-alive.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let frame = match self {
                Slow::Ws(ws) => match within("a WebSocket frame", ws.next()).await {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Ping(_))) => continue,
                    other => panic!("expected an event, got {other:?}"),
                },
                Slow::Sse { .. } => {
                    let block = String::from_utf8(self.sse_through(b"\n\n").await).expect("UTF-8");
                    if block.starts_with(':') {
                        continue;
                    }
                    assert!(
                        block.starts_with("id: "),
                        "expected an event, got {block:?}"
                    );
                    let data = block.lines().find_map(|line| line.strip_prefix("data: "));
                    data.expect("a data line").to_owned()
                }
            };
            let event: Value = serde_json::from_str(&frame).expect("event JSON");
            assert!(event.get("seq").is_some(), "expected an event, got {event}");
            return event;
        }
    }
}
