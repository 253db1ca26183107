//! A WebSocket stream (tokio-tungstenite over the client's own connection,
//! plain or TLS, so it can bind a chosen loopback source address). An
//! event's receipt time is when the bytes holding it were read from the
//! socket, as for SSE: not when the library hands it over, which behind a
//! slow consumer would count time spent inside the load generator. The
//! upgrade carries the target's headers and subprotocols, and the frames a
//! target wants once open (a subscription) are sent before reading.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use super::format::{self, Decoder};
use super::http::retry_after;
use super::read_buffer::ReadBuffer;
use super::request::Request;
use super::socket::Socket;
use super::sse::example;
use super::stream::{ClientError, Frame, now_micros};
use crate::metrics::auth::Ended;

/// Bytes tungstenite reads (and zero-fills: the whole of it on every read)
/// at a time, from the stream's own [`ReadBuffer`]: its 128 KiB default
/// would dominate a client's CPU and memory. A frame larger than this
/// still arrives whole: tungstenite reserves its declared length.
const TUNGSTENITE_READ: usize = 2 * 1024;

/// A stream that reads through a [`ReadBuffer`] (2 KiB while idle, up to
/// 16 KiB per read when busy) and notes when it last read bytes.
#[derive(Debug)]
struct TimedStream<S> {
    inner: S,
    buf: ReadBuffer,
    /// `buf[start..end]` is read and not yet handed to tungstenite.
    start: usize,
    end: usize,
    /// When the last read that returned bytes completed, µs since the epoch.
    read_at_us: u64,
}

impl<S> TimedStream<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            buf: ReadBuffer::new(),
            start: 0,
            end: 0,
            read_at_us: now_micros(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end && out.remaining() > 0 {
            let n = std::task::ready!(this.buf.poll_read(0, cx, &mut this.inner))?;
            if n > 0 {
                this.read_at_us = now_micros();
            }
            (this.start, this.end) = (0, n);
        }
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&this.buf.as_slice()[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedStream<S> {
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

/// The client's WebSocket settings.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(TUNGSTENITE_READ)
}

/// An open WebSocket stream, over a [`Socket`] unless a test or benchmark
/// gives it another stream.
#[derive(Debug)]
pub struct WsStream<S = Socket> {
    socket: WebSocketStream<TimedStream<S>>,
    /// How each message is read.
    format: Decoder,
    /// The start of the last message the format could not read, until
    /// taken.
    unparsed: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Performs the handshake for `request` on `host` over `stream` and
    /// sends its opening frames; messages are read as `format` says.
    ///
    /// # Errors
    ///
    /// A refused upgrade ([`ClientError::Status`]), a failed handshake, or
    /// an opening frame that could not be sent.
    pub async fn open(
        stream: S,
        host: &str,
        request: &Request,
        format: Decoder,
    ) -> Result<Self, ClientError> {
        let socket = handshake(TimedStream::new(stream), host, request).await?;
        Ok(Self {
            socket,
            format,
            unparsed: None,
        })
    }

    /// A client stream over `stream`, whose handshake is done: what a test
    /// or benchmark drives from memory (the frames it reads are the
    /// server's, unmasked), read as `format` says.
    pub async fn upgraded(stream: S, format: Decoder) -> Self {
        let socket = WebSocketStream::from_raw_socket(
            TimedStream::new(stream),
            Role::Client,
            Some(config()),
        )
        .await;
        Self {
            socket,
            format,
            unparsed: None,
        }
    }

    /// The start of the last message the target's format could not read,
    /// if one came since the last call.
    pub fn take_unparsed(&mut self) -> Option<String> {
        self.unparsed.take()
    }

    /// Whether it reads a foreign format (not this project's protocol).
    pub fn is_foreign(&self) -> bool {
        self.format.is_foreign()
    }

    /// Sends `text` as a text frame (a token refresh) on the live stream.
    ///
    /// # Errors
    ///
    /// The connection broke.
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Closed(format!("sending a frame: {e}")))
    }

    /// Reads one message's `data` as the format says.
    fn read(&mut self, data: &[u8]) -> Result<Option<Frame>, ClientError> {
        let message = self
            .format
            .decode(b"message", data)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        match message {
            format::Message::Skipped => return Ok(None),
            format::Message::End => return Ok(Some(Frame::End)),
            format::Message::Unparsed if self.unparsed.is_none() => {
                self.unparsed = Some(example(data));
            }
            _ => {}
        }
        Ok(Some(Frame::Event {
            message,
            bytes: data.len(),
            received_us: self.socket.get_ref().read_at_us,
        }))
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
                Some(Ok(Message::Text(text))) => match self.read(text.as_bytes())? {
                    Some(frame) => Ok(frame),
                    None => continue,
                },
                Some(Ok(Message::Binary(data))) if self.format.is_foreign() => {
                    match self.read(&data)? {
                        Some(frame) => Ok(frame),
                        None => continue,
                    }
                }
                Some(Ok(Message::Ping(_))) => Ok(Frame::KeepAlive),
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    Err(ClientError::Protocol("a binary frame".to_owned()))
                }
                Some(Ok(Message::Close(frame))) => closed(frame.map(|f| u16::from(f.code))),
                Some(Err(e)) => Err(ClientError::Closed(e.to_string())),
                None => Err(ClientError::Closed(
                    "connection closed without a close frame".to_owned(),
                )),
            };
        }
    }
}

/// What a close frame with `code` means: the end of the stream (1000),
/// shed (1013), ended because of its token (4401, 4403), or broken off.
fn closed(code: Option<u16>) -> Result<Frame, ClientError> {
    match code {
        Some(1000) => Ok(Frame::End),
        Some(1013) => Err(ClientError::Shed {
            code: 1013,
            retry_after: None,
        }),
        Some(code) => Err(Ended::of_close(code).map_or_else(
            || ClientError::Closed(format!("close {code}")),
            ClientError::Ended,
        )),
        None => Err(ClientError::Closed("close without code".to_owned())),
    }
}

/// A header value, or a protocol error naming the header.
fn header_value(name: &str, value: &str) -> Result<HeaderValue, ClientError> {
    value
        .parse()
        .map_err(|_| ClientError::Protocol(format!("{name}: not a valid header value")))
}

/// The WebSocket handshake for `request` on `host` over `stream` (its
/// bearer token, headers and subprotocols), then its opening frames.
///
/// # Errors
///
/// A refused upgrade ([`ClientError::Status`] or [`ClientError::Shed`]), a
/// failed handshake, or an opening frame that could not be sent.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    request: &Request,
) -> Result<WebSocketStream<S>, ClientError> {
    let mut upgrade = format!("ws://{host}{}", request.path)
        .into_client_request()
        .map_err(|e| ClientError::Protocol(format!("building the upgrade request: {e}")))?;
    let headers = upgrade.headers_mut();
    if let Some(token) = &request.token {
        headers.insert(
            "authorization",
            header_value("the token", &format!("Bearer {token}"))?,
        );
    }
    for (name, value) in &request.headers {
        let value = header_value(name, value)?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ClientError::Protocol(format!("{name:?} is not a header name")))?;
        headers.append(name, value);
    }
    if !request.subprotocols.is_empty() {
        let offered = request.subprotocols.join(", ");
        headers.insert(
            "sec-websocket-protocol",
            header_value("ws_subprotocols", &offered)?,
        );
    }
    let (mut socket, _) = client_async_with_config(upgrade, stream, Some(config()))
        .await
        .map_err(|e| match e {
            // A refusal's body is what arrived with its head (the JSON of
            // a 401 or 403 does).
            WsError::Http(response) => ClientError::answered(
                response.status().as_u16(),
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| retry_after(v.as_bytes())),
                response.body().as_deref().unwrap_or_default(),
            ),
            WsError::Io(e) => ClientError::Connect(e),
            other => ClientError::Protocol(other.to_string()),
        })?;
    for frame in &request.on_open {
        socket
            .send(Message::text(frame.as_str()))
            .await
            .map_err(|e| ClientError::Closed(format!("sending an opening frame: {e}")))?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

    use super::*;

    /// `frame` as the server writes it (unmasked).
    fn wire(frame: WsFrame) -> Vec<u8> {
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        bytes
    }

    /// An event with `seq` padded to about `size` bytes of JSON.
    fn event(seq: u64, size: usize) -> Vec<u8> {
        let json = format!(
            "{{\"seq\":{seq},\"ts\":5,\"data\":\"{}\"}}",
            "x".repeat(size)
        );
        wire(WsFrame::message(json, OpCode::Data(Data::Text), true))
    }

    #[tokio::test]
    async fn frames_of_any_size_pass_through_the_growing_buffer() {
        // Smaller than tungstenite's reads, than the first buffer, than
        // the largest one, and several times that.
        let sizes = [10, 3_000, 12_000, 70_000, 10];
        let mut bytes = Vec::new();
        for (seq, size) in (1..).zip(sizes) {
            bytes.extend(event(seq, size));
        }
        bytes.extend(wire(WsFrame::ping(&b"hi"[..])));
        bytes.extend(wire(WsFrame::close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))));
        let stream = tokio::io::join(&bytes[..], tokio::io::sink());
        let mut ws = WsStream::upgraded(stream, Decoder::streamgauge()).await;
        for (seq, size) in (1..).zip(sizes) {
            match ws.next().await.unwrap() {
                Frame::Event {
                    message: format::Message::Envelope(envelope),
                    bytes,
                    ..
                } => {
                    assert_eq!(envelope.seq, Some(seq));
                    assert!(bytes > size, "{bytes} for {size}");
                }
                other => panic!("{other:?}"),
            }
        }
        let buffer = ws.socket.get_ref().buf.as_slice().len();
        assert_eq!(buffer, crate::client::read_buffer::MAX);
        assert_eq!(ws.next().await.unwrap(), Frame::KeepAlive);
        assert_eq!(ws.next().await.unwrap(), Frame::End);
    }
}
