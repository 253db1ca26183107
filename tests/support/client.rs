//! One client type over both transports, so every behaviour is tested the
//! same way on SSE and on WebSocket.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

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

/// A streaming client.
pub enum Client {
    Sse(SseClient),
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
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
        let url = format!(
            "{}://{addr}/{}/{path}",
            scheme(transport),
            transport.label()
        );
        match transport {
            Transport::Sse => {
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
                Ok(Client::Sse(SseClient::new(response)))
            }
            Transport::Ws => {
                let mut request = url.as_str().into_client_request().expect("a WebSocket URL");
                for (name, value) in headers {
                    let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(
                        name.as_bytes(),
                    )
                    .unwrap();
                    request
                        .headers_mut()
                        .insert(name, HeaderValue::from_str(value).unwrap());
                }
                let (socket, response) = connect_async(request)
                    .await
                    .map_err(|e| format!("WebSocket {url}: {e}"))?;
                assert_eq!(response.status(), 101);
                Ok(Client::Ws(Box::new(socket)))
            }
        }
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

fn scheme(transport: Transport) -> &'static str {
    match transport {
        Transport::Sse => "http",
        Transport::Ws => "ws",
    }
}

async fn next_ws(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Item {
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

/// An SSE client parsing the body incrementally.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
    /// Where the unparsed part of `buffer` starts.
    parsed: usize,
    ended: bool,
    /// The reason of an `end` notice: the body must end right after it.
    notice: Option<String>,
}

impl SseClient {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
            parsed: 0,
            ended: false,
            notice: None,
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
                    self.buffer
                );
                return Item::End(self.notice.take().map_or(End::Body, End::Notice));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => {
                    // Drop what was parsed before appending: one shift per
                    // chunk, not one per event.
                    self.buffer.drain(..self.parsed);
                    self.parsed = 0;
                    self.buffer
                        .push_str(std::str::from_utf8(&chunk).expect("UTF-8 body"));
                }
                Ok(None) => self.ended = true,
                Err(e) => return Item::End(End::Broken(format!("{e:?}"))),
            }
        }
    }

    /// Takes one complete event or comment block off the buffer.
    fn parse_one(&mut self) -> Option<Item> {
        let end = self.parsed + self.buffer[self.parsed..].find("\n\n")? + 2;
        assert!(
            self.notice.is_none(),
            "more after an end notice: {:?}",
            self.buffer
        );
        let block = self.buffer[self.parsed..end].to_owned();
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
