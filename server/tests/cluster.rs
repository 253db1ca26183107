//! Issue 17, the cluster, with the server binary: three nodes on one real
//! PostgreSQL database, publishers on every node; one node is killed with
//! SIGKILL and its subscribers resume on the other nodes from their last
//! seq, losing nothing and getting nothing twice. And SQLite stays
//! single-node: a second server on the same file exits 2, naming it.
//!
//! Test with `cargo test -p streamgauge-server --test cluster`.

mod process;

use std::collections::BTreeMap;
use std::sync::Arc;

use process::topic::{
    Acked, Subscriber, WAIT, assert_contiguous, http_clients, publisher, until_acked,
};
use process::{Server, exit_of, postgres};
use tokio::sync::Notify;

/// The topic written.
const TOPIC: &str = "cluster";

/// Acknowledged publishes to wait for before the kill.
const BEFORE_KILL: usize = 300;

/// Publishes each surviving node's publisher makes.
const SURVIVORS_PUBLISH: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_a_killed_node_resume_on_the_others_and_lose_nothing() {
    let database = postgres::fresh_database().await;
    let dir = tempfile::tempdir().expect("a working directory");
    let mut nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(database.url(), dir.path()))
        .collect();
    let (http, streams) = http_clients();
    // Two subscribers on the node to be killed, from the start.
    let mut doomed = Vec::new();
    for _ in 0..2 {
        let subscriber = Subscriber::open(&streams, &nodes[0], TOPIC, 0).await;
        doomed.push(tokio::spawn(subscriber.read_to_the_end()));
    }
    let acked: Acked = Arc::default();
    let notify = Arc::new(Notify::new());
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let first = n as u64 * 1_000_000;
            // The node to be killed publishes until it dies.
            let last = if n == 0 {
                u64::MAX
            } else {
                first + SURVIVORS_PUBLISH
            };
            tokio::spawn(publisher(
                http.clone(),
                node.url(&format!("/topics/{TOPIC}/events")),
                first..last,
                Arc::clone(&acked),
                Arc::clone(&notify),
            ))
        })
        .collect();
    until_acked(&acked, &notify, BEFORE_KILL).await;
    nodes.remove(0).kill();
    // Each subscriber's stream breaks; it resumes on another node from
    // the last seq it received.
    let mut resumed = Vec::new();
    for (subscriber, node) in doomed.into_iter().zip(&nodes) {
        let before = tokio::time::timeout(WAIT, subscriber)
            .await
            .expect("the stream to break with its node")
            .expect("a subscriber");
        assert_contiguous(&before, 1, "before the kill");
        let resume_at = before.last().map_or(0, |&(seq, _)| seq);
        let subscriber = Subscriber::open(&streams, node, TOPIC, resume_at).await;
        resumed.push((before, resume_at, subscriber));
    }
    for publisher in publishers {
        tokio::time::timeout(WAIT, publisher)
            .await
            .expect("a publisher to finish")
            .expect("a publisher task");
    }
    let acked = acked.lock().unwrap().clone();
    let last = *acked.keys().next_back().unwrap();
    for (n, (before, resume_at, mut subscriber)) in resumed.into_iter().enumerate() {
        let after = subscriber.read_through(last).await;
        assert_contiguous(&after, resume_at + 1, "resumed on another node");
        let received: BTreeMap<u64, u64> = before.into_iter().chain(after).collect();
        for (seq, k) in &acked {
            assert_eq!(
                received.get(seq),
                Some(k),
                "subscriber {n} missed acknowledged seq {seq} (k {k})"
            );
        }
        eprintln!(
            "subscriber {n}: {} events before the kill, resumed at {resume_at} on another node, \
             {} acknowledged all received",
            resume_at,
            acked.len()
        );
    }
}

#[test]
fn a_second_server_on_one_sqlite_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("a directory for the database");
    let file = dir.path().join("single.db");
    let url = format!("sqlite://{}", file.display());
    let first = Server::start(&url, dir.path());
    let (code, stderr) = exit_of(&url, dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("another streamgauge-server holds the SQLite database")
            && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );
    // The lock lives as long as the process that holds it, however it ends.
    first.kill();
    Server::start(&url, dir.path()).kill();
}
