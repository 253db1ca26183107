//! An SSE stream read straight from the socket: the HTTP response head,
//! the body's framing (chunked or not) and the SSE events are all parsed
//! from one reused read buffer, with no allocation per event.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::{BodyDecoder, Decoded, ResponseHead, authorization, parse_head};
use super::sse_parser::SseParser;
use super::{ClientError, Frame, envelope, now_micros};

/// Bytes read from the socket at a time (one buffer per client).
const READ_BUFFER: usize = 16 * 1024;

/// Most bytes a response head may take.
const MAX_HEAD: usize = 16 * 1024;

/// Most bytes of an unfinished line or event the client holds: a server
/// that never ends one is a protocol error, not unbounded memory.
const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Reads a response head from `stream` into `buf` (at most [`MAX_HEAD`]
/// bytes of it): the head, the bytes it took, and the bytes read (the body
/// starts between the two).
///
/// # Errors
///
/// A broken connection, or a head that is malformed or too long.
pub async fn read_head<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
) -> Result<(ResponseHead, usize, usize), ClientError> {
    let len = buf.len().min(MAX_HEAD);
    let buf = &mut buf[..len];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(ClientError::Protocol(format!(
                "response head over {MAX_HEAD} bytes"
            )));
        }
        let n = stream
            .read(&mut buf[filled..])
            .await
            .map_err(ClientError::Connect)?;
        if n == 0 {
            return Err(ClientError::Connect(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        filled += n;
        if let Some((head, consumed)) =
            parse_head(&buf[..filled]).map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            return Ok((head, consumed, filled));
        }
    }
}

/// An open SSE stream.
#[derive(Debug)]
pub struct SseStream {
    stream: TcpStream,
    buf: Box<[u8]>,
    decoder: BodyDecoder,
    parser: SseParser,
    /// Comment lines already reported as keep-alives.
    comments: u64,
    /// When the bytes being parsed arrived, µs since the Unix epoch.
    received_us: u64,
    /// The body ended cleanly.
    done: bool,
}

impl SseStream {
    /// Sends the request for `path` on `host` over `stream` and reads the
    /// response head.
    ///
    /// # Errors
    ///
    /// A status other than 200 ([`ClientError::Status`]), a response that
    /// is not an event stream, or a broken connection.
    pub async fn open(
        mut stream: TcpStream,
        host: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        let authorization = authorization(token);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\nUser-Agent: streamgauge-loadgen\r\n{authorization}\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(ClientError::Connect)?;
        let mut buf = vec![0; READ_BUFFER].into_boxed_slice();
        let (head, consumed, filled) = read_head(&mut stream, &mut buf).await?;
        if head.status != 200 {
            return Err(ClientError::refused(head.status, head.retry_after));
        }
        if !head
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/event-stream"))
        {
            return Err(ClientError::Protocol(format!(
                "content type {:?} is not an event stream",
                head.content_type
            )));
        }
        let mut sse = Self {
            stream,
            buf,
            decoder: BodyDecoder::new(head.body),
            parser: SseParser::new(),
            comments: 0,
            received_us: now_micros(),
            done: false,
        };
        sse.decode(consumed, filled)?;
        Ok(sse)
    }

    /// Feeds `buf[from..to]` through the body decoder into the parser.
    fn decode(&mut self, from: usize, to: usize) -> Result<(), ClientError> {
        let parser = &mut self.parser;
        let decoded = self
            .decoder
            .decode(&self.buf[from..to], &mut |body| parser.feed(body))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.done |= matches!(decoded, Decoded::Done);
        if self.parser.buffered() > MAX_PENDING {
            return Err(ClientError::Protocol(format!(
                "over {MAX_PENDING} bytes without the end of an event"
            )));
        }
        Ok(())
    }

    /// The connection, for a caller that reads on by itself.
    pub fn into_inner(self) -> TcpStream {
        self.stream
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
                let envelope = envelope::parse(event.data)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                return Ok(Frame::Event {
                    envelope,
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
                .stream
                .read(&mut self.buf)
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
