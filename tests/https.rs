//! HTTPS and HTTP/2 (issue 23): TLS with ALPN (`h2`, `http/1.1`), SSE
//! streams multiplexed on one HTTP/2 connection with flow control as
//! backpressure, WebSockets over HTTP/2 streams (RFC 8441), h2c with prior
//! knowledge, and a certificate reloaded on SIGHUP while streams go on.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::Empty;
use hyper::{Method, Request, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use streamgauge_server::Tls;
use streamgauge_server::shutdown::Reloads;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::support::tls::{self, TestCert};
use crate::support::{Backend, Database, TestServer, config, within};

/// The SSE events (their `id:` lines) in `text`.
fn ids(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .map(|id| id.parse().expect("a numeric id"))
        .collect()
}

/// `GET {path}` over HTTPS and HTTP/1.1, read to the end: the whole answer.
async fn h1_over_tls(connector: &TlsConnector, addr: SocketAddr, path: &str) -> String {
    let mut stream = tls::connect(connector, addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = within(&format!("GET {path}"), stream.read_to_end(&mut answer)).await;
    String::from_utf8(answer).expect("a text answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_sse_streams_directly_on_http1_and_everything_on_h2_by_alpn() {
    let cert = TestCert::new();
    let server = TestServer::start_tls(config(), &cert).await;

    // HTTP/1.1: an SSE stream is written by the server itself (its own
    // connection, closed at the end), over TLS as over TCP.
    let answer = h1_over_tls(
        &cert.client(&[b"http/1.1"]),
        server.addr,
        "/sse/ticker?rate=0&count=3",
    )
    .await;
    let head = answer.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{answer}");
    assert!(head.contains("connection: close\r\n"), "{answer}");
    assert_eq!(ids(&answer), [1, 2, 3], "{answer}");

    // HTTP/2 by ALPN: any request, streams included.
    let stream = tls::connect(&cert.client(&[b"h2", b"http/1.1"]), server.addr).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = tls::h2(stream, 1 << 20).await;
    let health = tls::get(&mut h2, "/healthz").await;
    assert_eq!(
        (health.status(), health.version()),
        (StatusCode::OK, Version::HTTP_2)
    );
    let mut sse = tls::get(&mut h2, "/sse/ticker?rate=0&count=2").await;
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let body = tls::read_until(sse.body_mut(), "the h2 stream", |_| false).await;
    assert_eq!(ids(&body), [1, 2], "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_multiplex_on_one_h2_connection_and_a_stalled_one_stalls_no_other() {
    let cert = TestCert::new();
    let server = TestServer::start_tls(config(), &cert).await;
    let stream = tls::connect(&cert.client(&[b"h2"]), server.addr).await;
    // A small window: the stream that is not read runs out of it at once.
    let mut h2 = tls::h2(stream, 16 * 1024).await;

    // Never read: only HTTP/2 flow control stops it.
    let stalled = tls::get(&mut h2, "/sse/ticker?rate=0&size=1024&tag=stalled").await;
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(tls::get(&mut h2, "/sse/ticker?rate=100&tag=live").await);
    }
    // Backpressure: the stalled stream's queue fills on the server…
    let connector = cert.client(&[b"http/1.1"]);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(20));
    within("the stalled stream's queue to fill", async {
        loop {
            poll.tick().await;
            let (_, body) =
                tls::get_text(&connector, server.addr, "/connections?tag=stalled").await;
            let listed: Value = serde_json::from_str(&body).unwrap();
            if listed["connections"][0]["queue_events"].as_u64() > Some(0) {
                return;
            }
        }
    })
    .await;
    // …while the other streams of its connection go on.
    for response in &mut live {
        let body = tls::read_until(response.body_mut(), "events on a live stream", |text| {
            ids(text).len() >= 5
        })
        .await;
        assert!(ids(&body).windows(2).all(|w| w[1] == w[0] + 1), "{body}");
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("streamgauge_http_connections_open{protocol=\"h2\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(metrics.of("streamgauge_connections_open", "sse"), 4.0);
    // Resetting the stalled stream frees it; the others stay.
    drop(stalled);
    server
        .wait_for("the reset stream to be freed", |m| {
            m.of("streamgauge_connections_open", "sse") == 3.0
        })
        .await;
    drop((live, h2));
    server.all_closed().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_run_over_h2_streams_with_extended_connect() {
    let cert = TestCert::new();
    let server = TestServer::start_tls(config(), &cert).await;
    let stream = tls::connect(&cert.client(&[b"h2"]), server.addr).await;
    let mut h2 = tls::h2(stream, 1 << 20).await;
    // The server's settings (extended CONNECT enabled) have arrived once
    // a first answer has.
    assert_eq!(tls::get(&mut h2, "/healthz").await.status(), 200);

    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri("https://127.0.0.1/ws/ticker?rate=0&count=3")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = within("the extended CONNECT", h2.send_request(request))
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let upgraded = within("the upgrade", hyper::upgrade::on(response))
        .await
        .expect("an upgraded stream");
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let mut seqs = Vec::new();
    let close = within("the WebSocket stream over h2", async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let event: Value = serde_json::from_str(&text).unwrap();
                    seqs.push(event["seq"].as_u64().unwrap());
                }
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("the stream ended without a close: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(close, Some(1000));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_is_served_on_plain_tcp() {
    let server = TestServer::start(config()).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut h2 = tls::h2(tcp, 1 << 20).await;
    let mut sse = tls::get(&mut h2, "/sse/ticker?rate=0&count=2").await;
    assert_eq!(sse.version(), Version::HTTP_2);
    let body = tls::read_until(sse.body_mut(), "the h2c stream", |_| false).await;
    assert_eq!(ids(&body), [1, 2], "{body}");
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("streamgauge_http_connections_open{protocol=\"h2\"}"),
        1.0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_while_open_streams_go_on() {
    let cert = TestCert::new();
    let database = Database::fresh(Backend::Sqlite).await;
    let mut settings = config();
    settings.tls = Some(cert.files.clone());
    settings.store.url = database.url().to_owned();
    let reloading = Tls::load(&cert.files)
        .unwrap()
        .reloading_on(Reloads::install().expect("a SIGHUP handler"));
    let server = TestServer::start_with_tls(settings, Some(reloading)).await;

    let old = cert.client(&[b"http/1.1"]);
    let mut stream = tls::connect(&old, server.addr).await;
    assert_eq!(tls::presented(&stream), cert.der);
    let request = format!(
        "GET /sse/ticker?rate=50 HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut open = StreamReader::new(stream);
    open.until_events(2).await;

    let renewed = cert.renew();
    // SAFETY: kill has no memory-safety preconditions; the handler the
    // server installed makes SIGHUP a reload, not an end.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGHUP);
    }
    let new = tls::client_trusting(&renewed, &[b"http/1.1"]);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(10));
    let presented = within("new handshakes to present the new certificate", async {
        loop {
            poll.tick().await;
            let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::IpAddress(server.addr.ip().into());
            if let Ok(stream) = new.connect(name, tcp).await {
                return tls::presented(&stream);
            }
        }
    })
    .await;
    assert_eq!(presented, renewed);
    // The stream opened before the reload goes on, on the old certificate.
    open.until_events(open.events + 5).await;

    // A reload that fails keeps the certificate in force.
    std::fs::write(&cert.files.key, "not a key\n").unwrap();
    // SAFETY: as above.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGHUP);
    }
    within("the failed reload to be counted", async {
        loop {
            poll.tick().await;
            let (_, body) = tls::get_text(&new, server.addr, "/metrics").await;
            if body.contains("streamgauge_tls_reloads_total{result=\"failed\"} 1") {
                assert!(body.contains("streamgauge_tls_reloads_total{result=\"ok\"} 1"));
                return;
            }
        }
    })
    .await;
    let stream = tls::connect(&new, server.addr).await;
    assert_eq!(tls::presented(&stream), renewed);
    drop(open);
    server.stop().await;
}

/// An SSE stream over TLS read as raw bytes, its events counted.
struct StreamReader {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    text: String,
    events: usize,
}

impl StreamReader {
    fn new(stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Self {
        Self {
            stream,
            text: String::new(),
            events: 0,
        }
    }

    /// Reads until `events` events in all have arrived.
    async fn until_events(&mut self, events: usize) {
        within("events on the open stream", async {
            let mut buf = [0u8; 4096];
            while self.events < events {
                let n = self.stream.read(&mut buf).await.expect("reading");
                assert!(n > 0, "the stream ended: {}", self.text);
                self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
                self.events = ids(&self.text).len();
            }
        })
        .await;
    }
}
