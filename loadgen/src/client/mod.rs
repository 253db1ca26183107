//! Virtual clients: one loop for every scenario. A client connects (SSE or
//! WebSocket), reads events, checks each `seq` for gaps and duplicates,
//! records latency from `ts` (and, on topics, from the publisher's intended
//! send time), spends its consumer delay, churns when its time comes, and
//! reconnects after a failure with a backoff. What it streams is data
//! ([`StreamPath`]); how it reads is the same for all.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::check::{NoticeKind, Seen, SeqCheck};
use crate::metrics::{ErrorKind, Recorder, Sample};
use crate::scenario::{Scenario, StreamKind, Transport};

pub mod envelope;
pub mod http;
pub mod read_buffer;
pub mod sse;
pub mod sse_parser;
pub mod ws;

use self::envelope::{Envelope, GapReason};

/// How long a connection (TCP, request, response head or handshake) may
/// take before it counts as a timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stream may stay silent (no event, no keep-alive) before it
/// counts as a timeout: twice the server's default 15 s keep-alive.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client on a finite stream (tokens, a replay, a counted
/// ticker) goes on reading once its run or its slot has ended, so that the
/// stream completes instead of being cut: the run's counts are then whole
/// streams (k6 calls it a graceful stop). Endless streams stop at once.
/// Below the runner's stop timeout.
pub const FINISH_GRACE: Duration = Duration::from_secs(5);

/// How long an open of a finite stream in flight when the run ends may
/// still take; its stream is then read within [`FINISH_GRACE`]. Together
/// below the runner's stop timeout.
const OPEN_GRACE: Duration = Duration::from_secs(1);

/// Frames a client takes in a row while they are ready without waiting,
/// before it looks at the run's end, its stall timer and the clock again.
/// A look per frame (a `select!` over the token, the timer and the socket,
/// and two clock reads) took 15 % of the client's CPU at 1 M events/s; one
/// per 64 frames, 9 % (docs/performance.md, section 4). 64 ready frames
/// are handled in well under a millisecond, so a run's end is still seen
/// at once.
const BURST: u32 = 64;

/// Loopback source addresses clients spread over (127.0.0.1 to .16), so
/// that one process can open more connections than one port range holds.
const LOOPBACK_SOURCES: u8 = 16;

/// The wall clock in µs since the Unix epoch, the server's `ts` clock.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The server under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header (`host:port`).
    pub host: String,
}

impl Target {
    /// The target at `url` (`http://host:port`). A host with several
    /// addresses (`localhost`: `::1` and `127.0.0.1`) is reached at the
    /// first that accepts a connection, as a browser or curl would.
    ///
    /// # Errors
    ///
    /// A URL that is not `http://host:port[/]`, or a host that does not
    /// resolve.
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let host = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|host| !host.is_empty() && !host.contains('/'))
            .ok_or_else(|| anyhow::anyhow!("--url {url:?}: expected http://HOST:PORT"))?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
            .await
            .map_err(|e| anyhow::anyhow!("--url {url:?}: cannot resolve {host}: {e}"))?
            .collect();
        let addr = Self::first_accepting(&addrs)
            .await
            .ok_or_else(|| anyhow::anyhow!("--url {url:?}: {host} resolves to no address"))?;
        Ok(Self {
            addr,
            host: host.to_owned(),
        })
    }

    /// The first of `addrs` that accepts a TCP connection within
    /// [`CONNECT_TIMEOUT`]; the first of them if none does (the run's
    /// reachability check then says what is wrong); `None` if there are none.
    async fn first_accepting(addrs: &[SocketAddr]) -> Option<SocketAddr> {
        if let [only] = addrs {
            return Some(*only);
        }
        for addr in addrs {
            if let Ok(Ok(_)) = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                return Some(*addr);
            }
        }
        addrs.first().copied()
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The source address client `id` binds, spreading clients of a
    /// loopback target over several loopback addresses.
    fn source(&self, id: usize) -> Option<IpAddr> {
        self.loopback_source(1 + (id % usize::from(LOOPBACK_SOURCES)) as u8)
    }

    /// `127.0.0.last` as a source address, if the target is on IPv4
    /// loopback (any 127.0.0.0/8 address reaches it then); `None` otherwise.
    pub fn loopback_source(&self, last: u8) -> Option<IpAddr> {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
            .then_some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }

    /// A TCP connection for client `id`.
    async fn dial(&self, id: usize) -> Result<TcpStream, ClientError> {
        self.dial_from(self.source(id), None).await
    }

    /// A TCP connection from `source` (if given), with a receive buffer of
    /// `recv_buffer` bytes (if given; the kernel may round it).
    ///
    /// # Errors
    ///
    /// The socket could not be made, bound or connected.
    pub async fn dial_from(
        &self,
        source: Option<IpAddr>,
        recv_buffer: Option<u32>,
    ) -> Result<TcpStream, ClientError> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(ClientError::Connect)?;
        if let Some(bytes) = recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(ClientError::Connect)?;
        }
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(ClientError::Connect)?;
        }
        socket
            .connect(self.addr)
            .await
            .map_err(ClientError::Connect)
    }
}

/// Why a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The server refused the stream with this unexpected status.
    #[error("status {0}")]
    Status(u16),
    /// The server shed the stream: `503` or `429` (with `Retry-After` in
    /// seconds, if it gave one) or WebSocket close `1013`. A load the server
    /// refuses by design, counted apart from the errors.
    #[error("shed with {code}")]
    Shed {
        /// The HTTP status or the WebSocket close code.
        code: u16,
        /// How long the server asked the client to wait.
        retry_after: Option<Duration>,
    },
    /// Malformed bytes.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The stream broke off.
    #[error("closed: {0}")]
    Closed(String),
}

impl ClientError {
    /// The server answered the stream request with `status` (not 200 or
    /// 101) and `Retry-After` (delta seconds, if any): shed for 429 and
    /// 503, otherwise an unexpected status.
    pub fn refused(status: u16, retry_after: Option<u64>) -> Self {
        match status {
            429 | 503 => ClientError::Shed {
                code: status,
                retry_after: retry_after.map(Duration::from_secs),
            },
            other => ClientError::Status(other),
        }
    }

    /// Whether it is this machine's limit (out of file descriptors or
    /// local ports), not the server's answer.
    pub fn is_local_limit(&self) -> bool {
        let ClientError::Connect(e) = self else {
            return false;
        };
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL | libc::EADDRINUSE)
        )
    }

    /// How `summary.json` counts it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Connect(_) => ErrorKind::Connect,
            ClientError::Status(_) | ClientError::Shed { .. } => ErrorKind::HttpStatus,
            ClientError::Protocol(_) => ErrorKind::Protocol,
            ClientError::Timeout => ErrorKind::Timeout,
            ClientError::Closed(_) => ErrorKind::Closed,
        }
    }
}

/// What a stream delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// An event or a gap notice.
    Event {
        /// What it says.
        envelope: Envelope,
        /// Its size on the wire (the JSON).
        bytes: usize,
        /// When it arrived, µs since the Unix epoch.
        received_us: u64,
    },
    /// A keep-alive.
    KeepAlive,
    /// The server ended the stream cleanly.
    End,
}

/// An open stream on either transport.
#[derive(Debug)]
pub enum Connection {
    /// Server-Sent Events.
    Sse(sse::SseStream),
    /// WebSocket.
    Ws(ws::WsStream),
}

impl Connection {
    /// Opens `path` on `target` for client `id`, with a bearer `token`.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn open(
        target: &Target,
        id: usize,
        transport: Transport,
        path: &str,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        let stream = target.dial(id).await?;
        Ok(match transport.for_client(id) {
            Transport::Ws => {
                Connection::Ws(ws::WsStream::open(stream, &target.host, path, token).await?)
            }
            // `for_client` never gives `Mixed`.
            Transport::Sse | Transport::Mixed => {
                Connection::Sse(sse::SseStream::open(stream, &target.host, path, token).await?)
            }
        })
    }

    /// The next frame.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next(&mut self) -> Result<Frame, ClientError> {
        match self {
            Connection::Sse(sse) => sse.next().await,
            Connection::Ws(ws) => ws.next().await,
        }
    }
}

/// What clients stream, with what they need to build each request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamPath {
    /// `/…/ticker?rate=R&count=N&size=S`.
    Ticker {
        /// Events/s.
        rate: u64,
        /// Filler bytes.
        size: usize,
        /// Events per stream (0: endless).
        count: u64,
    },
    /// `/…/tokens?ttft_ms=T&tps=R&tokens=N`.
    Tokens {
        /// Delay before the first token, ms.
        ttft_ms: u64,
        /// Tokens/s.
        tps: u64,
        /// Tokens per stream.
        tokens: u64,
    },
    /// `/…/topics/NAME`, then `?since=S` to resume.
    Topic {
        /// The topic.
        name: String,
    },
    /// `/…/replay/WALLET?rate=R`.
    Replay {
        /// The wallet.
        wallet: String,
        /// Rows/s (0: as fast as read).
        rate: u64,
        /// Rows in the dataset: what each replay must deliver.
        rows: u64,
    },
}

impl StreamPath {
    /// What `scenario` streams at `rate` per client; `name` names its
    /// topic or wallet.
    pub fn of(scenario: &Scenario, name: &str, rate: u64) -> Self {
        match scenario.stream {
            StreamKind::Ticker => StreamPath::Ticker {
                rate,
                size: scenario.size,
                count: scenario.count,
            },
            StreamKind::Tokens => StreamPath::Tokens {
                ttft_ms: u64::try_from(scenario.tokens.ttft.as_millis()).unwrap_or(u64::MAX),
                tps: scenario.tokens.tps,
                tokens: scenario.tokens.tokens,
            },
            StreamKind::Topic => StreamPath::Topic {
                name: name.to_owned(),
            },
            StreamKind::Replay => StreamPath::Replay {
                wallet: name.to_owned(),
                rate,
                rows: scenario.replay_rows,
            },
        }
    }

    /// The request path on `transport`. A topic subscriber resumes after
    /// `since`; without it (its first subscription) it takes the live tail,
    /// so that no client replays the history published before it came.
    fn path(&self, transport: Transport, since: Option<u64>) -> String {
        let t = transport.as_str();
        match self {
            StreamPath::Ticker { rate, size, count } => {
                format!("/{t}/ticker?rate={rate}&count={count}&size={size}")
            }
            StreamPath::Tokens {
                ttft_ms,
                tps,
                tokens,
            } => {
                format!("/{t}/tokens?ttft_ms={ttft_ms}&tps={tps}&tokens={tokens}")
            }
            StreamPath::Topic { name } => match since {
                Some(since) => format!("/{t}/topics/{name}?since={since}"),
                None => format!("/{t}/topics/{name}"),
            },
            StreamPath::Replay { wallet, rate, .. } => format!("/{t}/replay/{wallet}?rate={rate}"),
        }
    }

    /// The events a stream of this kind delivers before it ends by itself
    /// (then the client asks for another); `None` for the endless ones.
    fn length(&self) -> Option<u64> {
        match self {
            StreamPath::Tokens { tokens, .. } => Some(*tokens),
            StreamPath::Replay { rows, .. } => Some(*rows),
            StreamPath::Ticker { count, .. } => (*count > 0).then_some(*count),
            StreamPath::Topic { .. } => None,
        }
    }

    /// Whether a reconnecting client resumes where it stopped (topics);
    /// the others start a new stream at `seq` 1.
    fn resumes(&self) -> bool {
        matches!(self, StreamPath::Topic { .. })
    }
}

/// How every client of a run behaves.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// The transport.
    pub transport: Transport,
    /// What is streamed.
    pub stream: StreamPath,
    /// Time spent on each event.
    pub consumer_delay: Duration,
    /// Disconnect-and-resume rate per second.
    pub churn: f64,
    /// Bearer token for the requests, if the server wants one.
    pub token: Option<String>,
    /// Topics: the last seq a subscriber must hold when the run ends (the
    /// runner sets it before stopping the clients; 0 until then).
    pub settled: Arc<AtomicU64>,
}

/// Why a client left a stream.
enum Left {
    /// Its run (or its slot) ended.
    Cancelled,
    /// The stream ended as it should.
    Completed,
    /// Its churn time came.
    Churned,
    /// The server shed it (close 1013), asking for this wait if it said.
    Shed(Option<Duration>),
    /// It failed.
    Failed(ErrorKind),
}

/// Doubling waits between failed attempts, with jitter, up to a second.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_secs(1);

    /// Waits (unless cancelled first) and doubles the next wait.
    async fn wait(&mut self, cancel: &CancellationToken) {
        let wait = self.0.mul_f64(0.5 + fastrand::f64());
        self.0 = (self.0 * 2).min(Self::MAX);
        pause(wait, cancel).await;
    }
}

/// The longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// Sleeps for `wait`, or until `cancel`.
async fn pause(wait: Duration, cancel: &CancellationToken) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = sleep(wait) => {}
    }
}

/// One virtual client, running until `cancel`.
#[derive(Debug)]
pub struct VirtualClient {
    /// Its number (chooses its source address and its shard).
    pub id: usize,
    /// How it behaves.
    pub spec: Arc<ClientSpec>,
    /// Where it connects.
    pub target: Arc<Target>,
    /// Where it records.
    pub recorder: Recorder,
}

impl VirtualClient {
    /// Streams, again and again, until `cancel`; flushes its measurements
    /// before returning.
    pub async fn run(mut self, cancel: CancellationToken) {
        let resumes = self.spec.stream.resumes();
        let mut check = if resumes {
            SeqCheck::from_first()
        } else {
            SeqCheck::expecting(1)
        };
        let mut left_at: Option<Instant> = None;
        let mut backoff = Backoff(Backoff::FIRST);
        while !cancel.is_cancelled() {
            // Failures are flushed even while no event arrives (an outage).
            self.recorder.flush_if_due(Instant::now());
            let path = self.spec.stream.path(
                self.spec.transport.for_client(self.id),
                check.last().filter(|_| resumes),
            );
            let requested = Instant::now();
            let open = Connection::open(
                &self.target,
                self.id,
                self.spec.transport,
                &path,
                self.spec.token.as_deref(),
            );
            let opened = tokio::select! {
                () = self.open_cut(&cancel) => break,
                opened = timeout(CONNECT_TIMEOUT, open) => opened,
            };
            // Counted once settled: an attempt the end of the run cut short
            // (an endless stream's, or one over its grace) neither succeeded
            // nor failed.
            self.recorder.count(|c| c.connects += 1);
            let connection = match opened {
                Ok(Ok(connection)) => connection,
                Ok(Err(ClientError::Shed { retry_after, .. })) => {
                    self.shed(retry_after, &cancel).await;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(client = self.id, error = %e, "connection failed");
                    if e.is_local_limit() {
                        self.recorder.count(|c| c.local_limits += 1);
                    }
                    self.fail(e.kind(), &mut backoff, &cancel).await;
                    continue;
                }
                Err(_) => {
                    self.fail(ErrorKind::Timeout, &mut backoff, &cancel).await;
                    continue;
                }
            };
            let connect_us = micros(requested.elapsed());
            let reconnect_us = left_at.map(|left| micros(left.elapsed()));
            backoff = Backoff(Backoff::FIRST);
            if !resumes {
                check = SeqCheck::expecting(1);
            }
            let left = self
                .read(connection, &mut check, requested, left_at.take(), &cancel)
                .await;
            // A WebSocket over the limit is upgraded, then closed 1013: shed,
            // not connected.
            if !matches!(left, Left::Shed(_)) {
                self.recorder.sample(Sample::Connect, connect_us);
                if let Some(us) = reconnect_us {
                    self.recorder.sample(Sample::Reconnect, us);
                }
            }
            match left {
                Left::Cancelled => break,
                Left::Completed => self.recorder.count(|c| c.completed += 1),
                Left::Churned => {
                    left_at = Some(Instant::now());
                    self.recorder.count(|c| c.reconnects += 1);
                }
                Left::Shed(retry_after) => self.shed(retry_after, &cancel).await,
                Left::Failed(kind) => self.fail(kind, &mut backoff, &cancel).await,
            }
        }
        if resumes && check.last().is_some() {
            let settled = self.spec.settled.load(Ordering::Acquire);
            let behind = check.short_of(settled);
            self.recorder.count(|c| c.behind_at_end += behind);
        }
        self.recorder.flush();
    }

    /// Counts a stream the server shed and waits as it asked: its
    /// `Retry-After` (at most a minute) or, for "try again later" without a
    /// time (close 1013), a second; spread by up to half again so that shed
    /// clients do not all come back at the same instant.
    async fn shed(&mut self, retry_after: Option<Duration>, cancel: &CancellationToken) {
        self.recorder.count(|c| c.shed += 1);
        // Counted in the second it happened, not when the wait ends.
        self.recorder.flush();
        let wait = retry_after.unwrap_or(Backoff::MAX).min(RETRY_AFTER_MAX);
        pause(wait.mul_f64(1.0 + fastrand::f64() / 2.0), cancel).await;
    }

    /// Counts a failure of `kind`, flushes it (so that it is counted in the
    /// second it happened), and backs off.
    async fn fail(&mut self, kind: ErrorKind, backoff: &mut Backoff, cancel: &CancellationToken) {
        self.recorder.error(kind);
        self.recorder.flush();
        backoff.wait(cancel).await;
    }

    /// The time until this client next churns, drawn from an exponential
    /// distribution (churn is a rate per second).
    fn next_churn(&self) -> Option<Instant> {
        (self.spec.churn > 0.0).then(|| {
            let wait = -(1.0 - fastrand::f64()).ln() / self.spec.churn;
            Instant::now() + Duration::from_secs_f64(wait.min(3600.0))
        })
    }

    /// Resolves when an open in flight is to be given up: at once when the
    /// run ends for an endless stream; for a finite one, [`OPEN_GRACE`]
    /// later, so that the open completes and its stream is read to its end
    /// (cut short, it could leave events the server sent and counted that
    /// no client received).
    async fn open_cut(&self, cancel: &CancellationToken) {
        cancel.cancelled().await;
        if self.spec.stream.length().is_some() {
            sleep(OPEN_GRACE).await;
        }
    }

    /// Reads one stream until it ends, fails, churns or is cancelled.
    async fn read(
        &mut self,
        mut connection: Connection,
        check: &mut SeqCheck,
        requested: Instant,
        mut resuming_since: Option<Instant>,
        cancel: &CancellationToken,
    ) -> Left {
        let churn_at = self.next_churn();
        let finite = self.spec.stream.length().is_some();
        let mut first = true;
        let mut stall = pin!(sleep(STALL_TIMEOUT));
        let mut stall_armed = Instant::now();
        // Once cancelled, a finite stream is read to its end (the stall
        // timer then bounds it by FINISH_GRACE).
        let mut finishing = false;
        // One registration with the token for the whole stream: a fresh
        // `cancelled()` per event registered and dropped a waiter each time
        // (8 % of the client's CPU at 1 M events/s: docs/performance.md).
        let mut cancelled = pin!(cancel.cancelled());
        // Frames taken in a row without waiting, since the last look at the
        // token, the stall timer and the clock.
        let mut burst = 0;
        loop {
            let ready = if burst < BURST {
                connection.next().now_or_never()
            } else {
                None
            };
            let frame = if let Some(frame) = ready {
                burst += 1;
                frame
            } else {
                burst = 0;
                let frame = tokio::select! {
                    biased;
                    () = &mut cancelled, if !finishing => {
                        if !finite {
                            return Left::Cancelled;
                        }
                        finishing = true;
                        stall.as_mut().reset((Instant::now() + FINISH_GRACE).into());
                        continue;
                    }
                    () = &mut stall => {
                        return if finishing {
                            Left::Cancelled
                        } else {
                            Left::Failed(ErrorKind::Timeout)
                        };
                    }
                    frame = connection.next() => frame,
                };
                // Re-arming the stall timer costs a timer-wheel update: do
                // it at most once a second (the timeout is then 30 to 31 s).
                let now = Instant::now();
                if !finishing && now - stall_armed >= Duration::from_secs(1) {
                    stall_armed = now;
                    stall.as_mut().reset((stall_armed + STALL_TIMEOUT).into());
                }
                self.recorder.flush_if_due(now);
                frame
            };
            let frame = match frame {
                Ok(frame) => frame,
                // A WebSocket over the limit is upgraded, then closed 1013.
                Err(ClientError::Shed { retry_after, .. }) => return Left::Shed(retry_after),
                Err(e) => {
                    tracing::debug!(client = self.id, error = %e, "stream failed");
                    return Left::Failed(e.kind());
                }
            };
            let (envelope, bytes, received_us) = match frame {
                Frame::KeepAlive => {
                    self.recorder.count(|c| c.keepalives += 1);
                    continue;
                }
                Frame::End => match self.spec.stream.length() {
                    Some(length) => {
                        // A stream that ends early lost the rest.
                        let missing = check.short_of(length);
                        self.recorder.count(|c| c.gaps += missing);
                        return Left::Completed;
                    }
                    None => return Left::Failed(ErrorKind::Closed),
                },
                Frame::Event {
                    envelope,
                    bytes,
                    received_us,
                } => (envelope, bytes, received_us),
            };
            if let Some(gap) = envelope.gap {
                let kind = match gap.reason {
                    GapReason::BeyondHead => NoticeKind::Rewound,
                    GapReason::Skipped => NoticeKind::Skipped,
                };
                check.notice(kind, gap.from, gap.to);
                self.recorder.count(|c| c.gap_notices += 1);
                continue;
            }
            if envelope.end.is_some() {
                // The server ends a stream that should have gone on.
                return Left::Failed(ErrorKind::Closed);
            }
            let (Some(seq), Some(ts)) = (envelope.seq, envelope.ts) else {
                // Every event of PROTOCOL.md carries both.
                return Left::Failed(ErrorKind::Protocol);
            };
            match check.observe(seq) {
                Seen::Next => {}
                Seen::Gap { missing } => self.recorder.count(|c| c.gaps += missing),
                Seen::Duplicate => self.recorder.count(|c| c.dups += 1),
            }
            if first {
                first = false;
                self.recorder
                    .sample(Sample::FirstEvent, micros(requested.elapsed()));
                if let Some(left) = resuming_since.take() {
                    self.recorder.sample(Sample::Resume, micros(left.elapsed()));
                }
            }
            let since = |time: u64| received_us.saturating_sub(time);
            self.recorder.event(bytes, since(ts));
            if let Some(pts) = envelope.pts {
                self.recorder.sample(Sample::FromPublish, since(pts));
            }
            if let Some(sent) = envelope.data.0 {
                self.recorder.sample(Sample::EndToEnd, since(sent));
            }
            if !self.spec.consumer_delay.is_zero() {
                tokio::select! {
                    () = &mut cancelled, if !finite => return Left::Cancelled,
                    () = sleep(self.spec.consumer_delay) => {}
                }
            }
            if !finishing && churn_at.is_some_and(|at| Instant::now() >= at) {
                return Left::Churned;
            }
        }
    }
}

/// `duration` in whole µs.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_protocol() {
        let ticker = StreamPath::Ticker {
            rate: 0,
            size: 8,
            count: 0,
        };
        assert_eq!(
            ticker.path(Transport::Ws, None),
            "/ws/ticker?rate=0&count=0&size=8"
        );
        assert_eq!(ticker.length(), None);
        let counted = StreamPath::Ticker {
            rate: 5,
            size: 8,
            count: 40,
        };
        assert_eq!(
            counted.path(Transport::Sse, None),
            "/sse/ticker?rate=5&count=40&size=8"
        );
        assert_eq!(counted.length(), Some(40));
        let topic = StreamPath::Topic {
            name: "t".to_owned(),
        };
        assert_eq!(
            topic.path(Transport::Sse, Some(41)),
            "/sse/topics/t?since=41"
        );
        assert_eq!(topic.path(Transport::Ws, None), "/ws/topics/t");
        assert!(topic.resumes() && topic.length().is_none());
        let tokens = StreamPath::Tokens {
            ttft_ms: 200,
            tps: 50,
            tokens: 3,
        };
        assert_eq!(
            tokens.path(Transport::Sse, None),
            "/sse/tokens?ttft_ms=200&tps=50&tokens=3"
        );
        assert_eq!(tokens.length(), Some(3));
    }

    #[tokio::test]
    async fn loopback_clients_spread_over_source_addresses() {
        let target = Target::resolve("http://127.0.0.1:9").await.unwrap();
        let sources: std::collections::HashSet<_> = (0..64).map(|id| target.source(id)).collect();
        assert_eq!(sources.len(), usize::from(LOOPBACK_SOURCES));
        assert!(Target::resolve("127.0.0.1:9").await.is_err());
        assert!(Target::resolve("http://127.0.0.1:9/path").await.is_err());
    }

    #[tokio::test]
    async fn a_host_of_several_addresses_is_reached_at_the_one_that_accepts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        // A loopback address nobody listens on at that port, first.
        let closed = SocketAddr::new(Ipv4Addr::new(127, 0, 0, 2).into(), open.port());
        assert_eq!(Target::first_accepting(&[closed, open]).await, Some(open));
        assert_eq!(Target::first_accepting(&[closed]).await, Some(closed));
        assert_eq!(Target::first_accepting(&[]).await, None);
    }
}
