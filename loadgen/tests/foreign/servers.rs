//! The foreign servers the tests measure, each written here with a message
//! shape of its own, on `127.0.0.1:0`:
//!
//! - [`Hub`]: an SSE pub/sub hub that wraps each publish as
//!   `{"id": "msg-N", "message": …}` with string ids, greets each
//!   subscriber with a message of another shape, sends `presence` events
//!   between, and (if asked) drops and repeats some messages;
//! - [`chat`]: a WebSocket chat that needs the `chat.v1` subprotocol and a
//!   `{"join": ROOM}` frame before it relays a room's messages;
//! - [`llm`]: an OpenAI-compatible chat completion stream with a fixed time
//!   to first token and token interval, behind a bearer key;
//! - [`tls_events`]: this project's events over TLS (SSE or WebSocket)
//!   with a certificate of a test CA made here ([`TestCa`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep_until};

/// Serves `app` on a free loopback port until the test ends.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An SSE body from `chunks`.
fn event_stream(
    chunks: impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    let headers = [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
    ];
    (headers, Body::from_stream(chunks)).into_response()
}

/// Faults a hub injects: every `drop_every`-th message of a topic is not
/// sent, every `repeat_every`-th is sent twice (0: never).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Drop each message whose number is a multiple of it.
    pub(crate) drop_every: u64,
    /// Send twice each message whose number is a multiple of it.
    pub(crate) repeat_every: u64,
}

/// What a hub did.
#[derive(Debug, Default)]
pub(crate) struct HubLog {
    /// Publishes received.
    pub(crate) published: u64,
    /// Messages dropped, over all subscribers.
    pub(crate) dropped: u64,
    /// Messages sent twice, over all subscribers.
    pub(crate) repeated: u64,
    /// Subscriptions opened.
    pub(crate) subscriptions: u64,
    /// The `Last-Event-ID` of each subscription that resumed with one.
    pub(crate) resumed_after: Vec<String>,
}

/// A topic's messages, numbered, as the hub relays them.
type Topic = broadcast::Sender<(u64, String)>;

/// The hub's shared state.
#[derive(Clone)]
pub(crate) struct Hub {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    faults: Faults,
    /// What it did.
    pub(crate) log: Arc<Mutex<HubLog>>,
}

impl Hub {
    /// A hub with `faults`, serving; its address.
    pub(crate) async fn start(faults: Faults) -> (Self, SocketAddr) {
        let hub = Self {
            topics: Arc::default(),
            faults,
            log: Arc::default(),
        };
        let app = Router::new()
            .route("/topics/{topic}", post(publish))
            .route("/topics/{topic}/events", get(subscribe))
            .with_state(hub.clone());
        (hub, serve(app).await)
    }

    fn topic(&self, name: &str) -> Topic {
        let mut topics = self.topics.lock().unwrap();
        topics
            .entry(name.to_owned())
            .or_insert_with(|| broadcast::channel(4096).0)
            .clone()
    }
}

async fn publish(State(hub): State<Hub>, Path(topic): Path<String>, body: String) -> StatusCode {
    let Ok(message) = serde_json::from_str::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let n = {
        let mut log = hub.log.lock().unwrap();
        log.published += 1;
        log.published
    };
    let wrapped = serde_json::json!({"id": format!("msg-{n}"), "message": message});
    let _ = hub.topic(&topic).send((n, wrapped.to_string()));
    StatusCode::ACCEPTED
}

async fn subscribe(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
    headers: HeaderMap,
) -> Response {
    {
        let mut log = hub.log.lock().unwrap();
        log.subscriptions += 1;
        let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok());
        log.resumed_after.extend(resumed.map(str::to_owned));
    }
    let receiver = hub.topic(&topic).subscribe();
    let greeting = Bytes::from_static(
        b"id: sys-0\nevent: message\ndata: {\"id\":\"sys-0\",\"note\":\"welcome\"}\n\n",
    );
    let state = (receiver, hub, Some(greeting));
    let chunks = stream::unfold(state, |(mut receiver, hub, first)| async move {
        if let Some(first) = first {
            return Some((Ok(first), (receiver, hub, None)));
        }
        loop {
            let (n, message) = match receiver.recv().await {
                Ok(next) => next,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            let faults = hub.faults;
            if faults.drop_every > 0 && n % faults.drop_every == 0 {
                hub.log.lock().unwrap().dropped += 1;
                continue;
            }
            let event = format!(
                "id: msg-{n}\nevent: message\ndata: {message}\n\nevent: presence\ndata: 1 online\n\n"
            );
            let times = if faults.repeat_every > 0 && n % faults.repeat_every == 0 {
                hub.log.lock().unwrap().repeated += 1;
                2
            } else {
                1
            };
            return Some((Ok(Bytes::from(event.repeat(times))), (receiver, hub, None)));
        }
    });
    event_stream(chunks)
}

/// A WebSocket chat: `GET /chat` with the `chat.v1` subprotocol; a socket
/// that sends `{"join": ROOM}` receives the room's messages as
/// `{"room": ROOM, "text": …}`; `{"say": …}` says something to the
/// socket's room. Its address.
pub(crate) async fn chat() -> SocketAddr {
    let rooms: Rooms = Arc::default();
    let app = Router::new().route("/chat", get(upgrade)).with_state(rooms);
    serve(app).await
}

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<String>>>>;

async fn upgrade(State(rooms): State<Rooms>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let offered = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "chat.v1"));
    if !offered {
        return (
            StatusCode::BAD_REQUEST,
            "the chat.v1 subprotocol is required",
        )
            .into_response();
    }
    ws.protocols(["chat.v1"])
        .on_upgrade(move |socket| member(socket, rooms))
}

/// One chat member: nothing until it joins a room.
async fn member(mut socket: WebSocket, rooms: Rooms) {
    let mut joined: Option<(String, broadcast::Receiver<String>)> = None;
    loop {
        let heard = async {
            match joined.as_mut() {
                Some((_, room)) => room.recv().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(Message::Text(text))) = incoming else { return };
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                if let Some(room) = frame["join"].as_str() {
                    let sender = rooms.lock().unwrap().entry(room.to_owned())
                        .or_insert_with(|| broadcast::channel(4096).0).clone();
                    joined = Some((room.to_owned(), sender.subscribe()));
                } else if let (Some((room, _)), Some(said)) = (&joined, frame.get("say")) {
                    let line = serde_json::json!({"room": room, "text": said}).to_string();
                    if let Some(sender) = rooms.lock().unwrap().get(room) {
                        let _ = sender.send(line);
                    }
                }
            }
            Some(line) = heard => {
                if socket.send(Message::Text(line.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// An OpenAI-compatible chat completion stream: `tokens` content pieces,
/// the first `ttft` after the request, then one every `interval`, then the
/// usage and `[DONE]`; only for `Authorization: Bearer {key}`. Its
/// address.
pub(crate) async fn llm(
    key: &'static str,
    ttft: Duration,
    interval: Duration,
    tokens: u64,
) -> SocketAddr {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap, body: String| async move {
            let authorized = headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == format!("Bearer {key}").as_bytes());
            if !authorized {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let request: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if request["stream"] != true {
                return StatusCode::BAD_REQUEST.into_response();
            }
            let start = Instant::now();
            let chunks = stream::unfold(0, move |i| async move {
                if i > tokens + 1 {
                    return None;
                }
                let chunk = match i {
                    0 => "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n".to_owned(),
                    i if i <= tokens => {
                        sleep_until(start + ttft + interval * u32::try_from(i - 1).unwrap()).await;
                        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" w{i}\"}}}}]}}\n\n")
                    }
                    _ => format!(
                        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":{tokens}}}}}\n\ndata: [DONE]\n\n"
                    ),
                };
                Some((Ok::<_, Infallible>(Bytes::from(chunk)), i + 1))
            });
            event_stream(chunks)
        }),
    );
    serve(app).await
}

/// A CA made for one test, and a server certificate it signed for
/// `127.0.0.1`.
pub(crate) struct TestCa {
    /// The CA's certificate, PEM.
    pub(crate) pem: String,
    /// The server's certificate chain and key.
    pub(crate) server: (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
}

impl TestCa {
    /// A new CA called `name` and a server certificate for `127.0.0.1`.
    pub(crate) fn new(name: &str) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        Self {
            pem: ca.pem(),
            server: (vec![leaf.der().clone(), ca.der().clone()], key),
        }
    }
}

/// This project's events over TLS (a certificate of `ca`), 10 ms apart
/// until the client leaves, on any request path: as SSE, or over a
/// WebSocket when the request is an upgrade. Its address.
pub(crate) async fn tls_events(ca: &TestCa) -> SocketAddr {
    #[allow(deprecated, reason = "ring is the tree's one provider (TOOLCHAIN.md)")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(ca.server.0.clone(), ca.server.1.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_events(tls).await;
                }
            });
        }
    });
    addr
}

/// The `seq`-th event's JSON, stamped now.
fn event_json(seq: u64) -> String {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!("{{\"seq\":{seq},\"ts\":{ts}}}")
}

/// Events 10 ms apart over `tls`: WebSocket frames after an upgrade, SSE
/// otherwise.
async fn serve_events(mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
    let mut head = [0u8; 4];
    // Peeking is not possible through TLS: the upgrade is told by its
    // first bytes, read here and replayed to the handshake.
    if tls.read_exact(&mut head).await.is_err() {
        return;
    }
    let start = Instant::now();
    let due = |seq: u64| start + Duration::from_millis(10 * seq);
    let mut rest = Vec::new();
    let mut byte = [0u8];
    while !rest.ends_with(b"\r\n\r\n") && rest.len() < 8192 {
        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        rest.push(byte[0]);
    }
    let request = [&head[..], &rest].concat();
    if String::from_utf8_lossy(&request)
        .to_ascii_lowercase()
        .contains("upgrade: websocket")
    {
        let replayed = Replay(std::io::Cursor::new(request), tls);
        let Ok(mut ws) = tokio_tungstenite::accept_async(replayed).await else {
            return;
        };
        use futures_util::SinkExt as _;
        for seq in 1u64.. {
            sleep_until(due(seq)).await;
            let frame = tokio_tungstenite::tungstenite::Message::text(event_json(seq));
            if ws.send(frame).await.is_err() {
                return;
            }
        }
        return;
    }
    let answer = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
    if tls.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    for seq in 1u64.. {
        sleep_until(due(seq)).await;
        let event = format!("id: {seq}\ndata: {}\n\n", event_json(seq));
        if tls.write_all(event.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A stream whose first bytes were already read: they are read again
/// first, then the stream.
struct Replay<S>(std::io::Cursor<Vec<u8>>, S);

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Replay<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let replayed = &mut self.0;
        if (replayed.position() as usize) < replayed.get_ref().len() {
            return std::pin::Pin::new(replayed).poll_read(cx, buf);
        }
        std::pin::Pin::new(&mut self.1).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.1).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.1).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.1).poll_shutdown(cx)
    }
}
