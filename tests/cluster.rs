//! Issue 17, the cluster: several servers (in this process, through the
//! library's `run`) share one real PostgreSQL database, and every event
//! reaches every subscriber on every node once, in `seq` order: with
//! publishers on every node at once, while a node's listening connection
//! is cut off, when a notification is lost, while PostgreSQL restarts,
//! and beside a subscriber that does not read. A database that went back
//! is announced, never waited out. (`kill -9` of a node needs
//! the binary: `server/tests/cluster.rs`.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::support::cluster::{
    Nodes, admin, allow_connections, assert_every_event_once_in_order, resuming_subscriber, seq,
    terminate_listener,
};
use crate::support::{self, Client, Item, Metrics, TestServer, Transport, postgres, within};

/// Publishes `{"p": publisher, "i": i}` for each `i` in `0..count` to
/// `url`, one after the other; returns each acknowledged seq with its body.
async fn publish_many(
    http: reqwest::Client,
    url: String,
    publisher: u64,
    count: u64,
) -> Vec<(u64, Value)> {
    let mut acked = Vec::new();
    for i in 0..count {
        let body = json!({ "p": publisher, "i": i });
        let response = within("a publish", http.post(&url).json(&body).send())
            .await
            .expect("publishing");
        assert_eq!(response.status(), 201, "publisher {publisher}");
        let answer: Value = response.json().await.expect("a JSON answer");
        acked.push((answer["seq"].as_u64().expect("a seq"), body));
    }
    acked
}

/// The remote events a node handed to its fan-out, however they came.
fn remote_events(metrics: &Metrics) -> f64 {
    ["notification", "store"]
        .iter()
        .map(|via| {
            metrics.get(&format!(
                "streamgauge_cluster_remote_events_total{{via=\"{via}\"}}"
            ))
        })
        .sum()
}

fn resyncs(metrics: &Metrics, cause: &str) -> f64 {
    metrics.get(&format!(
        "streamgauge_cluster_resyncs_total{{cause=\"{cause}\"}}"
    ))
}

/// Publishers per node in the concurrent test.
const PUBLISHERS_PER_NODE: u64 = 2;

/// Events each of them publishes.
const PER_PUBLISHER: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_publishing_at_once_deliver_every_event_once_in_order_everywhere() {
    let cluster = Nodes::start(3, support::config()).await;
    let mut subscribers = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for transport in Transport::BOTH {
            let client = node.open(transport, "topics/c?since=0").await;
            subscribers.push((format!("node {n} {transport:?}"), client));
        }
    }
    let mut publishers = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for p in 0..PUBLISHERS_PER_NODE {
            publishers.push(tokio::spawn(publish_many(
                node.http().clone(),
                node.url("/topics/c/events"),
                n as u64 * PUBLISHERS_PER_NODE + p,
                PER_PUBLISHER,
            )));
        }
    }
    let mut acked = BTreeMap::new();
    for publisher in publishers {
        acked.extend(within("the publishers", publisher).await.unwrap());
    }
    let last = acked.len() as u64;
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    for (what, mut client) in subscribers {
        let mut events = Vec::new();
        for _ in 0..last {
            events.push(client.next_event().await);
        }
        assert_every_event_once_in_order(&what, &events, last, &acked);
    }
    // Every event the other nodes committed came from them (counted just
    // after it was fanned out: waited for).
    let remote = (last - PUBLISHERS_PER_NODE * PER_PUBLISHER) as f64;
    for (n, node) in cluster.nodes.iter().enumerate() {
        let what = format!("node {n} to count {remote} remote events");
        let metrics = node.wait_for(&what, |m| remote_events(m) == remote).await;
        // Wake-ups cost one notification per commit, not one per event.
        assert_eq!(
            metrics.get("streamgauge_cluster_notifications_sent_total"),
            metrics.get("streamgauge_publish_commit_events_count"),
            "node {n}"
        );
    }
    // Resuming works on any node, and a resume point beyond the head is
    // announced, then followed from the head.
    let (first, second, third) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let mut middle = second
        .open(Transport::Sse, &format!("topics/c?since={}", last / 2))
        .await;
    assert_eq!(seq(&middle.next_event().await), last / 2 + 1);
    let mut ahead = third
        .open(Transport::Ws, &format!("topics/c?since={}", last + 5))
        .await;
    assert_eq!(
        ahead.next_item().await,
        Item::Gap(json!({ "from": last + 1, "to": last + 5, "reason": "beyond_head" }))
    );
    assert_eq!(first.publish("c", &json!("next")).await, last + 1);
    assert_eq!(seq(&ahead.next_event().await), last + 1);
}

/// Waits until `node`'s `/readyz` answers 503 with `status`.
async fn not_ready(node: &TestServer, status: &str) {
    within(&format!("/readyz to say {status}"), async {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        loop {
            poll.tick().await;
            let response = node.get("/readyz").await;
            if response.status() == 503 {
                let body: Value = response.json().await.expect("a JSON answer");
                if body["status"] == status {
                    assert!(body["reason"].is_string(), "{body}");
                    return;
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_a_listener_is_cut_off_reach_its_subscribers_when_it_reconnects() {
    // No safety poll: only the resync after the reconnect can deliver.
    let mut config = support::config();
    config.cluster_poll = None;
    let cluster = Nodes::start(2, config).await;
    let (cut, other) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut subscribers = Vec::new();
    for transport in Transport::BOTH {
        subscribers.push((transport, cut.open(transport, "topics/cut?since=0").await));
    }
    assert_eq!(other.publish("cut", &json!(1)).await, 1);
    for (_, client) in &mut subscribers {
        assert_eq!(seq(&client.next_event().await), 1);
    }
    // Its listener is ended and cannot come back: new connections to the
    // database are refused. Meanwhile another node commits (this test's
    // connection, opened before, commits as a node does, with its
    // notification, which the cut-off node cannot hear).
    let mut node_like = PgConnection::connect(cluster.database.url()).await.unwrap();
    let mut admin = admin().await;
    allow_connections(&mut admin, cluster.database_name(), false).await;
    assert_eq!(terminate_listener(&mut admin, cut.addr).await, 1);
    not_ready(cut, "listener_down").await;
    commit_behind_the_nodes(&mut node_like, "cut", 2..=11, Some((2, 11))).await;
    allow_connections(&mut admin, cluster.database_name(), true).await;
    for (transport, client) in &mut subscribers {
        for expected in 2..=11 {
            let event = client.next_event().await;
            assert_eq!(
                (seq(&event), &event["data"]),
                (expected, &json!({ "behind": expected })),
                "{transport:?}"
            );
        }
    }
    // And the live path works again.
    assert_eq!(other.publish("cut", &json!(12)).await, 12);
    for (_, client) in &mut subscribers {
        assert_eq!(seq(&client.next_event().await), 12);
    }
    cut.ready().await;
    let metrics = cut.metrics().await;
    assert!(resyncs(&metrics, "reconnect") >= 1.0, "{metrics}");
    assert_eq!(resyncs(&metrics, "poll"), 0.0);
}

/// Commits events `seqs` of `topic` (data `{"behind": seq}`) on `db`, as
/// a node would, and notifies only `notified` (`first..=last`), if
/// anything.
async fn commit_behind_the_nodes(
    db: &mut PgConnection,
    topic: &str,
    seqs: std::ops::RangeInclusive<u64>,
    notified: Option<(u64, u64)>,
) {
    let mut tx = db.begin().await.unwrap();
    sqlx::query("UPDATE topics SET head = $1 WHERE name = $2")
        .bind(*seqs.end() as i64)
        .bind(topic)
        .execute(&mut *tx)
        .await
        .unwrap();
    for seq in seqs {
        sqlx::query("INSERT INTO events (topic, seq, pts, data) VALUES ($1, $2, $3, $4)")
            .bind(topic)
            .bind(seq as i64)
            .bind(support::now_micros() as i64)
            .bind(json!({ "behind": seq }).to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    if let Some((first, last)) = notified {
        let payload =
            format!(r#"{{"v":1,"o":"test","t":[{{"n":"{topic}","f":{first},"l":{last}}}]}}"#);
        sqlx::query("SELECT pg_notify('streamgauge', $1)")
            .bind(payload)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_made_good_by_the_next_one_or_by_the_poll() {
    let mut config = support::config();
    config.cluster_poll = Some(Duration::from_millis(200));
    let cluster = Nodes::start(1, config).await;
    let node = &cluster.nodes[0];
    let mut subscriber = node.open(Transport::Sse, "topics/lost?since=0").await;
    assert_eq!(node.publish("lost", &json!(1)).await, 1);
    assert_eq!(seq(&subscriber.next_event().await), 1);
    let mut db = PgConnection::connect(cluster.database.url()).await.unwrap();
    // 2's notification was lost; 3's names the hole.
    commit_behind_the_nodes(&mut db, "lost", 2..=3, Some((3, 3))).await;
    for expected in 2..=3 {
        let event = subscriber.next_event().await;
        assert_eq!(
            (seq(&event), &event["data"]),
            (expected, &json!({ "behind": expected }))
        );
    }
    node.wait_for("the gap to be counted", |m| resyncs(m, "gap") == 1.0)
        .await;
    // 4 was never notified: the poll finds it.
    commit_behind_the_nodes(&mut db, "lost", 4..=4, None).await;
    assert_eq!(seq(&subscriber.next_event().await), 4);
    node.wait_for("the poll's resync to be counted", |m| {
        resyncs(m, "poll") >= 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_through_one_node_ends_its_streams_on_every_node() {
    let mut config = support::config();
    config.admin_tokens = vec!["ops=adm1n".parse().unwrap()];
    // No poll: only the deletion's notification can tell the other node.
    config.cluster_poll = None;
    let cluster = Nodes::start(2, config).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_b = b.open(Transport::Ws, "topics/doomed?since=0").await;
    for expected in 1..=3 {
        assert_eq!(a.publish("doomed", &json!(expected)).await, expected);
        assert_eq!(seq(&on_b.next_event().await), expected);
    }
    let deleted = within(
        "the deletion",
        a.http()
            .delete(a.url("/admin/topics/doomed"))
            .bearer_auth("adm1n")
            .send(),
    )
    .await
    .expect("DELETE");
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        on_b.next_item().await,
        Item::Gap(json!({ "from": 1, "to": 3, "reason": "deleted" }))
    );
    assert_eq!(on_b.next_item().await, Item::End(support::End::Close(4404)));
    // Node b starts the topic again at 1 with everyone else.
    let mut live_on_b = b.open(Transport::Sse, "topics/doomed").await;
    assert_eq!(a.publish("doomed", &json!("again")).await, 1);
    assert_eq!(seq(&live_on_b.next_event().await), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_went_back_is_announced_and_strands_no_subscriber() {
    let mut config = support::config();
    config.cluster_poll = Some(Duration::from_millis(200));
    let cluster = Nodes::start(2, config).await;
    let (watching, publishing) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut live = watching.open(Transport::Ws, "topics/back?since=0").await;
    for i in 1..=5 {
        publishing.publish("back", &json!(i)).await;
    }
    for expected in 1..=5 {
        assert_eq!(seq(&live.next_event().await), expected);
    }
    // The database loses its last three events (a restore, a failover to
    // a replica that lacked them).
    let mut db = PgConnection::connect(cluster.database.url()).await.unwrap();
    sqlx::query("DELETE FROM events WHERE topic = 'back' AND seq > 2")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE topics SET head = 2 WHERE name = 'back'")
        .execute(&mut db)
        .await
        .unwrap();
    // The live subscriber is told, never left waiting for 6.
    assert_eq!(
        live.next_item().await,
        Item::Gap(json!({ "from": 3, "to": 5, "reason": "beyond_head" }))
    );
    // A new subscriber on the node that had fanned out 5 is not refused
    // for ever.
    let mut new = publishing.open(Transport::Sse, "topics/back?since=0").await;
    for expected in 1..=2 {
        assert_eq!(seq(&new.next_event().await), expected);
    }
    publishing
        .wait_for("the new subscriber to join the live tail", |m| {
            m.get("streamgauge_topic_live_subscribers") == 1.0
        })
        .await;
    assert_eq!(watching.publish("back", &json!("again")).await, 3);
    assert_eq!(seq(&live.next_event().await), 3);
    assert_eq!(seq(&new.next_event().await), 3);
}

/// How a publisher fared while PostgreSQL restarted.
#[derive(Default)]
struct Fared {
    /// `503`s answered.
    refused: u64,
    /// `201`s answered after the first `503`.
    acked_after_refusal: u64,
}

/// Publishes to `url` until `stop`, recording every `201` in `acked`
/// (seq → body) and counting `503`s in `fared`; any other answer fails.
async fn publish_through_an_outage(
    http: reqwest::Client,
    url: String,
    publisher: u64,
    acked: Arc<Mutex<BTreeMap<u64, Value>>>,
    fared: Arc<Mutex<Fared>>,
    stop: Arc<AtomicBool>,
) {
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let body = json!({ "p": publisher, "i": i });
        let response = within("a publish", http.post(&url).json(&body).send())
            .await
            .expect("an answer");
        match response.status().as_u16() {
            201 => {
                let answer: Value = response.json().await.expect("a JSON answer");
                let seq = answer["seq"].as_u64().expect("a seq");
                acked.lock().unwrap().insert(seq, body);
                let mut fared = fared.lock().unwrap();
                if fared.refused > 0 {
                    fared.acked_after_refusal += 1;
                }
            }
            503 => fared.lock().unwrap().refused += 1,
            other => panic!("publisher {publisher}: {other}"),
        }
    }
}

/// Waits until `ready` holds for every publisher's record.
async fn until_fared(what: &str, fared: &[Arc<Mutex<Fared>>], ready: impl Fn(&Fared) -> bool) {
    within(what, async {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while !fared.iter().all(|f| ready(&f.lock().unwrap())) {
            poll.tick().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_under_load_loses_nothing_and_the_nodes_recover_by_themselves() {
    let mut pg = postgres::Cluster::start();
    let mut config = support::config();
    config.store.url = pg.url();
    // Keep-alives keep the quiet streams' reads alive through the outage.
    config.keepalive_interval = Duration::from_secs(1);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(TestServer::start_with(config.clone()).await);
    }
    for node in &nodes {
        node.ready().await;
    }
    let (through, last_known) = watch::channel(None);
    let mut subscribers = Vec::new();
    for node in &nodes {
        for transport in Transport::BOTH {
            let reader =
                resuming_subscriber(node.addr, transport, "r".to_owned(), last_known.clone());
            subscribers.push((format!("{} {transport:?}", node.addr), tokio::spawn(reader)));
        }
    }
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let fared: Vec<Arc<Mutex<Fared>>> = (0..nodes.len()).map(|_| Arc::default()).collect();
    let publishers: Vec<_> = nodes
        .iter()
        .zip(&fared)
        .enumerate()
        .map(|(p, (node, fared))| {
            tokio::spawn(publish_through_an_outage(
                node.http().clone(),
                node.url("/topics/r/events"),
                p as u64,
                Arc::clone(&acked),
                Arc::clone(fared),
                Arc::clone(&stop),
            ))
        })
        .collect();
    within("publishes before the outage", async {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while acked.lock().unwrap().len() < 40 {
            poll.tick().await;
        }
    })
    .await;
    pg.stop();
    until_fared("every node to refuse a publish", &fared, |f| f.refused > 0).await;
    pg.resume();
    until_fared("every node to take publishes again", &fared, |f| {
        f.acked_after_refusal >= 5
    })
    .await;
    for node in &nodes {
        node.ready().await;
    }
    stop.store(true, Ordering::SeqCst);
    for publisher in publishers {
        within("a publisher to stop", publisher).await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let last = *acked.keys().next_back().unwrap();
    through.send(Some(last)).unwrap();
    for (what, subscriber) in subscribers {
        let events = subscriber.await.unwrap();
        assert_every_event_once_in_order(&what, &events, last, &acked);
    }
}

/// A WebSocket subscriber that reads nothing until told, over a small
/// socket receive buffer (fixed once set), so what it has not read piles
/// up on the server.
async fn stalled(addr: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(16 * 1024)
        .expect("a receive buffer size");
    let stream = within("a connection", socket.connect(addr))
        .await
        .expect("connecting");
    let url = format!("ws://{addr}/ws/{path}");
    let (ws, _) = within("a WebSocket handshake", client_async(url, stream))
        .await
        .expect("a WebSocket");
    ws
}

/// Records `event`'s seq in `seqs`; whether it is the last event.
fn record(seqs: &mut Vec<u64>, event: &Value) -> bool {
    seqs.push(seq(event));
    assert!(seqs.len() < 10_000, "no last event");
    event["data"]["last"] == json!(true)
}

/// The seqs `client` receives through the last event.
async fn seqs_through_the_last(mut client: Client) -> Vec<u64> {
    let mut seqs = Vec::new();
    while !record(&mut seqs, &client.next_event().await) {}
    seqs
}

/// The next event a stalled WebSocket subscriber has, now that it reads.
async fn next_stalled_event(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        match within("a frame", ws.next()).await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("an event");
            }
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

fn catch_ups(metrics: &Metrics) -> f64 {
    metrics.get("streamgauge_slow_consumers_total{action=\"catch_up\"}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_on_one_node_holds_back_no_other_node() {
    let mut config = support::config();
    config.queue.max_events = 64;
    let cluster = Nodes::start(2, config).await;
    let (slow_node, publisher) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut slow = stalled(slow_node.addr, "topics/s?since=0&overflow=catch-up").await;
    // The others are disconnected if they ever fall behind: every catch-up
    // counted is the slow one's.
    let mut fast = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for transport in Transport::BOTH {
            let client = node
                .open(transport, "topics/s?since=0&overflow=disconnect")
                .await;
            let reader = seqs_through_the_last(client);
            fast.push((format!("node {n} {transport:?}"), tokio::spawn(reader)));
        }
    }
    // Bodies too large to travel in a notification: the slow subscriber's
    // node reads them from the store.
    let pad = "p".repeat(32 * 1024);
    let mut published = 0;
    for i in 1..=600 {
        published = publisher.publish("s", &json!({ "i": i, "pad": pad })).await;
        if i % 10 == 0 && catch_ups(&slow_node.metrics().await) > 0.0 {
            break;
        }
    }
    assert!(
        catch_ups(&slow_node.metrics().await) > 0.0,
        "the slow subscriber never fell behind"
    );
    let last = publisher.publish("s", &json!({ "last": true })).await;
    assert_eq!(last, published + 1);
    // Everyone else has everything while the slow one still reads nothing.
    for (what, reader) in fast {
        let seqs = within("a fast subscriber", reader).await.unwrap();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{what}");
    }
    // The slow one catches up from the store: nothing lost, nothing twice.
    let mut seqs = Vec::new();
    while !record(&mut seqs, &next_stalled_event(&mut slow).await) {}
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "the slow subscriber");
    let metrics = slow_node.metrics().await;
    assert_eq!(
        metrics.get("streamgauge_slow_consumers_total{action=\"disconnect\"}"),
        0.0,
        "a fast subscriber fell behind"
    );
}
