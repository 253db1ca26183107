//! A PostgreSQL outage under a running server: while the database is down,
//! a publish is answered `503` with a JSON error (never a false `201`), at
//! once with `Retry-After` once the server knows, `/readyz` answers `503`
//! saying why, and subscribers' streams end (SSE with an `end` notice,
//! WebSocket with close 1011; they resume with their last seq); once the
//! database is back, readiness, publishing and subscribing come back by
//! themselves, with no seq lost or reused. The cluster is the test's own,
//! stopped and restarted on the same port.
//!
//! Test with `cargo test -p streamgauge-server --test outage`.

mod process;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use process::{Server, postgres};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

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
    let ws_url = server
        .url("/ws/topics/outage?since=1")
        .replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("a WebSocket subscriber");
    // It publishes too: seq 2, acknowledged once committed.
    ws.send(Message::text(r#"{"publish": {"n": 0}}"#))
        .await
        .expect("a publish frame");
    let ack = tokio::time::timeout(WAIT, async {
        while let Some(message) = ws.next().await {
            if let Ok(Message::Text(text)) = message
                && text.contains("ack")
            {
                return text.to_string();
            }
        }
        panic!("the WebSocket ended before its ack");
    })
    .await
    .expect("the ack");
    assert_eq!(ack, r#"{"ack":{"seq":2}}"#);

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

    // The WebSocket subscriber is closed with 1011.
    let close = tokio::time::timeout(WAIT, async {
        while let Some(message) = ws.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the WebSocket subscriber to be closed");
    assert_eq!(close, Some(1011));

    // Readiness says why; publishes are refused at once, never stored.
    let readyz = until_status(&http, &server, "/readyz", 503).await;
    assert_eq!(readyz["status"], "database_unreachable", "{readyz}");
    assert!(readyz["reason"].is_string(), "{readyz}");
    let response = http
        .post(server.url("/topics/outage/events"))
        .json(&json!({ "n": 4 }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("streamgauge_publish_failures_total{reason=\"database_down\"}")
            && metrics.contains("streamgauge_database_up 0\n"),
        "{metrics}"
    );

    cluster.resume();
    // Ready again by itself.
    let readyz = until_status(&http, &server, "/readyz", 200).await;
    assert_eq!(readyz["status"], "ready");
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
    assert_eq!(
        resumed, 3,
        "the seqs of the failed publishes were not taken"
    );
    // And subscribers resume from their last seq.
    let mut again = http
        .get(server.url("/sse/topics/outage?since=1"))
        .send()
        .await
        .expect("resubscribing");
    let read = tokio::time::timeout(WAIT, async {
        let mut read = String::new();
        while events(&read).len() < 2 {
            let chunk = again.chunk().await.expect("reading").expect("an event");
            read.push_str(&String::from_utf8_lossy(&chunk));
        }
        read
    })
    .await
    .expect("the events after the resume");
    assert_eq!(events(&read), [(2, 0), (3, 3)]);
    server.kill();
}

/// Polls `path` until it answers `status`, within [`WAIT`]: its JSON.
async fn until_status(http: &reqwest::Client, server: &Server, path: &str, status: u16) -> Value {
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    tokio::time::timeout(WAIT, async {
        loop {
            poll.tick().await;
            let response = http.get(server.url(path)).send().await.expect("an answer");
            if response.status() == status {
                return response.json().await.expect("a JSON answer");
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{path} never answered {status}"))
}
