//! Idempotent publishing (issue 25): a publish retried with its
//! idempotency key is answered with the first one's `seq` and stored once,
//! over HTTP and WebSocket alike, within a group commit, under concurrent
//! duplicates (two nodes on PostgreSQL), and until the key's window ends.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use streamgauge_server::Store;
use streamgauge_server::store::{Append, IdempotencyKey, Outcome, digest};
use tokio_tungstenite::tungstenite::Message;

use super::{seq, server};
use crate::support::cluster::Nodes;
use crate::support::{self, Backend, Database, Item, TestServer, Transport, within};

/// The count of publishes answered as replays.
const REPLAYED: &str = "streamgauge_publish_replayed_total";

/// `POST /topics/{topic}/events` with `body` and each of `keys` as an
/// `Idempotency-Key` header: the status, whether the answer says
/// `Idempotent-Replayed: true`, and the JSON answer.
async fn post(server: &TestServer, topic: &str, body: &str, keys: &[&str]) -> (u16, bool, Value) {
    let mut request = server
        .http()
        .post(server.url(&format!("/topics/{topic}/events")))
        .body(body.to_owned());
    for key in keys {
        request = request.header("idempotency-key", *key);
    }
    let response = within("a publish", request.send()).await.expect("POST");
    let status = response.status().as_u16();
    let replayed = match response.headers().get("idempotent-replayed") {
        None => false,
        Some(value) if value == "true" => true,
        Some(other) => panic!("Idempotent-Replayed: {other:?}"),
    };
    (
        status,
        replayed,
        response.json().await.expect("a JSON answer"),
    )
}

/// The answer to a WebSocket publish frame that stores nothing: nothing
/// else comes before it.
async fn frame_answer(client: &mut support::Client, frame: Value) -> Value {
    client.send(Message::text(frame.to_string())).await;
    match client.next_item().await {
        Item::Reply(reply) => reply,
        other => panic!("expected an answer, got {other:?}"),
    }
}

pub(super) async fn a_retried_publish_gets_its_first_seq_and_stores_nothing(backend: Backend) {
    let (server, _db) = server(backend, support::config()).await;
    let first = post(&server, "orders", r#"{"a": 1}"#, &["o-1"]).await;
    assert_eq!(first, (201, false, json!({ "seq": 1 })));
    // The same body, as the server stores it (whitespace between tokens
    // aside), is a replay.
    let retry = post(&server, "orders", "{ \"a\" :1 }", &["o-1"]).await;
    assert_eq!(retry, (200, true, json!({ "seq": 1 })));
    let (status, _, answer) = post(&server, "orders", r#"{"a": 2}"#, &["o-1"]).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("different body"),
        "{answer}"
    );
    // Keys are scoped to their topic; the quoted form is the same key.
    let other = post(&server, "other", r#"{"a": 2}"#, &["\"o-1\""]).await;
    assert_eq!(other, (201, false, json!({ "seq": 1 })));
    let quoted = post(&server, "other", r#"{"a": 2}"#, &["o-1"]).await;
    assert_eq!(quoted, (200, true, json!({ "seq": 1 })));
    let long = "k".repeat(256);
    for keys in [&[""][..], &[long.as_str()], &["a b"], &["o-1", "o-2"]] {
        let (status, _, answer) = post(&server, "orders", r#"{"a": 3}"#, keys).await;
        assert_eq!(status, 400, "{keys:?}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with("invalid parameter `Idempotency-Key`"),
            "{error}"
        );
    }

    // A WebSocket publisher with the same key, in the same topic: a
    // replay, not fanned out again; the stream goes on after a refusal.
    let mut ws = server.open(Transport::Ws, "topics/orders?since=0").await;
    assert_eq!(seq(&ws.next_event().await), 1);
    let replay = json!({ "publish": { "a": 1 }, "id": "r", "idempotency_key": "o-1" });
    assert_eq!(
        frame_answer(&mut ws, replay).await,
        json!({ "ack": { "seq": 1, "id": "r", "replayed": true } })
    );
    let mismatch = json!({ "publish": 2, "id": 7, "idempotency_key": "o-1" });
    let answer = frame_answer(&mut ws, mismatch).await;
    assert!(
        answer["error"].as_str().unwrap().contains("different body") && answer["id"] == 7,
        "{answer}"
    );
    let bad = json!({ "publish": 2, "id": 8, "idempotency_key": 42 });
    let answer = frame_answer(&mut ws, bad).await;
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid idempotency_key: is not a JSON string"),
        "{answer}"
    );
    // Stored: its ack and its event, in either order. Nothing was fanned
    // out before it.
    let fresh = json!({ "publish": { "a": 4 }, "idempotency_key": "o-2" });
    ws.send(Message::text(fresh.to_string())).await;
    let mut items = [ws.next_item().await, ws.next_item().await];
    items.sort_by_key(|item| matches!(item, Item::Event(_)));
    assert_eq!(items[0], Item::Reply(json!({ "ack": { "seq": 2 } })));
    let Item::Event(event) = &items[1] else {
        panic!("expected the event, got {:?}", items[1]);
    };
    assert_eq!((seq(event), &event["data"]), (2, &json!({ "a": 4 })));
    let mut sse = server.open(Transport::Sse, "topics/orders?since=0").await;
    let events = [sse.next_event().await, sse.next_event().await];
    assert_eq!(
        events.map(|e| (seq(&e), e["data"].clone())),
        [(1, json!({ "a": 1 })), (2, json!({ "a": 4 }))]
    );
    let metrics = server.metrics().await;
    assert_eq!(metrics.get(REPLAYED), 3.0, "{metrics}");
    let refusals = |reason| {
        metrics.get(&format!(
            "streamgauge_publish_key_refusals_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!((refusals("mismatch"), refusals("invalid")), (2.0, 5.0));
}

/// An append to `topic` of `data` with `key` (if any) at `pts`.
fn append<'a>(topic: &'a str, key: Option<&'a str>, data: &'a str, pts: u64) -> Append<'a> {
    Append {
        topic,
        pts,
        data,
        key: key.map(|key| IdempotencyKey {
            key,
            digest: digest(data),
        }),
    }
}

pub(super) async fn keys_are_resolved_within_a_group_commit_and_expire(backend: Backend) {
    let database = Database::fresh(backend).await;
    let mut options = support::config().store;
    options.url = database.url().to_owned();
    let store = Store::open(&options).await.expect("opening the store");
    let window = Duration::from_secs(60);
    let now = support::now_micros();
    let outcomes = async |batch: &[Append<'_>]| {
        store
            .append(batch, window)
            .await
            .expect("appending")
            .outcomes
    };
    use Outcome::{Mismatch, Replayed, Stored};
    let (k, j) = (Some("k"), Some("j"));
    // One group: a key repeated with its body is a replay of the first use,
    // with another body a mismatch; another topic has keys of its own.
    let group = [
        append("t", k, "1", now),
        append("t", k, "1", now),
        append("t", k, "2", now),
        append("t", None, "3", now),
        append("u", k, "1", now),
    ];
    assert_eq!(
        outcomes(&group).await,
        [Stored(1), Replayed(1), Mismatch, Stored(2), Stored(1)]
    );
    // A replay before a new key in the same group: the new one takes the
    // next seq, and keeps it.
    let group = [
        append("t", k, "1", now),
        append("t", j, "4", now),
        append("t", None, "5", now),
    ];
    assert_eq!(outcomes(&group).await, [Replayed(1), Stored(3), Stored(4)]);
    assert_eq!(outcomes(&[append("t", j, "4", now)]).await, [Replayed(3)]);
    let events = store.read("t", 0, 10).await.expect("reading");
    let stored: Vec<(u64, &[u8])> = events.iter().map(|e| (e.seq, &e.data[..])).collect();
    assert_eq!(stored, [(1, &b"1"[..]), (2, b"3"), (3, b"4"), (4, b"5")]);
    assert_eq!(store.head("t").await.expect("the head"), 4);
    // Past the window a key is not honoured, deleted or not.
    let later = now + 61_000_000;
    assert_eq!(outcomes(&[append("t", k, "9", later)]).await, [Stored(5)]);
    assert_eq!(outcomes(&[append("t", k, "9", later)]).await, [Replayed(5)]);
    // Expiry deletes the keys first used before the window (j in t, k in
    // u), not k in t, used again since.
    assert_eq!(store.expire_keys(window, later).await.expect("expiring"), 2);
    assert_eq!(outcomes(&[append("t", k, "9", later)]).await, [Replayed(5)]);
    assert_eq!(outcomes(&[append("u", k, "1", later)]).await, [Stored(2)]);
    store.close().await;
}

pub(super) async fn an_expired_key_is_deleted_and_its_retry_stored_anew(backend: Backend) {
    let mut config = support::config();
    config.idempotency_window = Duration::from_millis(50);
    config.retention_interval = Duration::from_millis(50);
    let (server, _db) = server(backend, config).await;
    let first = post(&server, "late", "1", &["k"]).await;
    assert_eq!(first, (201, false, json!({ "seq": 1 })));
    server
        .wait_for("the key to expire", |m| {
            m.get("streamgauge_idempotency_keys_expired_total") == 1.0
        })
        .await;
    let retry = post(&server, "late", "1", &["k"]).await;
    assert_eq!(retry, (201, false, json!({ "seq": 2 })));
}

/// Publishes at once with one key.
const DUPLICATES: usize = 32;

pub(super) async fn concurrent_duplicates_store_one_event(backend: Backend) {
    // PostgreSQL: two nodes on one database, the duplicates spread over
    // both; SQLite serves one server only.
    let (nodes, _db) = match backend {
        Backend::Sqlite => {
            let (server, db) = server(backend, support::config()).await;
            (vec![server], Some(db))
        }
        Backend::Postgres => {
            let Nodes { nodes, database } = Nodes::start(2, support::config()).await;
            (nodes, Some(database))
        }
    };
    let answers = join_all((0..DUPLICATES).map(|i| {
        let node = &nodes[i % nodes.len()];
        post(node, "dup", r#"{"once": true}"#, &["the-key"])
    }))
    .await;
    let created = answers.iter().filter(|a| a.0 == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    for answer in &answers {
        assert!(
            *answer == (201, false, json!({ "seq": 1 }))
                || *answer == (200, true, json!({ "seq": 1 })),
            "{answer:?}"
        );
    }
    let next = nodes[0].publish("dup", &json!({ "after": true })).await;
    assert_eq!(next, 2, "the duplicates stored more than one event");
    for node in &nodes {
        let mut sse = node.open(Transport::Sse, "topics/dup?since=0").await;
        let events = [sse.next_event().await, sse.next_event().await];
        assert_eq!(
            events.map(|e| (seq(&e), e["data"].clone())),
            [(1, json!({ "once": true })), (2, json!({ "after": true }))]
        );
    }
    let replayed: f64 = join_all(nodes.iter().map(TestServer::metrics))
        .await
        .iter()
        .map(|m| m.get(REPLAYED))
        .sum();
    assert_eq!(replayed, (DUPLICATES - 1) as f64);
}
