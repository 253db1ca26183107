//! Builds a [`Summary`] from what a run measured ([`Measured`]): counts,
//! percentiles, rates, resources and the load generator's own bounds.
//! Judging it (thresholds, verdict, memory growth) is the analyses' part.

use std::sync::Arc;

use hdrhistogram::Histogram;

use super::agents::AgentSummary;
use super::manifest::{Environment, Limits, Manifest, ServerUnderTest};
use super::verdict::Verdict;
use super::{
    AbuseSummary, Auth, AuthEnded, Bucket, Context, Counts, Errors, Foreign, LatencyUs, Millis,
    MillisMax, NodeSummary, PhaseSummary, Rates, Server, Span, Summary,
};
use crate::metrics::auth::{AuthCounts, Ended, Refusal};
use crate::metrics::timeline::{Measured, NodeMeasured, PhaseMeasured, Row};
use crate::metrics::{self, ErrorKind, Stats};
use crate::scenario::target::{Format, TargetSpec, Trust};
use crate::scenario::{AbuseKind, Scenario, StreamKind, Transport};

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

impl MillisMax {
    /// The percentiles and highest of `histogram` (µs) in ms, if it holds
    /// anything.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        let ms = |us: u64| us as f64 / 1_000.0;
        (!histogram.is_empty()).then(|| Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        })
    }
}

impl Rates {
    /// The rates of requests whose time per token (µs) `histogram` holds:
    /// the slow end of the times is the slow end of the rates.
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        let rate = |q: f64| 1e6 / histogram.value_at_quantile(q).max(1) as f64;
        (!histogram.is_empty()).then(|| Self {
            p50: rate(0.50),
            p95: rate(0.95),
            p99: rate(0.99),
        })
    }
}

impl Foreign {
    /// The foreign figures of a run against `spec`.
    fn of(spec: &TargetSpec, totals: &Stats) -> Self {
        let c = &totals.counts;
        let openai = spec.format == Format::Openai;
        Self {
            target_format: spec.format.as_str(),
            tls: spec.trust.as_ref().map(|trust| match trust {
                Trust::System => "system",
                Trust::CaCert(_) => "ca_cert",
                Trust::Insecure => "insecure",
            }),
            unparsed_example: totals.unparsed_example.clone(),
            requests: openai.then_some(c.connects),
            output_tokens: openai.then_some(c.tokens),
            itl_ms: MillisMax::of(&totals.inter_token).filter(|_| openai),
            itl_written_ms: MillisMax::of(&totals.inter_token_written).filter(|_| openai),
            tokens_per_s: Rates::of(&totals.token_time).filter(|_| openai),
        }
    }
}

impl Auth {
    /// The credential figures of `counts`, if the run minted tokens
    /// (`minted`) or anything was refused.
    fn of(minted: bool, counts: &AuthCounts) -> Option<Self> {
        (minted || !counts.is_empty()).then(|| Self {
            token_refreshes: counts.token_refreshes,
            refreshes_refused: counts.refreshes_refused,
            refusals: (Refusal::ALL.iter().zip(counts.refusals))
                .filter(|&(_, n)| n > 0)
                .map(|(reason, n)| (reason.key(), n))
                .collect(),
            ended: AuthEnded {
                token_expired: counts.ended[Ended::TokenExpired as usize],
                revoked: counts.ended[Ended::Revoked as usize],
            },
        })
    }
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

/// The transports `transport` puts clients on.
fn transports(transport: Transport) -> Vec<&'static str> {
    match transport {
        Transport::Mixed => Transport::ALL.iter().map(|t| t.as_str()).collect(),
        one => vec![one.as_str()],
    }
}

/// Topics: events acknowledged over a second before the end that a
/// subscriber still had not received then, summed over subscribers (`null`
/// for other streams, and for a foreign topic whose sequence numbers are
/// not checked). Late or lost, the server did not deliver them in time.
fn behind_at_end(
    scenario: &Scenario,
    target: Option<&TargetSpec>,
    counts: &metrics::Counts,
) -> Option<u64> {
    let checked = target.is_none_or(TargetSpec::checks_seq);
    (scenario.stream == StreamKind::Topic && checked).then_some(counts.behind_at_end)
}

/// What bounded the run on the load generator's side: a scenario wanting
/// more connections than a process may open, `workers` processes running
/// its clients, and connection attempts this machine refused.
fn bounded_by(
    scenario: &Scenario,
    counts: &metrics::Counts,
    limits: &Limits,
    workers: usize,
) -> Vec<String> {
    let mut bounds = Vec::new();
    let wanted = scenario.descriptors_per_process(workers);
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
            schedule_lag_us: LatencyUs::of(&phase.stats.schedule_lag),
            end_to_end_us: LatencyUs::of(&phase.stats.end_to_end),
            errors: c.error_total(),
            shed: c.shed,
            publishes: c.publishes,
            publishes_shed: c.publishes_shed,
        }
    }
}

impl NodeSummary {
    /// The figures of `node` over a run of `seconds`.
    fn of(node: &NodeMeasured, seconds: f64) -> Self {
        let (s, c) = (&node.stats, &node.stats.counts);
        Self {
            url: node.url.clone(),
            clients: node.clients,
            events: c.events,
            events_per_s: c.events as f64 / seconds,
            errors: c.error_total(),
            latency_us: LatencyUs::of(&s.latency),
            schedule_lag_us: LatencyUs::of(&s.schedule_lag),
            end_to_end_us: LatencyUs::of(&s.end_to_end),
            publish_to_receive_us: LatencyUs::of(&s.from_publish),
            publish_to_receive_cross_node_us: LatencyUs::of(&s.cross_node),
            published: c.published,
            publish_ms: Millis::of(&s.publish),
        }
    }
}

impl AbuseSummary {
    /// The kinds `counts` saw, in report order.
    fn of(counts: &metrics::Counts) -> Vec<Self> {
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
    /// The summary of `measured` for `scenario`: every figure it measured,
    /// not yet judged (no thresholds, no memory analysis, verdict `pass`):
    /// `crate::analysis::summarize` builds it and judges it.
    pub fn new(scenario: &Scenario, measured: &Measured, context: Context) -> Self {
        let t = &measured.totals;
        let c = &t.counts;
        let seconds = measured.duration.as_secs_f64().max(f64::EPSILON);
        let error = |kind: ErrorKind| c.errors[kind as usize];
        let requests = c.connects + c.publishes;
        let connected = t.connect.len();
        let first_event_applies =
            matches!(scenario.stream, StreamKind::Tokens | StreamKind::Replay);
        // A validated scenario's target is valid.
        let target = scenario.target_spec().ok().flatten();
        let checked = target.as_ref().is_none_or(TargetSpec::checks_seq);
        Self {
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
            schedule_lag_us: LatencyUs::of(&t.schedule_lag),
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
                unparsed: target.as_ref().map(|_| c.unparsed),
            },
            error_rate: (requests > 0).then(|| c.error_total() as f64 / requests as f64),
            gaps: checked.then_some(c.gaps),
            dups: checked.then_some(c.dups),
            behind_at_end: behind_at_end(scenario, target.as_ref(), c),
            bounded_by: bounded_by(scenario, c, &context.environment.limits, measured.workers),
            loadgen_workers: u32::try_from(measured.workers).unwrap_or(u32::MAX),
            server: Server {
                cpu_pct: time_mean(&measured.timeline, |r| r.server_cpu_pct),
                rss_mb: Span::of(measured.timeline.iter().filter_map(|r| r.server_rss_mb)),
                heap_bytes: Span::of(measured.timeline.iter().filter_map(|r| r.server_heap_bytes)),
                cpu_us_per_event: per_event_us(measured.cpu_seconds.server, c.events),
            },
            thresholds: Vec::new(),
            aborted: measured.aborted.clone(),
            passed: true,
            verdict: Verdict::Pass,
            // A shed attempt is the server's answer, not a failed connect.
            connect_success: (c.connects > c.shed)
                .then(|| connected as f64 / (c.connects - c.shed) as f64),
            label: context.label,
            repeat: context.repeat,
            comparison: None,
            memory: None,
            target: measured.target.clone(),
            end_to_end_us: LatencyUs::of(&t.end_to_end),
            publish_to_receive_us: LatencyUs::of(&t.from_publish),
            publish_to_receive_same_node_us: LatencyUs::of(&t.same_node),
            publish_to_receive_cross_node_us: LatencyUs::of(&t.cross_node),
            publish_overhead_us: LatencyUs::of(&t.publish_overhead),
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
            auth: Auth::of(scenario.auth.is_some(), &c.auth),
            nodes: (measured.nodes.iter())
                .map(|node| NodeSummary::of(node, seconds))
                .collect(),
            agents: (measured.agents.iter())
                .map(|agent| AgentSummary::of(agent, seconds))
                .collect(),
            incomplete: measured.incomplete,
            timeline: measured.timeline.clone(),
            capacity: None,
            foreign: target.as_ref().map(|spec| Foreign::of(spec, t)),
        }
    }
}

/// `cpu` seconds spent over `events` events, in µs per event.
fn per_event_us(cpu: Option<f64>, events: u64) -> Option<f64> {
    cpu.filter(|_| events > 0)
        .map(|cpu| cpu * 1e6 / events as f64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::metrics::Stats;
    use crate::metrics::monitor::CpuSeconds;
    use crate::summary::fixture;

    #[test]
    fn cpu_per_event_is_given_for_the_server_and_the_load_generator() {
        let scenario = fixture::scenario("clients-10", &[]);
        let summary = Summary::new(
            &scenario,
            &fixture::measured(&scenario, 5),
            Context::lone("r1", "http://127.0.0.1:8080"),
        );
        let events = summary.events as f64;
        assert_eq!(events, 20_000.0);
        assert_eq!(summary.server.cpu_us_per_event, Some(1.25e6 / events));
        assert_eq!(summary.loadgen_cpu_us_per_event, Some(0.5e6 / events));
        let mut nothing = fixture::of_totals(Stats::default());
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
        let limits = crate::summary::manifest::Limits {
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
            &fixture::of_totals(totals),
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
            &fixture::of_totals(Stats::default()),
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
            "schedule_lag_us",
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
                && json["schedule_lag_us"].is_null()
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
            &fixture::of_totals(Stats::default()),
            Context::lone("r2", "http://127.0.0.1:1"),
        );
        let json = serde_json::to_value(&mixed).unwrap();
        assert!(
            json["transport"].is_null(),
            "docs/cli.md's transport is one of sse|ws"
        );
        assert_eq!(json["transports"], json!(["sse", "ws"]));
    }

    #[test]
    fn the_auth_section_is_there_with_tokens_or_refusals_and_null_otherwise() {
        let summarize = |scenario: &Scenario, totals: Stats| {
            let summary = Summary::new(
                scenario,
                &fixture::of_totals(totals),
                Context::lone("a", "http://127.0.0.1:1"),
            );
            serde_json::to_value(&summary).unwrap()
        };
        let json = summarize(&Scenario::default(), Stats::default());
        assert!(json["auth"].is_null(), "no token, nothing refused");
        let mut totals = Stats::default();
        totals.counts.auth.refused(Refusal::WrongToken);
        let json = summarize(&Scenario::default(), totals);
        assert_eq!(json["auth"]["refusals"], json!({"wrong_token": 1}));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "k".repeat(32)).unwrap();
        let mut minted = Scenario::default();
        minted
            .set_auth(&crate::scenario::auth::RawAuth {
                jwt_key: Some(secret),
                ..Default::default()
            })
            .unwrap();
        let mut totals = Stats::default();
        let auth = &mut totals.counts.auth;
        (auth.token_refreshes, auth.refreshes_refused) = (12, 1);
        auth.refused(Refusal::Expired);
        auth.refused(Refusal::Expired);
        auth.ended(Ended::Revoked);
        let json = summarize(&minted, totals);
        assert_eq!(
            json["auth"],
            json!({
                "token_refreshes": 12,
                "refreshes_refused": 1,
                "refusals": {"expired": 2},
                "ended": {"token_expired": 0, "revoked": 1}
            })
        );
        assert_eq!(json["manifest"]["scenario"]["auth"]["alg"], "HS256");
        let manifest = json["manifest"].to_string();
        assert!(!manifest.contains("kkkk"), "the key stays out: {manifest}");
        let quiet = summarize(&minted, Stats::default());
        assert_eq!(
            quiet["auth"]["token_refreshes"], 0,
            "minted, nothing renewed"
        );
    }

    #[test]
    fn each_node_has_its_figures_and_cross_node_delivery_its_own() {
        let node = |url: &str, clients, events: u64, cross_us: Option<u64>| {
            let mut stats = Stats::default();
            stats.counts.events = events;
            stats.counts.published = events / 2;
            stats.latency.record(1_000).unwrap();
            stats.from_publish.record(2_000).unwrap();
            if let Some(us) = cross_us {
                stats.cross_node.record(us).unwrap();
            }
            NodeMeasured {
                url: url.to_owned(),
                clients,
                stats,
            }
        };
        let mut measured = fixture::of_totals(Stats::default());
        measured.totals.cross_node.record(3_000).unwrap();
        measured.nodes = vec![
            node("http://127.0.0.1:1", 2, 40, Some(3_000)),
            node("http://127.0.0.1:2", 1, 20, None),
        ];
        let summary = Summary::new(
            &Scenario::default(),
            &measured,
            Context::lone("n", "http://127.0.0.1:1"),
        );
        let nodes: Vec<_> = (summary.nodes.iter())
            .map(|n| (n.url.as_str(), n.clients, n.events, n.published))
            .collect();
        assert_eq!(
            nodes,
            [
                ("http://127.0.0.1:1", 2, 40, 20),
                ("http://127.0.0.1:2", 1, 20, 10)
            ]
        );
        assert_eq!(summary.nodes[0].events_per_s, 4.0, "over the run's 10 s");
        assert!(
            summary.nodes[0]
                .publish_to_receive_cross_node_us
                .unwrap()
                .p99
                >= 3_000
        );
        assert_eq!(summary.nodes[1].publish_to_receive_cross_node_us, None);
        assert!(summary.publish_to_receive_cross_node_us.unwrap().max >= 3_000);
        assert_eq!(summary.publish_to_receive_same_node_us, None);
    }
}
