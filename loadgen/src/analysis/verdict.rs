//! The verdict: thresholds and regression budgets decide pass or fail.
//!
//! Thresholds are evaluated on the summary's JSON form, so a metric's name
//! is its path there (`latency.p99` reads `latency_us.p99`). A critical
//! threshold that breaks fails the run; a warning is reported and does not.
//! The default budgets a scenario gets are `scenario::budgets`.

use serde_json::Value;

use crate::scenario::Threshold;
use crate::summary::Summary;
use crate::summary::comparison::Comparison;
use crate::summary::verdict::{ThresholdResult, Verdict};

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
        "schedule_lag" => "schedule_lag_us",
        "connect" => "connect_ms",
        "ttft" => "ttft_ms",
        "itl" => "itl_ms",
        "itl_written" => "itl_written_ms",
        "end_to_end" => "end_to_end_us",
        "publish_to_receive" => "publish_to_receive_us",
        "publish_to_receive_same_node" => "publish_to_receive_same_node_us",
        "publish_to_receive_cross_node" => "publish_to_receive_cross_node_us",
        "publish" => "publish_ms",
        "reconnect" => "reconnect_ms",
        "resume" => "resume_ms",
        other => other,
    };
    segments
        .try_fold(summary.get(field)?, |value, key| value.get(key))?
        .as_f64()
}

/// Sets `summary`'s verdict from its thresholds and its comparison: a
/// critical threshold broken or a regression fails it; a warning broken, or
/// a figure worse beyond its budget with its noise unknown, warns.
pub fn judge(summary: &mut Summary) {
    let regressed = summary.comparison.as_ref().is_some_and(|c| c.regressed);
    let unsure = summary.comparison.as_ref().is_some_and(Comparison::unsure);
    summary.verdict = match Verdict::of(&summary.thresholds, regressed) {
        Verdict::Pass if unsure => Verdict::Warn,
        verdict => verdict,
    };
    summary.passed = summary.verdict.passed();
}
