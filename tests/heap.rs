//! The server's heap under dhat (testing mode), in-process on
//! `127.0.0.1:0`: every allocation of this test binary goes through dhat's
//! global allocator, server and clients alike.
//!
//! - Connect / stream / disconnect cycles on both transports, on the
//!   ticker and on topics, give the heap back: after them, the live heap
//!   is back at its baseline within a small tolerance.
//! - Allocation budgets of the hot paths, per delivered event, measured
//!   differentially (a long run minus a short one, many subscribers minus
//!   none) so that connection setup and publishing cancel out. The clients
//!   here read raw bytes into a fixed buffer and allocate nothing per
//!   event, so what is counted is the server's.
//!
//! - Replay memory does not grow with the number of rows: the live heap's
//!   peak while 10,000 or 100,000 trades stream from the database cursor
//!   (to a client reading at full speed, and to one reading slowly) stays
//!   the same, while the whole array of `/api/trades` grows with them.
//!
//! - An idle HTTP/1.1 stream over TLS holds a bounded heap too. Its client
//!   is this same test binary run as a child process
//!   ([`TLS_CLIENTS_ENV`]), so that the clients' TLS state (as large as
//!   the server's) is not in this process's heap.
//!
//! dhat allows one profiler per process, so this binary holds one test
//! that runs the parts in turn.
//!
//! Run with `cargo test --test heap -- --nocapture` to see the figures.

// Helpers are `pub` to share them between the test binaries.
#![allow(unreachable_pub)]

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[allow(
    dead_code,
    unused_imports,
    unused_macros,
    reason = "this binary uses part of the shared support"
)]
#[macro_use]
#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use streamgauge_server::Config;
use streamgauge_server::queue;
use streamgauge_server::writer::BatchLimits;
use support::buffers;
use support::raw_ws::RawWs;
use support::{TestServer, Transport, config, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Cycles per transport and stream kind (four kinds: SSE and WebSocket,
/// ticker and topic).
const CYCLES: usize = 120;

/// How much the live heap may stay above its baseline after the cycles.
/// Measured: 3 to 10 KiB, whatever the number of cycles (caches and pools
/// that settle, not a per-cycle leak: 720 cycles left 8 KiB); 32 KiB over
/// 480 cycles fails any leak of 70 bytes or more per cycle.
const HEAP_TOLERANCE: u64 = 32 * 1024;

/// Idle streams opened to measure the heap each one holds, per batch.
const IDLE_STREAMS: usize = 200;

/// Idle TLS streams opened to measure the heap each one holds (each a TLS
/// handshake, slow under dhat).
const IDLE_TLS_STREAMS: usize = 200;

/// Batches of [`IDLE_STREAMS`] measured per transport; the least figure
/// counts. Measured on a machine busy with builds, one batch of WebSocket
/// streams read 4,114 – 4,169 B where a quiet machine reads 3,990.
const IDLE_BATCHES: usize = 3;

/// The most live heap an idle stream may hold, server and this test's raw
/// client together (the client's part is its socket's registration, 256
/// B), on either transport: 3 KiB, just above what is measured (issue 20
/// asks for 1 KiB on SSE and 1.5 KiB on WebSocket: not reached,
/// docs/performance.md, "Toward 1 KiB"). Measured here: 2,712 – 2,808 B
/// on SSE and 2,807 – 2,864 B on WebSocket (3,222 B and 3,997 B before
/// one keep-alive tick per server, a leaner delivery wait and SSE path,
/// the WebSocket session in its own task and a 256 B read buffer; 6,712 B
/// and 9,392 B while each stream's futures kept second copies of their
/// parts, 31,415 B on SSE while hyper served SSE streams).
const IDLE_STREAM_BUDGET: u64 = 3 * 1024;

/// The most live heap an idle HTTP/1.1 stream over TLS may hold, the
/// server's alone (its clients run in another process): the capacity
/// target, 8 KiB. Measured here: 6,553 B (10.4 KiB while tokio-rustls
/// served TLS: rustls' buffered connection kept a 4 KiB read buffer for
/// each connection's life). The server's own TLS stream
/// (`streamgauge_server::tls::stream`) keeps no buffer while a stream is
/// idle; what is left above a plain stream is rustls' connection state:
/// the two directions' AES-GCM keys, its handshake deframer, its traffic
/// state (docs/performance.md, section 6).
const TLS_IDLE_STREAM_BUDGET: u64 = 8 * 1024;

/// TLS connections opened (each a short stream) before measuring: enough
/// to fill rustls' session cache (two sessions a TLS 1.3 handshake, at
/// most 256 kept, about 200 B each), a cost bounded whatever the number
/// of streams, which would otherwise weigh on each of the few measured.
const TLS_WARM_UP: usize = 128;

/// Set in a child process of this test: it runs the TLS clients
/// (`ADDR CERT_PEM WARM_UP STREAMS`) instead of the test.
const TLS_CLIENTS_ENV: &str = "STREAMGAUGE_HEAP_TLS_CLIENTS";

/// Rows of the two replays compared: ten times as many rows.
const REPLAY_ROWS: [u64; 2] = [10_000, 100_000];

/// A replay's queue here, events, and its batches, bytes. What a replay
/// holds whatever its rows is bounded by these: its queue, and the batches
/// hyper has taken but not yet written (up to 16 of them behind a slow
/// reader). They are small here so that this bounded state, whose size
/// depends on how far behind the reader is when the heap is sampled (up to
/// ~200 KiB with 64 KiB batches), stays within the slack: a replay of
/// 10,000 rows (~1.7 MB) fits in the kernel's loopback socket buffers and
/// never waits on a slow reader, one of 100,000 rows does.
const REPLAY_QUEUE: usize = 64;
const REPLAY_BATCH_BYTES: usize = 2048;

/// What a replay's heap peak may gain from ten times as many rows: half
/// again plus this much. Measured: 77 KB for 10,000 rows and 79 KB for
/// 100,000 at full speed, 76 KB and 104 KB to a slow reader (the second
/// paused behind it); the whole array 3.8 MB and 31 MB. A replay that kept
/// its rows, or any share of them above 1 %, grows past this.
const REPLAY_SLACK: u64 = 64 * 1024;

/// A slow reader's pace: at most this many bytes a millisecond (1 MB/s),
/// about half the speed of a replay under dhat here, so the replay waits
/// on it most of the time.
const SLOW_READ: usize = 1024;

/// Most reads of one answer (a replay of 100,000 trades is about 17 MB:
/// 17,000 slow reads).
const MAX_READS: usize = 100_000;

/// Allocations per event the ticker path may make, each event its own
/// batch (`--max-batch 1`, the worst case: batching only divides per-batch
/// costs). Measured here: 2.0 on SSE (the body's frames through hyper),
/// 0.0 on WebSocket (tungstenite writes into its own buffer). Each budget
/// is the measured figure plus half an allocation: one more allocation per
/// event fails it.
const TICKER_BUDGET: [(Transport, f64); 2] = [(Transport::Sse, 2.5), (Transport::Ws, 0.5)];

/// Allocations per delivered event fan-out may make (the hub to every
/// subscriber's queue, then a one-event batch each). Measured here: 0.17;
/// one more allocation per delivered event (a copy of the event per
/// subscriber, say) fails it.
const FAN_OUT_BUDGET: f64 = 0.5;

fn live_bytes() -> u64 {
    dhat::HeapStats::get().curr_bytes as u64
}

fn allocations() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// A server whose every batch is one event, with no keep-alive during the
/// test, so allocation counts do not depend on timing.
fn one_event_batches() -> Config {
    Config {
        batch: BatchLimits {
            max_events: 1,
            ..Config::default().batch
        },
        keepalive_interval: Duration::from_secs(3600),
        ..config()
    }
}

#[test]
fn heap() {
    if let Ok(spec) = std::env::var(TLS_CLIENTS_ENV) {
        return tls_clients::run(&spec);
    }
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        cycles_give_the_heap_back().await;
        idle_streams_cost_a_bounded_heap_each().await;
        idle_tls_streams_cost_a_bounded_heap_each().await;
        ticker_allocations_per_event_stay_within_budget().await;
        fan_out_allocations_per_event_stay_within_budget().await;
        a_stalled_reader_holds_a_heap_bounded_by_the_configuration().await;
        replay_heap_stays_flat_whatever_the_rows().await;
    });
}

/// One connect / stream / disconnect cycle of each kind on `transport`.
async fn cycle(server: &TestServer, transport: Transport, topic: &str) {
    let mut ticker = server.open(transport, "ticker?rate=0&count=20").await;
    let (events, _) = ticker.drain().await;
    assert_eq!(events.len(), 20);
    drop(ticker);
    let mut subscriber = server.open(transport, &format!("topics/{topic}")).await;
    server.publish(topic, &json!({"n": 1})).await;
    subscriber.next_event().await;
    drop(subscriber);
}

async fn cycles_give_the_heap_back() {
    let server = TestServer::start(config()).await;
    // Warm up: pools, caches and lazily built state that stay for the
    // life of the process (a prepared statement, the client's pool).
    for transport in Transport::BOTH {
        for _ in 0..3 {
            cycle(&server, transport, "heap").await;
        }
    }
    server.all_closed().await;
    let baseline = live_bytes();
    for transport in Transport::BOTH {
        for _ in 0..CYCLES {
            cycle(&server, transport, "heap").await;
        }
    }
    server.all_closed().await;
    let after = live_bytes();
    let grown = after.saturating_sub(baseline);
    eprintln!(
        "heap: {baseline} B live before {} cycles, {after} B after ({grown} B more; tolerance {HEAP_TOLERANCE} B)",
        4 * CYCLES
    );
    dhat::assert!(
        grown <= HEAP_TOLERANCE,
        "the heap grew by {grown} B over {} cycles",
        4 * CYCLES
    );
    server.stop().await;
}

async fn idle_streams_cost_a_bounded_heap_each() {
    let server = TestServer::start(config()).await;
    // One of each first: lazily built state is not per stream.
    let warm = [
        open_raw(server.addr, Transport::Sse, "topics/idle").await,
        open_raw(server.addr, Transport::Ws, "topics/idle").await,
    ];
    let mut open = 2;
    let mut streams = Vec::with_capacity(2 * IDLE_BATCHES * IDLE_STREAMS);
    server
        .wait_for("the warm-up subscribers", subscribed(open))
        .await;
    for transport in Transport::BOTH {
        // The least of a few batches' figures: what is still settling when
        // one is read (a connection's buffers not yet dropped, a pool
        // growing on a busy machine) only ever adds to a batch's figure.
        let mut per_stream = u64::MAX;
        for _ in 0..IDLE_BATCHES {
            let before = live_bytes();
            for _ in 0..IDLE_STREAMS {
                streams.push(open_raw(server.addr, transport, "topics/idle").await);
            }
            open += IDLE_STREAMS;
            server
                .wait_for("every idle subscriber", subscribed(open))
                .await;
            let batch = live_bytes().saturating_sub(before) / IDLE_STREAMS as u64;
            eprintln!("idle {transport:?} streams: a batch held {batch} B of live heap each");
            per_stream = per_stream.min(batch);
        }
        eprintln!(
            "idle {transport:?} streams: {per_stream} B of live heap each (topic subscribers; budget {IDLE_STREAM_BUDGET} B)"
        );
        dhat::assert!(
            per_stream <= IDLE_STREAM_BUDGET,
            "an idle {transport:?} stream holds {per_stream} B of heap, over the budget of {IDLE_STREAM_BUDGET} B"
        );
    }
    drop((warm, streams));
    server.all_closed().await;
    server.stop().await;
}

async fn idle_tls_streams_cost_a_bounded_heap_each() {
    let cert = support::tls::TestCert::new();
    let server = TestServer::start_tls(config(), &cert).await;
    let mut clients = tls_clients::Child::spawn(server.addr, &cert, TLS_WARM_UP, IDLE_TLS_STREAMS);
    clients.until("warm").await;
    // The clients' warm-up streams have ended (the server has closed them).
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    within("the warm-up streams to end", async {
        while tls_open(&server).await > 0.0 {
            poll.tick().await;
        }
    })
    .await;
    let before = live_bytes();
    clients.go().await;
    clients.until("ready").await;
    within("every idle TLS subscriber", async {
        while tls_live(&server).await < IDLE_TLS_STREAMS as f64 {
            poll.tick().await;
        }
    })
    .await;
    let per_stream = live_bytes().saturating_sub(before) / IDLE_TLS_STREAMS as u64;
    eprintln!(
        "idle TLS (HTTP/1.1) streams: {per_stream} B of live heap each, the server's alone (topic subscribers; budget {TLS_IDLE_STREAM_BUDGET} B)"
    );
    dhat::assert!(
        per_stream <= TLS_IDLE_STREAM_BUDGET,
        "an idle TLS stream holds {per_stream} B of heap, over the budget of {TLS_IDLE_STREAM_BUDGET} B"
    );
    clients.end().await;
    server.stop().await;
}

/// A server's metrics over its HTTPS (the scrape's own allocations
/// happen before the figures are read).
async fn tls_metrics(server: &TestServer) -> support::Metrics {
    server.metrics().await
}

/// Streams open on a TLS server.
async fn tls_open(server: &TestServer) -> f64 {
    tls_metrics(server)
        .await
        .of("streamgauge_connections_open", "sse")
}

/// Topic subscribers live on a TLS server.
async fn tls_live(server: &TestServer) -> f64 {
    tls_metrics(server)
        .await
        .get("streamgauge_topic_live_subscribers")
}

/// The TLS clients, in a child process: this test binary, run with
/// [`TLS_CLIENTS_ENV`] set.
mod tls_clients {
    use std::net::SocketAddr;
    use std::process::Stdio;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
    use tokio::process::{ChildStdin, ChildStdout, Command};

    use super::support::tls::{TestCert, client_trusting, connect};
    use super::{TLS_CLIENTS_ENV, within};

    /// The child process, its stdin (closing it ends the child) and the
    /// lines it prints.
    pub struct Child {
        process: tokio::process::Child,
        stdin: Option<ChildStdin>,
        lines: Lines<BufReader<ChildStdout>>,
    }

    impl Child {
        /// Starts the clients of `addr`, trusting `cert`: `warm_up` short
        /// streams, then (at [`Child::go`]) `streams` idle ones.
        pub fn spawn(addr: SocketAddr, cert: &TestCert, warm_up: usize, streams: usize) -> Self {
            let spec = format!("{addr} {} {warm_up} {streams}", cert.files.cert.display());
            let mut process = Command::new(std::env::current_exe().expect("this test binary"))
                .args(["heap", "--exact", "--nocapture", "--test-threads=1"])
                .env(TLS_CLIENTS_ENV, spec)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("starting the TLS clients");
            let stdin = process.stdin.take();
            let stdout = process.stdout.take().expect("the clients' stdout");
            Self {
                process,
                stdin,
                lines: BufReader::new(stdout).lines(),
            }
        }

        /// Waits for a line ending in `marker` (libtest's own lines are
        /// skipped; its `test heap ... ` starts the first marker's line).
        pub async fn until(&mut self, marker: &str) {
            within(&format!("the TLS clients to say {marker}"), async {
                while let Some(line) = self.lines.next_line().await.expect("reading the clients") {
                    if line.ends_with(marker) {
                        return;
                    }
                }
                panic!("the TLS clients ended before saying {marker}");
            })
            .await;
        }

        /// Tells the clients to open their idle streams.
        pub async fn go(&mut self) {
            let stdin = self.stdin.as_mut().expect("the clients' stdin");
            stdin.write_all(b"go\n").await.expect("telling the clients");
        }

        /// Ends the clients (their stdin closes) and waits for them.
        pub async fn end(mut self) {
            drop(self.stdin.take());
            let status = within("the TLS clients to end", self.process.wait())
                .await
                .expect("waiting for the clients");
            assert!(status.success(), "the TLS clients failed: {status}");
        }
    }

    /// The child's side: `ADDR CERT_PEM WARM_UP STREAMS`. Its stdout is
    /// how it tells the test where it is.
    #[expect(clippy::print_stdout, reason = "the child's markers to its parent")]
    pub fn run(spec: &str) {
        let [addr, cert, warm_up, streams] = spec.split(' ').collect::<Vec<_>>()[..] else {
            panic!("{TLS_CLIENTS_ENV}: {spec:?}");
        };
        let addr: SocketAddr = addr.parse().expect("an address");
        let (warm_up, streams): (usize, usize) =
            (warm_up.parse().unwrap(), streams.parse().unwrap());
        let pem = std::fs::read(cert).expect("the certificate");
        let der =
            rustls::pki_types::pem::PemObject::from_pem_slice(&pem).expect("a PEM certificate");
        let connector = client_trusting(&der, &[b"http/1.1"]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            for _ in 0..warm_up {
                let mut stream = connect(&connector, addr).await;
                let request =
                    format!("GET /sse/ticker?rate=0&count=1 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            }
            println!("warm");
            let mut stdin = BufReader::new(tokio::io::stdin()).lines();
            assert_eq!(stdin.next_line().await.unwrap().as_deref(), Some("go"));
            let mut open = Vec::with_capacity(streams);
            for _ in 0..streams {
                let mut stream = connect(&connector, addr).await;
                let request = format!("GET /sse/topics/idle-tls HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(stream.read_u8().await.expect("the answer's head"));
                }
                assert!(head.starts_with(b"HTTP/1.1 200 "));
                open.push(stream);
            }
            println!("ready");
            // Held until the test closes stdin.
            while stdin.next_line().await.unwrap_or(None).is_some() {}
            drop(open);
        });
    }
}

/// Whether `n` topic subscribers are live.
fn subscribed(n: usize) -> impl Fn(&support::Metrics) -> bool {
    move |m| m.get("streamgauge_topic_live_subscribers") >= n as f64
}

/// Opens `path` on `transport` with a raw client.
async fn open_raw(addr: SocketAddr, transport: Transport, path: &str) -> RawStream {
    match transport {
        Transport::Ws => RawStream(
            RawWs::connect(addr, &format!("/ws/{path}"))
                .await
                .into_inner(),
        ),
        Transport::Sse => raw_get(addr, &format!("/sse/{path}")).await,
    }
}

/// `GET {path}` on a raw connection the server closes after its answer.
async fn raw_get(addr: SocketAddr, path: &str) -> RawStream {
    let mut stream = within("a TCP connection", TcpStream::connect(addr))
        .await
        .expect("connecting");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("a request");
    RawStream((stream, Vec::new()))
}

/// A stream read as raw bytes, events counted by their `{"seq":` without
/// allocating (bytes the handshake read ahead first).
struct RawStream((TcpStream, Vec<u8>));

/// Counts a pattern across reads, without allocating.
struct Occurrences {
    pattern: &'static [u8],
    matched: usize,
}

impl Occurrences {
    /// Events: each starts with `{"seq":`.
    const EVENTS: Self = Self::of(b"{\"seq\":");

    /// Trades, in a stream or in an array: each has one `"id":`.
    const TRADES: Self = Self::of(b"\"id\":");

    const fn of(pattern: &'static [u8]) -> Self {
        Self {
            pattern,
            matched: 0,
        }
    }

    /// Occurrences that end in `bytes`.
    fn count(&mut self, bytes: &[u8]) -> u64 {
        let mut found = 0;
        for &byte in bytes {
            self.matched = if byte == self.pattern[self.matched] {
                self.matched + 1
            } else {
                usize::from(byte == self.pattern[0])
            };
            if self.matched == self.pattern.len() {
                found += 1;
                self.matched = 0;
            }
        }
        found
    }
}

impl RawStream {
    /// Reads until `events` have arrived (or the server closes), calling
    /// `each` per event; returns the events seen.
    async fn read_events(self, events: u64, each: impl Fn()) -> u64 {
        let (mut stream, ahead) = self.0;
        let mut counter = Occurrences::EVENTS;
        let mut seen = counter.count(&ahead);
        (0..seen).for_each(|_| each());
        let mut buf = [0u8; 16 * 1024];
        while seen < events {
            let n = stream.read(&mut buf).await.expect("reading the stream");
            if n == 0 {
                break;
            }
            let found = counter.count(&buf[..n]);
            (0..found).for_each(|_| each());
            seen += found;
        }
        seen
    }
}

/// Allocations while a raw client reads `events` ticker events.
async fn ticker_run(server: &TestServer, transport: Transport, events: u64) -> u64 {
    let stream = open_raw(
        server.addr,
        transport,
        &format!("ticker?rate=0&count={events}"),
    )
    .await;
    let before = allocations();
    let seen = within("the ticker events", stream.read_events(events, || ())).await;
    let counted = allocations() - before;
    assert_eq!(seen, events);
    counted
}

/// Allocations per ticker event on `transport`: a long run minus a short
/// one, over the events between.
async fn ticker_per_event(server: &TestServer, transport: Transport) -> f64 {
    ticker_run(server, transport, 100).await; // warm-up
    let (short, long) = (2_000, 20_000);
    let short_allocations = ticker_run(server, transport, short).await;
    let long_allocations = ticker_run(server, transport, long).await;
    (long_allocations as f64 - short_allocations as f64) / (long - short) as f64
}

async fn ticker_allocations_per_event_stay_within_budget() {
    let worst = TestServer::start(one_event_batches()).await;
    let batched = TestServer::start(config()).await;
    for (transport, budget) in TICKER_BUDGET {
        let per_event = ticker_per_event(&worst, transport).await;
        let amortized = ticker_per_event(&batched, transport).await;
        eprintln!(
            "ticker {}: {per_event:.3} allocations per event one event per batch (budget {budget}), {amortized:.3} at the default batch limits",
            transport.label()
        );
        dhat::assert!(
            per_event <= budget,
            "ticker {}: {per_event:.3} allocations per event, over the budget of {budget}",
            transport.label()
        );
    }
    worst.stop().await;
    batched.stop().await;
}

/// Subscribers connected, counting what they receive.
struct Audience {
    delivered: Arc<AtomicU64>,
    arrived: Arc<Notify>,
    readers: Vec<tokio::task::JoinHandle<u64>>,
}

impl Audience {
    /// `n` raw subscribers of `topic`, alternating transports, each reading
    /// `events` events.
    async fn join(server: &TestServer, topic: &str, n: usize, events: u64) -> Self {
        let delivered = Arc::new(AtomicU64::new(0));
        let arrived = Arc::new(Notify::new());
        let mut readers = Vec::with_capacity(n);
        for i in 0..n {
            let transport = Transport::BOTH[i % 2];
            let stream = open_raw(server.addr, transport, &format!("topics/{topic}")).await;
            let (delivered, arrived) = (Arc::clone(&delivered), Arc::clone(&arrived));
            readers.push(tokio::spawn(stream.read_events(events, move || {
                delivered.fetch_add(1, Ordering::AcqRel);
                arrived.notify_one();
            })));
        }
        server
            .wait_for("every subscriber to join", |m| {
                m.get("streamgauge_topic_live_subscribers") >= n as f64
            })
            .await;
        Self {
            delivered,
            arrived,
            readers,
        }
    }

    /// Waits until `total` events have been delivered in all.
    async fn until(&self, total: u64) {
        within("the subscribers to receive the event", async {
            while self.delivered.load(Ordering::Acquire) < total {
                self.arrived.notified().await;
            }
        })
        .await;
    }
}

/// Allocations while `events` are published one by one to `topic` and
/// each reaches all of its `subscribers` before the next is published.
async fn fan_out_run(server: &TestServer, topic: &str, subscribers: usize, events: u64) -> u64 {
    let audience = Audience::join(server, topic, subscribers, events).await;
    let body = json!({"n": 1}).to_string();
    let before = allocations();
    for k in 1..=events {
        let (status, _) = server.try_publish(topic, body.clone(), None).await;
        assert_eq!(status, 201);
        audience.until(k * subscribers as u64).await;
    }
    let counted = allocations() - before;
    for reader in audience.readers {
        assert_eq!(reader.await.expect("a reader"), events);
    }
    counted
}

async fn fan_out_allocations_per_event_stay_within_budget() {
    let server = TestServer::start(one_event_batches()).await;
    let (subscribers, events) = (40, 100);
    fan_out_run(&server, "warm-up", 2, 10).await;
    let alone = fan_out_run(&server, "alone", 0, events).await;
    let fanned = fan_out_run(&server, "fanned", subscribers, events).await;
    let delivered = subscribers as u64 * events;
    let per_event = (fanned as f64 - alone as f64) / delivered as f64;
    eprintln!(
        "fan-out: {events} publishes: {alone} allocations alone, {fanned} to {subscribers} subscribers"
    );
    eprintln!(
        "fan-out: {per_event:.3} allocations per delivered event to {subscribers} subscribers (half SSE, half WebSocket), one event per batch (budget {FAN_OUT_BUDGET})"
    );
    dhat::assert!(
        per_event <= FAN_OUT_BUDGET,
        "fan-out: {per_event:.3} allocations per delivered event, over the budget of {FAN_OUT_BUDGET}"
    );
    server.stop().await;
}

/// The most live heap one stream of `event`-byte events may hold behind a
/// reader that reads nothing, from `config`: what the server holds for it
/// ([`buffers::server_stream_bytes`]: its queue, the batch its writer
/// encoded, and what the transport holds under it), plus what any open
/// stream holds ([`IDLE_STREAM_BUDGET`]). Measured here with a 256 KiB queue and 64 KiB
/// batches: 235,445 B on SSE (653,186 B when hyper wrote SSE, its write
/// queue holding up to 400 KiB), 176,251 B on WebSocket, after 4.0 MB
/// written to the socket.
fn stalled_stream_budget(config: &Config, transport: Transport, event: usize) -> u64 {
    buffers::server_stream_bytes(config, transport, event) + IDLE_STREAM_BUDGET
}

async fn a_stalled_reader_holds_a_heap_bounded_by_the_configuration() {
    let config = Config {
        queue: streamgauge_server::queue::Limits {
            max_events: 100_000,
            max_bytes: 256 * 1024,
        },
        keepalive_interval: Duration::from_secs(3600),
        ..config()
    };
    let event_cost = 1024 + 2 + streamgauge_server::protocol::ENVELOPE_ALLOWANCE;
    let server = TestServer::start(config.clone()).await;
    for transport in Transport::BOTH {
        ticker_run(&server, transport, 10).await; // warm-up
    }
    server.all_closed().await;
    for transport in Transport::BOTH {
        let t = transport.label();
        server.metrics().await; // the scraping client's own state, first
        let before = live_bytes();
        // Endless and unpaced: only backpressure stops this source. Its
        // queue is full from the first events on, as it makes them faster
        // than they are written; what its socket takes before it stalls
        // depends on the host's buffers (several MB here, tens on a host
        // whose `tcp_wmem` starts large), so the heap is taken once the
        // socket has taken more than twice the budget: a stream that held
        // what it wrote would be over it.
        let stalled = open_raw(server.addr, transport, "ticker?rate=0&size=1024").await;
        let budget = stalled_stream_budget(&config, transport, event_cost);
        let full = server
            .wait_for("the stalled stream's queue to fill", |m| {
                m.of("streamgauge_queue_depth_bytes", t) + event_cost as f64
                    > config.queue.max_bytes as f64
                    && m.of("streamgauge_bytes_sent_total", t) > (2 * budget) as f64
            })
            .await;
        let held = live_bytes().saturating_sub(before);
        let written = full.of("streamgauge_bytes_sent_total", t) as u64;
        eprintln!(
            "stalled {t} reader: {held} B of live heap held (budget from the configuration {budget} B) after {written} B written to its socket"
        );
        dhat::assert!(
            held <= budget,
            "a stalled {t} reader holds {held} B of heap, over its budget of {budget} B"
        );
        dhat::assert!(
            written > 2 * budget,
            "the {t} source stopped after {written} B: the test did not stall it"
        );
        drop(stalled);
        server.all_closed().await;
    }
    server.stop().await;
}

/// The wallet seeded with `rows` trades.
fn wallet(rows: u64) -> String {
    format!("w{rows}")
}

/// How a raw client reads an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// As fast as it comes.
    Fast,
    /// At most [`SLOW_READ`] bytes a millisecond.
    Slow,
}

/// The live heap's highest point while it runs: sampled every millisecond
/// (the server's work between two reads of the client, such as building
/// a whole array, is seen too) and by [`HeapWatch::sample`].
struct HeapWatch {
    start: dhat::HeapStats,
    highest: usize,
    stop: tokio::sync::oneshot::Sender<()>,
    sampler: tokio::task::JoinHandle<usize>,
}

impl HeapWatch {
    fn start() -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let start = dhat::HeapStats::get();
        let sampler = tokio::spawn(async move {
            // A sampling period, not a synchronization.
            let mut ticks = tokio::time::interval(Duration::from_millis(1));
            let mut highest = 0;
            loop {
                tokio::select! {
                    _ = &mut stopped => return highest,
                    _ = ticks.tick() => highest = highest.max(dhat::HeapStats::get().curr_bytes),
                }
            }
        });
        Self {
            highest: start.curr_bytes,
            start,
            stop,
            sampler,
        }
    }

    fn sample(&mut self) {
        self.highest = self.highest.max(dhat::HeapStats::get().curr_bytes);
    }

    /// The highest live heap seen above the start: sampled, or dhat's own
    /// peak when it rose meanwhile (dhat's peak never resets, so it is then
    /// this watch's exact peak).
    async fn peak(self) -> u64 {
        let _ = self.stop.send(());
        let sampled = self.sampler.await.expect("the heap sampler");
        let end = dhat::HeapStats::get();
        let mut highest = self.highest.max(sampled);
        if end.max_bytes > self.start.max_bytes {
            highest = highest.max(end.max_bytes);
        }
        (highest - self.start.curr_bytes) as u64
    }
}

/// The live heap's peak above where it was, while a raw client reads the
/// answer to `GET {path}` to its end as `reader` does; and the trades it
/// read.
async fn heap_while_reading(server: &TestServer, path: &str, reader: Reader) -> (u64, u64) {
    let mut buf = vec![0u8; 16 * 1024];
    let chunk = match reader {
        Reader::Fast => buf.len(),
        Reader::Slow => SLOW_READ,
    };
    let mut trades = Occurrences::TRADES;
    // The interval paces the slow reader (what is measured); it
    // synchronizes nothing.
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = HeapWatch::start();
    let (mut stream, _) = raw_get(server.addr, path).await.0;
    let mut read = 0;
    let mut ended = false;
    for _ in 0..MAX_READS {
        if reader == Reader::Slow {
            ticks.tick().await;
        }
        let n = within(&format!("GET {path}"), stream.read(&mut buf[..chunk]))
            .await
            .expect("reading the answer");
        if n == 0 {
            ended = true;
            break;
        }
        read += trades.count(&buf[..n]);
        watch.sample();
    }
    assert!(ended, "GET {path}: no end after {MAX_READS} reads");
    (watch.peak().await, read)
}

/// Peaks of one wallet's trades: streamed to a fast and to a slow reader,
/// and answered at once.
#[derive(Debug, Clone, Copy)]
struct ReplayPeaks {
    fast: u64,
    slow: u64,
    whole: u64,
}

async fn replay_peaks(server: &TestServer, rows: u64) -> ReplayPeaks {
    let wallet = wallet(rows);
    let peak = async |path: &str, reader| {
        server.all_closed().await;
        let (peak, read) = heap_while_reading(server, path, reader).await;
        assert_eq!(read, rows, "{path}");
        peak
    };
    let replay = format!("/sse/replay/{wallet}");
    ReplayPeaks {
        fast: peak(&replay, Reader::Fast).await,
        slow: peak(&replay, Reader::Slow).await,
        whole: peak(&format!("/api/trades/{wallet}?limit={rows}"), Reader::Fast).await,
    }
}

async fn replay_heap_stays_flat_whatever_the_rows() {
    let server = TestServer::start(Config {
        queue: queue::Limits {
            max_events: REPLAY_QUEUE,
            ..Config::default().queue
        },
        batch: BatchLimits {
            max_bytes: REPLAY_BATCH_BYTES,
            ..Config::default().batch
        },
        ..config()
    })
    .await;
    let seed = async |wallet: &str, rows: u64| {
        let (status, answer) = server.seed_trades(wallet, rows, None).await;
        assert_eq!(status, 201, "{answer}");
    };
    for rows in REPLAY_ROWS {
        seed(&wallet(rows), rows).await;
    }
    // Warm-up: statements, pool connections and lazily built state.
    let warm = 1000;
    seed(&wallet(warm), warm).await;
    replay_peaks(&server, warm).await;

    let [small, large] = REPLAY_ROWS;
    let (few, many) = (
        replay_peaks(&server, small).await,
        replay_peaks(&server, large).await,
    );
    for (rows, peaks) in [(small, few), (large, many)] {
        eprintln!(
            "replay of {rows} trades: peak live heap above baseline {} B streamed at full speed, {} B streamed to a slow reader, {} B for the whole array",
            peaks.fast, peaks.slow, peaks.whole
        );
    }
    for (reader, few, many) in [("fast", few.fast, many.fast), ("slow", few.slow, many.slow)] {
        dhat::assert!(
            many <= few * 3 / 2 + REPLAY_SLACK,
            "a replay to a {reader} reader took {many} B for {large} rows, {few} B for {small}: it grows with the rows"
        );
    }
    dhat::assert!(
        many.whole >= 5 * few.whole,
        "the whole array took {} B for {large} rows, {} B for {small}: it should grow with the rows",
        many.whole,
        few.whole
    );
    server.stop().await;
}
