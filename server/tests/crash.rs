//! Crash durability: the server binary is killed with SIGKILL while sixteen
//! publishers are writing to a topic and a subscriber is reading it; after a
//! restart on the same database every event it acknowledged with `201` is
//! there, under the seq it was given and with its body, seqs are
//! contiguous, the subscriber resumes from its own last seq and gets every
//! event once (those it missed, then those published after the restart),
//! and a subscriber resumes from the middle. And (issue 25) a publish
//! whose answer was lost to a crash right after its commit
//! (`--inject-exit-after-commit`), retried after the restart with its
//! idempotency key, gets its first `seq` and is stored once. On SQLite and
//! on a real PostgreSQL (a throwaway cluster, or `TEST_DATABASE_URL`).
//!
//! Test with `cargo test -p streamgauge-server --test crash`.

mod process;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;

use process::topic::{
    Acked, Subscriber, WAIT, assert_contiguous, http_clients, publisher, until_acked,
};
use process::{Server, postgres};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Publishers writing at once.
const PUBLISHERS: u64 = 16;

/// Acknowledged publishes to wait for before the kill.
const BEFORE_KILL: usize = 1000;

/// The topic written.
const TOPIC: &str = "crash";

/// The `k`s published after the restart (apart from the publishers').
const AFTER_RESTART: std::ops::Range<u64> = 999_000_000..999_000_100;

/// Publishes `{"k": …}` for each of `ks`, one after the other, expecting
/// `201`s; records them in `acked`.
async fn publish_each(
    http: &reqwest::Client,
    server: &Server,
    ks: std::ops::Range<u64>,
    acked: &Acked,
) {
    let url = server.url(&format!("/topics/{TOPIC}/events"));
    for k in ks {
        let response = http
            .post(&url)
            .json(&json!({ "k": k }))
            .send()
            .await
            .expect("publishing after the restart");
        assert_eq!(response.status(), 201);
        let answer: Value = response.json().await.expect("a JSON answer");
        let seq = answer["seq"].as_u64().expect("a seq in the 201");
        acked.lock().unwrap().insert(seq, k);
    }
}

async fn acknowledged_events_survive_a_kill(database: &str) {
    let dir = tempfile::tempdir().expect("a working directory");
    let (http, streams) = http_clients();
    let server = Server::start(database, dir.path());
    // A subscriber connected from the start, through the kill.
    let connected = Subscriber::open(&streams, &server, TOPIC, 0).await;
    let connected = tokio::spawn(connected.read_to_the_end());
    let acked: Acked = Arc::default();
    let notify = Arc::new(Notify::new());
    let url = server.url(&format!("/topics/{TOPIC}/events"));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            tokio::spawn(publisher(
                http.clone(),
                url.clone(),
                p * 1_000_000..u64::MAX,
                Arc::clone(&acked),
                Arc::clone(&notify),
            ))
        })
        .collect();
    until_acked(&acked, &notify, BEFORE_KILL).await;
    // Publishers are mid-flight: some publishes are committed and not yet
    // acknowledged, some not committed at all.
    server.kill();
    for publisher in publishers {
        tokio::time::timeout(WAIT, publisher)
            .await
            .expect("a publisher to stop")
            .expect("a publisher task");
    }
    let before_kill = tokio::time::timeout(WAIT, connected)
        .await
        .expect("the connected subscriber's stream to break")
        .expect("the connected subscriber");
    assert_contiguous(&before_kill, 1, "before the kill");
    let resume_at = before_kill.last().map_or(0, |&(seq, _)| seq);
    assert!(resume_at > 0, "the connected subscriber received nothing");
    let last = *acked.lock().unwrap().keys().next_back().unwrap();

    let server = Server::start(database, dir.path());
    let events = Subscriber::open(&streams, &server, TOPIC, 0)
        .await
        .read_through(last)
        .await;
    assert_contiguous(&events, 1, "after the restart");
    let stored: BTreeMap<u64, u64> = events.into_iter().collect();
    let acked_before_kill = acked.lock().unwrap().clone();
    for (seq, k) in &acked_before_kill {
        assert_eq!(
            stored.get(seq),
            Some(k),
            "acknowledged seq {seq} (k {k}) lost or changed"
        );
    }
    eprintln!(
        "{database}: {} publishes acknowledged before SIGKILL, all {} present after the restart ({} stored); \
         the connected subscriber had {resume_at}",
        acked_before_kill.len(),
        acked_before_kill.len(),
        stored.len()
    );
    // The subscriber connected through the kill resumes from its own last
    // seq, and gets every event once: those it missed, then those
    // published after the restart.
    let mut resumed = Subscriber::open(&streams, &server, TOPIC, resume_at).await;
    publish_each(&http, &server, AFTER_RESTART, &acked).await;
    let last = *acked.lock().unwrap().keys().next_back().unwrap();
    let after_kill = resumed.read_through(last).await;
    assert_contiguous(&after_kill, resume_at + 1, "resumed after the restart");
    let received: BTreeMap<u64, u64> = before_kill.into_iter().chain(after_kill).collect();
    for (seq, k) in acked.lock().unwrap().iter() {
        assert_eq!(
            received.get(seq),
            Some(k),
            "the resuming subscriber missed acknowledged seq {seq} (k {k})"
        );
    }
    // Resumable from the middle.
    let middle = last / 2;
    let mut subscriber = Subscriber::open(&streams, &server, TOPIC, middle).await;
    let first = subscriber.read_through(middle + 1).await;
    assert_eq!(first.first().map(|&(seq, _)| seq), Some(middle + 1));
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

/// Publishes `{"k": k}` to `topic` with `key` as its `Idempotency-Key`.
async fn publish_with_key(
    http: &reqwest::Client,
    server: &Server,
    topic: &str,
    key: &str,
    k: u64,
) -> reqwest::Result<reqwest::Response> {
    http.post(server.url(&format!("/topics/{topic}/events")))
        .header("idempotency-key", key)
        .json(&json!({ "k": k }))
        .send()
        .await
}

async fn a_retry_after_a_crash_between_commit_and_answer_gets_the_first_seq(database: &str) {
    let dir = tempfile::tempdir().expect("a working directory");
    let (http, streams) = http_clients();
    let topic = "retried";
    let server = Server::start_with(database, dir.path(), &["--inject-exit-after-commit"]);
    let lost = publish_with_key(&http, &server, topic, "order-1", 1).await;
    assert!(
        lost.is_err(),
        "answered {lost:?} by a server killed at commit"
    );
    let status = server.exited().await;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");

    let server = Server::start(database, dir.path());
    let retry = publish_with_key(&http, &server, topic, "order-1", 1)
        .await
        .expect("the retry answered");
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let answer: Value = retry.json().await.expect("a JSON answer");
    assert_eq!(answer, json!({ "seq": 1 }));
    // Stored once: from the start, the event, then the next publish.
    let next = publish_with_key(&http, &server, topic, "order-2", 2)
        .await
        .expect("publishing after the retry");
    assert_eq!(next.status(), 201);
    let events = Subscriber::open(&streams, &server, topic, 0)
        .await
        .read_through(2)
        .await;
    assert_eq!(events, [(1, 1), (2, 2)]);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_between_commit_and_answer_gets_the_first_seq_on_sqlite() {
    let dir = tempfile::tempdir().expect("a directory for the database");
    let url = format!("sqlite://{}", dir.path().join("retry.db").display());
    a_retry_after_a_crash_between_commit_and_answer_gets_the_first_seq(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_between_commit_and_answer_gets_the_first_seq_on_postgres() {
    let database = postgres::fresh_database().await;
    a_retry_after_a_crash_between_commit_and_answer_gets_the_first_seq(database.url()).await;
}
