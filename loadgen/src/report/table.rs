//! The summary table printed at the end of a run (or suite): one row per
//! summary, the figures a reader looks for first.

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

use super::Summary;

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1_000.0)
}

fn opt<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

/// The table of `summaries`.
pub fn render(summaries: &[Summary]) -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header([
        "scenario",
        "transport",
        "clients",
        "events/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "connect p95 ms",
        "errors",
        "gaps",
        "dups",
        "server cpu %",
        "server rss MB",
        "verdict",
    ]);
    for s in summaries {
        let latency = s.latency_us;
        let errors = s.errors.connect
            + s.errors.http_status
            + s.errors.protocol
            + s.errors.timeout
            + s.errors.closed;
        let row = [
            s.scenario.clone(),
            s.transport.to_owned(),
            s.clients.to_string(),
            format!("{:.0}", s.events_per_s),
            format!("{:.2}", s.bytes_per_s / 1e6),
            opt(latency, |l| ms(l.p50)),
            opt(latency, |l| ms(l.p99)),
            opt(latency, |l| ms(l.p999)),
            opt(latency, |l| ms(l.max)),
            opt(s.connect_ms, |c| format!("{:.2}", c.p95)),
            errors.to_string(),
            s.gaps.to_string(),
            s.dups.to_string(),
            opt(s.server.cpu_pct, |c| format!("{c:.0}")),
            opt(s.server.rss_mb, |r| format!("{:.0}", r.peak)),
            s.verdict.as_str().to_owned(),
        ];
        table.add_row(row.into_iter().enumerate().map(|(i, text)| {
            let cell = Cell::new(text);
            if i >= 2 {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    table.to_string()
}
