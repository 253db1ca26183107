//! SSE over HTTP/1.1 without hyper, for the streams that are most of the
//! connections a server like this holds.
//!
//! Hyper keeps two 8 KiB buffers for the life of every HTTP/1 connection
//! (the read buffer it parsed the head in, the write buffer of response
//! heads; neither can be made smaller: `max_buf_size` has a floor of 8,192),
//! which made them 16 of the 20 KiB an idle SSE stream cost
//! (docs/performance.md). Here a `GET /sse/…` whose head came in whole is
//! peeked at in a buffer freed at once, answered by the same router as
//! every other request, and its body written straight to the socket:
//! nothing is kept per connection but the session and the socket.
//!
//! A stream's connection is its own: the response says `Connection: close`
//! and the socket closes when the body ends. Anything else (another method
//! or path, a request body, HTTP/1.0, a head that came in pieces or is
//! malformed) is left unread for hyper, which answers it as before.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, BodyDataStream, HttpBody as _};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use axum::http::{HeaderName, HeaderValue, Method, Request, Version};
use axum::response::Response;
use bytes::{Buf, BufMut as _, Bytes, BytesMut};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

use crate::listener::DeadlineIo;

/// The paths served here; every other request goes to hyper.
const STREAM_PREFIX: &str = "/sse/";

/// The largest head peeked at (a longer one goes to hyper, whose own limit
/// then applies). Allocated for the peek only.
const PEEK: usize = 4096;

/// Most header lines in a head served here.
const MAX_HEADERS: usize = 32;

/// Chunks gathered into one write while the body has them ready: hyper's
/// figure, whose gathering keeps a saturated stream cheap.
const GATHER_CHUNKS: usize = 16;

/// Bytes past which no more chunks are gathered into a write: with the
/// chunk that crosses it, the most an SSE stream holds under its writer.
pub const GATHER_BYTES: usize = 256 * 1024;

/// Bytes a client may send after its request before it is closed: an SSE
/// client sends nothing, and a request pipelined behind a stream is never
/// answered (the response closes the connection).
const MAX_TRAILING_INPUT: usize = 16 * 1024;

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What a connection's first bytes are.
#[derive(Debug)]
pub enum Sniffed {
    /// A whole SSE request head, already consumed from the socket.
    Stream(Box<Request<Body>>),
    /// Anything else, left unread.
    Other,
    /// The peer closed, failed or missed the header deadline first.
    Gone,
}

/// Peeks at the first bytes of `io` (waiting at most until its header
/// deadline) and consumes them if they are a whole SSE request head.
pub async fn sniff(io: &mut DeadlineIo) -> Sniffed {
    let mut buf = vec![0; PEEK];
    let peeked = match io.peek_head(&mut buf).await {
        Ok(0) | Err(_) => return Sniffed::Gone,
        Ok(n) => n,
    };
    let Some((request, len)) = parse(&buf[..peeked]) else {
        return Sniffed::Other;
    };
    // The head is in the socket's buffer (peeked): this read does not wait.
    match io.read_exact(&mut buf[..len]).await {
        Ok(_) => Sniffed::Stream(Box::new(request)),
        Err(_) => Sniffed::Gone,
    }
}

/// The request in `bytes` and its head's length, if it is a whole head of
/// a body-less HTTP/1.1 `GET` of a stream path.
fn parse(bytes: &[u8]) -> Option<(Request<Body>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = head.parse(bytes).ok()? else {
        return None;
    };
    let path = head.path?;
    if head.method? != "GET" || head.version? != 1 || !path.starts_with(STREAM_PREFIX) {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(Version::HTTP_11);
    for header in head.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        if name == CONTENT_LENGTH && header.value != b"0" || name == TRANSFER_ENCODING {
            return None;
        }
        request = request.header(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    Some((request.body(Body::empty()).ok()?, len))
}

/// Answers `request` with `router` and writes the response to `io`, then
/// closes the connection.
///
/// The futures here are what an idle SSE connection holds besides its
/// session, so each part is stored once: `async` blocks over borrowed
/// parts rather than `async fn`s (which keep a second copy of every
/// argument), and the response taken apart before the first wait.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps a second copy of its arguments"
)]
pub fn serve(
    io: &mut DeadlineIo,
    router: Router,
    request: Box<Request<Body>>,
) -> impl Future<Output = ()> + Send + '_ {
    async move {
        let response = match router.oneshot(*request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let written = match begin(response) {
            Ok((out, body, ended)) => write_body(io, out, body, ended).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {
                let _ = io.shutdown().await;
            }
            Err(e) => tracing::trace!("stream connection ended: {e}"),
        }
    }
}

/// Why a response was not written to its end.
#[derive(Debug, thiserror::Error)]
enum Cut {
    #[error("writing: {0}")]
    Io(#[from] std::io::Error),
    #[error("the body failed: {0}")]
    Body(#[from] axum::Error),
    #[error("the client closed its side")]
    ClientGone,
    #[error("the client sent more than {MAX_TRAILING_INPUT} bytes after its request")]
    TooMuchInput,
}

/// The first write of `response` (its head, and the chunks its body has
/// ready), the rest of its body, and whether the body has already ended.
fn begin(response: Response) -> Result<(Gather, BodyDataStream, bool), Cut> {
    let (parts, body) = response.into_parts();
    let length = body.size_hint().exact();
    let mut out = Gather::new(length.is_none());
    out.head = head(&parts, length);
    let mut body = body.into_data_stream();
    let ended = out.gather(&mut body, None)?;
    Ok((out, body, ended))
}

/// Writes `out`, then the rest of `body` (chunked as `out` is), gathering
/// the chunks the body has ready into one write. The socket is read
/// meanwhile, so that a client that goes away ends the stream at once
/// rather than at the next write.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps a second copy of its arguments"
)]
fn write_body<'a>(
    io: &'a mut DeadlineIo,
    mut out: Gather,
    mut body: BodyDataStream,
    mut ended: bool,
) -> impl Future<Output = Result<(), Cut>> + Send + 'a {
    // An `async` block: an `async fn` would keep a second copy of `out`.
    async move {
        io.write_all_buf(&mut out).await?;
        // Written: what it held is let go of at once. The head is freed, and
        // the writer reuses its buffer only once no chunk of it is held.
        out = Gather::new(out.chunked);
        let mut probe = [0u8; 64];
        let mut input = 0;
        while !ended {
            let next = tokio::select! {
                next = body.next() => next,
                read = io.read(&mut probe) => match read? {
                    0 => return Err(Cut::ClientGone),
                    n if input + n > MAX_TRAILING_INPUT => return Err(Cut::TooMuchInput),
                    n => {
                        input += n;
                        continue;
                    }
                },
            };
            ended = match next {
                Some(chunk) => out.gather(&mut body, Some(chunk?))?,
                None => {
                    out.end();
                    true
                }
            };
            io.write_all_buf(&mut out).await?;
            out = Gather::new(out.chunked);
        }
        Ok(())
    }
}

/// The response head of `parts`, framed by `length` (chunked if unknown).
fn head(parts: &axum::http::response::Parts, length: Option<u64>) -> Bytes {
    let mut head = BytesMut::with_capacity(256);
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(parts.status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    let framing = [CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING];
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(name, _)| !framing.contains(name))
    {
        put_header(&mut head, name.as_str(), value.as_bytes());
    }
    let date = httpdate::fmt_http_date(SystemTime::now());
    put_header(&mut head, DATE.as_str(), date.as_bytes());
    match length {
        Some(length) => put_header(
            &mut head,
            CONTENT_LENGTH.as_str(),
            itoa::Buffer::new().format(length).as_bytes(),
        ),
        None => put_header(&mut head, TRANSFER_ENCODING.as_str(), b"chunked"),
    }
    put_header(&mut head, CONNECTION.as_str(), b"close");
    head.put_slice(b"\r\n");
    head.freeze()
}

fn put_header(head: &mut BytesMut, name: &str, value: &[u8]) {
    head.put_slice(name.as_bytes());
    head.put_slice(b": ");
    head.put_slice(value);
    head.put_slice(b"\r\n");
}

/// One write, as the slices of one vectored write: the response head
/// (first write only), then the body's chunks gathered, framed as one HTTP
/// chunk when the body is chunked, and the last chunk once the body has
/// ended. Nothing is copied, and one gathered chunk allocates nothing (the
/// size line is inline, the framing static). Written by hand: `bytes`
/// chains two buffers only, and hyper's own (`BufList`, `ChunkSize`) are
/// private.
#[derive(Debug)]
struct Gather {
    chunked: bool,
    head: Bytes,
    size: SizeLine,
    first: Bytes,
    rest: VecDeque<Bytes>,
    tail: &'static [u8],
}

impl Gather {
    fn new(chunked: bool) -> Self {
        Self {
            chunked,
            head: Bytes::new(),
            size: SizeLine::default(),
            first: Bytes::new(),
            rest: VecDeque::new(),
            tail: b"",
        }
    }

    /// Takes `first` and the further chunks `body` has ready now (up to
    /// [`GATHER_CHUNKS`] and [`GATHER_BYTES`]), and the end of the body if
    /// it has ended: whether it has.
    fn gather(
        &mut self,
        body: &mut BodyDataStream,
        first: Option<Bytes>,
    ) -> Result<bool, axum::Error> {
        let mut len = first.as_ref().map_or(0, Bytes::len);
        self.first = first.unwrap_or_default();
        let mut ended = false;
        while !ended && self.rest.len() + 1 < GATHER_CHUNKS && len < GATHER_BYTES {
            match body.next().now_or_never() {
                Some(Some(chunk)) => {
                    let chunk = chunk?;
                    len += chunk.len();
                    if self.first.is_empty() {
                        self.first = chunk;
                    } else {
                        self.rest.push_back(chunk);
                    }
                }
                Some(None) => ended = true,
                None => break,
            }
        }
        if self.chunked && len > 0 {
            self.size = SizeLine::of(len);
            self.tail = b"\r\n";
        }
        if ended {
            self.end();
        }
        Ok(ended)
    }

    /// Adds the end of the body (the last chunk, when chunked).
    fn end(&mut self) {
        if self.chunked {
            self.tail = if self.tail.is_empty() {
                LAST_CHUNK
            } else {
                b"\r\n0\r\n\r\n"
            };
        }
    }

    /// What is left to write, in order, without empty slices.
    fn slices(&self) -> impl Iterator<Item = &[u8]> {
        [&self.head[..], self.size.as_slice(), &self.first[..]]
            .into_iter()
            .chain(self.rest.iter().map(|chunk| &chunk[..]))
            .chain([self.tail])
            .filter(|slice| !slice.is_empty())
    }
}

impl Buf for Gather {
    fn remaining(&self) -> usize {
        self.slices().map(<[u8]>::len).sum()
    }

    fn chunk(&self) -> &[u8] {
        self.slices().next().unwrap_or_default()
    }

    fn advance(&mut self, mut n: usize) {
        n -= advance_bytes(&mut self.head, n);
        n -= self.size.advance(n);
        n -= advance_bytes(&mut self.first, n);
        while n > 0
            && let Some(front) = self.rest.front_mut()
        {
            n -= advance_bytes(front, n);
            if front.is_empty() {
                self.rest.pop_front();
            }
        }
        let taken = n.min(self.tail.len());
        self.tail = &self.tail[taken..];
        debug_assert_eq!(n, taken, "advanced past the end");
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, slice) in dst.iter_mut().zip(self.slices()) {
            *slot = IoSlice::new(slice);
            filled += 1;
        }
        filled
    }
}

/// Advances `bytes` by up to `n`: by how much.
fn advance_bytes(bytes: &mut Bytes, n: usize) -> usize {
    let taken = n.min(bytes.len());
    bytes.advance(taken);
    taken
}

/// A chunk's size line (`{len:x}\r\n`), inline: 16 hex digits and CRLF at
/// most, right-aligned; what is left of it starts at `start`.
#[derive(Debug)]
struct SizeLine {
    line: [u8; 18],
    start: usize,
}

impl Default for SizeLine {
    fn default() -> Self {
        Self {
            line: [0; 18],
            start: 18,
        }
    }
}

impl SizeLine {
    fn of(mut len: usize) -> Self {
        let mut line = Self::default();
        line.line[16..].copy_from_slice(b"\r\n");
        line.start = 16;
        loop {
            line.start -= 1;
            line.line[line.start] = b"0123456789abcdef"[len % 16];
            len /= 16;
            if len == 0 {
                return line;
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.line[self.start..]
    }

    /// Advances by up to `n`: by how much.
    fn advance(&mut self, n: usize) -> usize {
        let taken = n.min(self.line.len() - self.start);
        self.start += taken;
        taken
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use futures_util::stream;
    use prometheus_client::metrics::counter::Counter;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::listener::{Deadlines, Listener};
    use crate::peers::Peers;

    /// What `out` writes when written `step` bytes at a time.
    fn drain(mut out: Gather, step: usize) -> Vec<u8> {
        let mut written = Vec::new();
        while out.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 8];
            let n = out.chunks_vectored(&mut slices);
            let flat: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(flat.len(), out.remaining().min(flat.len()));
            let take = step.min(flat.len());
            written.extend_from_slice(&flat[..take]);
            out.advance(take);
        }
        written
    }

    fn body(chunks: &[&'static str]) -> BodyDataStream {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect();
        Body::from_stream(stream::iter(chunks)).into_data_stream()
    }

    /// A listener on loopback, a client connected to it, and the server's
    /// side of that connection.
    async fn connected(header_deadline: Duration) -> (TcpStream, DeadlineIo) {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let deadlines = Deadlines {
            write: Duration::from_secs(30),
            header: header_deadline,
        };
        let mut listener = Listener::new(inner, deadlines, Counter::default(), Peers::new(16));
        let client = TcpStream::connect(addr).await.unwrap();
        let (io, _) = listener.accept().await;
        (client, io)
    }

    #[tokio::test]
    async fn only_a_whole_stream_head_is_consumed() {
        let (mut client, mut io) = connected(Duration::from_secs(30)).await;
        client
            .write_all(b"GET /sse/ticker HTTP/1.1\r\nHost: x\r\n\r\nafter")
            .await
            .unwrap();
        let Sniffed::Stream(request) = sniff(&mut io).await else {
            panic!("a stream request");
        };
        assert_eq!(request.uri(), "/sse/ticker");
        let mut after = [0u8; 5];
        io.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"after");
    }

    #[tokio::test]
    async fn a_head_not_yet_whole_is_left_unread() {
        let (mut client, mut io) = connected(Duration::from_secs(30)).await;
        client
            .write_all(b"GET /sse/ticker HTTP/1.1\r\n")
            .await
            .unwrap();
        assert!(matches!(sniff(&mut io).await, Sniffed::Other));
        client.write_all(b"\r\n").await.unwrap();
        let mut all = [0u8; 28];
        io.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"GET /sse/ticker HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_peer_that_sends_nothing_is_gone_at_the_header_deadline() {
        let (_client, mut io) = connected(Duration::from_millis(100)).await;
        let started = Instant::now();
        assert!(matches!(sniff(&mut io).await, Sniffed::Gone));
        assert!(started.elapsed() >= Duration::from_millis(100));
        let (client, mut io) = connected(Duration::from_secs(30)).await;
        drop(client);
        assert!(matches!(sniff(&mut io).await, Sniffed::Gone));
    }

    #[test]
    fn a_whole_stream_head_is_parsed() {
        let head = b"GET /sse/ticker?rate=10 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let (request, len) = parse(head).expect("parsed");
        assert_eq!(len, head.len());
        assert_eq!(request.uri(), "/sse/ticker?rate=10");
        assert_eq!(request.headers()["accept"], "*/*");
    }

    #[test]
    fn anything_but_a_whole_bodiless_stream_get_is_left_to_hyper() {
        for head in [
            &b"GET /sse/ticker HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /ws/ticker HTTP/1.1\r\n\r\n",
            b"POST /sse/ticker HTTP/1.1\r\n\r\n",
            b"GET /sse/ticker HTTP/1.0\r\n\r\n",
            b"GET /sse/ticker HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /sse/ticker HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET http://x/sse/ticker HTTP/1.1\r\n\r\n",
            b"GET /sse/ticker HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(parse(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
        assert!(parse(b"GET /sse/ticker HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
    }

    #[test]
    fn size_lines_are_lowercase_hex_and_crlf() {
        for (len, line) in [
            (1, "1\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            assert_eq!(SizeLine::of(len).as_slice(), line.as_bytes());
        }
    }

    #[test]
    fn ready_chunks_are_gathered_into_one_http_chunk_whatever_the_write_sizes() {
        for step in [1, 2, 3, 7, 1000] {
            let mut chunks = body(&["ab", "cde", "f"]);
            let mut out = Gather::new(true);
            out.head = Bytes::from_static(b"HEAD\r\n\r\n");
            assert!(out.gather(&mut chunks, None).unwrap(), "the body ended");
            assert_eq!(drain(out, step), b"HEAD\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n");
        }
    }

    #[test]
    fn an_ended_body_gets_the_last_chunk_alone_and_a_sized_body_no_framing() {
        let mut out = Gather::new(true);
        out.end();
        assert_eq!(drain(out, 2), LAST_CHUNK);
        let mut out = Gather::new(false);
        assert!(out.gather(&mut body(&["{}", "x"]), None).unwrap());
        assert_eq!(drain(out, 1), b"{}x");
    }

    #[test]
    fn gathering_stops_at_the_chunk_limit() {
        let many = ["x"; GATHER_CHUNKS + 4];
        let mut chunks = body(&many);
        let mut out = Gather::new(true);
        assert!(!out.gather(&mut chunks, None).unwrap());
        let line = format!("{GATHER_CHUNKS:x}\r\n{}\r\n", "x".repeat(GATHER_CHUNKS));
        assert_eq!(drain(out, 5), line.as_bytes());
    }
}
