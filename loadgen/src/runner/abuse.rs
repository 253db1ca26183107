//! Misbehaving clients, run beside the well-behaved ones during a phase
//! with `abuse`: the phase's figures (the others' latency and errors) show
//! what the abuse costs them, and each abuser counts whether the server
//! answered it as its limits say (docs/security.md) — `refused` — or some
//! other way — `unexpected`. An attempt still going when the phase ends
//! (a slow head not yet timed out, a stream admitted under the limit) is
//! neither.
//!
//! Each kind connects from a loopback address of its own (127.0.0.100 and
//! up, apart from the well-behaved clients' 127.0.0.1 to .16), so that the
//! per-address limit one kind meets is its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::format::Decoder;
use crate::client::http::authorization;
use crate::client::read_buffer::ReadBuffer;
use crate::client::request::Request;
use crate::client::sse::{SseStream, read_head};
use crate::client::{ClientError, Target, ws};
use crate::metrics::{AbuseCounts, Recorder};
use crate::scenario::AbuseKind;

/// The shortest time between two attempts of one abuser: abuse the server,
/// not the load generator's own CPU, which the measured clients share.
const PACE: Duration = Duration::from_millis(100);

/// How long an answer may take before the attempt counts as unexpected.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes an oversized publish or frame carries: over any publish limit the
/// server accepts by default (64 KiB), and over most configured ones.
const OVERSIZED: usize = 1024 * 1024;

/// Pings one flood sends at once: over three times the allowance of a
/// second (100).
const PINGS: usize = 320;

/// The receive buffer of a client that never reads: small, so the server's
/// writes stall at once.
const NEVER_READ_BUFFER: u32 = 4096;

/// How long a never-reading client, at the end of its phase, reads what is
/// left to learn whether the server closed its stream.
const DRAIN: Duration = Duration::from_secs(3);

/// The receive buffer while it does.
const DRAIN_BUFFER: usize = 1024 * 1024;

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    /// The server answered as its limits say, asking for this wait.
    Refused(Option<Duration>),
    /// Any other answer.
    Unexpected(String),
    /// Still going when the phase ended.
    Held,
}

/// What every abuser of a phase shares.
#[derive(Debug)]
pub struct AbuseSpec {
    /// How they misbehave.
    pub kind: AbuseKind,
    /// Where.
    pub target: Arc<Target>,
    /// A topic to publish oversized events to.
    pub topic: String,
    /// Bearer token for publishes and subscriptions.
    pub token: Option<String>,
    /// When their phase ends: a never-reading client looks at its stream
    /// before then, so that its reading counts in its own phase.
    pub ends_at: Instant,
}

impl AbuseSpec {
    /// Connects from this kind's own address (127.0.0.100 + its rank, for
    /// a loopback target).
    async fn dial(&self, recv_buffer: Option<u32>) -> Result<TcpStream, ClientError> {
        let source = u8::try_from(100 + self.kind.index())
            .ok()
            .and_then(|last| self.target.loopback_source(last));
        self.target.dial_from(source, recv_buffer).await
    }

    /// `Authorization: Bearer …\r\n`, or nothing.
    fn authorization(&self) -> String {
        authorization(self.token.as_deref())
    }
}

/// One abuser: attempts, again and again, until `cancel`.
pub async fn run(spec: Arc<AbuseSpec>, mut recorder: Recorder, cancel: CancellationToken) {
    let kind = spec.kind.index();
    let count = |recorder: &mut Recorder, update: fn(&mut AbuseCounts)| {
        recorder.count(|c| update(&mut c.abuse[kind]));
    };
    for attempt in 0u64.. {
        if cancel.is_cancelled() {
            break;
        }
        count(&mut recorder, |a| a.attempts += 1);
        let wait = match attempt_once(&spec, attempt, &cancel).await {
            Outcome::Refused(wait) => {
                count(&mut recorder, |a| a.refused += 1);
                wait.unwrap_or(PACE)
            }
            Outcome::Unexpected(what) => {
                tracing::debug!(kind = spec.kind.as_str(), %what, "unexpected answer to abuse");
                count(&mut recorder, |a| a.unexpected += 1);
                PACE
            }
            Outcome::Held => break,
        };
        recorder.flush_if_due(Instant::now());
        tokio::select! {
            () = cancel.cancelled() => break,
            () = sleep(wait.mul_f64(1.0 + fastrand::f64() / 2.0)) => {}
        }
    }
    recorder.flush();
}

/// One attempt, ended by its outcome or by the end of its phase (`Held`),
/// whichever comes first: no step waits past the phase.
async fn attempt_once(spec: &AbuseSpec, attempt: u64, cancel: &CancellationToken) -> Outcome {
    tokio::select! {
        biased;
        outcome = misbehave(spec, attempt, cancel) => outcome,
        () = cancel.cancelled() => Outcome::Held,
    }
}

async fn misbehave(spec: &AbuseSpec, attempt: u64, cancel: &CancellationToken) -> Outcome {
    let result = match spec.kind {
        AbuseKind::Slowloris => slowloris(spec, cancel).await,
        AbuseKind::NeverRead => never_read(spec, cancel).await,
        AbuseKind::Oversized => match attempt % 3 {
            0 => oversized_declared(spec).await,
            1 => oversized_chunked(spec).await,
            _ => oversized_frame(spec).await,
        },
        AbuseKind::PingFlood => ping_flood(spec).await,
        AbuseKind::OnePeer => one_peer(spec, cancel).await,
    };
    result.unwrap_or_else(|e| Outcome::Unexpected(e.to_string()))
}

/// A request head that never ends: the server closes it at its header
/// timeout, without an answer.
async fn slowloris(spec: &AbuseSpec, cancel: &CancellationToken) -> Result<Outcome, ClientError> {
    let mut stream = spec.dial(None).await?;
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", spec.target.host);
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(ClientError::Connect)?;
    let mut byte = [0u8; 1];
    let mut trickle = tokio::time::interval(Duration::from_secs(1));
    trickle.tick().await;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(Outcome::Held),
            read = stream.read(&mut byte) => return Ok(match read {
                Ok(0) | Err(_) => Outcome::Refused(None),
                Ok(_) => Outcome::Unexpected("an answer to a head never finished".to_owned()),
            }),
            _ = trickle.tick() => {
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return Ok(Outcome::Refused(None));
                }
            }
        }
    }
}

/// A stream as fast as the server writes, never read: the server drops it
/// once a write makes no progress for its write timeout. Whether it did
/// shows near the end of the phase (`DRAIN` before it, or in its last
/// quarter if it is short), by reading what is left: the megabytes the
/// server's socket held, read within the phase rather than at the start of
/// the next one. One stream per phase: the attempt then holds its slot
/// until the phase ends.
async fn never_read(spec: &AbuseSpec, cancel: &CancellationToken) -> Result<Outcome, ClientError> {
    // Only a stream the server took (200) is one it must drop.
    let mut stream = SseStream::open(
        spec.dial(Some(NEVER_READ_BUFFER)).await?.into(),
        &spec.target.host,
        &Request::get("/sse/ticker?rate=0&size=65536", spec.token.as_deref()),
        Decoder::streamgauge(),
        None,
    )
    .await?
    .into_inner();
    let left = spec.ends_at.saturating_duration_since(Instant::now());
    let look_at = spec.ends_at - DRAIN.min(left / 4);
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep_until(look_at.into()) => {}
    }
    // Now read what is left as fast as possible.
    let _ = socket2::SockRef::from(stream.tcp()).set_recv_buffer_size(DRAIN_BUFFER);
    let mut sink = vec![0u8; 256 * 1024];
    let drained = timeout(DRAIN, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    cancel.cancelled().await;
    Ok(match drained {
        Ok(()) => Outcome::Refused(None),
        Err(_) => Outcome::Held,
    })
}

/// The status of the answer to `request` (and the body bytes that follow,
/// written while the answer is awaited; a server that answers first may
/// close before they are all sent).
async fn answer_to(
    spec: &AbuseSpec,
    request: String,
    body: impl Iterator<Item = Vec<u8>>,
) -> Result<u16, ClientError> {
    let stream = spec.dial(None).await?;
    let (mut read, mut write) = stream.into_split();
    let send = async move {
        if write.write_all(request.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let answer = async move {
        let mut buf = ReadBuffer::new();
        read_head(&mut read, &mut buf)
            .await
            .map(|(head, _, _)| head.status)
    };
    let answer = timeout(ANSWER_TIMEOUT, answer);
    tokio::pin!(answer);
    // Once answered, stop sending: a server that does not read the rest
    // would hold the writes for ever.
    tokio::select! {
        biased;
        status = &mut answer => return status.map_err(|_| ClientError::Timeout)?,
        () = send => {}
    }
    answer.await.map_err(|_| ClientError::Timeout)?
}

/// Expects `413 Payload Too Large`.
fn expect_413(status: u16) -> Outcome {
    if status == 413 {
        Outcome::Refused(None)
    } else {
        Outcome::Unexpected(format!("status {status} to an oversized publish"))
    }
}

/// A publish that declares a body over the limit.
async fn oversized_declared(spec: &AbuseSpec) -> Result<Outcome, ClientError> {
    let request = format!(
        "POST /topics/{}/events HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\n\
         Content-Length: {OVERSIZED}\r\nConnection: close\r\n\r\n",
        spec.topic,
        spec.target.host,
        spec.authorization()
    );
    let body = std::iter::once(vec![b' '; OVERSIZED]);
    Ok(expect_413(answer_to(spec, request, body).await?))
}

/// A chunked publish that runs over the limit without declaring it.
async fn oversized_chunked(spec: &AbuseSpec) -> Result<Outcome, ClientError> {
    let request = format!(
        "POST /topics/{}/events HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        spec.topic,
        spec.target.host,
        spec.authorization()
    );
    const CHUNK: usize = 64 * 1024;
    let chunk = || {
        let mut bytes = format!("{CHUNK:x}\r\n").into_bytes();
        bytes.resize(bytes.len() + CHUNK, b' ');
        bytes.extend_from_slice(b"\r\n");
        bytes
    };
    let body = (0..OVERSIZED / CHUNK)
        .map(move |_| chunk())
        .chain(std::iter::once(b"0\r\n\r\n".to_vec()));
    Ok(expect_413(answer_to(spec, request, body).await?))
}

/// A WebSocket subscriber's publish frame over the limit: close 1009.
async fn oversized_frame(spec: &AbuseSpec) -> Result<Outcome, ClientError> {
    let path = format!("/ws/topics/{}", spec.topic);
    let mut socket = ws::handshake(
        spec.dial(None).await?,
        &spec.target.host,
        &Request::get(path, spec.token.as_deref()),
    )
    .await?;
    let frame = format!(r#"{{"publish":"{}"}}"#, "x".repeat(OVERSIZED));
    // The server may close before the whole frame is written.
    let _ = socket.send(Message::text(frame)).await;
    Ok(expect_close(&mut socket, 1009).await)
}

/// Pings at over three times the allowance: close 1008.
async fn ping_flood(spec: &AbuseSpec) -> Result<Outcome, ClientError> {
    let mut socket = ws::handshake(
        spec.dial(None).await?,
        &spec.target.host,
        &Request::get("/ws/ticker?rate=1", spec.token.as_deref()),
    )
    .await?;
    for _ in 0..PINGS {
        if socket.feed(Message::Ping(Vec::new().into())).await.is_err() {
            break;
        }
    }
    let _ = socket.flush().await;
    Ok(expect_close(&mut socket, 1008).await)
}

/// Reads until the server closes with `code` (refused) or otherwise.
async fn expect_close<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>, code: u16) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let closed = timeout(ANSWER_TIMEOUT, async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await;
    match closed {
        Ok(Some(got)) if got == code => Outcome::Refused(None),
        Ok(got) => Outcome::Unexpected(format!("close {got:?}, not {code}")),
        Err(_) => Outcome::Unexpected(format!("no close {code} in {ANSWER_TIMEOUT:?}")),
    }
}

/// A stream from the one address: admitted under its limit (and held,
/// read, until the phase ends), refused `429` with `Retry-After` over it.
async fn one_peer(spec: &AbuseSpec, cancel: &CancellationToken) -> Result<Outcome, ClientError> {
    let stream = spec.dial(None).await?;
    let opened = SseStream::open(
        stream.into(),
        &spec.target.host,
        &Request::get("/sse/ticker?rate=1&size=0", spec.token.as_deref()),
        Decoder::streamgauge(),
        None,
    )
    .await;
    let mut sse = match opened {
        Ok(sse) => sse,
        Err(ClientError::Shed {
            code: 429,
            retry_after,
        }) => return Ok(Outcome::Refused(retry_after)),
        Err(e) => return Err(e),
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(Outcome::Held),
            frame = sse.next() => if let Err(e) = frame {
                return Ok(Outcome::Unexpected(format!("an admitted stream ended: {e}")));
            }
        }
    }
}
