//! The ticker and token streams deliver exactly what docs/protocol.md
//! promises, on both transports.

use std::time::Instant;

use serde_json::{Value, json};

use crate::support::{self, End, TestServer, Transport, now_micros, within};

/// The clean end each transport gives a stream that completed.
fn completed(transport: Transport) -> End {
    match transport {
        Transport::Sse => End::Body,
        Transport::Ws => End::Close(1000),
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn ticker_delivers_count_events_in_order_with_sane_ts_then_ends_cleanly() {
    let server = TestServer::start(support::config()).await;
    for transport in Transport::BOTH {
        for query in ["count=200&rate=0&size=16", "count=20&rate=200&size=16"] {
            let before = now_micros();
            let mut client = server.open(transport, &format!("ticker?{query}")).await;
            let (events, end) = client.drain().await;
            let after = now_micros();

            assert_eq!(end, completed(transport), "{transport:?} {query}");
            let count = events.len() as u64;
            assert_eq!(
                seqs(&events),
                (1..=count).collect::<Vec<_>>(),
                "{transport:?} {query}"
            );
            assert!(count == 200 || count == 20);
            let ts: Vec<u64> = events
                .iter()
                .map(|e| e["ts"].as_u64().expect("ts"))
                .collect();
            assert!(
                ts.iter().all(|&t| (before..=after).contains(&t)),
                "{transport:?}: ts outside the request"
            );
            assert!(
                ts.windows(2).all(|w| w[0] <= w[1]),
                "{transport:?}: ts went back in time"
            );
            assert!(events.iter().all(|e| e["data"] == "x".repeat(16)));
        }
    }
    let metrics = server.metrics().await;
    for transport in ["sse", "ws"] {
        assert_eq!(
            metrics.of("streamgauge_events_sent_total", transport),
            220.0
        );
        assert_eq!(metrics.disconnects(transport, "complete"), 2.0);
    }
}

/// Asserts that `events` were paced at no more than `rate` per second: the
/// n-th is due (n - 1) / rate after the first, and `ts` is stamped no
/// earlier than that. A fifth of that span is allowed for the first event
/// being stamped late (a descheduled thread); twice the rate still fails.
fn assert_paced(events: &[Value], rate: u64, what: &str) {
    let ts = |e: &Value| e["ts"].as_u64().expect("ts");
    let due = (events.len() as u64 - 1) * 1_000_000 / rate;
    let span = ts(events.last().expect("events")) - ts(&events[0]);
    assert!(
        span >= due - due / 5,
        "{what}: {} events in {span} µs at rate {rate} (due over {due} µs)",
        events.len()
    );
}

#[tokio::test]
async fn ticker_defaults_stream_endlessly_at_ten_per_second_with_32_byte_data() {
    let server = TestServer::start(support::config()).await;
    for transport in Transport::BOTH {
        let mut client = server.open(transport, "ticker").await;
        let mut events = Vec::new();
        for _ in 0..6 {
            events.push(client.next_event().await);
        }
        assert_eq!(seqs(&events), (1..=6).collect::<Vec<_>>());
        assert!(
            events.iter().all(|e| e["data"] == "x".repeat(32)),
            "{events:?}"
        );
        // Ten per second: the sixth is due half a second after the first.
        assert_paced(&events, 10, &format!("{transport:?}"));
    }
}

#[tokio::test]
async fn token_stream_defaults_are_100_tokens_at_50_per_second_after_200_ms() {
    let server = &TestServer::start(support::config()).await;
    let stream = |transport| async move {
        let started = Instant::now();
        let mut client = server.open(transport, "tokens").await;
        let first = client.next_event().await;
        let ttft = started.elapsed();
        let (rest, end) = client.drain().await;
        (
            ttft,
            std::iter::once(first).chain(rest).collect::<Vec<_>>(),
            end,
        )
    };
    // Both at once: the defaults take two seconds a stream.
    let (sse, ws) = tokio::join!(stream(Transport::Sse), stream(Transport::Ws));
    for (transport, (ttft, events, end)) in Transport::BOTH.into_iter().zip([sse, ws]) {
        assert!(
            ttft.as_millis() >= 200,
            "{transport:?}: first token after {ttft:?}"
        );
        assert_eq!(end, completed(transport));
        assert_eq!(seqs(&events), (1..=100).collect::<Vec<_>>());
        assert!(events.iter().all(|e| e["data"]["token"].is_string()));
        // 50 per second after the first: the last is due 1.98 s after it.
        assert_paced(&events, 50, &format!("{transport:?}"));
    }
}

#[tokio::test]
async fn token_stream_waits_for_ttft_then_sends_every_token_and_ends() {
    let server = TestServer::start(support::config()).await;
    for transport in Transport::BOTH {
        let started = Instant::now();
        let mut client = server
            .open(transport, "tokens?ttft_ms=150&tps=200&tokens=12")
            .await;
        let first = client.next_event().await;
        let ttft = started.elapsed();
        assert!(
            ttft.as_millis() >= 150,
            "{transport:?}: first token after {ttft:?}"
        );
        let (rest, end) = client.drain().await;
        assert_eq!(end, completed(transport));
        let events: Vec<Value> = std::iter::once(first).chain(rest).collect();
        assert_eq!(seqs(&events), (1..=12).collect::<Vec<_>>());
        assert!(
            events.iter().all(|e| e["data"]["token"].is_string()),
            "{events:?}"
        );
    }
}

#[tokio::test]
async fn an_empty_token_stream_still_ends_cleanly() {
    let server = TestServer::start(support::config()).await;
    for transport in Transport::BOTH {
        let mut client = server.open(transport, "tokens?ttft_ms=0&tokens=0").await;
        assert_eq!(client.drain().await, (vec![], completed(transport)));
    }
}

#[tokio::test]
async fn chat_completions_stream_openai_chunks_and_refuse_other_requests() {
    let server = TestServer::start(support::config()).await;
    let post = |body: Value| {
        let request = server
            .http()
            .post(server.url("/v1/chat/completions"))
            .json(&body)
            .send();
        within("a chat completion", request)
    };
    let response = post(json!({
        "model": "m", "stream": true, "max_tokens": 5, "ttft_ms": 0, "tps": 0,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "say five words"}],
    }))
    .await
    .expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "an SSE answer"
    );
    let body = within("the whole stream", response.text()).await.unwrap();
    let data: Vec<&str> = body
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").expect("data lines only"))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("a JSON chunk"))
        .collect();
    let content: Vec<&str> = (chunks.iter())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content.len(), 5, "{body}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[6]["usage"]["completion_tokens"], 5);
    assert_eq!(chunks[6]["usage"]["prompt_tokens"], 3);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    for (refused, why) in [
        (
            json!({"model": "m", "messages": []}),
            "only streaming is served",
        ),
        (json!({"stream": true, "tps": 1_000_000_000u64}), "`tps`"),
    ] {
        let response = post(refused).await.expect("an answer");
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.expect("a JSON error");
        assert!(error["error"].as_str().unwrap().contains(why), "{error}");
    }
    let wrong_method = server.get("/v1/chat/completions").await;
    assert_eq!(wrong_method.status(), 405);
    server.all_closed().await;
}
