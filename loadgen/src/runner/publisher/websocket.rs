//! Publishing over a WebSocket of the publisher's own (`ws_publish_frame`):
//! one task holds the socket, opened as a subscriber's is (headers,
//! subprotocols, opening frames), writes each frame the schedule hands it
//! and says whether it went out, reads and drops what the server sends (a
//! chat echoes every message to every member), and opens the socket again
//! after it breaks (a second later at most once a second). The schedule
//! never waits for it: a frame it cannot take at once counts as a timeout.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::request::Request;
use crate::client::socket::Socket;
use crate::client::tls::Connector;
use crate::client::{ClientError, Target, ws};
use crate::metrics::ErrorKind;

/// Frames waiting for the socket: beyond them, the server is not keeping
/// up and a publish counts as a timeout.
const QUEUE: usize = 512;

/// How long the task waits before opening a broken socket again.
const REOPEN: Duration = Duration::from_secs(1);

/// A frame, and where to say whether it went out.
type Order = (String, oneshot::Sender<bool>);

/// Hands frames to the socket's task.
#[derive(Debug, Clone)]
pub struct FrameSender(mpsc::Sender<Order>);

impl FrameSender {
    /// Queues `frame`: the receiver says whether it was written.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] when [`QUEUE`] frames are already waiting,
    /// [`ErrorKind::Closed`] when the task has ended.
    pub fn send(&self, frame: String) -> Result<oneshot::Receiver<bool>, ErrorKind> {
        let (tell, told) = oneshot::channel();
        self.0.try_send((frame, tell)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ErrorKind::Timeout,
            mpsc::error::TrySendError::Closed(_) => ErrorKind::Closed,
        })?;
        Ok(told)
    }
}

/// Where the publishing socket connects, and how.
#[derive(Debug, Clone)]
pub struct Socketed {
    /// The server.
    pub target: Arc<Target>,
    /// The upgrade (path, headers, subprotocols, opening frames).
    pub request: Request,
    /// TLS, for a `wss://` target.
    pub tls: Option<Connector>,
}

/// A sender, and the task that writes what it is given until `cancel`.
pub fn start(
    to: Socketed,
    cancel: CancellationToken,
) -> (FrameSender, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (FrameSender(tx), run(to, rx, cancel))
}

/// Writes the frames of `orders` over a socket `to` says, opened again
/// after it breaks, until `cancel` or the sender is gone.
async fn run(to: Socketed, mut orders: mpsc::Receiver<Order>, cancel: CancellationToken) {
    let mut socket: Option<WebSocketStream<Socket>> = None;
    loop {
        let open = match socket.as_mut() {
            Some(open) => open,
            None => match connect(&to).await {
                Ok(opened) => socket.insert(opened),
                Err(e) => {
                    tracing::debug!(error = %e, "the publishing WebSocket could not be opened");
                    if !refuse_for(REOPEN, &mut orders, &cancel).await {
                        return;
                    }
                    continue;
                }
            },
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            order = orders.recv() => {
                let Some((frame, tell)) = order else { return };
                let sent = open.send(Message::text(frame)).await.is_ok();
                let _ = tell.send(sent);
                if !sent {
                    socket = None;
                }
            }
            incoming = open.next() => if !matches!(incoming, Some(Ok(_))) {
                socket = None;
            },
        }
    }
}

/// The socket, open.
async fn connect(to: &Socketed) -> Result<WebSocketStream<Socket>, ClientError> {
    let stream = to.target.connect(0, to.tls.as_ref()).await?;
    ws::handshake(stream, &to.target.host, &to.request).await
}

/// Answers every frame `false` for `wait` (the socket is down); false if
/// the run ended meanwhile.
async fn refuse_for(
    wait: Duration,
    orders: &mut mpsc::Receiver<Order>,
    cancel: &CancellationToken,
) -> bool {
    let until = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep_until(until) => return true,
            order = orders.recv() => match order {
                Some((_, tell)) => {
                    let _ = tell.send(false);
                }
                None => return false,
            },
        }
    }
}
