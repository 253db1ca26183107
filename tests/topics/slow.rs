//! Slow subscribers: one that reads slowly is caught up from the store and
//! delays no one; under the disconnect policy it is closed and resumes.
//!
//! Each must fall behind by more than everything between the server's queue
//! and its own socket can hold. How much that is depends on the host (its
//! `net.ipv4.tcp_rmem` and `tcp_wmem`), so the volume published is derived
//! from the sizes in force ([`buffers`]): the slow readers' receive buffers
//! are fixed, and read back; the server's send buffer is bounded by
//! `tcp_wmem`'s maximum. The readers read a share of what is published,
//! not so much per second, so that they fall behind however fast or slow
//! the publisher is.

use std::time::Duration;

use serde_json::{Value, json};
use streamgauge_server::Config;
use streamgauge_server::protocol::ENVELOPE_ALLOWANCE;
use tokio::time::Instant;

use super::paced::{Allowance, Paced, SLOW_READ};
use super::{seq, server};
use crate::support::buffers::{self, SLOW_READER_WINDOW};
use crate::support::{self, Backend, Client, End, Metrics, TestServer, Transport, within};

/// Payload of `pad` bytes and more, numbered `i`.
fn padded(i: u64, pad: usize) -> Value {
    json!({ "i": i, "pad": "p".repeat(pad) })
}

/// The disconnect-policy test's payload: 32 KiB and more.
fn bulky(i: u64) -> Value {
    padded(i, 32 * 1024)
}

/// The smallest body of the events `payload` makes (the first: its number
/// has the fewest digits), and what such an event costs in a queue.
fn event_size(payload: fn(u64) -> Value) -> (u64, usize) {
    let body = payload(1).to_string().len();
    (body as u64, body + ENVELOPE_ALLOWANCE)
}

/// Events to publish so that a reader that may read one byte in `share`
/// of those published is behind by more than `behind` bytes, with
/// `margin` events more.
fn to_fall_behind(behind: u64, share: u64, body: u64, margin: u64) -> u64 {
    let published = (behind * share).div_ceil(share - 1);
    published.div_ceil(body) + margin
}

/// The disconnect-policy test's slow subscribers read one event for every
/// this many published.
const READ_ONE_IN: u64 = 50;

fn small_queue() -> Config {
    let mut config = support::config();
    config.queue.max_events = 16;
    config
}

/// The slow-subscriber test's events: large, so the publisher writes many
/// megabytes a second.
const SLOW_PAD: usize = 64 * 1024;

fn slow_payload(i: u64) -> Value {
    padded(i, SLOW_PAD)
}

/// The slow subscriber may have read at most one byte in this many of
/// those published (and the [`SLOW_READ`] it starts with, for the response
/// head): with the fast ones reading everything, the publisher writes
/// several times what it reads, whatever its speed.
const SLOW_SHARE: u64 = 4;

/// Publishes between two looks at the live subscribers.
const CHECK_EVERY: u64 = 10;

/// The most events the publisher writes waiting for the slow subscriber,
/// whose receive buffer is `recv_buffer` bytes, to overflow: enough to put
/// it behind by more than the buffers in between can hold, and by one look
/// at the live subscribers more.
fn slow_max(config: &Config, transport: Transport, recv_buffer: u64) -> u64 {
    let (body, cost) = event_size(slow_payload);
    let in_between = buffers::in_between(config, transport, cost, recv_buffer);
    let behind = in_between + SLOW_READ as u64;
    to_fall_behind(behind, SLOW_SHARE, body, CHECK_EVERY + 1)
}

/// A sanity bound on the fast subscribers' publish-to-receive latency
/// (p99) and on each acknowledgement, generous for a debug build on a busy
/// machine. Had the slow subscriber held them back, they would wait as it
/// does: seconds (its backlog of several MB, read at 0.8 MB/s).
const BOUND: Duration = Duration::from_millis(500);

/// Whether `event` is the publisher's last.
fn is_last(event: &Value) -> bool {
    event["data"]["last"] == json!(true)
}

/// Reads events through the publisher's last, at most `max` and the last.
async fn read_slowly(mut slow: Client, max: u64) -> Vec<Value> {
    let mut events = Vec::new();
    for _ in 0..=max {
        let event = slow.next_event().await;
        let last = is_last(&event);
        events.push(event);
        if last {
            return events;
        }
    }
    panic!("more than {max} events before the last");
}

/// Reads events as they come, through the publisher's last (at most `max`
/// and the last); returns their seqs and each one's publish-to-receive
/// latency.
async fn read_timing(mut client: Client, max: u64) -> (Vec<u64>, Vec<Duration>) {
    let (mut seqs, mut latencies) = (Vec::new(), Vec::new());
    for _ in 0..=max {
        let event = client.next_event().await;
        let pts = event["pts"].as_u64().expect("a pts");
        let now = support::now_micros();
        latencies.push(Duration::from_micros(now.saturating_sub(pts)));
        seqs.push(seq(&event));
        if is_last(&event) {
            return (seqs, latencies);
        }
    }
    panic!("more than {max} events before the last");
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

/// Topic subscribers on the live tail (not catching up from the store).
fn live(metrics: &Metrics) -> f64 {
    metrics.get("streamgauge_topic_live_subscribers")
}

fn catch_ups(metrics: &Metrics) -> f64 {
    metrics.get("streamgauge_slow_consumers_total{action=\"catch_up\"}")
}

/// Publishes large events to `topic` until one of its `live` subscribers
/// has left the live tail (checked every [`CHECK_EVERY`]: the hub hands an
/// overflowing subscriber back at once, while its source counts the
/// catch-up only once its socket takes more), granting the slow
/// subscriber's `allowance` its share of each, then a last, small one;
/// returns how many in all and the longest any took to be acknowledged.
/// Fails if no subscriber overflows within `max` events.
async fn publish_until_one_lags(
    server: &TestServer,
    topic: &str,
    live_before: f64,
    (max, allowance): (u64, &Allowance),
) -> (u64, Duration) {
    let mut slowest = Duration::ZERO;
    for i in 1..=max {
        let sent = Instant::now();
        let event = slow_payload(i);
        assert_eq!(server.publish(topic, &event).await, i);
        slowest = slowest.max(sent.elapsed());
        allowance.grant(event.to_string().len() as u64 / SLOW_SHARE);
        if i % CHECK_EVERY == 0 && live(&server.metrics().await) < live_before {
            let last = server
                .publish(topic, &json!({ "i": i + 1, "last": true }))
                .await;
            return (last, slowest);
        }
    }
    panic!("{topic}: no subscriber overflowed after {max} events of {SLOW_PAD} B");
}

pub(super) async fn a_slow_subscriber_delays_no_one_and_catches_up_without_loss(backend: Backend) {
    let mut config = small_queue();
    config.max_publish_bytes = 2 * SLOW_PAD;
    let (server, _db) = server(backend, config.clone()).await;
    // One slow transport at a time, so that each is seen to overflow.
    for slow_transport in Transport::BOTH {
        server.all_closed().await;
        let what = format!("slow {slow_transport:?}");
        let topic = format!("feed-{}", slow_transport.label());
        let before = catch_ups(&server.metrics().await);
        let allowance = Allowance::new(SLOW_READ as u64);
        let (paced, recv_buffer) = Paced::connect(server.addr, allowance.clone()).await;
        let max = slow_max(&config, slow_transport, recv_buffer);
        let path = format!("topics/{topic}?since=0&overflow=catch-up");
        let slow = Client::open_over(paced, server.addr, slow_transport, &path).await;
        let slow = tokio::spawn(read_slowly(slow, max));
        // The fast subscribers are disconnected if they ever overflow:
        // every catch-up counted is the slow one's.
        let mut fast = Vec::new();
        for transport in Transport::BOTH {
            let path = format!("topics/{topic}?since=0&overflow=disconnect");
            let client = server.open(transport, &path).await;
            fast.push((transport, tokio::spawn(read_timing(client, max))));
        }
        // Each on the live tail before the first publish: one that started
        // behind would be catching up from the store, where a reader as
        // slow as this one stays (it never overflows: the source waits).
        let subscribers = (1 + fast.len()) as f64;
        server
            .wait_for("the subscribers to be live", |m| live(m) == subscribers)
            .await;
        let started = Instant::now();
        let (last, slowest_ack) =
            publish_until_one_lags(&server, &topic, subscribers, (max, &allowance)).await;
        eprintln!(
            "{what}: {last} events (at most {max}) in {:?}, slowest ack {slowest_ack:?}",
            started.elapsed()
        );
        assert!(
            slowest_ack < BOUND,
            "{what}: a publish took {slowest_ack:?}"
        );
        // The slow subscriber lagged, paced, through the whole run and was
        // switched to catch-up; it may now read the rest at full speed, to
        // keep the test short.
        allowance.unlimit();
        server
            .wait_for("the slow subscriber's catch-up to be counted", |m| {
                catch_ups(m) > before
            })
            .await;
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

pub(super) async fn a_slow_subscriber_under_the_disconnect_policy_is_closed_and_resumes(
    backend: Backend,
) {
    let config = small_queue();
    let (server, _db) = server(backend, config.clone()).await;
    let mut slow: Vec<_> = Vec::new();
    let mut recv_buffer = 0;
    for transport in Transport::BOTH {
        let path = "topics/feed?since=0&overflow=disconnect";
        let (stream, in_force) =
            buffers::connect_with_recv_buffer(server.addr, SLOW_READER_WINDOW).await;
        recv_buffer = recv_buffer.max(in_force);
        let client = Client::open_over(stream, server.addr, transport, path).await;
        slow.push((transport, client));
    }
    server
        .wait_for("the subscribers to be live", |m| live(m) == 2.0)
        .await;
    // Behind by more than the buffers in between hold, on either
    // transport, and by one more round of reads: the most to publish.
    let (body, cost) = event_size(bulky);
    let behind = Transport::BOTH
        .map(|transport| buffers::in_between(&config, transport, cost, recv_buffer))
        .into_iter()
        .max()
        .unwrap_or_default();
    let most = to_fall_behind(behind, READ_ONE_IN, body, READ_ONE_IN);
    // The slow subscribers read one event for every 50 published: they
    // fall behind for sure, and the stream can still end with a close
    // frame they read (one that reads nothing at all can only be dropped,
    // by the write timeout). Publishing stops once both have left the
    // live tail: the hub has handed them back, to be closed.
    let mut published = 0;
    while live(&server.metrics().await) > 0.0 {
        assert!(published < most, "no subscriber lagged after {most} events");
        for _ in 0..READ_ONE_IN {
            published += 1;
            server.publish("feed", &bulky(published)).await;
        }
        for (_, client) in &mut slow {
            client.next_event().await;
        }
    }
    eprintln!("both slow subscribers lagged after {published} events (at most {most})");
    for (transport, mut client) in slow {
        let (events, end) = client.drain().await;
        let read = published / READ_ONE_IN + events.len() as u64;
        let seqs: Vec<u64> = events.iter().map(seq).collect();
        assert_eq!(
            seqs,
            (published / READ_ONE_IN + 1..=read).collect::<Vec<_>>(),
            "{transport:?}"
        );
        assert!(read < published, "{transport:?} never fell behind");
        let expected = match transport {
            Transport::Sse => End::Notice("lagged".to_owned()),
            Transport::Ws => End::Close(1008),
        };
        assert_eq!(end, expected, "{transport:?}");
        // Resuming from the last seq received gets the rest.
        let mut resumed = server
            .open(transport, &format!("topics/feed?since={read}"))
            .await;
        for expected in read + 1..=published {
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
