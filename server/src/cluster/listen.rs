//! A node's listening connection: `LISTEN` on the commit channel, hand
//! every notification to the hub, and after each (re)connection resync
//! from the store before reporting the node ready.
//!
//! Notifications sent while the connection is down are lost. sqlx's
//! `PgListener` says so by returning `Ok(None)` from `try_recv` when it
//! lost its connection, but a connection ended by the server can come back
//! as an `Err` instead (sqlx issue 4014): both are treated alike. The
//! listener is dropped and made anew, `LISTEN` is issued before the heads
//! are read (so a commit is either notified or counted in a head), and the
//! topics with local subscribers are resynced. Until then the node is not
//! ready (`/readyz` answers 503).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::{PgListener, PgNotification, PgPool};
use tokio_util::sync::CancellationToken;

use super::relay::Relay;
use super::{ListenerState, Node};
use crate::sequence::{Cause, Via};
use crate::store;
use crate::store::notification::{self, CHANNEL};

/// First wait before reconnecting after a failure; doubled each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs `node`'s listener over `pool` (one connection) until `cancel`.
pub async fn run(node: Arc<Node>, pool: PgPool, relay: Relay, cancel: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        node.set_state(ListenerState::Down);
        let connected = tokio::select! {
            () = cancel.cancelled() => return,
            connected = connect(&pool, &relay, &node) => connected,
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(node = %node.name(), error = %e, "the cluster listener could not connect; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        node.set_state(ListenerState::Up);
        tracing::info!(node = %node.name(), "the cluster listener is up");
        backoff = FIRST_BACKOFF;
        loop {
            let received = tokio::select! {
                () = cancel.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => handle(&notification, &node, &relay).await,
                Ok(None) => {
                    tracing::warn!(node = %node.name(), "the cluster listener lost its connection; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(node = %node.name(), error = %e, "the cluster listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Connects, listens, then resyncs: whatever was committed while this
/// node did not listen (since start, or since the connection was lost) is
/// read from the store.
async fn connect(pool: &PgPool, relay: &Relay, node: &Node) -> Result<PgListener, store::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is reported at once; this task reconnects.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    node.set_state(ListenerState::Resyncing);
    relay.resync(Cause::Reconnect).await?;
    Ok(listener)
}

/// Hands what `notification` carries to the hub; one it cannot read makes
/// the node resync from the store.
async fn handle(notification: &PgNotification, node: &Node, relay: &Relay) {
    relay.metrics.notifications_received.inc();
    let payload = Bytes::copy_from_slice(notification.payload().as_bytes());
    let received = match notification::decode(&payload) {
        Ok(received) => received,
        Err(e) => {
            tracing::warn!(error = %e, "a notification this version cannot read; resyncing from the store");
            if let Err(e) = relay.resync(Cause::Gap).await {
                tracing::warn!(error = %e, "resyncing from the store failed; the safety poll retries");
            }
            return;
        }
    };
    // This node's own commits come back too: they keep the stream whole,
    // and whichever of them and the writer comes first is delivered.
    let own = received.origin == node.name();
    if let Some((topic, head)) = received.deleted.filter(|_| !own) {
        // The deleting node told its own subscribers already.
        relay.hub.delete(&topic, head);
    }
    for topic in received.topics {
        let count = topic.last - topic.first + 1;
        match topic.events {
            Some(events) => {
                relay.hub.offer(&topic.topic, &events, Via::Notification);
                if !own {
                    relay.metrics.remote_events("notification", count);
                }
            }
            None => {
                relay
                    .hub
                    .announce(&topic.topic, topic.first, topic.last, own);
                if !own {
                    relay.metrics.remote_events("store", count);
                }
            }
        }
    }
}
