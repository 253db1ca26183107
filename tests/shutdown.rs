//! Graceful shutdown ends every stream cleanly: SSE bodies end, WebSockets
//! get close 1001, and `run` returns.

use crate::support::{self, End, TestServer, Transport};

#[tokio::test]
async fn shutdown_ends_every_open_stream_cleanly_and_returns() {
    let server = TestServer::start(support::config()).await;
    let mut clients = Vec::new();
    for transport in Transport::BOTH {
        for path in [
            "ticker?rate=20",
            "ticker?rate=0&size=4096",
            "tokens?ttft_ms=600000",
        ] {
            let mut client = server.open(transport, path).await;
            if !path.starts_with("tokens") {
                client.next_event().await;
            }
            clients.push((transport, path, client));
        }
    }
    server.stop().await;

    for (transport, path, mut client) in clients {
        let (_, end) = client.drain().await;
        let expected = match transport {
            Transport::Sse => End::Body,
            Transport::Ws => End::Close(1001),
        };
        assert_eq!(end, expected, "{transport:?} {path}");
    }
}
