//! Durable topics, each test on SQLite and on a real PostgreSQL: exactly-once
//! delivery across resumes while publishing, slow subscribers, durability
//! across a restart, retention and gap notices, refusals that store nothing,
//! tokens, WebSocket publishing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, SqliteConnection};
use streamgauge_server::store::{Append, DELETE_CHUNK};
use streamgauge_server::{Config, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::{self, Message};

use self::slow::Slow;
use crate::support::{
    self, Backend, Client, Database, End, Item, Metrics, TestServer, Transport, within,
};

mod slow;

on_both_databases!(
    every_acknowledged_event_reaches_resuming_subscribers_exactly_once,
    a_slow_subscriber_delays_no_one_and_catches_up_without_loss,
    a_slow_subscriber_under_the_disconnect_policy_is_closed_and_resumes,
    acknowledged_events_survive_a_restart_and_resume_across_it,
    retention_by_count_is_announced_as_a_gap_before_the_rest,
    retention_by_count_trims_a_topic_far_over_the_limit_in_chunks,
    retention_by_age_is_announced_as_a_gap,
    where_a_subscription_starts,
    bad_requests_are_refused_precisely_and_store_nothing,
    tokens_guard_publishing_and_reading,
    websocket_subscribers_publish_and_get_acknowledgements,
    a_hole_inside_the_history_is_announced_not_skipped,
);

async fn server(backend: Backend, config: Config) -> (TestServer, Database) {
    let database = Database::fresh(backend).await;
    let server = TestServer::start_on(config, &database).await;
    (server, database)
}

fn seq(event: &Value) -> u64 {
    event["seq"].as_u64().expect("a seq")
}

/// Disconnect/resume cycles each subscriber makes while publishing goes on.
const CYCLES: u64 = 60;

/// Subscribers per transport: well over 100 resumes per transport.
const RESUMERS: usize = 2;

/// A subscriber that leaves and resumes, and what it saw.
struct Resumer {
    transport: Transport,
    /// Every event, in the order received.
    events: Vec<Value>,
    /// Its subscriptions: the first one, then resumes.
    opened: u64,
    /// Resumes during which the acknowledged head moved: the publish count
    /// grew between leaving and the new stream being open.
    while_publishing: u64,
}

impl Resumer {
    /// Resumes after the last event received (subscribes the first time)
    /// and reads `take` events, each the one after the last: no gap, no
    /// duplicate. `acked` counts the publishes acknowledged so far.
    async fn resume_and_read(&mut self, server: &TestServer, acked: &AtomicU64, take: u64) {
        let (transport, cursor) = (self.transport, self.events.len() as u64);
        let before = acked.load(Ordering::SeqCst);
        let mut client = resume(server, transport, "orders", cursor, self.opened % 2 == 1).await;
        if self.opened > 0 && acked.load(Ordering::SeqCst) > before {
            self.while_publishing += 1;
        }
        self.opened += 1;
        for _ in 0..take {
            let event = client.next_event().await;
            assert_eq!(
                seq(&event),
                self.events.len() as u64 + 1,
                "{transport:?}: after resuming at {cursor}"
            );
            self.events.push(event);
        }
    }
}

/// Opens `topic` on `transport` to resume after `cursor`. SSE resumes
/// alternately by `?since=` and, as an `EventSource` does, by the
/// `Last-Event-ID` header, which must win over the stale `?since=0` of the
/// first URL (were it ignored, the events would come twice).
async fn resume(
    server: &TestServer,
    transport: Transport,
    topic: &str,
    cursor: u64,
    by_header: bool,
) -> Client {
    if transport == Transport::Sse && by_header {
        let last = cursor.to_string();
        let path = format!("topics/{topic}?since=0");
        server
            .open_with(transport, &path, &[("Last-Event-ID", &last)])
            .await
    } else {
        server
            .open(transport, &format!("topics/{topic}?since={cursor}"))
            .await
    }
}

/// Subscribes and resumes [`CYCLES`] times, reading a few events each time,
/// while `acked` grows; reports on `cycled`, then, once the final count of
/// publishes arrives on `total`, resumes once more and reads up to it.
async fn resume_in_cycles(
    server: Arc<TestServer>,
    transport: Transport,
    acked: Arc<AtomicU64>,
    cycled: mpsc::Sender<()>,
    mut total: watch::Receiver<Option<u64>>,
) -> Resumer {
    let mut resumer = Resumer {
        transport,
        events: Vec::new(),
        opened: 0,
        while_publishing: 0,
    };
    for _ in 0..CYCLES {
        resumer
            .resume_and_read(&server, &acked, fastrand::u64(1..=8))
            .await;
    }
    cycled.send(()).await.expect("the test waits");
    let total = within("the final count", total.wait_for(Option::is_some))
        .await
        .expect("the test sends it")
        .expect("waited for");
    let rest = total - resumer.events.len() as u64;
    resumer.resume_and_read(&server, &acked, rest).await;
    resumer
}

async fn every_acknowledged_event_reaches_resuming_subscribers_exactly_once(backend: Backend) {
    const PUBLISHERS: u64 = 4;
    let (server, _db) = server(backend, support::config()).await;
    let server = Arc::new(server);
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (cycled_tx, mut cycled) = mpsc::channel(1);
    let (total_tx, total) = watch::channel(None);
    let subscribers: Vec<_> = Transport::BOTH
        .into_iter()
        .flat_map(|transport| [transport; RESUMERS])
        .map(|transport| {
            tokio::spawn(resume_in_cycles(
                Arc::clone(&server),
                transport,
                Arc::clone(&acked),
                cycled_tx.clone(),
                total.clone(),
            ))
        })
        .collect();
    // Publishing goes on until every subscriber has made its cycles.
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (server, acked, stop) =
                (Arc::clone(&server), Arc::clone(&acked), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut published = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = json!({ "publisher": p, "i": i });
                    published.push((server.publish("orders", &body).await, body));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                published
            })
        })
        .collect();
    drop(cycled_tx);
    for _ in &subscribers {
        let cycled = within("the subscribers' cycles", cycled.recv()).await;
        cycled.expect("every subscriber made its cycles");
    }
    stop.store(true, Ordering::SeqCst);

    let mut published = BTreeMap::new();
    for publisher in publishers {
        for (seq, body) in within("a publisher to stop", publisher).await.unwrap() {
            assert!(
                published.insert(seq, body).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
    }
    let last = published.len() as u64;
    assert_eq!(
        published.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    total_tx.send_replace(Some(last));
    let mut resumes = BTreeMap::<&str, (u64, u64)>::new();
    for subscriber in subscribers {
        let resumed = within("a subscriber to read every event", subscriber)
            .await
            .unwrap();
        // Each event once, in order, as acknowledged.
        let seqs: Vec<u64> = resumed.events.iter().map(seq).collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "{:?}",
            resumed.transport
        );
        for event in &resumed.events {
            assert_eq!(
                event["data"],
                published[&seq(event)],
                "payload of seq {}",
                seq(event)
            );
            assert!(event["pts"].as_u64().unwrap() <= event["ts"].as_u64().unwrap());
        }
        let count = resumes.entry(resumed.transport.label()).or_default();
        count.0 += resumed.opened - 1;
        count.1 += resumed.while_publishing;
    }
    for (transport, (resumes, while_publishing)) in resumes {
        assert!(resumes >= 100, "{transport}: only {resumes} resumes");
        assert!(
            while_publishing > 0,
            "{transport}: no resume opened while publishes were acknowledged"
        );
        eprintln!(
            "{transport}: {resumes} resumes, {while_publishing} while the head moved; {last} events"
        );
    }
}

/// Payload of `pad` bytes and more, numbered `i`.
fn padded(i: u64, pad: usize) -> Value {
    json!({ "i": i, "pad": "p".repeat(pad) })
}

/// Payload large enough that a few hundred events overflow the socket
/// buffers of a reader that does not read.
fn bulky(i: u64) -> Value {
    padded(i, 32 * 1024)
}

const BULK: u64 = 600;

fn small_queue() -> Config {
    let mut config = support::config();
    config.queue.max_events = 16;
    config
}

/// The slow-subscriber test's events: large, so the publisher writes many
/// megabytes a second.
const SLOW_PAD: usize = 64 * 1024;

/// The most events the publisher writes waiting for the slow subscriber
/// to overflow: some 20 MB, several times what the buffers in between hold.
const SLOW_MAX: u64 = 300;

/// A sanity bound on the fast subscribers' publish-to-receive latency
/// (p99) and on each acknowledgement, generous for a debug build on a busy
/// machine. Had the slow subscriber held them back, they would wait as it
/// does: seconds (its backlog of several MB, read at 0.8 MB/s).
const BOUND: Duration = Duration::from_millis(500);

/// Whether `event` is the publisher's last.
fn is_last(event: &Value) -> bool {
    event["data"]["last"] == json!(true)
}

/// Reads events through the publisher's last.
async fn read_slowly(mut slow: Slow) -> Vec<Value> {
    let mut events = Vec::new();
    for _ in 0..=SLOW_MAX {
        let event = slow.next_event().await;
        let last = is_last(&event);
        events.push(event);
        if last {
            return events;
        }
    }
    panic!("more than {SLOW_MAX} events before the last");
}

/// Reads events as they come, through the publisher's last; returns their
/// seqs and each one's publish-to-receive latency.
async fn read_timing(mut client: Client) -> (Vec<u64>, Vec<Duration>) {
    let (mut seqs, mut latencies) = (Vec::new(), Vec::new());
    for _ in 0..=SLOW_MAX {
        let event = client.next_event().await;
        let pts = event["pts"].as_u64().expect("a pts");
        let now = support::now_micros();
        latencies.push(Duration::from_micros(now.saturating_sub(pts)));
        seqs.push(seq(&event));
        if is_last(&event) {
            return (seqs, latencies);
        }
    }
    panic!("more than {SLOW_MAX} events before the last");
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

fn catch_ups(metrics: &Metrics) -> f64 {
    metrics.get("streamgauge_slow_consumers_total{action=\"catch_up\"}")
}

/// Publishes large events to `topic` until the catch-ups counted grow past
/// `before` (checked every ten), then a last, small one; returns how many
/// in all and the longest any took to be acknowledged. Fails if no
/// subscriber overflows.
async fn publish_until_a_catch_up(
    server: &TestServer,
    topic: &str,
    before: f64,
) -> (u64, Duration) {
    let mut slowest = Duration::ZERO;
    for i in 1..=SLOW_MAX {
        let sent = Instant::now();
        assert_eq!(server.publish(topic, &padded(i, SLOW_PAD)).await, i);
        slowest = slowest.max(sent.elapsed());
        if i % 10 == 0 && catch_ups(&server.metrics().await) > before {
            let last = server
                .publish(topic, &json!({ "i": i + 1, "last": true }))
                .await;
            return (last, slowest);
        }
    }
    panic!("{topic}: no catch-up after {SLOW_MAX} events of {SLOW_PAD} B");
}

async fn a_slow_subscriber_delays_no_one_and_catches_up_without_loss(backend: Backend) {
    let mut config = small_queue();
    config.max_publish_bytes = 2 * SLOW_PAD;
    let (server, _db) = server(backend, config).await;
    // One slow transport at a time, so that each is seen to overflow.
    for slow_transport in Transport::BOTH {
        let what = format!("slow {slow_transport:?}");
        let topic = format!("feed-{}", slow_transport.label());
        let before = catch_ups(&server.metrics().await);
        let unpaced = Arc::new(AtomicBool::new(false));
        let path = format!("topics/{topic}?since=0&overflow=catch-up");
        let slow = Slow::open(&server, slow_transport, &path, Arc::clone(&unpaced)).await;
        let slow = tokio::spawn(read_slowly(slow));
        // The fast subscribers are disconnected if they ever overflow:
        // every catch-up counted is the slow one's.
        let mut fast = Vec::new();
        for transport in Transport::BOTH {
            let path = format!("topics/{topic}?since=0&overflow=disconnect");
            let client = server.open(transport, &path).await;
            fast.push((transport, tokio::spawn(read_timing(client))));
        }
        let started = Instant::now();
        let (last, slowest_ack) = publish_until_a_catch_up(&server, &topic, before).await;
        eprintln!(
            "{what}: {last} events in {:?}, slowest ack {slowest_ack:?}",
            started.elapsed()
        );
        assert!(
            slowest_ack < BOUND,
            "{what}: a publish took {slowest_ack:?}"
        );
        // The slow subscriber lagged, paced, through the whole run and was
        // switched to catch-up; it may now read the rest at full speed, to
        // keep the test short.
        unpaced.store(true, Ordering::SeqCst);
        for (transport, reader) in fast {
            let (seqs, latencies) = within("a fast subscriber", reader).await.unwrap();
            assert_eq!(
                seqs,
                (1..=last).collect::<Vec<_>>(),
                "{what}: fast {transport:?}"
            );
            let p99 = p99(latencies);
            eprintln!("{what}: fast {transport:?} p99 {p99:?}");
            assert!(p99 < BOUND, "{what}: fast {transport:?} p99 {p99:?}");
        }
        // The slow one gets everything, in order, with no gap notice.
        let events = within("the slow subscriber", slow).await.unwrap();
        let got: Vec<_> = events
            .iter()
            .map(|e| (seq(e), e["data"]["i"].clone()))
            .collect();
        let wanted: Vec<_> = (1..=last).map(|i| (i, json!(i))).collect();
        assert_eq!(got, wanted, "{what}");
        assert_eq!(
            server
                .metrics()
                .await
                .get("streamgauge_slow_consumers_total{action=\"disconnect\"}"),
            0.0,
            "{what}: a fast subscriber overflowed"
        );
    }
}

async fn a_slow_subscriber_under_the_disconnect_policy_is_closed_and_resumes(backend: Backend) {
    let (server, _db) = server(backend, small_queue()).await;
    let mut slow: Vec<_> = Vec::new();
    for transport in Transport::BOTH {
        let path = "topics/feed?since=0&overflow=disconnect";
        slow.push((transport, server.open(transport, path).await));
    }
    // The slow subscribers read one event for every 50 published: they
    // fall behind for sure, and the stream can still end with a close
    // frame they read (one that reads nothing at all can only be dropped,
    // by the write timeout).
    for i in 1..=BULK {
        server.publish("feed", &bulky(i)).await;
        if i % 50 == 0 {
            for (_, client) in &mut slow {
                client.next_event().await;
            }
        }
    }
    for (transport, mut client) in slow {
        let (events, end) = client.drain().await;
        let read = BULK / 50 + events.len() as u64;
        let seqs: Vec<u64> = events.iter().map(seq).collect();
        assert_eq!(
            seqs,
            (BULK / 50 + 1..=read).collect::<Vec<_>>(),
            "{transport:?}"
        );
        assert!(read < BULK, "{transport:?} never fell behind");
        let expected = match transport {
            Transport::Sse => End::Notice("lagged".to_owned()),
            Transport::Ws => End::Close(1008),
        };
        assert_eq!(end, expected, "{transport:?}");
        // Resuming from the last seq received gets the rest.
        let mut resumed = server
            .open(transport, &format!("topics/feed?since={read}"))
            .await;
        for expected in read + 1..=BULK {
            assert_eq!(seq(&resumed.next_event().await), expected);
        }
    }
    let metrics = server
        .wait_for("both disconnects to be counted", |m| {
            m.disconnects("sse", "lagged") == 1.0 && m.disconnects("ws", "lagged") == 1.0
        })
        .await;
    assert_eq!(
        metrics.get("streamgauge_slow_consumers_total{action=\"disconnect\"}"),
        2.0
    );
}
async fn acknowledged_events_survive_a_restart_and_resume_across_it(backend: Backend) {
    let database = Database::fresh(backend).await;
    let first = TestServer::start_on(support::config(), &database).await;
    for i in 1..=50 {
        assert_eq!(first.publish("ledger", &json!({ "i": i })).await, i);
    }
    first.stop().await;

    let second = TestServer::start_on(support::config(), &database).await;
    for transport in Transport::BOTH {
        let mut client = second.open(transport, "topics/ledger?since=0").await;
        for i in 1..=50 {
            let event = client.next_event().await;
            assert_eq!((seq(&event), &event["data"]), (i, &json!({ "i": i })));
        }
    }
    // The sequence continues where it stopped, and resuming spans the restart.
    assert_eq!(second.publish("ledger", &json!({ "i": 51 })).await, 51);
    let mut client = second.open(Transport::Sse, "topics/ledger?since=49").await;
    assert_eq!(seq(&client.next_event().await), 50);
    assert_eq!(seq(&client.next_event().await), 51);
}

fn gap(from: u64, to: u64, reason: &str) -> Item {
    Item::Gap(json!({ "from": from, "to": to, "reason": reason }))
}

async fn retention_by_count_is_announced_as_a_gap_before_the_rest(backend: Backend) {
    let mut config = support::config();
    config.retention.max_events = 10;
    config.retention_interval = Duration::from_millis(50);
    let (server, _db) = server(backend, config).await;
    for i in 1..=30 {
        server.publish("news", &json!(i)).await;
    }
    server
        .wait_for("retention to keep the newest 10 events", |m| {
            m.get("streamgauge_retention_deleted_total") == 20.0
        })
        .await;
    for transport in Transport::BOTH {
        let mut client = server.open(transport, "topics/news?since=0").await;
        assert_eq!(
            client.next_item().await,
            gap(1, 20, "retention"),
            "{transport:?}"
        );
        for expected in 21..=30 {
            assert_eq!(seq(&client.next_event().await), expected);
        }
        // Resuming inside what is kept needs no notice.
        let mut client = server.open(transport, "topics/news?since=25").await;
        assert_eq!(seq(&client.next_event().await), 26);
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("streamgauge_gap_notices_total{reason=\"retention\"}"),
        2.0
    );
}

/// Appends `count` events (`data` 1, 2, …) to `topic` straight into the
/// store, in transactions of a thousand.
async fn fill(database: &Database, topic: &str, count: u64) {
    let mut options = support::config().store;
    options.url = database.url().to_owned();
    let store = Store::open(&options).await.expect("opening the store");
    let pts = support::now_micros();
    let data: Vec<String> = (1..=count).map(|i| i.to_string()).collect();
    for chunk in data.chunks(1000) {
        let batch: Vec<Append<'_>> = chunk
            .iter()
            .map(|data| Append { topic, pts, data })
            .collect();
        store.append(&batch).await.expect("appending");
    }
    store.close().await;
}

async fn retention_by_count_trims_a_topic_far_over_the_limit_in_chunks(backend: Backend) {
    const KEEP: u64 = 10;
    // Three whole chunks and a partial one: the trim must not stop early.
    let over = 3 * DELETE_CHUNK + 7;
    let database = Database::fresh(backend).await;
    fill(&database, "big", over + KEEP).await;
    let mut config = support::config();
    config.retention.max_events = KEEP;
    config.retention_interval = Duration::from_millis(50);
    let server = TestServer::start_on(config, &database).await;
    server
        .wait_for("retention to keep exactly the newest 10 events", |m| {
            m.get("streamgauge_retention_deleted_total") >= over as f64
        })
        .await;
    let mut client = server.open(Transport::Sse, "topics/big?since=0").await;
    assert_eq!(client.next_item().await, gap(1, over, "retention"));
    for expected in over + 1..=over + KEEP {
        let event = client.next_event().await;
        assert_eq!((seq(&event), &event["data"]), (expected, &json!(expected)));
    }
    // Trimmed already, the topic is left alone; one more event over the
    // count is the one more deleted.
    server.publish("big", &json!("next")).await;
    server
        .wait_for("retention to delete the one event over the count", |m| {
            m.get("streamgauge_retention_deleted_total") >= (over + 1) as f64
        })
        .await;
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("streamgauge_retention_deleted_total"),
        (over + 1) as f64
    );
    let mut client = server.open(Transport::Ws, "topics/big?since=0").await;
    assert_eq!(client.next_item().await, gap(1, over + 1, "retention"));
    assert_eq!(seq(&client.next_event().await), over + 2);
}

async fn retention_by_age_is_announced_as_a_gap(backend: Backend) {
    let mut config = support::config();
    config.retention.max_age = Duration::from_millis(1);
    config.retention_interval = Duration::from_millis(50);
    let (server, _db) = server(backend, config).await;
    for i in 1..=5 {
        server.publish("ticks", &json!(i)).await;
    }
    server
        .wait_for("retention to delete events older than 1 ms", |m| {
            m.get("streamgauge_retention_deleted_total") >= 5.0
        })
        .await;
    let mut client = server.open(Transport::Ws, "topics/ticks?since=0").await;
    assert_eq!(client.next_item().await, gap(1, 5, "retention"));
    // The live tail still carries what retention will delete later.
    server.publish("ticks", &json!(6)).await;
    assert_eq!(seq(&client.next_event().await), 6);
}

async fn where_a_subscription_starts(backend: Backend) {
    let (server, _db) = server(backend, support::config()).await;
    for i in 1..=3 {
        server.publish("t", &json!(i)).await;
    }
    for (head, transport) in (3..).zip(Transport::BOTH) {
        // Without `since`, only new events.
        let mut live = server.open(transport, "topics/t").await;
        // Beyond the head: a notice, then the stream continues from the head.
        let mut ahead = server
            .open(transport, &format!("topics/t?since={}", head + 6))
            .await;
        assert_eq!(
            ahead.next_item().await,
            gap(head + 1, head + 6, "beyond_head"),
            "{transport:?}"
        );
        let next = server.publish("t", &json!("new")).await;
        assert_eq!(next, head + 1);
        assert_eq!(seq(&live.next_event().await), next, "{transport:?}");
        assert_eq!(seq(&ahead.next_event().await), next, "{transport:?}");
    }
    // An EventSource resuming sends Last-Event-ID, which beats its stale URL.
    let mut resumed = server
        .open_with(
            Transport::Sse,
            "topics/t?since=0",
            &[("Last-Event-ID", "2")],
        )
        .await;
    assert_eq!(seq(&resumed.next_event().await), 3);
}

/// The message of a JSON error answer, which must be the whole answer.
fn error_message(answer: &Value) -> &str {
    let message = answer["error"].as_str();
    assert!(
        message.is_some() && answer.as_object().is_some_and(|o| o.len() == 1),
        "not a JSON error: {answer}"
    );
    message.unwrap_or_default()
}

/// A WebSocket handshake on `/ws/{path}` that the server refuses before
/// upgrading: its status and JSON answer.
async fn ws_refusal(server: &TestServer, path: &str) -> (u16, Value) {
    let url = format!("ws://{}/ws/{path}", server.addr);
    match within("a WebSocket handshake", connect_async(&url)).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let answer = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("/ws/{path}: the answer is not JSON ({e})"));
            (response.status().as_u16(), answer)
        }
        other => panic!("/ws/{path}: expected a refusal, got {other:?}"),
    }
}

/// `POST /topics/{topic}/events` with `chunks` as a chunked body (no
/// `Content-Length`): the status and the JSON answer.
async fn post_chunked(server: &TestServer, topic: &str, chunks: &[&str]) -> (u16, Value) {
    let mut request = format!(
        "POST /topics/{topic}/events HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        server.addr
    );
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let mut stream = within("a connection", TcpStream::connect(server.addr))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("the answer", stream.read_to_end(&mut response))
        .await
        .expect("reading the answer");
    let response = String::from_utf8(response).expect("a UTF-8 answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let answer = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    (status, answer)
}

async fn bad_requests_are_refused_precisely_and_store_nothing(backend: Backend) {
    let mut config = support::config();
    config.max_publish_bytes = 1024;
    let (server, _db) = server(backend, config).await;
    let long_name = "n".repeat(201);
    for (topic, why) in [
        ("a%20b", "' ' is not allowed (only A-Z a-z 0-9 . _ - :)"),
        ("caf%C3%A9", "'é' is not allowed (only A-Z a-z 0-9 . _ - :)"),
        (long_name.as_str(), "must be 1 to 200 characters, not 201"),
    ] {
        let rule = format!("invalid parameter `topic`: {why}");
        let (status, answer) = server.try_publish(topic, "1", None).await;
        assert_eq!(
            (status, error_message(&answer)),
            (400, rule.as_str()),
            "POST {topic}"
        );
        let response = server.get(&format!("/sse/topics/{topic}")).await;
        assert_eq!(response.status(), 400, "/sse/topics/{topic}");
        let answer: Value = response.json().await.expect("a JSON answer");
        assert_eq!(error_message(&answer), rule, "/sse/topics/{topic}");
        let (status, answer) = ws_refusal(&server, &format!("topics/{topic}")).await;
        assert_eq!(
            (status, error_message(&answer)),
            (400, rule.as_str()),
            "/ws/topics/{topic}"
        );
    }
    let too_big = format!("\"{}\"", "x".repeat(1024));
    for (body, status, says) in [
        (too_big.as_str(), 413, "limit of 1024 bytes"),
        ("{\"a\":", 400, "not valid JSON"),
        ("", 400, "not valid JSON"),
        ("{} trailing", 400, "not valid JSON"),
    ] {
        let (got, answer) = server.try_publish("t", body.to_owned(), None).await;
        assert_eq!(got, status, "{body:?}: {answer}");
        assert!(error_message(&answer).contains(says), "{body:?}: {answer}");
    }
    // Chunked, with no length declared: refused once the body passes it.
    let half = format!("\"{}", "x".repeat(600));
    let rest = format!("{}\"", "x".repeat(600));
    let (status, answer) = post_chunked(&server, "t", &[&half, &rest]).await;
    assert_eq!(
        (status, error_message(&answer)),
        (
            413,
            "body is over the limit of 1024 bytes; nothing was stored"
        )
    );
    // Over WebSocket: a malformed frame closes 1007, an oversized body 1009.
    for (frame, code) in [("not json", 1007), ("{\"no\":\"publish\"}", 1007)] {
        let mut client = server.open(Transport::Ws, "topics/t").await;
        client.send(Message::text(frame)).await;
        assert_eq!(client.drain().await.1, End::Close(code), "{frame}");
    }
    let mut client = server.open(Transport::Ws, "topics/t").await;
    client
        .send(Message::text(format!("{{\"publish\":{too_big}}}")))
        .await;
    assert_eq!(client.drain().await.1, End::Close(1009));

    // Nothing was stored: the first good publish is seq 1.
    assert_eq!(server.publish("t", &json!("good")).await, 1);
    assert_eq!(
        server
            .metrics()
            .await
            .get("streamgauge_events_published_total"),
        1.0
    );
}

/// Reads a WebSocket stream up to its close frame: its code and reason.
async fn close_frame(client: Client) -> (u16, String) {
    let Client::Ws(mut ws) = client else {
        panic!("only a WebSocket has close frames");
    };
    loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn tokens_guard_publishing_and_reading(backend: Backend) {
    let mut config = support::config();
    config.publish_tokens = vec!["pub-1".parse().unwrap(), "pub-2".parse().unwrap()];
    config.read_rules = vec!["private.*=read-1".parse().unwrap()];
    let (server, _db) = server(backend, config).await;

    let missing = "publishing requires a bearer token";
    let wrong = "the bearer token is not valid for publishing";
    for (token, status, says) in [(None, 401, missing), (Some("pub-3"), 403, wrong)] {
        let (got, answer) = server.try_publish("t", "1", token).await;
        assert_eq!((got, error_message(&answer)), (status, says), "{token:?}");
    }
    let (status, answer) = server.try_publish("t", "1", Some("pub-2")).await;
    assert_eq!((status, answer["seq"].as_u64()), (201, Some(1)));

    // Publishing from a WebSocket without a valid token closes it with 1008.
    for path in ["topics/t", "topics/t?token=wrong"] {
        let mut client = server.open(Transport::Ws, path).await;
        client.send(Message::text(r#"{"publish":2}"#)).await;
        assert_eq!(
            close_frame(client).await,
            (1008, "publishing requires a valid bearer token".to_owned()),
            "{path}"
        );
    }
    let mut client = server.open(Transport::Ws, "topics/t?token=pub-1").await;
    client.send(Message::text(r#"{"publish":2}"#)).await;
    assert_eq!(
        client.next_item().await,
        Item::Reply(json!({ "ack": { "seq": 2 } }))
    );

    // Reading a guarded topic, on both transports: refused before any
    // stream starts (on WebSocket, before the upgrade).
    let missing = "reading this topic requires a bearer token";
    let wrong = "the bearer token is not valid for reading this topic";
    let http = server.http();
    for (token, status, says) in [(None, 401, missing), (Some("pub-1"), 403, wrong)] {
        let mut request = http.get(server.url("/sse/topics/private.x"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = within("a refusal", request.send()).await.unwrap();
        assert_eq!(response.status(), status, "SSE {token:?}");
        let answer: Value = response.json().await.expect("a JSON answer");
        assert_eq!(error_message(&answer), says, "SSE {token:?}");
        let path = match token {
            Some(token) => format!("topics/private.x?token={token}"),
            None => "topics/private.x".to_owned(),
        };
        let (got, answer) = ws_refusal(&server, &path).await;
        assert_eq!(
            (got, error_message(&answer)),
            (status, says),
            "WebSocket {token:?}"
        );
    }
    server
        .open_with(
            Transport::Sse,
            "topics/private.x",
            &[("Authorization", "Bearer read-1")],
        )
        .await;
    server
        .open(Transport::Ws, "topics/private.x?token=read-1")
        .await;
    assert_eq!(
        server
            .metrics()
            .await
            .get("streamgauge_events_published_total"),
        2.0
    );
}

async fn websocket_subscribers_publish_and_get_acknowledgements(backend: Backend) {
    let (server, _db) = server(backend, support::config()).await;
    let mut client = server.open(Transport::Ws, "topics/chat?since=0").await;
    // 20 KB: many times the server's WebSocket read buffer (1 KiB).
    let text = "hi".repeat(10_000);
    client
        .send(Message::text(
            json!({ "publish": { "text": text }, "id": "m-1" }).to_string(),
        ))
        .await;
    let mut items = [client.next_item().await, client.next_item().await];
    items.sort_by_key(|item| matches!(item, Item::Event(_)));
    assert_eq!(
        items[0],
        Item::Reply(json!({ "ack": { "seq": 1, "id": "m-1" } }))
    );
    let Item::Event(event) = &items[1] else {
        panic!("expected the published event, got {:?}", items[1]);
    };
    assert_eq!((seq(event), &event["data"]), (1, &json!({ "text": text })));
    // Other subscribers see it too.
    let mut other = server.open(Transport::Sse, "topics/chat?since=0").await;
    assert_eq!(other.next_event().await["data"], json!({ "text": text }));
}

/// Deletes events `seqs` of `topic` behind the server's back, as a
/// retention run or an operator would.
async fn delete_events(database: &Database, backend: Backend, topic: &str, seqs: [i64; 2]) {
    let sql = "DELETE FROM events WHERE topic = $1 AND seq IN ($2, $3)";
    let deleted = match backend {
        Backend::Sqlite => {
            let mut db = SqliteConnection::connect(database.url()).await.unwrap();
            let query = sqlx::query(sql).bind(topic).bind(seqs[0]).bind(seqs[1]);
            query.execute(&mut db).await.unwrap().rows_affected()
        }
        Backend::Postgres => {
            let mut db = PgConnection::connect(database.url()).await.unwrap();
            let query = sqlx::query(sql).bind(topic).bind(seqs[0]).bind(seqs[1]);
            query.execute(&mut db).await.unwrap().rows_affected()
        }
    };
    assert_eq!(deleted, 2);
}

async fn a_hole_inside_the_history_is_announced_not_skipped(backend: Backend) {
    let database = Database::fresh(backend).await;
    let server = TestServer::start_on(support::config(), &database).await;
    for i in 1..=10 {
        server.publish("h", &json!(i)).await;
    }
    delete_events(&database, backend, "h", [4, 5]).await;
    for transport in Transport::BOTH {
        let mut client = server.open(transport, "topics/h?since=0").await;
        for expected in 1..=3 {
            assert_eq!(seq(&client.next_event().await), expected);
        }
        assert_eq!(
            client.next_item().await,
            gap(4, 5, "retention"),
            "{transport:?}"
        );
        for expected in 6..=10 {
            assert_eq!(seq(&client.next_event().await), expected);
        }
    }
}
