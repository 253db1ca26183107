//! `report.md`: fits a CI job summary (GitHub's `$GITHUB_STEP_SUMMARY`,
//! GitLab's report pages). The verdict comes first, with every broken
//! threshold and regression named; then the scenarios' figures, each
//! scenario's thresholds, comparison and memory, the capacity estimate, and the
//! manifest that makes the figures reproducible. The terminal's closing
//! lines ([`verdict_lines`](super::text::verdict_lines)) say the same findings in plain text.

use std::fmt::Write as _;

use super::text::{
    AGENT_COLUMNS, NODE_COLUMNS, agent_cells, change_text, commit, costs, display, estimate_text,
    findings, headline, ms, node_cells, notes, or_dash,
};
use crate::analysis::compare::labelled;
use crate::analysis::memory::bytes_text;
use crate::scenario::Severity;
use crate::summary::comparison::{Comparison, GateVerdict, Status};
use crate::summary::memory::Memory;
use crate::summary::{Group, Report, Summary};

/// The comparison table of one scenario.
pub fn comparison(comparison: &Comparison) -> String {
    let mut out = format!(
        "Baseline: {}\n\n| figure | baseline | current | change | budget | decision |\n|---|---|---|---|---|---|\n",
        comparison.baseline
    );
    for change in &comparison.changes {
        let decision = match change.status {
            Status::Regression => "**REGRESSION**".to_owned(),
            _ => change.decision_text(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {decision} |",
            labelled(&change.label, change.unit),
            estimate_text(change.baseline),
            estimate_text(change.current),
            change_text(change),
            change.budget,
        );
    }
    let _ = writeln!(
        out,
        "\nVerdict: {}{}.\n\nHow the decision was made: {}.",
        comparison.verdict.as_str(),
        undecided(comparison),
        comparison.method
    );
    out
}

/// What an inconclusive comparison needs for a decision, after its verdict.
fn undecided(comparison: &Comparison) -> String {
    if comparison.verdict == GateVerdict::Inconclusive {
        format!(": {}", comparison.needs_text())
    } else {
        String::new()
    }
}

fn scenarios_table(report: &Report) -> String {
    let mut out = String::from(
        "| scenario | transport | runs | clients | events/s | p50 ms | p95 ms | p99 ms | schedule lag p99 ms | errors | gaps | dups | server CPU % | load generator CPU % | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for group in &report.groups {
        // The figures of the median run by throughput stand for the group.
        let s = representative(group);
        let errors = s.errors.connect
            + s.errors.http_status
            + s.errors.protocol
            + s.errors.timeout
            + s.errors.closed;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {errors} | {} | {} | {} | {} | {} |",
            group.scenario,
            group.transport,
            group.runs.len(),
            s.clients,
            s.events_per_s,
            or_dash(s.latency_us, |l| ms(l.p50)),
            or_dash(s.latency_us, |l| ms(l.p95)),
            or_dash(s.latency_us, |l| ms(l.p99)),
            or_dash(s.schedule_lag_us, |l| ms(l.p99)),
            or_dash(s.gaps, |n| n.to_string()),
            or_dash(s.dups, |n| n.to_string()),
            or_dash(s.server.cpu_pct, |c| format!("{c:.0}")),
            or_dash(s.loadgen_cpu_pct, |c| format!("{c:.0}")),
            group.verdict().as_str(),
        );
    }
    out
}

/// The run whose throughput is the median of its group's.
pub fn representative(group: &Group) -> &Summary {
    let mut runs: Vec<&Summary> = group.runs.iter().collect();
    runs.sort_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
    runs[runs.len() / 2]
}

/// A table titled `title` of `parts` (a server's nodes, a run's agents), a
/// row each, its cells by `cells` under `columns`.
fn parts_table<T, const N: usize>(
    title: &str,
    columns: &[&str; N],
    parts: &[T],
    cells: impl Fn(&T) -> [String; N],
) -> String {
    let mut out = format!(
        "{title}:\n\n| {} |\n|{}\n",
        columns.join(" | "),
        "---|".repeat(N)
    );
    for part in parts {
        let _ = writeln!(out, "| {} |", cells(part).join(" | "));
    }
    out
}

fn thresholds_table(group: &Group) -> String {
    let mut out =
        String::from("| threshold | severity | run | measured | result |\n|---|---|---|---|---|\n");
    for summary in &group.runs {
        for t in &summary.thresholds {
            let severity = match t.severity {
                Severity::Critical => "critical",
                Severity::Warning => "warning",
            };
            let origin = if t.default { " (default)" } else { "" };
            let result = match (t.ok, t.severity) {
                (true, _) => "held",
                (false, Severity::Critical) => "**BROKE**",
                (false, Severity::Warning) => "broke (warning)",
            };
            let _ = writeln!(
                out,
                "| `{}` | {severity}{origin} | {} | {} | {result} |",
                t.expr,
                summary.repeat,
                display(t.metric, t.value)
            );
        }
    }
    out
}

/// The memory analysis: live heap and RSS side by side.
fn memory(memory: &Memory) -> String {
    let mut out = format!("**Memory.** {}.\n\n", memory.statement);
    out.push_str(
        "| figure | growth | 95% CI | R² | kept per stream opened | burst recovery |\n\
         |---|---|---|---|---|---|\n",
    );
    for (name, figures) in [("live heap", memory.heap), ("RSS", memory.rss)] {
        let Some(f) = figures else {
            let _ = writeln!(out, "| {name} | not measured | – | – | – | – |");
            continue;
        };
        let per_hour = |b: f64| format!("{}/h", bytes_text(b));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            or_dash(f.growth_per_hour, per_hour),
            or_dash(f.growth_ci95, |[low, high]| format!(
                "{} to {}",
                per_hour(low),
                per_hour(high)
            )),
            or_dash(f.r2, |r| format!("{r:.2}")),
            or_dash(f.retained_per_stream, bytes_text),
            or_dash(f.recovery, |r| format!("{:.1}%", 100.0 * r)),
        );
    }
    out
}

fn manifest(report: &Report) -> String {
    let env = &report.environment;
    let commit = commit(&env.versions);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- streamgauge {}, commit {commit}",
        env.versions.streamgauge
    );
    let _ = writeln!(out, "- {}", env.versions.rustc);
    let _ = writeln!(
        out,
        "- {} cores ({}), {} MiB memory, kernel {}",
        env.machine.cores,
        env.machine.cpu.as_deref().unwrap_or("CPU unknown"),
        or_dash(env.machine.memory_mb, |m| format!("{m:.0}")),
        env.machine.kernel.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        out,
        "- open files {} (hard {}), ephemeral ports {}",
        or_dash(env.limits.open_files, |n| n.to_string()),
        or_dash(env.limits.open_files_hard, |n| n.to_string()),
        or_dash(env.limits.ephemeral_ports, |[a, b]| format!("{a}–{b}"))
    );
    if let Some(first) = report.summaries().next() {
        let server = &first.manifest.server;
        let _ = writeln!(
            out,
            "- server: {} {}",
            server.program,
            server.args.join(" ")
        );
    }
    for s in report.summaries() {
        let [
            cpu_server,
            cpu_loadgen,
            per_event_server,
            per_event_loadgen,
            processes,
            rss,
        ] = costs(s);
        let _ = writeln!(
            out,
            "- {} ({}) run {}: CPU seconds server {cpu_server}, load generator {cpu_loadgen}; \
             CPU per event server {per_event_server} µs, load generator {per_event_loadgen} µs; \
             load generator processes {processes}, RSS peak {rss} MiB",
            s.scenario, s.transport, s.repeat,
        );
    }
    out.push_str(
        "\nEach run's `summary.json` holds its exact scenario under `manifest.scenario`.\n",
    );
    out
}

/// The Markdown of `report`.
pub fn render(report: &Report) -> String {
    let mut out = format!("# streamgauge: {}\n\n", headline(report));
    let _ = writeln!(
        out,
        "Run `{}`{}, started {}.\n",
        report.run_id,
        report
            .label
            .as_deref()
            .map(|l| format!(" (label `{l}`)"))
            .unwrap_or_default(),
        report.started_at
    );
    let findings = findings(report);
    if !findings.is_empty() {
        for finding in &findings {
            let _ = writeln!(out, "- {finding}");
        }
        out.push('\n');
    }
    if !report.capacity.is_empty() {
        out.push_str("## Capacity\n\n");
        for capacity in &report.capacity {
            let _ = writeln!(out, "- {} (from {})", capacity.statement, capacity.source);
        }
        out.push('\n');
    }
    out.push_str("## Scenarios\n\n");
    out.push_str(&scenarios_table(report));
    for group in &report.groups {
        let _ = write!(out, "\n## {} ({})\n\n", group.scenario, group.transport);
        let notes = notes(representative(group));
        if !notes.is_empty() {
            let _ = write!(out, "{}\n\n", notes.join(" "));
        }
        if group.runs[0].thresholds.is_empty() {
            out.push_str("No thresholds.\n");
        } else {
            out.push_str(&thresholds_table(group));
        }
        let nodes = &representative(group).nodes;
        if nodes.len() > 1 {
            out.push('\n');
            out.push_str(&parts_table("Nodes", &NODE_COLUMNS, nodes, node_cells));
        }
        let agents = &representative(group).agents;
        if !agents.is_empty() {
            out.push('\n');
            out.push_str(&parts_table("Agents", &AGENT_COLUMNS, agents, agent_cells));
        }
        if let Some(c) = group.comparison() {
            out.push('\n');
            out.push_str(&comparison(c));
        }
        if let Some(m) = &representative(group).memory {
            out.push('\n');
            out.push_str(&memory(m));
        }
    }
    out.push_str("\n## Manifest\n\n");
    out.push_str(&manifest(report));
    out
}
