//! The verdict: thresholds and regression budgets decide pass or fail.
//!
//! Every scenario gets default thresholds drawn from common production
//! budgets, unless it sets the same metric itself (or the user asks for
//! none): error rate warning at 1 %, critical at 5 %; connection success
//! warning under 99 %, critical under 95 %; and, for paced streams that
//! clients read as fast as they come, delivery latency p95 warning at 50 ms,
//! critical at 100 ms. (Streams read as fast as possible and slow readers
//! queue by design: their latency measures the backlog, not the server.)
//!
//! Thresholds are evaluated on the summary's JSON form, so a metric's name
//! is its path there (`latency.p99` reads `latency_us.p99`). A critical
//! threshold that breaks fails the run; a warning is reported and does not.

use serde::Serialize;
use serde_json::Value;

use crate::scenario::{Scenario, Severity, StreamKind, Threshold};

/// Default budgets: each pair is a warning and a critical threshold on one
/// metric.
const BUDGETS: [(&str, [&str; 2]); 3] = [
    ("error_rate", ["warn:error_rate<1%", "error_rate<5%"]),
    (
        "connect_success",
        ["warn:connect_success>=99%", "connect_success>=95%"],
    ),
    (
        "latency.p95",
        ["warn:latency.p95<50ms", "latency.p95<100ms"],
    ),
];

/// Whether delivery latency measures the server in `scenario`: events are
/// paced (never "as fast as the client reads"), clients read at once, and
/// it is not a ramp (a ramp looks for the load where latency breaks; the
/// capacity estimate judges it second by second).
fn latency_applies(scenario: &Scenario) -> bool {
    if crate::capacity::is_ramp(scenario) {
        return false;
    }
    let paced = match scenario.stream {
        // A quiet topic (no publishes) delivers nothing to measure.
        StreamKind::Topic => scenario.publishes(),
        StreamKind::Tokens => true,
        StreamKind::Ticker | StreamKind::Replay => {
            scenario.phases.iter().all(|p| scenario.rate_in(p) > 0)
        }
    };
    paced && scenario.consumer_delay.is_zero()
}

/// Adds the default budgets to `scenario` for every metric it does not
/// already have a threshold on.
pub fn add_defaults(scenario: &mut Scenario) {
    for (metric, exprs) in BUDGETS {
        let given = scenario.thresholds.iter().any(|t| t.metric == metric);
        if given || (metric.starts_with("latency.") && !latency_applies(scenario)) {
            continue;
        }
        for expr in exprs {
            let mut threshold: Threshold = expr.parse().expect("default budgets parse");
            threshold.default = true;
            scenario.thresholds.push(threshold);
        }
    }
}

/// Pass, pass with warnings, or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything held.
    Pass,
    /// Every critical threshold and budget held; a warning broke.
    Warn,
    /// A critical threshold or a regression budget broke.
    Fail,
}

impl Verdict {
    /// The verdict of threshold results and whether a regression was found.
    pub fn of(thresholds: &[ThresholdResult], regressed: bool) -> Self {
        let broke = |severity| thresholds.iter().any(|t| !t.ok && t.severity == severity);
        if regressed || broke(Severity::Critical) {
            Verdict::Fail
        } else if broke(Severity::Warning) {
            Verdict::Warn
        } else {
            Verdict::Pass
        }
    }

    /// Whether the run passes (exit code 0).
    pub fn passed(self) -> bool {
        self != Verdict::Fail
    }

    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "pass with warnings",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One threshold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdResult {
    /// The expression, without its severity prefix.
    pub expr: String,
    /// The metric it reads.
    pub metric: &'static str,
    /// The measured value, in the metric's unit (`null`: not measured).
    pub value: Option<f64>,
    /// Whether it held (a metric not measured does not hold).
    pub ok: bool,
    /// `critical` or `warning`.
    pub severity: Severity,
    /// A default budget rather than one the user gave.
    pub default: bool,
}

/// `value` of `metric` as people read it: latencies in ms, rates in %.
pub fn display(metric: &str, value: Option<f64>) -> String {
    let Some(value) = value else {
        return "not measured".to_owned();
    };
    let head = metric.split('.').next().unwrap_or(metric);
    match head {
        "latency" | "publish_to_receive" => format!("{:.3} ms", value / 1_000.0),
        "connect" | "ttft" | "publish" | "reconnect" | "resume" => format!("{value:.3} ms"),
        "error_rate" | "connect_success" => format!("{:.3}%", value * 100.0),
        "heap" | "rss" if metric.ends_with("recovery") => format!("{:.1}%", value * 100.0),
        "heap" | "rss" => format!("{}/h", crate::memory::bytes_text(value)),
        _ if value.fract() == 0.0 && value.abs() < 1e15 => format!("{value:.0}"),
        _ => format!("{value:.2}"),
    }
}

/// Evaluates `thresholds` on a summary's JSON form.
pub fn evaluate(summary: &Value, thresholds: &[Threshold]) -> Vec<ThresholdResult> {
    thresholds
        .iter()
        .map(|threshold| {
            let value = metric(summary, threshold.metric);
            ThresholdResult {
                expr: threshold.expr.clone(),
                metric: threshold.metric,
                value,
                ok: value.is_some_and(|v| threshold.holds(v)),
                severity: threshold.severity,
                default: threshold.default,
            }
        })
        .collect()
}

/// The value of a threshold's metric (`latency.p99`, `errors.timeout`, …)
/// in the summary's JSON; its first segment names the summary field.
pub fn metric(summary: &Value, name: &str) -> Option<f64> {
    let mut segments = name.split('.');
    let first = segments.next()?;
    if matches!(first, "heap" | "rss") {
        let figures = summary.get("memory")?.get(first)?;
        return segments
            .try_fold(figures, |value, key| value.get(key))?
            .as_f64();
    }
    let field = match first {
        "latency" => "latency_us",
        "connect" => "connect_ms",
        "ttft" => "ttft_ms",
        "publish_to_receive" => "publish_to_receive_us",
        "publish" => "publish_ms",
        "reconnect" => "reconnect_ms",
        "resume" => "resume_ms",
        other => other,
    };
    segments
        .try_fold(summary.get(field)?, |value, key| value.get(key))?
        .as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::preset;

    fn exprs(scenario: &Scenario) -> Vec<String> {
        scenario
            .thresholds
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_are_production_budgets_where_they_apply() {
        let mut paced = preset::find("clients-100").unwrap().scenario();
        add_defaults(&mut paced);
        assert_eq!(
            exprs(&paced),
            [
                "warn:error_rate<1%",
                "error_rate<5%",
                "warn:connect_success>=99%",
                "connect_success>=95%",
                "warn:latency.p95<50ms",
                "latency.p95<100ms",
            ]
        );
        assert!(paced.thresholds.iter().all(|t| t.default));
        for unpaced in [
            "throughput",
            "slow-50ms",
            "replay-5k",
            "burst",
            "connections",
        ] {
            let mut scenario = preset::find(unpaced).unwrap().scenario();
            add_defaults(&mut scenario);
            assert!(
                scenario
                    .thresholds
                    .iter()
                    .all(|t| !t.metric.starts_with("latency")),
                "{unpaced}: {:?}",
                exprs(&scenario)
            );
            assert_eq!(scenario.thresholds.len(), 4, "{unpaced}");
        }
    }

    #[test]
    fn a_given_threshold_replaces_the_default_on_its_metric() {
        let mut scenario = preset::find("rate-100").unwrap().scenario();
        scenario.thresholds.push("latency.p95<5ms".parse().unwrap());
        add_defaults(&mut scenario);
        let latency: Vec<String> = exprs(&scenario)
            .into_iter()
            .filter(|e| e.contains("latency"))
            .collect();
        assert_eq!(latency, ["latency.p95<5ms"]);
    }

    #[test]
    fn warnings_do_not_fail_and_regressions_do() {
        let result = |severity, ok| ThresholdResult {
            expr: "gaps==0".to_owned(),
            metric: "gaps",
            value: Some(0.0),
            ok,
            severity,
            default: false,
        };
        let warned = [
            result(Severity::Critical, true),
            result(Severity::Warning, false),
        ];
        assert_eq!(Verdict::of(&warned, false), Verdict::Warn);
        assert!(Verdict::of(&warned, false).passed());
        assert_eq!(Verdict::of(&warned, true), Verdict::Fail);
        let broke = [result(Severity::Critical, false)];
        assert_eq!(Verdict::of(&broke, false), Verdict::Fail);
        assert_eq!(Verdict::of(&[], false), Verdict::Pass);
    }
}
