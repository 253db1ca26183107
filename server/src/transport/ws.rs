//! WebSocket: one text frame per event, each batch fed in full and then
//! flushed once; ping/pong liveness; RFC 6455 close codes.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::time::{Instant, timeout};

use super::{Inbound, Transport};
use crate::disconnect::Disconnect;
use crate::protocol::Framing;
use crate::writer::Batch;

/// Pings a peer may send in a second; beyond, it is closed (1008): each
/// costs a pong, and a flood would be work done for no stream.
/// Must match the reason of [`Disconnect::PingFlood`].
pub const MAX_PINGS_PER_S: u32 = 100;

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The WebSocket side of a session.
#[derive(Debug)]
pub struct WsTransport {
    socket: WebSocket,
    /// When the peer was last heard from (any frame counts, pongs mostly).
    last_heard: Instant,
    /// How long the peer may stay silent before it is declared dead.
    pong_timeout: Duration,
    /// Pings received in the current second, and when it began.
    pings: (Instant, u32),
}

impl WsTransport {
    /// How the writer must frame events for this transport.
    pub const FRAMING: Framing = Framing::WebSocket;

    /// Wraps an upgraded socket; a peer silent for `pong_timeout` is closed.
    pub fn new(socket: WebSocket, pong_timeout: Duration) -> Self {
        Self {
            socket,
            last_heard: Instant::now(),
            pong_timeout,
            pings: (Instant::now(), 0),
        }
    }

    /// Counts a ping; whether the peer is now over [`MAX_PINGS_PER_S`].
    fn ping_flood(&mut self) -> bool {
        let (since, count) = &mut self.pings;
        if since.elapsed() >= Duration::from_secs(1) {
            (*since, *count) = (Instant::now(), 0);
        }
        *count += 1;
        *count > MAX_PINGS_PER_S
    }

    /// Sends a close frame for `reason` and waits, briefly, for the peer's.
    async fn close_with(mut self, reason: Disconnect, code: u16) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason.reason()),
        };
        let handshake = async {
            self.socket.send(Message::Close(Some(frame))).await?;
            // Read until the peer answers the close (or goes away).
            while let Some(msg) = self.socket.recv().await {
                msg?;
            }
            Ok::<_, axum::Error>(())
        };
        // A peer that does not answer in time is simply dropped.
        let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, handshake).await;
    }
}

impl Transport for WsTransport {
    async fn write_batch(&mut self, batch: &Batch<'_>) -> Result<(), Disconnect> {
        for frame in batch.frames() {
            self.socket
                .feed(Message::Text(text_frame(frame)))
                .await
                .map_err(|e| write_failed(&e))?;
        }
        self.socket.flush().await.map_err(|e| write_failed(&e))
    }

    async fn keep_alive(&mut self) -> Result<bool, Disconnect> {
        if self.last_heard.elapsed() > self.pong_timeout {
            return Err(Disconnect::PeerTimeout);
        }
        self.socket
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(|e| write_failed(&e))?;
        Ok(true)
    }

    async fn recv(&mut self) -> Inbound {
        loop {
            let message = self.socket.recv().await;
            self.last_heard = Instant::now();
            return match message {
                // Pings are answered by tungstenite itself, within a rate.
                Some(Ok(Message::Ping(_))) if self.ping_flood() => {
                    Inbound::End(Disconnect::PingFlood)
                }
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => continue,
                Some(Ok(Message::Text(text))) => Inbound::Text(Bytes::from(text)),
                Some(Ok(Message::Binary(_))) => Inbound::End(Disconnect::UnsupportedData),
                Some(Ok(Message::Close(_))) | None => Inbound::End(Disconnect::PeerGone),
                Some(Err(e)) => Inbound::End(read_failed(&e)),
            };
        }
    }

    async fn send_reply(&mut self, reply: Bytes) -> Result<(), Disconnect> {
        self.socket
            .send(Message::Text(text_frame(reply)))
            .await
            .map_err(|e| write_failed(&e))
    }

    async fn close(mut self, reason: Disconnect) {
        match reason.close_code() {
            Some(code) => self.close_with(reason, code).await,
            // The peer closed first: flush tungstenite's queued reply.
            None if reason == Disconnect::PeerGone => {
                let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, self.socket.close()).await;
            }
            None => {}
        }
    }
}

/// Closes an upgraded socket at once with `reason` (e.g. over capacity).
pub async fn reject(socket: WebSocket, reason: Disconnect) {
    let code = reason.close_code().unwrap_or(1011);
    WsTransport::new(socket, Duration::MAX)
        .close_with(reason, code)
        .await;
}

fn text_frame(frame: Bytes) -> Utf8Bytes {
    // The writer produced this frame from serde_json output and ASCII.
    Utf8Bytes::try_from(frame).expect("encoded events are UTF-8")
}

/// The first error of `kind` in `err`'s source chain.
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

fn write_failed(err: &axum::Error) -> Disconnect {
    match find_in_chain::<io::Error>(err) {
        Some(e) if e.kind() == io::ErrorKind::TimedOut => Disconnect::SlowConsumer,
        _ => Disconnect::PeerGone,
    }
}

fn read_failed(err: &axum::Error) -> Disconnect {
    match find_in_chain::<tungstenite::Error>(err) {
        Some(tungstenite::Error::Capacity(_)) => Disconnect::MessageTooBig,
        _ => Disconnect::PeerGone,
    }
}
