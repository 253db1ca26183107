//! Behind proxies (issue 23): a trusted proxy names its client with
//! `X-Forwarded-For`, or with a PROXY protocol header (v1, v2) under
//! `--proxy-protocol`, and the per-address limit counts that client, not
//! the proxy; an untrusted peer's forwarded headers are ignored. And on
//! HTTP/2 the limit counts streams, not connections.

use streamgauge_server::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::raw_sse::RawSse;
use crate::support::tls;
use crate::support::{TestServer, config, within};

/// One stream or connection per address, proxies on 127.0.0.1 trusted.
fn one_per_address(proxy_protocol: bool) -> Config {
    Config {
        max_connections_per_peer: 1,
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        proxy_protocol,
        ..config()
    }
}

/// A connection to `server` from the loopback address `from`.
async fn connect_from(server: &TestServer, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    within("a connection", socket.connect(server.addr))
        .await
        .unwrap()
}

/// Sends `request` (and `before` it) on a connection from `from`: the
/// stream, and the status of its answer.
async fn send(server: &TestServer, from: &str, before: &[u8], request: &str) -> (TcpStream, u16) {
    let mut stream = connect_from(server, from).await;
    stream.write_all(before).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let status = within("an answer's status line", async {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            let byte = stream.read_u8().await.expect("an answer");
            line.push(byte);
        }
        String::from_utf8(line).unwrap()
    })
    .await;
    let status = status.split(' ').nth(1).unwrap().parse().unwrap();
    (stream, status)
}

/// An SSE stream's request, forwarded for `client` when given.
fn stream_request(client: Option<&str>) -> String {
    let forwarded = client.map_or(String::new(), |c| format!("X-Forwarded-For: {c}\r\n"));
    format!("GET /sse/ticker?rate=1 HTTP/1.1\r\nHost: x\r\n{forwarded}\r\n")
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_names_the_client_the_limit_counts() {
    let server = TestServer::start(one_per_address(false)).await;
    // The proxy (127.0.0.1) holds a stream for 203.0.113.7, and can open
    // more connections than the limit: the limit is its clients'.
    let (_held, status) = send(
        &server,
        "127.0.0.1",
        b"",
        &stream_request(Some("203.0.113.7")),
    )
    .await;
    assert_eq!(status, 200);
    let (_, status) = send(
        &server,
        "127.0.0.1",
        b"",
        &stream_request(Some("203.0.113.7")),
    )
    .await;
    assert_eq!(status, 429, "203.0.113.7 is at its limit of one");
    let (_other, status) = send(
        &server,
        "127.0.0.1",
        b"",
        &stream_request(Some("203.0.113.8")),
    )
    .await;
    assert_eq!(status, 200, "another client of the same proxy is served");
    // A client that forges the header behind the proxy is still the
    // address the proxy saw (the right-most one).
    let forged = stream_request(Some("203.0.113.8, 203.0.113.9"));
    let (_forged, status) = send(&server, "127.0.0.1", b"", &forged).await;
    assert_eq!(status, 200, "counted as 203.0.113.9");

    // An untrusted peer's header is ignored: its own address counts.
    let (_own, status) = send(
        &server,
        "127.0.0.2",
        b"",
        &stream_request(Some("198.51.100.1")),
    )
    .await;
    assert_eq!(status, 200);
    let refused = RawSse::get_over(
        connect_from(&server, "127.0.0.2").await,
        server.addr,
        "/healthz",
    );
    let (_, head) = within("the refusal", refused).await;
    assert!(head.starts_with("HTTP/1.1 429 "), "{head}");
    server.stop().await;
}

#[tokio::test]
async fn proxy_protocol_headers_name_the_client_and_an_untrusted_peer_cannot_send_one() {
    let server = TestServer::start(one_per_address(true)).await;
    let v1 = |source: &str| format!("PROXY TCP4 {source} 127.0.0.1 40000 443\r\n").into_bytes();
    let (_held, status) = send(
        &server,
        "127.0.0.1",
        &v1("203.0.113.7"),
        &stream_request(None),
    )
    .await;
    assert_eq!(status, 200);
    let (_, status) = send(
        &server,
        "127.0.0.1",
        &v1("203.0.113.7"),
        &stream_request(None),
    )
    .await;
    assert_eq!(status, 429, "the PROXY header's client is at its limit");
    let v2 = proxy_v2([203, 0, 113, 8], 40001);
    let (_v2, status) = send(&server, "127.0.0.1", &v2, &stream_request(None)).await;
    assert_eq!(status, 200, "another client, named by a v2 header");
    // From an untrusted peer, a PROXY header is no header: it is bytes of a
    // request, and a malformed one.
    let (_, status) = send(
        &server,
        "127.0.0.2",
        &v1("203.0.113.9"),
        &stream_request(None),
    )
    .await;
    assert_eq!(status, 400);
    // The test's own scrape comes through the proxy too.
    let scrape = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (mut stream, status) = send(&server, "127.0.0.1", &v1("192.0.2.1"), scrape).await;
    assert_eq!(status, 200);
    let mut metrics = String::new();
    within("the metrics", stream.read_to_string(&mut metrics))
        .await
        .unwrap();
    assert!(
        metrics.contains("streamgauge_connection_closes_total{reason=\"peer_limit\"} 1\n"),
        "{metrics}"
    );
    server.stop().await;
}

/// A PROXY protocol v2 header for a TCP/IPv4 client `source:port`.
fn proxy_v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_http2_the_address_limit_counts_streams_not_connections() {
    let server = TestServer::start(Config {
        max_connections_per_peer: 3,
        ..config()
    })
    .await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut h2 = tls::h2(tcp, 1 << 20).await;
    // The connection holds one slot, each open stream one more.
    let first = tls::get(&mut h2, "/sse/ticker?rate=1").await;
    let second = tls::get(&mut h2, "/sse/ticker?rate=1").await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = tls::get(&mut h2, "/sse/ticker?rate=1").await;
    assert_eq!(third.status(), 429);
    drop(first);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(10));
    within("a slot to come back", async {
        loop {
            poll.tick().await;
            if tls::get(&mut h2, "/sse/ticker?rate=1").await.status() == 200 {
                return;
            }
        }
    })
    .await;
    drop((second, h2));
    server.stop().await;
}
