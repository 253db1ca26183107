//! One client type over both transports, so every behaviour is tested the
//! same way on SSE and on WebSocket.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{WebSocketStream, client_async};

use super::within;

/// The most events [`Client::drain`] takes: more than any test streams, so
/// a stream that should have ended fails the test instead of running on.
pub const DRAIN_MAX_EVENTS: usize = 100_000;

/// A transport under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    Ws,
}

impl Transport {
    pub const BOTH: [Transport; 2] = [Transport::Sse, Transport::Ws];

    /// The URL prefix and metric label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }
}

/// How a stream ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// SSE: the chunked body ended cleanly.
    Body,
    /// SSE: an `end` notice with this reason, then the body ended cleanly.
    Notice(String),
    /// WebSocket: a close frame with this code.
    Close(u16),
    /// The connection broke (no clean end, no close frame).
    Broken(String),
}

/// What a stream delivered next.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An event, parsed from its JSON.
    Event(Value),
    /// A gap notice: its `{"from", "to", "reason"}`.
    Gap(Value),
    /// Any other frame (a WebSocket publish ack or error).
    Reply(Value),
    /// A keep-alive: an SSE comment or a WebSocket ping.
    KeepAlive,
    /// The end of the stream.
    End(End),
}

/// A connection a client reads through: a plain socket, or one the test
/// made itself (a fixed receive buffer, paced reads).
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A WebSocket client over any connection.
pub type WsStream = WebSocketStream<Box<dyn Conn>>;

/// A streaming client.
pub enum Client {
    Sse(SseClient),
    Ws(Box<WsStream>),
}

impl Client {
    /// Opens `/{transport}/{path}` on `addr` with extra request `headers`,
    /// expecting the stream to start.
    pub async fn open(
        addr: SocketAddr,
        transport: Transport,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Self {
        within(
            "the stream to start",
            Self::try_open(addr, transport, path, headers),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens `/{transport}/{path}` on `addr` with extra request `headers`;
    /// why not, when the server refused or could not be reached. Unbounded:
    /// the caller bounds the wait.
    pub async fn try_open(
        addr: SocketAddr,
        transport: Transport,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, String> {
        match transport {
            Transport::Sse => {
                let url = format!("http://{addr}/sse/{path}");
                let mut request = super::http_client().get(&url);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                if response.status() != 200 {
                    return Err(format!("GET {url}: {}", response.status()));
                }
                assert_eq!(response.headers()["content-type"], "text/event-stream");
                assert_eq!(response.headers()["cache-control"], "no-cache");
                Ok(Client::Sse(SseClient::new(SseBody::Response(response))))
            }
            Transport::Ws => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connecting to {addr}: {e}"))?;
                Self::try_ws_over(Box::new(stream), addr, path, headers).await
            }
        }
    }

    /// Opens `/{transport}/{path}` on `addr` over `conn`, a connection to
    /// it that the test made itself, expecting the stream to start. SSE is
    /// asked for over HTTP/1.0, so that the body is the bare event stream
    /// up to the end of the connection.
    pub async fn open_over(
        conn: impl Conn + 'static,
        addr: SocketAddr,
        transport: Transport,
        path: &str,
    ) -> Self {
        let conn: Box<dyn Conn> = Box::new(conn);
        match transport {
            Transport::Sse => Client::Sse(SseClient::over(conn, addr, path).await),
            Transport::Ws => Self::ws_over(conn, addr, path, &[]).await,
        }
    }

    /// Opens `/ws/{path}` on `addr` over `conn` with extra request
    /// `headers`, expecting the stream to start.
    async fn ws_over(
        conn: Box<dyn Conn>,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Self {
        within(
            "WebSocket handshake",
            Self::try_ws_over(conn, addr, path, headers),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens `/ws/{path}` on `addr` over `conn` with extra request
    /// `headers`; why not, when the handshake failed. Unbounded.
    async fn try_ws_over(
        conn: Box<dyn Conn>,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, String> {
        let url = format!("ws://{addr}/ws/{path}");
        let mut request = url.as_str().into_client_request().expect("a WebSocket URL");
        for (name, value) in headers {
            let name =
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap();
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(value).unwrap());
        }
        let (socket, response) = client_async(request, conn)
            .await
            .map_err(|e| format!("WebSocket {url}: {e}"))?;
        assert_eq!(response.status(), 101);
        Ok(Client::Ws(Box::new(socket)))
    }

    /// The next thing the stream delivers, failing the test after the wait.
    pub async fn next(&mut self) -> Item {
        match self {
            Client::Sse(sse) => within("the next SSE item", sse.next()).await,
            Client::Ws(ws) => within("the next WebSocket item", next_ws(ws)).await,
        }
    }

    /// The next item that is not a keep-alive, keep-alives and all within
    /// the wait.
    pub async fn next_item(&mut self) -> Item {
        within("the next item that is not a keep-alive", async {
            loop {
                match self.next().await {
                    Item::KeepAlive => {}
                    item => return item,
                }
            }
        })
        .await
    }

    /// The next event, skipping keep-alives; fails on anything else.
    pub async fn next_event(&mut self) -> Value {
        match self.next_item().await {
            Item::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Every remaining event, then how the stream ended; fails on a gap
    /// notice or a reply, after [`DRAIN_MAX_EVENTS`] events, and when the
    /// stream has not ended within the wait.
    pub async fn drain(&mut self) -> (Vec<Value>, End) {
        within("the stream to end", async {
            let mut events = Vec::new();
            loop {
                match self.next_item().await {
                    Item::Event(event) => events.push(event),
                    Item::End(end) => return (events, end),
                    other => panic!("expected an event, got {other:?}"),
                }
                assert!(
                    events.len() <= DRAIN_MAX_EVENTS,
                    "the stream did not end after {DRAIN_MAX_EVENTS} events"
                );
            }
        })
        .await
    }

    /// Sends a WebSocket message (panics on SSE, which has no upstream).
    pub async fn send(&mut self, message: Message) {
        let Client::Ws(ws) = self else {
            panic!("SSE clients cannot send");
        };
        within("a WebSocket send", ws.send(message))
            .await
            .expect("WebSocket send");
    }
}

async fn next_ws(ws: &mut WsStream) -> Item {
    match ws.next().await {
        Some(Ok(Message::Text(text))) => classify(serde_json::from_str(&text).expect("frame JSON")),
        Some(Ok(Message::Ping(_))) => Item::KeepAlive,
        Some(Ok(Message::Close(frame))) => {
            // Finish the closing handshake as a well-behaved client does:
            // reading on flushes tungstenite's reply, then the stream ends.
            while let Some(Ok(_)) = ws.next().await {}
            Item::End(End::Close(frame.map_or(1005, |f| f.code.into())))
        }
        Some(Ok(other)) => panic!("unexpected WebSocket message {other:?}"),
        Some(Err(e)) => Item::End(End::Broken(e.to_string())),
        None => Item::End(End::Broken("closed without a close frame".to_owned())),
    }
}

/// An event if it has a `seq`, a gap notice if it is `{"gap": …}`, a reply
/// otherwise.
fn classify(frame: Value) -> Item {
    if frame.get("seq").is_some() {
        Item::Event(frame)
    } else if let Some(gap) = frame.get("gap") {
        Item::Gap(gap.clone())
    } else {
        Item::Reply(frame)
    }
}

/// Bytes an [`SseBody::Raw`] reads at a time, at most.
const RAW_PIECE: usize = 16 * 1024;

/// Where an SSE body comes from.
enum SseBody {
    /// reqwest's response (HTTP/1.1, chunked).
    Response(reqwest::Response),
    /// An HTTP/1.0 response on a connection the test made: every byte up
    /// to the end of the connection.
    Raw(Box<dyn Conn>),
}

impl SseBody {
    /// The next piece of the body; `None` at its end.
    async fn next_piece(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            SseBody::Response(response) => response.chunk().await.map_err(|e| format!("{e:?}")),
            SseBody::Raw(conn) => {
                let mut piece = vec![0u8; RAW_PIECE];
                let n = conn.read(&mut piece).await.map_err(|e| e.to_string())?;
                piece.truncate(n);
                Ok((n > 0).then(|| piece.into()))
            }
        }
    }
}

/// An SSE client parsing the body incrementally.
pub struct SseClient {
    body: SseBody,
    /// Bytes of the body received; blocks are UTF-8 once complete.
    buffer: Vec<u8>,
    /// Where the unparsed part of `buffer` starts.
    parsed: usize,
    ended: bool,
    /// The reason of an `end` notice: the body must end right after it.
    notice: Option<String>,
}

impl SseClient {
    fn new(body: SseBody) -> Self {
        Self {
            body,
            buffer: Vec::new(),
            parsed: 0,
            ended: false,
            notice: None,
        }
    }

    /// Sends `GET /sse/{path}` over `conn` as HTTP/1.0 and reads the
    /// response head, expecting the stream to start.
    async fn over(mut conn: Box<dyn Conn>, addr: SocketAddr, path: &str) -> Self {
        let request = format!("GET /sse/{path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        within("an SSE request", conn.write_all(request.as_bytes()))
            .await
            .expect("sending the request");
        let mut client = Self::new(SseBody::Raw(conn));
        let head = within("SSE response headers", client.head()).await;
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (field, value) = line.split_once(':')?;
                field.eq_ignore_ascii_case(name).then(|| value.trim())
            })
        };
        assert_eq!(
            head.split(' ').nth(1),
            Some("200"),
            "GET /sse/{path}: {head}"
        );
        assert_eq!(header("content-type"), Some("text/event-stream"), "{head}");
        assert_eq!(header("cache-control"), Some("no-cache"), "{head}");
        client
    }

    /// The response head through its blank line; what follows stays in
    /// the buffer.
    async fn head(&mut self) -> String {
        loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                let head: Vec<u8> = self.buffer.drain(..at + 4).collect();
                return String::from_utf8(head).expect("an ASCII head");
            }
            match self.body.next_piece().await {
                Ok(Some(piece)) => self.buffer.extend_from_slice(&piece),
                other => panic!("no response head: {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> Item {
        loop {
            if let Some(item) = self.parse_one() {
                return item;
            }
            if self.ended {
                assert!(
                    self.buffer[self.parsed..].is_empty(),
                    "body ended inside an event: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                );
                return Item::End(self.notice.take().map_or(End::Body, End::Notice));
            }
            match self.body.next_piece().await {
                Ok(Some(piece)) => {
                    // Drop what was parsed before appending: one shift per
                    // piece, not one per event.
                    self.buffer.drain(..self.parsed);
                    self.parsed = 0;
                    self.buffer.extend_from_slice(&piece);
                }
                Ok(None) => self.ended = true,
                Err(e) => return Item::End(End::Broken(e)),
            }
        }
    }

    /// Takes one complete event or comment block off the buffer.
    fn parse_one(&mut self) -> Option<Item> {
        let end = self.parsed + find(&self.buffer[self.parsed..], b"\n\n")? + 2;
        assert!(
            self.notice.is_none(),
            "more after an end notice: {:?}",
            String::from_utf8_lossy(&self.buffer)
        );
        let block = std::str::from_utf8(&self.buffer[self.parsed..end])
            .expect("UTF-8 body")
            .to_owned();
        self.parsed = end;
        let mut data = Vec::new();
        let (mut id, mut name) = (None, None);
        for line in block.lines() {
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "data" => data.push(value),
                "id" => id = Some(value.to_owned()),
                "event" => name = Some(value.to_owned()),
                other => panic!("unexpected SSE field {other:?} in {block:?}"),
            }
        }
        if data.is_empty() {
            return Some(Item::KeepAlive);
        }
        let frame: Value = serde_json::from_str(&data.join("\n")).expect("event JSON");
        if name.as_deref() == Some("end") {
            assert_eq!(id, None, "end notices carry no id");
            let reason = frame["end"]["reason"].as_str().expect("an end reason");
            self.notice = Some(reason.to_owned());
            return None;
        }
        if name.as_deref() == Some("gap") {
            assert_eq!(id, None, "gap notices carry no id");
            return Some(Item::Gap(frame["gap"].clone()));
        }
        assert_eq!(name, None, "unexpected SSE event name in {block:?}");
        assert_eq!(id, Some(frame["seq"].to_string()), "SSE id must be the seq");
        Some(Item::Event(frame))
    }
}

/// Where `needle` first starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
