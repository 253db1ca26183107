//! The report model: one [`Summary`] per run, whose serde form is
//! `summary.json` (the stable schema of CLI.md, plus fields it allows to be
//! added). A field that does not apply to a run is `null`, never invented.
//! Renderers ([`table`], [`progress`]) read this model; nothing else does
//! the arithmetic.

use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::metrics::{ErrorKind, Stats};
use crate::scenario::{Scenario, StreamKind};

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

/// Resident memory over the run, MiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    /// First sample.
    pub start: f64,
    /// Highest sample.
    pub peak: f64,
    /// Last sample.
    pub end: f64,
}

/// The server's resources during the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Server {
    /// Mean CPU, % of one core.
    pub cpu_pct: Option<f64>,
    /// Resident memory.
    pub rss_mb: Option<Span>,
    /// Live heap bytes (servers built with heap profiling only).
    pub heap_bytes: Option<Span>,
}

/// One threshold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdResult {
    /// The expression.
    pub expr: String,
    /// The measured value, in the metric's unit (`null`: not measured).
    pub value: Option<f64>,
    /// Whether it held.
    pub ok: bool,
}

/// Counters beyond CLI.md's stable fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Requests: connection attempts and publishes.
    pub attempts: u64,
    /// Gap notices the server sent.
    pub gap_notices: u64,
    /// Resumes after churn.
    pub reconnects: u64,
    /// Streams that ended as they should (tokens, replay).
    pub completed: u64,
    /// Keep-alives received.
    pub keepalives: u64,
    /// Events published and acknowledged (topics).
    pub published: u64,
}

/// Topics: events acknowledged over a second before the end that a
/// subscriber still had not received then, summed over subscribers (`null`
/// for other streams). Late or lost, the server did not deliver them in time.
fn behind_at_end(scenario: &Scenario, counts: &crate::metrics::Counts) -> Option<u64> {
    (scenario.stream == StreamKind::Topic).then_some(counts.behind_at_end)
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// 99th percentile delivery latency this second, µs.
    pub latency_p99_us: Option<u64>,
    /// Failures this second.
    pub errors: u64,
    /// Server CPU, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server resident memory, MiB.
    pub server_rss_mb: Option<f64>,
    /// Load generator CPU, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
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
    /// `sse` or `ws`.
    pub transport: &'static str,
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
    /// The server's resources.
    pub server: Server,
    /// Each threshold's outcome.
    pub thresholds: Vec<ThresholdResult>,
    /// Every threshold held.
    pub passed: bool,
    /// The server measured (its base URL).
    pub target: String,
    /// Topics: receipt − the publisher's intended send time (open model).
    pub end_to_end_us: Option<LatencyUs>,
    /// Topics: receipt − `pts` (the server accepting the publish).
    pub publish_to_receive_us: Option<LatencyUs>,
    /// Topics: publish latency from the intended send time.
    pub publish_ms: Option<Millis>,
    /// Churn: leaving to the first event after resuming.
    pub reconnect_ms: Option<Millis>,
    /// More counters.
    pub counts: Counts,
    /// Mean load generator CPU, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
    /// One row per second.
    pub timeline: Vec<Row>,
}

/// What a run measured, for [`Summary::new`].
#[derive(Debug)]
pub struct Measured {
    /// Its id.
    pub run_id: String,
    /// When the load started.
    pub started_at: SystemTime,
    /// How long it ran.
    pub duration: Duration,
    /// Totals.
    pub totals: Stats,
    /// One row per second.
    pub timeline: Vec<Row>,
    /// The server measured.
    pub target: String,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

impl Summary {
    /// The summary of `measured` for `scenario`, thresholds evaluated.
    pub fn new(scenario: &Scenario, measured: Measured) -> Self {
        let t = &measured.totals;
        let c = &t.counts;
        let seconds = measured.duration.as_secs_f64().max(f64::EPSILON);
        let rss: Vec<f64> = measured
            .timeline
            .iter()
            .filter_map(|r| r.server_rss_mb)
            .collect();
        let error = |kind: ErrorKind| c.errors[kind as usize];
        let first_event_applies =
            matches!(scenario.stream, StreamKind::Tokens | StreamKind::Replay);
        let mut summary = Self {
            run_id: measured.run_id,
            started_at: humantime::format_rfc3339_seconds(measured.started_at).to_string(),
            scenario: scenario.name.clone(),
            transport: scenario.transport.as_str(),
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
            error_rate: (c.attempts > 0).then(|| c.error_total() as f64 / c.attempts as f64),
            gaps: c.gaps,
            dups: c.dups,
            behind_at_end: behind_at_end(scenario, c),
            server: Server {
                cpu_pct: mean(measured.timeline.iter().filter_map(|r| r.server_cpu_pct)),
                rss_mb: rss.first().zip(rss.last()).map(|(&start, &end)| Span {
                    start,
                    peak: rss.iter().copied().fold(start, f64::max),
                    end,
                }),
                heap_bytes: None,
            },
            thresholds: Vec::new(),
            passed: true,
            target: measured.target,
            end_to_end_us: LatencyUs::of(&t.end_to_end),
            publish_to_receive_us: LatencyUs::of(&t.from_publish),
            publish_ms: Millis::of(&t.publish),
            reconnect_ms: Millis::of(&t.reconnect),
            counts: Counts {
                attempts: c.attempts,
                gap_notices: c.gap_notices,
                reconnects: c.reconnects,
                completed: c.completed,
                keepalives: c.keepalives,
                published: c.published,
            },
            loadgen_cpu_pct: mean(measured.timeline.iter().filter_map(|r| r.loadgen_cpu_pct)),
            timeline: measured.timeline,
        };
        summary.thresholds = summary.evaluate(scenario);
        summary.passed = summary.thresholds.iter().all(|t| t.ok);
        summary
    }

    fn evaluate(&self, scenario: &Scenario) -> Vec<ThresholdResult> {
        let json = serde_json::to_value(self).expect("a summary serializes");
        scenario
            .thresholds
            .iter()
            .map(|threshold| {
                let value = metric(&json, threshold.metric);
                ThresholdResult {
                    expr: threshold.expr.clone(),
                    value,
                    ok: value.is_some_and(|v| threshold.holds(v)),
                }
            })
            .collect()
    }
}

/// The value of a threshold's metric (`latency.p99`, `errors.timeout`, …)
/// in the summary's JSON; its first segment names the summary field.
fn metric(summary: &Value, name: &str) -> Option<f64> {
    let mut segments = name.split('.');
    let field = match segments.next()? {
        "latency" => "latency_us",
        "connect" => "connect_ms",
        "ttft" => "ttft_ms",
        other => other,
    };
    segments
        .try_fold(summary.get(field)?, |value, key| value.get(key))?
        .as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn measured(totals: Stats) -> Measured {
        Measured {
            run_id: "r1".to_owned(),
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(10),
            totals,
            timeline: Vec::new(),
            target: "http://127.0.0.1:1".to_owned(),
        }
    }

    #[test]
    fn has_every_stable_field_of_cli_md_and_nulls_what_does_not_apply() {
        let summary = Summary::new(&Scenario::default(), measured(Stats::default()));
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
        totals.counts.attempts = 4;
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
        let summary = Summary::new(&scenario, measured(totals));
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
