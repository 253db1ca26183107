//! A node's reads from the shared store on behalf of its hub: the pages a
//! topic's sequence asks for, the resync after the listener (re)connects,
//! and the safety poll.
//!
//! The poll compares, every interval, the store's heads of the topics
//! with local subscribers with what the hub delivered. It resyncs a topic
//! only when the head it read at the *previous* poll is still not
//! delivered: an event committed a whole interval ago whose notification
//! never came. One just committed, whose notification is on its way, is
//! left to it. A head below what was delivered means the database went
//! back (restored, failed over): the topic starts again from there, and
//! its subscribers are told.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, ReadRequest};
use crate::metrics::ClusterMetrics;
use crate::sequence::Cause;
use crate::store::{self, Store};

/// Events read from the store per query.
const PAGE: u32 = 256;

/// What the relay reads with and for.
#[derive(Debug, Clone)]
pub struct Relay {
    /// The shared store.
    pub store: Store,
    /// The node's hub.
    pub hub: Arc<Hub>,
    /// The cluster metrics.
    pub metrics: ClusterMetrics,
}

/// A watched topic: what the hub had delivered, then the store's head.
struct Watched {
    name: String,
    delivered: u64,
    head: u64,
}

impl Relay {
    /// Reads what `request` asks for and hands it to the hub; a failure is
    /// logged and left to the next notification or poll.
    async fn serve(&self, request: ReadRequest) {
        let ReadRequest { topic, read } = request;
        if read.cause != Cause::Bodies {
            self.metrics.resynced(read.cause);
        }
        self.metrics.store_reads.inc();
        match self.store.read(&topic, read.after, PAGE).await {
            Ok(page) => {
                let full = page.len() == PAGE as usize;
                self.hub.page(&topic, read, &page, full);
            }
            Err(e) => {
                tracing::warn!(%topic, error = %e, "reading missed events from the store failed; retrying at the next notification or poll");
                self.hub.read_failed(&topic, read);
            }
        }
    }

    /// The topics with local subscribers, with the store's heads read
    /// after what the hub had delivered.
    async fn watched(&self) -> Result<Vec<Watched>, store::Error> {
        let watched = self.hub.watched();
        if watched.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = watched.iter().map(|(name, _)| name.clone()).collect();
        let heads: HashMap<String, u64> = self.store.heads(&names).await?.into_iter().collect();
        Ok(watched
            .into_iter()
            .map(|(name, delivered)| {
                // A topic the store does not know has no event at all.
                let head = heads.get(&name).copied().unwrap_or(0);
                Watched {
                    name,
                    delivered,
                    head,
                }
            })
            .collect())
    }

    /// Compares every watched topic's head with what was delivered and
    /// asks for what is missing, for `cause` (after a reconnect, or a
    /// payload this version cannot read).
    ///
    /// # Errors
    ///
    /// The store failed; nothing was compared.
    pub async fn resync(&self, cause: Cause) -> Result<(), store::Error> {
        for topic in self.watched().await? {
            if !self.went_back(&topic) {
                self.hub.head(&topic.name, topic.head, cause);
            }
        }
        Ok(())
    }

    /// Whether `topic`'s store went back below what was delivered; if so,
    /// its subscribers start again from the store's head.
    fn went_back(&self, topic: &Watched) -> bool {
        if topic.head >= topic.delivered {
            return false;
        }
        tracing::warn!(
            topic = %topic.name,
            head = topic.head,
            delivered = topic.delivered,
            "the store's head went back below what was delivered (database restored or failed over); subscribers start again from it"
        );
        self.hub.reset(&topic.name, topic.head);
        true
    }

    /// One safety poll; `previous` holds the heads the last one read.
    async fn poll(&self, previous: &mut HashMap<String, u64>) {
        let watched = match self.watched().await {
            Ok(watched) => watched,
            Err(e) => {
                tracing::warn!(error = %e, "the cluster's safety poll could not read the store");
                return;
            }
        };
        let mut heads = HashMap::with_capacity(watched.len());
        for topic in watched {
            let behind = previous
                .get(&topic.name)
                .is_some_and(|&head| head > topic.delivered);
            if !self.went_back(&topic) && behind {
                self.hub.head(&topic.name, topic.head, Cause::Poll);
            }
            heads.insert(topic.name, topic.head);
        }
        *previous = heads;
    }
}

/// Serves the hub's reads, and polls every `poll` (if any), until `cancel`.
pub async fn run(
    relay: Relay,
    mut reads: mpsc::UnboundedReceiver<ReadRequest>,
    poll: Option<Duration>,
    cancel: CancellationToken,
) {
    let mut ticks = poll.map(|every| {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks
    });
    let mut previous = HashMap::new();
    loop {
        let tick = async {
            match &mut ticks {
                Some(ticks) => ticks.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            request = reads.recv() => match request {
                Some(request) => relay.serve(request).await,
                None => return,
            },
            _ = tick => relay.poll(&mut previous).await,
        }
    }
}
