//! What a run measures. Clients record into a [`Recorder`] of their own (a
//! small buffer, no lock per event) that flushes into one of a few shared
//! shards; once a second the runner takes every shard's [`Stats`] for the
//! timeline and adds them to the run's totals. HDR histograms merge
//! exactly, so nothing is averaged on the way.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use self::auth::AuthCounts;

pub mod auth;
pub mod monitor;
pub mod timeline;
pub mod watch;
pub mod wire;

/// A failure, sorted as `summary.json` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection (TCP, HTTP head, WebSocket handshake) failed.
    Connect,
    /// The server answered with an unexpected HTTP status.
    HttpStatus,
    /// Malformed bytes: HTTP, SSE, WebSocket or JSON.
    Protocol,
    /// Nothing arrived for too long, or the server could not keep up.
    Timeout,
    /// The server ended a stream that should have gone on.
    Closed,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Connect,
        ErrorKind::HttpStatus,
        ErrorKind::Protocol,
        ErrorKind::Timeout,
        ErrorKind::Closed,
    ];

    /// The key in `summary.json` (`errors.connect`, …).
    pub fn key(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Auto-resizing, 3 significant digits: memory follows the range seen.
    Histogram::new(3).expect("3 significant digits is a valid histogram")
}

/// What the misbehaving clients of one kind met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseCounts {
    /// Attempts made.
    pub attempts: u64,
    /// Attempts the server answered as its limits say it does.
    pub refused: u64,
    /// Attempts answered any other way (served, or refused otherwise).
    pub unexpected: u64,
}

impl AbuseCounts {
    fn add(&mut self, other: &AbuseCounts) {
        self.attempts += other.attempts;
        self.refused += other.refused;
        self.unexpected += other.unexpected;
    }
}

/// Counters of one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Events received.
    pub events: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Events that never came (by `seq`).
    pub gaps: u64,
    /// Events that came twice.
    pub dups: u64,
    /// Gap notices the server sent.
    pub gap_notices: u64,
    /// Keep-alives received.
    pub keepalives: u64,
    /// Connection attempts that settled, every reconnect included (an
    /// attempt the end of the run cut short is not one).
    pub connects: u64,
    /// Publish requests (topics).
    pub publishes: u64,
    /// Streams that ended as they should (tokens, replay).
    pub completed: u64,
    /// Resumes after churn.
    pub reconnects: u64,
    /// Streams the server shed (503 / 429 / 1013): refused by design, not
    /// errors.
    pub shed: u64,
    /// Publishes the server shed (503 / 429): nothing stored, not errors.
    pub publishes_shed: u64,
    /// Events published (acknowledged).
    pub published: u64,
    /// Topics: events acknowledged well before the end that subscribers
    /// had still not received when it came.
    pub behind_at_end: u64,
    /// Output tokens of OpenAI-style requests completed (the server's
    /// count where it gave one, else the content pieces).
    pub tokens: u64,
    /// Messages of a foreign target its format could not read (not JSON,
    /// or without a pointer's field): counted per message, apart from the
    /// failed requests in `errors`.
    pub unparsed: u64,
    /// Connection attempts this machine refused (open files, ports): the
    /// load generator's limits, not the server's. Also counted in `errors`.
    pub local_limits: u64,
    /// Failures by [`ErrorKind`], in [`ErrorKind::ALL`] order.
    pub errors: [u64; 5],
    /// Misbehaving clients, by kind in `AbuseKind::ALL` order: kept apart
    /// from everything above, which well-behaved clients count.
    pub abuse: [AbuseCounts; 5],
    /// Credentials: refusals by reason, tokens renewed, streams ended
    /// because of their token.
    pub auth: AuthCounts,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.events += other.events;
        self.bytes += other.bytes;
        self.gaps += other.gaps;
        self.dups += other.dups;
        self.gap_notices += other.gap_notices;
        self.keepalives += other.keepalives;
        self.connects += other.connects;
        self.publishes += other.publishes;
        self.completed += other.completed;
        self.reconnects += other.reconnects;
        self.shed += other.shed;
        self.publishes_shed += other.publishes_shed;
        self.published += other.published;
        self.behind_at_end += other.behind_at_end;
        self.tokens += other.tokens;
        self.unparsed += other.unparsed;
        self.local_limits += other.local_limits;
        for (into, from) in self.errors.iter_mut().zip(other.errors) {
            *into += from;
        }
        for (into, from) in self.abuse.iter_mut().zip(&other.abuse) {
            into.add(from);
        }
        self.auth.add(&other.auth);
    }

    /// All failures.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Which histogram a sample goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// Delivery latency: receipt − `ts`.
    Latency,
    /// Receipt − the publisher's intended send time (topic events).
    EndToEnd,
    /// Receipt − `pts`, the server's accepting of the publish (topic events).
    FromPublish,
    /// [`Sample::FromPublish`] of an event published on the node that
    /// delivered it (runs over several nodes).
    SameNode,
    /// [`Sample::FromPublish`] of an event published on another node than
    /// the one that delivered it (runs over several nodes).
    CrossNode,
    /// Connection set-up.
    Connect,
    /// Request to first event of a stream (time to first token / row).
    FirstEvent,
    /// Churn: leaving a stream to having it open again (response head or
    /// handshake of the resumed stream).
    Reconnect,
    /// Publishes: intended send time to `201`.
    Publish,
    /// Churn: leaving a stream to the first event after resuming it.
    Resume,
    /// OpenAI-style streams: a content piece's receipt − the one before's.
    InterToken,
    /// OpenAI-style streams: a request's decode time per output token
    /// after the first.
    TokenTime,
    /// OpenAI-style streams whose chunks say when they were written: a
    /// content piece's `ts` − the one before's.
    InterTokenWritten,
    /// Schedule lag: receipt − `sched`, when the server's pacer meant the
    /// event to go out (paced ticker and token events).
    ScheduleLag,
    /// The publisher's own overhead: `pts` − the publisher's intended send
    /// time (topic events), what the instrument adds before the server has
    /// the publish.
    PublishOverhead,
}

/// Everything measured over some interval. Every histogram is in µs.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Delivery latency: receipt − `ts`.
    pub latency: Histogram<u64>,
    /// Topic events: receipt − the publisher's intended send time.
    pub end_to_end: Histogram<u64>,
    /// Topic events: receipt − `pts`.
    pub from_publish: Histogram<u64>,
    /// Topic events published on the node that delivered them: receipt −
    /// `pts` (runs over several nodes).
    pub same_node: Histogram<u64>,
    /// Topic events published on another node than the one that delivered
    /// them: receipt − `pts` (runs over several nodes).
    pub cross_node: Histogram<u64>,
    /// Connection set-up.
    pub connect: Histogram<u64>,
    /// Request to first event of a stream (time to first token / row).
    pub first_event: Histogram<u64>,
    /// Churn: leaving a stream to having it open again.
    pub reconnect: Histogram<u64>,
    /// Publishes: intended send time to `201`.
    pub publish: Histogram<u64>,
    /// Churn: leaving a stream to the first event after resuming it.
    pub resume: Histogram<u64>,
    /// OpenAI-style streams: receipt of a content piece − the one before's.
    pub inter_token: Histogram<u64>,
    /// OpenAI-style streams: each request's decode time per output token
    /// after the first.
    pub token_time: Histogram<u64>,
    /// OpenAI-style streams whose chunks say when they were written: a
    /// content piece's `ts` − the one before's (the inter-token latency
    /// as the server wrote it).
    pub inter_token_written: Histogram<u64>,
    /// Paced ticker and token events: receipt − `sched` (schedule lag).
    pub schedule_lag: Histogram<u64>,
    /// Topic events: `pts` − the publisher's intended send time.
    pub publish_overhead: Histogram<u64>,
    /// The counters.
    pub counts: Counts,
    /// The start of the first message a foreign format could not read, for
    /// the report.
    pub unparsed_example: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: histogram(),
            end_to_end: histogram(),
            from_publish: histogram(),
            same_node: histogram(),
            cross_node: histogram(),
            connect: histogram(),
            first_event: histogram(),
            reconnect: histogram(),
            publish: histogram(),
            resume: histogram(),
            inter_token: histogram(),
            token_time: histogram(),
            inter_token_written: histogram(),
            schedule_lag: histogram(),
            publish_overhead: histogram(),
            counts: Counts::default(),
            unparsed_example: None,
        }
    }
}

impl Stats {
    /// The histograms' names, in [`Sample`] order (that of
    /// [`Stats::histograms`] and [`Stats::each`]).
    const NAMES: [&'static str; 15] = [
        "latency",
        "end_to_end",
        "from_publish",
        "same_node",
        "cross_node",
        "connect",
        "first_event",
        "reconnect",
        "publish",
        "resume",
        "inter_token",
        "token_time",
        "inter_token_written",
        "schedule_lag",
        "publish_overhead",
    ];

    /// Every histogram, in [`Sample`] order.
    fn each(&self) -> [&Histogram<u64>; 15] {
        [
            &self.latency,
            &self.end_to_end,
            &self.from_publish,
            &self.same_node,
            &self.cross_node,
            &self.connect,
            &self.first_event,
            &self.reconnect,
            &self.publish,
            &self.resume,
            &self.inter_token,
            &self.token_time,
            &self.inter_token_written,
            &self.schedule_lag,
            &self.publish_overhead,
        ]
    }

    /// Every histogram, in [`Sample`] order.
    fn histograms(&mut self) -> [&mut Histogram<u64>; 15] {
        [
            &mut self.latency,
            &mut self.end_to_end,
            &mut self.from_publish,
            &mut self.same_node,
            &mut self.cross_node,
            &mut self.connect,
            &mut self.first_event,
            &mut self.reconnect,
            &mut self.publish,
            &mut self.resume,
            &mut self.inter_token,
            &mut self.token_time,
            &mut self.inter_token_written,
            &mut self.schedule_lag,
            &mut self.publish_overhead,
        ]
    }

    fn record(&mut self, sample: Sample, micros: u64) {
        // `record` grows an auto-resizing histogram to fit the value (its
        // `saturating_record` would clamp it to the current range instead);
        // it fails only past 2^63 µs, which no measurement reaches.
        let _ = self.histograms()[sample as usize].record(micros);
    }

    /// Adds `other` into this.
    pub fn add(&mut self, other: &Stats) {
        for (into, from) in self.histograms().into_iter().zip(other.each()) {
            into.add(from)
                .expect("auto-resizing histograms always merge");
        }
        self.counts.add(&other.counts);
        if self.unparsed_example.is_none() {
            self.unparsed_example.clone_from(&other.unparsed_example);
        }
    }

    /// Whether it holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.counts == Counts::default()
            && self.unparsed_example.is_none()
            && self.each().iter().all(|h| h.is_empty())
    }

    /// Empties it, keeping the histograms' allocations.
    pub fn reset(&mut self) {
        for histogram in self.histograms() {
            histogram.reset();
        }
        self.counts = Counts::default();
        self.unparsed_example = None;
    }
}

/// The shards clients flush into; the runner drains them every second.
/// Each shard keeps one [`Stats`] per server node, so that a run over
/// several nodes has each node's figures at no cost per event (they are
/// merged only when drained).
#[derive(Debug)]
pub struct Shards {
    shards: Vec<Mutex<Vec<Stats>>>,
    nodes: usize,
}

impl Shards {
    /// `n` shards (at least one), for one server node.
    pub fn new(n: usize) -> Arc<Self> {
        Self::for_nodes(n, 1)
    }

    /// `n` shards (at least one), each keeping `nodes` nodes (at least one)
    /// apart.
    pub fn for_nodes(n: usize, nodes: usize) -> Arc<Self> {
        let nodes = nodes.max(1);
        Arc::new(Self {
            shards: (0..n.max(1))
                .map(|_| Mutex::new((0..nodes).map(|_| Stats::default()).collect()))
                .collect(),
            nodes,
        })
    }

    /// The server nodes kept apart.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Vec<Stats>> {
        self.shards[i % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `stats` of node `node`, measured elsewhere (a worker process),
    /// into shard `shard`: the next drain takes it with the rest.
    pub fn absorb(&self, shard: usize, node: usize, stats: &Stats) {
        self.lock(shard)[node % self.nodes].add(stats);
    }

    /// A recorder for client number `id`, of the first node.
    pub fn recorder(self: &Arc<Self>, id: usize) -> Recorder {
        self.recorder_for(id, 0)
    }

    /// A recorder for client number `id`, connected to node `node`.
    pub fn recorder_for(self: &Arc<Self>, id: usize, node: usize) -> Recorder {
        Recorder {
            shards: Arc::clone(self),
            shard: id,
            node: node % self.nodes,
            samples: Vec::new(),
            counts: Counts::default(),
            unparsed_example: None,
            last_flush: Instant::now(),
        }
    }

    /// Moves what every shard holds, every node's, into `into`, using
    /// `spare` (which comes back empty) to keep the time under each lock
    /// short.
    pub fn drain_into(&self, into: &mut Stats, spare: &mut Stats) {
        self.drain(spare, |_, stats| into.add(stats));
    }

    /// Moves what every shard holds into `into`, node `k`'s into `into[k]`
    /// (`into` has one [`Stats`] per node), using `spare` as
    /// [`Shards::drain_into`] does.
    pub fn drain_nodes(&self, into: &mut [Stats], spare: &mut Stats) {
        self.drain(spare, |node, stats| into[node].add(stats));
    }

    /// Takes each shard's stats of each node into `spare`, hands them to
    /// `take` and empties `spare` again.
    fn drain(&self, spare: &mut Stats, mut take: impl FnMut(usize, &Stats)) {
        for i in 0..self.shards.len() {
            for node in 0..self.nodes {
                std::mem::swap(&mut self.lock(i)[node], spare);
                take(node, spare);
                spare.reset();
            }
        }
    }
}

/// Most samples a recorder holds before flushing.
const FLUSH_SAMPLES: usize = 256;

/// Longest a recorder holds samples before flushing.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// One client's measurements, flushed into a shard now and then.
#[derive(Debug)]
pub struct Recorder {
    shards: Arc<Shards>,
    shard: usize,
    node: usize,
    samples: Vec<(Sample, u64)>,
    counts: Counts,
    /// An unparsed message's start, until flushed (once per flush at most).
    unparsed_example: Option<String>,
    last_flush: Instant,
}

impl Recorder {
    /// One event of `bytes` bytes, received `latency_us` after its `ts`.
    pub fn event(&mut self, bytes: usize, latency_us: u64) {
        self.event_untimed(bytes);
        self.sample(Sample::Latency, latency_us);
    }

    /// One event of `bytes` bytes whose delivery latency is not known.
    pub fn event_untimed(&mut self, bytes: usize) {
        self.counts.events += 1;
        self.counts.bytes += bytes as u64;
    }

    /// A message the target's format could not read, and its start if the
    /// stream kept it.
    pub fn unparsed(&mut self, example: Option<String>) {
        self.counts.unparsed += 1;
        if self.unparsed_example.is_none() {
            self.unparsed_example = example;
        }
    }

    /// Whether it wants an example of an unparsed message (none pending).
    pub fn wants_example(&self) -> bool {
        self.unparsed_example.is_none()
    }

    /// A sample for `histogram`, in µs.
    pub fn sample(&mut self, histogram: Sample, micros: u64) {
        self.samples.push((histogram, micros));
        if self.samples.len() >= FLUSH_SAMPLES {
            self.flush();
        }
    }

    /// Updates the pending counters.
    pub fn count(&mut self, update: impl FnOnce(&mut Counts)) {
        update(&mut self.counts);
    }

    /// A failure.
    pub fn error(&mut self, kind: ErrorKind) {
        self.counts.errors[kind as usize] += 1;
    }

    /// Flushes if, at `now`, the last flush is older than the flush
    /// interval.
    pub fn flush_if_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_flush) >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Moves everything pending into the shard.
    pub fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.samples.is_empty()
            && self.counts == Counts::default()
            && self.unparsed_example.is_none()
        {
            return;
        }
        let mut shard = self.shards.lock(self.shard);
        let node = &mut shard[self.node];
        for &(histogram, micros) in &self.samples {
            node.record(histogram, micros);
        }
        node.counts.add(&self.counts);
        if node.unparsed_example.is_none() {
            node.unparsed_example = self.unparsed_example.take();
        }
        drop(shard);
        self.samples.clear();
        self.counts = Counts::default();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_flush_into_shards_that_drain_exactly() {
        let shards = Shards::new(3);
        let mut recorders: Vec<Recorder> = (0..5).map(|id| shards.recorder(id)).collect();
        for (i, recorder) in recorders.iter_mut().enumerate() {
            for n in 0..1000u64 {
                recorder.event(10, n + i as u64);
                recorder.sample(Sample::EndToEnd, 5);
            }
            recorder.error(ErrorKind::Timeout);
            recorder.count(|c| c.gaps += 2);
            recorder.sample(Sample::Connect, 700);
        }
        drop(recorders);
        let (mut total, mut spare) = (Stats::default(), Stats::default());
        shards.drain_into(&mut total, &mut spare);
        assert_eq!(total.counts.events, 5000);
        assert_eq!(total.counts.bytes, 50_000);
        assert_eq!(total.latency.len(), 5000);
        assert_eq!(total.end_to_end.len(), 5000);
        assert_eq!(total.counts.gaps, 10);
        assert_eq!(total.connect.len(), 5);
        assert_eq!(total.counts.errors[ErrorKind::Timeout as usize], 5);
        assert_eq!(total.latency.max(), 1003);

        // Large samples are kept, not clamped to a histogram's first range.
        let mut recorder = shards.recorder(0);
        recorder.sample(Sample::Connect, 3_600_000_000);
        recorder.flush();
        let mut big = Stats::default();
        shards.drain_into(&mut big, &mut spare);
        assert!(big.connect.max() >= 3_600_000_000, "{}", big.connect.max());

        let mut again = Stats::default();
        shards.drain_into(&mut again, &mut spare);
        assert_eq!(
            (again.counts.events, again.latency.len()),
            (0, 0),
            "draining empties the shards"
        );
    }

    #[test]
    fn shards_keep_each_node_apart_and_drain_them_together_or_apart() {
        let shards = Shards::for_nodes(2, 3);
        for node in 0..3 {
            let mut recorder = shards.recorder_for(node, node);
            for _ in 0..=node {
                recorder.event(1, 100 * (node as u64 + 1));
            }
        }
        let mut spare = Stats::default();
        let mut nodes: Vec<Stats> = (0..3).map(|_| Stats::default()).collect();
        shards.drain_nodes(&mut nodes, &mut spare);
        let events: Vec<u64> = nodes.iter().map(|n| n.counts.events).collect();
        assert_eq!(events, [1, 2, 3]);
        assert_eq!(nodes[2].latency.max(), 300);
        let mut recorder = shards.recorder_for(0, 4);
        recorder.event(1, 7);
        drop(recorder);
        shards.absorb(1, 2, &nodes[2]);
        let mut all = Stats::default();
        shards.drain_into(&mut all, &mut spare);
        assert_eq!(all.counts.events, 1 + 3, "node 4 of 3 is node 1");
    }
}
