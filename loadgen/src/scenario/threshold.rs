//! Thresholds: `METRIC OP VALUE` expressions such as `latency.p99<50ms`,
//! `error_rate<0.5%`, `events_per_s>10000` or `gaps==0`, checked against a
//! run's summary. A `warn:` prefix (`warn:latency.p95<50ms`) makes a
//! threshold a warning: reported, but it does not fail the run; without it a
//! threshold is critical. A value is converted to the unit the summary uses for its
//! metric (µs for `latency.*`, ms for `connect.*` and `ttft.*`, a fraction
//! for `error_rate`), so `50ms` and `50000us` mean the same.

use std::fmt;
use std::str::FromStr;

/// The unit a metric is reported in, which decides what values may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A duration in microseconds: values need `us`, `µs`, `ms` or `s`.
    Micros,
    /// A duration in milliseconds: values need `us`, `µs`, `ms` or `s`.
    Millis,
    /// A fraction: values are `0.5%` or `0.005`.
    Fraction,
    /// A plain number (count, rate, percent, megabytes).
    Number,
    /// Bytes: values are `512`, `64kB`, `1MB`, `2GB` (powers of 1000) or
    /// `64KiB`, `1MiB`, `2GiB` (powers of 1024).
    Bytes,
}

/// Every metric a threshold may name, with its unit.
const METRICS: &[(&str, Unit)] = &[
    ("latency.p50", Unit::Micros),
    ("latency.p90", Unit::Micros),
    ("latency.p95", Unit::Micros),
    ("latency.p99", Unit::Micros),
    ("latency.p999", Unit::Micros),
    ("latency.max", Unit::Micros),
    ("schedule_lag.p50", Unit::Micros),
    ("schedule_lag.p90", Unit::Micros),
    ("schedule_lag.p95", Unit::Micros),
    ("schedule_lag.p99", Unit::Micros),
    ("schedule_lag.p999", Unit::Micros),
    ("schedule_lag.max", Unit::Micros),
    ("connect.p50", Unit::Millis),
    ("connect.p95", Unit::Millis),
    ("connect.p99", Unit::Millis),
    ("ttft.p50", Unit::Millis),
    ("ttft.p95", Unit::Millis),
    ("ttft.p99", Unit::Millis),
    ("itl.p50", Unit::Millis),
    ("itl.p95", Unit::Millis),
    ("itl.p99", Unit::Millis),
    ("itl.max", Unit::Millis),
    ("itl_written.p50", Unit::Millis),
    ("itl_written.p95", Unit::Millis),
    ("itl_written.p99", Unit::Millis),
    ("itl_written.max", Unit::Millis),
    ("end_to_end.p50", Unit::Micros),
    ("end_to_end.p95", Unit::Micros),
    ("end_to_end.p99", Unit::Micros),
    ("end_to_end.max", Unit::Micros),
    ("publish_to_receive.p50", Unit::Micros),
    ("publish_to_receive.p95", Unit::Micros),
    ("publish_to_receive.p99", Unit::Micros),
    ("publish_to_receive_same_node.p50", Unit::Micros),
    ("publish_to_receive_same_node.p99", Unit::Micros),
    ("publish_to_receive_cross_node.p50", Unit::Micros),
    ("publish_to_receive_cross_node.p95", Unit::Micros),
    ("publish_to_receive_cross_node.p99", Unit::Micros),
    ("publish.p95", Unit::Millis),
    ("publish.p99", Unit::Millis),
    ("reconnect.p95", Unit::Millis),
    ("reconnect.p99", Unit::Millis),
    ("resume.p95", Unit::Millis),
    ("resume.p99", Unit::Millis),
    ("error_rate", Unit::Fraction),
    ("connect_success", Unit::Fraction),
    ("events", Unit::Number),
    ("events_per_s", Unit::Number),
    ("bytes_per_s", Unit::Number),
    ("gaps", Unit::Number),
    ("dups", Unit::Number),
    ("behind_at_end", Unit::Number),
    ("counts.shed", Unit::Number),
    ("counts.publishes_shed", Unit::Number),
    ("counts.abuse_refused", Unit::Number),
    ("counts.abuse_unexpected", Unit::Number),
    ("auth.token_refreshes", Unit::Number),
    ("auth.refreshes_refused", Unit::Number),
    ("auth.ended.token_expired", Unit::Number),
    ("auth.ended.revoked", Unit::Number),
    ("errors.connect", Unit::Number),
    ("errors.http_status", Unit::Number),
    ("errors.protocol", Unit::Number),
    ("errors.timeout", Unit::Number),
    ("errors.closed", Unit::Number),
    ("errors.unparsed", Unit::Number),
    ("requests", Unit::Number),
    ("output_tokens", Unit::Number),
    ("tokens_per_s.p50", Unit::Number),
    ("tokens_per_s.p95", Unit::Number),
    ("tokens_per_s.p99", Unit::Number),
    ("server.cpu_pct", Unit::Number),
    ("server.rss_mb.peak", Unit::Number),
    ("server.rss_mb.end", Unit::Number),
    ("server.cpu_us_per_event", Unit::Number),
    ("loadgen_cpu_pct", Unit::Number),
    ("loadgen_cpu_us_per_event", Unit::Number),
    ("heap.growth_per_hour", Unit::Bytes),
    ("rss.growth_per_hour", Unit::Bytes),
    ("heap.retained_per_stream", Unit::Bytes),
    ("rss.retained_per_stream", Unit::Bytes),
    ("heap.recovery", Unit::Fraction),
    ("rss.recovery", Unit::Fraction),
];

/// What a broken threshold means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Breaking it fails the run (exit code 1).
    Critical,
    /// Breaking it is reported, and the run still passes.
    Warning,
}

impl Severity {
    /// Prefixes that select a severity; none means critical.
    const PREFIXES: [(&'static str, Severity); 3] = [
        ("warn:", Severity::Warning),
        ("warning:", Severity::Warning),
        ("critical:", Severity::Critical),
    ];

    /// The severity `expr` asks for, and the rest of it.
    fn split(expr: &str) -> (Severity, &str) {
        Self::PREFIXES
            .iter()
            .find_map(|&(prefix, severity)| Some((severity, expr.strip_prefix(prefix)?)))
            .unwrap_or((Severity::Critical, expr))
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// Operators, longest first so that `<=` is not read as `<`.
    const ALL: [(&'static str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => actual == limit,
            Op::Ne => actual != limit,
        }
    }
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The expression as written (trimmed), without its severity prefix.
    pub expr: String,
    /// Whether breaking it fails the run.
    pub severity: Severity,
    /// A default budget (see `verdict`), not one given by the user.
    pub default: bool,
    /// The metric's path in the summary, such as `latency.p99`.
    pub metric: &'static str,
    /// The comparison.
    pub op: Op,
    /// The limit, in the metric's unit.
    pub value: f64,
}

/// Why an expression is not a threshold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("threshold {expr:?}: {reason}")]
pub struct Error {
    expr: String,
    reason: String,
}

impl Threshold {
    /// Whether `actual` (in the metric's unit) satisfies the threshold.
    pub fn holds(&self, actual: f64) -> bool {
        self.op.holds(actual, self.value)
    }
}

impl serde::Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warn:")?;
        }
        f.write_str(&self.expr)
    }
}

impl FromStr for Threshold {
    type Err = Error;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        let (severity, expr) = Severity::split(expr.trim());
        let expr = expr.trim();
        let fail = |reason: String| Error {
            expr: expr.to_owned(),
            reason,
        };
        let (at, symbol, op) = Op::ALL
            .iter()
            .filter_map(|&(symbol, op)| expr.find(symbol).map(|at| (at, symbol, op)))
            .min_by_key(|&(at, symbol, _)| (at, std::cmp::Reverse(symbol.len())))
            .ok_or_else(|| {
                fail("expected METRIC OP VALUE with OP one of < <= > >= == !=".to_owned())
            })?;
        let name = expr[..at].trim();
        let value = expr[at + symbol.len()..].trim();
        let &(metric, unit) = METRICS.iter().find(|(m, _)| *m == name).ok_or_else(|| {
            let known: Vec<&str> = METRICS.iter().map(|(m, _)| *m).collect();
            fail(format!(
                "unknown metric {name:?}; known: {}",
                known.join(", ")
            ))
        })?;
        let value = parse_value(value, unit).map_err(fail)?;
        Ok(Self {
            expr: expr.to_owned(),
            severity,
            default: false,
            metric,
            op,
            value,
        })
    }
}

/// `text` converted to `unit`.
fn parse_value(text: &str, unit: Unit) -> Result<f64, String> {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '+')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let number: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    match (unit, suffix.trim()) {
        (Unit::Micros | Unit::Millis, "") => Err("give a unit: us, ms or s".to_owned()),
        (Unit::Micros, "us" | "µs")
        | (Unit::Millis, "ms")
        | (Unit::Fraction | Unit::Number, "") => Ok(number),
        (Unit::Micros, "ms") | (Unit::Millis, "s") => Ok(number * 1_000.0),
        (Unit::Micros, "s") => Ok(number * 1_000_000.0),
        (Unit::Millis, "us" | "µs") => Ok(number / 1_000.0),
        (Unit::Fraction, "%") => Ok(number / 100.0),
        (Unit::Bytes, unit) => bytes_in(unit)
            .map(|scale| number * scale)
            .ok_or_else(|| format!("unit {unit:?} is not one of B, kB, MB, GB, KiB, MiB, GiB")),
        (_, other) => Err(format!("unit {other:?} does not fit this metric")),
    }
}

/// Bytes in one `unit` of memory.
fn bytes_in(unit: &str) -> Option<f64> {
    Some(match unit {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(expr: &str) -> Threshold {
        expr.parse().unwrap()
    }

    #[test]
    fn the_forms_of_cli_md_parse_into_summary_units() {
        let t = parse("latency.p99<50ms");
        assert_eq!((t.metric, t.op, t.value), ("latency.p99", Op::Lt, 50_000.0));
        let t = parse("connect.p95 < 100ms");
        assert_eq!((t.metric, t.value), ("connect.p95", 100.0));
        let t = parse("error_rate<0.5%");
        assert_eq!((t.op, t.value), (Op::Lt, 0.005));
        let t = parse("events_per_s>10_000");
        assert_eq!((t.op, t.value), (Op::Gt, 10_000.0));
        let t = parse("gaps==0");
        assert_eq!((t.op, t.value), (Op::Eq, 0.0));
        assert_eq!(parse("ttft.p95<=1.5s").value, 1_500.0);
        assert_eq!(parse("latency.max>=250us").op, Op::Ge);
        assert_eq!(parse("dups!=1").op, Op::Ne);
        assert_eq!(parse("connect_success>=99%").value, 0.99);
        assert_eq!(parse("heap.growth_per_hour<1MB").value, 1e6);
        assert_eq!(parse("rss.growth_per_hour<64MiB").value, 64.0 * 1048576.0);
        assert_eq!(parse("heap.recovery>90%").value, 0.9);
        let err = "heap.growth_per_hour<1furlong"
            .parse::<Threshold>()
            .unwrap_err();
        assert!(err.to_string().contains("not one of B, kB"), "{err}");
    }

    #[test]
    fn a_warn_prefix_makes_a_warning() {
        let t = parse("warn:latency.p95<50ms");
        assert_eq!(
            (t.severity, t.expr.as_str()),
            (Severity::Warning, "latency.p95<50ms")
        );
        assert_eq!(t.to_string(), "warn:latency.p95<50ms");
        assert_eq!(parse(" warning: gaps==0").severity, Severity::Warning);
        assert_eq!(parse("critical:gaps==0").severity, Severity::Critical);
        assert_eq!(parse("gaps==0").severity, Severity::Critical);
        assert!(
            "warn:nope<1"
                .parse::<Threshold>()
                .unwrap_err()
                .to_string()
                .contains("unknown metric \"nope\"")
        );
    }

    #[test]
    fn evaluation_compares_in_the_metric_unit() {
        let t = parse("latency.p99<50ms");
        assert!(t.holds(49_999.0));
        assert!(!t.holds(50_000.0));
        assert!(parse("gaps==0").holds(0.0));
        assert!(!parse("error_rate<0.5%").holds(0.01));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let message = |expr: &str| expr.parse::<Threshold>().unwrap_err().to_string();
        assert!(message("latency.p99 50ms").contains("expected METRIC OP VALUE"));
        assert!(message("latancy.p99<5ms").contains("unknown metric \"latancy.p99\""));
        assert!(message("latency.p99<50").contains("give a unit"));
        assert!(message("latency.p99<50kg").contains("unit \"kg\""));
        assert!(message("gaps<lots").contains("does not start with a number"));
        assert!(message("error_rate<5ms").contains("unit \"ms\""));
    }
}
