//! The report model: one [`Summary`] per run, whose serde form is
//! `summary.json` (the stable schema of CLI.md, plus fields it allows to be
//! added), gathered into a [`Report`] per invocation (a run, its
//! repetitions, a suite). A field that does not apply to a run is `null`,
//! never invented. Renderers read this model and nothing else: [`csv`]
//! (`timeline.csv`), [`markdown`] (`report.md`), [`html`] (`report.html`,
//! with [`chart`]'s SVG charts), [`junit`] (`junit.xml`), [`bmf`]
//! (`bmf.json`), [`table`] (the terminal) and [`progress`] (the live line).
//! [`files`] writes them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::capacity::Capacity;
use crate::compare::Comparison;
use crate::manifest::{Environment, Manifest, ServerUnderTest};
use crate::memory::{self, Memory};
use crate::metrics::{ErrorKind, Stats};
use crate::monitor::CpuSeconds;
use crate::scenario::{AbuseKind, Scenario, StreamKind, Transport};
use crate::verdict::{self, ThresholdResult, Verdict};
use crate::worker;

pub mod bmf;
pub mod chart;
pub mod csv;
pub mod files;
#[cfg(test)]
mod fixture;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod progress;
pub mod table;

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

impl LatencyUs {
    /// The percentiles of `histogram`, if it holds anything.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        (!histogram.is_empty()).then(|| Self {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p95: histogram.value_at_quantile(0.95),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        })
    }
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

impl Millis {
    /// The percentiles of `histogram` (µs) in ms, if it holds anything.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
        (!histogram.is_empty()).then(|| Self {
            p50: ms(0.50),
            p95: ms(0.95),
            p99: ms(0.99),
        })
    }
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

impl<T: Copy + PartialOrd> Span<T> {
    /// The span of `samples`, if there is one.
    fn of(samples: impl Iterator<Item = T>) -> Option<Self> {
        samples.fold(None, |span: Option<Self>, v| {
            Some(match span {
                None => Span {
                    start: v,
                    peak: v,
                    end: v,
                },
                Some(s) => Span {
                    peak: if v > s.peak { v } else { s.peak },
                    end: v,
                    ..s
                },
            })
        })
    }
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

impl Bucket {
    /// The distribution of `histogram` in buckets doubling from 1 µs.
    pub fn of(histogram: &Histogram<u64>) -> Vec<Self> {
        if histogram.is_empty() {
            return Vec::new();
        }
        histogram
            .iter_log(1, 2.0)
            .map(|v| Bucket {
                le_us: v.value_iterated_to(),
                count: v.count_since_last_iteration(),
            })
            .collect()
    }
}

/// Counters beyond CLI.md's stable fields.
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

/// The transports `transport` puts clients on.
fn transports(transport: Transport) -> Vec<&'static str> {
    match transport {
        Transport::Mixed => Transport::ALL.iter().map(|t| t.as_str()).collect(),
        one => vec![one.as_str()],
    }
}

/// Topics: events acknowledged over a second before the end that a
/// subscriber still had not received then, summed over subscribers (`null`
/// for other streams). Late or lost, the server did not deliver them in time.
fn behind_at_end(scenario: &Scenario, counts: &crate::metrics::Counts) -> Option<u64> {
    (scenario.stream == StreamKind::Topic).then_some(counts.behind_at_end)
}

/// What bounded the run on the load generator's side: a scenario wanting
/// more connections than a process may open, `workers` processes running
/// its clients, and connection attempts this machine refused.
fn bounded_by(
    scenario: &Scenario,
    counts: &crate::metrics::Counts,
    limits: &crate::manifest::Limits,
    workers: usize,
) -> Vec<String> {
    let mut bounds = Vec::new();
    let wanted = worker::descriptors_per_process(scenario, workers);
    if let Some(open) = limits.open_files.filter(|&open| wanted > open) {
        let processes = if workers > 1 {
            format!("each of its {workers} worker processes")
        } else {
            "one process".to_owned()
        };
        bounds.push(format!(
            "open files: the scenario needs about {wanted} descriptors in {processes}, and a \
             process may open {open}; run it with more --workers"
        ));
    }
    if counts.local_limits > 0 {
        bounds.push(format!(
            "{} connection attempts failed on this machine's limits (open files or local \
             ports), not on the server",
            counts.local_limits
        ));
    }
    bounds
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// Seconds since the load started.
    pub t_s: f64,
    /// The phase.
    pub phase: String,
    /// Clients connected or connecting.
    pub clients: u32,
    /// Events received per second.
    pub events_per_s: f64,
    /// Bytes received per second.
    pub bytes_per_s: f64,
    /// Median delivery latency this second, µs.
    pub latency_p50_us: Option<u64>,
    /// 90th percentile delivery latency this second, µs.
    pub latency_p90_us: Option<u64>,
    /// 95th percentile delivery latency this second, µs.
    pub latency_p95_us: Option<u64>,
    /// 99th percentile delivery latency this second, µs.
    pub latency_p99_us: Option<u64>,
    /// 99.9th percentile delivery latency this second, µs.
    pub latency_p999_us: Option<u64>,
    /// Highest delivery latency this second, µs.
    pub latency_max_us: Option<u64>,
    /// Failures this second.
    pub errors: u64,
    /// Server CPU, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server resident memory, MiB.
    pub server_rss_mb: Option<f64>,
    /// Server live heap bytes (servers built with heap profiling only).
    pub server_heap_bytes: Option<u64>,
    /// Load generator CPU, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
    /// Load generator resident memory, MiB.
    pub loadgen_rss_mb: Option<f64>,
}

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
    /// writes as `null` (CLI.md's field is one transport) beside
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
    /// Connection set-up.
    pub connect_ms: Option<Millis>,
    /// Time to first token (tokens) or first row (replay).
    pub ttft_ms: Option<Millis>,
    /// Failures by kind.
    pub errors: Errors,
    /// Failures per request (connection attempt or publish).
    pub error_rate: Option<f64>,
    /// Events that never came.
    pub gaps: u64,
    /// Events that came twice.
    pub dups: u64,
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
    /// One row per second, and one at each change of phase.
    pub timeline: Vec<Row>,
}

/// What one phase measured.
#[derive(Debug)]
pub struct PhaseMeasured {
    /// The phase's name.
    pub name: String,
    /// How long, s.
    pub seconds: f64,
    /// The most clients at once.
    pub clients: u32,
    /// Its measurements.
    pub stats: Stats,
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

impl PhaseSummary {
    fn of(phase: &PhaseMeasured) -> Self {
        let c = &phase.stats.counts;
        Self {
            name: phase.name.clone(),
            duration_s: phase.seconds,
            clients: phase.clients,
            events: c.events,
            events_per_s: c.events as f64 / phase.seconds.max(f64::EPSILON),
            latency_us: LatencyUs::of(&phase.stats.latency),
            end_to_end_us: LatencyUs::of(&phase.stats.end_to_end),
            errors: c.error_total(),
            shed: c.shed,
            publishes: c.publishes,
            publishes_shed: c.publishes_shed,
        }
    }
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

impl AbuseSummary {
    /// The kinds `counts` saw, in report order.
    fn of(counts: &crate::metrics::Counts) -> Vec<Self> {
        AbuseKind::ALL
            .iter()
            .zip(&counts.abuse)
            .filter(|(_, a)| a.attempts > 0)
            .map(|(kind, a)| Self {
                kind: kind.as_str(),
                attempts: a.attempts,
                refused: a.refused,
                unexpected: a.unexpected,
                held: a.attempts.saturating_sub(a.refused + a.unexpected),
            })
            .collect()
    }
}

/// What a run measured, for [`Summary::new`].
#[derive(Debug)]
pub struct Measured {
    /// When the load started.
    pub started_at: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// Totals.
    pub totals: Stats,
    /// One row per second, and one at each change of phase.
    pub timeline: Vec<Row>,
    /// Each phase, in order.
    pub phases: Vec<PhaseMeasured>,
    /// The server measured.
    pub target: String,
    /// CPU time used during the load.
    pub cpu_seconds: CpuSeconds,
    /// Processes that ran the virtual clients: 1 (the load generator
    /// itself), or its worker processes.
    pub workers: usize,
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

/// The directory of a run, relative to the invocation's results: `""` for
/// the only scenario run once, `NAME-TRANSPORT` for one of several
/// scenarios, with `repeat-K` (1-based) below it when runs are repeated.
pub fn run_dir(
    scenario: &str,
    transport: &str,
    alone: bool,
    repeated: bool,
    repeat: u32,
) -> String {
    let mut parts = Vec::new();
    if !alone {
        parts.push(format!("{scenario}-{transport}"));
    }
    if repeated {
        parts.push(format!("repeat-{repeat}"));
    }
    parts.join("/")
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

    /// A report of `summary` alone, for its run directory.
    pub fn of_run(summary: &Summary) -> Self {
        Self {
            run_id: summary.run_id.clone(),
            started_at: summary.started_at.clone(),
            label: summary.label.clone(),
            groups: vec![Group {
                scenario: summary.scenario.clone(),
                transport: summary.transport,
                runs: vec![summary.clone()],
            }],
            capacity: crate::capacity::estimate(std::slice::from_ref(summary)),
            environment: Arc::clone(&summary.manifest.environment),
        }
    }
}

impl Context {
    /// The context of a lone run of `run_id` against the server at `url`:
    /// this machine's facts (and the working directory's checkout), no
    /// label, the first repetition.
    pub fn lone(run_id: &str, url: &str) -> Self {
        let here = std::env::current_dir().unwrap_or_default();
        Self {
            run_id: run_id.to_owned(),
            environment: Arc::new(Environment::detect(&here)),
            server: ServerUnderTest {
                program: url.to_owned(),
                args: Vec::new(),
            },
            label: None,
            repeat: 1,
        }
    }
}

/// The mean of `figure` over the rows that have it, each weighted by the
/// length of its interval (rows cut short at a change of phase weigh less).
fn time_mean(rows: &[Row], figure: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
    let mut previous = 0.0;
    let (sum, seconds) = rows.iter().fold((0.0, 0.0), |(sum, seconds), row| {
        let length = (row.t_s - previous).max(0.0);
        previous = row.t_s;
        match figure(row) {
            Some(value) => (sum + value * length, seconds + length),
            None => (sum, seconds),
        }
    });
    (seconds > 0.0).then(|| sum / seconds)
}

impl Summary {
    /// The summary of `measured` for `scenario`, thresholds evaluated.
    pub fn new(scenario: &Scenario, measured: &Measured, context: Context) -> Self {
        let t = &measured.totals;
        let c = &t.counts;
        let seconds = measured.duration.as_secs_f64().max(f64::EPSILON);
        let error = |kind: ErrorKind| c.errors[kind as usize];
        let requests = c.connects + c.publishes;
        let connected = t.connect.len();
        let first_event_applies =
            matches!(scenario.stream, StreamKind::Tokens | StreamKind::Replay);
        let mut summary = Self {
            run_id: context.run_id,
            started_at: humantime::format_rfc3339_seconds(measured.started_at).to_string(),
            scenario: scenario.name.clone(),
            transport: scenario.transport.as_str(),
            transports: transports(scenario.transport),
            stream: scenario.stream.as_str(),
            clients: scenario.max_clients(),
            duration_s: seconds,
            events: c.events,
            events_per_s: c.events as f64 / seconds,
            bytes_per_s: c.bytes as f64 / seconds,
            latency_us: LatencyUs::of(&t.latency),
            connect_ms: Millis::of(&t.connect),
            ttft_ms: if first_event_applies {
                Millis::of(&t.first_event)
            } else {
                None
            },
            errors: Errors {
                connect: error(ErrorKind::Connect),
                http_status: error(ErrorKind::HttpStatus),
                protocol: error(ErrorKind::Protocol),
                timeout: error(ErrorKind::Timeout),
                closed: error(ErrorKind::Closed),
            },
            error_rate: (requests > 0).then(|| c.error_total() as f64 / requests as f64),
            gaps: c.gaps,
            dups: c.dups,
            behind_at_end: behind_at_end(scenario, c),
            bounded_by: bounded_by(scenario, c, &context.environment.limits, measured.workers),
            loadgen_workers: u32::try_from(measured.workers).unwrap_or(u32::MAX),
            server: Server {
                cpu_pct: time_mean(&measured.timeline, |r| r.server_cpu_pct),
                rss_mb: Span::of(measured.timeline.iter().filter_map(|r| r.server_rss_mb)),
                heap_bytes: Span::of(measured.timeline.iter().filter_map(|r| r.server_heap_bytes)),
                cpu_us_per_event: per_event_us(measured.cpu_seconds.server, c.events),
            },
            thresholds: Vec::new(),
            passed: true,
            verdict: Verdict::Pass,
            // A shed attempt is the server's answer, not a failed connect.
            connect_success: (c.connects > c.shed)
                .then(|| connected as f64 / (c.connects - c.shed) as f64),
            label: context.label,
            repeat: context.repeat,
            comparison: None,
            memory: memory::analyse(&measured.timeline),
            target: measured.target.clone(),
            end_to_end_us: LatencyUs::of(&t.end_to_end),
            publish_to_receive_us: LatencyUs::of(&t.from_publish),
            publish_ms: Millis::of(&t.publish),
            reconnect_ms: Millis::of(&t.reconnect),
            resume_ms: Millis::of(&t.resume),
            counts: Counts {
                connects: c.connects,
                connected,
                publishes: c.publishes,
                gap_notices: c.gap_notices,
                reconnects: c.reconnects,
                shed: c.shed,
                publishes_shed: c.publishes_shed,
                completed: c.completed,
                keepalives: c.keepalives,
                published: c.published,
                abuse_refused: c.abuse.iter().map(|a| a.refused).sum(),
                abuse_unexpected: c.abuse.iter().map(|a| a.unexpected).sum(),
            },
            loadgen_cpu_pct: time_mean(&measured.timeline, |r| r.loadgen_cpu_pct),
            loadgen_cpu_us_per_event: per_event_us(measured.cpu_seconds.loadgen, c.events),
            loadgen_rss_mb: Span::of(measured.timeline.iter().filter_map(|r| r.loadgen_rss_mb)),
            latency_distribution: Bucket::of(&t.latency),
            manifest: Manifest {
                environment: context.environment,
                server: context.server,
                scenario: scenario.clone(),
                cpu_seconds: measured.cpu_seconds,
            },
            phases: measured.phases.iter().map(PhaseSummary::of).collect(),
            abuse: AbuseSummary::of(c),
            timeline: measured.timeline.clone(),
        };
        let json = serde_json::to_value(&summary).expect("a summary serializes");
        summary.thresholds = verdict::evaluate(&json, &scenario.thresholds);
        summary.judge();
        summary
    }

    /// Sets the verdict from the thresholds and the comparison.
    pub fn judge(&mut self) {
        let regressed = self.comparison.as_ref().is_some_and(|c| c.regressed);
        let unsure = self.comparison.as_ref().is_some_and(Comparison::unsure);
        self.verdict = match Verdict::of(&self.thresholds, regressed) {
            Verdict::Pass if unsure => Verdict::Warn,
            verdict => verdict,
        };
        self.passed = self.verdict.passed();
    }
}

/// `cpu` seconds spent over `events` events, in µs per event.
fn per_event_us(cpu: Option<f64>, events: u64) -> Option<f64> {
    cpu.filter(|_| events > 0)
        .map(|cpu| cpu * 1e6 / events as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use serde_json::json;

    fn measured(totals: Stats) -> Measured {
        Measured {
            cpu_seconds: CpuSeconds::default(),
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(10),
            totals,
            timeline: Vec::new(),
            phases: Vec::new(),
            target: "http://127.0.0.1:1".to_owned(),
            workers: 1,
        }
    }

    #[test]
    fn cpu_per_event_is_given_for_the_server_and_the_load_generator() {
        let scenario = fixture::scenario("clients-10", &[]);
        let summary = fixture::summary(&scenario, 5);
        let events = summary.events as f64;
        assert_eq!(events, 20_000.0);
        assert_eq!(summary.server.cpu_us_per_event, Some(1.25e6 / events));
        assert_eq!(summary.loadgen_cpu_us_per_event, Some(0.5e6 / events));
        let mut nothing = measured(Stats::default());
        nothing.cpu_seconds = CpuSeconds {
            server: Some(1.0),
            loadgen: Some(1.0),
        };
        let idle = Summary::new(
            &scenario,
            &nothing,
            Context::lone("r", "http://127.0.0.1:1"),
        );
        assert_eq!(
            (idle.server.cpu_us_per_event, idle.loadgen_cpu_us_per_event),
            (None, None),
            "no events, no figure per event"
        );
    }

    #[test]
    fn cpu_means_weigh_each_row_by_its_length() {
        let row = |t_s, cpu| Row {
            t_s,
            server_cpu_pct: cpu,
            ..Row::default()
        };
        // 1 s at 10 %, a 0.1 s row at 100 % (cut at a change of phase),
        // 0.9 s at 10 %, and a row without a figure.
        let rows = [
            row(1.0, Some(10.0)),
            row(1.1, Some(100.0)),
            row(2.0, Some(10.0)),
            row(3.0, None),
        ];
        let mean = time_mean(&rows, |r| r.server_cpu_pct).unwrap();
        assert!((mean - 14.5).abs() < 1e-9, "{mean}");
        assert_eq!(time_mean(&[], |r| r.server_cpu_pct), None);
    }

    #[test]
    fn what_bounded_the_load_generator_is_said() {
        let limits = crate::manifest::Limits {
            open_files: Some(20_000),
            open_files_hard: Some(20_000),
            ephemeral_ports: Some([32768, 60999]),
        };
        let mut scenario = Scenario::default();
        let mut counts = crate::metrics::Counts::default();
        assert!(bounded_by(&scenario, &counts, &limits, 1).is_empty());
        scenario.set_load(25_000, Duration::from_secs(1), Duration::ZERO);
        counts.local_limits = 7;
        let bounds = bounded_by(&scenario, &counts, &limits, 1);
        assert_eq!(bounds.len(), 2, "{bounds:?}");
        assert!(
            bounds[0].starts_with(
                "open files: the scenario needs about 25600 descriptors in one process"
            ),
            "{bounds:?}"
        );
        assert!(bounds[1].starts_with("7 connection attempts failed on this machine's limits"));
        // Two workers hold 12,500 clients each: open files no longer bound it.
        let bounds = bounded_by(&scenario, &counts, &limits, 2);
        assert_eq!(bounds.len(), 1, "{bounds:?}");
        assert!(bounds[0].starts_with("7 connection attempts"));
        scenario.set_load(60_000, Duration::from_secs(1), Duration::ZERO);
        let bounds = bounded_by(&scenario, &counts, &limits, 2);
        assert!(
            bounds[0].contains("30600 descriptors in each of its 2 worker processes"),
            "{bounds:?}"
        );
    }

    #[test]
    fn abusers_are_reported_by_kind_apart_from_the_clients() {
        let mut totals = Stats::default();
        let slowloris = &mut totals.counts.abuse[AbuseKind::Slowloris.index()];
        (slowloris.attempts, slowloris.refused) = (10, 7);
        let flood = &mut totals.counts.abuse[AbuseKind::PingFlood.index()];
        (flood.attempts, flood.refused, flood.unexpected) = (5, 4, 1);
        let summary = Summary::new(
            &Scenario::default(),
            &measured(totals),
            Context::lone("t", "http://127.0.0.1:1"),
        );
        let kinds: Vec<_> = summary
            .abuse
            .iter()
            .map(|a| (a.kind, a.attempts, a.refused, a.unexpected, a.held))
            .collect();
        assert_eq!(
            kinds,
            [("slowloris", 10, 7, 0, 3), ("ping-flood", 5, 4, 1, 0)]
        );
        assert_eq!(
            (
                summary.counts.abuse_refused,
                summary.counts.abuse_unexpected
            ),
            (11, 1)
        );
        assert_eq!(summary.error_rate, None, "abuse is not the clients' errors");
    }

    #[test]
    fn has_every_stable_field_of_cli_md_and_nulls_what_does_not_apply() {
        let summary = Summary::new(
            &Scenario::default(),
            &measured(Stats::default()),
            Context::lone("r1", "http://127.0.0.1:1"),
        );
        let json = serde_json::to_value(&summary).unwrap();
        for field in [
            "run_id",
            "started_at",
            "scenario",
            "transport",
            "stream",
            "clients",
            "duration_s",
            "events",
            "events_per_s",
            "bytes_per_s",
            "latency_us",
            "connect_ms",
            "ttft_ms",
            "errors",
            "error_rate",
            "gaps",
            "dups",
            "server",
            "thresholds",
            "passed",
        ] {
            assert!(json.get(field).is_some(), "no {field}");
        }
        assert!(
            json["latency_us"].is_null()
                && json["ttft_ms"].is_null()
                && json["error_rate"].is_null()
        );
        assert!(json["server"]["heap_bytes"].is_null());
        assert_eq!(json["started_at"], "1970-01-01T00:00:00Z");
        for kind in ["connect", "http_status", "protocol", "timeout", "closed"] {
            assert_eq!(json["errors"][kind], 0);
        }
        assert_eq!(
            (&json["transport"], &json["transports"]),
            (&json!("sse"), &json!(["sse"]))
        );
        let mixed = Summary::new(
            &Scenario {
                transport: Transport::Mixed,
                ..Scenario::default()
            },
            &measured(Stats::default()),
            Context::lone("r2", "http://127.0.0.1:1"),
        );
        let json = serde_json::to_value(&mixed).unwrap();
        assert!(
            json["transport"].is_null(),
            "CLI.md's transport is one of sse|ws"
        );
        assert_eq!(json["transports"], json!(["sse", "ws"]));
    }

    #[test]
    fn thresholds_are_evaluated_on_the_summary_and_a_missing_metric_fails() {
        let mut totals = Stats::default();
        for _ in 0..980 {
            totals.latency.record(1_000).unwrap();
        }
        for _ in 0..20 {
            totals.latency.record(30_000).unwrap();
        }
        totals.counts.events = 3;
        totals.counts.connects = 4;
        totals.counts.errors[ErrorKind::Closed as usize] = 1;
        let scenario = Scenario {
            thresholds: [
                "latency.p99<50ms",
                "latency.p50<1ms",
                "error_rate<=25%",
                "ttft.p95<1s",
                "events_per_s>0.2",
            ]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect(),
            ..Scenario::default()
        };
        let summary = Summary::new(
            &scenario,
            &measured(totals),
            Context::lone("r1", "http://127.0.0.1:1"),
        );
        let ok: Vec<bool> = summary.thresholds.iter().map(|t| t.ok).collect();
        assert_eq!(ok, [true, false, true, false, true]);
        let values: Vec<Option<f64>> = summary.thresholds.iter().map(|t| t.value).collect();
        assert!(
            values[0].is_some_and(|p99| (30_000.0..30_100.0).contains(&p99)),
            "{values:?}"
        );
        assert_eq!(values[1], Some(1_000.0));
        assert_eq!(values[2], Some(0.25));
        assert_eq!(
            values[3], None,
            "ttft does not apply to a ticker: null, and the threshold fails"
        );
        assert!(!summary.passed);
    }
}
