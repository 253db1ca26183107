//! Refusals and auth: bad requests get a precise JSON error (or close code)
//! and store nothing; tokens guard publishing and reading.

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::server;
use crate::support::{self, Backend, Client, End, Item, TestServer, Transport, within};

/// The message of a JSON error answer, which must be the whole answer
/// (with an access refusal's `reason`).
fn error_message(answer: &Value) -> &str {
    let message = answer["error"].as_str();
    let keys_known = answer
        .as_object()
        .is_some_and(|o| o.keys().all(|k| k == "error" || k == "reason"));
    assert!(
        message.is_some() && keys_known,
        "not a JSON error: {answer}"
    );
    message.unwrap_or_default()
}

/// `POST /topics/{topic}/events` with `chunks` as a chunked body (no
/// `Content-Length`): the status and the JSON answer.
async fn post_chunked(server: &TestServer, topic: &str, chunks: &[&str]) -> (u16, Value) {
    let mut request = format!(
        "POST /topics/{topic}/events HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        server.addr
    );
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let mut stream = within("a connection", TcpStream::connect(server.addr))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("the answer", stream.read_to_end(&mut response))
        .await
        .expect("reading the answer");
    let response = String::from_utf8(response).expect("a UTF-8 answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let answer = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    (status, answer)
}

pub(super) async fn bad_requests_are_refused_precisely_and_store_nothing(backend: Backend) {
    let mut config = support::config();
    config.max_publish_bytes = 1024;
    let (server, _db) = server(backend, config).await;
    let long_name = "n".repeat(201);
    for (topic, why) in [
        ("a%20b", "' ' is not allowed (only A-Z a-z 0-9 . _ - :)"),
        ("caf%C3%A9", "'é' is not allowed (only A-Z a-z 0-9 . _ - :)"),
        (long_name.as_str(), "must be 1 to 200 characters, not 201"),
    ] {
        let rule = format!("invalid parameter `topic`: {why}");
        let (status, answer) = server.try_publish(topic, "1", None).await;
        assert_eq!(
            (status, error_message(&answer)),
            (400, rule.as_str()),
            "POST {topic}"
        );
        let response = server.get(&format!("/sse/topics/{topic}")).await;
        assert_eq!(response.status(), 400, "/sse/topics/{topic}");
        let answer: Value = response.json().await.expect("a JSON answer");
        assert_eq!(error_message(&answer), rule, "/sse/topics/{topic}");
        let (status, answer) = server.ws_refusal(&format!("/ws/topics/{topic}")).await;
        assert_eq!(
            (status, error_message(&answer)),
            (400, rule.as_str()),
            "/ws/topics/{topic}"
        );
    }
    let too_big = format!("\"{}\"", "x".repeat(1024));
    for (body, status, says) in [
        (too_big.as_str(), 413, "limit of 1024 bytes"),
        ("{\"a\":", 400, "not valid JSON"),
        ("", 400, "not valid JSON"),
        ("{} trailing", 400, "not valid JSON"),
    ] {
        let (got, answer) = server.try_publish("t", body.to_owned(), None).await;
        assert_eq!(got, status, "{body:?}: {answer}");
        assert!(error_message(&answer).contains(says), "{body:?}: {answer}");
    }
    // Chunked, with no length declared: refused once the body passes it.
    let half = format!("\"{}", "x".repeat(600));
    let rest = format!("{}\"", "x".repeat(600));
    let (status, answer) = post_chunked(&server, "t", &[&half, &rest]).await;
    assert_eq!(
        (status, error_message(&answer)),
        (
            413,
            "body is over the limit of 1024 bytes; nothing was stored"
        )
    );
    // Over WebSocket: a malformed frame closes 1007, an oversized body 1009.
    for (frame, code) in [("not json", 1007), ("{\"no\":\"publish\"}", 1007)] {
        let mut client = server.open(Transport::Ws, "topics/t").await;
        client.send(Message::text(frame)).await;
        assert_eq!(client.drain().await.1, End::Close(code), "{frame}");
    }
    let mut client = server.open(Transport::Ws, "topics/t").await;
    client
        .send(Message::text(format!("{{\"publish\":{too_big}}}")))
        .await;
    assert_eq!(client.drain().await.1, End::Close(1009));

    // Nothing was stored: the first good publish is seq 1.
    assert_eq!(server.publish("t", &json!("good")).await, 1);
    assert_eq!(
        server
            .metrics()
            .await
            .get("streamgauge_events_published_total"),
        1.0
    );
}

/// Reads a WebSocket stream up to its close frame: its code and reason.
async fn close_frame(client: Client) -> (u16, String) {
    let Client::Ws(mut ws) = client else {
        panic!("only a WebSocket has close frames");
    };
    loop {
        match within("a close frame", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub(super) async fn tokens_guard_publishing_and_reading(backend: Backend) {
    let mut config = support::config();
    config.publish_tokens = vec!["pub-1".parse().unwrap(), "pub-2".parse().unwrap()];
    config.read_rules = vec!["private.*=read-1".parse().unwrap()];
    let (server, _db) = server(backend, config).await;

    let missing = "publishing requires a bearer token";
    let wrong = "the bearer token is not valid for publishing";
    for (token, status, says, reason) in [
        (None, 401, missing, "missing"),
        (Some("pub-3"), 403, wrong, "wrong_token"),
    ] {
        let (got, answer) = server.try_publish("t", "1", token).await;
        assert_eq!((got, error_message(&answer)), (status, says), "{token:?}");
        assert_eq!(answer["reason"], reason);
    }
    let (status, answer) = server.try_publish("t", "1", Some("pub-2")).await;
    assert_eq!((status, answer["seq"].as_u64()), (201, Some(1)));

    // Publishing from a WebSocket without a valid token closes it with 1008.
    for path in ["topics/t", "topics/t?token=wrong"] {
        let mut client = server.open(Transport::Ws, path).await;
        client.send(Message::text(r#"{"publish":2}"#)).await;
        assert_eq!(
            close_frame(client).await,
            (1008, "publishing requires a valid bearer token".to_owned()),
            "{path}"
        );
    }
    let mut client = server.open(Transport::Ws, "topics/t?token=pub-1").await;
    client.send(Message::text(r#"{"publish":2}"#)).await;
    assert_eq!(
        client.next_item().await,
        Item::Reply(json!({ "ack": { "seq": 2 } }))
    );

    // Reading a guarded topic, on both transports: refused before any
    // stream starts (on WebSocket, before the upgrade).
    let missing = "reading this topic requires a bearer token";
    let wrong = "the bearer token is not valid for reading this topic";
    let http = server.http();
    for (token, status, says) in [(None, 401, missing), (Some("pub-1"), 403, wrong)] {
        let mut request = http.get(server.url("/sse/topics/private.x"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = within("a refusal", request.send()).await.unwrap();
        assert_eq!(response.status(), status, "SSE {token:?}");
        let answer: Value = response.json().await.expect("a JSON answer");
        assert_eq!(error_message(&answer), says, "SSE {token:?}");
        let path = match token {
            Some(token) => format!("topics/private.x?token={token}"),
            None => "topics/private.x".to_owned(),
        };
        let (got, answer) = server.ws_refusal(&format!("/ws/{path}")).await;
        assert_eq!(
            (got, error_message(&answer)),
            (status, says),
            "WebSocket {token:?}"
        );
    }
    server
        .open_with(
            Transport::Sse,
            "topics/private.x",
            &[("Authorization", "Bearer read-1")],
        )
        .await;
    server
        .open(Transport::Ws, "topics/private.x?token=read-1")
        .await;
    assert_eq!(
        server
            .metrics()
            .await
            .get("streamgauge_events_published_total"),
        2.0
    );
}
