//! The summary table printed at the end of a run (or suite): one row per
//! summary, the figures a reader looks for first.

use comfy_table::{Cell, CellAlignment, Row, Table, presets::UTF8_FULL_CONDENSED};

use super::text::{AGENT_COLUMNS, NODE_COLUMNS, agent_cells, node_cells, or_dash};
use crate::summary::{NodeSummary, Summary};

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1_000.0)
}

fn opt<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

/// A table of `header` and `rows`, the columns `numeric` picks (by
/// position) aligned right: every terminal table, the history's too.
pub fn table<R: IntoIterator<Item = String>>(
    header: impl Into<Row>,
    rows: impl IntoIterator<Item = R>,
    numeric: impl Fn(usize) -> bool,
) -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(header);
    for row in rows {
        table.add_row(row.into_iter().enumerate().map(|(i, text)| {
            let cell = Cell::new(text);
            if numeric(i) {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    table.to_string()
}

/// Each run's phases side by side (runs of more than one phase), what
/// misbehaving clients met (runs with abuse), then each server node's
/// figures (runs over several nodes), then each agent's (runs over
/// several agents): empty if none of these.
pub fn render_breakdowns(summaries: &[Summary]) -> String {
    let phased = summaries.iter().filter(|s| s.phases.len() > 1);
    let phases: Vec<_> = phased
        .flat_map(|s| {
            s.phases.iter().map(|p| {
                [
                    format!("{} ({})", s.scenario, s.transport),
                    p.name.clone(),
                    format!("{:.1}", p.duration_s),
                    p.clients.to_string(),
                    format!("{:.0}", p.events_per_s),
                    opt(p.latency_us, |l| ms(l.p50)),
                    opt(p.latency_us, |l| ms(l.p99)),
                    opt(p.latency_us, |l| ms(l.max)),
                    opt(p.schedule_lag_us, |l| ms(l.p99)),
                    p.errors.to_string(),
                    p.shed.to_string(),
                    format!("{} / {}", p.publishes_shed, p.publishes),
                ]
            })
        })
        .collect();
    let header = [
        "run",
        "phase",
        "s",
        "clients",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "lag p99 ms",
        "errors",
        "shed",
        "publishes shed",
    ];
    let mut out = Vec::new();
    if !phases.is_empty() {
        out.push(table(header, phases, |i| i >= 2));
    }
    let abuse: Vec<_> = summaries
        .iter()
        .flat_map(|s| {
            s.abuse.iter().map(|a| {
                [
                    format!("{} ({})", s.scenario, s.transport),
                    a.kind.to_owned(),
                    a.attempts.to_string(),
                    a.refused.to_string(),
                    a.unexpected.to_string(),
                    a.held.to_string(),
                ]
            })
        })
        .collect();
    if !abuse.is_empty() {
        let header = ["run", "abuse", "attempts", "refused", "unexpected", "held"];
        out.push(table(header, abuse, |i| i >= 2));
    }
    out.extend(per_run(summaries, &NODE_COLUMNS, several_nodes, node_cells));
    out.extend(per_run(
        summaries,
        &AGENT_COLUMNS,
        |s| &s.agents,
        agent_cells,
    ));
    out.join("\n")
}

/// A run's nodes, if it has several (one node's figures are the run's).
fn several_nodes(summary: &Summary) -> &[NodeSummary] {
    if summary.nodes.len() > 1 {
        &summary.nodes
    } else {
        &[]
    }
}

/// A table of the parts `parts_of` each run has, a row each (its cells
/// by `cells`, under `columns`) after the run's name; `None` if no run
/// has any.
fn per_run<T, const N: usize>(
    summaries: &[Summary],
    columns: &[&str; N],
    parts_of: impl Fn(&Summary) -> &[T],
    cells: impl Fn(&T) -> [String; N],
) -> Option<String> {
    let rows: Vec<Vec<String>> = (summaries.iter())
        .flat_map(|s| {
            let run = format!("{} ({})", s.scenario, s.transport);
            parts_of(s)
                .iter()
                .map(|part| std::iter::once(run.clone()).chain(cells(part)).collect())
                .collect::<Vec<_>>()
        })
        .collect();
    let header: Vec<&str> = std::iter::once("run")
        .chain(columns.iter().copied())
        .collect();
    (!rows.is_empty()).then(|| table(header, rows, |i| i >= 2))
}

/// The table of `summaries`.
pub fn render(summaries: &[Summary]) -> String {
    let header = [
        "scenario",
        "transport",
        "clients",
        "events/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "lag p99 ms",
        "connect p95 ms",
        "errors",
        "gaps",
        "dups",
        "server cpu %",
        "server rss MB",
        "verdict",
    ];
    let rows = summaries.iter().map(|s| {
        let latency = s.latency_us;
        let errors = s.errors.connect
            + s.errors.http_status
            + s.errors.protocol
            + s.errors.timeout
            + s.errors.closed;
        [
            s.scenario.clone(),
            s.transport.to_owned(),
            s.clients.to_string(),
            format!("{:.0}", s.events_per_s),
            format!("{:.2}", s.bytes_per_s / 1e6),
            opt(latency, |l| ms(l.p50)),
            opt(latency, |l| ms(l.p99)),
            opt(latency, |l| ms(l.p999)),
            opt(latency, |l| ms(l.max)),
            opt(s.schedule_lag_us, |l| ms(l.p99)),
            opt(s.connect_ms, |c| format!("{:.2}", c.p95)),
            errors.to_string(),
            or_dash(s.gaps, |n| n.to_string()),
            or_dash(s.dups, |n| n.to_string()),
            opt(s.server.cpu_pct, |c| format!("{c:.0}")),
            opt(s.server.rss_mb, |r| format!("{:.0}", r.peak)),
            s.verdict.as_str().to_owned(),
        ]
    });
    table(header, rows, |i| i >= 2)
}
