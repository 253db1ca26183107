//! Slow subscribers: one that reads slowly is caught up from the store and
//! delays no one; under the disconnect policy it is closed and resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use streamgauge_server::Config;
use tokio::time::Instant;

use super::paced::Slow;
use super::{seq, server};
use crate::support::{self, Backend, Client, End, Metrics, TestServer, Transport, within};

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

pub(super) async fn a_slow_subscriber_delays_no_one_and_catches_up_without_loss(backend: Backend) {
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

pub(super) async fn a_slow_subscriber_under_the_disconnect_policy_is_closed_and_resumes(
    backend: Backend,
) {
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
