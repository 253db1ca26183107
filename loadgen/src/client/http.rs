//! Minimal HTTP/1.1 response reading for streaming bodies over raw TCP.
//!
//! This module owns parsing the response head (with `httparse`), choosing
//! the body framing per RFC 9112 §6.3, and [`BodyDecoder`], which strips
//! chunked or Content-Length framing from body bytes as they arrive, in
//! pieces split at any point, handing out the body zero-copy. It does not
//! own the socket: the caller reads, and passes what it read.
//!
//! Content codings (such as `gzip`) are not undone: only framing is; the
//! head names the first one a response carries, for the caller to refuse.
//! Folded header lines (obs-fold, RFC 9112 §5.2) are accepted, each fold
//! read as spaces. [`redirect_target`] resolves a redirect's `Location`.

use httparse::Status;
use url::Url;

/// The most header fields a response head may carry.
pub const MAX_HEADERS: usize = 64;

/// The longest chunk-size line accepted, extensions and CRLF included.
const MAX_CHUNK_LINE: usize = 4096;

/// The longest trailer section accepted, CRLFs included.
const MAX_TRAILERS: usize = 16 * 1024;

/// How much of an offending line an error message quotes.
const QUOTE_LIMIT: usize = 64;

/// The parts of a response head that a streaming client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The first `Content-Type` field value, trimmed, if any.
    pub content_type: Option<String>,
    /// The first content coding other than `identity` named by
    /// `Content-Encoding`, if any: a body this client cannot read.
    pub content_coding: Option<String>,
    /// The `Location` field value, trimmed, if any (a redirect's target).
    pub location: Option<String>,
    /// `Retry-After` in its delta-seconds form, if given (an HTTP date is
    /// not used by servers that shed load, and is ignored).
    pub retry_after: Option<u64>,
    /// How the body is delimited.
    pub body: BodyFraming,
    /// `Connection: close`: the server closes the connection after this
    /// response (or it is HTTP/1.0): it cannot carry another request.
    pub close: bool,
}

impl ResponseHead {
    /// Whether its `Content-Type` is `media_type`, compared without case
    /// and without parameters (`Text/Event-Stream; charset=utf-8` is
    /// `text/event-stream`).
    pub fn has_media_type(&self, media_type: &str) -> bool {
        self.content_type.as_deref().is_some_and(|value| {
            let essence = value.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case(media_type)
        })
    }

    /// Whether it is an interim response (1xx) other than `101 Switching
    /// Protocols`: the final response follows it on the same connection.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// Whether it redirects a GET elsewhere (301, 302, 303, 307 or 308).
    pub fn is_redirect(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 308)
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Exactly this many bytes: from `Content-Length`, or 0 for 1xx, 204
    /// and 304 responses.
    Length(u64),
    /// Everything until the server closes the connection.
    UntilClose,
}

/// Whether a call to [`BodyDecoder::decode`] finished the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The body goes on.
    More,
    /// The body is complete: all of it, and any trailers, was consumed.
    Done,
}

/// What can go wrong reading a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The status line or a header field is not valid HTTP/1.x, or there
    /// are more than [`MAX_HEADERS`] fields.
    #[error("malformed response head: {0}")]
    MalformedHead(#[from] httparse::Error),
    /// `Content-Length` is not a decimal number, or its values disagree.
    #[error("invalid Content-Length {value:?}")]
    InvalidContentLength {
        /// The offending field value.
        value: String,
    },
    /// An HTTP/1.0 response carries `Transfer-Encoding`, which HTTP/1.0 does
    /// not define: RFC 9112 §6.1 says to treat its framing as faulty.
    #[error("HTTP/1.0 response with Transfer-Encoding: framing is faulty")]
    TransferEncodingInHttp10,
    /// A chunk-size line is not `1*HEXDIG [extensions] CRLF`.
    #[error("bad chunk size: malformed chunk-size line {line:?}")]
    BadChunkSize {
        /// The start of the offending line.
        line: String,
    },
    /// A chunk-size line runs longer than the limit without ending.
    #[error("chunk-size line longer than {limit} bytes")]
    ChunkSizeLineTooLong {
        /// The limit.
        limit: usize,
    },
    /// Chunk data is not followed by CRLF.
    #[error("chunk data not followed by CRLF: found byte {found:#04x}")]
    MissingChunkCrlf {
        /// The byte found instead.
        found: u8,
    },
    /// A trailer line ends with a bare CR or LF instead of CRLF.
    #[error("malformed trailer section: line not ended by CRLF")]
    MalformedTrailer,
    /// The trailer section runs longer than the limit.
    #[error("trailer section longer than {limit} bytes")]
    TrailersTooLong {
        /// The limit.
        limit: usize,
    },
    /// Bytes arrived after the body was complete.
    #[error("{bytes} unexpected bytes after the end of the body")]
    DataAfterBody {
        /// How many bytes.
        bytes: usize,
    },
    /// The connection closed before the `Content-Length` body was complete.
    #[error("unexpected EOF: {remaining} bytes of the Content-Length body missing")]
    TruncatedBody {
        /// Body bytes never received.
        remaining: u64,
    },
    /// The connection closed before the chunked body was complete.
    #[error("unexpected EOF {0} of the chunked body")]
    UnexpectedEof(&'static str),
    /// A redirect from `http` to `https` or back: a stream keeps the
    /// scheme (and the TLS settings) it was asked on.
    #[error("redirect to {location:?}: from {from} to another scheme is not followed")]
    AcrossSchemes {
        /// The `Location` value.
        location: String,
        /// The scheme of the request redirected.
        from: &'static str,
    },
    /// A redirect whose `Location` is not an `http` URL this client can
    /// request: another scheme, no host, user information, or bytes that
    /// do not belong in a request line.
    #[error("redirect to {location:?}: not an http URL this client can follow")]
    UnsupportedRedirect {
        /// The `Location` value.
        location: String,
    },
}

/// The `Authorization: Bearer …` header line of a hand-written request
/// (CRLF included), or nothing without a token.
pub fn authorization(token: Option<&str>) -> String {
    token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"))
}

/// Parses a response head from the start of `buf`: `Ok(None)` if `buf`
/// does not hold all of it yet, else the head and the bytes it took (the
/// body starts there).
///
/// The request is assumed to be a GET. A 1xx head is returned as is (with
/// `Length(0)`); the final response follows it.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    // RFC 9112 §5.2: a recipient may replace each obs-fold with spaces.
    let parsed = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .parse_response(&mut response, buf)?;
    let consumed = match parsed {
        Status::Complete(consumed) => consumed,
        Status::Partial => return Ok(None),
    };
    let status = response.code.expect("a complete head has a status code");
    let mut content_type = None;
    let mut content_coding = None;
    let mut location = None;
    let mut retry_after = None;
    // HTTP/1.0 closes by default (keep-alive extensions aside).
    let mut close = response.version == Some(0);
    // The last coding of all `Transfer-Encoding` fields, in order.
    let mut transfer_encoding: Option<Option<&[u8]>> = None;
    let mut length: Option<u64> = None;
    let mut bad_length: Option<&[u8]> = None;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = header
                .value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .rfind(|coding| !coding.is_empty());
            let entry = transfer_encoding.get_or_insert(None);
            if last.is_some() {
                *entry = last;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // A list of identical values is the same as one (RFC 9110 §8.6).
            for value in header.value.split(|&b| b == b',') {
                match parse_decimal(value.trim_ascii()) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => {
                        bad_length.get_or_insert(header.value);
                    }
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") && content_type.is_none() {
            content_type = Some(field_text(header.value));
        } else if name.eq_ignore_ascii_case("content-encoding") && content_coding.is_none() {
            content_coding = header
                .value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"))
                .map(field_text);
        } else if name.eq_ignore_ascii_case("location") && location.is_none() {
            location = Some(field_text(header.value));
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = self::retry_after(header.value);
        } else if name.eq_ignore_ascii_case("connection") {
            close |= header
                .value
                .split(|&b| b == b',')
                .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let body = if status < 200 || status == 204 || status == 304 {
        BodyFraming::Length(0)
    } else if let Some(last_coding) = transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
        if response.version == Some(0) {
            return Err(HttpError::TransferEncodingInHttp10);
        }
        match last_coding {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
            _ => BodyFraming::UntilClose,
        }
    } else if let Some(value) = bad_length {
        return Err(HttpError::InvalidContentLength {
            value: String::from_utf8_lossy(value).into_owned(),
        });
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else {
        BodyFraming::UntilClose
    };
    let head = ResponseHead {
        status,
        content_type,
        content_coding,
        location,
        retry_after,
        body,
        close,
    };
    Ok(Some((head, consumed)))
}

/// A field value as text: trimmed, with the CR and LF of any fold as
/// spaces.
fn field_text(value: &[u8]) -> String {
    String::from_utf8_lossy(value.trim_ascii()).replace(['\r', '\n'], " ")
}

/// Where a redirect from `path` on `authority` (`host[:port]`), asked
/// over `https` if `tls` (else `http`), to `location` goes: its authority
/// and its path with query, without fragment. `location` is resolved
/// against the request's URL as a browser would (the WHATWG URL standard,
/// by the `url` crate: an absolute URL, or a reference such as `/x`,
/// `../x`, `?q`).
///
/// # Errors
///
/// [`HttpError::AcrossSchemes`] for the other of `http` and `https`, and
/// [`HttpError::UnsupportedRedirect`] for any other location this client
/// cannot request: another scheme, user information, or a location with
/// spaces, control or non-ASCII bytes (refused as sent, never repaired:
/// nothing of it reaches a request head).
pub fn redirect_target(
    tls: bool,
    authority: &str,
    path: &str,
    location: &str,
) -> Result<(String, String), HttpError> {
    let unsupported = || HttpError::UnsupportedRedirect {
        location: location.to_owned(),
    };
    let reference = location.split('#').next().unwrap_or_default();
    if reference.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(unsupported());
    }
    let scheme = if tls { "https" } else { "http" };
    let base = Url::parse(&format!("{scheme}://{authority}{path}")).map_err(|_| unsupported())?;
    let target = base.join(reference).map_err(|_| unsupported())?;
    match target.scheme() {
        same if same == scheme => {}
        "http" | "https" => {
            return Err(HttpError::AcrossSchemes {
                location: location.to_owned(),
                from: scheme,
            });
        }
        _ => return Err(unsupported()),
    }
    if !target.username().is_empty() || target.password().is_some() {
        return Err(unsupported());
    }
    let host = target.host_str().ok_or_else(unsupported)?;
    let authority = match target.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let path = match target.query() {
        Some(query) => format!("{}?{query}", target.path()),
        None => target.path().to_owned(),
    };
    Ok((authority, path))
}

/// A `Retry-After` field value in its delta-seconds form; `None` for an
/// HTTP date (not used by servers that shed load) or anything else.
pub fn retry_after(value: &[u8]) -> Option<u64> {
    parse_decimal(value.trim_ascii())
}

/// `1*DIGIT` as a `u64`; `None` if empty, not all digits, or too large.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Where a [`BodyDecoder`] is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many `Content-Length` bytes are still to come (never 0).
    Length { remaining: u64 },
    /// Everything is body, until EOF.
    UntilClose,
    /// Reading a chunk-size line; `line` holds what arrived of it.
    ChunkSize,
    /// This many bytes of chunk data are still to come (never 0).
    ChunkData { remaining: u64 },
    /// Expecting the CR after chunk data.
    ChunkCr,
    /// Expecting the LF after chunk data.
    ChunkLf,
    /// In the trailer section, after the last chunk.
    Trailers {
        /// Bytes of the current line so far, CR excluded.
        line_len: usize,
        /// The previous byte was a CR.
        cr: bool,
        /// Bytes of the trailer section so far.
        total: usize,
    },
    /// The body is complete.
    Done,
}

/// Strips the framing from a response body fed in arbitrary pieces.
///
/// After it returns an error, the body is broken: do not use it further.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    /// Where it is in the body.
    state: State,
    /// A chunk-size line split across inputs, kept (capacity and all) for
    /// the next one.
    line: Vec<u8>,
}

impl BodyDecoder {
    /// A decoder at the start of a body framed as `framing`.
    pub fn new(framing: BodyFraming) -> Self {
        let state = match framing {
            BodyFraming::Chunked => State::ChunkSize,
            BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(remaining) => State::Length { remaining },
            BodyFraming::UntilClose => State::UntilClose,
        };
        Self {
            state,
            line: Vec::new(),
        }
    }

    /// Consumes all of `input`, the next bytes after the head or the
    /// previous input, calling `out` with each run of body bytes (slices of
    /// `input`, never empty), in order.
    ///
    /// Returns [`Decoded::Done`] once the body is complete (and on every
    /// call after, as long as no further bytes arrive: they are an error).
    /// A body read until close is never done: the caller ends it at EOF.
    pub fn decode(
        &mut self,
        mut input: &[u8],
        out: &mut impl FnMut(&[u8]),
    ) -> Result<Decoded, HttpError> {
        loop {
            match self.state {
                State::Done if input.is_empty() => return Ok(Decoded::Done),
                State::Done => {
                    return Err(HttpError::DataAfterBody { bytes: input.len() });
                }
                _ if input.is_empty() => return Ok(Decoded::More),
                State::UntilClose => {
                    out(input);
                    return Ok(Decoded::More);
                }
                State::Length { remaining } => {
                    let remaining = take(&mut input, remaining, out);
                    self.state = if remaining == 0 {
                        State::Done
                    } else {
                        State::Length { remaining }
                    };
                }
                State::ChunkData { remaining } => {
                    let remaining = take(&mut input, remaining, out);
                    self.state = if remaining == 0 {
                        State::ChunkCr
                    } else {
                        State::ChunkData { remaining }
                    };
                }
                State::ChunkCr | State::ChunkLf => {
                    let (want, next) = if self.state == State::ChunkCr {
                        (b'\r', State::ChunkLf)
                    } else {
                        (b'\n', State::ChunkSize)
                    };
                    if input[0] != want {
                        return Err(HttpError::MissingChunkCrlf { found: input[0] });
                    }
                    input = &input[1..];
                    self.state = next;
                }
                State::ChunkSize => self.chunk_size(&mut input)?,
                State::Trailers {
                    line_len,
                    cr,
                    total,
                } => self.trailers(&mut input, line_len, cr, total)?,
            }
        }
    }

    /// Checks that the body is complete when the connection reaches EOF.
    pub fn at_eof(&self) -> Result<(), HttpError> {
        let context = match self.state {
            State::Done | State::UntilClose => return Ok(()),
            State::Length { remaining } => return Err(HttpError::TruncatedBody { remaining }),
            State::ChunkSize if self.line.is_empty() => "before the last chunk",
            State::ChunkSize => "in a chunk-size line",
            State::ChunkData { .. } => "inside chunk data",
            State::ChunkCr | State::ChunkLf => "before the CRLF after chunk data",
            State::Trailers { .. } => "in the trailer section",
        };
        Err(HttpError::UnexpectedEof(context))
    }

    /// Reads (part of) a chunk-size line from `input`.
    fn chunk_size(&mut self, input: &mut &[u8]) -> Result<(), HttpError> {
        if self.line.is_empty() {
            // The usual case: the whole line is in `input`.
            match httparse::parse_chunk_size(input) {
                Ok(Status::Complete((len, size))) => {
                    check_chunk_line(&input[..len])?;
                    *input = &input[len..];
                    self.start_chunk(size);
                    return Ok(());
                }
                Ok(Status::Partial) => {}
                Err(httparse::InvalidChunkSize) => return Err(bad_chunk_size(input)),
            }
        }
        // Keep the line until its LF arrives; then it must be complete.
        let (len, ended) = match input.iter().position(|&b| b == b'\n') {
            Some(lf) => (lf + 1, true),
            None => (input.len(), false),
        };
        if self.line.len() + len > MAX_CHUNK_LINE {
            return Err(HttpError::ChunkSizeLineTooLong {
                limit: MAX_CHUNK_LINE,
            });
        }
        self.line.extend_from_slice(&input[..len]);
        *input = &input[len..];
        if !ended {
            return Ok(());
        }
        match httparse::parse_chunk_size(&self.line) {
            Ok(Status::Complete((len, size))) if len == self.line.len() => {
                check_chunk_line(&self.line)?;
                self.line.clear();
                self.start_chunk(size);
                Ok(())
            }
            _ => Err(bad_chunk_size(&self.line)),
        }
    }

    /// Moves on to the data of a chunk of `size` bytes.
    fn start_chunk(&mut self, size: u64) {
        self.state = if size == 0 {
            State::Trailers {
                line_len: 0,
                cr: false,
                total: 0,
            }
        } else {
            State::ChunkData { remaining: size }
        };
    }

    /// Skips trailer lines up to the empty line that ends the body.
    fn trailers(
        &mut self,
        input: &mut &[u8],
        mut line_len: usize,
        mut cr: bool,
        mut total: usize,
    ) -> Result<(), HttpError> {
        for (i, &b) in input.iter().enumerate() {
            total += 1;
            if total > MAX_TRAILERS {
                return Err(HttpError::TrailersTooLong {
                    limit: MAX_TRAILERS,
                });
            }
            match (cr, b) {
                (true, b'\n') if line_len == 0 => {
                    *input = &input[i + 1..];
                    self.state = State::Done;
                    return Ok(());
                }
                (true, b'\n') => {
                    line_len = 0;
                    cr = false;
                }
                (true, _) | (false, b'\n') => return Err(HttpError::MalformedTrailer),
                (false, b'\r') => cr = true,
                (false, _) => line_len += 1,
            }
        }
        *input = &[];
        self.state = State::Trailers {
            line_len,
            cr,
            total,
        };
        Ok(())
    }
}

/// Passes up to `remaining` bytes from the front of `input` to `out`;
/// returns how many are still to come.
fn take(input: &mut &[u8], remaining: u64, out: &mut impl FnMut(&[u8])) -> u64 {
    let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
    out(&input[..n]);
    *input = &input[n..];
    remaining - n as u64
}

/// What `httparse::parse_chunk_size` lets through but RFC 9112 §7.1 does
/// not: no digits, a bare LF in an extension, an overlong line.
fn check_chunk_line(line: &[u8]) -> Result<(), HttpError> {
    if line.len() > MAX_CHUNK_LINE {
        return Err(HttpError::ChunkSizeLineTooLong {
            limit: MAX_CHUNK_LINE,
        });
    }
    if !line[0].is_ascii_hexdigit() || line[..line.len() - 1].contains(&b'\n') {
        return Err(bad_chunk_size(line));
    }
    Ok(())
}

/// A [`HttpError::BadChunkSize`] quoting the line at the start of `bytes`.
fn bad_chunk_size(bytes: &[u8]) -> HttpError {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |lf| lf + 1)
        .min(QUOTE_LIMIT);
    HttpError::BadChunkSize {
        line: String::from_utf8_lossy(&bytes[..end]).into_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn head(raw: &[u8]) -> ResponseHead {
        let (head, len) = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(len, raw.len());
        head
    }

    fn framing(raw: &str) -> BodyFraming {
        head(raw.as_bytes()).body
    }

    #[test]
    fn head_chunked_with_content_type() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                    Transfer-Encoding: chunked\r\n\r\nbody";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(&raw[len..], b"body");
        assert_eq!(
            head,
            ResponseHead {
                status: 200,
                content_type: Some("text/event-stream".into()),
                content_coding: None,
                location: None,
                retry_after: None,
                body: BodyFraming::Chunked,
                close: false,
            }
        );
    }

    #[test]
    fn retry_after_in_seconds_is_read() {
        let shed = head(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!((shed.status, shed.retry_after), (503, Some(2)));
        let dated = head(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\n\r\n",
        );
        assert_eq!(dated.retry_after, None);
    }

    #[test]
    fn head_length_close_and_no_body_statuses() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"),
            BodyFraming::Length(42)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 42, 42\r\nContent-Length: 42\r\n\r\n"),
            BodyFraming::Length(42)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), BodyFraming::UntilClose);
        assert_eq!(framing("HTTP/1.0 200 OK\r\n\r\n"), BodyFraming::UntilClose);
        for status in [
            "100 Continue",
            "103 Early Hints",
            "204 No Content",
            "304 Not Modified",
        ] {
            let raw = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n");
            assert_eq!(framing(&raw), BodyFraming::Length(0), "{status}");
        }
    }

    #[test]
    fn head_transfer_encoding_wins_and_must_end_in_chunked() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            BodyFraming::Chunked
        );
        // Even over a broken Content-Length.
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            BodyFraming::Chunked
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            BodyFraming::Chunked
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"
            ),
            BodyFraming::UntilClose
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"),
            BodyFraming::UntilClose
        );
        assert!(matches!(
            parse_head(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::TransferEncodingInHttp10)
        ));
    }

    #[test]
    fn head_field_names_are_case_insensitive() {
        let head = head(
            b"HTTP/1.1 200 OK\r\ncOnTeNt-TyPe:  text/plain \r\ntransfer-encoding: CHUNKED\r\n\r\n",
        );
        assert_eq!(head.content_type.as_deref(), Some("text/plain"));
        assert_eq!(head.body, BodyFraming::Chunked);
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 7\r\n\r\n"),
            BodyFraming::Length(7)
        );
    }

    #[test]
    fn folded_header_lines_are_read_as_spaces() {
        let head = head(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream;\r\n charset=utf-8\r\n\
              Transfer-Encoding: gzip,\r\n\tchunked\r\nX-Other: a\r\n  b\r\n\r\n",
        );
        assert_eq!(
            head.content_type.as_deref(),
            Some("text/event-stream;   charset=utf-8")
        );
        assert!(head.has_media_type("text/event-stream"));
        assert_eq!(head.body, BodyFraming::Chunked);
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection() {
        assert!(!head(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").close);
        assert!(head(b"HTTP/1.1 201 Created\r\nConnection: keep-alive, Close\r\n\r\n").close);
        assert!(head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").close);
    }

    #[test]
    fn media_type_ignores_case_and_parameters() {
        let with = |value: &str| {
            head(format!("HTTP/1.1 200 OK\r\nContent-Type: {value}\r\n\r\n").as_bytes())
        };
        for value in [
            "text/event-stream",
            "Text/Event-Stream; charset=utf-8",
            "TEXT/EVENT-STREAM ;charset=\"utf-8\"",
        ] {
            assert!(with(value).has_media_type("text/event-stream"), "{value}");
        }
        for value in ["text/plain", "text/event-streamx", "text/event"] {
            assert!(!with(value).has_media_type("text/event-stream"), "{value}");
        }
        assert!(!head(b"HTTP/1.1 200 OK\r\n\r\n").has_media_type("text/event-stream"));
    }

    #[test]
    fn content_coding_is_the_first_that_is_not_identity() {
        let coding = |fields: &str| {
            head(format!("HTTP/1.1 200 OK\r\n{fields}\r\n").as_bytes()).content_coding
        };
        assert_eq!(coding(""), None);
        assert_eq!(coding("Content-Encoding: identity\r\n"), None);
        assert_eq!(coding("Content-Encoding: Identity, \r\n"), None);
        assert_eq!(
            coding("content-encoding: identity, GZIP, br\r\n").as_deref(),
            Some("GZIP")
        );
        assert_eq!(
            coding("Content-Encoding: br\r\nContent-Encoding: gzip\r\n").as_deref(),
            Some("br")
        );
    }

    #[test]
    fn interim_and_redirect_statuses() {
        let status = |code: u16| head(format!("HTTP/1.1 {code} X\r\n\r\n").as_bytes());
        for code in [100, 102, 103, 199] {
            assert!(status(code).is_interim(), "{code}");
        }
        for code in [101, 200, 204] {
            assert!(!status(code).is_interim(), "{code}");
        }
        for code in [301, 302, 303, 307, 308] {
            assert!(status(code).is_redirect(), "{code}");
        }
        for code in [300, 304, 305, 306, 200] {
            assert!(!status(code).is_redirect(), "{code}");
        }
        let moved = head(b"HTTP/1.1 302 Found\r\nLocation:  /sse/x?a=1 \r\n\r\n");
        assert_eq!(moved.location.as_deref(), Some("/sse/x?a=1"));
    }

    #[test]
    fn redirect_targets_resolve_like_rfc_3986() {
        let from = |location: &str| {
            redirect_target(false, "h:1", "/sse/topics/t?since=4", location)
                .map(|(authority, path)| format!("{authority}{path}"))
        };
        let cases = [
            ("http://other:8080/a/b?c#frag", "other:8080/a/b?c"),
            // Hosts are case-insensitive; the URL standard writes them in
            // lower case.
            ("HTTP://Other", "other/"),
            ("http://[::1]:9?q", "[::1]:9/?q"),
            ("//other/x", "other/x"),
            ("/abs/path", "h:1/abs/path"),
            ("u", "h:1/sse/topics/u"),
            ("../ws/x?y", "h:1/sse/ws/x?y"),
            ("./", "h:1/sse/topics/"),
            ("../../../..", "h:1/"),
            ("/a/./b/../c/.", "h:1/a/c/"),
            ("?since=9", "h:1/sse/topics/t?since=9"),
            ("", "h:1/sse/topics/t?since=4"),
            ("#only", "h:1/sse/topics/t?since=4"),
            // A same-scheme reference without `//` is relative, as browsers
            // read it.
            ("http:/x", "h:1/x"),
        ];
        for (location, want) in cases {
            assert_eq!(from(location).unwrap(), want, "{location}");
        }
        assert!(matches!(
            from("https://h:1/sse"),
            Err(HttpError::AcrossSchemes { from: "http", .. })
        ));
        let secure = |location| redirect_target(true, "h", "/a/b", location);
        assert_eq!(
            secure("c?d").unwrap(),
            ("h".to_owned(), "/a/c?d".to_owned())
        );
        assert_eq!(
            secure("https://o:8443/x").unwrap(),
            ("o:8443".to_owned(), "/x".to_owned())
        );
        assert!(matches!(
            secure("http://h/a"),
            Err(HttpError::AcrossSchemes { from: "https", .. })
        ));
        for location in [
            "ftp://h/x",
            "http://",
            "http://user@h/x",
            "http://h/a b",
            "/a\r\nInjected: 1",
            "/é",
            "mailto:x",
        ] {
            assert!(
                matches!(from(location), Err(HttpError::UnsupportedRedirect { .. })),
                "{location}"
            );
        }
    }

    #[test]
    fn head_incomplete_then_malformed() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        for len in 0..raw.len() {
            assert!(parse_head(&raw[..len]).unwrap().is_none(), "{len}");
        }
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n"),
            Err(HttpError::InvalidContentLength { .. })
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n"),
            Err(HttpError::InvalidContentLength { .. })
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Err(HttpError::InvalidContentLength { .. })
        ));
        assert!(matches!(
            parse_head(b"HTTX/1.1 200 OK\r\n\r\n"),
            Err(HttpError::MalformedHead(_))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(matches!(
            parse_head(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()),
            Err(HttpError::MalformedHead(httparse::Error::TooManyHeaders))
        ));
    }

    /// Decodes `pieces` in order; returns the body and, per piece, the
    /// result of `decode`.
    fn decode_pieces<'a>(
        framing: BodyFraming,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(Vec<u8>, Vec<Decoded>), HttpError> {
        let mut decoder = BodyDecoder::new(framing);
        let mut body = Vec::new();
        let mut results = Vec::new();
        for piece in pieces {
            results.push(decoder.decode(piece, &mut |b: &[u8]| {
                assert!(!b.is_empty());
                body.extend_from_slice(b);
            })?);
        }
        decoder.at_eof()?;
        Ok((body, results))
    }

    fn decode_all(framing: BodyFraming, encoded: &[u8]) -> Result<Vec<u8>, HttpError> {
        let (body, results) = decode_pieces(framing, [encoded])?;
        assert_eq!(results, [Decoded::Done]);
        Ok(body)
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let encoded = b"5;name=value\r\nhello\r\n1 ; a=\"q;uoted\"; b\r\n \r\n\
                        A\r\n0123456789\r\n0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\n";
        assert_eq!(
            decode_all(BodyFraming::Chunked, encoded).unwrap(),
            b"hello 0123456789"
        );
        assert_eq!(decode_all(BodyFraming::Chunked, b"0\r\n\r\n").unwrap(), b"");
    }

    #[test]
    fn length_and_until_close_bodies() {
        assert_eq!(
            decode_all(BodyFraming::Length(5), b"hello").unwrap(),
            b"hello"
        );
        let (body, results) =
            decode_pieces(BodyFraming::Length(5), [&b"he"[..], b"", b"llo", b""]).unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(
            results,
            [Decoded::More, Decoded::More, Decoded::Done, Decoded::Done]
        );
        let (body, results) = decode_pieces(BodyFraming::Length(0), [&b""[..]]).unwrap();
        assert_eq!((body, results), (Vec::new(), vec![Decoded::Done]));
        let (body, results) =
            decode_pieces(BodyFraming::UntilClose, [&b"ab"[..], b"", b"c"]).unwrap();
        assert_eq!(body, b"abc");
        assert_eq!(results, [Decoded::More; 3]);
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        type Case = (&'static [u8], fn(&HttpError) -> bool);
        let cases: [Case; 9] = [
            (b"g\r\n", |e| matches!(e, HttpError::BadChunkSize { .. })),
            (b"\r\n", |e| matches!(e, HttpError::BadChunkSize { .. })),
            (b" 5\r\n", |e| matches!(e, HttpError::BadChunkSize { .. })),
            (b"5\n", |e| matches!(e, HttpError::BadChunkSize { .. })),
            (b"5;a\nb\r\n", |e| {
                matches!(e, HttpError::BadChunkSize { .. })
            }),
            (b"12345678123456781\r\n", |e| {
                matches!(e, HttpError::BadChunkSize { .. })
            }),
            (b"3\r\nabcX", |e| {
                matches!(e, HttpError::MissingChunkCrlf { found: b'X' })
            }),
            (b"0\r\nA: b\n\r\n", |e| {
                matches!(e, HttpError::MalformedTrailer)
            }),
            (b"0\r\n\r\nextra", |e| {
                matches!(e, HttpError::DataAfterBody { .. })
            }),
        ];
        for (encoded, expected) in cases {
            // Whole, and split at every point.
            for split in 0..=encoded.len() {
                let err =
                    decode_pieces(BodyFraming::Chunked, [&encoded[..split], &encoded[split..]])
                        .expect_err("malformed");
                assert!(expected(&err), "{encoded:?} split at {split}: {err}");
            }
        }
        let long = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        for split in [0, 3, long.len()] {
            let err = decode_pieces(
                BodyFraming::Chunked,
                [&long.as_bytes()[..split], &long.as_bytes()[split..]],
            )
            .expect_err("too long");
            assert!(
                matches!(err, HttpError::ChunkSizeLineTooLong { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn eof_before_the_end_is_an_error() {
        let encoded = b"3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n";
        for len in 0..encoded.len() {
            let err = decode_pieces(BodyFraming::Chunked, [&encoded[..len]]).expect_err("short");
            assert!(matches!(err, HttpError::UnexpectedEof(_)), "{len}: {err}");
        }
        let err = decode_pieces(BodyFraming::Length(4), [&b"abc"[..]]).expect_err("short");
        assert!(
            matches!(err, HttpError::TruncatedBody { remaining: 1 }),
            "{err}"
        );
    }

    /// Encodes `body` as chunks of varied sizes, with extensions and
    /// trailers now and then.
    pub(crate) fn encode_chunked(body: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut encoded = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let size = rng.usize(1..=rest.len().min(300));
            let hex = if rng.bool() {
                format!("{size:x}")
            } else {
                format!("{size:04X}")
            };
            encoded.extend_from_slice(hex.as_bytes());
            match rng.u8(0..4) {
                0 => encoded.extend_from_slice(b";ext=1"),
                1 => encoded.extend_from_slice(b" ; a=\"b\";c"),
                _ => {}
            }
            encoded.extend_from_slice(b"\r\n");
            encoded.extend_from_slice(&rest[..size]);
            encoded.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        encoded.extend_from_slice(b"0\r\n");
        if rng.bool() {
            encoded.extend_from_slice(b"X-Trailer: yes\r\nX-Other: 1\r\n");
        }
        encoded.extend_from_slice(b"\r\n");
        encoded
    }

    /// Decodes `pieces`, asserting that each result is `Done` exactly when
    /// all of `encoded` has been passed.
    fn check_pieces(framing: BodyFraming, encoded: &[u8], cuts: &[usize], body: &[u8]) {
        let pieces = cuts.windows(2).map(|w| &encoded[w[0]..w[1]]);
        let (got, results) =
            decode_pieces(framing, pieces).unwrap_or_else(|e| panic!("cuts {cuts:?}: {e}"));
        assert_eq!(got, body, "cuts {cuts:?}");
        for (result, end) in results.iter().zip(&cuts[1..]) {
            let want = if *end == encoded.len() {
                Decoded::Done
            } else {
                Decoded::More
            };
            assert_eq!(*result, want, "cuts {cuts:?}, piece ending at {end}");
        }
    }

    #[test]
    fn any_split_decodes_to_the_body() {
        let mut rng = fastrand::Rng::with_seed(0xC4_0C);
        for _ in 0..4 {
            let body: Vec<u8> = (0..rng.usize(500..2000)).map(|_| rng.u8(..)).collect();
            let encoded = encode_chunked(&body, &mut rng);
            let framings = [
                (BodyFraming::Chunked, encoded.as_slice()),
                (BodyFraming::Length(body.len() as u64), body.as_slice()),
            ];
            for (framing, encoded) in framings {
                for split in 0..=encoded.len() {
                    check_pieces(framing, encoded, &[0, split, encoded.len()], &body);
                }
                let every_byte: Vec<usize> = (0..=encoded.len()).collect();
                check_pieces(framing, encoded, &every_byte, &body);
                for _ in 0..300 {
                    let mut cuts: Vec<usize> = (0..rng.usize(1..40))
                        .map(|_| rng.usize(0..=encoded.len()))
                        .collect();
                    cuts.extend([0, encoded.len()]);
                    cuts.sort_unstable();
                    check_pieces(framing, encoded, &cuts, &body);
                }
            }
        }
    }

    #[test]
    fn body_runs_are_slices_of_the_input() {
        let encoded = b"5\r\nhello\r\n3\r\nabc\r\n";
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
        let range = encoded.as_ptr_range();
        let mut runs = 0;
        let result = decoder.decode(encoded, &mut |b: &[u8]| {
            assert!(range.contains(&b.as_ptr()));
            runs += 1;
        });
        assert_eq!((result.unwrap(), runs), (Decoded::More, 2));
    }

    #[test]
    fn steady_state_reuses_the_line_buffer() {
        let mut rng = fastrand::Rng::with_seed(3);
        let body = vec![b'x'; 100_000];
        let mut encoded = encode_chunked(&body, &mut rng);
        // A stream: no last chunk (the body is all `x`, so this finds it).
        let last = encoded.windows(5).rposition(|w| w == b"\r\n0\r\n");
        encoded.truncate(last.expect("a last chunk") + 2);
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
        let run = |decoder: &mut BodyDecoder| {
            for piece in encoded.chunks(7) {
                decoder.decode(piece, &mut |_: &[u8]| {}).unwrap();
            }
        };
        run(&mut decoder);
        let before = (decoder.line.as_ptr(), decoder.line.capacity());
        run(&mut decoder);
        assert_eq!(before, (decoder.line.as_ptr(), decoder.line.capacity()));
    }
}
