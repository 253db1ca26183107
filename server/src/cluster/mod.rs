//! Several servers (nodes) sharing durable topics through one PostgreSQL
//! database. The database is the log: it assigns each topic's `seq` inside
//! the commit, and every commit notifies (`pg_notify`) the other nodes,
//! atomically with the commit ([`crate::store::notification`]). The
//! notification only wakes them: a node that misses one re-reads by `seq`.
//!
//! Each node runs two tasks besides its writer:
//!
//! - the [`listen`] task keeps one dedicated connection that `LISTEN`s
//!   (named `streamgauge-listener HOST:PORT` in `pg_stat_activity`), hands
//!   what notifications carry to the hub, and after every (re)connection
//!   compares the store's heads of the topics with local subscribers with
//!   what the hub delivered, before it reports the node ready;
//! - the [`relay`] task reads from the store what a topic's sequence asks
//!   for (bodies too large for a notification, `seq`s a lost notification
//!   skipped) and runs the safety poll.
//!
//! The hub's per-topic [`crate::sequence::Sequence`] is the one ordering
//! point of a node: events from its own writer, from notifications and
//! from the store all pass it, so each reaches a subscriber once, in `seq`
//! order. A PostgreSQL server always runs as a node (a single server is a
//! cluster of one); SQLite serves one server only and runs none of this.

pub mod listen;
pub mod relay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::hub::{Hub, ReadRequest};
use crate::metrics::ClusterMetrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Where a node's listener stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// Not connected: notifications from other nodes are being missed.
    Down,
    /// Connected and listening, reading what it missed from the store.
    Resyncing,
    /// Listening and caught up.
    Up,
}

impl ListenerState {
    /// Every state, in label order.
    pub const ALL: [ListenerState; 3] = [
        ListenerState::Down,
        ListenerState::Resyncing,
        ListenerState::Up,
    ];

    /// The metric label and `/readyz` status.
    pub fn label(self) -> &'static str {
        match self {
            ListenerState::Down => "listener_down",
            ListenerState::Resyncing => "resyncing",
            ListenerState::Up => "up",
        }
    }

    /// Why a node in this state is not ready, for `/readyz`.
    pub fn reason(self) -> &'static str {
        match self {
            ListenerState::Down => {
                "the cluster listener is not connected to PostgreSQL: events from other nodes are late until it reconnects"
            }
            ListenerState::Resyncing => {
                "the cluster listener reconnected and is reading what it missed from the store"
            }
            ListenerState::Up => "ready",
        }
    }
}

/// A cluster node as the rest of the server sees it: its name and its
/// listener's state.
#[derive(Debug)]
pub struct Node {
    /// `HOST:PORT`, in the listener's `application_name`.
    name: String,
    state: AtomicU8,
    metrics: ClusterMetrics,
}

impl Node {
    /// The node's name (`HOST:PORT`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its listener stands.
    pub fn state(&self) -> ListenerState {
        ListenerState::ALL[usize::from(self.state.load(Ordering::Acquire))]
    }

    fn set_state(&self, state: ListenerState) {
        let index = ListenerState::ALL
            .iter()
            .position(|s| *s == state)
            .expect("every state is listed");
        self.state.store(
            u8::try_from(index).expect("three states"),
            Ordering::Release,
        );
        self.metrics.set_listener_state(state);
    }
}

/// What a node's tasks need.
#[derive(Debug)]
pub struct Parts {
    /// The shared store.
    pub store: Store,
    /// The node's hub, made [`Hub::clustered`] with the sender of `reads`.
    pub hub: Arc<Hub>,
    /// The store reads the hub asks for.
    pub reads: mpsc::UnboundedReceiver<ReadRequest>,
    /// The cluster metrics.
    pub metrics: ClusterMetrics,
    /// The safety poll's interval; `None` turns it off.
    pub poll: Option<Duration>,
    /// The node's name ([`node_name`]), which its store's notifications
    /// carry too.
    pub name: String,
    /// Ends the tasks; they are tracked by it.
    pub shutdown: Shutdown,
}

/// Starts a node's listener and relay; `None` if the store is not
/// PostgreSQL.
pub fn start(parts: Parts) -> Option<Arc<Node>> {
    let name = parts.name;
    let pool = parts
        .store
        .listener_pool(&format!("streamgauge-listener {name}"))?;
    let node = Arc::new(Node {
        name,
        state: AtomicU8::new(0),
        metrics: parts.metrics.clone(),
    });
    node.set_state(ListenerState::Down);
    let cancel = parts.shutdown.token().clone();
    tokio::spawn(parts.shutdown.track(relay::run(
        relay::Relay {
            store: parts.store.clone(),
            hub: Arc::clone(&parts.hub),
            metrics: parts.metrics.clone(),
        },
        parts.reads,
        parts.poll,
        cancel.clone(),
    )));
    tokio::spawn(parts.shutdown.track(listen::run(
        Arc::clone(&node),
        pool,
        relay::Relay {
            store: parts.store,
            hub: parts.hub,
            metrics: parts.metrics,
        },
        cancel,
    )));
    Some(node)
}

/// Longest host name kept in a node's name: PostgreSQL keeps 63 bytes of
/// an `application_name`, and the port must stay in them.
const MAX_HOST: usize = 32;

/// The name of the node listening on `listen`: `HOST:PORT`.
pub fn node_name(listen: SocketAddr) -> String {
    let mut host = hostname();
    host.truncate(MAX_HOST);
    format!("{host}:{}", listen.port())
}

/// This machine's host name (`localhost` if it has none).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let done = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if done == 0 && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_named_by_host_and_port_within_what_postgresql_keeps() {
        let name = node_name(SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert!(name.ends_with(":8080"), "{name}");
        assert!(format!("streamgauge-listener {name}").len() <= 63);
    }

    #[test]
    fn listener_states_round_trip_through_the_node() {
        let node = Node {
            name: "n:1".to_owned(),
            state: AtomicU8::new(0),
            metrics: ClusterMetrics::default(),
        };
        for state in ListenerState::ALL {
            node.set_state(state);
            assert_eq!(node.state(), state);
        }
    }
}
