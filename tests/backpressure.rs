//! A slow reader makes batches grow, not memory. At one paced rate, a
//! reader that keeps up gets its events one per batch; a reader that falls
//! behind gets them in batches larger than one, receives every one in order,
//! and meanwhile its queue never holds more than its configured bounds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use streamgauge_server::Config;
use streamgauge_server::protocol::ENVELOPE_ALLOWANCE;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

use crate::support::raw_sse::RawSse;
use crate::support::raw_ws::RawWs;
use crate::support::{self, End, Metrics, TestServer, Transport, WAIT, within};

/// Events per second: 10 ms apart, so that a source on time releases them
/// one at a time even on a loaded machine (at 250/s a thread descheduled
/// for 4 ms releases two, and that happens).
const RATE: u64 = 100;
/// Filler bytes per event: 6 MB/s at `RATE`, so that the slow reader falls
/// behind the kernel's socket buffers (up to 4 MiB on the server's side)
/// within a few seconds.
const SIZE: usize = 60_000;
/// Events per stream: the first ~200 to 300 fill the socket buffers (the
/// kernel's, and hyper's for SSE) behind the slow reader, the rest go out
/// while it lags.
const COUNT: u64 = 400;
/// What one queued event costs against the byte bounds (its JSON string
/// quotes included).
const EVENT_COST: usize = SIZE + 2 + ENVELOPE_ALLOWANCE;
/// The queue's bound in events: more than `QUEUE_BYTES` holds, so the byte
/// bound is the one reached.
const QUEUE_EVENTS: usize = 64;
/// The queue's bound in bytes: 17 events.
const QUEUE_BYTES: usize = 1 << 20;
/// A batch's bound in bytes: 8 events (the default, 64 KiB, would hold one).
const BATCH_BYTES: usize = 512 * 1024;
/// The slow reader reads at most this much at a time…
const CHUNK: usize = 8192;
/// …once per this interval: at most 4 MB/s, two thirds of what the source
/// makes.
const READ_EVERY: Duration = Duration::from_millis(2);

fn config() -> Config {
    let mut config = support::config();
    config.queue.max_events = QUEUE_EVENTS;
    config.queue.max_bytes = QUEUE_BYTES;
    config.batch.max_bytes = BATCH_BYTES;
    config
}

fn ticker() -> String {
    format!("ticker?rate={RATE}&size={SIZE}&count={COUNT}")
}

/// One transport's batch-size histogram at one scrape.
#[derive(Debug, Clone, Copy)]
struct Batches {
    /// Batches of exactly one event.
    singles: f64,
    /// All batches.
    batches: f64,
    /// Events in all batches.
    events: f64,
}

impl Batches {
    fn of(metrics: &Metrics, transport: &str) -> Self {
        let labels = format!("transport=\"{transport}\"");
        Self {
            singles: metrics.get(&format!(
                "streamgauge_batch_events_bucket{{le=\"1.0\",{labels}}}"
            )),
            batches: metrics.get(&format!("streamgauge_batch_events_count{{{labels}}}")),
            events: metrics.get(&format!("streamgauge_batch_events_sum{{{labels}}}")),
        }
    }

    /// What was written between `earlier` and `self`.
    fn since(self, earlier: Self) -> Self {
        Self {
            singles: self.singles - earlier.singles,
            batches: self.batches - earlier.batches,
            events: self.events - earlier.events,
        }
    }

    /// Events that went out in batches of more than one.
    fn batched_events(self) -> f64 {
        self.events - self.singles
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_keeps_up_gets_one_event_per_batch() {
    let server = &TestServer::start(config()).await;
    let read = |transport| async move { server.open(transport, &ticker()).await.drain().await };
    let (sse, ws) = tokio::join!(read(Transport::Sse), read(Transport::Ws));
    for (transport, (events, end)) in Transport::BOTH.into_iter().zip([sse, ws]) {
        let t = transport.label();
        assert!(matches!(end, End::Body | End::Close(1000)), "{t}: {end:?}");
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=COUNT).collect::<Vec<_>>(), "{t}");
    }
    let metrics = server.metrics().await;
    for transport in Transport::BOTH {
        let t = transport.label();
        let batches = Batches::of(&metrics, t);
        assert_eq!(batches.events, COUNT as f64, "{t}");
        // A tick of the source's timer that comes over 10 ms late releases
        // two events at once: a loaded machine may do that now and then.
        assert!(
            batches.singles >= 0.9 * batches.batches,
            "{t}: {batches:?}: a reader that keeps up got batches of more than one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_gets_batches_larger_than_one_and_a_bounded_queue() {
    let server = TestServer::start(config()).await;
    let mut readers = Vec::new();
    for transport in Transport::BOTH {
        let reader = SlowReader::open(server.addr, transport, &ticker()).await;
        readers.push((transport, tokio::spawn(reader.read(COUNT))));
    }

    // Every scrape while the readers lag: each queue within its bounds. The
    // histogram as each queue is first seen full (the reader is behind) is
    // where its lagging part starts.
    let mut lag_starts = HashMap::new();
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let polls = WAIT.as_millis() / 20;
    for _ in 0..polls {
        poll.tick().await;
        if readers.iter().all(|(_, reader)| reader.is_finished()) {
            break;
        }
        let metrics = server.metrics().await;
        for transport in Transport::BOTH {
            let t = transport.label();
            let events = metrics.of("streamgauge_queue_depth_events", t);
            let bytes = metrics.of("streamgauge_queue_depth_bytes", t);
            assert!(
                events <= QUEUE_EVENTS as f64 && bytes <= QUEUE_BYTES as f64,
                "{t}: {events} events, {bytes} bytes queued\n{metrics}"
            );
            if bytes + EVENT_COST as f64 > QUEUE_BYTES as f64 {
                lag_starts
                    .entry(t)
                    .or_insert_with(|| Batches::of(&metrics, t));
            }
        }
    }
    for (transport, reader) in readers {
        let read = within("the slow reader", reader).await.expect("a reader");
        assert_eq!(read, COUNT, "{transport:?}: every event, in order");
    }

    // Until the reader is behind the socket buffers, they take what the
    // source makes as it makes it, one event per batch: what a slow reader
    // gets is what is written once its queue has filled.
    let metrics = server.metrics().await;
    for transport in Transport::BOTH {
        let t = transport.label();
        let start = lag_starts
            .get(t)
            .unwrap_or_else(|| panic!("{t}: the queue was never full: the reader kept up"));
        let lagging = Batches::of(&metrics, t).since(*start);
        assert!(
            lagging.events >= (COUNT / 10) as f64,
            "{t}: only {lagging:?} written while the reader lagged"
        );
        // Clearly most: a reader that kept up would get almost none batched.
        assert!(
            lagging.batched_events() >= 0.75 * lagging.events,
            "{t}: {lagging:?}: batches did not grow behind a slow reader"
        );
    }
}

/// A reader that falls behind on purpose: a raw socket read at most
/// [`CHUNK`] bytes at a time, once per [`READ_EVERY`].
struct SlowReader {
    stream: TcpStream,
    /// Bytes of the stream read with the response head.
    ahead: Vec<u8>,
    scanner: SeqScanner,
    /// Events read so far: the last `seq`.
    read: u64,
}

impl SlowReader {
    async fn open(addr: SocketAddr, transport: Transport, path: &str) -> Self {
        let path = format!("/{}/{path}", transport.label());
        let (stream, ahead) = match transport {
            Transport::Sse => {
                let (sse, head) = RawSse::get(addr, &path).await;
                assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
                sse.into_inner()
            }
            Transport::Ws => RawWs::connect(addr, &path).await.into_inner(),
        };
        Self {
            stream,
            ahead,
            scanner: SeqScanner::default(),
            read: 0,
        }
    }

    /// Reads until `count` events have come, each the next `seq`; returns
    /// the events read.
    async fn read(mut self, count: u64) -> u64 {
        let ahead = std::mem::take(&mut self.ahead);
        self.take(&ahead);
        let mut pace = tokio::time::interval(READ_EVERY);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = [0u8; CHUNK];
        // Each turn reads at least one byte, or the stream ended.
        for _ in 0..count as usize * (SIZE + 256) {
            if self.read == count {
                break;
            }
            pace.tick().await;
            let n = self.stream.read(&mut buf).await.expect("reading");
            if n == 0 {
                break;
            }
            self.take(&buf[..n]);
        }
        self.read
    }

    /// Takes the events completed in `bytes`, checking their order.
    fn take(&mut self, bytes: &[u8]) {
        for seq in self.scanner.scan(bytes) {
            assert_eq!(seq, self.read + 1, "events out of order");
            self.read = seq;
        }
    }
}

/// Finds each event's `seq` in a raw stream across reads: the digits after
/// `{"seq":` (ticker data is `x`s, and framing sits between events).
#[derive(Debug, Default)]
struct SeqScanner {
    /// How much of the pattern the last bytes matched.
    matched: usize,
    /// The digits of a `seq` being read.
    digits: Option<u64>,
}

impl SeqScanner {
    const PATTERN: &'static [u8] = b"{\"seq\":";

    /// Each `seq` completed in `bytes`.
    fn scan(&mut self, bytes: &[u8]) -> Vec<u64> {
        let mut found = Vec::new();
        for &byte in bytes {
            if let Some(seq) = self.digits {
                if byte.is_ascii_digit() {
                    self.digits = Some(seq * 10 + u64::from(byte - b'0'));
                    continue;
                }
                found.push(seq);
                self.digits = None;
            }
            self.matched = if byte == Self::PATTERN[self.matched] {
                self.matched + 1
            } else {
                usize::from(byte == Self::PATTERN[0])
            };
            if self.matched == Self::PATTERN.len() {
                self.matched = 0;
                self.digits = Some(0);
            }
        }
        found
    }
}
