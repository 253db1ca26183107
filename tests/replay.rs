//! Replay of a stored dataset, on SQLite and on a real PostgreSQL: 100,000
//! rows stream from a database cursor with bounded memory (the cursor stops
//! reading behind a reader that reads nothing), the first row arrives long
//! before the non-streaming endpoint answers, and replays stay under
//! `--max-replays` and give their database connection back however they
//! end. The dataset's endpoints are bounded (issue 25): the array answers
//! at most its `limit` and counts under `--max-replays`; seeds take the
//! admin token once one is set, stay under `--max-seed`, and commit chunk
//! by chunk, so publishes go through while a seed runs and a seed cut
//! midway keeps what it committed. The heap itself, against the number of
//! rows, is measured in `tests/heap.rs`.

use std::time::Instant;

use serde_json::{Value, json};
use streamgauge_server::Config;
use streamgauge_server::source::replay::BATCH_ROWS;

use crate::support::{self, Backend, Database, End, TestServer, Transport};

on_both_databases!(
    replay_streams_every_row_with_bounded_memory_and_an_early_first_row,
    replays_over_the_limit_are_shed_and_give_their_connection_back,
    seeding_refuses_what_it_cannot_do,
    seeding_takes_the_admin_token_once_one_is_set,
    the_array_answers_at_most_its_limit_and_names_the_stream_beyond,
    seeds_of_one_wallet_at_once_take_turns_chunk_by_chunk,
    a_seed_cut_midway_keeps_the_chunks_it_committed,
    publishes_are_committed_between_the_chunks_of_a_seed,
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
    let response = server.get(&format!("/api/trades/w1?limit={ROWS}")).await;
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
        // So is the whole array, which reads while holding a permit.
        let response = server.get("/api/trades/w?limit=1000").await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("limit of 2 replays"),
            "{body}"
        );

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
    // Each round shed an SSE replay, a WebSocket one and an array.
    let all: Vec<Value> = server.get_json("/api/trades/w?limit=1000").await;
    assert_eq!(all.len(), 1000);
    assert_eq!(refusals(&server, "max_replays").await, 6.0);
}

/// Requests refused at the dataset bound `reason`.
async fn refusals(server: &TestServer, reason: &str) -> f64 {
    let key = format!("streamgauge_dataset_refusals_total{{reason=\"{reason}\"}}");
    server.metrics().await.get(&key)
}

async fn seeding_refuses_what_it_cannot_do(backend: Backend) {
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.publish_tokens = vec!["writer".parse().unwrap()];
    config.trades.max_seed = 100;
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
    // Over --max-seed: refused, counted, nothing added.
    let (status, answer) = server.seed_trades("w", 101, Some("writer")).await;
    assert_eq!(status, 400);
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("`count`") && error.contains("--max-seed (100)"),
        "{error}"
    );
    assert_eq!(refusals(&server, "max_seed").await, 1.0);
    assert_eq!(
        server.seed_trades("w", 100, Some("writer")).await.1["total"],
        107
    );
    let all: Vec<Value> = server.get_json("/api/trades/w").await;
    assert_eq!(all.len(), 107);
    // An unknown wallet replays nothing and ends cleanly.
    let mut client = server.open(Transport::Ws, "replay/nobody").await;
    assert_eq!(client.drain().await, (vec![], End::Close(1000)));
}

async fn seeding_takes_the_admin_token_once_one_is_set(backend: Backend) {
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.publish_tokens = vec!["writer".parse().unwrap()];
    config.admin_tokens = vec!["ops=root-secret".parse().unwrap()];
    let server = TestServer::start_on(config, &database).await;
    assert_eq!(server.seed_trades("w", 10, None).await.0, 401);
    // A publish token publishes, and no longer seeds.
    let (status, answer) = server.seed_trades("w", 10, Some("writer")).await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (403, Some("wrong_token"))
    );
    let (status, answer) = server.try_publish("t", "1", Some("writer")).await;
    assert_eq!((status, answer["seq"].as_u64()), (201, Some(1)));
    let (status, answer) = server.seed_trades("w", 10, Some("root-secret")).await;
    assert_eq!(
        (status, answer["total"].as_u64()),
        (201, Some(10)),
        "{answer}"
    );
}

async fn the_array_answers_at_most_its_limit_and_names_the_stream_beyond(backend: Backend) {
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.trades.default_limit = 10;
    config.trades.max_limit = 20;
    let server = TestServer::start_on(config, &database).await;
    for (wallet, rows) in [("small", 10), ("big", 15), ("huge", 25)] {
        assert_eq!(server.seed_trades(wallet, rows, None).await.0, 201);
    }
    let rows_read = async || (server.metrics().await).get("streamgauge_replay_rows_read_total");

    // Within the limit: every trade, in order.
    let all: Vec<Value> = server.get_json("/api/trades/small").await;
    let ids: Vec<u64> = all.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    assert_eq!(all[0]["wallet"], "small");
    let nobody: Vec<Value> = server.get_json("/api/trades/nobody").await;
    assert!(nobody.is_empty());

    // Over it: 413, the count, and the stream to use; no row is read.
    let before = rows_read().await;
    let (status, answer) = status_and_json(server.get("/api/trades/big").await).await;
    assert_eq!(status, 413);
    assert_eq!(
        (
            &answer["wallet"],
            &answer["trades"],
            &answer["limit"],
            &answer["max_limit"],
            &answer["stream"]
        ),
        (
            &json!("big"),
            &json!(15),
            &json!(10),
            &json!(20),
            &json!("/sse/replay/big")
        )
    );
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("/sse/replay/big") && error.contains("limit=15"),
        "{error}"
    );
    assert_eq!(rows_read().await, before);
    let all: Vec<Value> = server.get_json("/api/trades/big?limit=15").await;
    assert_eq!(all.len(), 15);
    assert_eq!(rows_read().await, before + 15.0);
    assert_eq!(server.get("/api/trades/big?limit=14").await.status(), 413);
    // Beyond any limit a request may give: the stream alone is named.
    let (status, answer) = status_and_json(server.get("/api/trades/huge?limit=20").await).await;
    assert_eq!((status, &answer["trades"]), (413, &json!(25)));
    assert!(
        !answer["error"].as_str().unwrap().contains("limit=25"),
        "{answer}"
    );
    assert_eq!(refusals(&server, "trades_limit").await, 3.0);

    for (query, error) in [
        (
            "limit=21",
            "invalid parameter `limit`: 21 is out of bounds (1..=20)",
        ),
        (
            "limit=0",
            "invalid parameter `limit`: 0 is out of bounds (1..=20)",
        ),
        (
            "limit=ten",
            "invalid parameter `limit`: \"ten\" is not a non-negative integer",
        ),
        ("lmit=3", "unknown parameter `lmit`"),
    ] {
        let (status, answer) =
            status_and_json(server.get(&format!("/api/trades/small?{query}")).await).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(error)),
            "{query}"
        );
    }
}

/// A response's status and JSON body.
async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// Ids of the trades `GET /api/trades/{wallet}?limit={limit}` answers.
async fn trade_ids(server: &TestServer, wallet: &str, limit: u64) -> Vec<u64> {
    let all: Vec<Value> = server
        .get_json(&format!("/api/trades/{wallet}?limit={limit}"))
        .await;
    all.iter().map(|t| t["id"].as_u64().unwrap()).collect()
}

async fn seeds_of_one_wallet_at_once_take_turns_chunk_by_chunk(backend: Backend) {
    const EACH: u64 = 3000;
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.trades.seed_chunk = 100;
    let server = TestServer::start_on(config, &database).await;
    let (a, b) = tokio::join!(
        server.seed_trades("w", EACH, None),
        server.seed_trades("w", EACH, None)
    );
    for (status, answer) in [&a, &b] {
        assert_eq!(
            (*status, answer["added"].as_u64()),
            (201, Some(EACH)),
            "{answer}"
        );
    }
    // Whichever finished last saw every trade.
    let totals = [
        a.1["total"].as_u64().unwrap(),
        b.1["total"].as_u64().unwrap(),
    ];
    assert_eq!(totals.iter().max(), Some(&(2 * EACH)), "{totals:?}");
    assert_eq!(
        trade_ids(&server, "w", 2 * EACH).await,
        (1..=2 * EACH).collect::<Vec<_>>()
    );
    let seeded = server
        .metrics()
        .await
        .get("streamgauge_trades_seeded_total");
    assert_eq!(seeded, (2 * EACH) as f64);
}

async fn a_seed_cut_midway_keeps_the_chunks_it_committed(backend: Backend) {
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.trades.seed_chunk = 10;
    let server = TestServer::start_on(config, &database).await;
    // A fault: the store refuses trade 26 on, in the seed's third chunk.
    let (fault, heal) = match backend {
        Backend::Sqlite => (
            "CREATE TRIGGER cut BEFORE INSERT ON trades WHEN NEW.id > 25 \
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
            "DROP TRIGGER cut;",
        ),
        Backend::Postgres => (
            "CREATE FUNCTION cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.id > 25 THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER cut BEFORE INSERT ON trades FOR EACH ROW EXECUTE FUNCTION cut();",
            "DROP TRIGGER cut ON trades; DROP FUNCTION cut();",
        ),
    };
    database.execute(fault).await;
    let (status, answer) = server.seed_trades("w", 40, None).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["added"], 20);
    assert_eq!(
        answer["error"],
        "storage unavailable after adding 20 of 40 trades; the trades added stay, retry for the rest"
    );
    assert_eq!(
        trade_ids(&server, "w", 100).await,
        (1..=20).collect::<Vec<_>>()
    );
    database.execute(heal).await;
    let (status, answer) = server.seed_trades("w", 20, None).await;
    assert_eq!(
        (status, answer["total"].as_u64()),
        (201, Some(40)),
        "{answer}"
    );
    assert_eq!(
        trade_ids(&server, "w", 100).await,
        (1..=40).collect::<Vec<_>>()
    );

    // A shutdown cuts a seed between two chunks too, and says so.
    let stop = async {
        server
            .wait_for("the seed's first chunk", |m| {
                m.get("streamgauge_trades_seeded_total") > 40.0
            })
            .await;
        server.shutdown.trigger();
    };
    let ((status, answer), ()) = tokio::join!(server.seed_trades("w", 100_000, None), stop);
    assert_eq!(status, 503, "{answer}");
    let added = answer["added"].as_u64().unwrap();
    assert!(added > 0 && added < 100_000 && added % 10 == 0, "{answer}");
    let error = format!(
        "the server is shutting down after adding {added} of 100000 trades; the trades added \
         stay, retry for the rest"
    );
    assert_eq!(answer["error"].as_str(), Some(error.as_str()));
}

/// Trades of the seed that publishes must get through; with chunks of
/// [`PUBLISHED_DURING_CHUNK`] trades, a hundred chunks. docs/performance.md
/// measures publish latency during a 1,000,000-row seed of 10,000-row
/// chunks (the defaults) in a release build; this is the same at a scale a
/// debug build seeds in seconds.
const PUBLISHED_DURING_ROWS: u64 = 100_000;
const PUBLISHED_DURING_CHUNK: u64 = 1000;

/// Publishes acknowledged while a seed had committed some of its chunks
/// and not all, before and after each publish: on SQLite, where a seed in
/// one transaction would hold the write lock throughout, a publish waits
/// for at most one chunk. Publishes are counted, never timed: the
/// latencies go to stderr.
async fn publishes_are_committed_between_the_chunks_of_a_seed(backend: Backend) {
    /// Enough to tell chunks apart from one transaction (none could be
    /// acknowledged in between), far below the hundred chunks.
    const AT_LEAST: usize = 5;
    let database = Database::fresh(backend).await;
    let mut config = support::config();
    config.trades.seed_chunk = PUBLISHED_DURING_CHUNK;
    let server = TestServer::start_on(config, &database).await;
    let seeded = async || {
        server
            .metrics()
            .await
            .get("streamgauge_trades_seeded_total")
    };
    let seeding = server.seed_trades("w", PUBLISHED_DURING_ROWS, None);
    tokio::pin!(seeding);
    let mut between = Vec::new();
    let mut publishes = 0;
    let (status, answer) = loop {
        let publish = async {
            let before = seeded().await;
            let started = Instant::now();
            server.publish("beside", &json!({ "n": publishes })).await;
            let took = started.elapsed();
            let after = seeded().await;
            (before > 0.0 && after < PUBLISHED_DURING_ROWS as f64).then_some(took)
        };
        tokio::select! {
            answer = &mut seeding => break answer,
            during = publish => {
                publishes += 1;
                between.extend(during);
            }
        }
    };
    assert_eq!(
        (status, answer["total"].as_u64()),
        (201, Some(PUBLISHED_DURING_ROWS)),
        "{answer}"
    );
    eprintln!(
        "{backend:?}: {} of {publishes} publishes acknowledged between chunks of the seed; the slowest took {:?}",
        between.len(),
        between.iter().max()
    );
    assert!(
        between.len() >= AT_LEAST,
        "{} of {publishes} publishes were acknowledged between chunks of the seed",
        between.len()
    );
}
