//! The live streams: each admitted stream holds a [`StreamGuard`] that owns
//! its admission permit, its registry entry and its share of the
//! open-connection gauge; dropping the guard releases all three and counts
//! the disconnect. The registry lets `/metrics` read every queue's depth at
//! scrape time, so producers pay nothing for that gauge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedSemaphorePermit;

use crate::admission::{Admission, OverCapacity};
use crate::disconnect::Disconnect;
use crate::metrics::{Metrics, TransportKind};
use crate::queue::{Depth, Probe};

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
    queue: Option<Probe>,
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
    pub fn admit(self: &Arc<Self>, transport: TransportKind) -> Result<StreamGuard, OverCapacity> {
        let metrics = self.metrics.transport(transport);
        let permit = self.admission.try_admit().inspect_err(|_| {
            metrics.rejected.inc();
        })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Live {
                transport,
                queue: None,
            },
        );
        metrics.opened.inc();
        metrics.open.inc();
        Ok(StreamGuard {
            id,
            transport,
            connections: Arc::clone(self),
            reason: None,
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
}

/// One admitted stream; dropping it closes the books on that stream.
#[derive(Debug)]
pub struct StreamGuard {
    id: u64,
    transport: TransportKind,
    connections: Arc<Connections>,
    /// Why the stream ended, once known; a guard dropped without one
    /// belonged to a stream whose peer went away (e.g. an SSE body dropped
    /// by hyper).
    reason: Option<Disconnect>,
    _permit: OwnedSemaphorePermit,
}

impl StreamGuard {
    /// Registers the stream's queue so `/metrics` can read its depth.
    pub fn watch_queue(&self, probe: Probe) {
        if let Some(live) = self.connections.lock().get_mut(&self.id) {
            live.queue = Some(probe);
        }
    }

    /// Records why the stream ended; the guard is then dropped.
    pub fn finish(mut self, reason: Disconnect) {
        self.reason = Some(reason);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
        let metrics = &self.connections.metrics;
        metrics.transport(self.transport).open.dec();
        metrics.record_disconnect(self.transport, self.reason.unwrap_or(Disconnect::PeerGone));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Event, Item};
    use crate::queue::{self, Limits};

    #[test]
    fn guards_count_open_streams_and_sum_queue_depths_by_transport() {
        let metrics = Arc::new(Metrics::new());
        let connections = Arc::new(Connections::new(Admission::new(2), Arc::clone(&metrics)));
        let sse = connections.admit(TransportKind::Sse).unwrap();
        let ws = connections.admit(TransportKind::Ws).unwrap();
        assert!(connections.admit(TransportKind::Ws).is_err());

        let (tx, rx) = queue::channel(Limits {
            max_events: 8,
            max_bytes: 1 << 20,
        });
        tx.try_push(Item::Event(Event {
            seq: 1,
            pts: None,
            data: "1".into(),
        }))
        .unwrap();
        ws.watch_queue(rx.probe());
        let depths = connections.queue_depths();
        assert_eq!(depths[TransportKind::Ws as usize].1.events, 1);
        assert_eq!(depths[TransportKind::Sse as usize].1.events, 0);

        ws.finish(Disconnect::Complete);
        drop(sse);
        let text = metrics.encode();
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
        assert!(connections.admit(TransportKind::Sse).is_ok());
    }
}
