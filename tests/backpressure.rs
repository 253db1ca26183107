//! A slow reader makes batches grow, not memory. At one paced rate, a
//! reader that keeps up gets its events one per batch; a reader that falls
//! behind gets them in batches larger than one, receives every one in order,
//! and meanwhile its queue never holds more than its configured bounds.
//!
//! How far behind a reader must be for its queue to fill depends on the
//! host (its `net.ipv4.tcp_rmem` and `tcp_wmem`), so the slow reader's
//! stream is made long enough from the buffer sizes in force
//! ([`buffers`]): its receive buffer is fixed, and read back; the server's
//! send buffer is bounded by `tcp_wmem`'s maximum.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use streamgauge_server::Config;
use streamgauge_server::protocol::ENVELOPE_ALLOWANCE;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::support::buffers::{self, SLOW_READER_WINDOW};
use crate::support::raw_sse::RawSse;
use crate::support::raw_ws::RawWs;
use crate::support::{self, End, Metrics, TestServer, Transport, WAIT, within};

/// Events per second: 10 ms apart, so that a source on time releases them
/// one at a time even on a loaded machine (at 250/s a thread descheduled
/// for 4 ms releases two, and that happens).
const RATE: u64 = 100;
/// Filler bytes per event: 6 MB/s at `RATE`, more than the slow reader
/// reads.
const SIZE: usize = 60_000;
/// Events per stream to a reader that keeps up.
const COUNT: u64 = 400;
/// Events that go out, at the least, while the slow reader lags (those
/// before fill the buffers behind it).
const LAGGING: u64 = 100;
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

fn ticker(count: u64) -> String {
    format!("ticker?rate={RATE}&size={SIZE}&count={count}")
}

/// The most bytes a second the slow reader reads.
fn read_rate() -> u64 {
    CHUNK as u64 * 1000 / READ_EVERY.as_millis() as u64
}

/// The most events a slow reader with a receive buffer of `recv_buffer`
/// bytes can need: enough to put it behind by everything in between (of
/// every event made, the part it cannot read in time piles up), then its
/// [`slow_target`].
fn slow_count(config: &Config, transport: Transport, recv_buffer: u64) -> u64 {
    let in_between = buffers::in_between(config, transport, EVENT_COST, recv_buffer);
    let made = RATE * SIZE as u64;
    let fill = (in_between * made).div_ceil(SIZE as u64 * (made - read_rate()));
    slow_target(fill)
}

/// The events a slow reader takes once `written` have been written when
/// its queue is first seen full: [`LAGGING`] more at the least, and a tenth
/// of all written while it lags.
fn slow_target(written: u64) -> u64 {
    written + LAGGING.max(written / 9 + 1)
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
    let read =
        |transport| async move { server.open(transport, &ticker(COUNT)).await.drain().await };
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
    let config = config();
    let server = TestServer::start(config.clone()).await;
    let (mut readers, mut lags) = (Vec::new(), HashMap::new());
    for transport in Transport::BOTH {
        let (stream, recv_buffer) =
            buffers::connect_with_recv_buffer(server.addr, SLOW_READER_WINDOW).await;
        let most = slow_count(&config, transport, recv_buffer);
        // Endless: how many events the reader takes is set once it lags.
        let reader = SlowReader::open(stream, server.addr, transport, &ticker(0)).await;
        let (lag, told) = Lag::new();
        lags.insert(transport.label(), lag);
        readers.push((transport, most, tokio::spawn(reader.read(most, told))));
    }

    // Every scrape while the readers lag: each queue within its bounds, and
    // where each reader's lagging part starts. Scraped until the readers
    // are done: the longest stream takes this long to read, and a wait
    // more.
    let most = readers.iter().map(|(_, most, _)| *most).max();
    let reading = Duration::from_secs(most.unwrap_or_default() * SIZE as u64 / read_rate());
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let polls = (reading + WAIT).as_millis() / 20;
    for _ in 0..polls {
        poll.tick().await;
        if readers.iter().all(|(_, _, reader)| reader.is_finished()) {
            break;
        }
        let metrics = server.metrics().await;
        for (transport, _, reader) in &readers {
            let t = transport.label();
            if reader.is_finished() {
                continue;
            }
            let events = metrics.of("streamgauge_queue_depth_events", t);
            let bytes = metrics.of("streamgauge_queue_depth_bytes", t);
            assert!(
                events <= QUEUE_EVENTS as f64 && bytes <= QUEUE_BYTES as f64,
                "{t}: {events} events, {bytes} bytes queued\n{metrics}"
            );
            let full = bytes + EVENT_COST as f64 > QUEUE_BYTES as f64;
            lags.get_mut(t).expect("a lag").scrape(&metrics, t, full);
        }
    }
    let (mut starts, mut streams) = (HashMap::new(), Vec::new());
    for (transport, _, reader) in readers {
        let t = transport.label();
        let (read, stream) = within("the slow reader", reader).await.expect("a reader");
        // Every event, in order (`SlowReader::take` checks it), of a
        // lagging part.
        starts.insert(t, (read, lags[t].start(t, read)));
        streams.push(stream);
    }

    // Until the reader is behind the socket buffers, they take what the
    // source makes as it makes it, one event per batch: what a slow reader
    // gets is what is written once its queue has filled.
    let metrics = server.metrics().await;
    for transport in Transport::BOTH {
        let t = transport.label();
        let (read, start) = starts[t];
        let lagging = Batches::of(&metrics, t).since(start);
        assert!(
            lagging.events >= (read / 10) as f64,
            "{t}: only {lagging:?} written while the reader lagged"
        );
        // Clearly most: a reader that kept up would get almost none batched.
        assert!(
            lagging.batched_events() >= 0.75 * lagging.events,
            "{t}: {lagging:?}: batches did not grow behind a slow reader"
        );
    }
}

/// Where a slow reader's lagging part starts, and how many events it is to
/// take for it. A part starts as its queue is seen full; one seen with
/// room again (the kernel's send buffer may have grown meanwhile) has
/// ended, and the reader reads on until the next.
#[derive(Debug)]
struct Lag {
    /// Tells the reader how many events to take; none while its queue has
    /// room.
    target: watch::Sender<Option<u64>>,
    /// The histogram as the queue was first seen full, by the count the
    /// reader was then told: its lagging parts, the last one current.
    starts: HashMap<u64, Batches>,
    /// Whether the queue was full at the last scrape.
    full: bool,
}

impl Lag {
    /// A reader's lag, and what tells it the count to take.
    fn new() -> (Self, watch::Receiver<Option<u64>>) {
        let (target, told) = watch::channel(None);
        let lag = Self {
            target,
            starts: HashMap::new(),
            full: false,
        };
        (lag, told)
    }

    /// Takes one scrape of transport `t`, whose queue is `full` or not.
    fn scrape(&mut self, metrics: &Metrics, t: &str, full: bool) {
        if full && !self.full {
            let start = Batches::of(metrics, t);
            let count = slow_target(start.events as u64);
            self.starts.insert(count, start);
            self.target.send_replace(Some(count));
        } else if !full && self.full {
            self.target.send_replace(None);
        }
        self.full = full;
    }

    /// The start of the lagging part for which the reader took its count,
    /// `read`, of events of transport `t`.
    fn start(&self, t: &str, read: u64) -> Batches {
        assert!(
            !self.starts.is_empty(),
            "{t}: the queue was never full: the reader kept up"
        );
        let counts: Vec<&u64> = self.starts.keys().collect();
        *self.starts.get(&read).unwrap_or_else(|| {
            panic!("{t}: {read} events read, not the count of a lagging part: {counts:?}")
        })
    }
}

/// A reader that falls behind on purpose: a raw socket, its receive buffer
/// fixed, read at most [`CHUNK`] bytes at a time, once per [`READ_EVERY`].
struct SlowReader {
    stream: TcpStream,
    /// Bytes of the stream read with the response head.
    ahead: Vec<u8>,
    scanner: SeqScanner,
    /// Events read so far: the last `seq`.
    read: u64,
}

impl SlowReader {
    /// Opens `path` on `transport` over `stream`, a connection to `addr`.
    async fn open(stream: TcpStream, addr: SocketAddr, transport: Transport, path: &str) -> Self {
        let path = format!("/{}/{path}", transport.label());
        let (stream, ahead) = match transport {
            Transport::Sse => {
                let (sse, head) = RawSse::get_over(stream, addr, &path).await;
                assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
                sse.into_inner()
            }
            Transport::Ws => RawWs::handshake(stream, addr, &path).await.into_inner(),
        };
        Self {
            stream,
            ahead,
            scanner: SeqScanner::default(),
            read: 0,
        }
    }

    /// Reads until `target` says how many events to take, and they have
    /// come, each the next `seq`; returns the events read, and the stream,
    /// open (its queue stays full). Stops at `most` if told no target.
    async fn read(mut self, most: u64, target: watch::Receiver<Option<u64>>) -> (u64, TcpStream) {
        let ahead = std::mem::take(&mut self.ahead);
        self.take(&ahead, most);
        let mut pace = tokio::time::interval(READ_EVERY);
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = [0u8; CHUNK];
        // Each turn reads at least one byte, or the stream ended.
        for _ in 0..most as usize * (SIZE + 256) {
            let take = target.borrow().unwrap_or(most);
            if self.read >= take {
                break;
            }
            pace.tick().await;
            let n = self.stream.read(&mut buf).await.expect("reading");
            if n == 0 {
                break;
            }
            self.take(&buf[..n], take);
        }
        (self.read, self.stream)
    }

    /// Takes the events completed in `bytes`, checking their order, up to
    /// the `take`-th.
    fn take(&mut self, bytes: &[u8], take: u64) {
        for seq in self.scanner.scan(bytes) {
            if self.read == take {
                return;
            }
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
