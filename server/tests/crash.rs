//! Crash durability: the server binary is killed with SIGKILL while sixteen
//! publishers are writing to a topic; after a restart on the same database
//! every event it acknowledged with `201` is there, under the seq it was
//! given and with its body, seqs are contiguous, and a subscriber resumes
//! from the middle. On SQLite and on a real PostgreSQL (a throwaway
//! cluster, or `TEST_DATABASE_URL`).
//!
//! Test with `cargo test -p streamgauge-server --test crash`.

mod process;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use process::{Server, postgres};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The longest any wait may take.
const WAIT: Duration = Duration::from_secs(20);

/// Publishers writing at once.
const PUBLISHERS: u64 = 16;

/// Acknowledged publishes to wait for before the kill.
const BEFORE_KILL: usize = 1000;

/// The topic written.
const TOPIC: &str = "crash";

/// What the publishers were acknowledged: seq -> the body's `k`.
type Acked = Arc<Mutex<BTreeMap<u64, u64>>>;

/// Publishes `{"k": …}` until the server stops answering; records every
/// `201`.
async fn publisher(
    http: reqwest::Client,
    url: String,
    first_k: u64,
    acked: Acked,
    notify: Arc<Notify>,
) {
    for k in first_k.. {
        let Ok(response) = http.post(&url).json(&json!({ "k": k })).send().await else {
            return;
        };
        if response.status() != 201 {
            return;
        }
        let Ok(answer) = response.json::<Value>().await else {
            return;
        };
        let seq = answer["seq"].as_u64().expect("a seq in the 201");
        acked.lock().unwrap().insert(seq, k);
        notify.notify_one();
    }
}

/// Reads the topic from `since` over SSE until seq `last` has arrived:
/// seq -> the body's `k`, in order.
async fn read_topic(
    http: &reqwest::Client,
    server: &Server,
    since: u64,
    last: u64,
) -> Vec<(u64, u64)> {
    let url = server.url(&format!("/sse/topics/{TOPIC}?since={since}"));
    let mut response = http.get(url).send().await.expect("subscribing");
    assert_eq!(response.status(), 200);
    let (mut events, mut buffer) = (Vec::new(), String::new());
    tokio::time::timeout(WAIT, async {
        while events.last().is_none_or(|&(seq, _)| seq < last) {
            let chunk = response
                .chunk()
                .await
                .expect("reading")
                .expect("the stream went on");
            buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let event: Value = serde_json::from_str(data).expect("an event");
                assert!(event.get("gap").is_none(), "a gap notice: {event}");
                events.push((
                    event["seq"].as_u64().unwrap(),
                    event["data"]["k"].as_u64().unwrap(),
                ));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out reading the topic up to seq {last}"));
    events
}

async fn acknowledged_events_survive_a_kill(database: &str) {
    let dir = tempfile::tempdir().expect("a working directory");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let server = Server::start(database, dir.path());
    let acked: Acked = Arc::default();
    let notify = Arc::new(Notify::new());
    let url = server.url(&format!("/topics/{TOPIC}/events"));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            tokio::spawn(publisher(
                http.clone(),
                url.clone(),
                p * 1_000_000,
                Arc::clone(&acked),
                Arc::clone(&notify),
            ))
        })
        .collect();
    tokio::time::timeout(WAIT, async {
        while acked.lock().unwrap().len() < BEFORE_KILL {
            notify.notified().await;
        }
    })
    .await
    .expect("publishes acknowledged before the kill");
    // Publishers are mid-flight: some publishes are committed and not yet
    // acknowledged, some not committed at all.
    server.kill();
    for publisher in publishers {
        tokio::time::timeout(WAIT, publisher)
            .await
            .expect("a publisher to stop")
            .expect("a publisher task");
    }
    let acked = acked.lock().unwrap().clone();
    let last = *acked.keys().next_back().unwrap();

    let server = Server::start(database, dir.path());
    let events = read_topic(&http, &server, 0, last).await;
    let seqs: Vec<u64> = events.iter().map(|&(seq, _)| seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seqs not contiguous"
    );
    let stored: BTreeMap<u64, u64> = events.into_iter().collect();
    for (seq, k) in &acked {
        assert_eq!(
            stored.get(seq),
            Some(k),
            "acknowledged seq {seq} (k {k}) lost or changed"
        );
    }
    eprintln!(
        "{database}: {} publishes acknowledged before SIGKILL, all {} present after the restart ({} stored)",
        acked.len(),
        acked.len(),
        stored.len()
    );
    // Resumable from the middle.
    let middle = last / 2;
    let resumed = read_topic(&http, &server, middle, middle + 1).await;
    assert_eq!(resumed.first().map(|&(seq, _)| seq), Some(middle + 1));
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_on_sqlite() {
    let dir = tempfile::tempdir().expect("a directory for the database");
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    acknowledged_events_survive_a_kill(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_on_postgres() {
    let database = postgres::fresh_database().await;
    acknowledged_events_survive_a_kill(database.url()).await;
}
