//! Every phase of a connection is bounded (issue 23), shown with raw
//! sockets: a second request head that stalls, an idle keep-alive
//! connection, a body that trickles, a silent HTTP/2 peer and an HTTP/2
//! connection that opens streams too fast are each closed at their bound
//! and counted in `streamgauge_connection_closes_total`; a malformed head
//! gets a JSON `400`.

use std::time::{Duration, Instant};

use serde_json::Value;
use streamgauge_server::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::tls;
use crate::support::{TestServer, config, within};

/// The bound each test puts on the phase it shows.
const BOUND: Duration = Duration::from_millis(300);

/// A configuration whose phases are long, but for those a test shortens.
fn long_phases() -> Config {
    Config {
        header_timeout: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(60),
        ..config()
    }
}

/// The closes counted for `reason`.
fn closes(metrics: &crate::support::Metrics, reason: &str) -> f64 {
    metrics.get(&format!(
        "streamgauge_connection_closes_total{{reason=\"{reason}\"}}"
    ))
}

/// A keep-alive connection that has had one `GET /healthz` answered.
async fn after_one_request(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    stream
}

/// One answer with a `Content-Length` body, read whole.
async fn read_answer(stream: &mut TcpStream) -> String {
    within("an answer", async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await.expect("reading");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse().ok())
                    .expect("a Content-Length");
                if body.len() >= length {
                    return text.into_owned();
                }
            }
        }
    })
    .await
}

/// Reads until the server closes the connection: what it sent meanwhile,
/// and when it closed.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    within("the server to close the connection", async {
        let mut sent = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return (sent, Instant::now()),
                Ok(n) => sent.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_second_request_head_that_stalls_is_closed_at_the_header_timeout() {
    let server = TestServer::start(Config {
        header_timeout: BOUND,
        ..long_phases()
    })
    .await;
    let mut stream = after_one_request(&server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let started = Instant::now();
    let (sent, closed) = until_closed(&mut stream).await;
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    assert!(closed - started >= BOUND - Duration::from_millis(50));
    let metrics = server.metrics().await;
    assert_eq!(closes(&metrics, "header_timeout"), 1.0, "{metrics}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_keepalive_timeout() {
    let server = TestServer::start(Config {
        keepalive_timeout: BOUND,
        ..long_phases()
    })
    .await;
    let mut stream = after_one_request(&server).await;
    let started = Instant::now();
    let (sent, closed) = until_closed(&mut stream).await;
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    assert!(closed - started >= BOUND - Duration::from_millis(50));
    let metrics = server.metrics().await;
    assert_eq!(closes(&metrics, "keepalive_timeout"), 1.0, "{metrics}");
    assert_eq!(closes(&metrics, "header_timeout"), 0.0, "{metrics}");
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_its_connection_closed_at_the_body_timeout() {
    let server = TestServer::start(Config {
        body_timeout: BOUND,
        ..long_phases()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let body = b"{\"n\": 1}".repeat(20);
    let head = format!(
        "POST /topics/slow/events HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // A byte every 10 ms: a timer reset by every byte would never fire.
    // The interval paces the client; it synchronizes nothing.
    let trickle = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        for byte in body {
            pace.tick().await;
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    });
    let answer = within("the server's answer", async {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer).await;
        String::from_utf8(answer).unwrap()
    })
    .await;
    assert!(started.elapsed() >= BOUND - Duration::from_millis(50));
    let (head, body) = answer.split_once("\r\n\r\n").expect("an answer");
    assert!(head.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let error: Value = serde_json::from_str(body).expect("a JSON body");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"),
        "{error}"
    );
    trickle.abort();
    let metrics = server.metrics().await;
    assert_eq!(closes(&metrics, "body_timeout"), 1.0, "{metrics}");
    assert_eq!(metrics.get("streamgauge_events_published_total"), 0.0);
}

/// The frames of an HTTP/2 byte stream as (type, flags, payload).
fn h2_frames(mut bytes: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            break;
        }
        frames.push((bytes[3], bytes[4], bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    frames
}

/// The settings in a SETTINGS frame's payload, by identifier.
fn settings(payload: &[u8]) -> Vec<(u16, u32)> {
    payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_silent_h2_peer_is_pinged_and_closed_when_it_does_not_answer() {
    let server = TestServer::start(Config {
        keepalive_interval: Duration::from_millis(100),
        pong_timeout: BOUND,
        max_concurrent_streams: 7,
        ..long_phases()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The preface and an empty SETTINGS frame, then silence: no ack of the
    // server's settings, no answer to its pings.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = Instant::now();
    let (sent, closed) = until_closed(&mut stream).await;
    assert!(closed - started >= BOUND - Duration::from_millis(150));
    let frames = h2_frames(&sent);
    let (kind, _, payload) = &frames[0];
    assert_eq!(*kind, 0x4, "the server's SETTINGS first");
    let settings = settings(payload);
    assert!(
        settings.contains(&(0x3, 7)),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x8, 1)),
        "ENABLE_CONNECT_PROTOCOL: {settings:?}"
    );
    let pings = frames
        .iter()
        .filter(|(kind, flags, _)| *kind == 0x6 && flags & 1 == 0);
    assert!(pings.count() >= 1, "no ping before the close: {frames:?}");
    let metrics = server.metrics().await;
    assert_eq!(closes(&metrics, "ping_timeout"), 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_that_opens_streams_too_fast_gets_429_and_goaway() {
    let server = TestServer::start(Config {
        max_stream_rate: 2,
        ..config()
    })
    .await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let h2 = tls::h2(tcp, 1 << 20).await;
    // Ten streams at once: two are allowed, the rest are refused.
    let requests = (0..10).map(|_| {
        let mut h2 = h2.clone();
        async move {
            let request = hyper::Request::get("http://127.0.0.1/healthz")
                .body(http_body_util::Empty::new())
                .unwrap();
            h2.send_request(request).await.map(|r| r.status().as_u16())
        }
    });
    let statuses = within("the ten answers", futures_util::future::join_all(requests)).await;
    let refused = statuses.iter().filter(|s| matches!(s, Ok(429))).count();
    assert!(refused >= 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| matches!(s, Ok(200 | 429)) || s.is_err()),
        "{statuses:?}"
    );
    server
        .wait_for("the flood to be counted", |m| {
            closes(m, "stream_rate") == 1.0
        })
        .await;
    server
        .wait_for("the connection to be closed", |m| {
            m.get("streamgauge_http_connections_open{protocol=\"h2\"}") == 0.0
        })
        .await;
}

#[tokio::test]
async fn a_malformed_head_gets_a_json_400_and_a_close() {
    let server = TestServer::start(config()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /topics/t/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        )
        .await
        .unwrap();
    let (sent, _) = until_closed(&mut stream).await;
    let answer = String::from_utf8(sent).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an answer");
    assert!(head.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        error["error"],
        "malformed request: conflicting Content-Length headers"
    );
}
