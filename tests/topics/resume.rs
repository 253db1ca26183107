//! Resume and exactly-once: every acknowledged event reaches subscribers
//! that leave and resume while publishing goes on, once each and in order;
//! acknowledged events survive a restart; where a subscription starts;
//! publishing over a WebSocket, acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{gap, seq, server};
use crate::support::{self, Backend, Client, Database, Item, TestServer, Transport, within};

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

pub(super) async fn every_acknowledged_event_reaches_resuming_subscribers_exactly_once(
    backend: Backend,
) {
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

pub(super) async fn acknowledged_events_survive_a_restart_and_resume_across_it(backend: Backend) {
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

pub(super) async fn where_a_subscription_starts(backend: Backend) {
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

pub(super) async fn websocket_subscribers_publish_and_get_acknowledgements(backend: Backend) {
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
