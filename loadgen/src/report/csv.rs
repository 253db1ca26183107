//! `timeline.csv`: the timeline of one run, one row per second (and one at each change of phase), for
//! spreadsheets and plotting tools. Columns are the fields of
//! [`Row`] in order, with the derived `loadgen_cpu_share`
//! before `loadgen_rss_mb`; a figure not measured is an empty cell.

use std::fmt::Write as _;

use crate::metrics::timeline::Row;
use crate::summary::Summary;

/// The header line's columns.
pub const COLUMNS: [&str; 21] = [
    "t_s",
    "phase",
    "clients",
    "events_per_s",
    "bytes_per_s",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p95_us",
    "latency_p99_us",
    "latency_p999_us",
    "latency_max_us",
    "errors",
    "server_cpu_pct",
    "server_rss_mb",
    "server_heap_bytes",
    "loadgen_cpu_pct",
    "loadgen_cpu_share",
    "loadgen_rss_mb",
    "connects",
    "schedule_lag_p50_us",
    "schedule_lag_p99_us",
];

fn cell<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// A phase name as one CSV field (RFC 4180 quoting when needed).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The load generator's share of the CPU the two processes used this
/// second (0 to 1), so a reader sees at once who was busy.
fn loadgen_share(row: &Row) -> Option<f64> {
    let (server, loadgen) = (row.server_cpu_pct?, row.loadgen_cpu_pct?);
    (server + loadgen > 0.0).then(|| loadgen / (server + loadgen))
}

/// The CSV text of `summary`'s timeline.
pub fn timeline(summary: &Summary) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for row in &summary.timeline {
        let cells = [
            format!("{:.3}", row.t_s),
            field(&row.phase),
            row.clients.to_string(),
            format!("{:.1}", row.events_per_s),
            format!("{:.1}", row.bytes_per_s),
            cell(row.latency_p50_us),
            cell(row.latency_p90_us),
            cell(row.latency_p95_us),
            cell(row.latency_p99_us),
            cell(row.latency_p999_us),
            cell(row.latency_max_us),
            row.errors.to_string(),
            cell(row.server_cpu_pct.map(|v| format!("{v:.1}"))),
            cell(row.server_rss_mb.map(|v| format!("{v:.2}"))),
            cell(row.server_heap_bytes),
            cell(row.loadgen_cpu_pct.map(|v| format!("{v:.1}"))),
            cell(loadgen_share(row).map(|v| format!("{v:.3}"))),
            cell(row.loadgen_rss_mb.map(|v| format!("{v:.2}"))),
            row.connects.to_string(),
            cell(row.schedule_lag_p50_us),
            cell(row.schedule_lag_p99_us),
        ];
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;
    use crate::summary::Span;

    #[test]
    fn the_load_generators_memory_is_a_column_and_a_span() {
        let summary = fixture::summary(&fixture::scenario("single", &[]), 3);
        let csv = timeline(&summary);
        let rss: Vec<&str> = csv.lines().filter_map(|l| l.rsplit(',').nth(3)).collect();
        assert_eq!(rss, ["loadgen_rss_mb", "30.00", "31.00", "32.00"]);
        let span = Span {
            start: 30.0,
            peak: 32.0,
            end: 32.0,
        };
        assert_eq!(summary.loadgen_rss_mb, Some(span));
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(field("steady"), "steady");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
