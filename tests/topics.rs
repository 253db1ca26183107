//! Durable topics, each test on SQLite and on a real PostgreSQL: exactly-once
//! delivery across resumes while publishing, slow subscribers, durability
//! across a restart, retention and gap notices, refusals that store nothing,
//! WebSocket publishing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, SqliteConnection};
use streamgauge_server::Config;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, Backend, Database, End, Item, TestServer, Transport};

on_both_databases!(
    every_acknowledged_event_reaches_resuming_subscribers_exactly_once,
    a_slow_subscriber_delays_no_one_and_catches_up_without_loss,
    a_slow_subscriber_under_the_disconnect_policy_is_closed_and_resumes,
    acknowledged_events_survive_a_restart_and_resume_across_it,
    retention_by_count_is_announced_as_a_gap_before_the_rest,
    retention_by_age_is_announced_as_a_gap,
    where_a_subscription_starts,
    bad_publishes_are_refused_precisely_and_store_nothing,
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

/// Subscribes over and over, each time resuming after the last event
/// received and leaving after a few events, until `total` have arrived.
/// Every event must follow the previous one: no gap, no duplicate.
async fn resume_until(
    server: Arc<TestServer>,
    transport: Transport,
    topic: &str,
    total: u64,
) -> Vec<Value> {
    let mut received: Vec<Value> = Vec::new();
    for cycle in 1.. {
        let cursor = received.len() as u64;
        if cursor == total {
            break;
        }
        assert!(
            cycle <= 1000,
            "{transport:?}: no progress after {cycle} resumes"
        );
        let mut client = server
            .open(transport, &format!("topics/{topic}?since={cursor}"))
            .await;
        for _ in 0..fastrand::u64(1..=25).min(total - cursor) {
            let event = client.next_event().await;
            assert_eq!(
                seq(&event),
                received.len() as u64 + 1,
                "{transport:?}: after resuming at {cursor}"
            );
            received.push(event);
        }
    }
    received
}

async fn every_acknowledged_event_reaches_resuming_subscribers_exactly_once(backend: Backend) {
    const PUBLISHERS: u64 = 4;
    const EACH: u64 = 60;
    const TOTAL: u64 = PUBLISHERS * EACH;
    let (server, _db) = server(backend, support::config()).await;
    let server = Arc::new(server);
    let subscribers: Vec<_> = Transport::BOTH
        .into_iter()
        .map(|transport| {
            tokio::spawn(resume_until(
                Arc::clone(&server),
                transport,
                "orders",
                TOTAL,
            ))
        })
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..EACH {
                    let body = json!({ "publisher": p, "i": i });
                    acked.push((server.publish("orders", &body).await, body));
                }
                acked
            })
        })
        .collect();

    let mut published = BTreeMap::new();
    for publisher in publishers {
        for (seq, body) in publisher.await.unwrap() {
            assert!(
                published.insert(seq, body).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
    }
    assert_eq!(
        published.keys().copied().collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>()
    );
    for subscriber in subscribers {
        let received = subscriber.await.unwrap();
        for event in &received {
            assert_eq!(
                event["data"],
                published[&seq(event)],
                "payload of seq {}",
                seq(event)
            );
            assert!(event["pts"].as_u64().unwrap() <= event["ts"].as_u64().unwrap());
        }
    }
}

/// Payload large enough that a few hundred events overflow the socket
/// buffers of a reader that does not read.
fn bulky(i: u64) -> Value {
    json!({ "i": i, "pad": "p".repeat(32 * 1024) })
}

const BULK: u64 = 600;

fn small_queue() -> Config {
    let mut config = support::config();
    config.queue.max_events = 16;
    config
}

async fn a_slow_subscriber_delays_no_one_and_catches_up_without_loss(backend: Backend) {
    let (server, _db) = server(backend, small_queue()).await;
    let server = Arc::new(server);
    // The slow subscriber reads nothing until everyone else is done.
    let mut slow = server.open(Transport::Ws, "topics/feed?since=0").await;
    let fast: Vec<_> = Transport::BOTH
        .into_iter()
        .map(|transport| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let mut client = server.open(transport, "topics/feed?since=0").await;
                let mut seqs = Vec::new();
                for _ in 0..BULK {
                    seqs.push(seq(&client.next_event().await));
                }
                seqs
            })
        })
        .collect();
    for i in 1..=BULK {
        assert_eq!(server.publish("feed", &bulky(i)).await, i);
    }
    for subscriber in fast {
        assert_eq!(subscriber.await.unwrap(), (1..=BULK).collect::<Vec<_>>());
    }
    server
        .wait_for("the slow subscriber to be switched to catch-up", |m| {
            m.get("streamgauge_slow_consumers_total{action=\"catch_up\"}") >= 1.0
        })
        .await;

    // Now it reads: everything, in order, with no gap notice.
    for expected in 1..=BULK {
        match slow.next_item().await {
            Item::Event(event) => {
                assert_eq!(seq(&event), expected);
                assert_eq!(event["data"]["i"], expected);
            }
            other => panic!("expected event {expected}, got {other:?}"),
        }
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
    first.stop().await.expect("a clean stop");

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

async fn bad_publishes_are_refused_precisely_and_store_nothing(backend: Backend) {
    let mut config = support::config();
    config.max_publish_bytes = 1024;
    let (server, _db) = server(backend, config).await;
    let long_name = "n".repeat(201);
    for (topic, why) in [
        ("a%20b", "not allowed"),
        ("caf%C3%A9", "not allowed"),
        (long_name.as_str(), "1 to 200"),
    ] {
        let (status, answer) = server.try_publish(topic, "1", None).await;
        assert_eq!(status, 400, "{topic}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains("`topic`") && error.contains(why),
            "{topic}: {error}"
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
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body:?}: {answer}"
        );
    }
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

async fn tokens_guard_publishing_and_reading(backend: Backend) {
    let mut config = support::config();
    config.publish_tokens = vec!["pub-1".parse().unwrap(), "pub-2".parse().unwrap()];
    config.read_rules = vec!["private.*=read-1".parse().unwrap()];
    let (server, _db) = server(backend, config).await;

    let (status, answer) = server.try_publish("t", "1", None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("publishing requires a bearer token"))
    );
    let (status, _) = server.try_publish("t", "1", Some("pub-3")).await;
    assert_eq!(status, 403);
    let (status, answer) = server.try_publish("t", "1", Some("pub-2")).await;
    assert_eq!((status, answer["seq"].as_u64()), (201, Some(1)));

    // Publishing from a WebSocket without a valid token closes it with 1008.
    for path in ["topics/t", "topics/t?token=wrong"] {
        let mut client = server.open(Transport::Ws, path).await;
        client.send(Message::text(r#"{"publish":2}"#)).await;
        assert_eq!(client.drain().await.1, End::Close(1008), "{path}");
    }
    let mut client = server.open(Transport::Ws, "topics/t?token=pub-1").await;
    client.send(Message::text(r#"{"publish":2}"#)).await;
    assert_eq!(
        client.next_item().await,
        Item::Reply(json!({ "ack": { "seq": 2 } }))
    );

    // Reading a guarded topic.
    let http = server.http();
    let sse = |token: Option<&str>| {
        let request = http.get(server.url("/sse/topics/private.x"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    assert_eq!(sse(None).send().await.unwrap().status(), 401);
    assert_eq!(sse(Some("pub-1")).send().await.unwrap().status(), 403);
    assert_eq!(sse(Some("read-1")).send().await.unwrap().status(), 200);
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
