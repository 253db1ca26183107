//! The HTTP/1.1 of the SSE streams the server writes itself, without
//! hyper (`server/src/direct.rs`): exact framing, a connection of its own
//! that closes with the stream, and a client that misbehaves after its
//! request is closed.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::raw_sse::RawSse;
use crate::support::{TestServer, config, within};

#[tokio::test]
async fn a_stream_is_chunked_says_it_closes_and_closes_when_it_ends() {
    let server = TestServer::start(config()).await;
    let (sse, head) = RawSse::get(server.addr, "/sse/ticker?rate=0&count=3&size=1").await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream\r\n",
        "cache-control: no-cache\r\n",
        "transfer-encoding: chunked\r\n",
        "connection: close\r\n",
        "date: ",
    ] {
        assert!(head.contains(line), "no `{}` in {head}", line.trim());
    }
    assert!(!head.contains("content-length"), "{head}");
    // The whole body, through its last chunk, then the server's close.
    let mut sse = sse;
    let body = sse.rest_of_body().await;
    let (mut stream, mut after) = sse.into_inner();
    within(
        "the server to close the connection",
        stream.read_to_end(&mut after),
    )
    .await
    .expect("reading to the end");
    assert!(after.is_empty(), "bytes after the last chunk: {after:?}");
    let ids: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["1", "2", "3"], "{body}");
    server.all_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn an_error_answer_is_sized_and_closes_the_connection() {
    let server = TestServer::start(config()).await;
    let (mut stream, head, mut rest) = raw_request(server.addr, "/sse/ticker?rat=1").await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    let body = r#"{"error":"unknown parameter `rat`"}"#;
    assert!(
        head.contains(&format!("content-length: {}\r\n", body.len())),
        "{head}"
    );
    within(
        "the server to close the connection",
        stream.read_to_end(&mut rest),
    )
    .await
    .expect("reading to the end");
    assert_eq!(rest, body.as_bytes());
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_keeps_sending_after_its_request_is_closed() {
    let server = TestServer::start(config()).await;
    let (mut stream, _, _) = raw_request(server.addr, "/sse/ticker?rate=1").await;
    // An SSE client sends nothing more; this one sends 16 KiB and then some.
    // The stream is endless: only the server closing it ends the reading
    // below (with its end or a reset, for the input it did not read).
    let junk = vec![b'x'; 1024];
    within("the server to close the connection", async {
        for _ in 0..64 {
            if stream.write_all(&junk).await.is_err() {
                return;
            }
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    })
    .await;
    server.all_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn a_request_head_sent_in_pieces_is_answered_alike() {
    let server = TestServer::start(config()).await;
    // Whichever HTTP layer answers it (the head may come in one read or
    // several), the stream is the same: two events, then the end.
    let pieces = [
        "GET /sse/ticker?rate=0&count=2 HT",
        "TP/1.1\r\nHost: x\r\n",
        "\r\n",
    ];
    let (mut sse, head) = RawSse::send(server.addr, &pieces).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(sse.rest_of_body().await.matches("id: ").count(), 2);
    drop(sse);
    server.all_closed().await;
    server.stop().await;
}

/// Sends `GET {path}` on a fresh connection: the socket, the response
/// head, and what of the body was read with it.
async fn raw_request(
    addr: std::net::SocketAddr,
    path: &str,
) -> (tokio::net::TcpStream, String, Vec<u8>) {
    let (sse, head) = RawSse::get(addr, path).await;
    let (stream, read) = sse.into_inner();
    (stream, head, read)
}
