//! A WebSocket stream (tokio-tungstenite over the client's own TCP
//! connection, so it can bind a chosen loopback source address). An event's
//! receipt time is when the bytes holding it were read from the socket, as
//! for SSE: not when the library hands it over, which behind a slow
//! consumer would count time spent inside the load generator.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use super::http::retry_after;
use super::{ClientError, Frame, envelope, now_micros};

/// Bytes tungstenite reads (and zero-fills) at a time: its 128 KiB default
/// dominates a client's CPU when each frame arrives in a read of its own.
const READ_BUFFER: usize = 16 * 1024;

/// A TCP stream that notes when it last read bytes.
#[derive(Debug)]
struct TimedStream {
    inner: TcpStream,
    /// When the last read that returned bytes completed, µs since the epoch.
    read_at_us: u64,
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.read_at_us = now_micros();
        }
        poll
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An open WebSocket stream.
#[derive(Debug)]
pub struct WsStream {
    socket: WebSocketStream<TimedStream>,
}

impl WsStream {
    /// Performs the handshake for `path` on `host` over `stream`.
    ///
    /// # Errors
    ///
    /// A refused upgrade ([`ClientError::Status`]) or a failed handshake.
    pub async fn open(
        stream: TcpStream,
        host: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        let stream = TimedStream {
            inner: stream,
            read_at_us: now_micros(),
        };
        let socket = handshake(stream, host, path, token).await?;
        Ok(Self { socket })
    }

    /// The next frame.
    ///
    /// # Errors
    ///
    /// A broken connection, a frame that is not a protocol event, or a
    /// close that is not 1000.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next(&mut self) -> Result<Frame, ClientError> {
        loop {
            let message = self.socket.next().await;
            return match message {
                Some(Ok(Message::Text(text))) => {
                    let received_us = self.socket.get_ref().read_at_us;
                    let envelope = envelope::parse(text.as_bytes())
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    Ok(Frame::Event {
                        envelope,
                        bytes: text.len(),
                        received_us,
                    })
                }
                Some(Ok(Message::Ping(_))) => Ok(Frame::KeepAlive),
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    Err(ClientError::Protocol("a binary frame".to_owned()))
                }
                Some(Ok(Message::Close(frame))) => match frame.map(|f| u16::from(f.code)) {
                    Some(1000) => Ok(Frame::End),
                    Some(1013) => Err(ClientError::Shed {
                        code: 1013,
                        retry_after: None,
                    }),
                    code => Err(ClientError::Closed(format!(
                        "close {}",
                        code.map_or("without code".to_owned(), |c| c.to_string())
                    ))),
                },
                Some(Err(e)) => Err(ClientError::Closed(e.to_string())),
                None => Err(ClientError::Closed(
                    "connection closed without a close frame".to_owned(),
                )),
            };
        }
    }
}

/// The WebSocket handshake for `path` on `host` over `stream`, with a
/// bearer `token`.
///
/// # Errors
///
/// A refused upgrade ([`ClientError::Status`] or [`ClientError::Shed`]) or
/// a failed handshake.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    path: &str,
    token: Option<&str>,
) -> Result<WebSocketStream<S>, ClientError> {
    let mut request = format!("ws://{host}{path}")
        .into_client_request()
        .map_err(|e| ClientError::Protocol(format!("building the upgrade request: {e}")))?;
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            ClientError::Protocol("the token is not a valid header value".to_owned())
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (socket, _) = client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) => ClientError::refused(
                response.status().as_u16(),
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| retry_after(v.as_bytes())),
            ),
            WsError::Io(e) => ClientError::Connect(e),
            other => ClientError::Protocol(other.to_string()),
        })?;
    Ok(socket)
}
