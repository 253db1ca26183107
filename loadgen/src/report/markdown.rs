//! `report.md`: fits a CI job summary (GitHub's `$GITHUB_STEP_SUMMARY`,
//! GitLab's report pages). The verdict comes first, with every broken
//! threshold and regression named; then the scenarios' figures, each
//! scenario's thresholds, comparison and memory, the capacity estimate, and the
//! manifest that makes the figures reproducible. The terminal's closing
//! lines ([`verdict_lines`]) say the same findings in plain text.

use std::fmt::Write as _;

use super::{Group, Report, Summary};
use crate::compare::{Change, Comparison, Estimate, NoiseSource, Status};
use crate::manifest::Versions;
use crate::memory::{Memory, bytes_text};
use crate::scenario::Severity;
use crate::verdict::{Verdict, display};

/// A cell for a value that may be missing.
pub(crate) fn or_dash<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "–".to_owned(), show)
}

/// What one run cost, as both reports show it: CPU seconds of the server
/// and of the load generator, the same per event delivered (µs), the load
/// generator's processes and its peak RSS (MiB).
pub(crate) fn costs(s: &Summary) -> [String; 6] {
    let cpu = &s.manifest.cpu_seconds;
    [
        or_dash(cpu.server, |c| format!("{c:.2}")),
        or_dash(cpu.loadgen, |c| format!("{c:.2}")),
        or_dash(s.server.cpu_us_per_event, |c| format!("{c:.3}")),
        or_dash(s.loadgen_cpu_us_per_event, |c| format!("{c:.3}")),
        s.loadgen_workers.to_string(),
        or_dash(s.loadgen_rss_mb, |r| format!("{:.1}", r.peak)),
    ]
}

/// µs as ms, to the µs.
pub(crate) fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1_000.0)
}

/// One finding per broken threshold and per regression, worst first.
pub fn findings(report: &Report) -> Vec<String> {
    let mut critical = Vec::new();
    let mut warnings = Vec::new();
    for group in &report.groups {
        let name = format!("{} ({})", group.scenario, group.transport);
        for summary in &group.runs {
            let run = if group.runs.len() > 1 {
                format!("{name} run {}", summary.repeat)
            } else {
                name.clone()
            };
            for t in summary.thresholds.iter().filter(|t| !t.ok) {
                let line = format!(
                    "{run}: `{}` broke: measured {}",
                    t.expr,
                    display(t.metric, t.value)
                );
                match t.severity {
                    Severity::Critical => critical.push(line),
                    Severity::Warning => warnings.push(format!("warning: {line}")),
                }
            }
        }
        if let Some(comparison) = group.comparison() {
            for change in &comparison.changes {
                let moved = format!(
                    "{} against {} (budget {})",
                    change_text(change),
                    comparison.baseline,
                    change.budget
                );
                match change.status {
                    Status::Regression => {
                        critical.push(format!("{name}: {} regressed {moved}", change.label));
                    }
                    Status::Unsure => warnings.push(format!(
                        "warning: {name}: {} moved {moved}, its noise unknown: measure both sides with --repeat 3 to decide",
                        change.label
                    )),
                    _ => {}
                }
            }
        }
    }
    critical.extend(warnings);
    critical
}

/// The verdict in a line: pass, pass with warnings or fail, and of how
/// many runs.
pub(crate) fn headline(report: &Report) -> String {
    let runs = report.summaries().count();
    let failed = report
        .summaries()
        .filter(|s| s.verdict == Verdict::Fail)
        .count();
    match report.verdict() {
        Verdict::Pass => format!("PASS: every threshold held in {runs} run(s)"),
        Verdict::Warn => format!(
            "PASS WITH WARNINGS: every critical threshold held in {runs} run(s); some warnings broke"
        ),
        Verdict::Fail => format!("FAIL: {failed} of {runs} run(s) broke a threshold or regressed"),
    }
}

/// The closing lines printed after a run: verdict, findings, capacity.
pub fn verdict_lines(report: &Report) -> String {
    let mut out = format!("verdict: {}", headline(report));
    for finding in findings(report) {
        let _ = write!(out, "\n  - {}", finding.replace('`', ""));
    }
    for capacity in &report.capacity {
        let _ = write!(
            out,
            "\ncapacity: {} (from {})",
            capacity.statement, capacity.source
        );
    }
    out
}

/// A change as people read it: `-20.0%`, or `+0.0200` for absolute budgets.
pub(crate) fn change_text(change: &Change) -> String {
    match change.change {
        None => "–".to_owned(),
        Some(value) if change.budget.ends_with('%') => format!("{value:+.1}%"),
        Some(value) => format!("{value:+.4}"),
    }
}

/// One side of a comparison: its median and its noise band.
pub(crate) fn estimate_text(estimate: Option<Estimate>) -> String {
    or_dash(estimate, |e| {
        let noise = match e.noise_from {
            NoiseSource::Unknown => "noise unknown".to_owned(),
            NoiseSource::Repeats => format!("±{} over {} runs", number(e.noise), e.runs),
            NoiseSource::Seconds => format!("±{} per second", number(e.noise)),
        };
        format!("{} ({noise})", number(e.median))
    })
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

/// The comparison table of one scenario.
pub fn comparison(comparison: &Comparison) -> String {
    let mut out = format!(
        "Baseline: {}\n\n| figure | baseline | current | change | budget | decision |\n|---|---|---|---|---|---|\n",
        comparison.baseline
    );
    for change in &comparison.changes {
        let decision = match change.status {
            Status::Regression => "**REGRESSION**",
            other => other.as_str(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {decision} |",
            crate::compare::labelled(change.label, change.unit),
            estimate_text(change.baseline),
            estimate_text(change.current),
            change_text(change),
            change.budget,
        );
    }
    let _ = writeln!(out, "\nHow the decision was made: {}.", comparison.method);
    out
}

fn scenarios_table(report: &Report) -> String {
    let mut out = String::from(
        "| scenario | transport | runs | clients | events/s | p50 ms | p95 ms | p99 ms | errors | gaps | dups | server CPU % | load generator CPU % | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
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
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {errors} | {} | {} | {} | {} | {} |",
            group.scenario,
            group.transport,
            group.runs.len(),
            s.clients,
            s.events_per_s,
            or_dash(s.latency_us, |l| ms(l.p50)),
            or_dash(s.latency_us, |l| ms(l.p95)),
            or_dash(s.latency_us, |l| ms(l.p99)),
            s.gaps,
            s.dups,
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
    out.push_str("| figure | growth | 95% CI | R² | burst recovery |\n|---|---|---|---|---|\n");
    for (name, figures) in [("live heap", memory.heap), ("RSS", memory.rss)] {
        let Some(f) = figures else {
            let _ = writeln!(out, "| {name} | not measured | – | – | – |");
            continue;
        };
        let per_hour = |b: f64| format!("{}/h", bytes_text(b));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            or_dash(f.growth_per_hour, per_hour),
            or_dash(f.growth_ci95, |[low, high]| format!(
                "{} to {}",
                per_hour(low),
                per_hour(high)
            )),
            or_dash(f.r2, |r| format!("{r:.2}")),
            or_dash(f.recovery, |r| format!("{:.1}%", 100.0 * r)),
        );
    }
    out
}

/// The commit measured, and whether its checkout had uncommitted changes.
pub(crate) fn commit(versions: &Versions) -> String {
    match (&versions.git_commit, versions.git_dirty) {
        (Some(commit), Some(true)) => format!("{commit} (with uncommitted changes)"),
        (Some(commit), _) => commit.clone(),
        (None, _) => "not a git checkout".to_owned(),
    }
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
        if group.runs[0].thresholds.is_empty() {
            out.push_str("No thresholds.\n");
        } else {
            out.push_str(&thresholds_table(group));
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
