//! The one report model: a [`Summary`] per run, whose serde form is
//! `summary.json` (the stable schema of docs/cli.md), gathered into a
//! [`Report`] per invocation (a run, its repetitions, a suite). A field that
//! does not apply to a run is `null`, never invented.
//!
//! These are types and the code that builds them from what a run measured
//! ([`build`]); nothing here judges or renders. The analyses
//! (`crate::analysis`) fill in the verdict, thresholds, memory, comparison
//! and capacity parts, whose types live here ([`verdict`], [`memory`],
//! [`comparison`], [`capacity`]); the renderers (`crate::report`) read the
//! finished model.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use self::agents::AgentSummary;
use self::capacity::Capacity;
use self::comparison::Comparison;
use self::manifest::{Environment, Manifest, ServerUnderTest};
use self::memory::Memory;
use self::verdict::{ThresholdResult, Verdict};
use crate::metrics::timeline::{Aborted, Row};

pub mod agents;
pub mod build;
pub mod capacity;
pub mod comparison;
#[cfg(test)]
pub(crate) mod fixture;
pub mod manifest;
pub mod memory;
pub mod verdict;

/// Latency percentiles in µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyUs {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

/// Percentiles of a µs histogram, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Millis {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Percentiles and the highest of a µs histogram, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MillisMax {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The highest.
    pub max: f64,
}

/// Per-request decode rates, tokens/s: `p95` is the rate 95 % of requests
/// reached or beat (1 / the 95th percentile of their time per token), and
/// so on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    /// Half the requests were at least this fast.
    pub p50: f64,
    /// 95 % of the requests were at least this fast.
    pub p95: f64,
    /// 99 % of the requests were at least this fast.
    pub p99: f64,
}

/// What a run against a foreign target adds to `summary.json` (absent on
/// this project's protocol, whose summary keeps its exact shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Foreign {
    /// The target's format: `streamgauge`, `json`, `text` or `openai`.
    pub target_format: &'static str,
    /// How TLS verified the server: `system`, `ca_cert` or `insecure`;
    /// `null` over plain TCP.
    pub tls: Option<&'static str>,
    /// The start of the first message the format could not read.
    pub unparsed_example: Option<String>,
    /// `openai`: requests made.
    pub requests: Option<u64>,
    /// `openai`: output tokens of the completed requests.
    pub output_tokens: Option<u64>,
    /// `openai`: the time between content pieces of a response, ms.
    pub itl_ms: Option<MillisMax>,
    /// `openai` with `ts_pointer`: the time between content pieces as the
    /// server wrote them (`ts` − the `ts` before), ms: what `itl_ms` would
    /// be with nothing between the server and the load generator.
    pub itl_written_ms: Option<MillisMax>,
    /// `openai`: each request's decode rate after its first token.
    pub tokens_per_s: Option<Rates>,
}

/// Credentials: per-user tokens renewed, and what the server refused
/// (`summary.json`'s `auth`, `null` when no token was minted and nothing
/// was refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Auth {
    /// Tokens renewed on live streams: WebSocket refreshes answered
    /// `refreshed`, SSE streams opened again with a fresh token.
    pub token_refreshes: u64,
    /// Renewals the server refused: a refresh answered with an error, a
    /// stream opened again refused `401`/`403`.
    pub refreshes_refused: u64,
    /// Credentials refused, by the server's reason (`expired`, `revoked`,
    /// `topic_not_allowed`, …; `other` for one not known): `401`/`403`
    /// answers and refused refreshes. Only the reasons that came.
    pub refusals: BTreeMap<&'static str, u64>,
    /// Streams the server ended because of their token.
    pub ended: AuthEnded,
}

/// Streams the server ended because of their token, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AuthEnded {
    /// Their token expired (SSE `end` `token_expired`, close 4401).
    pub token_expired: u64,
    /// Their token was revoked (SSE `end` `revoked`, close 4403).
    pub revoked: u64,
}

/// Failures by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// Connections that could not be made.
    pub connect: u64,
    /// Unexpected HTTP status (or close 1013).
    pub http_status: u64,
    /// Malformed bytes.
    pub protocol: u64,
    /// Nothing arrived in time; publishes the server could not keep up with.
    pub timeout: u64,
    /// Streams the server ended when it should not have.
    pub closed: u64,
    /// Foreign targets: messages the format could not read (per message,
    /// not in `error_rate`); absent on this project's protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unparsed: Option<u64>,
}

/// A memory figure over the run: resident MiB, or live heap bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span<T = f64> {
    /// First sample.
    pub start: T,
    /// Highest sample.
    pub peak: T,
    /// Last sample.
    pub end: T,
}

/// The server's resources during the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Server {
    /// Mean CPU, % of one core.
    pub cpu_pct: Option<f64>,
    /// Resident memory.
    pub rss_mb: Option<Span>,
    /// Live heap bytes (servers built with heap profiling only).
    pub heap_bytes: Option<Span<u64>>,
    /// Server CPU time per event delivered, µs.
    pub cpu_us_per_event: Option<f64>,
}

/// One bucket of the latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Its upper bound, µs (buckets double in width).
    pub le_us: u64,
    /// Events whose latency fell in it.
    pub count: u64,
}

/// Counters beyond docs/cli.md's stable fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Connection attempts that settled, every reconnect included (an
    /// attempt the end of the run cut short is not one).
    pub connects: u64,
    /// Connections made.
    pub connected: u64,
    /// Publish requests (topics).
    pub publishes: u64,
    /// Gap notices the server sent.
    pub gap_notices: u64,
    /// Resumes after churn.
    pub reconnects: u64,
    /// Stream requests the server shed (`503`, `429`, close `1013`):
    /// refused by design under overload, counted apart from `errors`.
    pub shed: u64,
    /// Publishes the server shed (`503`, `429`): nothing stored.
    pub publishes_shed: u64,
    /// Streams that ended as they should (tokens, replay).
    pub completed: u64,
    /// Keep-alives received.
    pub keepalives: u64,
    /// Events published and acknowledged (topics).
    pub published: u64,
    /// Misbehaving clients' attempts the server answered as its limits say.
    pub abuse_refused: u64,
    /// Misbehaving clients' attempts answered any other way.
    pub abuse_unexpected: u64,
}

/// `summary.json`'s `transport`: one transport, or `null` for a mixed run.
fn one_transport<S: serde::Serializer>(transport: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match transport {
        MIXED => serializer.serialize_none(),
        one => serializer.serialize_str(one),
    }
}

/// The label of a mixed run, whose `summary.json` has `transport: null`.
pub const MIXED: &str = "mixed";

/// The summary of one run: `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// This run's id.
    pub run_id: String,
    /// When the load started (RFC 3339).
    pub started_at: String,
    /// The scenario's name.
    pub scenario: String,
    /// `sse` or `ws`; `mixed` for a run of both, which `summary.json`
    /// writes as `null` (docs/cli.md's field is one transport) beside
    /// `transports`.
    #[serde(serialize_with = "one_transport")]
    pub transport: &'static str,
    /// The transports the clients used: `["sse"]`, `["ws"]`, or both.
    pub transports: Vec<&'static str>,
    /// `ticker`, `topic`, `tokens` or `replay`.
    pub stream: &'static str,
    /// The most clients at once.
    pub clients: u32,
    /// How long the load ran, s.
    pub duration_s: f64,
    /// Events received.
    pub events: u64,
    /// Events received per second.
    pub events_per_s: f64,
    /// Payload bytes received per second.
    pub bytes_per_s: f64,
    /// Delivery latency (receipt − `ts`).
    pub latency_us: Option<LatencyUs>,
    /// Schedule lag (receipt − `sched`, when the server's pacer meant the
    /// event to go out): `null` when no event carried `sched` (topics,
    /// unpaced streams, foreign targets).
    pub schedule_lag_us: Option<LatencyUs>,
    /// Connection set-up.
    pub connect_ms: Option<Millis>,
    /// Time to first token (tokens) or first row (replay).
    pub ttft_ms: Option<Millis>,
    /// Failures by kind.
    pub errors: Errors,
    /// Failures per request (connection attempt or publish).
    pub error_rate: Option<f64>,
    /// Events that never came; `None` when no sequence number could be
    /// checked (a foreign target without `seq_pointer`).
    pub gaps: Option<u64>,
    /// Events that came twice; `None` as for `gaps`.
    pub dups: Option<u64>,
    /// Topics: events that were due but had not arrived by the end.
    pub behind_at_end: Option<u64>,
    /// What on the load generator's side, rather than the server, bounded
    /// the figures (open files, local ports); empty when nothing did.
    pub bounded_by: Vec<String>,
    /// Processes that ran the virtual clients: 1, the load generator
    /// itself; more, its worker processes (`--workers`).
    pub loadgen_workers: u32,
    /// The server's resources.
    pub server: Server,
    /// Each threshold's outcome.
    pub thresholds: Vec<ThresholdResult>,
    /// Set when an `abort:` threshold broke and stopped the run before its
    /// end: the figures are those of the time it ran.
    pub aborted: Option<Aborted>,
    /// Every critical threshold held, and no figure regressed beyond its
    /// budget against the baseline.
    pub passed: bool,
    /// `pass`, `warn` (a warning threshold broke) or `fail`.
    pub verdict: Verdict,
    /// Connections made per connection attempt that was not shed.
    pub connect_success: Option<f64>,
    /// The label given to the run (`--label`), such as a branch name.
    pub label: Option<String>,
    /// Which repetition of its scenario this run is (1-based).
    pub repeat: u32,
    /// The comparison with a baseline (`--baseline`).
    pub comparison: Option<Comparison>,
    /// The server's memory: growth and burst recovery of its live heap and
    /// RSS (`null` without memory samples).
    pub memory: Option<Memory>,
    /// The server measured (its base URL).
    pub target: String,
    /// Topics: receipt − the publisher's intended send time (open model).
    pub end_to_end_us: Option<LatencyUs>,
    /// Topics: receipt − `pts` (the server accepting the publish).
    pub publish_to_receive_us: Option<LatencyUs>,
    /// Topics over several nodes: [`Summary::publish_to_receive_us`] of
    /// the events published on the node that delivered them.
    pub publish_to_receive_same_node_us: Option<LatencyUs>,
    /// Topics over several nodes: [`Summary::publish_to_receive_us`] of
    /// the events published on another node than the one that delivered
    /// them.
    pub publish_to_receive_cross_node_us: Option<LatencyUs>,
    /// Topics: `pts` − the publisher's intended send time, per event
    /// received: what the load generator's own publisher adds before the
    /// server has the publish (its pacing, client and the request's way in).
    pub publish_overhead_us: Option<LatencyUs>,
    /// Topics: publish latency from the intended send time.
    pub publish_ms: Option<Millis>,
    /// Churn: leaving a stream to having it open again.
    pub reconnect_ms: Option<Millis>,
    /// Churn: leaving a stream to the first event after resuming it.
    pub resume_ms: Option<Millis>,
    /// More counters.
    pub counts: Counts,
    /// Mean load generator CPU, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
    /// Load generator CPU time per event delivered, µs (its worker
    /// processes' included): what the instrument spends on each event,
    /// beside [`Server::cpu_us_per_event`], so that a run shows whether
    /// the client could have been the limit.
    pub loadgen_cpu_us_per_event: Option<f64>,
    /// The load generator's resident memory, MiB (`null` where `/proc`
    /// does not tell).
    pub loadgen_rss_mb: Option<Span>,
    /// Delivery latency distribution: buckets doubling from 1 µs.
    pub latency_distribution: Vec<Bucket>,
    /// What makes the figures reproducible.
    pub manifest: Manifest,
    /// Each phase's figures, in order.
    pub phases: Vec<PhaseSummary>,
    /// Misbehaving clients, by kind (empty without `abuse` phases).
    pub abuse: Vec<AbuseSummary>,
    /// Per-user tokens renewed and credentials refused (`null` when no
    /// token was minted and nothing was refused).
    pub auth: Option<Auth>,
    /// Each server node's figures, in the order of `--url` (one entry for
    /// a server of one node).
    pub nodes: Vec<NodeSummary>,
    /// On a run over several agents (`--agent`), each agent's figures, in
    /// the order given; empty otherwise.
    pub agents: Vec<AgentSummary>,
    /// Set when an agent was lost and the run stopped early (without
    /// `--tolerate-agent-loss`): the figures lack what was not measured,
    /// the verdict is fail, and the exit code 2.
    pub incomplete: bool,
    /// One row per second, and one at each change of phase.
    pub timeline: Vec<Row>,
    /// A capacity search's estimate (`null` for any other run): this
    /// summary is then its knee's step (or, if none held, its first).
    pub capacity: Option<Capacity>,
    /// A foreign target's figures (`None`, and no field at all, on this
    /// project's protocol).
    #[serde(flatten)]
    pub foreign: Option<Foreign>,
}

/// One phase of the run, so that its figures (overload against normal,
/// abuse against calm) stand side by side. The timeline ends a row at each
/// change of phase, so a phase's figures are its own (to within the 100 ms
/// the runner's clock ticks and clients flush at).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseSummary {
    /// The phase's name.
    pub name: String,
    /// How long it ran, s.
    pub duration_s: f64,
    /// The most clients at once.
    pub clients: u32,
    /// Events received.
    pub events: u64,
    /// Events received per second.
    pub events_per_s: f64,
    /// Delivery latency (receipt − `ts`).
    pub latency_us: Option<LatencyUs>,
    /// Schedule lag (receipt − `sched`); `null` as in [`Summary`].
    pub schedule_lag_us: Option<LatencyUs>,
    /// Topics: receipt − the publisher's intended send time.
    pub end_to_end_us: Option<LatencyUs>,
    /// Failures of well-behaved clients.
    pub errors: u64,
    /// Streams the server shed.
    pub shed: u64,
    /// Publish requests.
    pub publishes: u64,
    /// Publishes the server shed.
    pub publishes_shed: u64,
}

/// What one server node delivered, and what was published on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSummary {
    /// Its base URL.
    pub url: String,
    /// The most of the run's clients connected to it at once.
    pub clients: u32,
    /// Events its clients received.
    pub events: u64,
    /// Events its clients received per second.
    pub events_per_s: f64,
    /// Failures of its clients and of the publishes sent to it.
    pub errors: u64,
    /// Delivery latency of its clients (receipt − `ts`).
    pub latency_us: Option<LatencyUs>,
    /// Schedule lag of its clients (receipt − `sched`); `null` as in
    /// [`Summary`].
    pub schedule_lag_us: Option<LatencyUs>,
    /// Topics: its clients' receipt − the publisher's intended send time.
    pub end_to_end_us: Option<LatencyUs>,
    /// Topics: its clients' receipt − `pts`, wherever it was published.
    pub publish_to_receive_us: Option<LatencyUs>,
    /// Topics: the same, of events published on another node.
    pub publish_to_receive_cross_node_us: Option<LatencyUs>,
    /// Topics: publishes sent to it and acknowledged.
    pub published: u64,
    /// Topics: latency of the publishes sent to it, from their intended
    /// send time.
    pub publish_ms: Option<Millis>,
}

/// What the misbehaving clients of one kind met (`abuse` phases).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AbuseSummary {
    /// The kind (`slowloris`, `never-read`, …).
    pub kind: &'static str,
    /// Attempts made.
    pub attempts: u64,
    /// Answered as the server's limits say (closed, 413, 429, 1008, 1009).
    pub refused: u64,
    /// Answered any other way.
    pub unexpected: u64,
    /// Still going when their phase ended.
    pub held: u64,
}

/// Where a run stands among others: its manifest's invocation-wide facts,
/// label and repetition.
#[derive(Debug, Clone)]
pub struct Context {
    /// The invocation's id.
    pub run_id: String,
    /// Versions, machine and limits.
    pub environment: Arc<Environment>,
    /// The server measured.
    pub server: ServerUnderTest,
    /// `--label`.
    pub label: Option<String>,
    /// The repetition (1-based).
    pub repeat: u32,
}

/// One scenario on one transport, and its repetitions.
#[derive(Debug, Clone)]
pub struct Group {
    /// The scenario's name.
    pub scenario: String,
    /// `sse` or `ws`.
    pub transport: &'static str,
    /// Its runs, one per repetition (at least one).
    pub runs: Vec<Summary>,
}

impl Group {
    /// The worst verdict of its runs: every repetition must hold.
    pub fn verdict(&self) -> Verdict {
        worst(self.runs.iter().map(|s| s.verdict))
    }

    /// Its comparison with the baseline (the same for every repetition).
    pub fn comparison(&self) -> Option<&Comparison> {
        self.runs.first()?.comparison.as_ref()
    }
}

fn worst(verdicts: impl Iterator<Item = Verdict>) -> Verdict {
    verdicts.fold(Verdict::Pass, |worst, v| match (worst, v) {
        (Verdict::Fail, _) | (_, Verdict::Fail) => Verdict::Fail,
        (Verdict::Warn, _) | (_, Verdict::Warn) => Verdict::Warn,
        _ => Verdict::Pass,
    })
}

/// Everything one invocation measured: the model of the top-level
/// `report.md`, `report.html`, `junit.xml`, `bmf.json` and `suite.json`.
#[derive(Debug, Clone)]
pub struct Report {
    /// The invocation's id.
    pub run_id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// `--label`.
    pub label: Option<String>,
    /// One group per scenario and transport, in the order they ran.
    pub groups: Vec<Group>,
    /// Capacity estimates from load steps and ramps.
    pub capacity: Vec<Capacity>,
    /// Versions, machine and limits.
    pub environment: Arc<Environment>,
}

impl Report {
    /// The worst verdict of its groups.
    pub fn verdict(&self) -> Verdict {
        worst(self.groups.iter().map(Group::verdict))
    }

    /// Whether it is a single run (one scenario, one repetition): its
    /// results directory is the run's own.
    pub fn is_single_run(&self) -> bool {
        self.groups.len() == 1 && self.groups[0].runs.len() == 1
    }

    /// Every run, in order.
    pub fn summaries(&self) -> impl Iterator<Item = &Summary> {
        self.groups.iter().flat_map(|g| g.runs.iter())
    }

    /// A report of `summary` alone, for its run directory, with its
    /// `capacity` estimate (if it ramped).
    pub fn of_run(summary: &Summary, capacity: Vec<Capacity>) -> Self {
        Self {
            run_id: summary.run_id.clone(),
            started_at: summary.started_at.clone(),
            label: summary.label.clone(),
            groups: vec![Group {
                scenario: summary.scenario.clone(),
                transport: summary.transport,
                runs: vec![summary.clone()],
            }],
            capacity,
            environment: Arc::clone(&summary.manifest.environment),
        }
    }
}
