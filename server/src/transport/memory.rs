//! An in-memory transport for tests and benchmarks: every write becomes a
//! [`Record`] on a bounded channel, so a test reads the stream as a client
//! would, and reading slowly (or not at all) is backpressure. Dropping the
//! receiver makes the next write fail as a vanished peer would.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Inbound, Transport};
use crate::disconnect::Disconnect;
use crate::writer::Batch;

/// What the session did to the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A batch: its frames, in order.
    Batch(Vec<Bytes>),
    /// A keep-alive.
    KeepAlive,
    /// The session ended for this reason.
    Closed(Disconnect),
}

/// A transport that records into a channel.
#[derive(Debug)]
pub struct MemoryTransport {
    records: mpsc::Sender<Record>,
}

/// A memory transport and the receiving end of its records; the channel
/// holds at most `capacity` records.
pub fn channel(capacity: usize) -> (MemoryTransport, mpsc::Receiver<Record>) {
    let (records, rx) = mpsc::channel(capacity);
    (MemoryTransport { records }, rx)
}

impl MemoryTransport {
    async fn record(&mut self, record: Record) -> Result<(), Disconnect> {
        self.records
            .send(record)
            .await
            .map_err(|_| Disconnect::PeerGone)
    }
}

impl Transport for MemoryTransport {
    async fn write_batch(&mut self, batch: &Batch<'_>) -> Result<(), Disconnect> {
        self.record(Record::Batch(batch.frames().collect())).await
    }

    async fn keep_alive(&mut self) -> Result<bool, Disconnect> {
        self.record(Record::KeepAlive).await.map(|()| true)
    }

    async fn recv(&mut self) -> Inbound {
        self.records.closed().await;
        Inbound::End(Disconnect::PeerGone)
    }

    async fn send_reply(&mut self, reply: Bytes) -> Result<(), Disconnect> {
        self.record(Record::Batch(vec![reply])).await
    }

    async fn close(mut self, reason: Disconnect) {
        // The receiver may be gone already; nothing is left to tell then.
        let _ = self.record(Record::Closed(reason)).await;
    }
}
