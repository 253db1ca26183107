//! Retention and gaps: events deleted by count or by age, or behind the
//! server's back, are announced as a gap notice before the rest, never
//! skipped silently.

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgConnection, SqliteConnection};
use streamgauge_server::retention::Retention;
use streamgauge_server::store::{Append, DELETE_CHUNK};
use streamgauge_server::{Config, Store};

use super::{gap, seq, server};
use crate::support::{self, Backend, Database, TestServer, Transport};

/// The test configuration with retention set by `retain`, run every 50 ms.
fn retaining(retain: impl FnOnce(&mut Retention)) -> Config {
    let mut config = support::config();
    retain(&mut config.retention);
    config.retention_interval = Duration::from_millis(50);
    config
}

/// Publishes `count` events to `topic`: `data` 1, 2, …
async fn publish_numbers(server: &TestServer, topic: &str, count: u64) {
    for i in 1..=count {
        server.publish(topic, &json!(i)).await;
    }
}

pub(super) async fn retention_by_count_is_announced_as_a_gap_before_the_rest(backend: Backend) {
    let config = retaining(|retention| retention.max_events = 10);
    let (server, _db) = server(backend, config).await;
    publish_numbers(&server, "news", 30).await;
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
            .map(|data| Append {
                topic,
                pts,
                data,
                key: None,
            })
            .collect();
        store
            .append(&batch, support::config().idempotency_window)
            .await
            .expect("appending");
    }
    store.close().await;
}

pub(super) async fn retention_by_count_trims_a_topic_far_over_the_limit_in_chunks(
    backend: Backend,
) {
    const KEEP: u64 = 10;
    // Three whole chunks and a partial one: the trim must not stop early.
    let over = 3 * DELETE_CHUNK + 7;
    let database = Database::fresh(backend).await;
    fill(&database, "big", over + KEEP).await;
    let config = retaining(|retention| retention.max_events = KEEP);
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

pub(super) async fn retention_by_age_is_announced_as_a_gap(backend: Backend) {
    let config = retaining(|retention| retention.max_age = Duration::from_millis(1));
    let (server, _db) = server(backend, config).await;
    publish_numbers(&server, "ticks", 5).await;
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

pub(super) async fn a_hole_inside_the_history_is_announced_not_skipped(backend: Backend) {
    let database = Database::fresh(backend).await;
    let server = TestServer::start_on(support::config(), &database).await;
    publish_numbers(&server, "h", 10).await;
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
