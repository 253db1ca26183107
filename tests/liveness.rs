//! Keep-alive and dead peers: idle streams get keep-alives, a WebSocket peer
//! that stops answering pings is closed, a reader that stops reading
//! altogether is dropped after the write timeout, and a healthy peer is
//! left alone.

use std::time::Duration;

use streamgauge_server::Config;

use crate::support::raw_sse::RawSse;
use crate::support::raw_ws::{RawWs, close_code};
use crate::support::{self, End, Item, TestServer, Transport};

/// Silence after which a WebSocket peer is closed here: far beyond any
/// stall of a healthy, reading peer on a loaded machine (20 keep-alive
/// intervals), yet short enough for a dead one to be dropped quickly.
const PONG_TIMEOUT: Duration = Duration::from_secs(1);

fn config() -> Config {
    let mut config = support::config();
    config.keepalive_interval = Duration::from_millis(50);
    config.pong_timeout = PONG_TIMEOUT;
    config
}

#[tokio::test]
async fn idle_streams_get_keep_alives_sse_comments_and_websocket_pings() {
    let server = TestServer::start(config()).await;
    for transport in Transport::BOTH {
        // No token for two seconds: only keep-alives flow meanwhile.
        let mut client = server.open(transport, "tokens?ttft_ms=2000&tokens=1").await;
        assert_eq!(client.next().await, Item::KeepAlive, "{transport:?}");
        assert_eq!(client.next().await, Item::KeepAlive, "{transport:?}");
    }
    let metrics = server.metrics().await;
    assert!(metrics.of("streamgauge_keepalives_sent_total", "sse") >= 2.0);
    assert!(metrics.of("streamgauge_keepalives_sent_total", "ws") >= 2.0);
}

#[tokio::test]
async fn an_idle_sse_stream_has_the_protocol_headers_and_exact_ping_comments() {
    let server = TestServer::start(config()).await;
    let (mut sse, head) = RawSse::get(server.addr, "/sse/tokens?ttft_ms=600000").await;
    let head = head.to_ascii_lowercase();
    for line in [
        "http/1.1 200 ok\r\n",
        "\r\ncontent-type: text/event-stream\r\n",
        "\r\ncache-control: no-cache\r\n",
        "\r\ntransfer-encoding: chunked\r\n",
    ] {
        assert!(head.contains(line), "no {line:?} in {head:?}");
    }
    // No token for ten minutes: the body is keep-alives, each its own chunk.
    for _ in 0..3 {
        assert_eq!(sse.chunk().await, b": ping\n\n");
    }
}

#[tokio::test]
async fn a_websocket_peer_that_stops_answering_pings_is_closed_and_freed() {
    let server = TestServer::start(config()).await;
    // This peer reads nothing, so it never answers a ping.
    let silent = RawWs::connect(server.addr, "/ws/ticker?rate=5").await;

    server
        .wait_for("the silent peer to be dropped", |m| {
            m.disconnects("ws", "peer_timeout") == 1.0
                && m.of("streamgauge_connections_open", "ws") == 0.0
        })
        .await;

    // What the peer finds when it finally reads: events, pings, then 1008.
    let frames = silent.frames_until_closed().await;
    assert!(
        frames.iter().any(|(opcode, _)| *opcode == 0x9),
        "no ping was sent"
    );
    assert_eq!(close_code(&frames), Some(1008));
}

#[tokio::test]
async fn a_websocket_peer_that_answers_pings_outlives_several_pong_timeouts() {
    let server = TestServer::start(config()).await;
    // 300 events at 100/s: three seconds, three pong timeouts, of a
    // reading peer.
    let mut client = server
        .open(Transport::Ws, "ticker?rate=100&count=300")
        .await;
    let (events, end) = client.drain().await;
    assert_eq!(events.len(), 300);
    assert_eq!(end, End::Close(1000));
    assert_eq!(
        server.metrics().await.disconnects("ws", "peer_timeout"),
        0.0
    );
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_dropped_after_the_write_timeout() {
    let mut config = support::config();
    config.write_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    for (n, transport) in Transport::BOTH.into_iter().enumerate() {
        let t = transport.label();
        let mut client = server.open(transport, "ticker?rate=0&size=60000").await;
        server
            .wait_for("the stalled reader's connection to be dropped", |m| {
                m.get("streamgauge_slow_consumers_total{action=\"write_timeout\"}")
                    == (n + 1) as f64
                    && m.of("streamgauge_connections_open", t) == 0.0
            })
            .await;
        // The stream was cut, not ended: the client can tell.
        let (_, end) = client.drain().await;
        assert!(matches!(end, End::Broken(_)), "{t}: {end:?}");
    }
    assert_eq!(
        server.metrics().await.disconnects("ws", "slow_consumer"),
        1.0
    );
}
