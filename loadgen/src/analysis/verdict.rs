//! The verdict: thresholds and regression budgets decide pass or fail.
//!
//! Thresholds are evaluated on the summary's JSON form, so a metric's name
//! is its path there (`latency.p99` reads `latency_us.p99`). A critical
//! threshold that breaks fails the run; a warning is reported and does not.
//! The default budgets a scenario gets are `scenario::budgets`.

use std::time::Duration;

use serde_json::Value;

use crate::metrics::timeline::Aborted;
use crate::scenario::{Scope, Threshold};
use crate::summary::Summary;
use crate::summary::comparison::Comparison;
use crate::summary::verdict::{ThresholdResult, Verdict};

/// Evaluates `thresholds` on a summary's JSON form.
pub fn evaluate(summary: &Value, thresholds: &[Threshold]) -> Vec<ThresholdResult> {
    thresholds
        .iter()
        .map(|threshold| {
            let value = scoped(summary, threshold.scope.as_ref())
                .and_then(|figures| metric(figures, threshold.metric));
            ThresholdResult {
                expr: threshold.expr.clone(),
                metric: threshold.metric,
                value,
                ok: value.is_some_and(|v| threshold.holds(v)),
                severity: threshold.severity,
                default: threshold.default,
                abort: threshold.abort,
            }
        })
        .collect()
}

/// The figures a threshold of `scope` reads in the summary's JSON: the
/// whole summary, the first phase of that name in `phases`, or the node of
/// that base URL (or rank, from 1) in `nodes`.
fn scoped<'a>(summary: &'a Value, scope: Option<&Scope>) -> Option<&'a Value> {
    let Some(scope) = scope else {
        return Some(summary);
    };
    let (list, key, wanted) = match scope {
        Scope::Phase(name) => ("phases", "name", name),
        Scope::Node(url) => ("nodes", "url", url),
    };
    let entries = summary.get(list)?.as_array()?;
    if let (Scope::Node(_), Ok(rank)) = (scope, wanted.parse::<usize>()) {
        return entries.get(rank.checked_sub(1)?);
    }
    entries.iter().find(|entry| {
        (entry.get(key).and_then(Value::as_str))
            .is_some_and(|value| value.trim_end_matches('/') == wanted)
    })
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
        "publish_overhead" => "publish_overhead_us",
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

/// The first `abort:` threshold of `results` that broke on a measured
/// value, `elapsed` into the run: a figure not measured yet does not stop
/// a run.
pub fn aborted(results: &[ThresholdResult], elapsed: Duration) -> Option<Aborted> {
    results.iter().find_map(|result| {
        let value = result.value.filter(|_| result.abort && !result.ok)?;
        Some(Aborted {
            threshold: format!("abort:{}", result.expr),
            metric: result.metric,
            value,
            at_s: elapsed.as_secs_f64(),
        })
    })
}

/// Sets `summary`'s verdict from its thresholds and its comparison: a
/// critical threshold broken or a regression fails it; a warning broken, or
/// a figure worse beyond its budget with its noise unknown, warns.
pub fn judge(summary: &mut Summary) {
    let regressed = summary.comparison.as_ref().is_some_and(|c| c.regressed);
    let unsure = summary.comparison.as_ref().is_some_and(Comparison::unsure);
    summary.verdict = match Verdict::of(&summary.thresholds, regressed) {
        // A run an `abort:` threshold stopped, or an agent's loss left
        // incomplete, failed, whatever its shortened figures say.
        _ if summary.aborted.is_some() || summary.incomplete => Verdict::Fail,
        Verdict::Pass if unsure => Verdict::Warn,
        verdict => verdict,
    };
    summary.passed = summary.verdict.passed();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Severity;

    fn result(expr: &str, value: Option<f64>, ok: bool, abort: bool) -> ThresholdResult {
        ThresholdResult {
            expr: expr.to_owned(),
            metric: "latency.p99",
            value,
            ok,
            severity: Severity::Critical,
            default: false,
            abort,
        }
    }

    #[test]
    fn only_a_measured_broken_abort_threshold_stops_a_run() {
        let at = Duration::from_secs(7);
        let quiet = [
            result("latency.p99<1ms", Some(5_000.0), false, false),
            result("latency.p99<2ms", None, false, true),
            result("latency.p99<9ms", Some(5_000.0), true, true),
        ];
        assert_eq!(aborted(&quiet, at), None);
        let broke = [
            quiet[0].clone(),
            result("latency.p99<3ms", Some(5_000.0), false, true),
        ];
        assert_eq!(
            aborted(&broke, at),
            Some(Aborted {
                threshold: "abort:latency.p99<3ms".to_owned(),
                metric: "latency.p99",
                value: 5_000.0,
                at_s: 7.0,
            })
        );
    }

    #[test]
    fn a_scope_reads_its_phase_or_node() {
        let summary = serde_json::json!({
            "latency_us": {"p99": 1},
            "phases": [{"name": "ramp", "latency_us": {"p99": 2}}, {"name": "steady", "latency_us": {"p99": 3}}],
            "nodes": [{"url": "http://a:1", "latency_us": {"p99": 4}}, {"url": "http://b:2", "latency_us": {"p99": 5}}],
        });
        let read = |expr: &str| {
            let threshold: Threshold = expr.parse().unwrap();
            evaluate(&summary, &[threshold])[0].value
        };
        assert_eq!(read("latency.p99<1ms"), Some(1.0));
        assert_eq!(read("latency.p99{phase=steady}<1ms"), Some(3.0));
        assert_eq!(read("latency.p99{node=http://b:2/}<1ms"), Some(5.0));
        assert_eq!(read("latency.p99{node=1}<1ms"), Some(4.0));
        assert_eq!(read("latency.p99{node=3}<1ms"), None);
        assert_eq!(read("latency.p99{node=0}<1ms"), None);
        assert_eq!(read("latency.p99{phase=cool-down}<1ms"), None);
    }
}
