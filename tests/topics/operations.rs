//! Topics an operator runs: the admin API (list, show, trim, delete),
//! retention rules by topic pattern, the bound on the number of topics,
//! and idle topics removed.

use std::time::Duration;

use serde_json::{Value, json};
use streamgauge_server::Config;
use tokio_tungstenite::tungstenite::Message;

use super::{gap, seq, server};
use crate::support::{self, Backend, End, Item, TestServer, Transport};

/// The admin token the tests configure, and its label.
const ADMIN: &str = "adm1n-s3cret";

/// The test configuration with the admin token `ops=ADMIN`.
fn with_admin() -> Config {
    let mut config = support::config();
    config.admin_tokens = vec![format!("ops={ADMIN}").parse().unwrap()];
    config
}

/// An admin call: `method` `path` with `token`; the status and the JSON
/// answer.
async fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = server.http().request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = support::within("an admin call", request.send())
        .await
        .expect("an admin request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// `method` `path` with the admin token: the status and the JSON answer.
async fn as_admin(server: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    admin(server, method, path, Some(ADMIN)).await
}

/// `GET path` with the admin token, expecting 200.
async fn admin_get(server: &TestServer, path: &str) -> Value {
    let (status, answer) = as_admin(server, reqwest::Method::GET, path).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// Publishes `data` 1..=`count` to `topic`.
async fn publish_numbers(server: &TestServer, topic: &str, count: u64) {
    for i in 1..=count {
        server.publish(topic, &json!(i)).await;
    }
}

pub(super) async fn the_admin_api_lists_shows_trims_and_deletes_topics(backend: Backend) {
    let (server, _db) = server(backend, with_admin()).await;
    let get = reqwest::Method::GET;
    for (token, status, reason) in [(None, 401, "missing"), (Some("nope"), 403, "wrong_token")] {
        let (got, answer) = admin(&server, get.clone(), "/admin/topics", token).await;
        assert_eq!(
            (got, answer["reason"].as_str()),
            (status, Some(reason)),
            "{answer}"
        );
    }
    publish_numbers(&server, "a.one", 3).await;
    publish_numbers(&server, "b.two", 1).await;
    publish_numbers(&server, "c.three", 12).await;

    let page = admin_get(&server, "/admin/topics?limit=2").await;
    let first = &page["topics"][0];
    assert_eq!(
        (
            &first["name"],
            &first["head"],
            &first["oldest"],
            &first["events"],
            &first["bytes"]
        ),
        (&json!("a.one"), &json!(3), &json!(1), &json!(3), &json!(3))
    );
    assert!(first["last_publish_us"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(
        (&page["topics"][1]["name"], &page["next"]),
        (&json!("b.two"), &json!("b.two"))
    );
    let last = admin_get(&server, "/admin/topics?after=b.two&limit=2").await;
    assert_eq!(
        last["topics"][0]["bytes"],
        json!(9 + 3 * 2),
        "1..=9 and 10..=12"
    );
    assert_eq!(
        (last["topics"].as_array().unwrap().len(), &last["next"]),
        (1, &json!(null))
    );

    let mut sse = server
        .open(Transport::Sse, "topics/a.one?since=0&tag=watcher")
        .await;
    let mut ws = server.open(Transport::Ws, "topics/a.one?since=0").await;
    for client in [&mut sse, &mut ws] {
        for expected in 1..=3 {
            assert_eq!(seq(&client.next_event().await), expected);
        }
    }
    let shown = admin_get(&server, "/admin/topics/a.one").await;
    assert_eq!(shown["subscribers"], json!(2), "{shown}");
    let listed: Vec<(&Value, &Value, bool)> = shown["subscriber_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                &s["transport"],
                &s["tag"],
                s["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (&json!("sse"), &json!("watcher"), true),
            (&json!("ws"), &json!(null), true)
        ]
    );

    let (status, trimmed) = as_admin(
        &server,
        reqwest::Method::POST,
        "/admin/topics/a.one/trim?before=3",
    )
    .await;
    assert_eq!(
        (
            status,
            &trimmed["trimmed"],
            &trimmed["oldest"],
            &trimmed["events"]
        ),
        (200, &json!(2), &json!(3), &json!(1)),
        "{trimmed}"
    );
    let mut late = server.open(Transport::Ws, "topics/a.one?since=0").await;
    assert_eq!(late.next_item().await, gap(1, 2, "retention"));
    assert_eq!(seq(&late.next_event().await), 3);
    drop(late);

    let (status, deleted) = as_admin(&server, reqwest::Method::DELETE, "/admin/topics/a.one").await;
    assert_eq!((status, &deleted["head"]), (200, &json!(3)), "{deleted}");
    for (client, end) in [
        (&mut sse, End::Notice("topic_deleted".to_owned())),
        (&mut ws, End::Close(4404)),
    ] {
        assert_eq!(client.next_item().await, gap(1, 3, "deleted"));
        assert_eq!(client.next_item().await, Item::End(end));
    }
    let (status, _) = as_admin(&server, get.clone(), "/admin/topics/a.one").await;
    assert_eq!(status, 404);
    // The topic starts again at 1; a cursor of the deleted one is told so.
    assert_eq!(server.publish("a.one", &json!("again")).await, 1);
    let mut resumed = server.open(Transport::Sse, "topics/a.one?since=3").await;
    assert_eq!(resumed.next_item().await, gap(2, 3, "beyond_head"));

    // A deleted topic's idempotency keys go with it: the same publish
    // retried later is stored in the topic started again, not replayed.
    let keyed = || async {
        let response = server
            .http()
            .post(server.url("/topics/keyed/events"))
            .header("Idempotency-Key", "retry-1")
            .body("{\"n\":1}")
            .send();
        let response = support::within("a keyed publish", response).await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap()["seq"].clone(),
        )
    };
    assert_eq!(keyed().await, (201, json!(1)));
    assert_eq!(server.publish("keyed", &json!(2)).await, 2);
    let (status, _) = as_admin(&server, reqwest::Method::DELETE, "/admin/topics/keyed").await;
    assert_eq!(status, 200);
    assert_eq!(keyed().await, (201, json!(1)));

    for (method, path, status) in [
        (reqwest::Method::DELETE, "/admin/topics/nothing", 404),
        (
            reqwest::Method::POST,
            "/admin/topics/nothing/trim?before=2",
            404,
        ),
        (
            reqwest::Method::POST,
            "/admin/topics/b.two/trim?before=0",
            400,
        ),
        (reqwest::Method::POST, "/admin/topics/b.two/trim", 400),
        (reqwest::Method::GET, "/admin/topics?limit=1001", 400),
        (reqwest::Method::GET, "/admin/topics?page=2", 400),
    ] {
        let (got, answer) = as_admin(&server, method, path).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
    }
    let metrics = server.metrics().await;
    for (status, count) in [(400, 4.0), (401, 1.0), (403, 1.0)] {
        let key = format!("streamgauge_http_refusals_total{{status=\"{status}\"}}");
        assert_eq!(metrics.get(&key), count, "{key}");
    }
    assert_eq!(metrics.get("streamgauge_topics_deleted_total"), 2.0);
    assert_eq!(
        metrics.get("streamgauge_gap_notices_total{reason=\"deleted\"}"),
        2.0
    );
}

pub(super) async fn without_an_admin_token_there_is_no_admin_api(backend: Backend) {
    let (server, _db) = server(backend, support::config()).await;
    server.publish("t", &json!(1)).await;
    for path in ["/admin/topics", "/admin/topics/t"] {
        let (status, answer) = as_admin(&server, reqwest::Method::GET, path).await;
        assert_eq!(
            (status, &answer["error"]),
            (404, &json!("no such endpoint"))
        );
    }
}

pub(super) async fn retention_rules_keep_each_topic_by_its_pattern(backend: Backend) {
    let mut config = with_admin();
    config.retention.max_events = 5;
    config.retention_rules = ["audit.*=events:0", "chat.*=events:2"]
        .iter()
        .map(|rule| rule.parse().unwrap())
        .collect();
    config.retention_interval = Duration::from_millis(50);
    let (server, _db) = server(backend, config).await;
    for topic in ["audit.log", "chat.x", "news"] {
        publish_numbers(&server, topic, 8).await;
    }
    // chat.x keeps 2 of 8, news the global 5, audit.log all of them.
    server
        .wait_for("retention to apply each topic's rule", |m| {
            m.get("streamgauge_retention_deleted_total") == 6.0 + 3.0
        })
        .await;
    let listed = admin_get(&server, "/admin/topics").await;
    let oldest: Vec<(&Value, &Value)> = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (&t["name"], &t["oldest"]))
        .collect();
    assert_eq!(
        oldest,
        [
            (&json!("audit.log"), &json!(1)),
            (&json!("chat.x"), &json!(7)),
            (&json!("news"), &json!(4))
        ]
    );
}

pub(super) async fn a_publish_that_would_create_a_topic_beyond_the_bound_is_refused(
    backend: Backend,
) {
    let mut config = with_admin();
    config.max_topics = 2;
    let (server, _db) = server(backend, config).await;
    server.publish("a", &json!(1)).await;
    server.publish("b", &json!(1)).await;
    let (status, answer) = server.try_publish("c", "1", None).await;
    assert_eq!(
        (status, &answer["reason"], &answer["max_topics"]),
        (429, &json!("max_topics"), &json!(2)),
        "{answer}"
    );
    let mut ws = server.open(Transport::Ws, "topics/c").await;
    ws.send(Message::text(r#"{"publish": 1, "id": 7}"#)).await;
    let Item::Reply(reply) = ws.next_item().await else {
        panic!("expected a refusal")
    };
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("limit of 2 topics"),
        "{reply}"
    );
    assert_eq!(reply["id"], json!(7));
    // Existing topics take publishes; removing one makes room.
    assert_eq!(server.publish("a", &json!(2)).await, 2);
    let (status, _) = as_admin(&server, reqwest::Method::DELETE, "/admin/topics/b").await;
    assert_eq!(status, 200);
    assert_eq!(server.publish("c", &json!(1)).await, 1);
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("streamgauge_publish_failures_total{reason=\"max_topics\"}"),
        2.0
    );
}

pub(super) async fn an_idle_topic_is_removed_and_a_watched_one_kept(backend: Backend) {
    let mut config = with_admin();
    config.retention.max_age = Duration::from_millis(1);
    config.retention_interval = Duration::from_millis(50);
    config.topic_idle_expiry = Some(Duration::from_millis(100));
    let (server, _db) = server(backend, config).await;
    // Watched from before its first event: never idle.
    let mut watcher = server.open(Transport::Sse, "topics/kept").await;
    publish_numbers(&server, "kept", 3).await;
    publish_numbers(&server, "idle", 3).await;
    assert_eq!(seq(&watcher.next_event().await), 1);
    server
        .wait_for("the idle topic to be removed", |m| {
            m.get("streamgauge_topics_expired_total") == 1.0
        })
        .await;
    let (status, _) = as_admin(&server, reqwest::Method::GET, "/admin/topics/idle").await;
    assert_eq!(status, 404);
    let kept = admin_get(&server, "/admin/topics/kept").await;
    assert_eq!(
        (&kept["head"], &kept["events"]),
        (&json!(3), &json!(0)),
        "{kept}"
    );
    // A cursor of the removed topic is told it is beyond the head.
    let mut resumed = server.open(Transport::Ws, "topics/idle?since=3").await;
    assert_eq!(resumed.next_item().await, gap(1, 3, "beyond_head"));
    assert_eq!(server.publish("idle", &json!("again")).await, 1);
    assert_eq!(seq(&resumed.next_event().await), 1);
}

/// Holds the database's write lock from outside the server (SQLite: a
/// write transaction; PostgreSQL: the lock of `topic`'s head row) until
/// dropped.
async fn hold_the_write_lock(
    database: &support::Database,
    backend: Backend,
    topic: &str,
) -> Box<dyn std::any::Any> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(database.url())
                .await
                .unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut db)
                .await
                .unwrap();
            Box::new(db)
        }
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(database.url()).await.unwrap();
            sqlx::query("BEGIN").execute(&mut db).await.unwrap();
            sqlx::query("SELECT head FROM topics WHERE name = $1 FOR UPDATE")
                .bind(topic)
                .execute(&mut db)
                .await
                .unwrap();
            Box::new(db)
        }
    }
}

pub(super) async fn a_full_publish_queue_refuses_at_once_and_counts_it(backend: Backend) {
    let mut config = support::config();
    config.publish_queue = 1;
    let database = support::Database::fresh(backend).await;
    let server = TestServer::start_on(config, &database).await;
    server.publish("q", &json!(0)).await;
    let lock = hold_the_write_lock(&database, backend, "q").await;
    // The writer holds one publish, stuck on the lock; the queue one more.
    let publishes: Vec<_> = (1..=4)
        .map(|i| server.try_publish("q", i.to_string(), None))
        .collect();
    let answers = futures_util::future::join_all(publishes);
    // Once two are refused, the lock goes and the others are stored.
    let (answers, ()) = tokio::join!(answers, async {
        server
            .wait_for("two publishes refused as busy", |m| {
                m.get("streamgauge_publish_failures_total{reason=\"busy\"}") >= 2.0
            })
            .await;
        drop(lock);
    });
    let busy = answers.iter().filter(|(status, _)| *status == 503).count();
    let stored = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!((busy + stored, busy >= 2), (4, true), "{answers:?}");
    assert!(answers.iter().filter(|(s, _)| *s == 503).all(|(_, a)| {
        a["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many publishes are waiting"))
    }));
    let after = server.metrics().await;
    assert_eq!(
        after.get("streamgauge_publish_failures_total{reason=\"busy\"}"),
        busy as f64
    );
    assert_eq!(
        after.get("streamgauge_http_refusals_total{status=\"503\"}"),
        busy as f64
    );
}
