//! An SSE stream read straight from the socket (plain TCP or TLS): the
//! HTTP response head, the body's framing (chunked or not) and the SSE
//! events are all parsed from one reused read buffer (small while the
//! stream is idle, see [`ReadBuffer`]), with no allocation per event; each
//! event's data is read as the target's format says ([`Decoder`]). Interim
//! (1xx) responses are skipped and redirects within the request's scheme
//! followed.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncWriteExt};

use super::format::{Decoder, Message};
use super::http::{BodyDecoder, BodyFraming, Decoded, ResponseHead, parse_head, redirect_target};
use super::read_buffer::{self, ReadBuffer};
use super::request::{Request, SSE_DEFAULTS};
use super::socket::Socket;
use super::sse_parser::SseParser;
use super::stream::{ClientError, Frame, now_micros};
use super::target::Target;
use super::tls::Connector;

/// Most bytes a response head may take: the most the read buffer grows to.
const MAX_HEAD: usize = read_buffer::MAX;

/// Most interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 8;

/// Most redirects followed for one stream (as browsers and curl, give or
/// take: enough for any sane chain, and a loop ends).
const MAX_REDIRECTS: usize = 5;

/// Most bytes of an unfinished line or event the client holds: a server
/// that never ends one is a protocol error, not unbounded memory.
const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Most bytes of a message a foreign format could not read kept as the
/// run's example.
const EXAMPLE_BYTES: usize = 200;

/// Reads a response head from `stream` into `buf` (at most `MAX_HEAD`
/// bytes of it), skipping interim (1xx) responses before it: the head, the
/// bytes it took, and the bytes read (the body starts between the two).
///
/// # Errors
///
/// A broken connection, or a head that is malformed or too long, or more
/// than `MAX_INTERIM` interim responses.
pub async fn read_head<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut ReadBuffer,
) -> Result<(ResponseHead, usize, usize), ClientError> {
    let mut filled = 0;
    let mut interim = 0;
    loop {
        let parsed = parse_head(&buf.as_slice()[..filled])
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        match parsed {
            Some((head, consumed)) if head.is_interim() => {
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(ClientError::Protocol(format!(
                        "over {MAX_INTERIM} interim (1xx) responses"
                    )));
                }
                // The final response follows at once: parse it from there.
                buf.as_mut_slice().copy_within(consumed..filled, 0);
                filled -= consumed;
                continue;
            }
            Some((head, consumed)) => return Ok((head, consumed, filled)),
            None => {}
        }
        // A read that fills the buffer grows it unless it is full size.
        if filled == buf.as_slice().len() {
            return Err(ClientError::Protocol(format!(
                "response head over {MAX_HEAD} bytes"
            )));
        }
        let n = buf
            .read(filled, stream)
            .await
            .map_err(ClientError::Connect)?;
        if n == 0 {
            return Err(ClientError::Connect(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        filled += n;
    }
}

/// An open SSE stream, over a [`Socket`] unless a test or benchmark gives
/// it another stream.
#[derive(Debug)]
pub struct SseStream<S = Socket> {
    stream: S,
    buf: ReadBuffer,
    decoder: BodyDecoder,
    parser: SseParser,
    /// How each event's data is read.
    format: Decoder,
    /// Comment lines already reported as keep-alives.
    comments: u64,
    /// When the bytes being parsed arrived, µs since the Unix epoch.
    received_us: u64,
    /// The body ended cleanly.
    done: bool,
    /// The start of the last message the format could not read, until
    /// taken ([`SseStream::take_unparsed`]).
    unparsed: Option<String>,
}

impl SseStream {
    /// Sends `request` on `host` over `stream` and reads the response head,
    /// following up to `MAX_REDIRECTS` redirects within the request's
    /// scheme, each over a new connection (`tls` makes the TLS ones; the
    /// bearer token goes only to `host`). Events are read as `format` says.
    ///
    /// # Errors
    ///
    /// A status other than 200 ([`ClientError::Status`]), a response that
    /// is not an event stream or has a content coding, a redirect that
    /// cannot be followed, or a broken connection.
    pub async fn open(
        mut stream: Socket,
        host: &str,
        request: &Request,
        format: Decoder,
        tls: Option<&Connector>,
    ) -> Result<Self, ClientError> {
        let mut buf = ReadBuffer::new();
        let mut authority = Cow::Borrowed(host);
        let mut request = Cow::Borrowed(request);
        let mut redirects = 0;
        loop {
            let with_token = authority.eq_ignore_ascii_case(host);
            let head = request.head(&authority, with_token, SSE_DEFAULTS);
            stream
                .write_all(head.as_bytes())
                .await
                .map_err(ClientError::Connect)?;
            let (head, consumed, filled) = read_head(&mut stream, &mut buf).await?;
            let location = head.location.as_deref().filter(|_| head.is_redirect());
            let Some(location) = location else {
                if matches!(head.status, 401 | 403) {
                    return Err(refusal(&mut stream, &mut buf, &head, consumed..filled).await);
                }
                check_head(&head)?;
                let mut sse = Self::with_buffer(stream, head.body, buf, format);
                sse.decode(consumed, filled)?;
                return Ok(sse);
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(ClientError::Protocol(format!(
                    "over {MAX_REDIRECTS} redirects, the last to {location:?}"
                )));
            }
            let (next_authority, next_path) =
                redirect_target(stream.is_tls(), &authority, &request.path, location)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
            stream = redial(&stream, &authority, &next_authority, tls).await?;
            request = Cow::Owned(request.redirected(head.status, next_path));
            authority = Cow::Owned(next_authority);
        }
    }

    /// The connection, for a caller that reads on by itself.
    pub fn into_inner(self) -> Socket {
        self.stream
    }
}

/// Most bytes of a refusal's body read for its `reason`.
const MAX_REFUSAL: usize = 4096;

/// What a `401` or `403` `head` says, its body read (`buf[read]` holds its
/// start, the rest comes from `stream`) up to [`MAX_REFUSAL`] bytes for
/// the reason it gives.
async fn refusal<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut ReadBuffer,
    head: &ResponseHead,
    mut read: std::ops::Range<usize>,
) -> ClientError {
    let mut decoder = BodyDecoder::new(head.body);
    let mut body = Vec::new();
    loop {
        let decoded = decoder.decode(&buf.as_slice()[read.clone()], &mut |bytes| {
            body.extend_from_slice(bytes);
        });
        if !matches!(decoded, Ok(Decoded::More)) || body.len() >= MAX_REFUSAL {
            break;
        }
        match buf.read(0, stream).await {
            Ok(n) if n > 0 => read = 0..n,
            _ => break,
        }
    }
    ClientError::answered(head.status, head.retry_after, &body)
}

/// Checks that a final response head opens an event stream.
fn check_head(head: &ResponseHead) -> Result<(), ClientError> {
    if head.status != 200 {
        return Err(ClientError::refused(head.status, head.retry_after));
    }
    if let Some(coding) = &head.content_coding {
        return Err(ClientError::Protocol(format!(
            "Content-Encoding {coding:?}: the stream was asked for identity and cannot be decoded"
        )));
    }
    if !head.has_media_type("text/event-stream") {
        return Err(ClientError::Protocol(format!(
            "content type {:?} is not an event stream",
            head.content_type
        )));
    }
    Ok(())
}

/// A connection for a redirect from `from` to `to` (authorities), made
/// after `previous` and in its scheme (over TLS with `tls` if it was): to
/// the same address and from the same source address when the authority
/// is the same, else to what `to` resolves to (port 80, or 443 over TLS,
/// by default), from the same loopback source address if both are on
/// loopback.
async fn redial(
    previous: &Socket,
    from: &str,
    to: &str,
    tls: Option<&Connector>,
) -> Result<Socket, ClientError> {
    let source = previous.local_addr().map_err(ClientError::Connect)?.ip();
    let default_port = if previous.is_tls() { 443 } else { 80 };
    let addr = if to.eq_ignore_ascii_case(from) {
        previous.peer_addr().map_err(ClientError::Connect)?
    } else {
        resolve(to, default_port).await?
    };
    let loopback = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4.is_loopback());
    let source = (loopback(source) && loopback(addr.ip())).then_some(source);
    let target = Target {
        addr,
        host: to.to_owned(),
        tls: previous.is_tls(),
    };
    target.connect_from(source, tls).await
}

/// The first address `authority` resolves to, at `default_port` if it
/// names none.
async fn resolve(authority: &str, default_port: u16) -> Result<SocketAddr, ClientError> {
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.ends_with(']'));
    let host_port = if has_port {
        Cow::Borrowed(authority)
    } else {
        Cow::Owned(format!("{authority}:{default_port}"))
    };
    tokio::net::lookup_host(host_port.as_ref())
        .await
        .map_err(ClientError::Connect)?
        .next()
        .ok_or_else(|| {
            ClientError::Connect(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{authority} resolves to no address"),
            ))
        })
}

impl<S: AsyncRead + Unpin> SseStream<S> {
    /// A stream whose response head has been read, at the start of a body
    /// framed as `framing`: what [`SseStream::open`] makes of a connection
    /// once the head checks out, and what a test or benchmark drives from
    /// memory.
    pub fn from_body(stream: S, framing: BodyFraming, format: Decoder) -> Self {
        Self::with_buffer(stream, framing, ReadBuffer::new(), format)
    }

    /// A stream at the start of a body framed as `framing`, reading into
    /// `buf` (the bytes of it already read are decoded separately).
    fn with_buffer(stream: S, framing: BodyFraming, buf: ReadBuffer, format: Decoder) -> Self {
        Self {
            stream,
            buf,
            decoder: BodyDecoder::new(framing),
            parser: SseParser::new(),
            format,
            comments: 0,
            received_us: now_micros(),
            done: false,
            unparsed: None,
        }
    }

    /// The start of the last message the target's format could not read,
    /// if one came since the last call.
    pub fn take_unparsed(&mut self) -> Option<String> {
        self.unparsed.take()
    }

    /// The id of the last event received (empty if the stream sent none):
    /// the `Last-Event-ID` a client resumes with.
    pub fn last_event_id(&self) -> &[u8] {
        self.parser.last_event_id()
    }

    /// Feeds `buf[from..to]` through the body decoder into the parser.
    fn decode(&mut self, from: usize, to: usize) -> Result<(), ClientError> {
        let parser = &mut self.parser;
        let decoded = self
            .decoder
            .decode(&self.buf.as_slice()[from..to], &mut |body| {
                parser.feed(body)
            })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.done |= matches!(decoded, Decoded::Done);
        if self.parser.buffered() > MAX_PENDING {
            return Err(ClientError::Protocol(format!(
                "over {MAX_PENDING} bytes without the end of an event"
            )));
        }
        Ok(())
    }

    /// The next frame.
    ///
    /// # Errors
    ///
    /// A broken connection or malformed bytes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes are only consumed in the poll that reads them.
    pub async fn next(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(event) = self.parser.next_event() {
                let bytes = event.data.len();
                let message = self
                    .format
                    .decode(event.event, event.data)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                match message {
                    Message::Skipped => continue,
                    Message::End => {
                        self.done = true;
                        return Ok(Frame::End);
                    }
                    Message::Unparsed if self.unparsed.is_none() => {
                        self.unparsed = Some(example(event.data));
                    }
                    _ => {}
                }
                return Ok(Frame::Event {
                    message,
                    bytes,
                    received_us: self.received_us,
                });
            }
            if self.parser.comments() > self.comments {
                self.comments += 1;
                return Ok(Frame::KeepAlive);
            }
            if self.done {
                return Ok(Frame::End);
            }
            let n = self
                .buf
                .read(0, &mut self.stream)
                .await
                .map_err(|e| ClientError::Closed(e.to_string()))?;
            self.received_us = now_micros();
            if n == 0 {
                self.decoder
                    .at_eof()
                    .map_err(|e| ClientError::Closed(format!("the stream broke off: {e}")))?;
                self.done = true;
                continue;
            }
            self.decode(0, n)?;
        }
    }
}

/// The start of `message` (at most `EXAMPLE_BYTES`, cut at a character),
/// as the report shows it.
pub fn example(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(&message[..message.len().min(EXAMPLE_BYTES + 4)]);
    let mut end = text.len().min(EXAMPLE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::super::envelope;
    use super::*;

    /// How long any step of a test may take.
    const WAIT: Duration = Duration::from_secs(10);

    /// The head of a good stream response, before its body.
    const STREAM_HEAD: &str =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// One event with `seq` 1 as a chunk of a chunked body.
    fn event_chunk() -> String {
        let event = "id: 1\ndata: {\"seq\":1,\"ts\":5}\n\n";
        format!("{:x}\r\n{event}\r\n", event.len())
    }

    /// A fake server on 127.0.0.1 answering each connection it accepts,
    /// in turn, with the next of `responses`: its address, and a task that
    /// gives back the request heads it read (and the connections, kept
    /// open until the test is done with them).
    async fn peer(
        responses: Vec<String>,
    ) -> (SocketAddr, JoinHandle<(Vec<String>, Vec<TcpStream>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut requests, mut connections) = (Vec::new(), Vec::new());
            for response in responses {
                let (mut socket, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    assert!(head.len() < 4096, "an endless request head");
                    let mut byte = [0];
                    let n = timeout(WAIT, socket.read(&mut byte))
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(n, 1, "the request ended early");
                    head.push(byte[0]);
                }
                requests.push(String::from_utf8(head).unwrap());
                socket.write_all(response.as_bytes()).await.unwrap();
                connections.push(socket);
            }
            (requests, connections)
        });
        (addr, task)
    }

    /// Opens `/sse/topics/t` with token `tok` on `addr`.
    async fn open(addr: SocketAddr) -> Result<SseStream, ClientError> {
        let stream = TcpStream::connect(addr).await.unwrap();
        let host = addr.to_string();
        let request = Request::get("/sse/topics/t", Some("tok"));
        timeout(
            WAIT,
            SseStream::open(stream.into(), &host, &request, Decoder::streamgauge(), None),
        )
        .await
        .expect("opened in time")
    }

    /// Opens a stream on a peer answering `responses`; the outcome and the
    /// requests the peer read.
    async fn open_on(responses: Vec<String>) -> (Result<SseStream, ClientError>, Vec<String>) {
        let (addr, peer) = peer(responses).await;
        let opened = open(addr).await;
        let (requests, _) = timeout(WAIT, peer).await.unwrap().unwrap();
        (opened, requests)
    }

    /// Asserts that `sse` delivers the event of [`event_chunk`].
    async fn assert_first_event(sse: &mut SseStream) {
        match timeout(WAIT, sse.next()).await.unwrap().unwrap() {
            Frame::Event {
                message: Message::Envelope(envelope),
                ..
            } => assert_eq!(envelope.seq, Some(1)),
            other => panic!("{other:?}"),
        }
    }

    fn protocol_error(opened: Result<SseStream, ClientError>) -> String {
        match opened {
            Err(ClientError::Protocol(message)) => message,
            other => panic!("not a protocol error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn request_asks_for_an_uncoded_event_stream() {
        let (opened, requests) = open_on(vec![format!("{STREAM_HEAD}{}", event_chunk())]).await;
        assert_first_event(&mut opened.unwrap()).await;
        let request = &requests[0];
        assert!(
            request.starts_with("GET /sse/topics/t HTTP/1.1\r\n"),
            "{request}"
        );
        for line in [
            "Accept: text/event-stream\r\n",
            "Accept-Encoding: identity\r\n",
            "Authorization: Bearer tok\r\n",
        ] {
            assert!(request.contains(line), "{line:?} not in {request}");
        }
    }

    #[tokio::test]
    async fn interim_responses_and_folded_lines_come_before_the_stream() {
        let response = format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream;\r\n charset=utf-8\r\n\
             Content-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            event_chunk()
        );
        let (opened, _) = open_on(vec![response]).await;
        assert_first_event(&mut opened.unwrap()).await;
    }

    #[tokio::test]
    async fn endless_interim_responses_are_a_protocol_error() {
        let interim = "HTTP/1.1 103 Early Hints\r\n\r\n".repeat(MAX_INTERIM + 1);
        let (opened, _) = open_on(vec![format!("{interim}{STREAM_HEAD}")]).await;
        assert!(protocol_error(opened).contains("interim"));
        // As many as allowed are fine.
        let interim = "HTTP/1.1 103 Early Hints\r\n\r\n".repeat(MAX_INTERIM);
        let (opened, _) = open_on(vec![format!("{interim}{STREAM_HEAD}{}", event_chunk())]).await;
        assert_first_event(&mut opened.unwrap()).await;
    }

    #[tokio::test]
    async fn a_content_coding_is_named_in_the_error() {
        let response = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                        Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (opened, _) = open_on(vec![response.to_owned()]).await;
        let message = protocol_error(opened);
        assert!(message.contains("Content-Encoding \"gzip\""), "{message}");
    }

    #[tokio::test]
    async fn other_media_types_are_refused() {
        let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n";
        let (opened, _) = open_on(vec![response.to_owned()]).await;
        assert!(protocol_error(opened).contains("not an event stream"));
    }

    /// A redirect response with `status` to `location`.
    fn redirect(status: u16, location: &str) -> String {
        format!("HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
    }

    #[tokio::test]
    async fn every_redirect_status_is_followed_on_the_same_host() {
        for status in [301, 302, 303, 307, 308] {
            let responses = vec![
                redirect(status, "next?since=3"),
                format!("{STREAM_HEAD}{}", event_chunk()),
            ];
            let (opened, requests) = open_on(responses).await;
            assert_first_event(&mut opened.unwrap()).await;
            let second = &requests[1];
            assert!(
                second.starts_with("GET /sse/topics/next?since=3 HTTP/1.1\r\n"),
                "{status}: {second}"
            );
            assert!(second.contains("Authorization: Bearer tok\r\n"), "{second}");
        }
    }

    #[tokio::test]
    async fn a_redirect_to_another_host_goes_there_without_the_token() {
        let (there, there_peer) = peer(vec![
            redirect(307, "/final"),
            format!("{STREAM_HEAD}{}", event_chunk()),
        ])
        .await;
        let (here, here_peer) = peer(vec![redirect(302, &format!("http://{there}/moved#x"))]).await;
        assert_first_event(&mut open(here).await.unwrap()).await;
        let (here_requests, _) = timeout(WAIT, here_peer).await.unwrap().unwrap();
        let (there_requests, _) = timeout(WAIT, there_peer).await.unwrap().unwrap();
        assert!(here_requests[0].contains("Authorization: Bearer tok\r\n"));
        let paths = ["/moved", "/final"];
        for (request, path) in there_requests.iter().zip(paths) {
            assert!(
                request.starts_with(&format!("GET {path} HTTP/1.1\r\nHost: {there}\r\n")),
                "{request}"
            );
            assert!(!request.contains("Authorization"), "{request}");
        }
    }

    #[tokio::test]
    async fn redirects_stop_after_the_limit() {
        let responses = vec![redirect(302, "/again"); MAX_REDIRECTS + 1];
        let (opened, requests) = open_on(responses).await;
        assert!(protocol_error(opened).contains("over 5 redirects"));
        assert_eq!(requests.len(), MAX_REDIRECTS + 1);
    }

    #[tokio::test]
    async fn a_redirect_to_https_from_http_is_not_followed() {
        let (opened, _) = open_on(vec![redirect(301, "https://127.0.0.1/sse")]).await;
        let message = protocol_error(opened);
        assert!(message.contains("from http to another scheme"), "{message}");
    }

    #[tokio::test]
    async fn a_redirect_without_location_is_its_status() {
        let response = "HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n";
        let (opened, _) = open_on(vec![response.to_owned()]).await;
        assert!(
            matches!(opened, Err(ClientError::Status(302))),
            "{opened:?}"
        );
    }

    /// A reader handing out `pieces` one read at a time (a piece larger
    /// than the read over several), then the end of the stream.
    struct Pieces<'a>(std::collections::VecDeque<&'a [u8]>);

    impl AsyncRead for Pieces<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            // An empty read is the end: empty pieces are no reads at all.
            while let Some(piece) = self.0.front_mut() {
                if piece.is_empty() {
                    self.0.pop_front();
                    continue;
                }
                let n = out.remaining().min(piece.len());
                out.put_slice(&piece[..n]);
                *piece = &piece[n..];
                break;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// What a stream made of `pieces` of a chunked body delivers until
    /// its end: each event's envelope and size, and the keep-alives (which
    /// come after the events parsed from the same read, so their place
    /// depends on the reads).
    async fn delivered(pieces: &[&[u8]]) -> (Vec<(envelope::Envelope, usize)>, usize) {
        let reader = Pieces(pieces.iter().copied().collect());
        let mut sse = SseStream::from_body(reader, BodyFraming::Chunked, Decoder::streamgauge());
        let (mut events, mut keepalives) = (Vec::new(), 0);
        loop {
            match sse.next().await.expect("a valid stream") {
                Frame::Event {
                    message: Message::Envelope(envelope),
                    bytes,
                    ..
                } => events.push((envelope, bytes)),
                Frame::Event { message, .. } => panic!("not this project's event: {message:?}"),
                Frame::KeepAlive => keepalives += 1,
                Frame::End => return (events, keepalives),
            }
        }
    }

    #[tokio::test]
    async fn a_chunked_stream_cut_anywhere_delivers_the_same() {
        // Multi-byte characters, CRLF and LF line ends, a comment, an event
        // whose data spans two lines.
        let body = "id: 1\r\ndata: {\"seq\":1,\"ts\":5,\"data\":\"é€𝄞\"}\r\n\r\n: ping\r\n\r\n\
                    event: x\nid: 2\ndata: {\"seq\":2,\r\ndata: \"ts\":6}\n\n\
                    data: {\"seq\":3,\"ts\":7,\"data\":{\"sent_us\":4,\"t\":\"ç\"}}\r\n\r\n";
        let mut rng = fastrand::Rng::with_seed(0xE2E);
        for _ in 0..3 {
            let encoded = super::super::http::tests::encode_chunked(body.as_bytes(), &mut rng);
            let want = delivered(&[&encoded]).await;
            let seqs: Vec<_> = want.0.iter().map(|(e, _)| e.seq).collect();
            assert_eq!((seqs, want.1), (vec![Some(1), Some(2), Some(3)], 1));
            assert_eq!(want.0[2].0.data.sent_us, Some(4));
            for first in 0..=encoded.len() {
                for second in first..=encoded.len() {
                    let (a, rest) = encoded.split_at(first);
                    let (b, c) = rest.split_at(second - first);
                    let got = delivered(&[a, b, c]).await;
                    assert_eq!(got, want, "cuts at {first}, {second}");
                }
            }
        }
    }
}
