//! Replay of a stored dataset, on SQLite and on a real PostgreSQL: 100,000
//! rows stream with bounded memory, and the first row arrives long before
//! the non-streaming endpoint has answered.

use std::time::Instant;

use serde_json::Value;

use crate::support::{self, Backend, Database, End, TestServer, Transport};

on_both_databases!(
    replay_streams_every_row_with_bounded_memory_and_an_early_first_row,
    seeding_refuses_what_it_cannot_do,
);

const ROWS: u64 = 100_000;
const QUEUE_EVENTS: usize = 64;
/// Rows the replay reads from the store per query.
const PAGE: f64 = 500.0;

async fn seed(server: &TestServer, wallet: &str, count: u64, token: Option<&str>) -> (u16, Value) {
    let mut request = server
        .http()
        .post(server.url(&format!("/api/trades/{wallet}/seed?count={count}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = support::within("seeding trades", request.send())
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn replay_streams_every_row_with_bounded_memory_and_an_early_first_row(backend: Backend) {
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.queue.max_events = QUEUE_EVENTS;
    let server = TestServer::start_on(config, &database).await;
    let (status, answer) = seed(&server, "w1", ROWS, None).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        (answer["added"].as_u64(), answer["total"].as_u64()),
        (Some(ROWS), Some(ROWS))
    );

    // A reader that reads nothing: the replay stops reading the store once
    // its queue is full, holding at most a queue and a page of rows.
    let stalled = server.open(Transport::Ws, "replay/w1").await;
    let paused = server
        .wait_for(
            "the replay to pause behind a reader that reads nothing",
            |m| m.of("streamgauge_queue_depth_events", "ws") == QUEUE_EVENTS as f64,
        )
        .await;
    let read = paused.get("streamgauge_replay_rows_read_total");
    let sent = paused.of("streamgauge_events_sent_total", "ws");
    assert!(
        read - sent <= QUEUE_EVENTS as f64 + 2.0 * PAGE,
        "read {read} rows, sent {sent}"
    );
    assert!(
        read < ROWS as f64 / 2.0,
        "read {read} of {ROWS} rows for a reader that reads nothing"
    );
    drop(stalled);

    // The first streamed row comes well before the whole array.
    let started = Instant::now();
    let mut streamed = server.open(Transport::Sse, "replay/w1").await;
    let first = streamed.next_event().await;
    let first_row = started.elapsed();
    let started = Instant::now();
    let response = server.get("/api/trades/w1").await;
    let all: Vec<Value> = response.json().await.unwrap();
    let whole = started.elapsed();
    assert_eq!(all.len() as u64, ROWS);
    assert_eq!(first["data"], all[0]);
    assert!(
        first_row < whole,
        "first row after {first_row:?}, whole array after {whole:?}"
    );
    eprintln!(
        "{backend:?}: first streamed row after {first_row:?}; the whole array after {whole:?}"
    );

    // Every row, in order, on both transports; then a clean end.
    for transport in Transport::BOTH {
        let mut client = server.open(transport, "replay/w1").await;
        let (rows, end) = client.drain().await;
        assert_eq!(rows.len() as u64, ROWS, "{transport:?}");
        for (n, row) in (1..).zip(&rows) {
            assert_eq!(row["seq"].as_u64(), Some(n), "{transport:?}");
            assert_eq!(row["data"]["id"].as_u64(), Some(n), "{transport:?}");
        }
        assert_eq!(rows[41]["data"], all[41]);
        let expected = match transport {
            Transport::Sse => End::Body,
            Transport::Ws => End::Close(1000),
        };
        assert_eq!(end, expected);
    }
    // Resuming after a trade id.
    let mut client = server
        .open(Transport::Sse, &format!("replay/w1?since={}", ROWS - 2))
        .await;
    let (rows, _) = client.drain().await;
    let ids: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(ids, [ROWS - 1, ROWS]);
}

async fn seeding_refuses_what_it_cannot_do(backend: Backend) {
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.publish_tokens = vec!["writer".parse().unwrap()];
    let server = TestServer::start_on(config, &database).await;
    assert_eq!(seed(&server, "w", 10, None).await.0, 401);
    assert_eq!(seed(&server, "w", 10, Some("reader")).await.0, 403);
    let (status, answer) = seed(&server, "w", 0, Some("writer")).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("`count`"));
    let (status, answer) = seed(&server, "bad%20wallet", 1, Some("writer")).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("`wallet`"));
    // Seeds add up.
    assert_eq!(seed(&server, "w", 3, Some("writer")).await.1["total"], 3);
    assert_eq!(seed(&server, "w", 4, Some("writer")).await.1["total"], 7);
    let all: Vec<Value> = server.get_json("/api/trades/w").await;
    assert_eq!(all.len(), 7);
    // An unknown wallet replays nothing and ends cleanly.
    let mut client = server.open(Transport::Ws, "replay/nobody").await;
    assert_eq!(client.drain().await, (vec![], End::Close(1000)));
}
