//! Thresholds: `METRIC OP VALUE` expressions such as `latency.p99<50ms`,
//! `error_rate<0.5%`, `events_per_s>10000` or `gaps==0`, checked against a
//! run's summary. A `warn:` prefix (`warn:latency.p95<50ms`) makes a
//! threshold a warning: reported, but it does not fail the run; without it a
//! threshold is critical. An `abort:` prefix makes it critical and checked
//! every second during the run, which it stops as soon as it breaks. A
//! scope after the metric (`latency.p99{phase=steady}<5ms`,
//! `events_per_s{node=http://10.0.0.2:8080}>100`) reads the figure of one
//! phase or one server node instead of the whole run's. A value is
//! converted to the unit the summary uses for its metric (µs for
//! `latency.*`, ms for `connect.*` and `ttft.*`, a fraction for
//! `error_rate`), so `50ms` and `50000us` mean the same.

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
    ("publish_overhead.p50", Unit::Micros),
    ("publish_overhead.p99", Unit::Micros),
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

/// The metrics a phase or a node has figures of: the first segment of a
/// metric, or the whole name (`events`).
const SCOPED_METRICS: &[&str] = &[
    "latency",
    "end_to_end",
    "schedule_lag",
    "events",
    "events_per_s",
];

/// The metrics only a node has figures of (publishes go to nodes, not to
/// phases).
const NODE_METRICS: &[&str] = &[
    "publish_to_receive",
    "publish_to_receive_cross_node",
    "publish",
];

/// Which part of a run a threshold reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The phase of this name (every phase of the name, the first one
    /// reported when phases share it).
    Phase(String),
    /// The server node of this base URL, or the node of this rank among
    /// the run's nodes, counting from 1 (local nodes' ports are not known
    /// in advance).
    Node(String),
}

impl Scope {
    /// `{phase=NAME}` or `{node=URL}` without its braces.
    fn parse(inside: &str) -> Result<Self, String> {
        let (key, value) = inside.split_once('=').ok_or_else(|| {
            format!("scope {{{inside}}}: expected {{phase=NAME}} or {{node=URL}}")
        })?;
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("scope {{{inside}}}: the {} is empty", key.trim()));
        }
        match key.trim() {
            "phase" => Ok(Self::Phase(value.to_owned())),
            "node" => Ok(Self::Node(value.trim_end_matches('/').to_owned())),
            other => Err(format!(
                "scope key {other:?} is not one of phase, node (one scope per threshold)"
            )),
        }
    }

    /// Whether a phase's or a node's figures include `metric`.
    fn has(&self, metric: &str) -> bool {
        let first = metric.split('.').next().unwrap_or(metric);
        let scoped = |list: &[&str]| list.iter().any(|m| *m == first || *m == metric);
        scoped(SCOPED_METRICS) || (matches!(self, Self::Node(_)) && scoped(NODE_METRICS))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Phase(name) => write!(f, "{{phase={name}}}"),
            Self::Node(url) => write!(f, "{{node={url}}}"),
        }
    }
}

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
    /// Prefixes that select a severity, and whether the threshold aborts
    /// the run; none means critical.
    const PREFIXES: [(&'static str, Severity, bool); 4] = [
        ("warn:", Severity::Warning, false),
        ("warning:", Severity::Warning, false),
        ("critical:", Severity::Critical, false),
        ("abort:", Severity::Critical, true),
    ];

    /// The severity `expr` asks for, whether it aborts, and the rest of it.
    fn split(expr: &str) -> (Severity, bool, &str) {
        Self::PREFIXES
            .iter()
            .find_map(|&(prefix, severity, abort)| {
                Some((severity, abort, expr.strip_prefix(prefix)?.trim_start()))
            })
            .unwrap_or((Severity::Critical, false, expr))
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
    /// Checked every second during the run, which stops when it breaks.
    pub abort: bool,
    /// The metric's path in the summary, such as `latency.p99`.
    pub metric: &'static str,
    /// The phase or node whose figure it reads (none: the whole run's).
    pub scope: Option<Scope>,
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
        if self.abort {
            f.write_str("abort:")?;
        } else if self.severity == Severity::Warning {
            f.write_str("warn:")?;
        }
        f.write_str(&self.expr)
    }
}

impl FromStr for Threshold {
    type Err = Error;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        let (severity, abort, expr) = Severity::split(expr.trim());
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
        let (name, scope) = split_scope(expr[..at].trim()).map_err(&fail)?;
        let value = expr[at + symbol.len()..].trim();
        let &(metric, unit) = METRICS.iter().find(|(m, _)| *m == name).ok_or_else(|| {
            let known: Vec<&str> = METRICS.iter().map(|(m, _)| *m).collect();
            fail(format!(
                "unknown metric {name:?}; known: {}",
                known.join(", ")
            ))
        })?;
        if let Some(scope) = scope.as_ref().filter(|scope| !scope.has(metric)) {
            return Err(fail(format!(
                "{metric} has no figure per {}; scoped metrics: {}",
                match scope {
                    Scope::Phase(_) => "phase",
                    Scope::Node(_) => "node",
                },
                scoped_metrics(scope).join(", ")
            )));
        }
        if abort && matches!(op, Op::Gt | Op::Ge) && is_count(metric) {
            return Err(fail(format!(
                "{metric} is a count, which only grows during a run: an abort: threshold \
                 can bound it from above (<, <=, ==), not from below"
            )));
        }
        let value = parse_value(value, unit).map_err(fail)?;
        Ok(Self {
            expr: expr.to_owned(),
            severity,
            default: false,
            abort,
            metric,
            scope,
            op,
            value,
        })
    }
}

/// Whether `metric` counts things over the whole run (so that a run
/// judged before its end has less of it than it will have).
fn is_count(metric: &str) -> bool {
    const COUNTS: [&str; 6] = [
        "events",
        "requests",
        "output_tokens",
        "gaps",
        "dups",
        "behind_at_end",
    ];
    COUNTS.contains(&metric)
        || ["counts.", "auth.", "errors."]
            .iter()
            .any(|prefix| metric.starts_with(prefix))
}

/// `latency.p99{phase=steady}` split into the metric's name and its scope.
fn split_scope(name: &str) -> Result<(&str, Option<Scope>), String> {
    let Some((metric, rest)) = name.split_once('{') else {
        return Ok((name, None));
    };
    let inside = rest
        .strip_suffix('}')
        .ok_or_else(|| format!("scope {{{rest}: expected a closing }} before the operator"))?;
    Ok((metric.trim(), Some(Scope::parse(inside)?)))
}

/// The metrics a `scope` may name, for an error message.
fn scoped_metrics(scope: &Scope) -> Vec<&'static str> {
    METRICS
        .iter()
        .map(|&(m, _)| m)
        .filter(|m| scope.has(m))
        .collect()
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
    fn a_scope_names_a_phase_or_a_node() {
        let t = parse("latency.p99{phase=steady}<5ms");
        assert_eq!(
            (t.metric, t.scope, t.value),
            (
                "latency.p99",
                Some(Scope::Phase("steady".to_owned())),
                5_000.0
            )
        );
        let t = parse("warn:events_per_s{node=http://127.0.0.2:8080/} > 100");
        assert_eq!(
            t.scope,
            Some(Scope::Node("http://127.0.0.2:8080".to_owned()))
        );
        assert_eq!(t.severity, Severity::Warning);
        assert_eq!(
            t.to_string(),
            "warn:events_per_s{node=http://127.0.0.2:8080/} > 100"
        );
        assert_eq!(
            parse("publish.p99{node=2}<10ms").scope,
            Some(Scope::Node("2".to_owned()))
        );
        let message = |expr: &str| expr.parse::<Threshold>().unwrap_err().to_string();
        assert!(
            message("error_rate{phase=steady}<1%").contains("error_rate has no figure per phase")
        );
        assert!(message("publish.p99{phase=steady}<1ms").contains("scoped metrics: latency.p50"));
        assert!(message("latency.p99{tag=x}<1ms").contains("scope key \"tag\""));
        assert!(message("latency.p99{phase=}<1ms").contains("the phase is empty"));
        assert!(message("latency.p99{phase=a<1ms").contains("expected a closing }"));
        assert!(message("latency.p99{steady}<1ms").contains("expected {phase=NAME}"));
    }

    #[test]
    fn an_abort_prefix_makes_a_critical_threshold_that_stops_the_run() {
        let t = parse("abort: error_rate<5%");
        assert_eq!((t.severity, t.abort), (Severity::Critical, true));
        assert_eq!(t.to_string(), "abort:error_rate<5%");
        assert!(!parse("critical:gaps==0").abort);
        assert!(!parse("warn:gaps==0").abort);
        assert!(parse("abort:gaps==0").abort);
        let err = "abort:events>100".parse::<Threshold>().unwrap_err();
        assert!(err.to_string().contains("only grows during a run"), "{err}");
        assert!(parse("abort:events_per_s>100").abort);
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
