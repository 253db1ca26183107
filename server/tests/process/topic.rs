//! A topic's publishers and SSE subscriber, for the tests that run the
//! server binary: bodies `{"k": …}`, read back as (seq, `k`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::Server;

/// The longest any wait may take.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The HTTP clients of a test: one for requests (each bounded), one for
/// streams (which outlive any request timeout: bounded by [`WAIT`]).
pub(crate) fn http_clients() -> (reqwest::Client, reqwest::Client) {
    let requests = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let streams = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    (requests, streams)
}

/// Waits until `acked` holds `count` publishes (`notify` says when it
/// grows).
pub(crate) async fn until_acked(acked: &Acked, notify: &Notify, count: usize) {
    tokio::time::timeout(WAIT, async {
        while acked.lock().unwrap().len() < count {
            notify.notified().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} publishes acknowledged within {WAIT:?}"));
}

/// What the publishers were acknowledged: seq -> the body's `k`.
pub(crate) type Acked = Arc<Mutex<BTreeMap<u64, u64>>>;

/// Publishes `{"k": …}` for each of `ks` until the server stops
/// answering; records every `201` and notifies `notify`.
pub(crate) async fn publisher(
    http: reqwest::Client,
    url: String,
    ks: std::ops::Range<u64>,
    acked: Acked,
    notify: Arc<Notify>,
) {
    for k in ks {
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

/// A subscriber to the topic over SSE.
pub(crate) struct Subscriber {
    response: reqwest::Response,
    buffer: String,
}

impl Subscriber {
    /// Subscribes to `topic` from `since`.
    pub(crate) async fn open(
        http: &reqwest::Client,
        server: &Server,
        topic: &str,
        since: u64,
    ) -> Self {
        let url = server.url(&format!("/sse/topics/{topic}?since={since}"));
        let response = tokio::time::timeout(WAIT, http.get(url).send())
            .await
            .expect("subscribing in time")
            .expect("subscribing");
        assert_eq!(response.status(), 200);
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's seq and body `k`; `None` once the stream has ended
    /// or broken. A gap notice fails the test.
    pub(crate) async fn next(&mut self) -> Option<(u64, u64)> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let event: Value = serde_json::from_str(data).expect("an event");
                assert!(event.get("gap").is_none(), "a gap notice: {event}");
                return Some((
                    event["seq"].as_u64().expect("a seq"),
                    event["data"]["k"].as_u64().expect("a k"),
                ));
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Events (seq, `k`), in order, until seq `last` has arrived.
    pub(crate) async fn read_through(&mut self, last: u64) -> Vec<(u64, u64)> {
        let mut events = Vec::new();
        tokio::time::timeout(WAIT, async {
            while events.last().is_none_or(|&(seq, _)| seq < last) {
                events.push(self.next().await.expect("the stream went on"));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out reading the topic up to seq {last}"));
        events
    }

    /// Every event until the stream breaks.
    pub(crate) async fn read_to_the_end(mut self) -> Vec<(u64, u64)> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// Asserts that `events` are seqs `first..` with no gap and no duplicate.
pub(crate) fn assert_contiguous(events: &[(u64, u64)], first: u64, what: &str) {
    let seqs: Vec<u64> = events.iter().map(|&(seq, _)| seq).collect();
    let wanted: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(seqs, wanted, "{what}: seqs not contiguous from {first}");
}
