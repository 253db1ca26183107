//! Bad requests are refused with a precise 4xx before any stream starts,
//! and the connection limit sheds new streams while serving the others.

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, End, TestServer, Transport};

/// Each request with the parameter its error must name.
const BAD: [(&str, &str); 12] = [
    ("ticker?rate=abc", "rate"),
    ("ticker?rate=-1", "rate"),
    ("ticker?rate=1000001", "rate"),
    ("ticker?count=1.5", "count"),
    ("ticker?size=65537", "size"),
    ("ticker?size=", "size"),
    ("ticker?count=1&count=2", "count"),
    ("tokens?ttft_ms=soon", "ttft_ms"),
    ("tokens?ttft_ms=600001", "ttft_ms"),
    ("tokens?tps=1e3", "tps"),
    ("tokens?tokens=10000001", "tokens"),
    ("tokens?jitter_ms=-5", "jitter_ms"),
];

fn assert_names(body: &Value, param: &str, request: &str) {
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{request}: no error in {body}"));
    assert!(
        message.contains(&format!("`{param}`")),
        "{request}: {message:?} does not name {param}"
    );
}

/// `GET {path}` (a WebSocket handshake for `/ws/…`) that must be refused
/// before any stream starts: its status and JSON body.
async fn refused(server: &TestServer, path: &str) -> (u16, Value) {
    if path.starts_with("/ws/") {
        server.ws_refusal(path).await
    } else {
        let response = server.get(path).await;
        assert_eq!(response.headers()["content-type"], "application/json");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }
}

#[tokio::test]
async fn bad_parameters_get_400_naming_the_parameter_on_both_transports() {
    let server = TestServer::start(support::config()).await;
    for (path, param) in BAD {
        for transport in Transport::BOTH {
            let path = format!("/{}/{path}", transport.label());
            let (status, body) = refused(&server, &path).await;
            assert_eq!(status, 400, "{path}");
            assert_names(&body, param, &path);
        }
    }
    let metrics = server.metrics().await;
    for transport in ["sse", "ws"] {
        assert_eq!(
            metrics.of("streamgauge_connections_opened_total", transport),
            0.0
        );
    }
}

/// On each endpoint that takes parameters, one it does not take: a typo,
/// or another endpoint's parameter.
const UNKNOWN: [(&str, &str); 10] = [
    ("/sse/ticker?rat=5", "rat"),
    ("/ws/ticker?rate=5&sizes=8", "sizes"),
    ("/sse/tokens?ttft=100", "ttft"),
    ("/ws/tokens?tokens=3&rate=5", "rate"),
    ("/sse/topics/t?sinse=3", "sinse"),
    ("/ws/topics/t?count=3", "count"),
    ("/sse/replay/w?token=x", "token"),
    ("/ws/replay/w?overflow=disconnect", "overflow"),
    ("/connections?tags=x", "tags"),
    ("/sse/ticker?rate=5&Rate=6", "Rate"),
];

#[tokio::test]
async fn a_parameter_the_endpoint_does_not_take_gets_400_naming_it() {
    let server = TestServer::start(support::config()).await;
    for (path, param) in UNKNOWN {
        let (status, body) = refused(&server, path).await;
        assert_eq!(status, 400, "{path}");
        let expected = format!("unknown parameter `{param}`");
        assert_eq!(body, serde_json::json!({ "error": expected }), "{path}");
    }
    let seed = server.url("/api/trades/w/seed?cnt=5");
    let response = support::within("a seed", server.http().post(seed).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unknown parameter `cnt`");

    // Each endpoint's own parameters, all at once, are taken.
    for path in [
        "ticker?rate=5&count=1&size=8&tag=a",
        "tokens?ttft_ms=0&tps=5&tokens=1&jitter_ms=0&tag=a",
        "topics/t?since=0&overflow=disconnect&token=x&tag=a",
    ] {
        for transport in Transport::BOTH {
            server.open(transport, path).await;
        }
    }
    assert_eq!(
        server.get("/connections?tag=a").await.status(),
        200,
        "/connections takes tag"
    );
}

#[tokio::test]
async fn wrong_paths_methods_and_missing_upgrades_get_json_errors() {
    let server = TestServer::start(support::config()).await;
    let http = server.http();
    let cases = [
        (http.get(server.url("/nowhere")), 404),
        (http.post(server.url("/sse/ticker")), 405),
        (http.get(server.url("/ws/ticker")), 400),
    ];
    for (request, status) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn over_the_connection_limit_sse_gets_503_and_ws_gets_1013_while_others_stream() {
    let mut config = support::config();
    config.max_connections = 2;
    let server = TestServer::start(config).await;
    let mut sse = server.open(Transport::Sse, "ticker?rate=50").await;
    let mut ws = server.open(Transport::Ws, "ticker?rate=50").await;
    sse.next_event().await;
    ws.next_event().await;

    server.assert_sheds("ticker", "limit of 2 streams").await;

    // The streams already admitted carry on.
    let seq = sse.next_event().await["seq"].as_u64().unwrap();
    assert_eq!(sse.next_event().await["seq"].as_u64().unwrap(), seq + 1);
    ws.next_event().await;

    let metrics = server.metrics().await;
    for transport in ["sse", "ws"] {
        assert_eq!(
            metrics.of("streamgauge_connections_rejected_total", transport),
            1.0
        );
    }

    // A freed slot admits a new stream.
    drop(sse);
    server
        .wait_for("the dropped SSE stream to be released", |m| {
            m.of("streamgauge_connections_open", "sse") == 0.0
        })
        .await;
    server
        .open(Transport::Sse, "ticker")
        .await
        .next_event()
        .await;
}

#[tokio::test]
async fn websocket_messages_on_a_stream_that_takes_none_close_1003_and_oversized_1009() {
    let server = TestServer::start(support::config()).await;

    let mut client = server.open(Transport::Ws, "ticker?rate=1").await;
    client.send(Message::text("hello")).await;
    assert_eq!(client.drain().await.1, End::Close(1003));

    let mut client = server.open(Transport::Ws, "ticker?rate=1").await;
    // Streams that take no messages read at most 4 KiB of one.
    client.send(Message::text("x".repeat(8192))).await;
    assert_eq!(client.drain().await.1, End::Close(1009));

    server
        .wait_for("both refusals to be counted", |m| {
            m.disconnects("ws", "unsupported_data") == 1.0
                && m.disconnects("ws", "message_too_big") == 1.0
        })
        .await;
}

#[tokio::test]
async fn a_client_that_vanishes_mid_stream_frees_its_slot() {
    let server = TestServer::start(support::config()).await;
    for transport in Transport::BOTH {
        let mut client = server.open(transport, "ticker?rate=100").await;
        client.next_event().await;
        drop(client);
        let t = transport.label();
        server
            .wait_for("the vanished client's stream to close", |m| {
                m.of("streamgauge_connections_open", t) == 0.0
                    && m.disconnects(t, "peer_gone") == 1.0
            })
            .await;
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed_while_others_are_served() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let config = streamgauge_server::Config {
        header_timeout: Duration::from_millis(300),
        ..support::config()
    };
    let server = TestServer::start(config).await;
    let mut slowloris = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slowloris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // Meanwhile a well-behaved client is served.
    let healthy = server.get("/healthz").await;
    assert_eq!(healthy.status(), 200);
    let mut rest = Vec::new();
    let read = support::within(
        "the server to close the slow client",
        slowloris.read_to_end(&mut rest),
    )
    .await;
    assert!(
        read.is_ok_and(|n| n == 0) || rest.is_empty(),
        "the server answered a head it never got: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
}

/// A raw `GET /healthz` from `from` (a loopback address): what came back.
async fn raw_healthz(server: &TestServer, from: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = support::within("an answer", stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn one_address_over_its_connection_limit_gets_429_and_others_are_served() {
    let config = streamgauge_server::Config {
        max_connections_per_peer: 2,
        ..support::config()
    };
    let server = TestServer::start(config).await;
    // Two idle connections from 127.0.0.1 hold its two slots…
    let first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let refused = raw_healthz(&server, "127.0.0.1").await;
    assert!(refused.starts_with("HTTP/1.1 429 "), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(refused.contains("too many connections"), "{refused}");
    // …while another address is served…
    assert!(
        raw_healthz(&server, "127.0.0.2")
            .await
            .starts_with("HTTP/1.1 200 ")
    );
    // …and a slot given back serves 127.0.0.1 again (once the server has
    // seen the close).
    drop(first);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(10));
    let served = support::within("a slot to come back", async {
        for _ in 0..1000 {
            poll.tick().await;
            if raw_healthz(&server, "127.0.0.1")
                .await
                .starts_with("HTTP/1.1 200 ")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        served,
        "127.0.0.1 was refused 1000 times after its slot was freed"
    );
}

#[tokio::test]
async fn a_ping_flood_is_closed_with_1008_while_others_are_served() {
    let server = TestServer::start(support::config()).await;
    let mut flood = support::raw_ws::RawWs::connect(server.addr, "/ws/ticker?rate=1").await;
    // 300 masked, empty pings at once: three times the allowance of a second.
    let ping = [0x89u8, 0x80, 1, 2, 3, 4];
    flood.send_raw(&ping.repeat(300)).await;
    let healthy = server.get("/healthz").await;
    assert_eq!(healthy.status(), 200);
    let frames = flood.frames_until_closed().await;
    assert_eq!(support::raw_ws::close_code(&frames), Some(1008));
    let reason = frames
        .iter()
        .find(|(opcode, _)| *opcode == 0x8)
        .map(|(_, payload)| String::from_utf8_lossy(&payload[2..]).into_owned())
        .unwrap();
    assert!(reason.contains("too many pings"), "{reason}");
    let pongs = frames.iter().filter(|(opcode, _)| *opcode == 0xA).count();
    assert!(pongs <= 101, "{pongs} pongs answered before the close");
    let metrics = server.metrics().await;
    assert_eq!(metrics.disconnects("ws", "ping_flood"), 1.0);
}
