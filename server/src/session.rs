//! One stream's life: the source fills the queue, the writer drains it into
//! batches, the transport delivers them, until something ends the stream.
//!
//! Everything runs in one task (for SSE, inside the response body): the
//! source, the writer, the keep-alive tick and the shutdown ([`Pulse`]) are
//! polled together in one `select!`. Messages the client sends go to the stream's [`Inbox`], and
//! its replies back to the client. The session returns the [`Disconnect`]
//! that ended it after the transport has closed accordingly.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::auth::jwt::Grant;
use crate::auth::lease::Lease;
use crate::connections::BatchCounts;
use crate::disconnect::Disconnect;
use crate::metrics::TransportMetrics;
use crate::pulse::{Beat, Pulse};
use crate::transport::{Inbound, Transport};
use crate::writer::{Batch, Writer};

/// The settings every stream of a transport shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The keep-alive tick (each transport is asked for a keep-alive at
    /// every tick) and the shutdown.
    pub pulse: Pulse,
    /// Where batches and keep-alives are counted.
    pub metrics: TransportMetrics,
    /// For testing measurements: a wait before each batch is written
    /// (`--inject-delay`; `None` costs one branch per batch).
    pub inject_delay: Option<Duration>,
}

/// What a session needs besides its parts: three pointers, as it is held
/// by every open stream.
#[derive(Debug)]
pub struct Session {
    /// The settings of the stream's transport.
    pub settings: Arc<Settings>,
    /// This stream's batch counts, for `GET /connections`.
    pub batches: Arc<BatchCounts>,
    /// The lease of the JWT that opened the stream, if one did: it ends
    /// the stream at the token's expiry or revocation.
    pub lease: Option<Box<Lease>>,
}

/// What a stream does with the messages its client sends.
pub trait Inbox: Send {
    /// Handles one text message; returns the reply to send back, if any.
    ///
    /// # Errors
    ///
    /// The [`Disconnect`] that ends the stream (a message it must refuse).
    fn receive(
        &mut self,
        message: Bytes,
    ) -> impl Future<Output = Result<Option<Bytes>, Disconnect>> + Send;

    /// The client refreshed its token on the live stream: what it may do
    /// from now on is what `grant` allows.
    fn refreshed(&mut self, _grant: &Grant) {}
}

/// The inbox of a stream that takes no messages: any message closes it
/// (WebSocket 1003).
#[derive(Debug, Clone, Copy, Default)]
pub struct Refuse;

impl Inbox for Refuse {
    async fn receive(&mut self, _message: Bytes) -> Result<Option<Bytes>, Disconnect> {
        Err(Disconnect::UnsupportedData)
    }
}

/// Runs one stream until it ends, and returns why it ended.
///
/// `source` produces into the queue that `writer` drains. It runs beside
/// the delivery loop, in the same task, so it keeps filling the bounded
/// queue while a write is blocked on a slow reader: the next batch is then
/// as large as the limits allow. When the source finishes (dropping its
/// queue sender), the writer drains what is left and the stream ends as
/// [`Disconnect::Complete`]; when delivery ends first, the source is dropped.
///
/// Every part is stored once in the returned future (an idle stream is
/// mostly this future: docs/performance.md, "Heap per idle stream"). It is
/// built as an `async` block over the parts rather than an `async fn`,
/// because an `async fn` keeps a second copy of each argument, and the
/// delivery loop borrows them rather than owning them for the same reason.
/// The source and the closing handshake, which is large and runs once, are
/// boxed.
pub fn run<T: Transport + 'static>(
    source: impl Future<Output = ()> + Send + 'static,
    mut writer: Writer,
    mut transport: T,
    mut inbox: impl Inbox + 'static,
    mut session: Session,
) -> impl Future<Output = Disconnect> + Send + 'static {
    let mut source = Box::pin(source);
    async move {
        let reason = {
            let mut deliver = pin!(deliver(
                &mut writer,
                &mut transport,
                &mut inbox,
                &mut session
            ));
            tokio::select! {
                biased;
                reason = &mut deliver => reason,
                () = &mut source => deliver.await,
            }
        };
        drop(source);
        Box::pin(transport.close(reason)).await;
        reason
    }
}

/// What woke the delivery loop.
enum Step {
    /// Queued items were taken for a batch.
    Batch,
    /// The keep-alive tick.
    KeepAlive,
    /// A message from the peer.
    Message(Bytes),
    /// Something that ends the stream.
    End(Disconnect),
}

impl From<Beat> for Step {
    fn from(beat: Beat) -> Self {
        match beat {
            Beat::KeepAlive => Step::KeepAlive,
            Beat::Shutdown => Step::End(Disconnect::Shutdown),
        }
    }
}

/// The delivery loop: batches, keep-alives, the peer, the token's lease
/// and the shutdown.
///
/// An `async` block over borrowed parts (an `async fn` would keep a second
/// copy of its arguments), whose waits hold little: a poll of the lease,
/// the peer's read, the writer's one pointer and the pulse's wait. What is
/// then done runs after the wait, so that a write's state does not add to
/// the wait's.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps a second copy of its arguments"
)]
fn deliver<'a, T: Transport>(
    writer: &'a mut Writer,
    transport: &'a mut T,
    inbox: &'a mut impl Inbox,
    session: &'a mut Session,
) -> impl Future<Output = Disconnect> + Send + 'a {
    async move {
        let mut pulse = session.settings.pulse.follow();
        loop {
            // The pulse is looked at every turn (an atomic load), and
            // waited on only when nothing else is ready: a busy stream
            // never adds a waiter to the pulse's shared list, an idle one
            // once per wake.
            let step = match pulse.seen() {
                Some(beat) => Step::from(beat),
                None => tokio::select! {
                    biased;
                    reason = poll_fn(|cx| lease_ended(&mut session.lease, cx)) => Step::End(reason),
                    inbound = transport.recv() => match inbound {
                        Inbound::Text(message) => Step::Message(message),
                        Inbound::End(reason) => Step::End(reason),
                    },
                    ready = writer.ready() => match ready {
                        Ok(()) => Step::Batch,
                        Err(reason) => Step::End(reason),
                    },
                    beat = pulse.beat() => Step::from(beat),
                },
            };
            let done = match step {
                Step::Batch => write(transport, &writer.batch(), session).await,
                Step::KeepAlive => keep_alive_now(transport, session).await,
                // Boxed: the largest state here, and the rarest.
                Step::Message(message) => {
                    Box::pin(answer(
                        transport,
                        inbox,
                        session.lease.as_deref_mut(),
                        message,
                    ))
                    .await
                }
                Step::End(reason) => Err(reason),
            };
            if let Err(reason) = done {
                return reason;
            }
        }
    }
}

/// Writes one batch and counts it.
async fn write<T: Transport>(
    transport: &mut T,
    batch: &Batch<'_>,
    session: &Session,
) -> Result<(), Disconnect> {
    if let Some(delay) = session.settings.inject_delay {
        // Boxed: a timer would otherwise size every stream's write.
        Box::pin(tokio::time::sleep(delay)).await;
    }
    transport.write_batch(batch).await?;
    session
        .settings
        .metrics
        .record_batch(batch.events(), batch.bytes.len());
    session.batches.record(batch.events(), batch.bytes.len());
    Ok(())
}

/// Whether the stream's lease ends it now; never without one.
fn lease_ended(lease: &mut Option<Box<Lease>>, cx: &mut Context<'_>) -> Poll<Disconnect> {
    match lease {
        Some(lease) => lease.poll_ended(cx),
        None => Poll::Pending,
    }
}

/// Hands a message from the peer to the lease (a token refresh) or else to
/// the inbox, and sends the reply.
async fn answer<T: Transport>(
    transport: &mut T,
    inbox: &mut impl Inbox,
    lease: Option<&mut Lease>,
    message: Bytes,
) -> Result<(), Disconnect> {
    if let Some(refresh) = lease.and_then(|lease| lease.refresh(&message)) {
        if let Some(grant) = &refresh.grant {
            inbox.refreshed(grant);
        }
        return transport.send_reply(refresh.reply).await;
    }
    match inbox.receive(message).await? {
        Some(reply) => transport.send_reply(reply).await,
        None => Ok(()),
    }
}

/// Sends a keep-alive if the transport needs one, and counts it.
async fn keep_alive_now<T: Transport>(
    transport: &mut T,
    session: &Session,
) -> Result<(), Disconnect> {
    if transport.keep_alive().await? {
        session.settings.metrics.keepalives.inc();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::metrics::{Metrics, TransportKind};
    use crate::protocol::{Event, Framing, Item, Stamp};
    use crate::queue::{self, Limits};
    use crate::source::{Source, ticker::Ticker};
    use crate::transport::memory::{self, Record};
    use crate::writer::BatchLimits;

    fn settings(cancel: CancellationToken) -> Settings {
        every(Duration::from_secs(15), cancel)
    }

    /// Settings with a keep-alive tick every `interval`.
    fn every(interval: Duration, cancel: CancellationToken) -> Settings {
        Settings {
            pulse: Pulse::start(interval, cancel),
            metrics: Metrics::new().transport(TransportKind::Ws).clone(),
            inject_delay: None,
        }
    }

    fn session(cancel: CancellationToken) -> Session {
        with(settings(cancel))
    }

    fn with(settings: Settings) -> Session {
        Session {
            settings: Arc::new(settings),
            batches: Arc::default(),
            lease: None,
        }
    }

    fn writer(rx: queue::Receiver, max_events: usize) -> Writer {
        Writer::new(
            rx,
            Framing::WebSocket,
            BatchLimits {
                max_events,
                max_bytes: 1 << 20,
            },
        )
    }

    const QUEUE: Limits = Limits {
        max_events: 64,
        max_bytes: 1 << 20,
    };

    fn seqs(records: &[Record]) -> Vec<u64> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Batch(frames) => Some(frames),
                _ => None,
            })
            .flatten()
            .map(|f| {
                serde_json::from_slice::<serde_json::Value>(f).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    async fn collect(mut rx: mpsc::Receiver<Record>) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some(r) = rx.recv().await {
            out.push(r);
        }
        out
    }

    #[tokio::test]
    async fn ticker_with_count_delivers_every_event_then_completes() {
        let (tx, rx) = queue::channel(QUEUE);
        let (transport, records) = memory::channel(1024);
        let ticker = Ticker {
            rate: 0,
            count: 500,
            size: 8,
            stall: None,
        };
        let reason = run(
            ticker.run(tx),
            writer(rx, 16),
            transport,
            Refuse,
            session(CancellationToken::new()),
        )
        .await;
        assert_eq!(reason, Disconnect::Complete);
        let records = collect(records).await;
        assert_eq!(seqs(&records), (1..=500).collect::<Vec<_>>());
        assert_eq!(records.last(), Some(&Record::Closed(Disconnect::Complete)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_injected_delay_holds_every_batch_back_that_long() {
        let (tx, rx) = queue::channel(QUEUE);
        let (transport, mut records) = memory::channel(16);
        let ticker = Ticker {
            rate: 0,
            count: 1,
            size: 8,
            stall: None,
        };
        let session = with(Settings {
            inject_delay: Some(Duration::from_millis(50)),
            ..settings(CancellationToken::new())
        });
        let start = tokio::time::Instant::now();
        let stream = tokio::spawn(async move {
            run(ticker.run(tx), writer(rx, 16), transport, Refuse, session).await
        });
        let first = records.recv().await.unwrap();
        assert!(matches!(first, Record::Batch(_)), "{first:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        assert_eq!(stream.await.unwrap(), Disconnect::Complete);
    }

    #[tokio::test]
    async fn a_slow_reader_gets_bigger_batches_not_more_memory() {
        let (tx, rx) = queue::channel(QUEUE);
        let probe = rx.probe();
        // Room for one record: the session blocks on every write until read.
        let (transport, mut records) = memory::channel(1);
        let ticker = Ticker {
            rate: 0,
            count: 2000,
            size: 8,
            stall: None,
        };
        let session = session(CancellationToken::new());
        let stream = tokio::spawn(async move {
            run(ticker.run(tx), writer(rx, 256), transport, Refuse, session).await
        });
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        let mut depths_seen_full = false;
        while let Some(record) = records.recv().await {
            let depth = probe.depth().map_or(0, |d| d.events);
            assert!(
                depth <= QUEUE.max_events,
                "queue grew past its bound: {depth}"
            );
            depths_seen_full |= depth == QUEUE.max_events;
            if let Record::Batch(frames) = &record {
                sizes.push(frames.len());
            }
            seen.push(record);
            tokio::task::yield_now().await;
        }
        assert_eq!(stream.await.unwrap(), Disconnect::Complete);
        assert_eq!(seqs(&seen), (1..=2000).collect::<Vec<_>>());
        assert!(
            depths_seen_full,
            "the queue never filled while a write was blocked"
        );
        assert!(
            sizes.iter().any(|&n| n > 1),
            "batches never grew: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn cancellation_ends_the_stream_as_shutdown() {
        let (tx, rx) = queue::channel(QUEUE);
        let (transport, records) = memory::channel(1024);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ticker = Ticker {
            rate: 10,
            count: 0,
            size: 8,
            stall: None,
        };
        let reason = run(
            ticker.run(tx),
            writer(rx, 16),
            transport,
            Refuse,
            session(cancel),
        )
        .await;
        assert_eq!(reason, Disconnect::Shutdown);
        assert_eq!(
            collect(records).await.last(),
            Some(&Record::Closed(Disconnect::Shutdown))
        );
    }

    #[tokio::test]
    async fn a_vanished_peer_ends_the_stream_and_stops_the_source() {
        let (mut tx, rx) = queue::channel(QUEUE);
        let (transport, records) = memory::channel(1);
        drop(records);
        let source = async move {
            let mut seq = 0;
            while tx
                .push(Item::Event(Event {
                    seq: {
                        seq += 1;
                        seq
                    },
                    stamp: Stamp::None,
                    data: Bytes::from_static(b"1"),
                }))
                .await
                .is_ok()
            {}
        };
        let reason = run(
            source,
            writer(rx, 16),
            transport,
            Refuse,
            session(CancellationToken::new()),
        )
        .await;
        assert_eq!(reason, Disconnect::PeerGone);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_gets_keep_alives_at_the_interval() {
        let (_tx, rx) = queue::channel(QUEUE);
        let (transport, mut records) = memory::channel(16);
        let cancel = CancellationToken::new();
        let session = with(every(Duration::from_secs(5), cancel.clone()));
        let stream = tokio::spawn(async move {
            run(
                std::future::pending(),
                writer(rx, 16),
                transport,
                Refuse,
                session,
            )
            .await
        });
        for _ in 0..3 {
            assert_eq!(records.recv().await, Some(Record::KeepAlive));
        }
        cancel.cancel();
        assert_eq!(stream.await.unwrap(), Disconnect::Shutdown);
    }
}
