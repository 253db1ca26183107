//! A WebSocket stream (tokio-tungstenite over the client's own TCP
//! connection, so it can bind a chosen loopback source address).

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use super::{ClientError, Frame, envelope, now_micros};

/// Bytes tungstenite reads (and zero-fills) at a time: its 128 KiB default
/// dominates a client's CPU when each frame arrives in a read of its own.
const READ_BUFFER: usize = 16 * 1024;

/// An open WebSocket stream.
#[derive(Debug)]
pub struct WsStream {
    socket: WebSocketStream<TcpStream>,
}

impl WsStream {
    /// Performs the handshake for `path` on `host` over `stream`.
    ///
    /// # Errors
    ///
    /// A refused upgrade ([`ClientError::Status`]) or a failed handshake.
    pub async fn open(stream: TcpStream, host: &str, path: &str) -> Result<Self, ClientError> {
        let request = format!("ws://{host}{path}")
            .into_client_request()
            .map_err(|e| ClientError::Protocol(format!("building the upgrade request: {e}")))?;
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (socket, _) = client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| match e {
                WsError::Http(response) => ClientError::Status(response.status().as_u16()),
                WsError::Io(e) => ClientError::Connect(e),
                other => ClientError::Protocol(other.to_string()),
            })?;
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
                    let received_us = now_micros();
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
                    Some(1013) => Err(ClientError::Status(1013)),
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
