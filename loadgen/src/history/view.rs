//! How `history` shows runs: the listing of the newest, and a scenario's
//! trend (a table, and a sparkline per key figure), oldest first.

use super::Entry;
use crate::report::table::table;

/// A key figure of a run: its name, its value, and how it reads.
struct Figure {
    name: &'static str,
    value: fn(&Entry) -> Option<f64>,
    show: fn(f64) -> String,
}

impl Figure {
    /// Its cell in `entry`'s row (`-`: not measured).
    fn cell(&self, entry: &Entry) -> String {
        (self.value)(entry).map_or_else(|| "-".to_owned(), self.show)
    }
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1_000.0)
}

const EVENTS: Figure = Figure {
    name: "events/s",
    value: |e| Some(e.events_per_s),
    show: |v| format!("{v:.0}"),
};
const P50: Figure = Figure {
    name: "p50 ms",
    value: |e| e.latency_p50_us.map(|us| us as f64),
    show: ms,
};
const P99: Figure = Figure {
    name: "p99 ms",
    value: |e| e.latency_p99_us.map(|us| us as f64),
    show: ms,
};
const ERRORS: Figure = Figure {
    name: "error rate",
    value: |e| e.error_rate,
    show: |v| format!("{:.2}%", v * 100.0),
};
const CPU: Figure = Figure {
    name: "server cpu %",
    value: |e| e.server_cpu_pct,
    show: |v| format!("{v:.1}"),
};
const RSS: Figure = Figure {
    name: "server rss MB",
    value: |e| e.server_rss_peak_mib,
    show: |v| format!("{v:.1}"),
};

/// `1 run`, `2 runs`.
fn count(runs: usize) -> String {
    match runs {
        1 => "1 run".to_owned(),
        n => format!("{n} runs"),
    }
}

/// `text`, or `-` for nothing.
fn or_dash(text: Option<&str>) -> String {
    text.unwrap_or("-").to_owned()
}

/// The commit a run was made from, short, `+dirty` if the checkout was.
fn commit(entry: &Entry) -> String {
    let Some(commit) = &entry.git_commit else {
        return "-".to_owned();
    };
    let short: String = commit.chars().take(10).collect();
    match entry.git_dirty {
        Some(true) => format!("{short}+dirty"),
        _ => short,
    }
}

/// A column of a run table before its figures: its header, its cell, and
/// whether it holds a number (right-aligned).
struct Column {
    name: &'static str,
    cell: fn(&Entry) -> String,
    numeric: bool,
}

impl Column {
    /// A column of text.
    const fn text(name: &'static str, cell: fn(&Entry) -> String) -> Self {
        Self {
            name,
            cell,
            numeric: false,
        }
    }

    /// A column of numbers.
    const fn number(name: &'static str, cell: fn(&Entry) -> String) -> Self {
        Self {
            name,
            cell,
            numeric: true,
        }
    }
}

const TIME: Column = Column::text("time", |e| e.started_at.clone());
const RUN_ID: Column = Column::text("run id", |e| e.run_id.clone());
const LABEL: Column = Column::text("label", |e| or_dash(e.label.as_deref()));
const SCENARIO: Column = Column::text("scenario", |e| e.scenario.clone());
const TRANSPORT: Column = Column::text("transport", |e| e.transport.clone());
const REPEAT: Column = Column::number("repeat", |e| e.repeat.to_string());
const CLIENTS: Column = Column::number("clients", |e| e.clients.to_string());

/// A table of `runs`, a row each: `columns`, then `figures`, then the
/// verdict and the commit. Numbers are right-aligned: the numeric columns
/// and the figures.
fn run_table<'a>(
    runs: impl IntoIterator<Item = &'a Entry>,
    columns: &[Column],
    figures: &[Figure],
) -> String {
    let mut header: Vec<&str> = columns.iter().map(|c| c.name).collect();
    header.extend(figures.iter().map(|f| f.name));
    header.extend(["verdict", "commit"]);
    let rows = runs.into_iter().map(|e| {
        let mut row: Vec<String> = columns.iter().map(|c| (c.cell)(e)).collect();
        row.extend(figures.iter().map(|f| f.cell(e)));
        row.extend([e.verdict.clone(), commit(e)]);
        row
    });
    let numeric = |i: usize| {
        columns
            .get(i)
            .map_or(i < columns.len() + figures.len(), |c| c.numeric)
    };
    table(header, rows, numeric)
}

/// The newest runs, oldest first: one row each.
pub(super) fn listing(entries: &[Entry]) -> String {
    let columns = [TIME, RUN_ID, LABEL, SCENARIO, TRANSPORT, CLIENTS];
    format!(
        "{}, oldest first:\n{}",
        count(entries.len()),
        run_table(entries, &columns, &[EVENTS, P99, ERRORS])
    )
}

/// The trend of `scenario`'s key figures over `entries`, oldest first, for
/// each transport it ran on.
pub(super) fn trend(scenario: &str, entries: &[Entry]) -> String {
    let mut transports: Vec<&str> = Vec::new();
    for entry in entries {
        if !transports.contains(&entry.transport.as_str()) {
            transports.push(&entry.transport);
        }
    }
    transports
        .into_iter()
        .map(|transport| {
            let runs: Vec<&Entry> = entries
                .iter()
                .filter(|e| e.transport == transport)
                .collect();
            trend_of(scenario, transport, &runs)
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The trend of one scenario on one transport: a table, then a sparkline
/// per figure.
fn trend_of(scenario: &str, transport: &str, runs: &[&Entry]) -> String {
    let figures = [EVENTS, P50, P99, ERRORS, CPU, RSS];
    let columns = [TIME, RUN_ID, LABEL, REPEAT, CLIENTS];
    let width = figures
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or_default();
    let lines: Vec<String> = figures
        .iter()
        .map(|figure| {
            let values: Vec<Option<f64>> = runs.iter().map(|e| (figure.value)(e)).collect();
            format!(
                "{:<width$}  {}",
                figure.name,
                spark_line(&values, figure.show)
            )
        })
        .collect();
    format!(
        "{scenario} ({transport}): {}, oldest first\n{}\n{}",
        count(runs.len()),
        run_table(runs.iter().copied(), &columns, &figures),
        lines.join("\n")
    )
}

/// `values` as a sparkline, then the first and last values and the range.
fn spark_line(values: &[Option<f64>], show: fn(f64) -> String) -> String {
    let measured: Vec<f64> = values.iter().flatten().copied().collect();
    let (Some(first), Some(last)) = (measured.first(), measured.last()) else {
        return "not measured".to_owned();
    };
    let min = measured.iter().copied().fold(f64::INFINITY, f64::min);
    let max = measured.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{}  {} → {}  (min {}, max {})",
        sparkline(values),
        show(*first),
        show(*last),
        show(min),
        show(max)
    )
}

/// One bar per value, scaled from the lowest to the highest; `·` for a
/// value missing, mid-height bars when every value is the same.
fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let measured = values.iter().flatten().copied();
    let min = measured.clone().fold(f64::INFINITY, f64::min);
    let max = measured.fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|value| match value {
            None => '·',
            Some(_) if max <= min => BARS[3],
            Some(v) => {
                let level = ((v - min) / (max - min) * 7.0).round() as usize;
                BARS[level.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_from_lowest_to_highest_and_mark_gaps() {
        assert_eq!(sparkline(&[Some(1.0), Some(8.0), None, Some(4.5)]), "▁█·▅");
        assert_eq!(sparkline(&[Some(3.0), Some(3.0)]), "▄▄");
        assert_eq!(sparkline(&[None]), "·");
        assert_eq!(
            spark_line(&[Some(2.0), None, Some(1.0)], |v| format!("{v}")),
            "█·▁  2 → 1  (min 1, max 2)"
        );
        assert_eq!(
            spark_line(&[None, None], |v| format!("{v}")),
            "not measured"
        );
    }

    #[test]
    fn commits_are_short_and_say_when_the_checkout_was_dirty() {
        let entry = |git_commit: Option<&str>, git_dirty| Entry {
            started_at: String::new(),
            run_id: String::new(),
            label: None,
            scenario: String::new(),
            transport: String::new(),
            repeat: 1,
            clients: 1,
            events_per_s: 0.0,
            latency_p50_us: None,
            latency_p99_us: None,
            error_rate: None,
            server_cpu_pct: None,
            server_rss_peak_mib: None,
            verdict: String::new(),
            git_commit: git_commit.map(str::to_owned),
            git_dirty,
        };
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(commit(&entry(Some(sha), Some(true))), "0123456789+dirty");
        assert_eq!(commit(&entry(Some(sha), Some(false))), "0123456789");
        assert_eq!(commit(&entry(None, None)), "-");
    }
}
