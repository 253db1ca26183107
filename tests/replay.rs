//! Replay of a stored dataset, on SQLite and on a real PostgreSQL: 100,000
//! rows stream from a database cursor with bounded memory (the cursor stops
//! reading behind a reader that reads nothing), the first row arrives long
//! before the non-streaming endpoint answers, and replays stay under
//! `--max-replays` and give their database connection back however they
//! end. The heap itself, against the number of rows, is measured in
//! `tests/heap.rs`.

use std::time::Instant;

use serde_json::{Value, json};
use streamgauge_server::Config;
use streamgauge_server::source::replay::BATCH_ROWS;

use crate::support::{self, Backend, Database, End, TestServer, Transport};

on_both_databases!(
    replay_streams_every_row_with_bounded_memory_and_an_early_first_row,
    replays_over_the_limit_are_shed_and_give_their_connection_back,
    seeding_refuses_what_it_cannot_do,
);

const ROWS: u64 = 100_000;
const QUEUE_EVENTS: usize = 64;

/// How many times sooner than the whole array answers the first streamed
/// row must arrive. Measured here (debug build, 100,000 rows): the first
/// row after about 1 ms, the whole array after about 3 s, three orders of
/// magnitude apart; a factor of 10 holds on a loaded machine and fails if
/// the stream waited for the whole result as the array does, or if another
/// replay held the runtime's worker thread (the fairness that
/// `source/replay.rs` documents).
const SOONER: u32 = 10;

/// A test server's configuration whose pool holds `replays + 1` database
/// connections, `replays` of which replays may hold at once: a connection
/// a finished or dropped replay kept would starve the next replay or a
/// publish.
fn limited(replays: usize) -> Config {
    let mut config = support::config();
    config.max_replays = replays;
    config.store.max_connections = u32::try_from(replays).unwrap() + 1;
    config
}

async fn replay_streams_every_row_with_bounded_memory_and_an_early_first_row(backend: Backend) {
    let database = Database::fresh(backend).await;
    // One replay at a time over a pool of two: every replay below needs the
    // connection the one before gave back.
    let mut config = limited(1);
    config.queue.max_events = QUEUE_EVENTS;
    let max_batch = config.batch.max_events;
    let server = TestServer::start_on(config, &database).await;
    let (status, answer) = server.seed_trades("w1", ROWS, None).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        (answer["added"].as_u64(), answer["total"].as_u64()),
        (Some(ROWS), Some(ROWS))
    );

    // A reader that reads nothing: once its queue is full the cursor is no
    // longer read. Rows read and not yet written are at most the queue, the
    // batch the writer is blocked on and the batch of rows being queued;
    // without backpressure the cursor would have read every row.
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
        read - sent <= (QUEUE_EVENTS + max_batch + BATCH_ROWS) as f64,
        "read {read} rows, sent {sent}"
    );
    drop(stalled);
    server.all_closed().await;

    // The non-streaming endpoint answers once it holds the whole array.
    let started = Instant::now();
    let response = server.get("/api/trades/w1").await;
    let answered = started.elapsed();
    let body = support::within("the whole array", response.bytes())
        .await
        .unwrap();
    let whole = started.elapsed();
    let all: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(all.len() as u64, ROWS);

    // The first streamed row comes long before that, on both transports.
    for transport in Transport::BOTH {
        let started = Instant::now();
        let mut streamed = server.open(transport, "replay/w1").await;
        let first = streamed.next_event().await;
        let first_row = started.elapsed();
        assert_eq!(first["data"], all[0]);
        eprintln!(
            "{backend:?} {}: first streamed row after {first_row:?}; the whole array answered after {answered:?}, received after {whole:?}",
            transport.label()
        );
        assert!(
            first_row * SOONER <= answered,
            "{transport:?}: first row after {first_row:?}, whole array after {answered:?}"
        );
        drop(streamed);
        server.all_closed().await;
    }

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

async fn replays_over_the_limit_are_shed_and_give_their_connection_back(backend: Backend) {
    let database = Database::fresh(backend).await;
    let config = limited(2);
    let pool = config.store.max_connections;
    let server = TestServer::start_on(config, &database).await;
    assert_eq!(server.seed_trades("w", 1000, None).await.0, 201);
    // Paced replays: each holds its connection for as long as the test needs.
    let paced = "replay/w?rate=20";
    // The second round needs every connection the first round's replays held.
    for round in 0..2 {
        let mut replays = Vec::new();
        for transport in Transport::BOTH {
            let mut replay = server.open(transport, paced).await;
            // Its first row came through its own connection.
            replay.next_event().await;
            replays.push(replay);
        }

        server.assert_sheds("replay/w", "limit of 2 replays").await;

        // The replays leave the pool's third connection to publishes.
        server.publish("beside", &json!({ "round": round })).await;

        // Readers that go away: their replays end, giving the connection back.
        drop(replays);
        server.all_closed().await;
    }
    // A replay that runs to its end gives its connection back too: more of
    // them, one after the other, than the pool has connections.
    for _ in 0..=pool {
        let mut replay = server.open(Transport::Sse, "replay/w").await;
        assert_eq!(replay.drain().await.0.len(), 1000);
    }
}

async fn seeding_refuses_what_it_cannot_do(backend: Backend) {
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.publish_tokens = vec!["writer".parse().unwrap()];
    let server = TestServer::start_on(config, &database).await;
    assert_eq!(server.seed_trades("w", 10, None).await.0, 401);
    assert_eq!(server.seed_trades("w", 10, Some("reader")).await.0, 403);
    let (status, answer) = server.seed_trades("w", 0, Some("writer")).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("`count`"));
    let (status, answer) = server.seed_trades("bad%20wallet", 1, Some("writer")).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("`wallet`"));
    // Seeds add up.
    assert_eq!(
        server.seed_trades("w", 3, Some("writer")).await.1["total"],
        3
    );
    assert_eq!(
        server.seed_trades("w", 4, Some("writer")).await.1["total"],
        7
    );
    let all: Vec<Value> = server.get_json("/api/trades/w").await;
    assert_eq!(all.len(), 7);
    // An unknown wallet replays nothing and ends cleanly.
    let mut client = server.open(Transport::Ws, "replay/nobody").await;
    assert_eq!(client.drain().await, (vec![], End::Close(1000)));
}
