//! `bmf.json`: the figures in Bencher Metric Format, the JSON that
//! continuous-benchmarking services (Bencher, and tools that read its
//! format) ingest: `{ BENCHMARK: { MEASURE: { "value", "lower_value",
//! "upper_value" } } }`.
//!
//! Each scenario and transport is a benchmark (`clients-100/sse`). Its
//! measures are the key figures; repeated runs give their median as the
//! value and the lowest and highest run as the bounds.

use serde_json::{Map, Value, json};

use crate::analysis::compare::median;
use crate::analysis::verdict::metric;
use crate::summary::{Group, Report};

/// The measures exported: a slug, and the figure's path in a summary.
const MEASURES: [(&str, &str); 11] = [
    ("throughput", "events_per_s"),
    ("latency-p50-us", "latency.p50"),
    ("latency-p99-us", "latency.p99"),
    ("latency-p999-us", "latency.p999"),
    ("schedule-lag-p99-us", "schedule_lag.p99"),
    ("connect-p95-ms", "connect.p95"),
    ("ttft-p95-ms", "ttft.p95"),
    ("error-rate", "error_rate"),
    ("server-cpu-us-per-event", "server.cpu_us_per_event"),
    ("loadgen-cpu-us-per-event", "loadgen_cpu_us_per_event"),
    ("server-rss-peak-mb", "server.rss_mb.peak"),
];

fn measures(group: &Group) -> Map<String, Value> {
    let runs: Vec<Value> = group
        .runs
        .iter()
        .map(|s| serde_json::to_value(s).expect("a summary serializes"))
        .collect();
    let mut out = Map::new();
    for (slug, path) in MEASURES {
        let Some(mut values) = runs
            .iter()
            .map(|run| metric(run, path))
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        if values.is_empty() {
            continue;
        }
        let value = median(&mut values);
        let mut measure = json!({ "value": value });
        if values.len() > 1 {
            measure["lower_value"] = json!(values[0]);
            measure["upper_value"] = json!(values[values.len() - 1]);
        }
        out.insert(slug.to_owned(), measure);
    }
    out
}

/// The Bencher Metric Format document of `report`.
pub fn render(report: &Report) -> Value {
    let benchmarks: Map<String, Value> = report
        .groups
        .iter()
        .map(|group| {
            (
                format!("{}/{}", group.scenario, group.transport),
                Value::Object(measures(group)),
            )
        })
        .collect();
    Value::Object(benchmarks)
}
