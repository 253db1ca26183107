//! A PostgreSQL outage under a running server: while the database is down,
//! a publish is answered `503` with a JSON error (never a false `201`) and
//! a subscriber's stream ends (it is told, and resumes with its last seq);
//! once the database is back, publishing and subscribing work again by
//! themselves, with no seq lost or reused. The cluster is the test's own,
//! stopped and restarted on the same port.
//!
//! Test with `cargo test -p streamgauge-server --test outage`.

mod process;

use std::time::Duration;

use process::{Server, postgres};
use serde_json::{Value, json};

/// The longest any wait may take.
const WAIT: Duration = Duration::from_secs(30);

/// Publishes `{"n": n}`: the status and the JSON answer.
async fn publish(http: &reqwest::Client, server: &Server, n: u64) -> (u16, Value) {
    let response = http
        .post(server.url("/topics/outage/events"))
        .json(&json!({ "n": n }))
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// The `data.n` of every event in an SSE body read so far.
fn events(body: &str) -> Vec<(u64, u64)> {
    body.split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| {
            let event: Value = serde_json::from_str(data).expect("an event");
            (
                event["seq"].as_u64().unwrap(),
                event["data"]["n"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_fail_honestly_during_an_outage_and_service_resumes_by_itself() {
    let mut cluster = postgres::Cluster::start();
    let dir = tempfile::tempdir().expect("a working directory");
    let server = Server::start(&cluster.url(), dir.path());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(publish(&http, &server, 1).await.0, 201);
    let mut subscriber = http
        .get(server.url("/sse/topics/outage?since=0"))
        .send()
        .await
        .expect("subscribing");
    let first = subscriber
        .chunk()
        .await
        .expect("reading")
        .expect("the first event");
    assert_eq!(events(&String::from_utf8_lossy(&first)), [(1, 1)]);

    cluster.stop();
    let (status, answer) = publish(&http, &server, 2).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("not stored"),
        "{answer}"
    );
    // The subscriber is told: an `end` notice saying why, then the end of
    // its stream (a WebSocket gets 1011).
    let rest = tokio::time::timeout(WAIT, async {
        let mut rest = Vec::new();
        while let Ok(Some(chunk)) = subscriber.chunk().await {
            rest.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&rest).into_owned()
    })
    .await
    .expect("the subscriber's stream to end");
    assert!(
        rest.ends_with(
            "event: end\ndata: {\"end\":{\"message\":\"storage unavailable; resume from your last seq\",\"reason\":\"storage_unavailable\"}}\n\n"
        ),
        "{rest:?}"
    );

    cluster.resume();
    // Service comes back by itself: publishes succeed again within WAIT.
    let resumed = tokio::time::timeout(WAIT, async {
        loop {
            let (status, answer) = publish(&http, &server, 3).await;
            if status == 201 {
                return answer["seq"].as_u64().unwrap();
            }
            assert_eq!(status, 503, "{answer}");
        }
    })
    .await
    .expect("publishing to work again");
    assert_eq!(resumed, 2, "the seq of the failed publish was not taken");
    // And subscribers resume from their last seq.
    let mut again = http
        .get(server.url("/sse/topics/outage?since=1"))
        .send()
        .await
        .expect("resubscribing");
    let chunk = tokio::time::timeout(WAIT, again.chunk())
        .await
        .expect("an event after the resume")
        .expect("reading")
        .expect("an event");
    assert_eq!(events(&String::from_utf8_lossy(&chunk)), [(2, 3)]);
    server.kill();
}
