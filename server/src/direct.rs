//! SSE over HTTP/1.1 without hyper, for the streams that are most of the
//! connections a server like this holds.
//!
//! Hyper keeps two 8 KiB buffers for the life of every HTTP/1 connection
//! (the read buffer it parsed the head in, the write buffer of response
//! heads; neither can be made smaller: `max_buf_size` has a floor of 8,192),
//! which made them 16 of the 20 KiB an idle SSE stream cost
//! (docs/performance.md). Here the first bytes of a connection (in plain
//! text: under TLS, after the handshake) are read into a buffer freed at
//! once; a whole `GET /sse/…` head among them is answered by the same
//! router as every other request, and its body written straight to the
//! connection: nothing is kept per connection but the session and the
//! socket (and, under TLS, rustls' state).
//!
//! A stream's connection is its own: the response says `Connection: close`
//! and the connection closes when the body ends. A whole head that cannot
//! be served (malformed, conflicting lengths) is answered here with a JSON
//! `400`, where hyper would answer without a body. Anything else (another
//! method or path, a request body, HTTP/1.0, HTTP/2's preface, a head that
//! came in pieces) is handed to hyper with the bytes read
//! ([`Sniffed::Other`]), which answers it as before.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, BodyDataStream, HttpBody as _};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use axum::http::{HeaderName, HeaderValue, Method, Request, Version};
use axum::response::{IntoResponse as _, Response};
use bytes::{Buf, BufMut as _, Bytes, BytesMut};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{Instant, timeout_at};
use tower::ServiceExt as _;

use crate::error::ApiError;
use crate::scope::{self, Client};

/// The start of every HTTP/2 connection with prior knowledge (RFC 9113).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The paths served here; every other request goes to hyper.
const STREAM_PREFIX: &str = "/sse/";

/// The most read at first (a longer head goes to hyper, whose own limit
/// then applies). Allocated for that read only.
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
    /// A whole SSE request head, consumed, and how many bytes came after
    /// it in the same read.
    Stream(Box<Request<Body>>, usize),
    /// A whole request head that cannot be served, and why.
    Malformed(&'static str),
    /// Anything else: the bytes read, for hyper.
    Other(Bytes),
    /// The peer closed or failed before sending anything.
    Gone,
    /// Nothing came before the deadline.
    TimedOut,
}

/// Reads the first bytes of `io` (waiting at most until `deadline`) and
/// tells what they are. One read, unless what it gave may begin HTTP/2's
/// preface as well as an HTTP/1.1 request (`P` begins `POST` too): then
/// it reads on until the bytes tell, lest a request whose first read was
/// short be taken for HTTP/2.
pub async fn sniff<IO: AsyncRead + Unpin>(io: &mut IO, deadline: Instant) -> Sniffed {
    let mut buf = vec![0; PEEK];
    let mut read = 0;
    loop {
        match timeout_at(deadline, io.read(&mut buf[read..])).await {
            Err(_) => return Sniffed::TimedOut,
            Ok(Ok(0) | Err(_)) if read == 0 => return Sniffed::Gone,
            // What came before the end is left to hyper.
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => read += n,
        }
        if read == H2_PREFACE.len() || !H2_PREFACE.starts_with(&buf[..read]) {
            break;
        }
    }
    match parse(&buf[..read]) {
        Head::Stream(request, len) => Sniffed::Stream(request, read - len),
        Head::Malformed(reason) => Sniffed::Malformed(reason),
        Head::Other => {
            buf.truncate(read);
            Sniffed::Other(Bytes::from(buf))
        }
    }
}

/// What the first bytes of a connection hold.
#[derive(Debug)]
pub enum Head {
    /// A whole head of a body-less HTTP/1.1 `GET` of a stream path, and
    /// its length.
    Stream(Box<Request<Body>>, usize),
    /// A whole head that must be refused, and why.
    Malformed(&'static str),
    /// Anything else.
    Other,
}

/// What `bytes`, a connection's first, hold.
pub(crate) fn parse(bytes: &[u8]) -> Head {
    if bytes.starts_with(H2_PREFACE) || H2_PREFACE.starts_with(bytes) {
        return Head::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => return Head::Other,
        Err(e) => return Head::Malformed(malformed(e)),
    };
    if let Some(reason) = framing_error(head.headers) {
        return Head::Malformed(reason);
    }
    stream_request(&head)
        .map(|request| Head::Stream(Box::new(request), len))
        .unwrap_or(Head::Other)
}

/// Why a syntax error makes a head unservable, said for people.
fn malformed(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine | httparse::Error::Status => "invalid line ending",
        httparse::Error::Token => "invalid method or target",
        httparse::Error::Version => "not an HTTP/1 request",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// Why the body framing `headers` declare is not to be trusted (request
/// smuggling): lengths that disagree or are not numbers, or a length
/// beside a transfer coding.
fn framing_error(headers: &[httparse::Header<'_>]) -> Option<&'static str> {
    let mut length = None;
    let mut chunked = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (value, length) {
                (None, _) => return Some("Content-Length is not a number"),
                (Some(v), Some(seen)) if v != seen => {
                    return Some("conflicting Content-Length headers");
                }
                (value, _) => length = value,
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    (chunked && length.is_some()).then_some("both Content-Length and Transfer-Encoding")
}

/// The request of a whole head, if it is a body-less HTTP/1.1 `GET` of a
/// stream path.
fn stream_request(head: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
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
    request.body(Body::empty()).ok()
}

/// The router's response to `request` (from `client`), or the refusal of
/// a client over its limits. Runs once per stream: the caller boxes it, so
/// that the router's future does not size the connection's.
pub async fn answer(client: &Client, router: Router, mut request: Box<Request<Body>>) -> Response {
    match client.open(&mut request, None) {
        Ok(scope) => match router.oneshot(unbox(request)).await {
            Ok(response) => scope::wrap(response, scope),
            Err(never) => match never {},
        },
        Err(refusal) => refusal.into_response(),
    }
}

/// The value in `boxed`, whose allocation is freed now: moving out of a
/// box in place would keep it allocated as long as the box variable, here
/// the stream's whole life.
#[expect(
    clippy::boxed_local,
    reason = "the point: it takes the box, to free it on return"
)]
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// Writes `error`'s answer to `io` and closes the connection.
pub async fn refuse<IO: AsyncRead + AsyncWrite + Unpin + Send>(io: &mut IO, error: ApiError) {
    respond(io, Box::new(error.into_response()), 0).await;
}

/// Writes `response` to `io`, then closes the connection; `trailing`
/// bytes came after the request's head. Its head goes out with the chunks
/// its body has ready, then the rest of its body, gathering the chunks the
/// body has ready into one write. The socket is read meanwhile, so that a
/// client that goes away ends the stream at once rather than at the next
/// write.
///
/// What an idle SSE connection holds besides its session is mostly this
/// future, so each part is stored once and only while it is needed: one
/// `async` block (an `async fn`, or one per step, keeps a copy of each
/// argument), the response boxed until it is taken apart, and each
/// write's gathering a local of that write alone: while the stream waits,
/// it holds the body, the socket and a small read buffer.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps a second copy of its arguments"
)]
pub fn respond<IO: AsyncRead + AsyncWrite + Unpin + Send>(
    io: &mut IO,
    response: Box<Response>,
    trailing: usize,
) -> impl Future<Output = ()> + Send + '_ {
    async move {
        let written: Result<(), Cut> = 'written: {
            let (mut body, mut ended, chunked) = {
                let (mut out, body, ended) = match begin(unbox(response)) {
                    Ok(begun) => begun,
                    Err(e) => break 'written Err(e),
                };
                if let Err(e) = io.write_all_buf(&mut out).await {
                    break 'written Err(e.into());
                }
                (body, ended, out.chunked)
            };
            let mut probe = [0u8; 64];
            let mut input = trailing;
            if input > MAX_TRAILING_INPUT {
                break 'written Err(Cut::TooMuchInput);
            }
            while !ended {
                let mut out = {
                    let next = tokio::select! {
                        next = body.next() => next,
                        read = io.read(&mut probe) => match read {
                            Err(e) => break 'written Err(e.into()),
                            Ok(0) => break 'written Err(Cut::ClientGone),
                            Ok(n) if input + n > MAX_TRAILING_INPUT => {
                                break 'written Err(Cut::TooMuchInput);
                            }
                            Ok(n) => {
                                input += n;
                                continue;
                            }
                        },
                    };
                    let mut out = Gather::new(chunked);
                    ended = match next.map(|chunk| out.gather(&mut body, Some(chunk?))) {
                        Some(Ok(ended)) => ended,
                        Some(Err(e)) => break 'written Err(e.into()),
                        None => {
                            out.end();
                            true
                        }
                    };
                    out
                };
                if let Err(e) = io.write_all_buf(&mut out).await {
                    break 'written Err(e.into());
                }
            }
            Ok(())
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
    use std::time::Duration;

    use futures_util::stream;

    use super::*;

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

    /// What `bytes`, a connection's first, are found to be.
    async fn sniffed(bytes: &[u8]) -> Sniffed {
        let mut input = bytes;
        sniff(&mut input, Instant::now() + Duration::from_secs(30)).await
    }

    #[tokio::test]
    async fn a_whole_stream_head_is_taken_and_what_follows_counted() {
        let Sniffed::Stream(request, trailing) =
            sniffed(b"GET /sse/ticker HTTP/1.1\r\nHost: x\r\n\r\nafter").await
        else {
            panic!("a stream request");
        };
        assert_eq!(request.uri(), "/sse/ticker");
        assert_eq!(trailing, 5);
    }

    #[tokio::test]
    async fn anything_else_is_handed_on_with_the_bytes_read() {
        for bytes in [
            &b"GET /sse/ticker HTTP/1.1\r\n"[..],
            b"POST /topics/t/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            H2_PREFACE,
            b"PRI * HTTP/2",
        ] {
            let Sniffed::Other(read) = sniffed(bytes).await else {
                panic!("{}", String::from_utf8_lossy(bytes));
            };
            assert_eq!(read, bytes);
        }
        assert!(matches!(sniffed(b"").await, Sniffed::Gone));
    }

    /// What `first` and `rest`, a connection's first bytes in two reads,
    /// are found to be.
    async fn sniffed_in_two(first: &[u8], rest: &[u8]) -> Sniffed {
        let mut input = tokio::io::AsyncReadExt::chain(first, rest);
        sniff(&mut input, Instant::now() + Duration::from_secs(30)).await
    }

    #[tokio::test]
    async fn a_first_read_that_may_begin_the_h2_preface_is_read_on_until_it_tells() {
        let post = b"POST /topics/t/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        for (first, rest) in [post.split_at(1), H2_PREFACE.split_at(3)] {
            let Sniffed::Other(read) = sniffed_in_two(first, rest).await else {
                panic!("{}", String::from_utf8_lossy(first));
            };
            assert_eq!(read, [first, rest].concat());
        }
        // A first read that cannot begin the preface is all there is.
        let Sniffed::Other(read) = sniffed_in_two(b"G", b"ET /sse/ticker HTTP/1.1\r\n\r\n").await
        else {
            panic!("a head in pieces is hyper's");
        };
        assert_eq!(read, &b"G"[..]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_sends_nothing_times_out_at_the_deadline() {
        let (_client, mut server) = tokio::io::duplex(64);
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(matches!(
            sniff(&mut server, deadline).await,
            Sniffed::TimedOut
        ));
        assert_eq!(Instant::now(), deadline);
    }

    #[test]
    fn a_whole_stream_head_is_parsed() {
        let head = b"GET /sse/ticker?rate=10 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let Head::Stream(request, len) = parse(head) else {
            panic!("parsed");
        };
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
        ] {
            assert!(
                matches!(parse(head), Head::Other),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        let zero = b"GET /sse/ticker HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse(zero), Head::Stream(..)));
    }

    #[test]
    fn heads_that_cannot_be_served_are_named() {
        for (head, reason) in [
            (
                &b"POST /topics/t/events HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
                "conflicting Content-Length headers",
            ),
            (
                b"POST /x HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                "Content-Length is not a number",
            ),
            (
                b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
            (b"GET /sse/ticker HTTP/1.1\r\nBad Header: x\r\n\r\n", "invalid header name"),
            (b"\x16\x03\x01\x02\x00\x01", "invalid method or target"),
        ] {
            match parse(head) {
                Head::Malformed(found) => assert_eq!(found, reason),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(head)),
            }
        }
        let same = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(parse(same), Head::Other));
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
