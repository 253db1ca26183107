//! Virtual clients: one loop for every scenario. A client connects (SSE or
//! WebSocket), reads events, checks each `seq` for gaps and duplicates,
//! records latency from `ts` (and, on topics, from the publisher's intended
//! send time), spends its consumer delay, churns when its time comes, and
//! reconnects after a failure with a backoff. What it streams is data
//! ([`StreamPath`]); how it reads is the same for all.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::metrics::{ErrorKind, Recorder, Sample};
use crate::scenario::{Scenario, StreamKind, Transport};

pub mod check;
pub mod envelope;
pub mod http;
pub mod read_buffer;
pub mod sse;
pub mod sse_parser;
pub mod stream;
pub mod target;
pub mod ws;

use self::check::{NoticeKind, Seen, SeqCheck};
use self::envelope::GapReason;
pub use self::stream::{ClientError, Frame, micros, now_micros};
use self::target::CONNECT_TIMEOUT;
pub use self::target::Target;

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
    /// The server nodes the run spreads its clients and publishes over:
    /// with more than one, publish-to-receive is also recorded apart for
    /// events published on the client's own node and on another.
    pub nodes: usize,
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
    /// The server node it connects to, from 0 (`target`).
    pub node: usize,
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
                // Every event of the protocol (docs/protocol.md) carries both.
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
            if let Some(sent) = envelope.data.sent_us {
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
