//! Virtual clients: one loop for every scenario. A client connects (SSE or
//! WebSocket, plain or TLS), reads messages, checks each sequence number
//! for gaps and duplicates, records latency from the time a message
//! carries (and, on topics, from the publisher's intended send time),
//! spends its consumer delay, churns when its time comes, and reconnects
//! after a failure with a backoff. With per-user tokens it holds its own
//! JWT ([`jwt`]), renews it before it expires (on the live WebSocket, or by
//! reopening an SSE stream where it left off) and counts what the server
//! refused. What it streams is data
//! ([`StreamPath`]: this project's endpoints, or a foreign target); how it
//! reads is the same for all, each message read as the target's format
//! says ([`format`]).

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::metrics::auth::{Ended, Refusal};
use crate::metrics::{ErrorKind, Recorder, Sample};
use crate::scenario::target::{Invalid, TargetSpec};
use crate::scenario::{Scenario, StreamKind, Transport};

pub mod check;
pub mod envelope;
pub mod foreign;
pub mod format;
pub mod http;
pub mod jwt;
pub mod pointer;
pub mod pool;
pub mod read_buffer;
pub mod request;
pub mod socket;
pub mod sse;
pub mod sse_parser;
pub mod stream;
pub mod target;
pub mod tls;
pub mod ws;

use self::check::{NoticeKind, Seen, SeqCheck};
use self::envelope::{Envelope, GapReason};
use self::foreign::{ForeignPath, Generation, Piece};
use self::format::{Decoder, Message};
use self::jwt::{Credential, Grants, Minter};
use self::request::Request;
pub use self::stream::{ClientError, Frame, adjust_clock, micros, now_micros};
use self::target::CONNECT_TIMEOUT;
pub use self::target::Target;
use self::tls::Connector;

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

/// An open stream on either transport.
#[derive(Debug)]
pub enum Connection {
    /// Server-Sent Events.
    Sse(sse::SseStream),
    /// WebSocket.
    Ws(ws::WsStream),
}

impl Connection {
    /// Opens `request` on `target` for client `id`, as `spec` says (its
    /// transport, format and TLS).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn open(
        target: &Target,
        id: usize,
        spec: &ClientSpec,
        request: &Request,
    ) -> Result<Self, ClientError> {
        let stream = target.connect(id, spec.tls.as_ref()).await?;
        let format = spec.decoder.clone();
        Ok(match spec.transport_of(id) {
            Transport::Ws => {
                Connection::Ws(ws::WsStream::open(stream, &target.host, request, format).await?)
            }
            // `transport_of` never gives `Mixed`.
            Transport::Sse | Transport::Mixed => Connection::Sse(
                sse::SseStream::open(stream, &target.host, request, format, spec.tls.as_ref())
                    .await?,
            ),
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

    /// Whether a token is renewed on this stream itself (a WebSocket of
    /// this project's protocol: a refresh frame), rather than by opening
    /// the stream again with a fresh one.
    fn refreshes_in_band(&self) -> bool {
        matches!(self, Connection::Ws(ws) if !ws.is_foreign())
    }

    /// The start of the last message the target's format could not read.
    fn take_unparsed(&mut self) -> Option<String> {
        match self {
            Connection::Sse(sse) => sse.take_unparsed(),
            Connection::Ws(ws) => ws.take_unparsed(),
        }
    }

    /// The id of the last SSE event received (`Last-Event-ID` to resume
    /// with), if the stream sent ids.
    fn last_event_id(&self) -> Option<Vec<u8>> {
        match self {
            Connection::Sse(sse) => Some(sse.last_event_id())
                .filter(|id| !id.is_empty())
                .map(<[u8]>::to_vec),
            Connection::Ws(_) => None,
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
    /// A foreign target's stream.
    Foreign(Box<ForeignPath>),
}

impl StreamPath {
    /// What `scenario` streams at `rate` per client; `name` names its
    /// topic or wallet.
    ///
    /// # Errors
    ///
    /// The scenario's foreign target is not valid (a validated scenario's
    /// always is).
    pub fn of(scenario: &Scenario, name: &str, rate: u64) -> Result<Self, Invalid> {
        if let Some(spec) = scenario.target_spec().map_err(|e| Invalid {
            key: "target",
            message: e.message,
        })? {
            return Ok(Self::of_target(scenario, spec, name));
        }
        Ok(match scenario.stream {
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
        })
    }

    /// `scenario`'s foreign target `spec`, its topic the target's own or
    /// `name`.
    fn of_target(scenario: &Scenario, spec: TargetSpec, name: &str) -> Self {
        let topic = spec.topic.clone().unwrap_or_else(|| name.to_owned());
        StreamPath::Foreign(Box::new(ForeignPath {
            spec,
            topic,
            request_interval: (scenario.request_rate > 0.0)
                .then(|| Duration::from_secs_f64(1.0 / scenario.request_rate)),
        }))
    }

    /// The request client `id` sends on `transport`. A topic subscriber
    /// resumes after `since`; without it (its first subscription) it takes
    /// the live tail, so that no client replays the history published
    /// before it came. A foreign SSE stream resumes after
    /// `last_event_id`.
    fn request(
        &self,
        id: usize,
        transport: Transport,
        since: Option<u64>,
        last_event_id: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Request {
        match self {
            StreamPath::Foreign(foreign) => foreign.request(id, last_event_id, token),
            project => Request::get(project.path(transport, since), token),
        }
    }

    /// The request path on `transport` of this project's streams.
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
            StreamPath::Foreign(foreign) => foreign.spec.subscribe_url.source().to_owned(),
        }
    }

    /// The events a stream of this kind delivers before it ends by itself
    /// (then the client asks for another); `None` for the endless ones and
    /// those whose length is not known.
    fn length(&self) -> Option<u64> {
        match self {
            StreamPath::Tokens { tokens, .. } => Some(*tokens),
            StreamPath::Replay { rows, .. } => Some(*rows),
            StreamPath::Ticker { count, .. } => (*count > 0).then_some(*count),
            StreamPath::Topic { .. } | StreamPath::Foreign(_) => None,
        }
    }

    /// Whether a stream ends by itself (then the client asks again): of a
    /// known length, or a foreign one with an end marker.
    fn is_finite(&self) -> bool {
        match self {
            StreamPath::Foreign(foreign) => foreign.spec.is_finite(),
            other => other.length().is_some(),
        }
    }

    /// Whether a reconnecting client resumes where it stopped (topics);
    /// the others start a new stream at `seq` 1. A foreign SSE stream
    /// resumes when it sent event ids.
    fn resumes(&self) -> bool {
        matches!(self, StreamPath::Topic { .. })
    }

    /// The topic it reads, if it reads one (what a client's token must
    /// allow it to subscribe to).
    pub fn topic(&self) -> Option<&str> {
        match self {
            StreamPath::Topic { name } => Some(name),
            StreamPath::Foreign(foreign) => Some(&foreign.topic),
            _ => None,
        }
    }

    /// What a client's token allows: reading its topic, if any.
    pub fn grants(&self) -> Grants {
        Grants {
            subscribe: self.topic().map(str::to_owned).into_iter().collect(),
            publish: Vec::new(),
        }
    }

    /// The foreign target, if it is one.
    fn foreign(&self) -> Option<&ForeignPath> {
        match self {
            StreamPath::Foreign(foreign) => Some(foreign),
            _ => None,
        }
    }
}

/// One agent of a run over several (`runner::agents`): the publishes its
/// own publishers send are publish `k` (from 0) for `k` modulo `of` equal
/// to `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// This agent's number, from 0.
    pub index: u32,
    /// How many agents the run has.
    pub of: u32,
}

impl Agent {
    /// Whether the publish with the load generator's sequence number
    /// `seq` (from 1) is this agent's own.
    pub fn sent(self, seq: u64) -> bool {
        seq >= 1 && (seq - 1) % u64::from(self.of.max(1)) == u64::from(self.index)
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
    /// Bearer token for the requests, if the server wants one (when no
    /// token is minted).
    pub token: Option<String>,
    /// Mints each client's own token (per-user tokens), if the run does.
    pub minter: Option<Arc<Minter>>,
    /// Topics: the last seq a subscriber must hold when the run ends (the
    /// runner sets it before stopping the clients; 0 until then).
    pub settled: Arc<AtomicU64>,
    /// The server nodes the run spreads its clients and publishes over:
    /// with more than one, publish-to-receive is also recorded apart for
    /// events published on the client's own node and on another.
    pub nodes: usize,
    /// On a run over several agents, this agent: end-to-end latency (from
    /// a publish's intended send time) is measured only for events this
    /// agent's own publishers sent, on this machine's clock.
    pub agent: Option<Agent>,
    /// How each message is read (the stream's format).
    pub decoder: Decoder,
    /// TLS, for an `https://` or `wss://` target.
    pub tls: Option<Connector>,
}

impl ClientSpec {
    /// A spec for `stream` on `transport`, its format's decoder and, for a
    /// TLS target, its TLS connector made; each client sends `token`, or
    /// its own from `minter`.
    ///
    /// # Errors
    ///
    /// The TLS settings cannot be used (a CA file that cannot be read).
    pub fn new(
        transport: Transport,
        stream: StreamPath,
        consumer_delay: Duration,
        churn: f64,
        token: Option<String>,
        minter: Option<Arc<Minter>>,
        nodes: usize,
    ) -> Result<Self, tls::Error> {
        let (decoder, tls) = match stream.foreign() {
            Some(foreign) => (
                Decoder::of(&foreign.spec),
                foreign
                    .spec
                    .trust
                    .as_ref()
                    .map(Connector::new)
                    .transpose()?,
            ),
            None => (Decoder::streamgauge(), None),
        };
        Ok(Self {
            transport,
            stream,
            consumer_delay,
            churn,
            token,
            minter,
            settled: Arc::new(AtomicU64::new(0)),
            nodes,
            agent: None,
            decoder,
            tls,
        })
    }

    /// The transport client `id` uses: a foreign target's own, or the
    /// scenario's (never `Mixed`).
    fn transport_of(&self, id: usize) -> Transport {
        match self.stream.foreign() {
            Some(foreign) if foreign.spec.websocket => Transport::Ws,
            Some(_) => Transport::Sse,
            None => self.transport.for_client(id),
        }
    }

    /// Whether the load generator publishes what a foreign target delivers
    /// (its time is then the intended send time: end to end).
    fn publishes_foreign(&self) -> bool {
        self.stream
            .foreign()
            .is_some_and(|f| f.spec.publish.is_some())
    }
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
    /// Its token is due for renewal, by opening the stream again.
    Renew,
    /// The server ended it because of its token.
    Ended(Ended),
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
    /// The server node it connects to, from 0 (`target`).
    pub node: usize,
    /// How it behaves.
    pub spec: Arc<ClientSpec>,
    /// Where it connects.
    pub target: Arc<Target>,
    /// Where it records.
    pub recorder: Recorder,
}

/// One stream being read: what its messages are checked against, and when
/// it was asked for.
struct Reading {
    /// Gaps and duplicates.
    check: SeqCheck,
    /// When the request went out (its intended time, on an open-model
    /// schedule), and the same in µs since the Unix epoch.
    requested: Instant,
    requested_us: u64,
    /// No event yet on this stream.
    first: bool,
    /// Churn: when the client left its previous stream, until the first
    /// event of this one.
    resuming_since: Option<Instant>,
    /// `openai`: what the request delivered.
    generation: Generation,
    /// The client's own token, if it mints one (lent to the stream, which
    /// renews it).
    credential: Option<Credential>,
}

/// When a client's next request is due on an open-model schedule
/// (`request-rate`): every interval after the one before, whatever
/// happened to it.
struct Schedule {
    next: Option<Instant>,
    interval: Option<Duration>,
}

impl Schedule {
    /// Waits until the next request is due (unless cancelled) and gives
    /// the time it was due, which latency is measured from: a request that
    /// must wait for the one before counts the wait (no coordinated
    /// omission). Without a rate, now.
    async fn due(&mut self, cancel: &CancellationToken) -> Option<Instant> {
        let Some(interval) = self.interval else {
            return Some(Instant::now());
        };
        let due = *self.next.get_or_insert_with(|| {
            // Clients start spread over one interval, not all at once.
            Instant::now() + interval.mul_f64(fastrand::f64())
        });
        self.next = Some(due + interval);
        tokio::select! {
            () = cancel.cancelled() => None,
            () = sleep_until(due.into()) => Some(due),
        }
    }
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
        let mut last_event_id: Option<Vec<u8>> = None;
        let mut backoff = Backoff(Backoff::FIRST);
        let mut schedule = Schedule {
            next: None,
            interval: self.spec.stream.foreign().and_then(|f| f.request_interval),
        };
        let mut credential = (self.spec.minter.as_ref())
            .map(|minter| Credential::new(Arc::clone(minter), format!("client-{}", self.id)));
        // The stream was left to renew the token: the next open says
        // whether the server took the new one.
        let mut renewing = false;
        while !cancel.is_cancelled() {
            // Failures are flushed even while no event arrives (an outage).
            self.recorder.flush_if_due(Instant::now());
            let Some(requested) = schedule.due(&cancel).await else {
                break;
            };
            let requested_us = now_micros().saturating_sub(micros(requested.elapsed()));
            // A foreign stream resuming by its last event id goes on with
            // its check; without one, it starts wherever it starts.
            let resuming = last_event_id.is_some();
            if self.spec.stream.foreign().is_some() && !resuming {
                check = SeqCheck::from_first();
            }
            if let Some(credential) = &mut credential {
                credential.renew_if_due(Instant::now());
            }
            let token = (credential.as_ref())
                .map(Credential::token)
                .or(self.spec.token.as_deref());
            let request = self.spec.stream.request(
                self.id,
                self.spec.transport.for_client(self.id),
                check.last().filter(|_| resumes),
                last_event_id.take(),
                token,
            );
            let open = Connection::open(&self.target, self.id, &self.spec, &request);
            let opened = tokio::select! {
                () = self.open_cut(&cancel) => break,
                opened = timeout(CONNECT_TIMEOUT, open) => opened,
            };
            // Counted once settled: an attempt the end of the run cut short
            // (an endless stream's, or one over its grace) neither succeeded
            // nor failed.
            self.recorder.count(|c| c.connects += 1);
            let renewed = std::mem::take(&mut renewing);
            if let Ok(result) = &opened {
                self.renewal_settled(result.as_ref().err(), renewed);
            }
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
            if !resumes && self.spec.stream.foreign().is_none() {
                check = SeqCheck::expecting(1);
            }
            let mut reading = Reading {
                check,
                requested,
                requested_us,
                first: true,
                resuming_since: left_at.take(),
                generation: Generation::default(),
                credential: credential.take(),
            };
            let (left, resume_id) = self.read(connection, &mut reading, &cancel).await;
            check = reading.check;
            credential = reading.credential;
            // A WebSocket over the limit is upgraded, then closed 1013: shed,
            // not connected.
            if !matches!(left, Left::Shed(_)) {
                self.recorder.sample(Sample::Connect, connect_us);
                if let Some(us) = reconnect_us {
                    self.recorder.sample(Sample::Reconnect, us);
                }
            }
            if !matches!(left, Left::Completed) {
                last_event_id = resume_id;
            }
            match left {
                Left::Cancelled => break,
                Left::Completed => self.complete(&reading.generation),
                Left::Churned => {
                    left_at = Some(Instant::now());
                    self.recorder.count(|c| c.reconnects += 1);
                }
                Left::Shed(retry_after) => self.shed(retry_after, &cancel).await,
                // Opened again at once, where it left off, with a fresh
                // token.
                Left::Renew => renewing = true,
                Left::Ended(reason) => self.recorder.count(|c| c.auth.ended(reason)),
                Left::Failed(kind) => self.fail(kind, &mut backoff, &cancel).await,
            }
            if matches!(left, Left::Renew | Left::Ended(_))
                && let Some(credential) = &mut credential
            {
                credential.renew();
            }
        }
        if (resumes || self.spec.publishes_foreign()) && check.last().is_some() {
            let settled = self.spec.settled.load(Ordering::Acquire);
            let behind = check.short_of(settled);
            self.recorder.count(|c| c.behind_at_end += behind);
        }
        self.recorder.flush();
    }

    /// Counts what an open that settled says of the credential: a refusal
    /// and its reason (`error`), and, when it opened again to renew the
    /// token (`renewed`), whether the server took the new one.
    fn renewal_settled(&mut self, error: Option<&ClientError>, renewed: bool) {
        let refused = match error {
            Some(ClientError::Refused { reason, .. }) => Some(*reason),
            _ => None,
        };
        self.recorder.count(|c| {
            if let Some(reason) = refused {
                c.auth.refused(reason);
            }
            match (renewed, error, refused) {
                (true, None, _) => c.auth.token_refreshes += 1,
                (true, _, Some(_)) => c.auth.refreshes_refused += 1,
                _ => {}
            }
        });
    }

    /// Counts a stream that ended as it should, and what an OpenAI-style
    /// request generated.
    fn complete(&mut self, generation: &Generation) {
        self.recorder.count(|c| c.completed += 1);
        if self
            .spec
            .stream
            .foreign()
            .is_some_and(|f| f.spec.format == crate::scenario::target::Format::Openai)
        {
            let tokens = generation.tokens();
            self.recorder.count(|c| c.tokens += tokens);
            if let Some(us) = generation.time_per_token_us() {
                self.recorder.sample(Sample::TokenTime, us);
            }
        }
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
        if self.spec.stream.is_finite() {
            sleep(OPEN_GRACE).await;
        }
    }

    /// Reads one stream until it ends, fails, churns or is cancelled; also
    /// gives back the id of the last SSE event it received, to resume
    /// with.
    async fn read(
        &mut self,
        mut connection: Connection,
        reading: &mut Reading,
        cancel: &CancellationToken,
    ) -> (Left, Option<Vec<u8>>) {
        let left = self.read_frames(&mut connection, reading, cancel).await;
        (left, connection.last_event_id())
    }

    /// [`VirtualClient::read`]'s loop.
    async fn read_frames(
        &mut self,
        connection: &mut Connection,
        reading: &mut Reading,
        cancel: &CancellationToken,
    ) -> Left {
        let churn_at = self.next_churn();
        let finite = self.spec.stream.is_finite();
        // A token is renewed on a WebSocket of this protocol itself; other
        // endless streams are opened again with a fresh one; a finite
        // stream is read to its end, and the next one gets a fresh token.
        let in_band = connection.refreshes_in_band();
        let renews = in_band || !finite;
        let due = |reading: &Reading| {
            (reading.credential.as_ref())
                .and_then(Credential::due)
                .filter(|_| renews)
        };
        // A refresh in flight is answered before the stream is left (for
        // churn or the run's end): its answer would be lost, and the
        // server would have counted a refresh the client did not.
        let refreshing =
            |reading: &Reading| (reading.credential.as_ref()).is_some_and(Credential::in_flight);
        let mut renew_at = due(reading);
        let mut renew = pin!(sleep_until(renew_at.unwrap_or_else(Instant::now).into()));
        let mut stall = pin!(sleep(STALL_TIMEOUT));
        let mut stall_armed = Instant::now();
        // Once cancelled, a finite stream is read to its end, an endless
        // one until its refresh in flight is answered (the stall timer then
        // bounds it by FINISH_GRACE).
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
                let due_now = due(reading);
                if due_now != renew_at {
                    if let Some(at) = due_now {
                        renew.as_mut().reset(at.into());
                    }
                    renew_at = due_now;
                }
                let frame = tokio::select! {
                    biased;
                    () = &mut cancelled, if !finishing => {
                        if !finite && !refreshing(reading) {
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
                    () = &mut renew, if renew_at.is_some() && !finishing => {
                        if !in_band {
                            return Left::Renew;
                        }
                        if let Err(left) = refresh(connection, reading.credential.as_mut()).await {
                            return left;
                        }
                        continue;
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
                Err(ClientError::Ended(reason)) => return Left::Ended(reason),
                Err(e) => {
                    tracing::debug!(client = self.id, error = %e, "stream failed");
                    return Left::Failed(e.kind());
                }
            };
            let (message, bytes, received_us) = match frame {
                Frame::KeepAlive => {
                    self.recorder.count(|c| c.keepalives += 1);
                    continue;
                }
                Frame::End => {
                    if !finite {
                        return Left::Failed(ErrorKind::Closed);
                    }
                    // A stream that ends early lost the rest.
                    if let Some(length) = self.spec.stream.length() {
                        let missing = reading.check.short_of(length);
                        self.recorder.count(|c| c.gaps += missing);
                    }
                    return Left::Completed;
                }
                Frame::Event {
                    message,
                    bytes,
                    received_us,
                } => (message, bytes, received_us),
            };
            let event = Event { bytes, received_us };
            let counted = match message {
                Message::Envelope(envelope) => match self.envelope(envelope, event, reading) {
                    Ok(counted) => counted,
                    Err(left) => return left,
                },
                Message::Found { seq, ts_us } => self.found(seq, ts_us, event, reading),
                Message::Counted => {
                    self.recorder.event_untimed(bytes);
                    true
                }
                Message::Chunk {
                    content,
                    completion_tokens,
                    ts_us,
                } => self.chunk(content, completion_tokens, ts_us, event, reading),
                Message::Unparsed => {
                    let example = if self.recorder.wants_example() {
                        connection.take_unparsed()
                    } else {
                        None
                    };
                    self.recorder.unparsed(example);
                    false
                }
                // Streams turn these into frames, or pass over them.
                Message::End | Message::Skipped => false,
            };
            if counted && std::mem::take(&mut reading.first) {
                if self.spec.stream.foreign().is_none() {
                    self.recorder
                        .sample(Sample::FirstEvent, micros(reading.requested.elapsed()));
                }
                if let Some(left) = reading.resuming_since.take() {
                    self.recorder.sample(Sample::Resume, micros(left.elapsed()));
                }
            }
            if !self.spec.consumer_delay.is_zero() {
                tokio::select! {
                    () = &mut cancelled, if !finite && !finishing => return Left::Cancelled,
                    () = sleep(self.spec.consumer_delay) => {}
                }
            }
            if finishing && !finite && !refreshing(reading) {
                return Left::Cancelled;
            }
            if !finishing && churn_at.is_some_and(|at| Instant::now() >= at) && !refreshing(reading)
            {
                return Left::Churned;
            }
        }
    }

    /// Records an event or notice of this project's protocol; whether it
    /// was an event, or how the stream ends.
    fn envelope(
        &mut self,
        envelope: Envelope,
        event: Event,
        reading: &mut Reading,
    ) -> Result<bool, Left> {
        if (envelope.refreshed.is_some() || envelope.error.is_some())
            && self.refresh_answer(&envelope, reading.credential.as_mut())
        {
            return Ok(false);
        }
        if let Some(gap) = envelope.gap {
            let kind = match gap.reason {
                GapReason::BeyondHead => NoticeKind::Rewound,
                GapReason::Skipped => NoticeKind::Skipped,
            };
            reading.check.notice(kind, gap.from, gap.to);
            self.recorder.count(|c| c.gap_notices += 1);
            return Ok(false);
        }
        if let Some(end) = envelope.end {
            // The server ends a stream that should have gone on: because
            // of its token, or a failure.
            return Err(end
                .reason
                .ended()
                .map_or(Left::Failed(ErrorKind::Closed), Left::Ended));
        }
        let (Some(seq), Some(ts)) = (envelope.seq, envelope.ts) else {
            // Every event of the protocol (docs/protocol.md) carries both.
            return Err(Left::Failed(ErrorKind::Protocol));
        };
        self.observe(seq, &mut reading.check);
        let since = |time: u64| event.received_us.saturating_sub(time);
        self.recorder.event(event.bytes, since(ts));
        if let Some(sched) = envelope.sched {
            self.recorder.sample(Sample::ScheduleLag, since(sched));
        }
        if let Some(pts) = envelope.pts {
            self.recorder.sample(Sample::FromPublish, since(pts));
            if let Some(from) = envelope.data.node.filter(|_| self.spec.nodes > 1) {
                let same = from as usize == self.node;
                let sample = if same {
                    Sample::SameNode
                } else {
                    Sample::CrossNode
                };
                self.recorder.sample(sample, since(pts));
            }
        }
        if let Some(sent) = envelope.data.sent_us
            && envelope.data.agent == self.spec.agent.map(|a| a.index)
        {
            self.recorder.sample(Sample::EndToEnd, since(sent));
            if let Some(pts) = envelope.pts {
                let overhead = pts.saturating_sub(sent);
                self.recorder.sample(Sample::PublishOverhead, overhead);
            }
        }
        Ok(true)
    }

    /// Counts the answer to the refresh in flight, if `envelope` is one:
    /// accepted, or refused and why. False if no refresh was in flight
    /// (then it is no answer of the client's).
    fn refresh_answer(&mut self, envelope: &Envelope, credential: Option<&mut Credential>) -> bool {
        let Some(credential) = credential else {
            return false;
        };
        if envelope.refreshed.is_some() && credential.accepted() {
            self.recorder.count(|c| c.auth.token_refreshes += 1);
            return true;
        }
        if envelope.error.is_some() && credential.refused() {
            let reason = envelope.reason.unwrap_or(Refusal::Other);
            self.recorder.count(|c| {
                c.auth.refreshes_refused += 1;
                c.auth.refused(reason);
            });
            return true;
        }
        false
    }

    /// Records a foreign JSON message: its sequence number checked, its
    /// time (when found) the delivery latency, and end to end when the
    /// load generator published it.
    fn found(
        &mut self,
        seq: Option<u64>,
        ts_us: Option<u64>,
        event: Event,
        reading: &mut Reading,
    ) -> bool {
        if let Some(seq) = seq {
            self.observe(seq, &mut reading.check);
        }
        match ts_us {
            Some(ts) => {
                let latency = event.received_us.saturating_sub(ts);
                self.recorder.event(event.bytes, latency);
                let own = (self.spec.agent).is_none_or(|a| seq.is_some_and(|s| a.sent(s)));
                if self.spec.publishes_foreign() && own {
                    self.recorder.sample(Sample::EndToEnd, latency);
                }
            }
            None => self.recorder.event_untimed(event.bytes),
        }
        true
    }

    /// Records an OpenAI-style chunk: a content piece's time to first
    /// token or inter-token latency, the output token count if given, and
    /// its delivery latency and the gap as written when the chunk says
    /// when it was sent.
    fn chunk(
        &mut self,
        content: bool,
        completion_tokens: Option<u64>,
        ts_us: Option<u64>,
        event: Event,
        reading: &mut Reading,
    ) -> bool {
        match ts_us {
            Some(ts) => self
                .recorder
                .event(event.bytes, event.received_us.saturating_sub(ts)),
            None => self.recorder.event_untimed(event.bytes),
        }
        if let Some(tokens) = completion_tokens {
            reading.generation.usage(tokens);
        }
        if content {
            match reading
                .generation
                .piece(reading.requested_us, event.received_us, ts_us)
            {
                Piece::First { ttft_us } => self.recorder.sample(Sample::FirstEvent, ttft_us),
                Piece::Next { itl_us, written_us } => {
                    self.recorder.sample(Sample::InterToken, itl_us);
                    if let Some(written) = written_us {
                        self.recorder.sample(Sample::InterTokenWritten, written);
                    }
                }
            }
        }
        true
    }

    /// Checks `seq`, counting a gap or a duplicate.
    fn observe(&mut self, seq: u64, check: &mut SeqCheck) {
        match check.observe(seq) {
            Seen::Next => {}
            Seen::Gap { missing } => self.recorder.count(|c| c.gaps += missing),
            Seen::Duplicate => self.recorder.count(|c| c.dups += 1),
        }
    }
}

/// Sends a refresh of `credential`'s token on `connection`, a WebSocket of
/// this protocol; the answer comes among the stream's frames.
async fn refresh(
    connection: &mut Connection,
    credential: Option<&mut Credential>,
) -> Result<(), Left> {
    let (Connection::Ws(ws), Some(credential)) = (connection, credential) else {
        return Ok(());
    };
    ws.send_text(credential.refresh_frame())
        .await
        .map_err(|e| Left::Failed(e.kind()))
}

/// A message's size and receipt time.
#[derive(Debug, Clone, Copy)]
struct Event {
    /// Its bytes on the wire (the data).
    bytes: usize,
    /// When it arrived, µs since the Unix epoch.
    received_us: u64,
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
}
