//! The live streams: each admitted stream holds a [`StreamGuard`] that owns
//! its admission permit, its registry entry and its share of the
//! open-connection gauge; dropping the guard releases all three and counts
//! the disconnect. The registry lets `/metrics` read every queue's depth at
//! scrape time, so producers pay nothing for that gauge, and `GET
//! /connections` list each stream with its queue and its batches (a tag the
//! client chose finds its own stream). A topic subscription also notes its
//! topic and its client, for the admin API's subscriber lists.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use tokio::sync::OwnedSemaphorePermit;

use crate::admission::{Admission, OverCapacity};
use crate::disconnect::Disconnect;
use crate::metrics::{Metrics, TransportKind};
use crate::protocol::Name;
use crate::queue::{Depth, Probe};
use crate::scope::Scope;

/// Every stream open now.
#[derive(Debug)]
pub struct Connections {
    admission: Admission,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Live>>,
}

#[derive(Debug)]
struct Live {
    transport: TransportKind,
    tag: Option<String>,
    opened: Instant,
    queue: Option<Probe>,
    batches: Arc<BatchCounts>,
    /// A topic subscription's topic and client; boxed, as most streams
    /// have none.
    subscription: Option<Box<Subscription>>,
}

/// What a topic subscription notes of itself.
#[derive(Debug)]
struct Subscription {
    topic: Name,
    peer: Option<SocketAddr>,
}

/// What a stream's writer has written: three relaxed atomic adds a batch.
#[derive(Debug, Default)]
pub struct BatchCounts {
    batches: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    last: AtomicU64,
}

impl BatchCounts {
    /// Counts one batch of `events` events in `bytes` bytes.
    pub fn record(&self, events: usize, bytes: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.last.store(events as u64, Ordering::Relaxed);
    }
}

/// One open stream, as `GET /connections` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamInfo {
    /// The server's id for it.
    pub id: u64,
    /// `sse` or `ws`.
    pub transport: &'static str,
    /// The `tag` the client gave, if any.
    pub tag: Option<String>,
    /// Seconds since it was admitted.
    pub age_s: f64,
    /// Events waiting in its queue now.
    pub queue_events: usize,
    /// Bytes waiting in its queue now.
    pub queue_bytes: usize,
    /// Batches written.
    pub batches: u64,
    /// Events written.
    pub events: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Events in the last batch written.
    pub last_batch: u64,
    /// A topic subscription's topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// A topic subscription's client (the address the limits use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
}

impl Connections {
    /// A registry admitting streams through `admission`, counted in `metrics`.
    pub fn new(admission: Admission, metrics: Arc<Metrics>) -> Self {
        Self {
            admission,
            metrics,
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new stream on `transport`, or counts it as rejected.
    ///
    /// # Errors
    ///
    /// [`OverCapacity`] at the connection limit.
    pub fn admit(
        self: &Arc<Self>,
        transport: TransportKind,
        tag: Option<String>,
    ) -> Result<StreamGuard, OverCapacity> {
        let metrics = self.metrics.transport(transport);
        let permit = self.admission.try_admit().inspect_err(|_| {
            metrics.rejected.inc();
        })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let batches = Arc::new(BatchCounts::default());
        self.lock().insert(
            id,
            Live {
                transport,
                tag,
                opened: Instant::now(),
                queue: None,
                batches: Arc::clone(&batches),
                subscription: None,
            },
        );
        metrics.opened.inc();
        metrics.open.inc();
        Ok(StreamGuard {
            id,
            transport,
            batches,
            connections: Arc::clone(self),
            reason: None,
            scope: None,
            _permit: permit,
        })
    }

    /// Total queue depth of the open streams of each transport.
    pub fn queue_depths(&self) -> [(TransportKind, Depth); 2] {
        let mut totals = TransportKind::ALL.map(|kind| (kind, Depth::default()));
        for live in self.lock().values() {
            let Some(depth) = live.queue.as_ref().and_then(Probe::depth) else {
                continue;
            };
            let total = &mut totals[live.transport as usize].1;
            total.events += depth.events;
            total.bytes += depth.bytes;
        }
        totals
    }

    /// The open streams tagged `tag` (all of them without one), by id.
    pub fn list(&self, tag: Option<&str>) -> Vec<StreamInfo> {
        self.list_where(|live| tag.is_none() || live.tag.as_deref() == tag)
    }

    /// The open subscriptions to `topic`, by id.
    pub fn subscribers(&self, topic: &str) -> Vec<StreamInfo> {
        self.list_where(|live| {
            live.subscription
                .as_ref()
                .is_some_and(|s| s.topic.as_str() == topic)
        })
    }

    /// How many open subscriptions `topic` has.
    pub fn subscriber_count(&self, topic: &str) -> u64 {
        self.lock()
            .values()
            .filter(|live| {
                live.subscription
                    .as_ref()
                    .is_some_and(|s| s.topic.as_str() == topic)
            })
            .count() as u64
    }

    /// How many open subscriptions each topic has.
    pub fn subscriber_counts(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for live in self.lock().values() {
            if let Some(subscription) = &live.subscription {
                *counts.entry(subscription.topic.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// The open streams `keep` keeps, by id.
    fn list_where(&self, keep: impl Fn(&Live) -> bool) -> Vec<StreamInfo> {
        let mut streams: Vec<StreamInfo> = self
            .lock()
            .iter()
            .filter(|(_, live)| keep(live))
            .map(|(&id, live)| {
                let depth = live
                    .queue
                    .as_ref()
                    .and_then(Probe::depth)
                    .unwrap_or_default();
                let counts = &live.batches;
                StreamInfo {
                    id,
                    transport: live.transport.label(),
                    tag: live.tag.clone(),
                    age_s: live.opened.elapsed().as_secs_f64(),
                    queue_events: depth.events,
                    queue_bytes: depth.bytes,
                    batches: counts.batches.load(Ordering::Relaxed),
                    events: counts.events.load(Ordering::Relaxed),
                    bytes: counts.bytes.load(Ordering::Relaxed),
                    last_batch: counts.last.load(Ordering::Relaxed),
                    topic: live.subscription.as_ref().map(|s| s.topic.to_string()),
                    peer: live.subscription.as_ref().and_then(|s| s.peer),
                }
            })
            .collect();
        streams.sort_by_key(|s| s.id);
        streams
    }
}

/// One admitted stream; dropping it closes the books on that stream.
#[derive(Debug)]
pub struct StreamGuard {
    id: u64,
    transport: TransportKind,
    batches: Arc<BatchCounts>,
    connections: Arc<Connections>,
    /// Why the stream ended, once known; a guard dropped without one
    /// belonged to a stream whose peer went away (e.g. an SSE body dropped
    /// when its client closed).
    reason: Option<Disconnect>,
    /// The scope of the request that opened the stream, when the stream
    /// must hold it (its client's slot, its access-log line).
    scope: Option<Arc<Scope>>,
    _permit: OwnedSemaphorePermit,
}

impl StreamGuard {
    /// Registers the stream's queue so `/metrics` can read its depth.
    pub fn watch_queue(&self, probe: Probe) {
        if let Some(live) = self.connections.lock().get_mut(&self.id) {
            live.queue = Some(probe);
        }
    }

    /// Notes that the stream subscribes to `topic`, for `peer`.
    pub fn subscribes(&self, topic: &Name, peer: Option<SocketAddr>) {
        if let Some(live) = self.connections.lock().get_mut(&self.id) {
            live.subscription = Some(Box::new(Subscription {
                topic: topic.clone(),
                peer,
            }));
        }
    }

    /// Holds `scope` for the stream's whole life.
    pub fn adopt(&mut self, scope: Option<Arc<Scope>>) {
        self.scope = scope;
    }

    /// Where the stream's writer counts its batches.
    pub fn batch_counts(&self) -> Arc<BatchCounts> {
        Arc::clone(&self.batches)
    }

    /// Records why the stream ended; the guard is then dropped.
    pub fn finish(mut self, reason: Disconnect) {
        tracing::debug!(
            transport = self.transport.label(),
            reason = reason.label(),
            "stream ended"
        );
        self.reason = Some(reason);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
        let metrics = &self.connections.metrics;
        let reason = self.reason.unwrap_or(Disconnect::PeerGone);
        metrics.transport(self.transport).open.dec();
        metrics.record_disconnect(self.transport, reason);
        if let Some(scope) = &self.scope {
            // An SSE stream's bytes went through its answer's body, which
            // counted them; a WebSocket's did not.
            let bytes = match self.transport {
                TransportKind::Ws => self.batches.bytes.load(Ordering::Relaxed),
                TransportKind::Sse => 0,
            };
            scope.stream_ended(reason.label(), bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Event, Item, Stamp};
    use crate::queue::{self, Limits};

    #[test]
    fn guards_count_open_streams_and_sum_queue_depths_by_transport() {
        let metrics = Arc::new(Metrics::new());
        let connections = Arc::new(Connections::new(Admission::new(2), Arc::clone(&metrics)));
        let sse = connections.admit(TransportKind::Sse, None).unwrap();
        let ws = connections.admit(TransportKind::Ws, None).unwrap();
        assert!(connections.admit(TransportKind::Ws, None).is_err());

        let (tx, rx) = queue::channel(Limits {
            max_events: 8,
            max_bytes: 1 << 20,
        });
        tx.try_push(Item::Event(Event {
            seq: 1,
            stamp: Stamp::None,
            data: "1".into(),
        }))
        .unwrap();
        ws.watch_queue(rx.probe());
        let depths = connections.queue_depths();
        assert_eq!(depths[TransportKind::Ws as usize].1.events, 1);
        assert_eq!(depths[TransportKind::Sse as usize].1.events, 0);

        ws.finish(Disconnect::Complete);
        drop(sse);
        let text = metrics.encode(crate::metrics::Exposition::Prometheus);
        assert!(text.contains("streamgauge_connections_open{transport=\"ws\"} 0"));
        assert!(text.contains("streamgauge_connections_rejected_total{transport=\"ws\"} 1"));
        assert!(
            text.contains("streamgauge_disconnects_total{transport=\"ws\",reason=\"complete\"} 1")
        );
        assert!(
            text.contains(
                "streamgauge_disconnects_total{transport=\"sse\",reason=\"peer_gone\"} 1"
            )
        );
        assert!(connections.admit(TransportKind::Sse, None).is_ok());
    }

    #[test]
    fn a_tag_finds_its_stream_with_its_queue_and_batches() {
        let connections = Arc::new(Connections::new(
            Admission::new(4),
            Arc::new(Metrics::new()),
        ));
        let _other = connections.admit(TransportKind::Sse, None).unwrap();
        let slow = connections
            .admit(TransportKind::Ws, Some("slow".to_owned()))
            .unwrap();
        let (tx, rx) = queue::channel(Limits {
            max_events: 8,
            max_bytes: 1 << 20,
        });
        slow.watch_queue(rx.probe());
        for seq in 1..=3 {
            tx.try_push(Item::Event(Event {
                seq,
                stamp: Stamp::None,
                data: "1".into(),
            }))
            .unwrap();
        }
        slow.batch_counts().record(5, 100);
        slow.batch_counts().record(7, 140);
        let listed = connections.list(Some("slow"));
        assert_eq!(listed.len(), 1);
        let info = &listed[0];
        assert_eq!(
            (
                info.transport,
                info.queue_events,
                info.batches,
                info.events,
                info.last_batch
            ),
            ("ws", 3, 2, 12, 7)
        );
        assert_eq!(connections.list(None).len(), 2);
        drop(slow);
        assert!(connections.list(Some("slow")).is_empty());
    }
}
